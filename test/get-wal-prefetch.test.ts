// get-wal with a spool: the background prefetcher keeps the next segments ready, get-wal
// renames them into place, and nothing about the spool can make recovery read a wrong file.
// Hand-built archives for the mechanics (1 MB segments), then real recoveries on PostgreSQL
// 15 and 18 with the spool in restore_command, including the mv fast path.
import { describe, it, expect, afterEach } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, copyFileSync, lstatSync, readlinkSync, symlinkSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { ROOT, runKlio, startKlio, waitFor } from "./harness/klio.ts";
import { PG_VERSIONS, pgTempDir, startDataDir, startPostgres, type PgServer } from "./harness/postgres.ts";
import { archiveContentEnd, checksumFileFor, currentLsn, serverSegment, syntheticSegment } from "./harness/wal.ts";
import { encodeStoredSegment } from "../src/wal/stored-segment.ts";
import { damaged } from "./harness/damage.ts";
import { openSpool } from "../src/wal/wal-spool.ts";
import { restoreCommandWithSpool } from "../src/wal/wal-prefetch.ts";
import { shellQuote } from "../src/util/self-command.ts";
import { shareRepo } from "./harness/backup.ts";

const SEG = 1024 * 1024;
const SYSID = "7000000000000000001";
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function archive(cluster = "db1"): { repo: string; dir: string } {
  const repo = tempDir("klio-prefetch-repo-");
  const dir = path.join(repo, "wal", cluster);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "cluster.json"), JSON.stringify({ format: 1, cluster, systemIdentifier: SYSID, walSegmentSize: SEG, createdAt: "2026-11-24T00:00:00Z" }));
  return { repo, dir };
}

function segment(): Buffer {
  const b = Buffer.alloc(SEG);
  for (let i = 0; i < SEG; i += 4096) randomBytes(512).copy(b, i);
  return b;
}

const name = (tli: number, segno: number) => tli.toString(16).toUpperCase().padStart(8, "0") + "00000000" + segno.toString(16).toUpperCase().padStart(8, "0");

/**
 * Stores `bytes` as segment `file`, as the receiver would: its first page made that
 * segment's (in place: the caller's buffer is what get-wal must hand back), a raw segment
 * with its checksum file.
 */
async function store(dir: string, file: string, bytes: Buffer, how: "stored" | "raw" | "partial" = "stored"): Promise<void> {
  syntheticSegment(file, SYSID, SEG, (b) => b.set(bytes)).forEach((v, i) => i < 40 && (bytes[i] = v));
  if (how === "stored") writeFileSync(path.join(dir, file + ".kwal"), await encodeStoredSegment(bytes));
  else writeFileSync(path.join(dir, how === "raw" ? file : file + ".partial"), bytes);
  if (how === "raw") writeFileSync(path.join(dir, file + ".crc32"), checksumFileFor(bytes));
}

/** The pid a spool's lock names, if it is alive. */
function livePid(spoolDir: string): number | undefined {
  try {
    const pid = Number(readFileSync(path.join(spoolDir, "prefetch.pid"), "utf8").trim());
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Prefetchers our get-wal calls started (detached) are stopped when the test ends. */
function reapPrefetchers(spoolDir: string): void {
  cleanups.push(async () => {
    const pid = livePid(spoolDir);
    if (pid === undefined) return;
    process.kill(pid, "SIGKILL");
    await waitFor("the prefetcher to exit", () => !alive(pid));
  });
}

function prefetchLog(spoolRoot: string): { event: string; reason?: string; fetched?: number; taken?: number; pid?: number }[] {
  const file = path.join(spoolRoot, "prefetch.log");
  return existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l)) : [];
}

function setup(opts: { window: number; idle: number; partial?: boolean }) {
  const { repo, dir } = archive();
  const out = tempDir("klio-prefetch-pgwal-");
  const spoolRoot = path.join(out, "klio-spool");
  const spoolDir = openSpool(spoolRoot, dir, SYSID).dir;
  reapPrefetchers(spoolDir);
  const target = path.join(out, "RECOVERYXLOG");
  const get = (wal: string) =>
    runKlio(["get-wal", wal, target, "--repo", repo, "--spool", spoolRoot, "--prefetch", String(opts.window), "--prefetch-idle", String(opts.idle), ...(opts.partial ? ["--partial"] : [])]);
  const spooled = (wal: string) => path.join(spoolDir, wal);
  return { repo, dir, out, spoolRoot, spoolDir, target, get, spooled };
}

