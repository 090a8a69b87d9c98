// Decoding a stored segment file straight into another file: the original bytes, or a clear
// "damaged" error for every way the stored file can be wrong.
import { describe, it, expect, afterAll } from "vitest";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { encodeStoredSegment } from "../src/wal/stored-segment.ts";
import { decodeStoredSegmentFile } from "../src/wal/stored-segment-file.ts";
import { damaged as withDamage } from "./harness/damage.ts";

const dir = mkdtempSync(path.join(tmpdir(), "klio-kwal-file-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function file(bytes: Uint8Array): string {
  const f = path.join(dir, `in-${n++}.kwal`);
  writeFileSync(f, bytes);
  return f;
}

/** WAL-like: compressible runs with random records in between (several 1 MiB output pieces). */
function walLike(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i += 8192) randomBytes(700).copy(b, i);
  return b;
}

describe("decodeStoredSegmentFile", () => {
  it("writes the original bytes of compressed and uncompressed stored segments", async () => {
    for (const original of [walLike(4 * 1024 * 1024), randomBytes(1024 * 1024)]) {
      const stored = await encodeStoredSegment(original);
      const out = path.join(dir, `out-${n++}`);
      const length = await decodeStoredSegmentFile(file(stored), out, "segment X", { sync: true });
      expect(length).toBe(original.length);
      expect(readFileSync(out).equals(original)).toBe(true);
      expect(statSync(out).mode & 0o777).toBe(0o600);
    }
    // Random data does not shrink: it is stored uncompressed (compression byte 0).
    expect((await encodeStoredSegment(randomBytes(1024 * 1024)))[8]).toBe(0);
  });

  it("refuses every kind of damage, naming the segment", async () => {
    const original = walLike(2 * 1024 * 1024);
    const good = await encodeStoredSegment(original);
    const damaged: [string, Uint8Array, RegExp][] = [
      ["bad magic", Uint8Array.from(good).fill(0x41, 0, 4), /bad header/],
      ["too short for a header", good.subarray(0, 20), /bad header/],
      ["unknown compression", Uint8Array.from(good).fill(7, 8, 9), /unknown compression 7/],
      ["truncated payload", good.subarray(0, good.length - 100), /damaged: (cannot decompress|length)/],
      ["damaged payload bytes", withDamage(good), /damaged/],
      ["wrong length in the header", (() => { const b = Uint8Array.from(good); new DataView(b.buffer).setUint32(12, original.length - 8192); return b; })(), /longer than|length/],
      ["wrong checksum", (() => { const b = Uint8Array.from(good); b[20]! ^= 1; return b; })(), /checksum mismatch/],
    ];
    for (const [what, bytes, message] of damaged) {
      await expect(decodeStoredSegmentFile(file(bytes), path.join(dir, `bad-${n++}`), "WAL segment 000000010000000000000007 of cluster db1"), what)
        .rejects.toMatchObject({ code: "corrupt-wal", message: expect.stringMatching(message) });
    }
    await expect(decodeStoredSegmentFile(file(good), path.join(dir, `bad-${n++}`), "x")).resolves.toBe(original.length);
  });

  it("reports a missing stored file as ENOENT (not as damage): the reader then looks for other forms", async () => {
    await expect(decodeStoredSegmentFile(path.join(dir, "nope.kwal"), path.join(dir, "out-missing"), "x")).rejects.toMatchObject({ code: "ENOENT" });
  });
});
