// The daemon's backups of a PostgreSQL 18 with summarize_wal on: incremental with no setting
// once a full exists, full on request ({"kind": "full"}), kind and parent in the API, the
// bytes the server sent in /metrics; a bad kind is 400 and starts nothing.
import { describe, it, expect, afterEach } from "vitest";
import { startPostgres } from "./harness/postgres.ts";
import { backupThroughApi, startTestDaemon } from "./harness/daemon.ts";
import { parsePrometheus } from "./harness/prometheus.ts";
import type { Cleanup } from "./harness/backup.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("the daemon's incremental backups", () => {
  it("are taken by default on PostgreSQL 18, shown in the API and /metrics, and a full is one request away", async () => {
    const pg = await startPostgres({ version: 18, conf: { summarize_wal: "on" } });
    cleanups.push(() => pg.destroy());
    await pg.sql()`create table t as select g, repeat('x', 100) as pad from generate_series(1, 100000) g`;
    // Hint bits set now, not by the update's scan later: with data checksums (initdb's default
    // on 18) setting them is logged, and would mark every page changed.
    await pg.sql()`vacuum freeze t`;
    const d = await startTestDaemon(cleanups, [{ name: "db1", pg }]);

    expect((await backupThroughApi(d, "db1")).state).toBe("succeeded");
    await pg.sql()`update t set pad = 'changed' where g % 1000 = 0`;
    expect((await backupThroughApi(d, "db1")).state).toBe("succeeded");
    const bad = await d.call("POST", "/v1/clusters/db1/backups", { body: JSON.stringify({ kind: "weekly" }), headers: { "content-type": "application/json" } });
    expect(bad.status).toBe(400);
    expect((await backupThroughApi(d, "db1", 180_000, JSON.stringify({ kind: "full" }))).state).toBe("succeeded");

    const { backups } = await d.get<{ backups: { id: string; kind: string; parent: string | null; bytes: number; sentBytes: number }[] }>("/v1/clusters/db1/backups");
    expect(backups.map((b) => [b.kind, b.parent])).toEqual([["full", null], ["incremental", backups[0]!.id], ["full", null]]);
    expect(backups[1]!.sentBytes).toBeLessThan(backups[1]!.bytes / 4);
    expect(backups[0]!.sentBytes).toBe(backups[0]!.bytes);

    // The newest is the full one; the metrics say so, and how much the server sent for it.
    const text = await (await d.call("GET", "/metrics")).text();
    const metrics = parsePrometheus(text);
    expect(metrics.get("klio_backup_last_incremental")).toEqual([{ labels: { cluster: "db1" }, value: 0 }]);
    expect(metrics.get("klio_backup_last_sent_bytes")![0]!.value).toBe(backups[2]!.sentBytes);
  }, 300_000);
});
