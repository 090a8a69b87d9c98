// LZ4 block format (https://github.com/lz4/lz4/blob/dev/doc/lz4_Block_format.md), in plain
// TypeScript: node:zlib's DEFLATE costs ~80 µs per 8 KB page on these machines, more than
// the whole budget of a chunk at disk speed, and neither runtime ships a faster codec. This
// is LZ4's "fast" greedy parse (one hash probe per position, skipping faster through data
// that does not match), which keeps a few-µs page cost; see docs/FORMAT.md for the figures.
//
// Compatible with the reference decoder; the decoder here checks every bound and that the
// output is exactly the expected length, so damaged input is an error, never an overrun.

const MIN_MATCH = 4;
/** The last match must start this far before the end, and the last 5 bytes are literals. */
const MF_LIMIT = 12;
const LAST_LITERALS = 5;
const MAX_DISTANCE = 65535;
const HASH_LOG = 13;
const SKIP_TRIGGER = 5;

/** Reusable state: the hash table, and the output buffer grown as needed. */
export class Lz4Compressor {
  private readonly table = new Int32Array(1 << HASH_LOG);
  // Positions are stored biased by `base`, so that the table need not be cleared per block:
  // an entry below `base` belongs to an earlier block.
  private base = 1;
  private out = new Uint8Array(0);

  /** The compressed block, or null when it would not be smaller than `src`. Valid until the next call. */
  compress(src: Uint8Array): Uint8Array | null {
    const n = src.length;
    const bound = n + Math.ceil(n / 255) + 16;
    if (this.out.length < bound) this.out = new Uint8Array(bound);
    if (this.base > 0x7fffffff - n - 1) {
      this.table.fill(0);
      this.base = 1;
    }
    const out = this.out;
    const table = this.table;
    const base = this.base;
    this.base += n + 1;
    let op = 0;
    let anchor = 0;
    if (n >= MF_LIMIT + 1) {
      const matchLimit = n - LAST_LITERALS;
      const limit = n - MF_LIMIT;
      let ip = 1;
      table[hash(src, 0)] = base;
      for (;;) {
        // Find a match: probe one position at a time, stepping faster after misses.
        let step = 1;
        let searchNb = 1 << SKIP_TRIGGER;
        let ref = 0;
        let found = false;
        while (ip <= limit) {
          const h = hash(src, ip);
          const cand = table[h]! - base;
          table[h] = ip + base;
          if (cand >= 0 && ip - cand <= MAX_DISTANCE && src[cand] === src[ip] && src[cand + 1] === src[ip + 1] && src[cand + 2] === src[ip + 2] && src[cand + 3] === src[ip + 3]) {
            ref = cand;
            found = true;
            break;
          }
          ip += step;
          step = searchNb++ >> SKIP_TRIGGER;
        }
        if (!found) break;
        // Extend backwards over literals that also match.
        while (ip > anchor && ref > 0 && src[ip - 1] === src[ref - 1]) {
          ip--;
          ref--;
        }
        // Extend forwards.
        let len = MIN_MATCH;
        while (ip + len < matchLimit && src[ip + len] === src[ref + len]) len++;
        op = writeSequence(out, op, src, anchor, ip - anchor, ip - ref, len);
        ip += len;
        anchor = ip;
        if (ip > limit) break;
        table[hash(src, ip - 2)] = ip - 2 + base;
      }
    }
    // Last literals.
    const lit = n - anchor;
    op = writeLiteralsOnly(out, op, src, anchor, lit);
    if (op >= n) return null;
    return out.subarray(0, op);
  }
}

function hash(b: Uint8Array, i: number): number {
  const v = b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24);
  return Math.imul(v, 2654435761) >>> (32 - HASH_LOG);
}

function writeLength(out: Uint8Array, op: number, rest: number): number {
  while (rest >= 255) {
    out[op++] = 255;
    rest -= 255;
  }
  out[op++] = rest;
  return op;
}

function writeSequence(out: Uint8Array, op: number, src: Uint8Array, from: number, lit: number, offset: number, matchLen: number): number {
  const ml = matchLen - MIN_MATCH;
  out[op++] = (Math.min(lit, 15) << 4) | Math.min(ml, 15);
  if (lit >= 15) op = writeLength(out, op, lit - 15);
  if (lit < 32) for (let k = 0; k < lit; k++) out[op + k] = src[from + k]!;
  else out.set(src.subarray(from, from + lit), op);
  op += lit;
  out[op++] = offset & 0xff;
  out[op++] = offset >>> 8;
  if (ml >= 15) op = writeLength(out, op, ml - 15);
  return op;
}

function writeLiteralsOnly(out: Uint8Array, op: number, src: Uint8Array, from: number, lit: number): number {
  out[op++] = Math.min(lit, 15) << 4;
  if (lit >= 15) op = writeLength(out, op, lit - 15);
  out.set(src.subarray(from, from + lit), op);
  return op + lit;
}

/** Decodes one block into exactly `length` bytes; throws on anything malformed. */
export function lz4Decompress(src: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let ip = 0;
  let op = 0;
  const fail = (why: string): never => {
    throw new Error(`damaged LZ4 block: ${why}`);
  };
  for (;;) {
    if (ip >= src.length) fail("truncated");
    const token = src[ip++]!;
    let lit = token >>> 4;
    if (lit === 15) {
      let b: number;
      do {
        if (ip >= src.length) fail("truncated literal length");
        b = src[ip++]!;
        lit += b;
      } while (b === 255);
    }
    if (ip + lit > src.length || op + lit > length) fail("literals overrun");
    // Short copies byte by byte: cheaper than a subarray and set() for each.
    if (lit < 32) for (let k = 0; k < lit; k++) out[op + k] = src[ip + k]!;
    else out.set(src.subarray(ip, ip + lit), op);
    ip += lit;
    op += lit;
    if (ip === src.length) break; // the last sequence has literals only
    if (ip + 2 > src.length) fail("truncated offset");
    const offset = src[ip]! | (src[ip + 1]! << 8);
    ip += 2;
    if (offset === 0 || offset > op) fail("bad offset");
    let ml = token & 15;
    if (ml === 15) {
      let b: number;
      do {
        if (ip >= src.length) fail("truncated match length");
        b = src[ip++]!;
        ml += b;
      } while (b === 255);
    }
    ml += MIN_MATCH;
    if (op + ml > length) fail("match overrun");
    let m = op - offset;
    if (offset >= ml && ml >= 32) {
      out.copyWithin(op, m, m + ml);
      op += ml;
    } else {
      // Short, or overlapping (repeating the last `offset` bytes): byte by byte.
      const end = op + ml;
      while (op < end) out[op++] = out[m++]!;
    }
  }
  if (op !== length) fail(`${op} bytes, not ${length}`);
  return out;
}