describe("get-wal --spool (hand-built archives)", () => {
  it("serves every segment byte for byte from the spool, with one prefetcher that leaves at the archive's end and cleans up", async () => {
    const s = setup({ window: 3, idle: 60 });
    const segs: Buffer[] = [];
    for (let i = 1; i <= 8; i++) {
      segs[i] = segment();
      await store(s.dir, name(1, i), segs[i]!, i % 3 === 0 ? "raw" : "stored");
    }
    expect(s.get(name(1, 1)).code).toBe(0);
    expect(readFileSync(s.target).equals(segs[1]!)).toBe(true);
    const pid = await waitFor("the prefetcher", () => livePid(s.spoolDir));
    for (let i = 2; i <= 8; i++) {
      const ino = await waitFor(`${name(1, i)} in the spool`, () => statSync(s.spooled(name(1, i)), { throwIfNoEntry: false })?.ino);
      expect(readFileSync(s.spooled(name(1, i))).equals(segs[i]!)).toBe(true);
      const r = s.get(name(1, i));
      expect(r.code, r.stderr).toBe(0);
      // Renamed out of the spool (same inode), not read again from the archive.
      expect(statSync(s.target).ino).toBe(ino);
      expect(readFileSync(s.target).equals(segs[i]!)).toBe(true);
      expect(livePid(s.spoolDir)).toBe(pid);
    }
    expect(s.get(name(1, 9)).code).toBe(1);
    await waitFor("the prefetcher to leave", () => !alive(pid));
    expect(existsSync(s.spoolDir)).toBe(false);
    const log = prefetchLog(s.spoolRoot);
    expect(log.filter((e) => e.event === "prefetch.start")).toHaveLength(1);
    expect(log.find((e) => e.event === "prefetch.stop")).toMatchObject({ reason: "end-of-archive", fetched: 7, taken: 7 });
  });

  it("stops after the idle time when recovery asks for nothing more, and removes what it spooled", async () => {
    const s = setup({ window: 2, idle: 1 });
    for (let i = 1; i <= 10; i++) await store(s.dir, name(1, i), segment());
    expect(s.get(name(1, 1)).code).toBe(0);
    const pid = await waitFor("the prefetcher", () => livePid(s.spoolDir));
    await waitFor("two segments spooled", () => existsSync(s.spooled(name(1, 2))) && existsSync(s.spooled(name(1, 3))));
    await waitFor("the prefetcher to leave", () => !alive(pid));
    expect(existsSync(s.spoolDir)).toBe(false);
    expect(prefetchLog(s.spoolRoot).find((e) => e.event === "prefetch.stop")).toMatchObject({ reason: "idle", fetched: 2, taken: 0 });
  });

  it("survives kill -9 of the prefetcher: leftovers are still right, a new prefetcher starts, the archive serves what the spool lacks", async () => {
    const s = setup({ window: 2, idle: 60 });
    const segs: Buffer[] = [];
    for (let i = 1; i <= 6; i++) await store(s.dir, name(1, i), (segs[i] = segment()));
    expect(s.get(name(1, 1)).code).toBe(0);
    const first = await waitFor("the prefetcher", () => livePid(s.spoolDir));
    await waitFor("two segments spooled", () => existsSync(s.spooled(name(1, 2))) && existsSync(s.spooled(name(1, 3))));
    process.kill(first, "SIGKILL");
    await waitFor("the prefetcher to die", () => !alive(first));
    // What a kill in the middle of a write leaves: a temporary file, never under a segment's name.
    const torn = s.spooled(`${name(1, 4)}.${first}.klio-tmp`);
    writeFileSync(torn, segs[4]!.subarray(0, 1000));

    expect(s.get(name(1, 2)).code).toBe(0);
    expect(readFileSync(s.target).equals(segs[2]!)).toBe(true);
    const second = await waitFor("a new prefetcher", () => livePid(s.spoolDir));
    expect(second).not.toBe(first);
    await waitFor("the torn temporary file removed", () => !existsSync(torn));

    // Killed again, and the spool lost entirely: the archive serves, a third prefetcher starts.
    process.kill(second, "SIGKILL");
    await waitFor("the prefetcher to die", () => !alive(second));
    rmSync(s.spoolDir, { recursive: true, force: true });
    expect(s.get(name(1, 3)).code).toBe(0);
    expect(readFileSync(s.target).equals(segs[3]!)).toBe(true);
    const third = await waitFor("a third prefetcher", () => livePid(s.spoolDir));
    expect([first, second]).not.toContain(third);
    for (let i = 4; i <= 6; i++) {
      expect(s.get(name(1, i)).code).toBe(0);
      expect(readFileSync(s.target).equals(segs[i]!)).toBe(true);
    }
  });

  it("never spools a partial segment, so a partial segment completed later is served complete", async () => {
    const s = setup({ window: 4, idle: 60, partial: true });
    const one = segment();
    const two = segment();
    const partialThree = segment();
    await store(s.dir, name(1, 1), one);
    await store(s.dir, name(1, 2), two);
    await store(s.dir, name(1, 3), partialThree, "partial");
    expect(s.get(name(1, 1)).code).toBe(0);
    const pid = await waitFor("the prefetcher", () => livePid(s.spoolDir));
    await waitFor("segment 2 spooled", () => existsSync(s.spooled(name(1, 2))));
    expect(s.get(name(1, 2)).code).toBe(0);
    // Nothing complete follows: the prefetcher leaves without having spooled the partial one.
    await waitFor("the prefetcher to leave", () => !alive(pid));
    expect(prefetchLog(s.spoolRoot).find((e) => e.event === "prefetch.stop")).toMatchObject({ reason: "end-of-archive", fetched: 1 });
    expect(s.get(name(1, 3)).code).toBe(0);
    expect(readFileSync(s.target).equals(partialThree)).toBe(true);
    // Nothing complete can follow a partial segment yet: no prefetcher is started for it.
    expect(readFileSync(path.join(s.spoolDir, "want"), "utf8").trim()).toBe(name(1, 3));
    expect(livePid(s.spoolDir)).toBeUndefined();

    // The receiver completes segment 3 (other bytes: the partial copy was older) and goes on.
    const three = segment();
    const four = segment();
    rmSync(path.join(s.dir, name(1, 3) + ".partial"));
    await store(s.dir, name(1, 3), three);
    await store(s.dir, name(1, 4), four);
    expect(s.get(name(1, 3)).code).toBe(0);
    expect(readFileSync(s.target).equals(three)).toBe(true);
    await waitFor("segment 4 spooled", () => existsSync(s.spooled(name(1, 4))));
    expect(s.get(name(1, 4)).code).toBe(0);
    expect(readFileSync(s.target).equals(four)).toBe(true);
    expect(readdirSync(s.spoolDir).filter((f) => f.includes(".partial"))).toEqual([]);
  });

  it("follows recovery onto a new timeline: never serves the old timeline's segment of the same number", async () => {
    const s = setup({ window: 3, idle: 60 });
    const tl1: Buffer[] = [];
    const tl2: Buffer[] = [];
    for (let i = 1; i <= 5; i++) await store(s.dir, name(1, i), (tl1[i] = segment()));
    writeFileSync(path.join(s.dir, "00000002.history"), "1\t0/3800000\tno recovery target specified\n");
    for (let i = 3; i <= 6; i++) await store(s.dir, name(2, i), (tl2[i] = segment()));

    expect(s.get(name(1, 2)).code).toBe(0);
    await waitFor("timeline 1 segments 3 to 5 spooled", () => [3, 4, 5].every((i) => existsSync(s.spooled(name(1, i)))));
    expect(s.get("00000002.history").code).toBe(0);
    // Recovery switches to timeline 2 at segment 3.
    expect(s.get(name(2, 3)).code).toBe(0);
    expect(readFileSync(s.target).equals(tl2[3]!)).toBe(true);
    await waitFor("timeline 2 spooled, timeline 1 dropped", () => {
      const files = readdirSync(s.spoolDir);
      return files.includes(name(2, 4)) && !files.some((f) => f.startsWith("00000001"));
    });
    for (let i = 4; i <= 6; i++) {
      expect(s.get(name(2, i)).code).toBe(0);
      expect(readFileSync(s.target).equals(tl2[i]!)).toBe(true);
    }
  });

  it("does not spool a damaged segment; get-wal reports it and writes nothing", async () => {
    const s = setup({ window: 3, idle: 60 });
    await store(s.dir, name(1, 1), segment());
    const bad = damaged(await encodeStoredSegment(segment()));
    writeFileSync(path.join(s.dir, name(1, 2) + ".kwal"), bad);
    await store(s.dir, name(1, 3), segment());
    expect(s.get(name(1, 1)).code).toBe(0);
    await waitFor("the prefetcher to report the damage", () => prefetchLog(s.spoolRoot).some((e) => e.event === "prefetch.damaged"));
    expect(existsSync(s.spooled(name(1, 2)))).toBe(false);
    rmSync(s.target);
    const r = s.get(name(1, 2));
    expect(r.code).toBe(200); // fatal for PostgreSQL: recovery stops instead of promoting
    expect(r.stderr).toMatch(/WAL segment 000000010000000000000002 of cluster db1 is damaged/);
    expect(existsSync(s.target)).toBe(false);
  });

  it("the mv fast path of restoreCommandWithSpool serves spooled segments and falls back to get-wal", async () => {
    const s = setup({ window: 2, idle: 60 });
    const segs: Buffer[] = [];
    for (let i = 1; i <= 4; i++) await store(s.dir, name(1, i), (segs[i] = segment()));
    const getWal = `${shellQuote([...klioCommand(), "get-wal"])} %f %p ${shellQuote(["--repo", s.repo, "--spool", s.spoolRoot, "--prefetch", "2"])}`;
    const command = restoreCommandWithSpool(getWal, s.spoolDir);
    // As PostgreSQL runs it: sh -c, in the data directory, %f and %p substituted.
    const restore = (wal: string) => spawnSync("sh", ["-c", command.replaceAll("%f", wal).replaceAll("%p", "RECOVERYXLOG")], { cwd: s.out, encoding: "utf8" });
    expect(restore(name(1, 1)).status).toBe(0);
    expect(readFileSync(s.target).equals(segs[1]!)).toBe(true);
    const ino = await waitFor("segment 2 spooled", () => statSync(s.spooled(name(1, 2)), { throwIfNoEntry: false })?.ino);
    expect(restore(name(1, 2)).status).toBe(0);
    expect(statSync(s.target).ino).toBe(ino);
    expect(readFileSync(s.target).equals(segs[2]!)).toBe(true);
    const missing = restore(name(1, 7));
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/000000010000000000000007 is not in the archive/);

    // With the local archive test, a file the archive lacks never starts klio; one it has does.
    const withPartial = `${shellQuote([...klioCommand(), "get-wal"])} %f %p ${shellQuote(["--repo", s.repo, "--spool", s.spoolRoot, "--prefetch", "2", "--partial"])}`;
    const local = restoreCommandWithSpool(withPartial, s.spoolDir, { archiveDir: s.dir, partial: true });
    const restoreLocal = (wal: string) => spawnSync("sh", ["-c", local.replaceAll("%f", wal).replaceAll("%p", "RECOVERYXLOG")], { cwd: s.out, encoding: "utf8" });
    const absent = restoreLocal(name(1, 7));
    expect(absent.status).toBe(1);
    expect(absent.stderr).toBe("");
    expect(restoreLocal("00000002.history").status).toBe(1);
    rmSync(s.spooled(name(1, 3)), { force: true });
    await store(s.dir, name(1, 5), segs[1]!, "partial");
    for (const [wal, bytes] of [[name(1, 3), segs[3]!], [name(1, 5), segs[1]!]] as const) {
      const r = restoreLocal(wal);
      expect(r.status, r.stderr).toBe(0);
      expect(readFileSync(s.target).equals(bytes)).toBe(true);
    }
  });

  it("refuses bad prefetch flags and changes nothing", () => {
    const { repo } = archive();
    const out = tempDir("klio-prefetch-flags-");
    const target = path.join(out, "RECOVERYXLOG");
    const spool = path.join(out, "spool");
    const bad = [
      ["--spool", spool, "--prefetch", "-1"],
      ["--spool", spool, "--prefetch", "2.5"],
      ["--spool", spool, "--prefetch-idle", "0"],
      ["--prefetcher"],
    ];
    for (const flags of bad) {
      const r = runKlio(["get-wal", name(1, 1), target, "--repo", repo, ...flags]);
      expect(r.code, flags.join(" ")).toBe(2);
      expect(r.stderr).toMatch(/^klio: get-wal: /);
    }
    expect(runKlio(["get-wal", name(1, 1), "--repo", repo, "--prefetcher"]).code).toBe(2);
    expect(existsSync(spool)).toBe(false);
    expect(existsSync(target)).toBe(false);
  });
});

