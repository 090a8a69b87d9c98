// Incremental backups on a real PostgreSQL 18 (summarize_wal = on), through the CLI as a DBA
// runs it, under pgbench load: full → changes → incremental → changes → incremental, each
// restored alone to its end and to a time between backups with exactly the primary's rows at
// that time; a relation truncated, one extended, a table dropped, one created and a
// tablespace created between backups come back right; the last incremental still restores
// and verifies after its ancestors are deleted and maintenance ran; and the files a full and
// an incremental taken back to back restore are the same bytes.
import { describe, it, expect, afterEach } from "vitest";
import { readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { klio, pgbench, restoreAndStart, streamingServer, tempDir, type Cleanup } from "./harness/backup.ts";
import { pgTempDir, type PgServer } from "./harness/postgres.ts";
import { runKlioAsync } from "./harness/klio.ts";
import { startTcpProxy } from "./harness/tcp-proxy.ts";
import { Transform } from "node:stream";
import { Buffer } from "node:buffer";
import { waitForFlush } from "./harness/wal.ts";
import { isPagedFile, isVisibilityMapFile } from "../src/backup/file-kind.ts";
import { parseBackupManifest } from "../src/backup/backup-manifest.ts";
import { crc32c, crc32cManifestHex } from "../src/backup/crc32c.ts";
import { parseSnapshot, snapshotKey } from "../src/backup/snapshot.ts";
import { openRepository } from "../src/repo/repository.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface BackupJson {
  id: string;
  kind: string;
  parent: string | null;
  stats: { bytes: number; sentBytes: number };
}

