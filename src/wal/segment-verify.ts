// Reading a segment file of the archive only ever yields bytes that are proved to be that
// segment of this cluster: a raw segment against its checksum file, a stored one against the
// SHA-256 in its container (stored-segment-file.ts), and every segment's first page against
// its name and the cluster (segment-page-header.ts). What fails is KlioError("corrupt-wal")
// and is never handed to PostgreSQL.
import { crc32 } from "node:zlib";
import { open, readFile } from "node:fs/promises";
import { writeFully } from "../util/durable-fs.ts";
import { corruptSegment } from "./stored-segment.ts";
import { crc32Update, parseSegmentChecksum, type SegmentChecksum } from "./segment-checksum.ts";
import { LONG_PAGE_HEADER_BYTES, segmentStartProblem, type ClusterOfSegment } from "./segment-page-header.ts";

const CHUNK = 1024 * 1024;
/** What PostgreSQL expects of a file it restores into pg_wal: it opens it read-write. */
export const RESTORED_FILE_MODE = 0o600;

export interface SegmentIdentity {
  /** The segment's name (24 hex digits). */
  name: string;
  cluster: ClusterOfSegment;
  /** Names the segment in messages ("WAL segment … of cluster db1"). */
  what: string;
}

/**
 * Checks the first page of segment `id`; a partial segment whose first page is all zeros has
 * no WAL yet and answers "empty".
 */
export function checkSegmentStart(first: Uint8Array, id: SegmentIdentity, partial: boolean): "ok" | "empty" {
  const problem = segmentStartProblem(first, id.name, id.cluster);
  if (problem === undefined) return "ok";
  if (problem === "empty" && partial) return "empty";
  throw corruptSegment(id.what, problem === "empty" ? "its first page is all zeros" : problem);
}

/** Reads a raw segment's checksum file; undefined when there is none (written before klio kept them). */
export async function readChecksumFile(file: string, what: string): Promise<SegmentChecksum | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  return parseSegmentChecksum(text, what);
}

export interface PlainSegmentCheck {
  /** The checksum the segment must match; undefined for a partial segment (still written) or a raw one from before checksums. */
  checksum: SegmentChecksum | undefined;
  partial: boolean;
}

/**
 * Copies the plain (raw or partial) segment file `src` to `dest` (created or truncated, mode
 * 0600; or only reads it when `dest` is undefined) and verifies it on the way: its length,
 * its first page, and its checksum when it has one. Resolves "empty" for a partial segment
 * with no WAL in it yet. Throws corruptSegment; `dest` then holds garbage for the caller to
 * remove. ENOENT of `src` passes through (the segment moved on or is not there).
 */
export async function copyPlainSegment(src: string, dest: string | undefined, id: SegmentIdentity, check: PlainSegmentCheck, opts: { sync?: boolean } = {}): Promise<"ok" | "empty"> {
  const input = await open(src, "r");
  try {
    const size = (await input.stat()).size;
    const expected = check.checksum?.length ?? id.cluster.walSegmentSize;
    if (size !== expected || expected !== id.cluster.walSegmentSize) throw corruptSegment(id.what, `it has ${size} bytes, not ${id.cluster.walSegmentSize}`);
    const buf = new Uint8Array(CHUNK);
    const out = dest === undefined ? undefined : await openRestoredFile(dest);
    try {
      let crc = 0;
      let verdict: "ok" | "empty" = "ok";
      for (let off = 0; off < size; ) {
        const { bytesRead } = await input.read(buf, 0, Math.min(CHUNK, size - off), off);
        if (bytesRead === 0) throw corruptSegment(id.what, `it ended after ${off} bytes`);
        const piece = buf.subarray(0, bytesRead);
        if (off === 0) {
          verdict = checkSegmentStart(piece.subarray(0, LONG_PAGE_HEADER_BYTES), id, check.partial);
          if (verdict === "empty") return "empty";
        }
        if (check.checksum) crc = crc32Update(crc, piece);
        if (out) await writeFully(out, piece, off);
        off += bytesRead;
      }
      if (check.checksum && crc !== check.checksum.crc32) throw corruptSegment(id.what, "checksum mismatch (CRC-32)");
      if (out && opts.sync) await out.sync();
      return verdict;
    } finally {
      await out?.close();
    }
  } finally {
    await input.close();
  }
}

/** The same checks on a segment held in memory (read from S3 or over HTTP). */
export function verifyPlainSegment(bytes: Uint8Array, id: SegmentIdentity, check: PlainSegmentCheck): "ok" | "empty" {
  if (bytes.length !== id.cluster.walSegmentSize) throw corruptSegment(id.what, `it has ${bytes.length} bytes, not ${id.cluster.walSegmentSize}`);
  const verdict = checkSegmentStart(bytes.subarray(0, LONG_PAGE_HEADER_BYTES), id, check.partial);
  if (verdict === "ok" && check.checksum && crc32(bytes) !== check.checksum.crc32) throw corruptSegment(id.what, "checksum mismatch (CRC-32)");
  return verdict;
}

/** Creates (or truncates) a file for PostgreSQL with exactly mode 0600, whatever the umask. */
export async function openRestoredFile(dest: string) {
  const fh = await open(dest, "w", RESTORED_FILE_MODE);
  await fh.chmod(RESTORED_FILE_MODE);
  return fh;
}