describe("get-wal --spool in the single executable", () => {
  it("starts the prefetcher and serves from the spool (no import() of a node: builtin at run time)", async () => {
    const exe = singleExecutable();
    const s = setup({ window: 2, idle: 60 });
    const segs: Buffer[] = [];
    for (let i = 1; i <= 3; i++) await store(s.dir, name(1, i), (segs[i] = segment()));
    const get = (wal: string) => spawnSync(exe, ["get-wal", wal, s.target, "--repo", s.repo, "--spool", s.spoolRoot, "--prefetch", "2"], { encoding: "utf8" });
    const first = get(name(1, 1));
    expect(first.status, first.stderr).toBe(0);
    expect(first.stderr).toBe("");
    const ino = await waitFor("segment 2 spooled by the executable's prefetcher", () => statSync(s.spooled(name(1, 2)), { throwIfNoEntry: false })?.ino);
    expect(get(name(1, 2)).status).toBe(0);
    expect(statSync(s.target).ino).toBe(ino);
    expect(readFileSync(s.target).equals(segs[2]!)).toBe(true);
  });
});

/** dist/klio, rebuilt when stale, as single-executable.test.ts does; KLIO_EXE names another build. */
function singleExecutable(): string {
  if (process.env.KLIO_EXE) return process.env.KLIO_EXE;
  execFileSync(process.execPath, [path.join(ROOT, "scripts", "build.mjs"), "--if-stale"], { cwd: ROOT, stdio: "pipe", timeout: 300_000 });
  return path.join(ROOT, "dist", "klio");
}

