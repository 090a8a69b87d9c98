// A restore checks its destination and its target before it writes anything, and a restore
// that fails midway removes what it wrote: on real PostgreSQL 15 and 18, every bad
// destination (/proc, /sys, /dev, a read-only file system, a directory this user may not
// write, a symbolic link, dangling or not, a file, a non-empty directory — for the data
// directory and for a tablespace) and every bad target (an xid PostgreSQL cannot stop at, a
// date that does not exist, a time or LSN past the archive's end) is one line on stderr,
// exit 2, and leaves the destination as it was. A newer backup whose snapshot cannot be read
// is passed over with a warning naming it; a missing pack or a truncated index file are named
// where they are the cause.
import { describe, it, expect, afterEach } from "vitest";
import { spawn } from "node:child_process";
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { PG_VERSIONS, pgTempDir, startPostgres, type PgServer } from "./harness/postgres.ts";
import { klioArgv, ROOT, runKlioAsync, type KlioRun } from "./harness/klio.ts";
import { klio, restoreAndStart, streamWal, tempDir, type Cleanup } from "./harness/backup.ts";
import { waitForFlush } from "./harness/wal.ts";
import { damageFile } from "./harness/damage.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The one line of a refused command: nothing else on stderr, no stack frame. */
function oneLine(r: KlioRun): string {
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^klio: /);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  return lines[0]!;
}

/** The error line of a restore that failed after it began (its JSON log lines aside). */
function errorLine(r: KlioRun): string {
  const lines = r.stderr.split("\n").filter((l) => l !== "" && !l.startsWith("{"));
  expect(lines, r.stderr).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  return lines[0]!;
}

