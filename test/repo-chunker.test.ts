// The chunker: where boundaries fall for each policy, that they do not depend on how the
// bytes are pushed, that the chunks put back together are the input, and that all-zero
// chunks are elided.
import { describe, it, expect } from "vitest";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { createChunker, isAllZero, type Chunk, type ChunkingPolicy } from "../src/repo/chunker.ts";
import { KlioError } from "../src/util/errors.ts";

/** Random bytes as a plain Uint8Array (a Buffer's slice() is a view, not a copy). */
/** Random-looking bytes that are the same on every run (SHA-256 in counter mode): no flaky boundaries. */
const randomBytes = (() => {
  let counter = 0;
  return (n: number): Uint8Array => {
    const out = new Uint8Array(n);
    for (let at = 0; at < n; at += 32) out.set(createHash("sha256").update(`klio-chunker-test-${counter++}`).digest().subarray(0, Math.min(32, n - at)), at);
    return out;
  };
})();

/** A deterministic pseudo-random generator (xorshift32), so a failing split can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

/** Pushes `input` in pieces whose sizes `pieceSizes` gives, then ends. */
function chunkAll(policy: ChunkingPolicy, input: Uint8Array, pieceSize: () => number = () => input.length): Chunk[] {
  const c = createChunker(policy);
  const out: Chunk[] = [];
  for (let at = 0; at < input.length; ) {
    const n = Math.min(input.length - at, pieceSize());
    // Push a copy that is overwritten afterwards: a chunk's data is valid until the next
    // push, and kept by copying it.
    const piece = new Uint8Array(input.subarray(at, at + n));
    out.push(...c.push(piece).map(owned));
    piece.fill(0xee);
    at += n;
  }
  out.push(...c.end().map(owned));
  return out;
}

const owned = (c: Chunk): Chunk => ({ ...c, data: c.data && Uint8Array.from(c.data) });

function reassemble(chunks: Chunk[]): Uint8Array {
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    expect(c.offset).toBe(at);
    if (c.data !== null) {
      expect(c.data.length).toBe(c.length);
      out.set(c.data, at);
    }
    at += c.length;
  }
  return out;
}

/** Byte equality without a deep-equal diff of megabytes when it fails. */
const equal = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(a, b) === 0;
const digest = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const summary = (chunks: Chunk[]) => chunks.map((c) => `${c.offset}+${c.length}:${c.data === null ? "zero" : digest(c.data)}`);

/** 8 KB "pages": random ones and all-zero ones, like a relation file with a never-written tail and holes. */
function pagedFile(pages: number, zeroEvery: number, seed: number): Uint8Array {
  const r = rng(seed);
  const b = new Uint8Array(pages * 8192);
  for (let p = 0; p < pages; p++) {
    if (p % zeroEvery === zeroEvery - 1) continue;
    for (let i = 0; i < 8192; i += 4) new DataView(b.buffer).setUint32(p * 8192 + i, (r() * 2 ** 32) >>> 0);
  }
  return b;
}

describe("fixed chunks", () => {
  it("cut at multiples of the size, the last one shorter, whatever the push sizes", () => {
    const input = randomBytes(8192 * 10 + 1234);
    const whole = chunkAll({ kind: "fixed", size: 8192 }, input);
    expect(whole.map((c) => [c.offset, c.length])).toEqual([...Array(10).keys()].map((i) => [i * 8192, 8192]).concat([[81920, 1234]]));
    expect(equal(reassemble(whole), input)).toBe(true);
    for (const seed of [1, 2, 3, 4, 5]) {
      const r = rng(seed);
      const sizes = [() => 1 + Math.floor(r() * 20000), () => 1 + Math.floor(r() * 50), () => 8191, () => 8193, () => 3 * 8192];
      for (const size of sizes) expect(summary(chunkAll({ kind: "fixed", size: 8192 }, input, size))).toEqual(summary(whole));
    }
  });

  it("elides all-zero chunks and keeps a chunk with one non-zero byte anywhere", () => {
    const input = pagedFile(12, 3, 7);
    // Pages 2, 5, 8 and 11 are zero; page 5 gets a non-zero last byte, page 8 one in its middle.
    expect(isAllZero(input.subarray(5 * 8192, 6 * 8192))).toBe(true);
    input[6 * 8192 - 1] = 1;
    input[8 * 8192 + 4097] = 9;
    const chunks = chunkAll({ kind: "fixed", size: 8192 }, input, () => 5000);
    expect(chunks.map((c) => c.data === null)).toEqual([false, false, true, false, false, false, false, false, false, false, false, true]);
    expect(chunks.find((c) => c.offset === 5 * 8192)!.data![8191]).toBe(1);
    expect(equal(reassemble(chunks), input)).toBe(true);
  });

  it("an empty file has no chunks; a zero tail shorter than the size is elided too", () => {
    expect(chunkAll({ kind: "fixed", size: 8192 }, new Uint8Array(0))).toEqual([]);
    const c = createChunker({ kind: "fixed", size: 8192 });
    expect(c.end()).toEqual([]);
    const tail = chunkAll({ kind: "fixed", size: 8192 }, new Uint8Array(8192 + 100));
    expect(tail).toEqual([
      { offset: 0, length: 8192, data: null },
      { offset: 8192, length: 100, data: null },
    ]);
  });

  it("whole: one chunk up to the maximum, cut at the maximum beyond it", () => {
    const small = randomBytes(5000);
    expect(chunkAll({ kind: "whole", max: 65536 }, small, () => 100).map((c) => [c.offset, c.length])).toEqual([[0, 5000]]);
    const big = randomBytes(65536 * 2 + 10);
    const chunks = chunkAll({ kind: "whole", max: 65536 }, big, () => 777);
    expect(chunks.map((c) => c.length)).toEqual([65536, 65536, 10]);
    expect(equal(reassemble(chunks), big)).toBe(true);
  });

  it("refuses push() after end() and impossible policies", () => {
    const c = createChunker({ kind: "fixed", size: 16 });
    c.end();
    expect(() => c.push(new Uint8Array(1))).toThrow(KlioError);
    for (const p of [
      { kind: "fixed", size: 0 },
      { kind: "fixed", size: 1.5 },
      { kind: "whole", max: 2 ** 40 },
      { kind: "cdc", min: 1024, avg: 1000, max: 4096 },
      { kind: "cdc", min: 4096, avg: 2048, max: 8192 },
      { kind: "cdc", min: 16, avg: 64, max: 128 },
    ] as ChunkingPolicy[]) {
      expect(() => createChunker(p), JSON.stringify(p)).toThrow(expect.objectContaining({ code: "bad-chunking" }));
    }
  });
});