/** How PostgreSQL (another user, another directory) runs klio from these sources. */
function klioCommand(): string[] {
  return [process.execPath, "--import", createRequire(path.join(ROOT, "package.json")).resolve("tsx"), path.join(ROOT, "src", "cli", "main.ts")];
}

/**
 * A base backup with the low-level API (every version; the PostgreSQL 18 package ships no
 * pg_basebackup): pg_backup_start, a copy of the running data directory without its WAL,
 * pg_backup_stop's backup_label. The WAL comes from the archive.
 */
async function baseBackup(pg: PgServer, dest: string): Promise<void> {
  const sql = pg.sql();
  const conn = await sql.reserve();
  try {
    await conn`select pg_backup_start('klio-prefetch-test', true)`;
    copyLive(pg.dataDir, dest, "");
    const [{ labelfile }] = await conn`select labelfile from pg_backup_stop(false)`;
    writeFileSync(path.join(dest, "backup_label"), labelfile);
  } finally {
    conn.release();
  }
}

/** Copies a running data directory: files may vanish while we copy; WAL and pids stay behind. */
function copyLive(src: string, dest: string, rel: string): void {
  mkdirSync(dest, { recursive: true, mode: 0o700 });
  for (const e of readdirSync(src)) {
    const r = path.join(rel, e);
    if (["postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map"].includes(r)) continue;
    const from = path.join(src, e);
    const to = path.join(dest, e);
    let st;
    try {
      st = lstatSync(from);
    } catch {
      continue;
    }
    if (st.isDirectory()) {
      if (["pg_wal", "pg_replslot", "pg_stat_tmp", "pg_notify", "pg_snapshots", "pg_subtrans", "pg_dynshmem"].includes(r)) mkdirSync(to, { mode: 0o700 });
      else copyLive(from, to, r);
    } else if (st.isSymbolicLink()) symlinkSync(readlinkSync(from), to);
    else {
      try {
        copyFileSync(from, to);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      }
    }
  }
  if (rel === "") mkdirSync(path.join(dest, "pg_wal", "archive_status"), { recursive: true });
}

