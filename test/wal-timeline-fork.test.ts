// The pieces of following a failover that need no server: where a history leaves the archive's
// timeline, where a timeline's WAL ends in the archive, where the receiver resumes, and the
// record of a fork.
import { describe, it, expect, afterEach } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { archivedEnd, branchOf } from "../src/wal/timeline-fork.ts";
import { archiveListingOf, listArchive } from "../src/wal/archive-layout.ts";
import { readForks, recordFork } from "../src/wal/archive-meta.ts";
import { resumePoint } from "../src/wal/receiver.ts";
import { parseTimelineHistory } from "../src/pg/timeline-history.ts";
import { parseLsn, type SegmentSize } from "../src/pg/lsn.ts";

const SEG = (1024 * 1024) as SegmentSize;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), "klio-fork-"));
  dirs.push(d);
  return d;
}

describe("branchOf", () => {
  const history = parseTimelineHistory("1\t0/3000A28\tno recovery target specified\n2\t0/5000100\tno recovery target specified\n");
  it("finds where the server's history leaves a timeline, and for which one", () => {
    expect(branchOf(history, 3, 1)).toEqual({ switchpoint: parseLsn("0/3000A28"), next: 2 });
    expect(branchOf(history, 3, 2)).toEqual({ switchpoint: parseLsn("0/5000100"), next: 3 });
  });
  it("is null for a timeline the history does not hold", () => {
    expect(branchOf(history, 3, 4)).toBeNull();
    expect(branchOf(history, 3, 3)).toBeNull();
  });
});

describe("archivedEnd", () => {
  it("is a complete segment's end, or just past the last byte written of a partial one (8-byte aligned)", async () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, "000000010000000000000002"), Buffer.alloc(SEG, 1));
    const partial = Buffer.alloc(SEG);
    partial.fill(7, 0, 5001);
    writeFileSync(path.join(dir, "000000010000000000000003.partial"), partial);
    writeFileSync(path.join(dir, "000000020000000000000003.partial"), Buffer.alloc(SEG));
    const listing = await listArchive(dir, SEG);
    expect(await archivedEnd(dir, listing, SEG, 1)).toBe(3n * BigInt(SEG) + 5008n);
    expect(await archivedEnd(dir, listing, SEG, 2)).toBe(3n * BigInt(SEG));
    expect(await archivedEnd(dir, listing, SEG, 3)).toBe(0n);
    // a byte written in the partial's last megabyte-sized read, at its very end
    partial.fill(0);
    partial[SEG - 1] = 1;
    writeFileSync(path.join(dir, "000000010000000000000003.partial"), partial);
    expect(await archivedEnd(dir, listing, SEG, 1)).toBe(4n * BigInt(SEG));
  });
});

describe("resumePoint", () => {
  it("resumes on the newest timeline, even where an older one reaches further (WAL past a fork)", () => {
    const listing = archiveListingOf(
      ["000000010000000000000004", "000000010000000000000005", "000000010000000000000006.partial", "000000020000000000000005.partial"],
      SEG,
    );
    expect(resumePoint(listing, SEG, [])).toEqual({ timeline: 2, start: 5n * BigInt(SEG) });
    expect(resumePoint(archiveListingOf(["000000010000000000000004"], SEG), SEG, [])).toEqual({ timeline: 1, start: 5n * BigInt(SEG) });
    expect(resumePoint(archiveListingOf([], SEG), SEG, [])).toBeUndefined();
  });
});

describe("recordFork", () => {
  it("records a fork once, durably, and reads it back", async () => {
    const dir = tempDir();
    const fork = { timeline: 1, forkLsn: parseLsn("0/3000A28"), nextTimeline: 2, archivedEnd: parseLsn("0/3004000"), detectedAt: "2026-12-06T16:00:00.000Z", server: "klio@db2:5432" };
    expect(await recordFork(dir, fork)).toBe(true);
    expect(await recordFork(dir, { ...fork, archivedEnd: parseLsn("0/3008000") })).toBe(false);
    expect(await readForks(dir)).toEqual([fork]);
    // a line torn by a crash is passed over
    writeFileSync(path.join(dir, "forks.jsonl"), '{"timeline":1,"forkLsn":"0/3000A28","nextT', { flag: "a" });
    expect(await readForks(dir)).toEqual([fork]);
    // and the next record starts on a line of its own
    const next = { ...fork, timeline: 2, forkLsn: parseLsn("0/5000100"), nextTimeline: 3 };
    expect(await recordFork(dir, next)).toBe(true);
    expect(await readForks(dir)).toEqual([fork, next]);
  });
});
