// Archiving through a failover, on PostgreSQL 15 and 18, with a primary and a streaming
// standby and klio given both in one connection string (target_session_attrs=primary): it
// follows the new primary by itself, keeps the WAL of a diverged old timeline, and restores
// either timeline exactly.
import { describe, it, expect, afterEach } from "vitest";
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { PG_VERSIONS, startPostgres, startStandby, type PgServer, type PgVersion } from "./harness/postgres.ts";
import { runKlio, waitFor, startKlio, type KlioProcess } from "./harness/klio.ts";
import { klio, restoreAndStart, tempDir, type Cleanup } from "./harness/backup.ts";
import { currentLsn, switchWal, waitForFlush } from "./harness/wal.ts";
import { backupThroughApi, startTestDaemon } from "./harness/daemon.ts";
import { parsePrometheus } from "./harness/prometheus.ts";
import { chmodSync, writeFileSync } from "node:fs";
import { Transform } from "node:stream";
import { startTcpProxy } from "./harness/tcp-proxy.ts";
import { parseLsn } from "../src/pg/lsn.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Pair {
  primary: PgServer;
  standby: PgServer;
  repo: string;
  /** Both servers, the primary first, for target_session_attrs=primary. */
  conn: string;
}

async function pair(version: PgVersion, order: "primary-first" | "standby-first" = "primary-first"): Promise<Pair> {
  const primary = await startPostgres({ version, walSegmentMb: 1, conf: { wal_keep_size: "'256MB'" } });
  cleanups.push(() => primary.destroy());
  const standby = await startStandby(primary);
  cleanups.push(() => standby.destroy());
  const repo = tempDir(cleanups, "klio-failover-");
  await klio(["init", "--repo", repo]);
  const ports = order === "primary-first" ? [primary.port, standby.port] : [standby.port, primary.port];
  const conn = `host=127.0.0.1,127.0.0.1 port=${ports.join(",")} user=postgres dbname=postgres target_session_attrs=primary`;
  return { primary, standby, repo, conn };
}

function stream(p: Pair): KlioProcess {
  const k = startKlio(["wal", "stream", "--repo", p.repo, "--cluster", "db1", "--pg", p.conn, "--create-slot", "--log-format", "json"]);
  cleanups.push(async () => void (await k.kill9()));
  return k;
}

const rows = async (pg: PgServer, side: string) => (await pg.sql()`select count(*)::int as n from t where side = ${side}`)[0]!.n as number;
const insert = (pg: PgServer, side: string, n: number) => pg.sql()`insert into t select g, ${side} from generate_series(1, ${n}) g`;

async function caughtUp(p: Pair): Promise<bigint> {
  const lsn = await currentLsn(p.primary.sql());
  await waitFor("the standby to replay everything", async () => parseLsn((await p.standby.sql()`select pg_last_wal_replay_lsn()::text as l`)[0]!.l) >= lsn);
  await waitForFlush(p.repo, lsn);
  return lsn;
}

async function promote(pg: PgServer): Promise<void> {
  await pg.sql()`select pg_promote(true, 60)`;
}

/** Completes the current segment on `pg` and waits until the receiver has it. */
async function archiveCurrent(p: Pair, pg: PgServer): Promise<void> {
  const lsn = await currentLsn(pg.sql());
  await switchWal(pg.sql());
  await waitForFlush(p.repo, lsn, "db1", 30_000);
}

/** `step`, failing with the receiver's log (what it tried, and why it did not stream). */
async function watched<T>(k: KlioProcess, step: Promise<T>): Promise<T> {
  try {
    return await step;
  } catch (e) {
    throw new Error(`${(e as Error).message}\nklio's log:\n${k.log().slice(-6000)}`);
  }
}

function walStatus(repo: string): any {
  const r = runKlio(["wal", "status", "--repo", repo, "--cluster", "db1", "--json"]);
  return JSON.parse(r.stdout);
}

