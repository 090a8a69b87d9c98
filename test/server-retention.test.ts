// Retention and maintenance in the daemon, driven only through the API: the config's policy
// applies after every backup, a policy set through the API takes precedence, pinned backups
// stay, maintenance frees the space and says so in its job, /v1/maintenance and /metrics.
import { describe, it, expect, afterEach } from "vitest";
import { startPostgres } from "./harness/postgres.ts";
import { pgbench, type Cleanup } from "./harness/backup.ts";
import { backupThroughApi, maintenanceThroughApi, startTestDaemon } from "./harness/daemon.ts";
import { parsePrometheus } from "./harness/prometheus.ts";
import { waitFor } from "./harness/klio.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("retention and maintenance in the daemon", () => {
  it("keeps what the policy says after every backup, and frees the space on request", { timeout: 300_000 }, async () => {
    const pg = await startPostgres({ version: 15 });
    cleanups.push(() => pg.destroy());
    await pgbench(pg, ["-i", "-q", "-s", "2"]);
    const d = await startTestDaemon(cleanups, [{ name: "db1", pg, retention: { full: 2 } }], { maintenance: { schedule: "off", max_wait_minutes: 0 } });
    await waitFor("streaming", async () => (await d.get("/v1/clusters/db1")).receiver.state === "streaming", 60_000);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      await pgbench(pg, ["-t", "300"]);
      const job = await backupThroughApi(d, "db1");
      expect(job.state, JSON.stringify(job.error)).toBe("succeeded");
      ids.push(job.backupId);
    }
    // The config's policy ran after each backup: the two newest are left.
    const list = async () => (await d.get("/v1/clusters/db1/backups")).backups.map((b: { id: string }) => b.id);
    expect(await list()).toEqual(ids.slice(2));
    const retention = await d.get("/v1/clusters/db1/retention");
    expect(retention).toMatchObject({ cluster: "db1", policy: { full: 2 }, source: "config", pinned: [], lastRun: { deleted: [ids[1]], error: null } });

    // A policy set through the API takes precedence; bad ones are refused and change nothing.
    for (const [body, status] of [['{"full": 0}', 400], ['{"recoveryWindow": "7 days"}', 400], ['{"keepHourly": 2}', 400], ["{}", 400], ["[1]", 400]] as const) {
      const r = await d.call("PUT", "/v1/clusters/db1/retention", { body });
      expect(r.status, body).toBe(status);
      expect((await r.json()).error).toBeTruthy();
    }
    expect((await d.get("/v1/clusters/db1/retention")).source).toBe("config");
    expect((await d.call("PUT", "/v1/clusters/db1/retention", { body: '{"keepLatest": 1}' })).status).toBe(200);
    expect((await d.call("PUT", `/v1/clusters/db1/backups/${ids[2]}/pin`)).status).toBe(200);
    expect((await d.call("PUT", `/v1/clusters/nope/backups/${ids[2]}/pin`)).status).toBe(404);
    const dry = await (await d.call("POST", "/v1/clusters/db1/retention/apply", { body: '{"dryRun": true}' })).json();
    expect(dry.deleted).toEqual([]); // the older one is pinned, the newer is the latest
    expect(dry.decisions.find((x: { id: string }) => x.id === ids[2]).reasons).toEqual(["pinned"]);
    expect((await d.call("DELETE", `/v1/clusters/db1/backups/${ids[2]}/pin`)).status).toBe(200);
    const applied = await (await d.call("POST", "/v1/clusters/db1/retention/apply", { body: "{}" })).json();
    expect(applied.deleted).toEqual([ids[2]]);
    expect(await list()).toEqual([ids[3]]);

    // Maintenance through the API: a dry run frees nothing, the real run frees what three backups had alone.
    const dryRun = await maintenanceThroughApi(d, '{"dryRun": true}');
    expect(dryRun).toMatchObject({ state: "succeeded", kind: "maintenance", cluster: null, result: { dryRun: true } });
    const job = await maintenanceThroughApi(d);
    expect(job.state, JSON.stringify(job.error)).toBe("succeeded");
    expect(job.result).toMatchObject({ snapshots: 1, deferred: null });
    expect(job.result.bytes.freed).toBeGreaterThan(0);
    const m = await d.get("/v1/maintenance");
    expect(m.last.bytes.freed).toBe(job.result.bytes.freed);
    expect(m.running).toBeNull();
    expect(m.disk.freeBytes).toBeGreaterThan(0);
    const metrics = parsePrometheus(await (await d.call("GET", "/metrics")).text());
    expect(metrics.get("klio_maintenance_last_freed_bytes")![0]!.value).toBe(job.result.bytes.freed);
    expect(metrics.get("klio_repository_garbage_bytes")![0]!.value).toBeGreaterThanOrEqual(0);
    expect(metrics.get("klio_retention_last_deleted_backups")![0]!.value).toBe(1);
    expect(metrics.get("klio_disk_low")![0]!.value).toBe(0);
    expect(metrics.get("klio_receiver_disk_full")![0]!.value).toBe(0);

    // A restore reading over the API holds a lease: maintenance frees nothing it may read.
    const reader = "0123456789abcdef0123";
    const bad = await d.call("GET", "/v1/repository/objects/klio-repository.json", { headers: { "x-klio-reader": "not hex" } });
    expect(bad.status).toBe(400);
    const read = () => d.call("GET", "/v1/repository/objects/klio-repository.json", { headers: { "x-klio-reader": reader } });
    expect((await read()).status).toBe(200);
    // A restore reads on and on; so does this reader, or its lease (two minutes) could lapse
    // while the backups below run slowly under load.
    const reading = setInterval(() => void read().then((r) => r.body?.cancel(), () => {}), 5_000);
    let held;
    try {
      const newer = await backupThroughApi(d, "db1");
      expect(newer.state).toBe("succeeded");
      await pgbench(pg, ["-t", "300"]);
      expect((await backupThroughApi(d, "db1")).state).toBe("succeeded"); // keepLatest 1: the one before goes
      held = await maintenanceThroughApi(d);
    } finally {
      clearInterval(reading);
    }
    expect(held.state, JSON.stringify(held.error)).toBe("succeeded");
    expect(held.result.deferred.sessions.join()).toMatch(/a reader over the API \(token ops\)/);
    expect(held.result.bytes.freed).toBe(0);
    expect((await d.get("/v1/maintenance")).last.deferred).not.toBeNull();
  });
});
