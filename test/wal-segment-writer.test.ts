// A new partial segment gets its name only once it is zero-filled to its full size (readers
// such as get-wal --partial never see it short), and a completed segment's checksum file
// only once it is written whole: both are made under temporary names that archive listings
// skip, and what a crash left under them is made anew.
import { describe, it, expect, afterEach } from "vitest";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { createSegmentWriter } from "../src/wal/segment-writer.ts";
import { archiveListingOf } from "../src/wal/archive-layout.ts";
import { tempDir, type Cleanup } from "./harness/backup.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const SEG = 1024 * 1024;

describe("the segment writer's partial segments", () => {
  it("appear full-size under their name, from a temporary one that listings skip and a crash may leave", () => {
    const dir = tempDir(cleanups, "klio-segwriter-");
    const name = "000000010000000000000003";
    // What a crash while zero-filling would have left.
    writeFileSync(path.join(dir, `${name}.partial.new`), "half");
    expect(archiveListingOf(readdirSync(dir), SEG).segments).toEqual([]);
    const w = createSegmentWriter(dir, SEG, () => {});
    const data = new Uint8Array(100).fill(7);
    w.write(1, 3n * BigInt(SEG) + 10n, [data]);
    w.flush();
    expect(readdirSync(dir).sort()).toEqual([`${name}.partial`]);
    expect(statSync(path.join(dir, `${name}.partial`)).size).toBe(SEG);
    const bytes = readFileSync(path.join(dir, `${name}.partial`));
    expect(bytes.subarray(10, 110).every((b) => b === 7)).toBe(true);
    expect(bytes.subarray(0, 10).every((b) => b === 0) && bytes.subarray(110).every((b) => b === 0)).toBe(true);
    w.closePartial();
    expect(existsSync(path.join(dir, `${name}.partial.new`))).toBe(false);
  });

  it("give a completed segment its checksum file whole, from a temporary name a crash may leave", () => {
    const dir = tempDir(cleanups, "klio-segwriter-");
    const name = "000000010000000000000003";
    writeFileSync(path.join(dir, `${name}.crc32.new`), "half");
    expect(archiveListingOf(readdirSync(dir), SEG).checksums).toEqual([]);
    const completed: string[] = [];
    const w = createSegmentWriter(dir, SEG, (n) => completed.push(n));
    w.write(1, 3n * BigInt(SEG), [new Uint8Array(SEG).fill(9)]);
    w.flush();
    expect(completed).toEqual([name]);
    expect(readdirSync(dir).sort()).toEqual([name, `${name}.crc32`]);
    expect(readFileSync(path.join(dir, `${name}.crc32`), "utf8")).toMatch(/^\S+ 1 [0-9a-f]{8} 1048576\n$/);
  });
});
