// The WAL receiver against real PostgreSQL 15 and 18: what it archives is what the server
// wrote, byte for byte, and what it reports as flushed is in the archive.
import { describe, it, expect, afterEach } from "vitest";
import { mkdtempSync, readdirSync, rmSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { PG_VERSIONS, startPostgres, startStandby, type PgServer } from "./harness/postgres.ts";
import { runKlio, startKlio, waitFor, type KlioProcess } from "./harness/klio.ts";
import { archiveContentEnd, archivedBytes, currentLsn, expectArchiveMatchesServer, generateWal, serverSegment, switchWal } from "./harness/wal.ts";
import { startTcpProxy } from "./harness/tcp-proxy.ts";
import { parseLsn } from "../src/pg/lsn.ts";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempRepo(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "klio-repo-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function server(version: 15 | 18, opts: Parameters<typeof startPostgres>[0] extends infer O ? Partial<O> : never = {}): Promise<PgServer> {
  const pg = await startPostgres({ version, walSegmentMb: 1, ...opts, conf: { wal_keep_size: "'512MB'", ...opts.conf } });
  cleanups.push(() => pg.destroy());
  return pg;
}

function stream(pg: PgServer, repo: string, extra: string[] = []): KlioProcess {
  const k = startKlio(["wal", "stream", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--create-slot", "--log-format", "text", ...extra]);
  cleanups.push(async () => void (await k.kill9()));
  return k;
}

async function archived(repo: string, name: string): Promise<Buffer> {
  return await waitFor(`${name} in the archive`, () => archivedBytes(repo, "db1", name));
}

describe.each(PG_VERSIONS)("WAL receiver on PostgreSQL %i", (version) => {
  it("archives segments byte-identical to the server's, served back by get-wal", async () => {
    const pg = await server(version);
    const repo = tempRepo();
    const k = stream(pg, repo);
    await k.waitForLog(/wal.streaming/);
    const sql = pg.sql();
    await generateWal(sql, 3);
    const last = await switchWal(sql);
    const mine = await archived(repo, last);
    expect(mine.equals(serverSegment(pg, last)!)).toBe(true);
    const { checked } = await expectArchiveMatchesServer(pg, repo, "db1");
    expect(checked.length).toBeGreaterThanOrEqual(3);

    // get-wal as restore_command: exact bytes, absent → 1, bad names → 2 and nothing written.
    const out = path.join(tempRepo(), "RECOVERYXLOG");
    const got = runKlio(["get-wal", last, out, "--repo", repo]);
    expect(got.code).toBe(0);
    expect(readFileSync(out).equals(mine)).toBe(true);
    const absent = runKlio(["get-wal", "0000000100000000000000FF", out + "2", "--repo", repo]);
    expect(absent.code).toBe(1);
    expect(existsSync(out + "2")).toBe(false);
    for (const bad of ["../../etc/passwd", "00000001000000000000000G", "000000010000000000000001/../x"]) {
      const r = runKlio(["get-wal", bad, out + "3", "--repo", repo]);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(existsSync(out + "3")).toBe(false);
    }
    // The newest, still-partial segment is served only on request (--partial), as Barman's get-wal -P.
    await generateWal(sql, 0.2);
    const [{ name: current }] = await sql`select pg_walfile_name(pg_current_wal_lsn()) as name`;
    await k.waitForLog(new RegExp(`flush|streaming`));
    await waitFor("the partial segment", () => archivedBytes(repo, "db1", current, true));
    expect(runKlio(["get-wal", current, out + "4", "--repo", repo]).code).toBe(1);
    expect(runKlio(["get-wal", current, out + "4", "--repo", repo, "--partial"]).code).toBe(0);

    const status = runKlio(["wal", "status", "--repo", repo, "--cluster", "db1", "--json"]);
    expect(status.code).toBe(0);
    const s = JSON.parse(status.stdout);
    expect(s.gaps).toEqual([]);
    expect(s.timeline).toBe(1);
    expect(await k.stop()).toBe(0);
  });

  it("never reports a flush position the archive does not hold", async () => {
    const pg = await server(version);
    const repo = tempRepo();
    const k = stream(pg, repo);
    await k.waitForLog(/wal.streaming/);
    const sql = pg.sql();
    const load = (async () => {
      for (let i = 0; i < 40; i++) await generateWal(sql, 0.25);
    })();
    let samples = 0;
    let done = false;
    void load.finally(() => (done = true));
    while (!done) {
      const [row] = await sql`select s.flush_lsn::text as flush, r.restart_lsn::text as restart
        from pg_stat_replication s, pg_replication_slots r where s.application_name = 'klio' and r.slot_name = 'klio'`;
      if (row?.flush) {
        // Read the archive only after sampling what the server was told: it only grows.
        const end = await archiveContentEnd(pg, repo, "db1");
        expect(parseLsn(row.flush)).toBeLessThanOrEqual(end);
        expect(parseLsn(row.restart)).toBeLessThanOrEqual(end);
        samples++;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    await load;
    // While WAL flows, the flush position is reported at least once a second.
    const target = await currentLsn(sql);
    await waitFor("flush to catch up within ~1 s", async () => {
      const [row] = await sql`select flush_lsn::text as flush from pg_stat_replication where application_name = 'klio'`;
      return row && parseLsn(row.flush) >= target;
    }, 3000);
    expect(samples).toBeGreaterThan(5);
    await k.stop();
  });

  it("survives kill -9 and a server restart with no gap and no damage", async () => {
    const pg = await server(version);
    const repo = tempRepo();
    let k = stream(pg, repo);
    await k.waitForLog(/wal.streaming/);
    const sql = pg.sql();
    const load = (async () => {
      for (let i = 0; i < 30; i++) await generateWal(sql, 0.2);
    })();
    await new Promise((r) => setTimeout(r, 800));
    await k.kill9();
    await new Promise((r) => setTimeout(r, 300));
    k = stream(pg, repo);
    await load;
    await k.waitForLog(/wal.streaming/);
    await pg.restart();
    const sql2 = pg.sql();
    await generateWal(sql2, 1);
    await k.waitForLog(/wal.reconnecting[\s\S]*wal.streaming/, 60_000);
    const last = await switchWal(sql2);
    await archived(repo, last);
    const { checked, names } = await expectArchiveMatchesServer(pg, repo, "db1");
    expect(checked.length).toBeGreaterThanOrEqual(5);
    expect(names.filter((n) => n.endsWith(".partial")).length).toBeLessThanOrEqual(1);
    const status = JSON.parse(runKlio(["wal", "status", "--repo", repo, "--json"]).stdout);
    expect(status.gaps).toEqual([]);
    await k.stop();
  });

  it("notices a silent network cut and a reset connection, reconnects, and loses nothing", async () => {
    // The server holds the slot for the frozen connection's walsender until wal_sender_timeout.
    const pg = await server(version, { conf: { wal_sender_timeout: "'3s'" } });
    const proxy = await startTcpProxy(pg.port);
    cleanups.push(() => proxy.close());
    const repo = tempRepo();
    const k = startKlio(["wal", "stream", "--repo", repo, "--cluster", "db1", "--pg", `host=127.0.0.1 port=${proxy.port} user=postgres`, "--create-slot", "--log-format", "text", "--status-interval", "1"]);
    cleanups.push(async () => void (await k.kill9()));
    await k.waitForLog(/wal.streaming/);
    const sql = pg.sql();
    await generateWal(sql, 0.5);
    proxy.freeze(); // no FIN, no RST: only the missing answers tell
    await generateWal(sql, 0.5);
    await k.waitForLog(/wal.disconnected.*has not answered for [0-9]+ s/, 20_000);
    await k.waitForLog(/wal.disconnected[\s\S]*wal.streaming/, 20_000);
    proxy.cut();
    await generateWal(sql, 0.5);
    await k.waitForLog(/wal.disconnected[\s\S]*wal.disconnected[\s\S]*wal.streaming/, 20_000);
    const last = await switchWal(sql);
    await archived(repo, last);
    const { checked } = await expectArchiveMatchesServer(pg, repo, "db1");
    expect(checked.length).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(runKlio(["wal", "status", "--repo", repo, "--json"]).stdout).gaps).toEqual([]);
    await k.stop();
  });

  it("follows a promoted standby onto its new timeline", async () => {
    const primary = await server(version);
    const standby = await startStandby(primary);
    cleanups.push(() => standby.destroy());
    const repo = tempRepo();
    const k = stream(standby, repo);
    await k.waitForLog(/wal.streaming/);
    const sql = primary.sql();
    await generateWal(sql, 1.5);
    const onPrimary = await currentLsn(sql);
    await waitFor("standby replay", async () => {
      const [{ lsn }] = await standby.sql()`select pg_last_wal_replay_lsn()::text as lsn`;
      return parseLsn(lsn) >= onPrimary;
    });
    await primary.stop("fast");
    await standby.sql()`select pg_promote(true, 60)`;
    await k.waitForLog(/wal.timeline_switch/, 60_000);
    const sql2 = standby.sql();
    await generateWal(sql2, 1.5);
    const last = await switchWal(sql2);
    expect(last.startsWith("00000002")).toBe(true);
    await archived(repo, last);
    const history = path.join(tempRepo(), "hist");
    expect(runKlio(["get-wal", "00000002.history", history, "--repo", repo]).code).toBe(0);
    expect(readFileSync(history).equals(readFileSync(path.join(standby.dataDir, "pg_wal", "00000002.history")))).toBe(true);
    const { names } = await expectArchiveMatchesServer(standby, repo, "db1");
    // The old timeline's last segment stays as a .partial; the new timeline starts in the same segment.
    expect(names.some((n) => n.startsWith("00000001") && n.endsWith(".partial"))).toBe(true);
    const status = JSON.parse(runKlio(["wal", "status", "--repo", repo, "--json"]).stdout);
    expect(status.timelines).toEqual([1, 2]);
    expect(status.histories).toEqual([2]);
    expect(status.gaps).toEqual([]);
    await k.stop();
  });

  it("in synchronous mode holds a commit until the receiver has the WAL", async () => {
    const pg = await server(version, { conf: { synchronous_standby_names: "'klio'" } });
    const repo = tempRepo();
    const k = stream(pg, repo, ["--synchronous"]);
    await k.waitForLog(/wal.streaming/);
    const sql = pg.sql();
    await sql`create table t (v int)`;
    await waitFor("klio as the synchronous standby", async () => {
      const [row] = await sql`select sync_state from pg_stat_replication where application_name = 'klio'`;
      return row?.sync_state === "sync";
    });
    // A stopped receiver holds every commit…
    process.kill(k.child.pid!, "SIGSTOP");
    let committed = false;
    const commit = sql`insert into t values (1)`.then(() => (committed = true));
    await new Promise((r) => setTimeout(r, 1500));
    expect(committed).toBe(false);
    // …which returns once the receiver has written and fsync'd the commit record.
    process.kill(k.child.pid!, "SIGCONT");
    await commit;
    const lsn = await currentLsn(sql);
    await k.kill9();
    expect(await archiveContentEnd(pg, repo, "db1")).toBeGreaterThanOrEqual(lsn);
  });

  it("refuses WAL of another cluster, and records a gap it cannot fill", async () => {
    const pg = await server(version, { conf: { wal_keep_size: 0, max_wal_size: "'32MB'", min_wal_size: "'2MB'" } });
    const repo = tempRepo();
    let k = stream(pg, repo);
    await k.waitForLog(/wal.streaming/);
    const sql = pg.sql();
    await generateWal(sql, 0.5);
    await k.stop();

    const other = await server(version);
    const refused = runKlio(["wal", "stream", "--repo", repo, "--cluster", "db1", "--pg", other.connString(), "--create-slot"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/system identifier .* refusing to mix WAL of two clusters/);

    // The slot goes, the server recycles the WAL the archive still needs.
    await sql`select pg_drop_replication_slot('klio')`;
    for (let i = 0; i < 6; i++) {
      await generateWal(sql, 0.5);
      await switchWal(sql);
    }
    await sql`checkpoint`;
    await sql`checkpoint`;
    k = stream(pg, repo);
    await k.waitForLog(/wal.gap[\s\S]*wal.streaming/, 60_000);
    const last = await switchWal(sql);
    await archived(repo, last);
    await k.stop();
    const status = runKlio(["wal", "status", "--repo", repo, "--cluster", "db1", "--json"]);
    expect(status.code).toBe(3);
    const gaps = JSON.parse(status.stdout).gaps;
    expect(gaps).toHaveLength(1);
    expect(gaps[0].reason).toMatch(/removed/);
  });
});

describe("wal stream input checks", () => {
  it("rejects bad flags and connection strings with one line, creating nothing", () => {
    const repo = path.join(tempRepo(), "new");
    const cases: string[][] = [
      ["wal", "stream", "--repo", repo, "--cluster", "db1", "--pg", "host=127.0.0.1 port=notaport"],
      ["wal", "stream", "--repo", repo, "--cluster", "db1", "--pg", "host='unterminated"],
      ["wal", "stream", "--repo", repo, "--cluster", "db1", "--pg", "bogus=1"],
      ["wal", "stream", "--repo", repo, "--cluster", "../etc", "--pg", "host=127.0.0.1"],
      ["wal", "stream", "--repo", repo, "--cluster", "db1", "--slot", "Bad-Slot"],
      ["wal", "stream", "--repo", repo, "--cluster", "db1", "--frobnicate"],
      ["wal", "stream", "--repo", repo],
    ];
    for (const argv of cases) {
      const r = runKlio(argv);
      expect(r.code, argv.join(" ")).toBe(2);
      expect(r.stderr.trim().split("\n"), r.stderr).toHaveLength(1);
    }
    expect(existsSync(repo)).toBe(false);
    expect(readdirSync(path.dirname(repo))).toEqual([]);
  });
});
