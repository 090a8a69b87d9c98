// One index file's chunk ids in memory: the first 16 bytes of each, as 4 big-endian 32-bit
// words in one typed array, in the file's (sorted) order. 16 bytes per chunk and no object
// per chunk; the position of a key is the entry's number in the file.
import type { IndexHead } from "./index-file.ts";
import { ENTRY_BYTES } from "./index-file.ts";

export const KEY_WORDS = 4;
const WORDS = KEY_WORDS;

export class IndexRun {
  constructor(
    readonly head: IndexHead,
    /** The first 16 bytes of each id as 4 big-endian words, in the file's order. */
    readonly keys: Uint32Array,
  ) {}

  get count(): number {
    return this.keys.length / WORDS;
  }

  /** The first position whose key is ≥ the given one. */
  lowerBound(w0: number, w1: number, w2: number, w3: number): number {
    const k = this.keys;
    let lo = 0;
    let hi = k.length / WORDS;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const at = mid * WORDS;
      let c = k[at]! - w0;
      if (c === 0) c = k[at + 1]! - w1;
      if (c === 0) c = k[at + 2]! - w2;
      if (c === 0) c = k[at + 3]! - w3;
      if (c < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  matches(pos: number, w0: number, w1: number, w2: number, w3: number): boolean {
    const at = pos * WORDS;
    const k = this.keys;
    return pos < this.count && k[at] === w0 && k[at + 1] === w1 && k[at + 2] === w2 && k[at + 3] === w3;
  }
}

export function word(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

/** Appends the keys of the decoded entries in `plain` to `keys` from entry number `n`. */
export function putKeys(keys: Uint32Array, n: number, plain: Uint8Array): number {
  for (let at = 0; at < plain.length; at += ENTRY_BYTES, n++) {
    const k = n * WORDS;
    keys[k] = word(plain, at);
    keys[k + 1] = word(plain, at + 4);
    keys[k + 2] = word(plain, at + 8);
    keys[k + 3] = word(plain, at + 12);
  }
  return n;
}