describe("content-defined chunks", () => {
  const policy: ChunkingPolicy = { kind: "cdc", min: 2048, avg: 8192, max: 32768 };

  it("fall within min and max, and do not depend on the push sizes", () => {
    const input = randomBytes(2 * 1024 * 1024);
    const whole = chunkAll(policy, input);
    expect(equal(reassemble(whole), input)).toBe(true);
    const lengths = whole.map((c) => c.length);
    expect(Math.min(...lengths.slice(0, -1))).toBeGreaterThanOrEqual(2048);
    expect(Math.max(...lengths)).toBeLessThanOrEqual(32768);
    // Content-defined: neither all at the minimum nor all at the maximum.
    const mean = input.length / whole.length;
    expect(mean).toBeGreaterThan(4096);
    expect(mean).toBeLessThan(20000);
    expect(new Set(lengths).size).toBeGreaterThan(whole.length / 2);
    for (const seed of [11, 12, 13]) {
      const r = rng(seed);
      expect(summary(chunkAll(policy, input, () => 1 + Math.floor(r() * 70000)))).toEqual(summary(whole));
      expect(summary(chunkAll(policy, input, () => 1 + Math.floor(r() * 300)))).toEqual(summary(whole));
    }
  });

  it("re-synchronise after an insertion or a deletion: only the chunks around it change", () => {
    const input = randomBytes(1024 * 1024);
    const before = chunkAll(policy, input);
    const at = 500_000;
    const inserted = new Uint8Array(input.length + 100);
    inserted.set(input.subarray(0, at));
    inserted.set(randomBytes(100), at);
    inserted.set(input.subarray(at), at + 100);
    const deleted = new Uint8Array(input.length - 3000);
    deleted.set(input.subarray(0, at));
    deleted.set(input.subarray(at + 3000), at);
    const known = new Set(before.map((c) => digest(c.data!)));
    for (const changed of [inserted, deleted]) {
      const after = chunkAll(policy, changed, () => 4096);
      expect(equal(reassemble(after), changed)).toBe(true);
      const fresh = after.filter((c) => !known.has(digest(c.data!)));
      // The chunk holding the change, and at most a neighbour whose boundary moved.
      expect(fresh.length).toBeGreaterThanOrEqual(1);
      expect(fresh.length).toBeLessThanOrEqual(3);
      expect(fresh.every((c) => c.offset + c.length > at - 32768 && c.offset < at + 3 * 32768)).toBe(true);
    }
    // A fixed chunker, by contrast, loses everything after an insertion.
    const fixedKnown = new Set(chunkAll({ kind: "fixed", size: 8192 }, input).map((c) => digest(c.data!)));
    const fixedAfter = chunkAll({ kind: "fixed", size: 8192 }, inserted).filter((c) => !fixedKnown.has(digest(c.data!)));
    expect(fixedAfter.length).toBeGreaterThan(60);
  });

  it("elide runs of zeros", () => {
    const input = new Uint8Array(300_000);
    input.set(randomBytes(50_000), 0);
    input.set(randomBytes(50_000), 250_000);
    const chunks = chunkAll(policy, input, () => 9999);
    expect(equal(reassemble(chunks), input)).toBe(true);
    const zeroBytes = chunks.filter((c) => c.data === null).reduce((n, c) => n + c.length, 0);
    expect(zeroBytes).toBeGreaterThan(150_000);
  });
});

describe("isAllZero", () => {
  it("finds a single non-zero byte at every position, at every alignment", () => {
    const backing = new Uint8Array(200);
    for (let offset = 0; offset < 8; offset++) {
      for (const len of [0, 1, 3, 4, 5, 31, 32, 33, 64, 100]) {
        const view = backing.subarray(offset, offset + len);
        expect(isAllZero(view)).toBe(true);
        for (let i = 0; i < len; i++) {
          view[i] = 0x80;
          expect(isAllZero(view), `offset ${offset} len ${len} at ${i}`).toBe(false);
          view[i] = 0;
        }
      }
    }
  });
});
