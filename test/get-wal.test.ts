// get-wal as PostgreSQL's restore_command, on archives built by hand: exact bytes or a clear
// refusal, and never a damaged or half-written file where PostgreSQL will read it.
import { describe, it, expect, afterEach } from "vitest";
import { mkdirSync, writeFileSync, readFileSync, existsSync, readdirSync, statSync, chmodSync } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { runKlio } from "./harness/klio.ts";
import { encodeStoredSegment } from "../src/wal/stored-segment.ts";
import { damaged, damageFile } from "./harness/damage.ts";
import { checksumFileFor, syntheticSegment } from "./harness/wal.ts";
import { tempDir, type Cleanup } from "./harness/backup.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const SEG = 1024 * 1024;
const SYSID = "7000000000000000001";
/** get-wal's status for failures other than "missing": PostgreSQL stops recovery on it. */
const FATAL = 200;

function archive(cluster: string, repo = tempDir(cleanups, "klio-getwal-")): { repo: string; dir: string } {
  const dir = path.join(repo, "wal", cluster);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "cluster.json"), JSON.stringify({ format: 1, cluster, systemIdentifier: SYSID, walSegmentSize: SEG, createdAt: "2026-11-24T00:00:00Z" }));
  return { repo, dir };
}

function segment(name: string): Uint8Array {
  return syntheticSegment(name, SYSID, SEG, (b) => {
    for (let i = 0; i < SEG; i += 4096) b.set(randomBytes(512), i);
  });
}

/** A raw segment as the receiver leaves it: the segment and its checksum file. */
function writeRaw(dir: string, name: string, bytes = segment(name)): Uint8Array {
  writeFileSync(path.join(dir, name), bytes);
  writeFileSync(path.join(dir, name + ".crc32"), checksumFileFor(bytes));
  return bytes;
}

