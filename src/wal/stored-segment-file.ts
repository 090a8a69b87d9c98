// Decodes a stored segment (`.kwal`, docs/FORMAT.md "Stored segment") from its file straight
// into another file: streamed in 1 MiB pieces, so memory stays flat whatever the segment size
// (up to 1 GB), and no 16 MB buffer is allocated and page-faulted per segment, which on a VM
// costs as much as the decompression itself. The same checks as decodeStoredSegment: header,
// length, SHA-256 of the original bytes; the caller renames the output into place only after
// this resolves, so a damaged segment is never served.
import { createHash } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
import { writeFully } from "../util/durable-fs.ts";
import { concatBytes } from "../util/bytes.ts";
import { pipeline } from "node:stream/promises";
import { createInflateRaw } from "node:zlib";
import { KlioError } from "../util/errors.ts";
import { corruptSegment, parseStoredSegmentHeader, STORED_HEADER_BYTES } from "./stored-segment.ts";
import { openRestoredFile } from "./segment-verify.ts";
import { LONG_PAGE_HEADER_BYTES } from "./segment-page-header.ts";

const CHUNK = 1024 * 1024;

export interface DecodeOptions {
  /** fsync the output before resolving (the spool, which outlives a crash). */
  sync?: boolean;
  /** Checks the first bytes of the original segment (its page header); throws to refuse it. */
  checkStart?: (first: Uint8Array) => void;
}

/**
 * Writes the original bytes of the stored segment `src` to `dest` (created or truncated, mode
 * 0600; with `dest` undefined it only verifies) and resolves with their length. Throws KlioError("corrupt-wal") naming `what` when `src` is
 * damaged; `dest` then holds garbage and must be removed by the caller.
 */
export async function decodeStoredSegmentFile(src: string, dest: string | undefined, what: string, opts: DecodeOptions = {}): Promise<number> {
  const corrupt = (why: string) => corruptSegment(what, why);
  const input = await open(src, "r");
  try {
    const header = new Uint8Array(STORED_HEADER_BYTES);
    const { bytesRead } = await input.read(header, 0, STORED_HEADER_BYTES, 0);
    const { compressed, length, sha256: expected } = parseStoredSegmentHeader(header.subarray(0, bytesRead), what);
    const out: FileHandle | undefined = dest === undefined ? undefined : await openRestoredFile(dest);
    try {
      const hash = createHash("sha256");
      let written = 0;
      let head: Uint8Array | undefined = opts.checkStart && new Uint8Array(0);
      // The pipeline may reject with the abort it caused in zlib rather than with our reason.
      let refused: unknown;
      const sink = async (source: AsyncIterable<Uint8Array>) => {
        for await (const chunk of source) {
          written += chunk.length;
          if (written > length) throw (refused = corrupt(`longer than the ${length} bytes its header says`));
          hash.update(chunk);
          if (head) {
            head = concatBytes([head, chunk.subarray(0, LONG_PAGE_HEADER_BYTES - head.length)]);
            if (head.length === LONG_PAGE_HEADER_BYTES) {
              try {
                opts.checkStart!(head);
              } catch (e) {
                throw (refused = e);
              }
              head = undefined;
            }
          }
          if (out) await writeFully(out, chunk);
        }
      };
      const payload = input.createReadStream({ start: STORED_HEADER_BYTES, highWaterMark: CHUNK, autoClose: false });
      try {
        if (compressed) await pipeline(payload, createInflateRaw({ chunkSize: CHUNK }), sink);
        else await pipeline(payload, sink);
      } catch (e) {
        if (refused) throw refused;
        if (e instanceof KlioError) throw e;
        throw corrupt(`cannot decompress (${(e as Error).message})`);
      }
      if (written !== length) throw corrupt(`length ${written} instead of ${length}`);
      const actual = new Uint8Array(hash.digest());
      if (!expected.every((b, i) => actual[i] === b)) throw corrupt("checksum mismatch");
      if (head) opts.checkStart!(head);
      if (out && opts.sync) await out.sync();
      return written;
    } finally {
      await out?.close();
    }
  } finally {
    await input.close();
  }
}