describe.each(PG_VERSIONS)("recovery with the spool on PostgreSQL %i", (version) => {
  it("replays to the end of the archived WAL, the .partial segment included, through the spool", async () => {
    const pg = await startPostgres({ version, walSegmentMb: 1 });
    cleanups.push(() => pg.destroy());
    const sql = pg.sql();
    const repo = tempDir("klio-prefetch-pg-repo-");
    const receiver = startKlio(["wal", "stream", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--create-slot", "--log-format", "text"]);
    cleanups.push(async () => void (await receiver.kill9()));
    await receiver.waitForLog(/wal\.streaming/);

    await sql`create table t (id int, pad text)`;
    await sql`insert into t select g, repeat('x', 200) from generate_series(1, 1000) g`;
    const backup = path.join(pgTempDir(`klio-prefetch-base-${version}-`), "data");
    cleanups.push(() => rmSync(path.dirname(backup), { recursive: true, force: true }));
    await baseBackup(pg, backup);
    // About a dozen 1 MB segments after the backup, then rows that only the .partial segment holds.
    for (let i = 0; i < 12; i++) {
      await sql`insert into t select g, repeat(md5(g::text), 8) from generate_series(1, 1500) g`;
      await sql`select pg_switch_wal()`;
    }
    await sql`insert into t select g, 'tail' from generate_series(1, 77) g`;
    const [{ n }] = await sql`select count(*)::int as n from t`;
    const end = await currentLsn(sql);
    await waitFor("the archive to hold every row", async () => (await archiveContentEnd(pg, repo, "db1")) >= end);

    // Byte for byte: what get-wal --spool hands out is the server's own copy.
    const scratch = tempDir("klio-prefetch-compare-");
    const scratchSpool = path.join(scratch, "spool");
    reapPrefetchers(openSpool(scratchSpool, path.join(repo, "wal", "db1"), await systemId(sql)).dir);
    const names = readdirSync(path.join(repo, "wal", "db1")).filter((f) => /^[0-9A-F]{24}(\.kwal)?$/.test(f)).map((f) => f.slice(0, 24)).sort().slice(-8);
    let compared = 0;
    for (const wal of names) {
      const theirs = serverSegment(pg, wal);
      const r = runKlio(["get-wal", wal, path.join(scratch, "X"), "--repo", repo, "--spool", scratchSpool]);
      expect(r.code, r.stderr).toBe(0);
      if (theirs) {
        expect(readFileSync(path.join(scratch, "X")).equals(theirs), wal).toBe(true);
        compared++;
      }
    }
    expect(compared).toBeGreaterThanOrEqual(6);

    // Two restores of the same backup: plain get-wal --spool, and the mv fast path.
    shareRepo(repo);
    const exe = singleExecutable();
    for (const fastPath of [false, true]) {
      const base = pgTempDir(`klio-prefetch-restore-${version}-`);
      cleanups.push(() => rmSync(base, { recursive: true, force: true }));
      const data = path.join(base, "data");
      cpSync(backup, data, { recursive: true });
      const spoolRoot = path.join(data, "pg_wal", "klio-spool");
      const spoolDir = openSpool(spoolRoot, path.join(repo, "wal", "db1"), await systemId(sql)).dir;
      reapPrefetchers(spoolDir);
      // The executable, as a DBA's restore_command runs it: recovery starts klio once per file it
      // asks for, and from the sources (Node and tsx) each start takes seconds on a loaded
      // machine (this test timed out twice in 3 runs of the suite beside two busy loops).
      const getWal = `${shellQuote([exe, "get-wal"])} %f %p ${shellQuote(["--repo", repo, "--cluster", "db1", "--partial", "--spool", spoolRoot, "--prefetch", "4", "--prefetch-idle", "5"])}`;
      const command = fastPath ? restoreCommandWithSpool(getWal, spoolDir, { archiveDir: path.join(repo, "wal", "db1"), partial: true }) : getWal;
      writeFileSync(path.join(data, "postgresql.auto.conf"), `restore_command = '${command.replace(/'/g, "''")}'\n`, { flag: "a" });
      writeFileSync(path.join(data, "recovery.signal"), "");
      const restored = await startDataDir(version, data);
      cleanups.push(() => restored.destroy());
      const rsql = restored.sql();
      await waitFor("recovery to end and promote", async () => (await rsql`select pg_is_in_recovery() as r`)[0]!.r === false, 120_000);
      const [{ n: got }] = await rsql`select count(*)::int as n from t`;
      expect(got, fastPath ? "mv fast path" : "get-wal --spool").toBe(n);
      expect(prefetchLog(spoolRoot).filter((e) => e.event === "prefetch.start").length).toBeGreaterThanOrEqual(1);
      // Recovery is over: the prefetcher leaves and takes its files with it.
      await waitFor("the prefetcher to leave", () => livePid(spoolDir) === undefined && !existsSync(spoolDir), 60_000);
      expect(restored.logText()).not.toMatch(/could not (take a segment from|update) the spool/);
      await restored.destroy();
    }
    // Dozens of klio start-ups on a 2-core machine shared with other tests.
  }, 400_000);
});

async function systemId(sql: ReturnType<PgServer["sql"]>): Promise<string> {
  const [{ id }] = await sql`select system_identifier::text as id from pg_control_system()`;
  return String(id);
}
