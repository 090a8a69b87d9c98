// The chunks test/repo-writer-child.ts writes, for the test that kills it to recompute.
import { createHash } from "node:crypto";

/** 16 KB: 4 KB of noise (so packs fill), then compressible text. */
export function writerTestChunk(i: number): Uint8Array {
  const b = new Uint8Array(16384);
  for (let k = 0; k < 64; k++) b.set(createHash("sha512").update(`${i}/${k}`).digest(), k * 64);
  b.set(new TextEncoder().encode(`chunk ${i} `.repeat(2000)).subarray(0, 12288), 4096);
  return b;
}
