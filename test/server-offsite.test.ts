// The daemon keeps the offsite copy itself: backups and completed WAL reach the bucket within
// seconds, /v1/offsite and /metrics say how far behind it is, and an S3 outage is a counted,
// visible failure that heals by itself.
import { describe, it, expect, afterEach } from "vitest";
import { startPostgres } from "./harness/postgres.ts";
import { runKlioAsync, waitFor } from "./harness/klio.ts";
import { tempDir, type Cleanup } from "./harness/backup.ts";
import { backupThroughApi, startTestDaemon } from "./harness/daemon.ts";
import { startS3 } from "./harness/s3.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("the daemon's offsite copy", () => {
  it("sends backups and WAL within seconds and reports an outage until it heals", { timeout: 240_000 }, async () => {
    const s3 = await startS3(cleanups);
    const pg = await startPostgres({ version: 15 });
    cleanups.push(() => pg.destroy());
    const url = `s3://${s3.bucket}/appliance`;
    const d = await startTestDaemon(cleanups, [{ name: "db1", pg }], { offsite: { url, endpoint: s3.endpoint, accessKeyFile: s3.accessKeyFile, secretKeyFile: s3.secretKeyFile } });
    await waitFor("the receiver to stream", async () => (await d.get("/v1/clusters/db1")).receiver.state === "streaming", 60_000);
    const job = await backupThroughApi(d, "db1");
    await waitFor("the backup in the bucket", async () => {
      const r = await runKlioAsync(["backup", "list", "--repo", url, ...s3.flags, "--json"]);
      return r.code === 0 && JSON.parse(r.stdout).backups.some((b: any) => b.id === job.backupId);
    }, 60_000);

    // A completed segment reaches the bucket within seconds.
    const sql = pg.sql();
    await sql`create table t (id int)`;
    await sql`insert into t select generate_series(1, 100)`;
    const [{ seg }] = await sql`select pg_walfile_name(pg_current_wal_lsn()) as seg`;
    await sql`select pg_switch_wal()`;
    const t0 = Date.now();
    const dir = tempDir(cleanups, "klio-seg-");
    await waitFor(`${seg} in the bucket`, async () => (await runKlioAsync(["get-wal", seg, `${dir}/seg`, "--repo", url, "--cluster", "db1", ...s3.flags])).code === 0, 60_000);
    const lagSeconds = (Date.now() - t0) / 1000;
    expect(lagSeconds).toBeLessThan(15);

    const offsite = await d.get("/v1/offsite");
    expect(offsite.lastError).toBeNull();
    expect(offsite).toMatchObject({ remote: url, failures: 0 });
    expect(offsite.uploadedObjects).toBeGreaterThan(3);
    expect((await d.get("/v1/offsite/status")).behind.objects).toBeLessThanOrEqual(2); // the partial segment may have moved on
    const metrics = await (await d.call("GET", "/metrics")).text();
    expect(metrics).toMatch(/^klio_offsite_failures_total 0$/m);
    expect(metrics).toMatch(/^klio_offsite_last_success_timestamp_seconds \d+/m);

    // S3 goes away: failures are counted and visible; back, the copy catches up.
    await s3.kill9();
    await sql`insert into t values (1000)`;
    await sql`select pg_switch_wal()`;
    await waitFor("the outage to show", async () => (await d.get("/v1/offsite")).state === "failing", 60_000);
    expect(await (await d.call("GET", "/metrics")).text()).toMatch(/^klio_offsite_failing 1$/m);
    await s3.start();
    await waitFor("the copy to heal", async () => {
      const v = await d.get("/v1/offsite");
      return v.state === "idle" && v.lastPass.behind.objects === 0;
    }, 120_000);
    expect((await d.get("/v1/offsite")).failures).toBeGreaterThan(0);
    expect(await d.process.stop()).toBe(0);
  });
});