/** `klio backup run` with pgbench writing beside it; the backup's JSON and its log lines. */
async function backupUnderLoad(pg: PgServer, repo: string, flags: string[] = []): Promise<{ backup: BackupJson; log: string }> {
  const load = pgbench(pg, ["-c", "2", "-T", "6", "-n"]);
  const r = await runKlioAsync(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json", ...flags]);
  await load;
  if (r.code !== 0) throw new Error(`backup run exited ${r.code}: ${r.stderr}`);
  return { backup: JSON.parse(r.stdout) as BackupJson, log: r.stderr };
}

/** What the test compares between the primary at a moment and a restored cluster. */
async function fingerprint(pg: PgServer): Promise<Record<string, unknown>> {
  const sql = pg.sql();
  const [row] = await sql`select
      (select count(*)::int from marks) as marks,
      (select coalesce(sum(abalance), 0)::bigint::text from pgbench_accounts) as balance,
      (select count(*)::int from pgbench_history) as history,
      (select coalesce(sum(delta), 0)::bigint::text from pgbench_history) as deltas,
      (select count(*)::int from shrinking) as shrinking,
      pg_relation_size('shrinking')::int as shrinking_bytes,
      (select count(*)::int from growing) as growing,
      pg_relation_size('growing')::int as growing_bytes,
      to_regclass('dropme') is not null as dropme,
      to_regclass('newtab') is not null as newtab,
      to_regclass('in_spc') is not null as in_spc`;
  const out: Record<string, unknown> = { ...row };
  if (row!.newtab) out.newtabRows = (await sql`select count(*)::int as n, sum(v)::int as s from newtab`)[0];
  if (row!.in_spc) out.inSpcRows = (await sql`select count(*)::int as n, md5(string_agg(t, ',' order by id)) as h from in_spc`)[0];
  return out;
}

/** A moment to restore to: the primary quiet, its fingerprint, then a time after it. */
async function mark(pg: PgServer, note: string): Promise<{ time: string; expected: Record<string, unknown> }> {
  const sql = pg.sql();
  await sql`insert into marks (note) values (${note})`;
  const expected = await fingerprint(pg);
  const [{ t }] = await sql`select clock_timestamp()::text as t`;
  await new Promise((r) => setTimeout(r, 1100));
  await sql`insert into marks (note) values (${`after ${note}`})`;
  return { time: t as string, expected };
}

/** Changes 1% of the accounts as pgbench would book them (history and teller too), keeping its invariant. */
async function bookedUpdate(pg: PgServer, mod: number, delta: number): Promise<void> {
  await pg.sql()`with u as (update pgbench_accounts set abalance = abalance + ${delta} where aid % 100 = ${mod} returning aid, bid),
      h as (insert into pgbench_history (tid, bid, aid, delta, mtime) select 1, bid, aid, ${delta}, now() from u returning delta)
    update pgbench_tellers set tbalance = tbalance + (select sum(delta) from h) where tid = 1`;
}

/** pgbench's invariant holds in a cluster restored to any consistent point: every transfer was booked once. */
async function pgbenchConsistent(pg: PgServer): Promise<void> {
  const [r] = await pg.sql()`select (select sum(abalance) from pgbench_accounts)::bigint::text as a, (select sum(tbalance) from pgbench_tellers)::bigint::text as t,
      (select coalesce(sum(delta), 0) from pgbench_history)::bigint::text as h`;
  expect(r!.a).toBe(r!.h);
  expect(r!.t).toBe(r!.h);
}

async function restoreTo(repo: string, id: string, target: string[], spc: boolean): Promise<PgServer> {
  return restoreAndStart(cleanups, 18, repo, ["--backup-id", id, ...target, ...(spc ? ["--tablespaces", "spc:{base}/spc"] : [])]);
}

describe("incremental backups on PostgreSQL 18", () => {
  it("store each incremental as a backup that restores alone, exactly, also after its ancestors are gone", async () => {
    const { pg, repo } = await streamingServer(cleanups, [], 18);
    pg.appendConf({ summarize_wal: "on", autovacuum: "off" });
    await pg.reload();
    const sql = pg.sql();
    await pgbench(pg, ["-i", "-s", "4", "-q"]);
    await sql`create table marks (id serial primary key, at timestamptz default clock_timestamp(), note text)`;
    await sql`create table shrinking (id int, pad text)`;
    await sql`insert into shrinking select g, repeat('s', 200) from generate_series(1, 20000) g`;
    await sql`create table growing (id int, pad text)`;
    await sql`insert into growing select g, repeat('g', 200) from generate_series(1, 2000) g`;
    await sql`create table dropme as select g from generate_series(1, 5000) g`;

    // The first backup is a full one, and says why.
    const full = await backupUnderLoad(pg, repo);
    expect(full.backup.kind).toBe("full");
    expect(full.log).toMatch(/"event":"backup.full".*"reason":"no earlier backup of this system"/);
    const p1 = await mark(pg, "p1");

    // Changes: 1% of the accounts, a relation truncated (its file cut), one extended, one
    // dropped, one created; a tablespace with a table in it.
    await bookedUpdate(pg, 7, 1);
    await sql`delete from shrinking where id > 2000`;
    await sql`vacuum shrinking`;
    await sql`insert into growing select g, repeat('G', 200) from generate_series(2001, 30000) g`;
    await sql`drop table dropme`;
    await sql`create table newtab as select g as v from generate_series(1, 3000) g`;
    const spcDir = pgTempDir("klio-spc-");
    cleanups.push(() => rmSync(spcDir, { recursive: true, force: true }));
    await sql.unsafe(`create tablespace spc location '${spcDir}'`);
    await sql`create table in_spc (id int, t text) tablespace spc`;
    await sql`insert into in_spc select g, md5(g::text) from generate_series(1, 4000) g`;

    const inc1 = await backupUnderLoad(pg, repo);
    expect(inc1.backup).toMatchObject({ kind: "incremental", parent: full.backup.id });
    expect(inc1.log).toMatch(/"event":"backup.incremental"/);
    // Only changed blocks moved (here many: the update and the load touch most accounts pages).
    expect(inc1.backup.stats.sentBytes).toBeLessThan(inc1.backup.stats.bytes);
    const p2 = await mark(pg, "p2");

    await bookedUpdate(pg, 42, -3);
    await sql`update in_spc set t = upper(t) where id % 10 = 0`;
    await sql`insert into newtab select g from generate_series(3001, 3500) g`;
    const inc2 = await backupUnderLoad(pg, repo);
    expect(inc2.backup).toMatchObject({ kind: "incremental", parent: inc1.backup.id });
    const p3 = await mark(pg, "p3");
    const [{ end }] = await sql`select pg_current_wal_lsn()::text as end`;
    await waitForFlush(repo, end, "db1", 180_000);

    // Each backup alone: to its end (consistent under load), and to a time before the next.
    for (const [b, spc] of [[full, false], [inc1, true], [inc2, true]] as const) {
      const r = await restoreTo(repo, b.backup.id, ["--target-immediate"], spc);
      await pgbenchConsistent(r);
      await r.destroy();
    }
    for (const [b, p, spc] of [[full, p1, false], [inc1, p2, true], [inc2, p3, true]] as const) {
      const r = await restoreTo(repo, b.backup.id, ["--target-time", p.time], spc);
      expect({ backup: b.backup.kind, at: p.time, ...(await fingerprint(r)) }).toEqual({ backup: b.backup.kind, at: p.time, ...p.expected });
      await r.destroy();
    }

    // The full and the first incremental deleted, maintenance run: the last still restores and verifies.
    await klio(["backup", "delete", full.backup.id, "--repo", repo, "--cluster", "db1"]);
    await klio(["backup", "delete", inc1.backup.id, "--repo", repo, "--cluster", "db1"]);
    const maint = JSON.parse(await klio(["repo", "maintenance", "--repo", repo, "--json"]));
    expect(maint.bytes.freed).toBeGreaterThan(0);
    const verified = JSON.parse(await klio(["backup", "verify", inc2.backup.id, "--repo", repo, "--cluster", "db1", "--json"]));
    expect(verified).toMatchObject({ ok: true, problems: [] });
    const r = await restoreTo(repo, inc2.backup.id, ["--target-time", p3.time], true);
    expect(await fingerprint(r)).toEqual(p3.expected);
    await r.destroy();
  }, 900_000);

  it("restores a full and an incremental taken back to back with writes paused to the same relation files", async () => {
    const { pg, repo } = await streamingServer(cleanups, [], 18);
    pg.appendConf({ summarize_wal: "on", autovacuum: "off" });
    await pg.reload();
    const sql = pg.sql();
    await pgbench(pg, ["-i", "-s", "2", "-q"]);
    await backupUnderLoad(pg, repo);
    await pgbench(pg, ["-c", "2", "-t", "500", "-n"]);
    await sql`vacuum freeze`;
    await sql`checkpoint`;
    const full = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--full", "--json"])) as BackupJson;
    const inc = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--incremental", "--json"])) as BackupJson;
    expect([full.kind, inc.kind, inc.parent]).toEqual(["full", "incremental", full.id]);
    const base = tempDir(cleanups, "klio-incr-bytes-");
    for (const b of [full, inc]) await klio(["restore", path.join(base, b.kind), "--repo", repo, "--cluster", "db1", "--backup-id", b.id]);
    const files = relationFiles(path.join(base, "full"));
    expect(files.length).toBeGreaterThan(100);
    expect(relationFiles(path.join(base, "incremental"))).toEqual(files);
    let compared = 0;
    for (const f of files) {
      const a = readFileSync(path.join(base, "full", f));
      const b = readFileSync(path.join(base, "incremental", f));
      if (isVisibilityMapFile(f)) {
        // A map page the server did not send is zeros (see the test above): never a bit the full lacks.
        expect(b.length, f).toBe(a.length);
        for (let at = 0; at < b.length; at += 8192) {
          const page = b.subarray(at, at + 8192);
          expect(page.equals(a.subarray(at, at + 8192)) || page.every((x) => x === 0), `${f} page ${at / 8192}`).toBe(true);
        }
        continue;
      }
      expect(b.equals(a), f).toBe(true);
      compared += a.length;
    }
    expect(compared).toBeGreaterThan(20 * 1024 * 1024);
    // The incremental's manifest describes the whole files, and its label is a full backup's.
    expect(readFileSync(path.join(base, "incremental", "backup_label"), "utf8")).not.toMatch(/INCREMENTAL/);
    expect(readFileSync(path.join(base, "incremental", "backup_manifest"), "utf8")).not.toMatch(/INCREMENTAL\./);
    // Every file's size and CRC-32C in it are those of the restored file (a carried checksum, or one computed as written).
    const manifest = parseBackupManifest(readFileSync(path.join(base, "incremental", "backup_manifest")));
    expect(manifest.checksumProblem).toBeNull();
    expect(manifest.files.size).toBeGreaterThan(500);
    for (const [name, f] of manifest.files) {
      // As pg_verifybackup, which ignores it: restore appends the recovery settings to it.
      if (name === "postgresql.auto.conf") continue;
      const bytes = readFileSync(path.join(base, "incremental", name));
      expect({ name, size: bytes.length, crc: crc32cManifestHex(crc32c(bytes)) }).toEqual({ name, size: f.size, crc: f.checksum });
    }
  }, 600_000);
});

describe("visibility maps in incremental backups", () => {
  // PostgreSQL (17, 18) does not register the visibility map page when a heap change clears
  // its bits, so WAL summaries miss it and an incremental backup does not send it: the
  // parent's page, with "all-visible" set for pages changed since, would come back (as with
  // pg_combinebackup). Index-only scans would then return rows an update or delete removed.
  it("a restored incremental backup has no page marked all-visible that is not", async () => {
    const { pg, repo } = await streamingServer(cleanups, [], 18);
    pg.appendConf({ summarize_wal: "on", autovacuum: "off" });
    await pg.reload();
    const sql = pg.sql();
    await sql`create table v (id int primary key, n int)`;
    await sql`insert into v select g, 0 from generate_series(1, 100000) g`;
    await sql`vacuum (freeze) v`;
    await sql`checkpoint`;
    const full = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"])) as BackupJson;
    await sql`update v set n = 1 where id % 97 = 0`;
    await sql`delete from v where id % 101 = 0`;
    const inc = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"])) as BackupJson;
    expect([full.kind, inc.kind], JSON.stringify(inc)).toEqual(["full", "incremental"]);
    const r = await restoreTo(repo, inc.id, ["--target-immediate"], false);
    const rsql = r.sql();
    await rsql`create extension pg_visibility`;
    const wrong = async (check: string) => (await rsql.unsafe(`select t_ctid::text as tid from ${check}('v') limit 5`)).map((x) => x.tid as string);
    expect(await wrong("pg_check_visible"), "tuples on pages marked all-visible that are not").toEqual([]);
    expect(await wrong("pg_check_frozen"), "tuples on pages marked all-frozen that are not").toEqual([]);
    await rsql`set enable_seqscan = off`;
    await rsql`set enable_bitmapscan = off`;
    expect((await rsql`select count(*)::int as n from v where id > 0`)[0]!.n).toBe(100000 - Math.floor(100000 / 101));
    await r.destroy();
  }, 300_000);
});

describe("when an incremental backup cannot be taken", () => {
  /** `klio backup run` and what it printed; the backup's kind and the log's reason for a full. */
  async function backupRun(pg: PgServer, repo: string, flags: string[] = []) {
    const r = await runKlioAsync(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json", ...flags]);
    const full = /"event":"backup.full".*"reason":"([^"]*)"/.exec(r.stderr);
    const backup = r.code === 0 ? (JSON.parse(r.stdout) as BackupJson) : null;
    return { code: r.code, stderr: r.stderr, id: backup?.id ?? null, kind: backup?.kind ?? null, reason: full?.[1] ?? null };
  }
  const snapshotsOf = (repo: string) => readdirSync(path.join(repo, "snapshots", "db1")).length;

  it("PostgreSQL 15 takes full backups, says why, and --incremental fails naming the reason", async () => {
    const { pg, repo } = await streamingServer(cleanups, [], 15);
    for (let i = 0; i < 2; i++) expect(await backupRun(pg, repo)).toMatchObject({ code: 0, kind: "full", reason: expect.stringMatching(/^PostgreSQL 15 has no incremental backups/) });
    const refused = await backupRun(pg, repo, ["--incremental"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^klio: an incremental backup cannot be taken: PostgreSQL 15 has no incremental backups/m);
    expect(snapshotsOf(repo)).toBe(2);
  }, 300_000);

  it("PostgreSQL 18 takes a full when summarize_wal is off, and when its summaries do not reach back to the parent", async () => {
    const { pg, repo } = await streamingServer(cleanups, [], 18);
    expect(await backupRun(pg, repo)).toMatchObject({ code: 0, kind: "full" });
    expect(await backupRun(pg, repo)).toMatchObject({ code: 0, kind: "full", reason: expect.stringMatching(/^summarize_wal is off/) });
    // Summaries start now: they do not cover the WAL since the last backup began.
    await pg.sql()`checkpoint`;
    pg.appendConf({ summarize_wal: "on" });
    await pg.reload();
    await pg.sql()`create table t as select generate_series(1, 10000) g`;
    const refused = await backupRun(pg, repo, ["--incremental"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^klio: an incremental backup cannot be taken: the server refused an incremental backup against \S+: WAL summaries are required on timeline 1 from/m);
    const fallback = await backupRun(pg, repo);
    expect(fallback).toMatchObject({ code: 0, kind: "full", reason: expect.stringMatching(/^the server refused an incremental backup against \S+: WAL summaries are required/) });
    // From that full on, the summaries cover: the next one is incremental; --full forces a full.
    expect(await backupRun(pg, repo)).toMatchObject({ code: 0, kind: "incremental" });
    expect(await backupRun(pg, repo, ["--full"])).toMatchObject({ code: 0, kind: "full", reason: "--full was given" });
    expect((await backupRun(pg, repo, ["--full", "--incremental"])).code).toBe(2);
    expect((await backupRun(pg, repo, ["--full-every", "soon"])).stderr).toMatch(/^klio: backup run: --full-every must be a duration such as 7d/m);
    expect(snapshotsOf(repo)).toBe(5);
  }, 300_000);

  it("a parent whose file list turns out unreadable during the copy gives a full backup and says why; --incremental fails naming it", async () => {
    const { pg, repo } = await streamingServer(cleanups, [], 18);
    pg.appendConf({ summarize_wal: "on" });
    await pg.reload();
    await pg.sql()`create table t as select generate_series(1, 50000) g`;
    const parent = await backupRun(pg, repo);
    expect(parent).toMatchObject({ code: 0, kind: "full" });
    // The parent's manifest reads (the server takes the incremental), but its file list is
    // another chunk: found when the first INCREMENTAL. file needs it, after the copy began.
    const r = await openRepository(repo);
    try {
      const key = snapshotKey("db1", parent.id!);
      const s = parseSnapshot(await r.getObject(key), key);
      await r.deleteObject(key);
      await r.putObject(key, new TextEncoder().encode(JSON.stringify({ ...s, fileList: { ...s.fileList, pieces: s.backupManifest.chunks } })));
    } finally {
      await r.close();
    }
    await pg.sql()`update t set g = g + 1 where g % 50 = 0`;
    const refused = await backupRun(pg, repo, ["--incremental"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(new RegExp(`^klio: an incremental backup cannot be taken: the backup to take it against, ${parent.id}, cannot be read: snapshot file list is damaged: not a klio file list`, "m"));
    const fallback = await backupRun(pg, repo);
    expect(fallback).toMatchObject({ code: 0, kind: "full", reason: expect.stringMatching(new RegExp(`^the backup to take it against, ${parent.id}, cannot be read: snapshot file list is damaged`)) });
    expect(fallback.stderr).toMatch(/"level":"warn","event":"backup.full"/);
    const verified = JSON.parse(await klio(["backup", "verify", fallback.id!, "--repo", repo, "--cluster", "db1", "--json"]));
    expect(verified).toMatchObject({ ok: true, problems: [] });
    expect(snapshotsOf(repo)).toBe(2);
  }, 300_000);

  it("an INCREMENTAL. entry damaged in flight fails the backup cleanly, and the next one is right", async () => {
    const { pg, repo } = await streamingServer(cleanups, [], 18);
    pg.appendConf({ summarize_wal: "on" });
    await pg.reload();
    await pg.sql()`create table t as select generate_series(1, 50000) g`;
    expect(await backupRun(pg, repo)).toMatchObject({ code: 0, kind: "full" });
    await pg.sql()`update t set g = g + 1 where g % 50 = 0`;
    // The first INCREMENTAL. file's magic number gets one byte flipped on its way.
    const magic = Buffer.alloc(4);
    magic.writeUInt32LE(0xd3ae1f0d);
    const proxy = await startTcpProxy(pg.port, { fromServer: () => flipFirst(magic) });
    cleanups.push(() => proxy.close());
    const damaged = await runKlioAsync(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString({ port: String(proxy.port) })]);
    expect(damaged.code).toBe(1);
    expect(damaged.stderr).toMatch(/^klio: incremental file "[^"]*INCREMENTAL\.[^"]*" is damaged: bad magic number 0x[0-9a-f]+ \(expected 0xd3ae1f0d\)$/m);
    expect(snapshotsOf(repo)).toBe(1);
    const next = await backupRun(pg, repo);
    expect(next).toMatchObject({ code: 0, kind: "incremental" });
    const verified = JSON.parse(await klio(["backup", "verify", next.id!, "--repo", repo, "--cluster", "db1", "--json"]));
    expect(verified).toMatchObject({ ok: true, problems: [] });
  }, 300_000);
});

/**
 * A stream that passes bytes on, with one byte of the first occurrence of `needle` flipped.
 * Nothing is held back (the protocol waits for the server's last bytes): a needle that
 * straddles two chunks goes through, and the next one is flipped — an incremental backup has
 * hundreds of INCREMENTAL. files.
 */
function flipFirst(needle: Buffer): Transform {
  let done = false;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      const at = done ? -1 : chunk.indexOf(needle);
      if (at >= 0) {
        chunk[at] = chunk[at]! ^ 0xff;
        done = true;
      }
      cb(null, chunk);
    },
  });
}

/** The relation files (paths relative to the data directory) below `dir`, sorted. */
function relationFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const e of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && isPagedFile(p) && /^(base|global)\//.test(p) && statSync(path.join(dir, p)).size > 0) out.push(p);
    }
  };
  walk("");
  return out.sort();
}
