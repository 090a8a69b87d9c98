// A restore never stops short in silence. When a WAL segment the recovery needs is damaged,
// or the appliance cannot be reached for it, get-wal answers with a status PostgreSQL treats
// as fatal: recovery stops with klio's error in the server's log, and the restored server
// never opens with fewer rows than were committed. A network fault that heals within
// get-wal's retry window costs only time: the restore completes with every row.
import { describe, it, expect, afterEach } from "vitest";
import { chmodSync, existsSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { PG_VERSIONS, pgTempDir, startDataDir, startPostgres, type PgServer, type PgVersion } from "./harness/postgres.ts";
import { runKlioAsync, waitFor } from "./harness/klio.ts";
import { klio, restoreAndStart, shareRepo, streamingServer, tempDir, type Cleanup } from "./harness/backup.ts";
import { backupThroughApi, READ_TOKEN, startTestDaemon } from "./harness/daemon.ts";
import { damageFile } from "./harness/damage.ts";
import { switchWal } from "./harness/wal.ts";
import { startWalFaultProxy } from "./harness/wal-fault-proxy.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A table with 1000 rows in the backup and 1000 more in each of four segments after it. */
async function writeRounds(pg: PgServer): Promise<{ segments: string[]; rows: number }> {
  const sql = pg.sql();
  const segments: string[] = [];
  for (let round = 1; round <= 4; round++) {
    await sql`insert into t select g from generate_series(${round * 1000 + 1}::int, ${round * 1000 + 1000}::int) g`;
    segments.push(await switchWal(sql));
  }
  const [{ n }] = await sql`select count(*)::int as n from t`;
  return { segments, rows: n };
}

/**
 * Restores (the single executable, as an operator does) and starts the server; resolves once
 * the server has gone away again, checking meanwhile that it never left recovery.
 */
async function restoreExpectingStop(version: PgVersion, repo: string, flags: string[]): Promise<PgServer> {
  const base = pgTempDir(`klio-restore-${version}-`);
  // Removed whether or not a server ever started on it (one that failed to start has no destroy()).
  cleanups.push(() => rmSync(base, { recursive: true, force: true }));
  const dest = path.join(base, "data");
  await klio(["restore", dest, "--repo", repo, "--cluster", "db1", ...flags], true);
  if (!/^https?:\/\//.test(repo)) shareRepo(repo);
  let pg: PgServer | undefined;
  try {
    pg = await startDataDir(version, dest);
  } catch {
    // Recovery may fail before the server accepts connections: that is a stop too.
  }
  const server = pg ?? ({ logText: () => "", destroy: async () => {} } as unknown as PgServer);
  cleanups.push(async () => {
    await server.destroy();
  });
  if (pg) {
    const sql = pg.sql();
    await waitFor("the restored server to stop", async () => {
      try {
        const [{ r }] = await sql`select pg_is_in_recovery() as r`;
        if (r === false) throw new Error("the restored server left recovery: it opened with the WAL cut short");
        return false;
      } catch (e) {
        if (/left recovery/.test((e as Error).message)) throw e;
        return !existsSync(path.join(dest, "postmaster.pid"));
      }
    }, 120_000);
  }
  return server;
}

describe.each(PG_VERSIONS)("PostgreSQL %i: a restore never stops short in silence", (version) => {
  it("a damaged segment in the middle: repo check names it, wal status exits 3, recovery stops with klio's error", { timeout: 300_000 }, async () => {
    const { pg, repo, receiver } = await streamingServer(cleanups, [], version);
    const sql = pg.sql();
    await sql`create table t (id int)`;
    await sql`insert into t select generate_series(1, 1000)`;
    await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString()]);
    const { segments, rows } = await writeRounds(pg);
    expect(rows).toBe(5000);
    const dir = path.join(repo, "wal", "db1");
    const archived = (name: string) => [name + ".kwal", name].find((f) => existsSync(path.join(dir, f)));
    await waitFor("the last round's segment in the archive", () => archived(segments[3]!) !== undefined, 120_000);
    expect(await receiver.stop()).toBe(0);
    expect((await runKlioAsync(["repo", "check", "--repo", repo, "--read-data"])).code).toBe(0);

    const victim = segments[1]!;
    damageFile(path.join(dir, archived(victim)!));
    const check = await runKlioAsync(["repo", "check", "--repo", repo, "--read-data"]);
    expect(check.code).toBe(1);
    expect(check.stdout).toMatch(new RegExp(`PROBLEM wal damaged db1/${victim}(\\.kwal)?: `));
    expect(check.stdout).toMatch(/needed by backup /);
    const status = await runKlioAsync(["wal", "status", "--repo", repo]);
    expect(status.code).toBe(3);
    expect(status.stdout).toMatch(new RegExp(`DAMAGED ${victim}`));

    // A file named like the next segment that is not one: reported, never served.
    const foreign = segments[3]!.slice(0, 16) + (Number.parseInt(segments[3]!.slice(16), 16) + 1).toString(16).toUpperCase().padStart(8, "0");
    writeFileSync(path.join(dir, foreign), randomBytes(16 * 1024 * 1024));
    expect((await runKlioAsync(["wal", "status", "--repo", repo])).stdout).toMatch(new RegExp(`FOREIGN ${foreign}: not a WAL segment of this cluster`));
    const served = await runKlioAsync(["get-wal", foreign, path.join(repo, "x"), "--repo", repo]);
    expect(served.code).toBe(200);
    expect(existsSync(path.join(repo, "x"))).toBe(false);

    const restored = await restoreExpectingStop(version, repo, []);
    const log = restored.logText();
    expect(log).toMatch(new RegExp(`klio: get-wal: cannot restore ${victim}: WAL segment ${victim} of cluster db1 is damaged`));
    expect(log).toMatch(/exit code 200/);
  });

  it("over HTTP through a proxy that answers 503 and drops the connection: recovery stops after the retries, or completes when the proxy heals in time", { timeout: 300_000 }, async () => {
    const pg = await startPostgres({ version });
    cleanups.push(() => pg.destroy());
    const d = await startTestDaemon(cleanups, [{ name: "db1", pg }]);
    await waitFor("the receiver to stream", async () => (await d.get("/v1/clusters/db1")).receiver.state === "streaming", 60_000);
    const sql = pg.sql();
    await sql`create table t (id int)`;
    await sql`insert into t select generate_series(1, 1000)`;
    expect((await backupThroughApi(d, "db1")).state).toBe("succeeded");
    const { segments, rows } = await writeRounds(pg);
    await waitFor("the last round's segment in the archive", async () => (await d.call("GET", `/v1/clusters/db1/wal/${segments[3]}`)).status === 200, 120_000);

    const host = tempDir(cleanups, "klio-other-host-");
    chmodSync(host, 0o755);
    const tokenFile = path.join(host, "read.token");
    writeFileSync(tokenFile, READ_TOKEN + "\n", { mode: 0o644 });
    const proxy = await startWalFaultProxy(Number(new URL(d.url).port));
    cleanups.push(() => proxy.close());
    const victim = segments[1]!;
    proxy.fail(victim, ["503", "drop"]);

    // The fault lasts longer than the retry window: recovery stops, it does not promote.
    const stopped = await restoreExpectingStop(version, proxy.url, ["--token-file", tokenFile, "--wal-retry-for", "3"]);
    const log = stopped.logText();
    expect(log).toMatch(new RegExp(`klio: get-wal: cannot restore ${victim}: `));
    expect(log).toMatch(/exit code 200/);
    expect(proxy.failed.get(victim)).toBeGreaterThanOrEqual(2);

    // The proxy heals within the window: the restore completes with every row.
    proxy.failed.clear();
    const healing = waitFor("get-wal to meet the fault twice", () => (proxy.failed.get(victim) ?? 0) >= 2, 120_000).then(() => proxy.heal(victim));
    const restored = await restoreAndStart(cleanups, version, proxy.url, ["--token-file", tokenFile, "--wal-retry-for", "60"]);
    await healing;
    const [{ n }] = await restored.sql()`select count(*)::int as n from t`;
    expect(n).toBe(rows);
    expect(await d.process.stop()).toBe(0);
  });
});