const walFiles = (repo: string) => readdirSync(path.join(repo, "wal", "db1")).filter((n) => /^[0-9A-F]{24}/.test(n)).sort();

describe.each(PG_VERSIONS)("failover on PostgreSQL %i", (version) => {
  it("follows the promoted standby within 30 s, with no gap, and restores every row of both sides", async () => {
    const p = await pair(version);
    const k = stream(p);
    await k.waitForLog(new RegExp(`"wal.streaming".*"server":"postgres@127.0.0.1:${p.primary.port}"`));
    await p.primary.sql()`create table t (id int, side text)`;
    await insert(p.primary, "old", 1000);
    // The backup goes to the server the attrs choose, the primary.
    const backup = JSON.parse(await klio(["backup", "run", "--repo", p.repo, "--cluster", "db1", "--pg", p.conn, "--json"]));
    expect(backup.fromStandby).toBe(false);
    await insert(p.primary, "old", 500);
    await caughtUp(p);

    await p.primary.stop("immediate");
    await promote(p.standby);
    const promotedAt = Date.now();
    await insert(p.standby, "new", 700);
    const lsn = await currentLsn(p.standby.sql());
    await watched(k, waitForFlush(p.repo, lsn, "db1", 30_000));
    expect(Date.now() - promotedAt).toBeLessThan(30_000);
    expect(k.log()).toMatch(new RegExp(`"wal.streaming".*"timeline":[12].*"server":"postgres@127.0.0.1:${p.standby.port}"`));
    await archiveCurrent(p, p.standby);

    const status = walStatus(p.repo);
    expect(status.gaps).toEqual([]);
    expect(status.timelines).toEqual([1, 2]);
    expect(status.timeline).toBe(2);

    const restored = await restoreAndStart(cleanups, version, p.repo, []);
    expect(await rows(restored, "old")).toBe(1500);
    expect(await rows(restored, "new")).toBe(700);
    await k.stop();
  }, 240_000);

  it("keeps the old primary's WAL past a fork: the latest timeline restores the new side, --target-timeline the old one", async () => {
    const p = await pair(version, "standby-first");
    const k = stream(p);
    await k.waitForLog(/"wal.streaming"/);
    await p.primary.sql()`create table t (id int, side text)`;
    await insert(p.primary, "both", 1000);
    await klio(["backup", "run", "--repo", p.repo, "--cluster", "db1", "--pg", p.conn]);
    await insert(p.primary, "both", 200);
    await caughtUp(p);

    // The standby is cut off; the primary commits more, which klio receives, then dies.
    await p.standby.sql()`alter system set primary_conninfo = ''`;
    await p.standby.sql()`select pg_reload_conf()`;
    await waitFor("the standby's WAL receiver to stop", async () => (await p.standby.sql()`select count(*)::int as n from pg_stat_wal_receiver`)[0]!.n === 0);
    await insert(p.primary, "lost", 300);
    await waitForFlush(p.repo, await currentLsn(p.primary.sql()));
    await p.primary.stop("immediate");

    await promote(p.standby);
    await insert(p.standby, "new", 400);
    await k.waitForLog(/"wal.timeline_fork"/, 30_000);
    await archiveCurrent(p, p.standby);

    const fork = /^.*"wal.timeline_fork".*$/m.exec(k.log())![0];
    expect(fork).toMatch(/"level":"warn"/);
    expect(fork).toMatch(/"timeline":1,"fork_lsn":"[0-9A-F]+\/[0-9A-F]+","next_timeline":2/);
    const status = walStatus(p.repo);
    expect(status.forks).toHaveLength(1);
    expect(status.forks[0]).toMatchObject({ timeline: 1, nextTimeline: 2, server: `postgres@127.0.0.1:${p.standby.port}` });
    expect(status.forks[0].bytesPastFork).toBeGreaterThan(300 * 20);
    expect(status.gaps).toEqual([]);
    const text = runKlio(["wal", "status", "--repo", p.repo, "--cluster", "db1"]).stdout;
    expect(text).toMatch(/FORK timeline 1 at [0-9A-F]+\/[0-9A-F]+ \(timeline 2 follows.*restore them with --target-timeline 1/);
    // The old timeline's last segment keeps its .partial name, beside the new timeline's copy.
    const files = walFiles(p.repo);
    const forkSegment = status.forks[0].forkLsn;
    expect(files.some((f) => f.startsWith("00000001") && f.endsWith(".partial"))).toBe(true);
    expect(files.some((f) => f.startsWith("00000002"))).toBe(true);
    expect(forkSegment).toBeTruthy();

    const latest = await restoreAndStart(cleanups, version, p.repo, []);
    expect([await rows(latest, "both"), await rows(latest, "lost"), await rows(latest, "new")]).toEqual([1200, 0, 400]);
    const old = await restoreAndStart(cleanups, version, p.repo, ["--target-timeline", "1"]);
    expect([await rows(old, "both"), await rows(old, "lost"), await rows(old, "new")]).toEqual([1200, 300, 0]);
    await k.stop();
  }, 300_000);

  it("the daemon goes through a switchover with no gap and no fork, and stays on the new primary when the old one comes back as a standby", async () => {
    const p = await pair(version);
    const d = await startTestDaemon(cleanups, [{ name: "db1", pg: p.primary, connection: p.conn }]);
    const streamingFrom = async () => (await d.get("/v1/clusters/db1/wal")).receiver.streamingFrom as string | null;
    await waitFor("the daemon's receiver streaming from the primary", async () => (await streamingFrom()) === `postgres@127.0.0.1:${p.primary.port}`);
    await p.primary.sql()`create table t (id int, side text)`;
    await insert(p.primary, "before", 800);
    expect((await backupThroughApi(d, "db1")).state).toBe("succeeded");
    const lsn = await currentLsn(p.primary.sql());
    await waitFor("the standby to replay everything", async () => parseLsn((await p.standby.sql()`select pg_last_wal_replay_lsn()::text as l`)[0]!.l) >= lsn);

    // Switchover: the primary shuts down cleanly (its standby and klio get every byte), the standby is promoted.
    await p.primary.stop("fast");
    await promote(p.standby);
    await insert(p.standby, "after", 600);
    await waitFor("the daemon's receiver streaming from the new primary", async () => (await streamingFrom()) === `postgres@127.0.0.1:${p.standby.port}`, 30_000);
    const metrics = parsePrometheus(await (await d.call("GET", "/metrics")).text());
    expect(metrics.get("klio_receiver_server_info")).toEqual([{ labels: { cluster: "db1", server: `postgres@127.0.0.1:${p.standby.port}` }, value: 1 }]);
    expect(metrics.get("klio_wal_timeline_forks")).toEqual([{ labels: { cluster: "db1" }, value: 0 }]);

    // The old primary comes back as a standby of the new one; listed first, it is passed over.
    writeFileSync(path.join(p.primary.dataDir, "standby.signal"), "");
    p.primary.appendConf({ primary_conninfo: `'host=127.0.0.1 port=${p.standby.port} user=postgres'` });
    await p.primary.start();
    await insert(p.standby, "after", 100);
    const end = await currentLsn(p.standby.sql());
    await waitFor("the old primary to follow the new one", async () => parseLsn((await p.primary.sql()`select pg_last_wal_replay_lsn()::text as l`)[0]!.l) >= end);
    await switchWal(p.standby.sql());
    await waitForFlush(d.repo, end, "db1", 30_000);
    expect(await streamingFrom()).toBe(`postgres@127.0.0.1:${p.standby.port}`);
    const wal = await d.get("/v1/clusters/db1/wal");
    expect(wal.archive.gaps).toEqual([]);
    expect(wal.archive.forks).toEqual([]);
    expect(wal.archive.timelines).toEqual([1, 2]);

    await d.process.stop();
    chmodSync(d.dir, 0o755); // restore_command runs as postgres: it must reach the repository inside
    const restored = await restoreAndStart(cleanups, version, d.repo, []);
    expect([await rows(restored, "before"), await rows(restored, "after")]).toEqual([800, 700]);
  }, 300_000);

  it("a backup the failover interrupts fails cleanly; the daemon's next scheduled one is taken from the new primary", async () => {
    const p = await pair(version);
    // The primary is reached through a proxy that slows what it sends, so that the failover
    // comes while the backup copies.
    const proxy = await startTcpProxy(p.primary.port, { fromServer: () => new Transform({ transform: (chunk, _e, done) => void setTimeout(() => done(null, chunk), 4) }) });
    cleanups.push(() => proxy.close());
    await p.primary.sql()`create table t (id int, side text)`;
    await p.primary.sql()`insert into t select g, repeat('x', 200) from generate_series(1, 150000) g`;
    const conn = `host=127.0.0.1,127.0.0.1 port=${proxy.port},${p.standby.port} user=postgres dbname=postgres target_session_attrs=primary`;
    const d = await startTestDaemon(cleanups, [{ name: "db1", pg: p.primary, connection: conn, schedule: "every 20s" }]);
    const jobs = async () => (await d.get("/v1/clusters/db1/jobs")).jobs as any[];
    await d.process.waitForLog(/"backup.started"/, 60_000);
    await p.primary.stop("immediate");
    const failed = await waitFor("the interrupted backup to fail", async () => (await jobs()).find((j) => j.state === "failed"), 60_000);
    expect(failed.error).toBeTruthy();
    expect((await d.get("/v1/clusters/db1/backups")).backups).toEqual([]);

    await promote(p.standby);
    const next = await waitFor("the next scheduled backup to succeed", async () => (await jobs()).find((j) => j.state === "succeeded"), 120_000);
    expect(next.trigger).toBe("schedule");
    const [backup] = (await d.get("/v1/clusters/db1/backups")).backups;
    expect(backup).toMatchObject({ id: next.backupId, fromStandby: false, timeline: 2 });
  }, 300_000);

  it("waits, saying why, while only a standby answers; streams once it is promoted", async () => {
    const p = await pair(version);
    await p.primary.stop("fast");
    const conn = `host=127.0.0.1 port=${p.standby.port} user=postgres dbname=postgres target_session_attrs=primary`;
    const k = startKlio(["wal", "stream", "--repo", p.repo, "--cluster", "db1", "--pg", conn, "--create-slot", "--log-format", "json"]);
    cleanups.push(async () => void (await k.kill9()));
    await k.waitForLog(/"wal.disconnected".*server is in hot standby mode/, 30_000);
    expect(k.log()).not.toMatch(/"wal.streaming"/);
    expect(existsSync(path.join(p.repo, "wal", "db1")) ? walFiles(p.repo) : []).toEqual([]);
    expect((await p.standby.sql()`select count(*)::int as n from pg_replication_slots`)[0]!.n).toBe(0);
    await promote(p.standby);
    await k.waitForLog(/"wal.streaming"/, 30_000);
    await k.stop();
  }, 120_000);
});

describe("bad multi-host connection strings", () => {
  it.each([
    ["host=a,b port=1,2,3", /could not match 3 port numbers to 2 hosts/],
    ["host=a,,b", /empty entry/],
    ["host=a,b target_session_attrs=master", /invalid target_session_attrs "master"/],
    ["host=a,b hostaddr=10.0.0.1", /could not match 2 host names to 1 hostaddr values/],
  ])("%s: one clear error, nothing made", async (conn, message) => {
    const repo = tempDir(cleanups, "klio-badconn-");
    await klio(["init", "--repo", repo]);
    const before = readdirSync(repo).sort();
    for (const args of [["wal", "stream", "--cluster", "db1"], ["backup", "run", "--cluster", "db1"]]) {
      const r = runKlio([...args, "--repo", repo, "--pg", conn]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(message);
      expect(readdirSync(repo).sort()).toEqual(before);
    }
  });
});