/** klio as the unprivileged `postgres` user (root may write anywhere). */
function runKlioAsPostgres(args: string[]): Promise<KlioRun> {
  const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
  const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
  const child = spawn(process.execPath, klioArgv(args), { cwd: ROOT, uid, gid, env: { ...process.env, HOME: "/tmp" }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
}

/** What a directory holds now: names, recursively (symlinks not followed). */
function contents(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir, { recursive: true }).map(String).sort() : [];
}

async function primaryWithBackup(version: (typeof PG_VERSIONS)[number]) {
  const pg = await startPostgres({ version });
  cleanups.push(() => pg.destroy());
  const sql = pg.sql();
  const tsDir = pgTempDir(`klio-ts-${version}-`);
  cleanups.push(() => void execFileSync("rm", ["-rf", tsDir]));
  await sql.unsafe(`create tablespace ts1 location '${tsDir}'`);
  await sql`create table in_ts (id int) tablespace ts1`;
  await sql`insert into in_ts select generate_series(1, 1000)`;
  await sql`create table marks (id int primary key)`;
  await sql`create table filler as select g as id, md5(g::text) as t from generate_series(1, 50000) g`;
  const repo = tempDir(cleanups, "klio-repo-");
  await klio(["init", "--repo", repo]);
  const receiver = streamWal(cleanups, pg, repo);
  await receiver.waitForLog(/wal.streaming/);
  const backup = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"]));
  return { pg, sql, repo, receiver, backup: backup.id as string };
}

async function flushedUpTo(repo: string, pg: PgServer): Promise<void> {
  const [{ end }] = await pg.sql()`select pg_current_wal_lsn()::text as end`;
  await waitForFlush(repo, end);
}

describe.each(PG_VERSIONS)("restore validation on PostgreSQL %i", (version) => {
  it("refuses every bad destination and target with one line, exit 2, and writes nothing", { timeout: 600_000 }, async () => {
    const { pg, sql, repo, receiver } = await primaryWithBackup(version);
    const base = tempDir(cleanups, "klio-dest-");
    const restore = (dest: string, flags: string[] = []) => runKlioAsync(["restore", dest, "--repo", repo, "--cluster", "db1", ...flags], { timeoutMs: 60_000 });
    const refused = async (dest: string, flags: string[], why: RegExp) => {
      const r = await restore(dest, flags);
      expect({ dest, flags, code: r.code }).toEqual({ dest, flags, code: 2 });
      expect(oneLine(r)).toMatch(why);
      return r;
    };

    // Kernel pseudo file systems: /proc made klio spin at 100 % CPU; /dev (devtmpfs) would take a directory.
    for (const dest of ["/proc/klio-restore-test", "/sys/klio-restore-test", "/dev/klio-restore-test"]) {
      await refused(dest, [], /file system of the kernel, not storage/);
      expect(existsSync(dest)).toBe(false);
    }

    // A read-only file system (a read-only bind mount), and a directory this user may not write.
    const ro = path.join(base, "ro");
    mkdirSync(ro);
    execFileSync("mount", ["--bind", ro, ro]);
    cleanups.push(() => void execFileSync("umount", ["-l", ro]));
    execFileSync("mount", ["-o", "remount,ro,bind", ro]);
    await refused(path.join(ro, "data"), [], /read-only file system/);
    const locked = path.join(base, "locked");
    mkdirSync(locked, { mode: 0o555 });
    chmodSync(base, 0o755);
    const asPostgres = await runKlioAsPostgres(["restore", path.join(locked, "data"), "--repo", repo, "--cluster", "db1"]);
    expect(asPostgres.code).toBe(2);
    expect(oneLine(asPostgres)).toMatch(/cannot write the restore destination .*locked\/data \(in .*locked\): permission denied/);
    expect(contents(locked)).toEqual([]);

    // Symbolic links: a dangling one (restore would create through it), one to an empty directory, a dangling parent.
    const nowhere = path.join(base, "nowhere");
    const dangling = path.join(base, "dangling");
    symlinkSync(nowhere, dangling);
    await refused(dangling, [], /is a symbolic link \(to .*nowhere\): give the directory itself/);
    await refused(path.join(dangling, "data"), [], /dangling is a symbolic link to .*nowhere, which does not exist/);
    expect(existsSync(nowhere)).toBe(false);
    expect(lstatSync(dangling).isSymbolicLink()).toBe(true);
    const empty = path.join(base, "empty");
    mkdirSync(empty);
    symlinkSync(empty, path.join(base, "to-empty"));
    await refused(path.join(base, "to-empty"), [], /is a symbolic link/);
    expect(contents(empty)).toEqual([]);

    // A file, and a directory with something in it.
    writeFileSync(path.join(base, "a-file"), "x");
    await refused(path.join(base, "a-file"), [], /exists and is not a directory/);
    await refused(path.join(base, "a-file", "data"), [], /a-file is not a directory/);
    const full = path.join(base, "full");
    mkdirSync(full);
    writeFileSync(path.join(full, "keep.txt"), "mine");
    await refused(full, [], /is not empty/);
    expect(contents(full)).toEqual(["keep.txt"]);

    // The same checks for a tablespace's directory: the data directory is not even created.
    const newDest = path.join(base, "new", "data");
    await refused(newDest, ["--tablespaces", "ts1:/proc/klio-ts"], /directory of tablespace ts1 .* is on \/proc/);
    await refused(newDest, ["--tablespaces", `ts1:${dangling}`], /tablespace ts1 .* is a symbolic link/);
    await refused(newDest, ["--tablespaces", `ts1:${path.join(ro, "ts")}`], /tablespace ts1 .*read-only file system/);
    expect(existsSync(path.join(base, "new"))).toBe(false);

    // Targets PostgreSQL would refuse only when the restored server starts, or never reach.
    await refused(newDest, ["--target-xid", "99999999999999999999"], /--target-xid 99999999999999999999 is not a transaction id PostgreSQL can stop at/);
    await refused(newDest, ["--target-xid", "2"], /not a transaction id PostgreSQL can stop at/);
    await refused(newDest, ["--target-xid", "0x10"], /decimal digits/);
    await refused(newDest, ["--target-time", "2026-02-31 10:00:00+00"], /does not exist/);
    await refused(newDest, ["--target-lsn", "16/ZZ"], /must be an LSN/);
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString();
    await refused(newDest, ["--target-time", tomorrow], /is after the end of the WAL archive of db1 .*--allow-future-target/);
    await refused(newDest, ["--target-lsn", "FFFFFF/0"], /--target-lsn FFFFFF\/0 is after the end of the WAL archive of db1/);
    expect(existsSync(path.join(base, "new"))).toBe(false);

    // The 64-bit form of an xid (txid_current(), here with epoch 1) is what PostgreSQL accepts: recovery stops there.
    await sql`insert into marks values (1)`;
    const [{ xid }] = await sql.begin(async (tx) => {
      await tx`insert into marks values (2)`;
      return tx`select txid_current()::text as xid`;
    });
    await sql`insert into marks values (3)`;
    await sql`select pg_switch_wal()`;
    await flushedUpTo(repo, pg);
    const restored = await restoreAndStart(cleanups, version, repo, ["--tablespaces", "ts1:{base}/ts", "--target-xid", String((1n << 32n) + BigInt(xid))]);
    expect((await restored.sql()`select id from marks order by id`).map((r) => Number(r.id))).toEqual([1, 2]);
    await restored.destroy();

    // --allow-future-target writes such a target all the same (and --json says the target).
    const future = await restore(path.join(base, "future"), ["--target-lsn", "FFFFFF/0", "--allow-future-target", "--json", "--tablespaces", `ts1:${path.join(base, "future-ts")}`]);
    expect(future.code, future.stderr).toBe(0);
    expect(JSON.parse(future.stdout).target).toEqual({ kind: "lsn", lsn: "FFFFFF/0" });
    expect(readFileSync(path.join(base, "future", "postgresql.auto.conf"), "utf8")).toMatch(/recovery_target_lsn = 'FFFFFF\/0'/);

    // Once the receiver has stopped, the archive ends there: a time after it is refused even though it is past.
    expect(await receiver.stop()).toBe(0);
    await new Promise((r) => setTimeout(r, 1500));
    await refused(newDest, ["--target-time", new Date().toISOString()], /is after the end of the WAL archive of db1 \(last written at .*, per the (receiver's flushed position|newest WAL file)/);
    expect(existsSync(path.join(base, "new"))).toBe(false);
  });

  it("removes what a failed restore wrote; names a damaged index; warns of an unreadable newer backup", { timeout: 600_000 }, async () => {
    const { pg, repo, receiver, backup } = await primaryWithBackup(version);
    await new Promise((r) => setTimeout(r, 1100));
    const newer = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"])).id as string;
    // Copies of a repository no one writes to any more.
    expect(await receiver.stop()).toBe(0);
    const base = tempDir(cleanups, "klio-dest-");
    const copy = (name: string) => {
      const dir = path.join(tempDir(cleanups, "klio-copy-"), name);
      cpSync(repo, dir, { recursive: true });
      return dir;
    };

    const biggestPack = (dir: string) => readdirSync(path.join(dir, "packs"), { recursive: true }).map((p) => path.join(dir, "packs", String(p)))
      .filter((p) => statSync(p).isFile()).sort((a, b) => statSync(b).size - statSync(a).size)[0]!;

    // A pack damaged in its middle: the restore fails midway, among the files it is writing; then nothing of it is left.
    const damagedPack = copy("damaged-pack");
    damageFile(biggestPack(damagedPack));
    const created = path.join(base, "created", "deeper", "data");
    const tsNew = path.join(base, "ts-new", "ts");
    const failed = await runKlioAsync(["restore", created, "--repo", damagedPack, "--cluster", "db1", "--tablespaces", `ts1:${tsNew}`]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/"restore.start"/);
    expect(errorLine(failed)).toMatch(/^klio: .*packs\//);
    expect(existsSync(path.join(base, "created"))).toBe(false);
    expect(existsSync(path.join(base, "ts-new"))).toBe(false);
    // An existing empty directory is emptied again, its mode put back.
    const existing = path.join(base, "existing");
    mkdirSync(existing, { mode: 0o750 });
    chmodSync(existing, 0o750);
    const again = await runKlioAsync(["restore", existing, "--repo", damagedPack, "--cluster", "db1", "--tablespaces", `ts1:${path.join(base, "ts-again")}`]);
    expect(again.code).toBe(1);
    expect(contents(existing)).toEqual([]);
    expect(statSync(existing).mode & 0o7777).toBe(0o750);
    expect(existsSync(path.join(base, "ts-again"))).toBe(false);

    // A pack removed: the same, and repo check says it in one line.
    const noPack = copy("no-pack");
    const biggest = biggestPack(noPack);
    unlinkSync(biggest);
    const gone = await runKlioAsync(["restore", created, "--repo", noPack, "--cluster", "db1", "--tablespaces", `ts1:${tsNew}`]);
    expect(gone.code).toBe(1);
    expect(errorLine(gone)).toMatch(/^klio: /);
    expect(existsSync(path.join(base, "created"))).toBe(false);

    // repo check: one line for the missing pack, with how many chunks and which backup.
    const check = await runKlioAsync(["repo", "check", "--repo", noPack]);
    expect(check.code).toBe(1);
    const missing = check.stdout.split("\n").filter((l) => l.startsWith("PROBLEM missing-pack"));
    expect(missing).toHaveLength(1);
    expect(missing[0]).toMatch(new RegExp(`in pack packs/\\w+/${path.basename(biggest)}: .* names pack .*, which does not exist: \\d+ chunks lost; used by 2 backups: ${backup} of db1 \\(\\d+ files?\\) and ${newer} of db1 \\(\\d+ files?\\)`));
    expect(check.stdout.split("\n").filter((l) => l !== "").length).toBeLessThanOrEqual(3);

    // A truncated index file: the restore names it, and repo check tells its packs from leftovers.
    const cut = copy("cut-index");
    const indexes = readdirSync(path.join(cut, "index")).map((f) => path.join(cut, "index", f));
    const largest = indexes.sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
    truncateSync(largest, Math.floor(statSync(largest).size / 2));
    const cutRestore = await runKlioAsync(["restore", path.join(base, "cut", "data"), "--repo", cut, "--cluster", "db1", "--tablespaces", `ts1:${path.join(base, "cut-ts")}`]);
    expect(cutRestore.code).toBe(1);
    expect(errorLine(cutRestore)).toMatch(new RegExp(`is not in the repository .*; a damaged index file may be what names it: index file index/${path.basename(largest)} is damaged: .* \\(truncated\\)`));
    expect(existsSync(path.join(base, "cut"))).toBe(false);
    const cutCheck = await runKlioAsync(["repo", "check", "--repo", cut]);
    expect(cutCheck.code).toBe(1);
    expect(cutCheck.stdout).toMatch(new RegExp(`PROBLEM bad-index: index file index/${path.basename(largest)} is damaged`));
    expect(cutCheck.stdout).toMatch(new RegExp(`PROBLEM pack-of-damaged-index in pack packs/.* is named only by the damaged index file index/${path.basename(largest)}`));
    expect(cutCheck.stdout).not.toMatch(/interrupted writer/);

    // A newer backup whose snapshot cannot be read: passed over, with one warning naming it.
    const unreadable = copy("unreadable-newest");
    writeFileSync(path.join(unreadable, "snapshots", "db1", newer), "not a snapshot");
    const skipped = await runKlioAsync(["restore", path.join(base, "older"), "--repo", unreadable, "--cluster", "db1", "--json", "--tablespaces", `ts1:${path.join(base, "older-ts")}`]);
    expect(skipped.code, skipped.stderr).toBe(0);
    const warnings = skipped.stderr.split("\n").filter((l) => l.startsWith("klio:"));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(new RegExp(`^klio: warning: backup ${newer} of db1 is newer than backup ${backup} but its snapshot cannot be read \\(.+\\): restoring ${backup} instead`));
    expect(JSON.parse(skipped.stdout)).toMatchObject({ backup, skipped: [{ id: newer }] });
  });
});
