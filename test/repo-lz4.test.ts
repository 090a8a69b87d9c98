// The LZ4 block codec: round trips on every shape of input (empty, tiny, incompressible,
// runs, overlapping matches, long lengths, inputs over the 64 KB window), blocks that a
// reference LZ4 decoder wrote by hand, and damaged blocks refused without overrun.
import { describe, it, expect } from "vitest";
import { createHash } from "node:crypto";
import { Lz4Compressor, lz4Decompress } from "../src/repo/lz4.ts";

function noise(n: number, seed: string): Uint8Array {
  const out = new Uint8Array(n);
  for (let at = 0, k = 0; at < n; at += 64, k++) out.set(createHash("sha512").update(`${seed} ${k}`).digest().subarray(0, Math.min(64, n - at)), at);
  return out;
}

const text = (s: string, n: number) => new TextEncoder().encode(s.repeat(Math.ceil(n / s.length))).subarray(0, n);

describe("lz4", () => {
  const c = new Lz4Compressor();
  const inputs: [string, Uint8Array][] = [
    ["empty", new Uint8Array(0)],
    ["one byte", new Uint8Array([7])],
    ["12 bytes", text("abc", 12)],
    ["13 bytes of a run", new Uint8Array(13).fill(1)],
    ["zeros", new Uint8Array(8192)],
    ["a PostgreSQL-like page", (() => {
      const p = new Uint8Array(8192);
      p.set(noise(24, "header"), 0);
      p.set(text("aid|bid|abalance|                                                                                    ", 4000), 4192);
      return p;
    })()],
    ["noise", noise(8192, "n")],
    ["noise with repeats", (() => {
      const n = noise(4096, "r");
      const p = new Uint8Array(20_000);
      for (let at = 0; at < p.length; at += 4096) p.set(n.subarray(0, Math.min(4096, p.length - at)), at);
      return p;
    })()],
    ["period 3 (overlapping copies)", text("xyz", 5000)],
    ["300 KB over the 64 KB window", (() => {
      const p = new Uint8Array(300_000);
      const n = noise(70_000, "w");
      p.set(n, 0);
      p.set(n, 100_000); // 100 000 back: beyond the window, must not be referenced
      p.set(n.subarray(0, 30_000), 180_000); // 80 000 back
      p.set(text("tail ", 50_000), 250_000);
      return p;
    })()],
  ];
  for (const [name, input] of inputs) {
    it(`round-trips ${name}`, () => {
      const z = c.compress(input);
      if (z === null) return expect(input.length < 64 || name.startsWith("noise") || name === "12 bytes" || name === "one byte" || name === "empty").toBe(true);
      expect(z.length).toBeLessThan(input.length);
      // Buffer.equals: vitest's toEqual walks a typed array element by element, slowly.
      expect(Buffer.from(lz4Decompress(z.slice(), input.length)).equals(input)).toBe(true);
    });
  }

  it("compresses what repeats, and reuses its state across blocks without leaking between them", () => {
    const a = text("hello world ", 8192);
    const za = c.compress(a)!.slice();
    expect(za.length).toBeLessThan(200);
    const b = noise(8192, "b");
    expect(c.compress(b)).toBeNull();
    // a second time: same output (no references into the previous block)
    expect(c.compress(a)!.slice()).toEqual(za);
  });

  it("decodes blocks in the reference format", () => {
    // "abcabcabcabcabcabc" + "XYZWV": token 0x3b: 3 literals, match len 4+11=15 at offset 3; then 5 literals
    const block = new Uint8Array([0x3b, 0x61, 0x62, 0x63, 0x03, 0x00, 0x50, 0x58, 0x59, 0x5a, 0x57, 0x56]);
    expect(new TextDecoder().decode(lz4Decompress(block, 23))).toBe("abcabcabcabcabcabcXYZWV");
    // literals only, with an extended length (15 + 5 = 20)
    const lit = new Uint8Array([0xf0, 5, ...text("0123456789", 20)]);
    expect(new TextDecoder().decode(lz4Decompress(lit, 20))).toBe("01234567890123456789");
  });

  it("refuses damaged blocks: every truncation, bad offsets, wrong lengths", () => {
    const input = (inputs.find(([n]) => n === "a PostgreSQL-like page")![1]);
    const z = c.compress(input)!.slice();
    for (let cut = 0; cut < z.length; cut++) expect(() => lz4Decompress(z.subarray(0, cut), input.length)).toThrow(/damaged LZ4 block/);
    expect(() => lz4Decompress(z, input.length - 1)).toThrow(/damaged LZ4 block/);
    expect(() => lz4Decompress(z, input.length + 1)).toThrow(/damaged LZ4 block/);
    expect(() => lz4Decompress(new Uint8Array([0x10, 0x61, 0x05, 0x00]), 10)).toThrow(/bad offset/);
    expect(() => lz4Decompress(new Uint8Array([0x10, 0x61, 0x00, 0x00]), 10)).toThrow(/bad offset/);
    // Random damage never throws anything but the decoder's error, nor overruns.
    for (let i = 0; i < 2000; i++) {
      const d = z.slice();
      d[i % d.length] ^= 1 + (i % 255);
      try {
        const out = lz4Decompress(d, input.length);
        expect(out.length).toBe(input.length);
      } catch (e) {
        expect((e as Error).message).toMatch(/damaged LZ4 block/);
      }
    }
  });
});
