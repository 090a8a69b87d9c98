// Log sequence numbers, timelines and WAL file names. Parsed once at the edge into these
// types; everything inside trusts them.
import { KlioError } from "../util/errors.ts";

/** A WAL position: a 64-bit byte offset into the WAL stream. */
export type Lsn = bigint;
/** A timeline id (1 … 2^32-1). */
export type Timeline = number;
/** WAL segment size in bytes: a power of two from 1 MB to 1 GB. */
export type SegmentSize = number;

const LSN_TEXT = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

export function parseLsn(text: string): Lsn {
  const m = LSN_TEXT.exec(text.trim());
  if (!m) throw new KlioError("bad-lsn", `"${text}" is not an LSN (expected the form 16/B374D848)`);
  return (BigInt("0x" + m[1]) << 32n) | BigInt("0x" + m[2]);
}

export function formatLsn(lsn: Lsn): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function parseTimeline(text: string): Timeline {
  if (!/^[0-9]{1,10}$/.test(text.trim())) throw new KlioError("bad-timeline", `"${text}" is not a timeline id`);
  const n = Number(text);
  if (n < 1 || n > 0xffffffff) throw new KlioError("bad-timeline", `timeline ${text} is out of range`);
  return n;
}

/** Accepts PostgreSQL's `SHOW wal_segment_size` text ("16MB", "1GB") or a byte count. */
export function parseSegmentSize(text: string): SegmentSize {
  const m = /^\s*([0-9]+)\s*(B|kB|MB|GB)?\s*$/.exec(text);
  const unit = { B: 1, kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 } as const;
  const bytes = m ? Number(m[1]) * unit[(m[2] ?? "B") as keyof typeof unit] : NaN;
  if (!isValidSegmentSize(bytes)) throw new KlioError("bad-segment-size", `"${text}" is not a valid WAL segment size (a power of two from 1MB to 1GB)`);
  return bytes;
}

export function isValidSegmentSize(bytes: number): boolean {
  return Number.isInteger(bytes) && bytes >= 1024 ** 2 && bytes <= 1024 ** 3 && (bytes & (bytes - 1)) === 0;
}

export function segmentNumber(lsn: Lsn, segSize: SegmentSize): bigint {
  return lsn / BigInt(segSize);
}

export function segmentStart(lsn: Lsn, segSize: SegmentSize): Lsn {
  return lsn - (lsn % BigInt(segSize));
}

export function segmentOffset(lsn: Lsn, segSize: SegmentSize): number {
  return Number(lsn % BigInt(segSize));
}

function hex8(n: number | bigint): string {
  return n.toString(16).toUpperCase().padStart(8, "0");
}

/** The 24-character WAL file name of the segment `segno` on `tli` (XLogFileName). */
export function walFileName(tli: Timeline, segno: bigint, segSize: SegmentSize): string {
  const perId = 0x100000000n / BigInt(segSize);
  return hex8(tli) + hex8(segno / perId) + hex8(segno % perId);
}

export function historyFileName(tli: Timeline): string {
  return `${hex8(tli)}.history`;
}

export interface ParsedSegmentName {
  timeline: Timeline;
  segno: bigint;
}

const SEGMENT_NAME = /^[0-9A-F]{24}$/;

export function isSegmentName(name: string): boolean {
  return SEGMENT_NAME.test(name);
}

/** Parses a 24-character WAL segment name (XLogFromFileName); rejects names impossible for segSize. */
export function parseSegmentName(name: string, segSize: SegmentSize): ParsedSegmentName {
  if (!SEGMENT_NAME.test(name)) throw new KlioError("bad-wal-name", `"${name}" is not a WAL segment name`);
  const timeline = Number.parseInt(name.slice(0, 8), 16);
  const log = BigInt("0x" + name.slice(8, 16));
  const seg = BigInt("0x" + name.slice(16, 24));
  const perId = 0x100000000n / BigInt(segSize);
  if (timeline === 0 || seg >= perId)
    throw new KlioError("bad-wal-name", `"${name}" is not a WAL segment name for ${segSize / 1024 / 1024}MB segments`);
  return { timeline, segno: log * perId + seg };
}
