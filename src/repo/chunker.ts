// Cuts a file's bytes into the chunks the repository stores once each. Generic: it knows
// nothing of PostgreSQL; src/backup/file-kind.ts picks the policy for each file.
//
// Three policies:
// - fixed: boundaries at multiples of `size` from the start of the file. For files that
//   change in place at fixed offsets (PostgreSQL relation files change page by page), a
//   changed page costs exactly the chunk that holds it, and an unchanged one costs nothing.
// - cdc: content-defined boundaries (FastCDC: a gear rolling hash, normalised chunking), for
//   files whose content may shift: an insertion changes the chunks around it, and the
//   boundaries after it fall where they fell before, so the rest deduplicates.
// - whole: the file is one chunk (cut at `max` should it be longer): small files, where
//   cutting buys nothing and costs an index entry per piece.
//
// Every policy elides all-zero chunks (data null): a relation file's never-written tail, a
// zero-filled segment, holes. Restore writes them as zeros (or a hole).
//
// The fixed size for relation files was picked by measurement (scripts/measure-chunk-size.ts,
// PostgreSQL 15): pgbench -i -s 20 plus a 1.5M-row untouched table and a 500k-row append-only
// table, 816 MB of relation files; backed up; then 1% of pgbench_accounts rows updated at
// random, 1% appended (and 1% appended to the append-only table); backed up again. 20.3% of
// the 8 KB pages changed (165.5 MB): 47% of pgbench_accounts' pages, 97% of its primary key's,
// 1% of the rest. New distinct chunk bytes of the second backup, uncompressed, and as a
// multiple of the changed pages' bytes (raw DEFLATE of the new chunks in brackets):
//     8 KB chunks  165.5 MB  1.00x  (20.7 MB)
//    16 KB chunks  231.1 MB  1.40x  (20.7 MB)
//    32 KB chunks  283.3 MB  1.71x  (20.4 MB)
//    64 KB chunks  303.5 MB  1.83x  (19.4 MB)
// The arithmetic agrees: a chunk of k pages is stored again when any of its pages changed; in
// a table where a fraction q of the pages changed at random, that is 1-(1-q)^k of its chunks,
// so it grows by (1-(1-q)^k)/q times its changed bytes — with pgbench_accounts' q = 0.47,
// 1.53x for k = 2 and 1.97x for k = 4. Only one page per chunk meets the 1.2x;
// compressed, larger chunks gain little (pages compress alone nearly as well). The cost is
// the number of chunks: one index entry per 8 KB of distinct data.
//
// Cost on the hot path: zero detection reads a chunk as 32-bit words and stops at the first
// non-zero one (an initialised page has one in its first word); chunks wholly inside a pushed
// buffer are handed on as views of it, not copied (a copy per 8 KB page cost more CPU, most
// of it in the garbage collector, than hashing the page); only chunks that straddle two
// pushes are gathered, into buffers the chunker reuses. Measured on
// this 2-core VM (Node 20): fixed 8 KB chunks of 1 MB pushes, a quarter of the pages zero,
// 2.3 GB/s (2.8 GB/s with 32 KB + 1 pushes); all-zero data 8.7 GB/s; content-defined
// (32/128/512 KB) 490 MB/s. Over a real backup (pgbench -s 30, 471 MB) BASE_BACKUP + tar
// reader alone ran at ~500 MB/s, with the chunker ~450 MB/s.
import { createHash } from "node:crypto";
import { KlioError } from "../util/errors.ts";

export type ChunkingPolicy = { kind: "fixed"; size: number } | { kind: "cdc"; min: number; avg: number; max: number } | { kind: "whole"; max: number };

export interface Chunk {
  /** Offset of the chunk in the file. */
  offset: number;
  length: number;
  /**
   * The chunk's bytes, null when they are all zero (elided). A view of the pushed buffer or
   * of the chunker's own: valid until the next push() or end(); copy what is kept longer.
   */
  data: Uint8Array | null;
}

export interface Chunker {
  /** The chunks that `bytes` completes (their data valid until the next call). */
  push(bytes: Uint8Array): Chunk[];
  /** The last chunk (if any bytes are left); the chunker is done after this. */
  end(): Chunk[];
}

