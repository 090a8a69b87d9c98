// The appliance as an operator runs it: `klio server start` on a real config with two clusters
// (PostgreSQL 15 and 18), driven only through its HTTP API. WAL streams for both, a scheduled
// and an on-demand backup happen, /metrics is Prometheus text, and a dead PostgreSQL 15 does
// not disturb the PostgreSQL 18 cluster.
import { parsePrometheus } from "./harness/prometheus.ts";
import { describe, it, expect, afterEach } from "vitest";
import { startPostgres } from "./harness/postgres.ts";
import { waitFor } from "./harness/klio.ts";
import { chmodSync, writeFileSync } from "node:fs";
import path from "node:path";
import { klio, pgbench, restoreAndStart, tempDir, type Cleanup } from "./harness/backup.ts";
import { backupThroughApi, READ_TOKEN, restartTestDaemon, startTestDaemon } from "./harness/daemon.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Parses Prometheus text exposition 0.0.4 strictly enough to catch a malformed line. */
describe("klio server start", () => {
  it("streams WAL and backs up two clusters through the API, and one cluster's failure leaves the other alone", { timeout: 300_000 }, async () => {
    const pg15 = await startPostgres({ version: 15 });
    cleanups.push(() => pg15.destroy());
    const pg18 = await startPostgres({ version: 18 });
    cleanups.push(() => pg18.destroy());
    const d = await startTestDaemon(cleanups, [{ name: "db15", pg: pg15, schedule: "every 20s" }, { name: "db18", pg: pg18 }]);

    // Both receivers stream.
    await waitFor("both receivers streaming", async () => {
      const s = await d.get("/v1/status");
      return s.clusters.every((c: any) => c.receiver.state === "streaming") ? s : undefined;
    }, 60_000);

    // An on-demand backup of the 18 cluster.
    const job18 = await backupThroughApi(d, "db18");
    expect(job18).toMatchObject({ state: "succeeded", cluster: "db18", trigger: "api" });
    const backups18 = await d.get("/v1/clusters/db18/backups");
    expect(backups18.backups.map((b: any) => b.id)).toEqual([job18.backupId]);
    expect(backups18.backups[0].pgVersion).toBeGreaterThanOrEqual(180000);

    // The scheduled backup of the 15 cluster happens by itself.
    const scheduled = await waitFor("a scheduled backup of db15", async () => {
      const jobs = (await d.get("/v1/clusters/db15/jobs")).jobs;
      return jobs.find((j: any) => j.trigger === "schedule" && j.state !== "running");
    }, 180_000);
    expect(scheduled).toMatchObject({ state: "succeeded", cluster: "db15" });
    expect((await d.get(`/v1/clusters/db15/backups/${scheduled.backupId}`)).pgVersion).toBeLessThan(160000);

    // WAL flows for both: a switched segment shows up in each archive and can be fetched.
    for (const [name, pg] of [["db15", pg15], ["db18", pg18]] as const) {
      const sql = pg.sql();
      await sql`create table if not exists t (id int)`;
      await sql`insert into t select generate_series(1, 1000)`;
      const [{ seg }] = await sql`select pg_walfile_name(pg_current_wal_lsn()) as seg`;
      await sql`select pg_switch_wal()`;
      await waitFor(`${name} to archive ${seg}`, async () => (await d.call("GET", `/v1/clusters/${name}/wal/${seg}`)).status === 200, 120_000);
      const r = await d.call("GET", `/v1/clusters/${name}/wal/${seg}`);
      expect((await r.arrayBuffer()).byteLength).toBe(16 * 1024 * 1024);
      const wal = await d.get(`/v1/clusters/${name}/wal`);
      expect(wal.archive.lastSegment >= seg).toBe(true);
      expect(wal.archive.gaps).toEqual([]);
    }

    // /metrics is Prometheus text and says what happened.
    const metricsText = await (await d.call("GET", "/metrics", { token: "read-token-for-tests-0123456789" })).text();
    const metrics = parsePrometheus(metricsText);
    const of = (name: string, cluster: string) => metrics.get(name)?.find((s) => s.labels.cluster === cluster)?.value;
    expect(of("klio_receiver_streaming", "db15")).toBe(1);
    expect(of("klio_receiver_streaming", "db18")).toBe(1);
    expect(of("klio_backups", "db18")).toBe(1);
    expect(of("klio_backup_last_size_bytes", "db18")).toBeGreaterThan(1_000_000);
    expect(of("klio_wal_segments_archived_total", "db15")).toBeGreaterThan(0);
    expect(metrics.get("klio_repository_size_bytes")![0]!.value).toBeGreaterThan(1_000_000);

    // PostgreSQL 15 dies: its receiver reconnects in vain, the 18 cluster carries on.
    await pg15.kill9();
    await waitFor("db15's receiver to notice", async () => (await d.get("/v1/clusters/db15")).receiver.state !== "streaming", 60_000);
    expect((await d.get("/v1/clusters/db18")).receiver.state).toBe("streaming");
    const again = await backupThroughApi(d, "db18");
    expect(again.state).toBe("succeeded");
    const sql18 = pg18.sql();
    await sql18`insert into t values (5002)`;
    await new Promise((r) => setTimeout(r, 1100));
    const [{ target }] = await sql18`select now()::text as target`;
    await new Promise((r) => setTimeout(r, 1100));
    await sql18`insert into t values (5003)`;
    const [{ seg }] = await sql18`select pg_walfile_name(pg_current_wal_lsn()) as seg`;
    await sql18`select pg_switch_wal()`;
    await waitFor(`db18 to archive ${seg} while db15 is down`, async () => (await d.call("GET", `/v1/clusters/db18/wal/${seg}`)).status === 200, 120_000);

    // Another host restores db18 through the API alone, to a time between the two rows.
    const host = tempDir(cleanups, "klio-other-host-");
    chmodSync(host, 0o755);
    const tokenFile = path.join(host, "read.token");
    writeFileSync(tokenFile, READ_TOKEN + "\n", { mode: 0o644 });
    const restored = await restoreAndStart(cleanups, 18, d.url, ["--token-file", tokenFile, "--target-time", target], undefined, "db18");
    const rows = await restored.sql()`select array_agg(id order by id) filter (where id > 5000) as ids, count(*) as n from t`;
    expect(rows[0]!.ids).toEqual([5002]);
    expect(Number(rows[0]!.n)).toBe(1001);
    // db15's schedule still fires (and fails): the harness asks again while one runs (409 busy).
    const failed = await backupThroughApi(d, "db15");
    expect(failed.state).toBe("failed");
    expect((await d.get("/v1/clusters/db15")).backupFailures).toBeGreaterThanOrEqual(1);

    // SIGTERM: a clean stop.
    expect(await d.process.stop()).toBe(0);
    expect(d.process.log()).toMatch(/"server.stopped"/);

    // Started again, the daemon remembers the last backups and failures.
    const d2 = await restartTestDaemon(cleanups, d);
    expect((await d2.get("/v1/clusters/db18")).lastBackup).toMatchObject({ id: again.backupId, ok: true });
    const db15 = await d2.get("/v1/clusters/db15");
    expect(db15.lastBackup).toMatchObject({ ok: false }); // the failed one, or a scheduled one that failed too (its server is down)
    expect(db15.backupFailures).toBeGreaterThanOrEqual(1);
    expect(await d2.process.stop()).toBe(0);
  });

  it("abandons a running backup on SIGTERM: nothing half-made is visible, and the repository checks clean", { timeout: 180_000 }, async () => {
    const pg = await startPostgres({ version: 15 });
    cleanups.push(() => pg.destroy());
    await pgbench(pg, ["-i", "-q", "-s", "10"]);
    const d = await startTestDaemon(cleanups, [{ name: "db1", pg }]);
    await waitFor("the receiver to stream", async () => (await d.get("/v1/clusters/db1")).receiver.state === "streaming", 60_000);
    const r = await d.call("POST", "/v1/clusters/db1/backups", { body: "{}" });
    expect(r.status).toBe(202);
    await waitFor("the backup to be copying", async () => {
      const j = (await d.get("/v1/clusters/db1/jobs")).jobs[0];
      return j.state === "running" && (j.progress?.doneBytes ?? 0) > 0;
    }, 120_000);
    expect(await d.process.stop()).toBe(0);
    expect(d.process.log()).toMatch(/"server.stopped"/);
    expect(await klio(["backup", "list", "--repo", d.repo, "--json"]).then((o) => JSON.parse(o).backups)).toEqual([]);
    await klio(["repo", "check", "--repo", d.repo]);
    // Started again, the next backup completes.
    const d2 = await restartTestDaemon(cleanups, d);
    expect((await d2.get("/v1/clusters/db1")).lastBackup).toMatchObject({ ok: false });
    expect((await backupThroughApi(d2, "db1")).state).toBe("succeeded");
    expect(await d2.process.stop()).toBe(0);
  });
});
