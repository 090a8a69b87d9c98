// The checksum file of a raw segment (docs/FORMAT.md, "Raw segment checksum"): NAME.crc32
// beside a completed, not yet compressed segment NAME. The receiver computes the CRC-32 while
// it writes the segment's bytes and makes this file durable before it renames NAME.partial to
// NAME, so a raw segment is verifiable from the moment it exists. One line of text:
//
//   klio-wal-crc32 1 <CRC-32 of the segment, 8 hex digits> <length in bytes>
//
// CRC-32 (zlib's, IEEE 802.3) rather than SHA-256: it is computed on the receive path, where
// it costs ~3 ms per 16 MB segment against ~25 ms for SHA-256 (measured on the reference VM),
// and it only has to catch damage, not tampering: the stored (.kwal) form that replaces the
// raw segment carries a SHA-256 of the same bytes.
import { crc32 } from "node:zlib";
import { KlioError } from "../util/errors.ts";

export const CHECKSUM_SUFFIX = ".crc32";
const TAG = "klio-wal-crc32";
const VERSION = 1;

export interface SegmentChecksum {
  crc32: number;
  length: number;
}

/** CRC-32 of `bytes` continuing from `previous` (0 to start). */
export function crc32Update(previous: number, bytes: Uint8Array): number {
  return crc32(bytes, previous);
}

export function formatSegmentChecksum(c: SegmentChecksum): string {
  return `${TAG} ${VERSION} ${c.crc32.toString(16).padStart(8, "0")} ${c.length}\n`;
}

/** Parses a checksum file's text; throws KlioError("corrupt-wal") naming `what`. */
export function parseSegmentChecksum(text: string, what: string): SegmentChecksum {
  const m = new RegExp(`^${TAG} ([0-9]+) ([0-9a-f]{8}) ([0-9]+)\\n$`).exec(text);
  if (!m) throw new KlioError("corrupt-wal", `${what} is damaged: its checksum file is not a klio checksum`);
  if (Number(m[1]) !== VERSION) throw new KlioError("corrupt-wal", `${what}: its checksum file has version ${m[1]}, this klio reads version ${VERSION}`);
  return { crc32: Number.parseInt(m[2]!, 16), length: Number(m[3]) };
}