/** Largest chunk any policy may produce: chunks are held whole in memory and in packs. */
export const MAX_CHUNK = 64 * 1024 * 1024;

export function createChunker(policy: ChunkingPolicy): Chunker {
  switch (policy.kind) {
    case "fixed":
      checkSize(policy.size, "fixed chunk size");
      return fixedChunker(policy.size);
    case "whole":
      checkSize(policy.max, "whole-file chunk maximum");
      return fixedChunker(policy.max);
    case "cdc":
      checkCdc(policy);
      return cdcChunker(policy.min, policy.avg, policy.max);
  }
}

function checkSize(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 1 || n > MAX_CHUNK) throw new KlioError("bad-chunking", `${what} ${n} is not an integer from 1 to ${MAX_CHUNK}`);
}

function checkCdc(p: { min: number; avg: number; max: number }): void {
  checkSize(p.max, "CDC maximum chunk size");
  if (!Number.isInteger(p.min) || !Number.isInteger(p.avg) || p.min < 64 || !(p.min < p.avg && p.avg < p.max) || (p.avg & (p.avg - 1)) !== 0 || p.avg > 2 ** 28)
    throw new KlioError("bad-chunking", `CDC sizes min ${p.min}, avg ${p.avg}, max ${p.max}: need 64 <= min < avg < max, avg a power of two up to 256 MB`);
}

// ---------------------------------------------------------------- zero detection

/** True when every byte of `b` is zero. Cheap when the answer is no: it stops at the first non-zero word. */
export function isAllZero(b: Uint8Array): boolean {
  const n = b.length;
  // An initialised PostgreSQL page has non-zero pd_lower/pd_upper within its first 16 bytes:
  // most chunks are told apart here, without making a word view of them.
  for (let k = 0; k < 16 && k < n; k++) if (b[k] !== 0) return false;
  let i = 0;
  // Up to the first 4-byte aligned address byte by byte, then words, then the tail.
  const head = Math.min(n, (4 - (b.byteOffset & 3)) & 3);
  for (; i < head; i++) if (b[i] !== 0) return false;
  const words = (n - i) >>> 2;
  if (words > 0) {
    const w = new Int32Array(b.buffer, b.byteOffset + i, words);
    // Most non-zero chunks are told apart by their first word; test that before the loop.
    if (w[0] !== 0) return false;
    let j = 0;
    for (; j + 8 <= words; j += 8) {
      if ((w[j]! | w[j + 1]! | w[j + 2]! | w[j + 3]! | w[j + 4]! | w[j + 5]! | w[j + 6]! | w[j + 7]!) !== 0) return false;
    }
    for (; j < words; j++) if (w[j] !== 0) return false;
    i += words * 4;
  }
  for (; i < n; i++) if (b[i] !== 0) return false;
  return true;
}

// ---------------------------------------------------------------- fixed

function fixedChunker(size: number): Chunker {
  let offset = 0; // file offset of the chunk being gathered
  // A chunk that straddles pushes is gathered in `gather` (`filled` bytes so far); once
  // complete it is handed out, and the next one is gathered in the other buffer.
  let gather: Uint8Array | null = null;
  let spare: Uint8Array | null = null;
  let filled = 0;
  let ended = false;

  const emit = (out: Chunk[], bytes: Uint8Array): void => {
    out.push({ offset, length: bytes.length, data: isAllZero(bytes) ? null : bytes });
    offset += bytes.length;
  };

  return {
    push(bytes) {
      if (ended) throw new KlioError("chunker-ended", "push() after end()");
      const out: Chunk[] = [];
      let at = 0;
      if (filled > 0) {
        const take = Math.min(size - filled, bytes.length);
        gather!.set(bytes.subarray(0, take), filled);
        filled += take;
        at = take;
        if (filled < size) return out;
        emit(out, gather!);
        [gather, spare] = [spare, gather];
        filled = 0;
      }
      for (; at + size <= bytes.length; at += size) emit(out, bytes.subarray(at, at + size));
      if (at < bytes.length) {
        gather ??= new Uint8Array(size);
        gather.set(bytes.subarray(at), 0);
        filled = bytes.length - at;
      }
      return out;
    },
    end() {
      if (ended) return [];
      ended = true;
      const out: Chunk[] = [];
      if (filled > 0) emit(out, gather!.subarray(0, filled));
      filled = 0;
      return out;
    },
  };
}

