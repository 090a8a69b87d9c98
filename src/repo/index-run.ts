// One index file's chunk ids in memory, 12 bytes per chunk and no object per chunk. Ids are
// uniformly distributed and the file is sorted, so a fan-out table (as in git's pack index)
// maps the first 2 bytes of an id to the range of entries that start with them; per entry
// only the next 12 bytes are kept, as 3 32-bit words (bytes read big-endian, so that numeric
// order is byte order). A key thus stands for the first 14 bytes (112 bits) of the id. The
// position of a key is the entry's number in the file. Index files carry this form as their
// key section (index-file.ts), so loading one is a read into these arrays.
import { ENTRY_BYTES, FAN_SIZE, KEY_WORDS, type IndexHead, type KeySink } from "./index-file.ts";

export class IndexRun {
  constructor(
    readonly head: IndexHead,
    /** Entry n's bytes 2..13 as KEY_WORDS words at n * KEY_WORDS. */
    readonly keys: Uint32Array,
    /** fan[p]: the first entry whose first two bytes are ≥ p; fan[65536] = count. */
    readonly fan: Uint32Array,
  ) {}

  get count(): number {
    return this.keys.length / KEY_WORDS;
  }

  /** The first position in p's range whose key is ≥ (w0, w1, w2). */
  lowerBound(p: number, w0: number, w1: number, w2: number): number {
    const k = this.keys;
    let lo = this.fan[p]!;
    let hi = this.fan[p + 1]!;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const at = mid * KEY_WORDS;
      let c = k[at]! - w0;
      if (c === 0) c = k[at + 1]! - w1;
      if (c === 0) c = k[at + 2]! - w2;
      if (c < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  matches(pos: number, p: number, w0: number, w1: number, w2: number): boolean {
    const at = pos * KEY_WORDS;
    const k = this.keys;
    return pos < this.fan[p + 1]! && k[at] === w0 && k[at + 1] === w1 && k[at + 2] === w2;
  }
}

export function word(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

/** The parts of an id a run compares: its first 2 bytes and the next 3 words. */
export function idKey(id: Uint8Array): [p: number, w0: number, w1: number, w2: number] {
  return [(id[0]! << 8) | id[1]!, word(id, 2), word(id, 6), word(id, 10)];
}

/** Builds a run's arrays from a file's decoded entries, in order (the writer's side). */
export class RunBuilder implements KeySink {
  private readonly keys: Uint32Array;
  private readonly fan = new Uint32Array(FAN_SIZE);
  private n = 0;
  private nextPrefix = 0;

  constructor(readonly count: number) {
    this.keys = new Uint32Array(count * KEY_WORDS);
  }

  /** Appends the keys of `plain` (whole 48-byte entries, ascending). */
  add(plain: Uint8Array): void {
    const keys = this.keys;
    const fan = this.fan;
    let n = this.n;
    let next = this.nextPrefix;
    if (n + plain.length / ENTRY_BYTES > this.count) throw new Error("more index entries than announced");
    for (let at = 0; at < plain.length; at += ENTRY_BYTES, n++) {
      const p = (plain[at]! << 8) | plain[at + 1]!;
      while (next <= p) fan[next++] = n;
      const k = n * KEY_WORDS;
      keys[k] = word(plain, at + 2);
      keys[k + 1] = word(plain, at + 6);
      keys[k + 2] = word(plain, at + 10);
    }
    this.n = n;
    this.nextPrefix = next;
  }

  done(): { fan: Uint32Array; keys: Uint32Array } {
    if (this.n !== this.count) throw new Error(`${this.n} index entries, ${this.count} announced`);
    while (this.nextPrefix < FAN_SIZE) this.fan[this.nextPrefix++] = this.n;
    return { fan: this.fan, keys: this.keys };
  }
}
