// Chunk ids: hex round trip, malformed input refused with one clear error, and the keyed id
// of an encrypted repository unlike the plain SHA-256 (and unlike another key's).
import { describe, it, expect } from "vitest";
import { createHash, randomBytes } from "node:crypto";
import { chunkIdFunction, chunkIdHex, parseChunkId, sameChunkId } from "../src/repo/chunk-id.ts";

describe("chunk ids", () => {
  it("round-trip through hex", () => {
    for (let i = 0; i < 50; i++) {
      const id = new Uint8Array(randomBytes(32));
      const hex = chunkIdHex(id);
      expect(hex).toMatch(/^[0-9a-f]{64}$/);
      expect(hex).toBe(Buffer.from(id).toString("hex"));
      expect(parseChunkId(hex)).toEqual(id);
    }
  });

  it("refuse malformed hex", () => {
    for (const bad of ["", "00", "0".repeat(63), "0".repeat(65), "g".repeat(64), "A".repeat(64), ` ${"0".repeat(63)}`]) {
      expect(() => parseChunkId(bad)).toThrow(expect.objectContaining({ code: "bad-chunk-id" }));
    }
  });

  it("are SHA-256 in a plain repository and keyed HMAC-SHA-256 in an encrypted one", () => {
    const data = new TextEncoder().encode("a page");
    const plain = chunkIdFunction(null)(data);
    expect(chunkIdHex(plain)).toBe(createHash("sha256").update(data).digest("hex"));
    const k1 = chunkIdFunction(new Uint8Array(32).fill(1))(data);
    const k2 = chunkIdFunction(new Uint8Array(32).fill(2))(data);
    expect(k1.length).toBe(32);
    expect(sameChunkId(k1, plain)).toBe(false);
    expect(sameChunkId(k1, k2)).toBe(false);
    expect(sameChunkId(k1, chunkIdFunction(new Uint8Array(32).fill(1))(data))).toBe(true);
    expect(plain.constructor).toBe(Uint8Array);
  });
});
