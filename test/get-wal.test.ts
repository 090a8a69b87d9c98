// get-wal as PostgreSQL's restore_command, on archives built by hand: exact bytes or a clear
// refusal, and never a damaged or half-written file where PostgreSQL will read it.
import { describe, it, expect } from "vitest";
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, existsSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { runKlio } from "./harness/klio.ts";
import { encodeStoredSegment } from "../src/wal/stored-segment.ts";
import { damaged } from "./harness/damage.ts";

const SEG = 1024 * 1024;

function archive(cluster: string, repo = mkdtempSync(path.join(tmpdir(), "klio-getwal-"))): { repo: string; dir: string } {
  const dir = path.join(repo, "wal", cluster);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "cluster.json"), JSON.stringify({ format: 1, cluster, systemIdentifier: "7000000000000000001", walSegmentSize: SEG, createdAt: "2026-11-24T00:00:00Z" }));
  return { repo, dir };
}

function segment(): Uint8Array {
  const b = new Uint8Array(SEG);
  for (let i = 0; i < SEG; i += 4096) b.set(randomBytes(512), i);
  return b;
}

describe("get-wal", () => {
  it("serves stored, raw and history files exactly, partial segments only when asked", async () => {
    const { repo, dir } = archive("db1");
    const stored = segment();
    const raw = segment();
    const partial = segment();
    writeFileSync(path.join(dir, "000000010000000000000003.kwal"), await encodeStoredSegment(stored));
    writeFileSync(path.join(dir, "000000010000000000000004"), raw);
    writeFileSync(path.join(dir, "000000010000000000000005.partial"), partial);
    writeFileSync(path.join(dir, "00000002.history"), "1\t0/5000000\tno recovery target specified\n");
    const out = mkdtempSync(path.join(tmpdir(), "klio-pgwal-"));
    const get = (name: string, ...flags: string[]) => runKlio(["get-wal", name, path.join(out, name), "--repo", repo, ...flags]);

    expect(get("000000010000000000000003").code).toBe(0);
    expect(readFileSync(path.join(out, "000000010000000000000003")).equals(stored)).toBe(true);
    expect(get("000000010000000000000004").code).toBe(0);
    expect(readFileSync(path.join(out, "000000010000000000000004")).equals(raw)).toBe(true);
    expect(get("00000002.history").code).toBe(0);
    expect(readFileSync(path.join(out, "00000002.history"), "utf8")).toMatch(/^1\t0\/5000000/);
    expect(get("000000010000000000000005").code).toBe(1);
    expect(get("000000010000000000000005", "--partial").code).toBe(0);
    expect(readFileSync(path.join(out, "000000010000000000000005")).equals(partial)).toBe(true);
    expect(get("00000003.history").code).toBe(1);
    expect(get("000000010000000000000003.00000028.backup").code).toBe(1);
    expect(readdirSync(out).filter((f) => f.includes("klio-tmp"))).toEqual([]);
  });

  it("refuses a damaged segment with a clear error and writes nothing", async () => {
    const { repo, dir } = archive("db1");
    const stored = damaged(await encodeStoredSegment(segment()));
    writeFileSync(path.join(dir, "000000010000000000000003.kwal"), stored);
    const target = path.join(repo, "RECOVERYXLOG");
    const r = runKlio(["get-wal", "000000010000000000000003", target, "--repo", repo]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/WAL segment 000000010000000000000003 of cluster db1 is damaged/);
    expect(existsSync(target)).toBe(false);
  });

  it("says so when TARGET's directory does not exist, instead of calling the file missing", async () => {
    const { repo, dir } = archive("db1");
    writeFileSync(path.join(dir, "000000010000000000000003.kwal"), await encodeStoredSegment(segment()));
    const r = runKlio(["get-wal", "000000010000000000000003", path.join(repo, "nope", "RECOVERYXLOG"), "--repo", repo]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/cannot write into .*\/nope: it does not exist or is not a directory/);
  });

  it("asks for --cluster when the repository holds several, and names what is missing", () => {
    const { repo } = archive("db1");
    archive("db2", repo);
    const target = path.join(repo, "x");
    const ambiguous = runKlio(["get-wal", "000000010000000000000003", target, "--repo", repo]);
    expect(ambiguous.code).toBe(2);
    expect(ambiguous.stderr).toMatch(/several clusters \(db1, db2\): name one with --cluster/);
    const none = runKlio(["get-wal", "000000010000000000000003", target, "--repo", path.join(repo, "nope")]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/holds no WAL archive/);
    expect(runKlio(["get-wal", "000000010000000000000003", target, "--repo", repo, "--cluster", "../db1"]).code).toBe(2);
    expect(existsSync(target)).toBe(false);
  });
});
