import { describe, it, expect } from "vitest";
import { randomBytes } from "node:crypto";
import { decodeStoredSegment, encodeStoredSegment } from "../src/wal/stored-segment.ts";

describe("stored WAL segment container", () => {
  it("gives back exactly the original bytes, compressed when that pays", async () => {
    const wal = new Uint8Array(1024 * 1024);
    for (let i = 0; i < wal.length; i += 8192) wal.set(randomBytes(200), i); // mostly zeros, like a quiet segment
    const stored = await encodeStoredSegment(wal);
    expect(stored.length).toBeLessThan(wal.length / 10);
    expect(Buffer.from(decodeStoredSegment(stored, "x")).equals(Buffer.from(wal))).toBe(true);
  });

  it("stores incompressible data as it is", async () => {
    const noise = new Uint8Array(randomBytes(256 * 1024));
    const stored = await encodeStoredSegment(noise);
    expect(stored[8]).toBe(0);
    expect(Buffer.from(decodeStoredSegment(stored, "x")).equals(Buffer.from(noise))).toBe(true);
  });

  it("detects every kind of damage with a clear error", async () => {
    const wal = new Uint8Array(64 * 1024);
    for (let i = 0; i < wal.length; i++) wal[i] = (i * 7919) % 251 < 40 ? i & 0xff : 0;
    const stored = await encodeStoredSegment(wal);
    expect(stored[8]).toBe(1);
    const flipped = stored.slice();
    flipped[48 + Math.floor((stored.length - 48) / 2)]! ^= 0xff;
    expect(() => decodeStoredSegment(flipped, "WAL segment X")).toThrow(/WAL segment X is damaged/);
    expect(() => decodeStoredSegment(stored.subarray(0, 40), "X")).toThrow(/bad header/);
    const badSum = stored.slice();
    badSum[20]! ^= 1;
    expect(() => decodeStoredSegment(badSum, "X")).toThrow(/checksum mismatch/);
  });
});