describe("get-wal", () => {
  it("serves stored, raw and history files exactly, partial segments only when asked", async () => {
    const { repo, dir } = archive("db1");
    const stored = segment("000000010000000000000003");
    const partial = segment("000000010000000000000005");
    writeFileSync(path.join(dir, "000000010000000000000003.kwal"), await encodeStoredSegment(stored));
    const raw = writeRaw(dir, "000000010000000000000004");
    writeFileSync(path.join(dir, "000000010000000000000005.partial"), partial);
    writeFileSync(path.join(dir, "00000002.history"), "1\t0/5000000\tno recovery target specified\n");
    const out = tempDir(cleanups, "klio-pgwal-");
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

  it("stops recovery (a fatal status, not 'missing') on a damaged segment, writes nothing, and wal status reports it", async () => {
    const { repo, dir } = archive("db1");
    writeFileSync(path.join(dir, "000000010000000000000003.kwal"), damaged(await encodeStoredSegment(segment("000000010000000000000003"))));
    writeRaw(dir, "000000010000000000000004");
    damageFile(path.join(dir, "000000010000000000000004"));
    const target = path.join(repo, "RECOVERYXLOG");
    for (const [name, why] of [["000000010000000000000003", /is damaged/], ["000000010000000000000004", /is damaged: checksum mismatch \(CRC-32\)/]] as const) {
      const r = runKlio(["get-wal", name, target, "--repo", repo]);
      expect(r.code).toBe(FATAL);
      expect(r.stderr).toMatch(new RegExp(`cannot restore ${name}: WAL segment ${name} of cluster db1 ${why.source}.*recovery must stop here`));
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(existsSync(target)).toBe(false);
    }
    // What get-wal met is noted: wal status reports both files and exits 3.
    const status = runKlio(["wal", "status", "--repo", repo]);
    expect(status.code).toBe(3);
    expect(status.stdout).toMatch(/DAMAGED 000000010000000000000003\.kwal/);
    expect(status.stdout).toMatch(/DAMAGED 000000010000000000000004: .*checksum mismatch/);
    expect(readdirSync(repo).filter((f) => f.includes("klio-tmp"))).toEqual([]);
  });

  it("never serves a file that is not a segment of this cluster, and wal status reports it", async () => {
    const { repo, dir } = archive("db1");
    // 16 MB-style garbage named like a segment, another cluster's segment, and one under the wrong name.
    writeFileSync(path.join(dir, "000000010000000000000005"), randomBytes(SEG));
    writeRaw(dir, "000000010000000000000006", syntheticSegment("000000010000000000000006", "7000000000000000999", SEG));
    writeRaw(dir, "000000010000000000000007", segment("000000010000000000000009"));
    const target = path.join(repo, "RECOVERYXLOG");
    const answers = ["000000010000000000000005", "000000010000000000000006", "000000010000000000000007"].map((n) => runKlio(["get-wal", n, target, "--repo", repo]));
    expect(answers.map((a) => a.code)).toEqual([FATAL, FATAL, FATAL]);
    expect(answers[0]!.stderr).toMatch(/not a WAL segment|belongs to the database system/);
    expect(answers[1]!.stderr).toMatch(/belongs to the database system 7000000000000000999, not 7000000000000000001/);
    expect(answers[2]!.stderr).toMatch(/holds the WAL of 0\/900000, not of 0\/700000/);
    expect(existsSync(target)).toBe(false);
    const status = runKlio(["wal", "status", "--repo", repo, "--json"]);
    expect(status.code).toBe(3);
    const problems = JSON.parse(status.stdout).problems as { file: string; kind: string }[];
    expect(problems.map((p) => [p.file, p.kind])).toEqual([
      ["000000010000000000000005", "foreign"], ["000000010000000000000006", "damaged"], ["000000010000000000000007", "damaged"],
    ]);
  });

  it("serves a raw segment written before checksum files (its first page checked), and a partial one only with WAL in it", () => {
    const { repo, dir } = archive("db1");
    const legacy = segment("000000010000000000000003");
    writeFileSync(path.join(dir, "000000010000000000000003"), legacy);
    writeFileSync(path.join(dir, "000000010000000000000004.partial"), new Uint8Array(SEG));
    const out = tempDir(cleanups, "klio-pgwal-");
    expect(runKlio(["get-wal", "000000010000000000000003", path.join(out, "a"), "--repo", repo]).code).toBe(0);
    expect(readFileSync(path.join(out, "a")).equals(legacy)).toBe(true);
    expect(runKlio(["get-wal", "000000010000000000000004", path.join(out, "b"), "--repo", repo, "--partial"]).code).toBe(1);
    expect(runKlio(["wal", "status", "--repo", repo]).code).toBe(0);
  });

  it("hands PostgreSQL files it may open read-write (0600) from a read-only copy", async () => {
    const { repo, dir } = archive("db1");
    writeFileSync(path.join(dir, "000000010000000000000003.kwal"), await encodeStoredSegment(segment("000000010000000000000003")));
    writeRaw(dir, "000000010000000000000004");
    writeFileSync(path.join(dir, "000000010000000000000005.partial"), segment("000000010000000000000005"));
    writeFileSync(path.join(dir, "00000002.history"), "1\t0/5000000\tno recovery target specified\n");
    for (const f of readdirSync(dir)) chmodSync(path.join(dir, f), 0o440);
    const out = tempDir(cleanups, "klio-pgwal-");
    for (const name of ["000000010000000000000003", "000000010000000000000004", "000000010000000000000005", "00000002.history"]) {
      expect(runKlio(["get-wal", name, path.join(out, name), "--repo", repo, "--partial"]).code).toBe(0);
      expect(statSync(path.join(out, name)).mode & 0o777).toBe(0o600);
    }
  });

  it("says so when TARGET's directory does not exist, instead of calling the file missing", async () => {
    const { repo, dir } = archive("db1");
    writeFileSync(path.join(dir, "000000010000000000000003.kwal"), await encodeStoredSegment(segment("000000010000000000000003")));
    const r = runKlio(["get-wal", "000000010000000000000003", path.join(repo, "nope", "RECOVERYXLOG"), "--repo", repo]);
    expect(r.code).toBe(FATAL);
    expect(r.stderr).toMatch(/cannot write into .*\/nope: it does not exist or is not a directory/);
  });

  it("refuses a bad name with 2 before looking at anything; a misconfigured archive is fatal, never 'missing'", () => {
    const { repo } = archive("db1");
    archive("db2", repo);
    const target = path.join(repo, "x");
    const badName = runKlio(["get-wal", "../../etc/passwd", target, "--repo", "/nonexistent"]);
    expect(badName.code).toBe(2);
    expect(badName.stderr).toMatch(/"..\/..\/etc\/passwd" is not a WAL file name/);
    const ambiguous = runKlio(["get-wal", "000000010000000000000003", target, "--repo", repo]);
    expect(ambiguous.code).toBe(FATAL);
    expect(ambiguous.stderr).toMatch(/several clusters \(db1, db2\): name one with --cluster/);
    const none = runKlio(["get-wal", "000000010000000000000003", target, "--repo", path.join(repo, "nope")]);
    expect(none.code).toBe(FATAL);
    expect(none.stderr).toMatch(/there is no directory ".*nope": give the repository directory with --repo/);
    expect(runKlio(["get-wal", "000000010000000000000003", target, "--repo", repo, "--cluster", "../db1"]).code).toBe(2);
    expect(runKlio(["get-wal", "000000010000000000000003", target, "--repo", repo, "--cluster", "db1"]).code).toBe(1);
    expect(existsSync(target)).toBe(false);
  });
});

describe("get-wal with a path for a name", () => {
  it("`get-wal ../../etc/passwd /tmp/x --repo /tmp` exits 2 on the name, JSON-quoted, and writes nothing", () => {
    const target = path.join(tempDir(cleanups, "klio-getwal-name-"), "x");
    // /tmp is a directory but no repository: the name is refused before that is looked at.
    const r = runKlio(["get-wal", "../../etc/passwd", target, "--repo", "/tmp"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`klio: ${JSON.stringify("../../etc/passwd")} is not a WAL file name (expected e.g. 000000010000000000000003 or 00000002.history)\n`);
    expect(existsSync(target)).toBe(false);
    // The exact invocation of the report, TARGET in /tmp.
    const exact = runKlio(["get-wal", "../../etc/passwd", "/tmp/x", "--repo", "/tmp"]);
    expect(exact.code).toBe(2);
    expect(exact.stderr).toMatch(/^klio: "\.\.\/\.\.\/etc\/passwd" is not a WAL file name/);
  });
});
