// Point-in-time restore on real PostgreSQL 15 and 18: a backup taken under pgbench load,
// restored for every kind of recovery target, comes up with exactly the rows committed before
// the target and none after — including, with no target, rows whose WAL the receiver still
// holds in its .partial segment.
import { describe, it, expect, afterEach } from "vitest";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, readdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { PG_VERSIONS, binDir, pgTempDir, startDataDir, startPostgres, type PgServer } from "./harness/postgres.ts";
import { runKlioAsync, startKlio, waitFor, type KlioProcess } from "./harness/klio.ts";
import { parseLsn, segmentNumber, walFileName } from "../src/pg/lsn.ts";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function klio(args: string[], bin = false): Promise<string> {
  const r = await runKlioAsync(args, { bin });
  if (r.code !== 0) throw new Error(`klio ${args.join(" ")} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

function stream(pg: PgServer, repo: string): KlioProcess {
  const k = startKlio(["wal", "stream", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--create-slot", "--log-format", "text"]);
  cleanups.push(async () => void (await k.kill9()));
  return k;
}

/** pgbench from Debian's PostgreSQL 15 (the PostgreSQL 18 package has none), against any server. */
function pgbench(pg: PgServer, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(binDir(15), "pgbench"), [...args, "-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "postgres"], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout!.on("data", (d) => (out += d));
    child.stderr!.on("data", (d) => (out += d));
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`pgbench ${args.join(" ")} exited ${code}: ${out}`))));
  });
}

/** PostgreSQL runs restore_command as its own user: let it read the repository. */
function shareRepo(repo: string): void {
  execFileSync("chmod", ["-R", "a+rX", repo]);
}

async function restoreAndQuery(version: 15 | 18, repo: string, flags: string[], tsDir: string): Promise<{ ids: number[]; tsRows: number; pg: PgServer }> {
  const base = pgTempDir(`klio-restore-${version}-`);
  cleanups.push(() => rmSync(base, { recursive: true, force: true }));
  const dest = path.join(base, "data");
  const tsTarget = path.join(base, "ts");
  await klio(["restore", dest, "--repo", repo, "--cluster", "db1", "--tablespaces", `ts1:${tsTarget}`, ...flags], true);
  shareRepo(repo);
  const pg = await startDataDir(version, dest);
  cleanups.push(() => pg.destroy());
  const sql = pg.sql();
  await waitFor("recovery to end and promote", async () => (await sql`select pg_is_in_recovery() as r`)[0]!.r === false, 120_000);
  const ids = (await sql`select id from marks order by id`).map((r) => Number(r.id));
  const tsRows = Number((await sql`select count(*) as n from in_ts`)[0]!.n);
  return { ids, tsRows, pg };
}

describe.each(PG_VERSIONS)("point-in-time restore on PostgreSQL %i", (version) => {
  it("restores a backup taken under load to each kind of target", { timeout: 600_000 }, async () => {
    const pg = await startPostgres({ version, conf: { wal_keep_size: "'512MB'" } });
    cleanups.push(() => pg.destroy());
    const sql = pg.sql();
    const tsDir = pgTempDir(`klio-ts-${version}-`);
    cleanups.push(() => rmSync(tsDir, { recursive: true, force: true }));
    await sql.unsafe(`create tablespace ts1 location '${tsDir}'`);
    await sql`create table in_ts (id int) tablespace ts1`;
    await sql`insert into in_ts select generate_series(1, 1000)`;
    await sql`create table marks (id int primary key, note text)`;

    const repo = tempDir("klio-repo-");
    await klio(["init", "--repo", repo]);
    const receiver = stream(pg, repo);
    await receiver.waitForLog(/wal.streaming/);
    await pgbench(pg, ["-i", "-s", "2", "-q"]);

    // The backup runs while pgbench writes.
    const load = pgbench(pg, ["-c", "2", "-T", "8", "-n"]);
    const backup = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"]));
    await load;
    expect(backup.id).toMatch(/^\d{8}T\d{6}Z$/);
    expect(backup.tablespaces).toEqual([expect.objectContaining({ name: "ts1", location: tsDir })]);
    const listed = JSON.parse(await klio(["backup", "list", "--repo", repo, "--json"]));
    expect(listed.backups.map((b: { id: string }) => b.id)).toEqual([backup.id]);
    expect((await runKlioAsync(["backup", "verify", backup.id, "--repo", repo])).code).toBe(0);

    // Rows around the targets: 1 before, 2 at, 3 after; 4 only in the newest (partial) WAL.
    await sql`insert into marks values (1, 'before')`;
    const [{ xid }] = await sql.begin(async (tx) => {
      await tx`insert into marks values (2, 'at the target')`;
      return tx`select txid_current()::text as xid`;
    });
    const [{ lsn }] = await sql`select pg_current_wal_lsn()::text as lsn`;
    const [{ t }] = await sql`select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || 'Z' as t`;
    await sql`select pg_create_restore_point('before-row-3')`;
    await new Promise((r) => setTimeout(r, 1100));
    await sql`insert into marks values (3, 'after')`;
    await sql`select pg_switch_wal()`;
    await sql`insert into marks values (4, 'newest')`;
    const [{ end }] = await sql`select pg_current_wal_lsn()::text as end`;
    await waitFor("the receiver to flush the newest row", async () => {
      const s = JSON.parse(await klio(["wal", "status", "--repo", repo, "--cluster", "db1", "--json"]));
      return parseLsn(s.flushedLsn) >= parseLsn(end);
    });
    // Row 4's WAL exists only as a partial segment: restoring it proves get-wal --partial.
    const lastSeg = walFileName(1, segmentNumber(parseLsn(end) - 1n, 16 * 1024 * 1024), 16 * 1024 * 1024);
    const walDir = path.join(repo, "wal", "db1");
    expect(readdirSync(walDir)).toContain(`${lastSeg}.partial`);
    expect(existsSync(path.join(walDir, lastSeg)) || existsSync(path.join(walDir, `${lastSeg}.kwal`))).toBe(false);

    const cases: [string, string[], number[]][] = [
      ["xid", ["--target-xid", String(xid)], [1, 2]],
      ["lsn", ["--target-lsn", String(lsn)], [1, 2]],
      ["time", ["--target-time", String(t)], [1, 2]],
      ["name", ["--target-name", "before-row-3"], [1, 2]],
      ["immediate", ["--target-immediate"], []],
      ["end of WAL", [], [1, 2, 3, 4]],
    ];
    for (const [what, flags, expected] of cases) {
      const r = await restoreAndQuery(version, repo, flags, tsDir);
      expect({ what, ids: r.ids, tsRows: r.tsRows }).toEqual({ what, ids: expected, tsRows: 1000 });
      await r.pg.destroy();
    }
  });
});