// ---------------------------------------------------------------- content-defined (FastCDC)

/**
 * The gear table: 256 pseudo-random 32-bit values. Boundaries depend on it, so it is fixed
 * for good (changing it would stop new backups from deduplicating against old ones): word i
 * is the first 4 bytes (big-endian) of SHA-256("klio-gear-" + i).
 */
const GEAR: Int32Array = (() => {
  const t = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    const d = createHash("sha256").update(`klio-gear-${i}`).digest();
    t[i] = (d[0]! << 24) | (d[1]! << 16) | (d[2]! << 8) | d[3]!;
  }
  return t;
})();

/** A mask of the `bits` highest bits of a 32-bit word: those depend on the most recent 32 bytes, the low ones on fewer. */
function topBits(bits: number): number {
  return bits >= 32 ? -1 : ((1 << bits) - 1) << (32 - bits);
}

function cdcChunker(min: number, avg: number, max: number): Chunker {
  const bits = Math.log2(avg);
  // Normalised chunking (FastCDC, level 2): harder to cut before the average, easier after,
  // which narrows the spread of chunk sizes around it.
  const maskS = topBits(Math.min(31, bits + 2));
  const maskL = topBits(Math.max(1, bits - 2));
  let offset = 0; // file offset of the current chunk
  let hash = 0;
  // The part of the current chunk that came in earlier pushes (`filled` bytes); a chunk made
  // of it is handed out in `gather` itself, and the next one gathered in `spare`.
  let gather: Uint8Array | null = null;
  let spare: Uint8Array | null = null;
  let filled = 0;
  let ended = false;

  /** Emits the current chunk: the gathered part plus `tail`. */
  const cut = (out: Chunk[], tail: Uint8Array): void => {
    let data: Uint8Array | null;
    if (filled === 0) {
      data = tail;
    } else {
      gather!.set(tail, filled);
      data = gather!.subarray(0, filled + tail.length);
      [gather, spare] = [spare, gather];
    }
    if (isAllZero(data)) data = null;
    const length = filled + tail.length;
    out.push({ offset, length, data });
    offset += length;
    hash = 0;
    filled = 0;
  };

  return {
    push(bytes) {
      if (ended) throw new KlioError("chunker-ended", "push() after end()");
      const out: Chunk[] = [];
      const n = bytes.length;
      let start = 0; // where the current chunk's part in `bytes` begins; its length at i is filled + i - start
      let i = 0;
      while (i < n) {
        // The first `min` bytes of a chunk are not hashed (FastCDC): skip them in one step.
        const before = filled + i - start;
        if (before < min) {
          i += Math.min(min - before, n - i);
          if (filled + i - start < min) break;
        }
        // Bytes up to the average are tested with the strict mask, then with the loose one up to max.
        let h = hash;
        let at = -1;
        const endS = Math.min(n, start + avg - filled);
        for (; i < endS; i++) {
          h = ((h << 1) + GEAR[bytes[i]!]!) | 0;
          if ((h & maskS) === 0) {
            at = i + 1;
            break;
          }
        }
        if (at < 0) {
          const atMax = start + max - filled;
          const endL = Math.min(n, atMax);
          for (; i < endL; i++) {
            h = ((h << 1) + GEAR[bytes[i]!]!) | 0;
            if ((h & maskL) === 0) {
              at = i + 1;
              break;
            }
          }
          if (at < 0 && i === atMax) at = i;
        }
        hash = h;
        if (at < 0) break; // the chunk goes on in the next push
        cut(out, bytes.subarray(start, at));
        start = i = at;
      }
      // Keep what belongs to the unfinished chunk.
      if (start < n) {
        gather ??= new Uint8Array(max);
        gather.set(bytes.subarray(start), filled);
        filled += n - start;
      }
      return out;
    },
    end() {
      if (ended) return [];
      ended = true;
      const out: Chunk[] = [];
      if (filled > 0) cut(out, new Uint8Array(0));
      gather = null;
      return out;
    },
  };
}
