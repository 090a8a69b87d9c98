// The repository's file system fills up (a small tmpfs, filled on purpose) under the daemon:
// the receiver stops acknowledging (the server keeps its WAL in the slot) and says so in its
// status, log and metrics; a backup fails cleanly and leaves nothing; once space is freed,
// streaming resumes by itself and the archive has no gap — a backup taken before the disk
// filled restores with the rows written while it was full.
import { describe, it, expect, afterEach } from "vitest";
import { execFileSync } from "node:child_process";
import { readdirSync, rmSync, statfsSync } from "node:fs";
import path from "node:path";
import { startPostgres } from "./harness/postgres.ts";
import { runKlioAsync, waitFor } from "./harness/klio.ts";
import { restoreAndStart, tempDir, type Cleanup } from "./harness/backup.ts";
import { backupThroughApi, startTestDaemon } from "./harness/daemon.ts";
import { parsePrometheus } from "./harness/prometheus.ts";
import { parseLsn } from "../src/pg/lsn.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const MB = 1024 * 1024;

function files(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).map(String);
}

describe("a full disk", () => {
  it("holds WAL back at the server, fails a backup cleanly, and recovers with no gap", { timeout: 600_000 }, async () => {
    const mount = tempDir(cleanups, "klio-tmpfs-");
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=160m,mode=0755", "tmpfs", mount]);
    cleanups.push(() => void execFileSync("umount", ["-l", mount]));
    const pg = await startPostgres({ version: 15 });
    cleanups.push(() => pg.destroy());
    const sql = pg.sql();
    await sql`create table marks (n int, pad text)`;
    const d = await startTestDaemon(cleanups, [{ name: "db1", pg }], { repository: path.join(mount, "repo"), disk: { low_space_percent: 30 } });
    await waitFor("streaming", async () => (await d.get("/v1/clusters/db1")).receiver.state === "streaming", 60_000);
    const before = await backupThroughApi(d, "db1");
    expect(before.state, JSON.stringify(before.error)).toBe("succeeded");

    // Leave 24 MB: less than the WAL about to come.
    const st = statfsSync(mount);
    const filler = path.join(mount, "filler");
    execFileSync("fallocate", ["-l", String(Number(st.bavail) * Number(st.bsize) - 24 * MB), filler]);
    await sql`insert into marks select 1, repeat(md5(random()::text), 30) from generate_series(1, 60000)`;
    const full = await waitFor("the receiver to report a full disk", async () => {
      const c = await d.get("/v1/clusters/db1");
      return c.receiver.state === "disk-full" ? c : undefined;
    }, 120_000);
    expect(full.receiver.lastError).toMatchObject({ code: "disk-full", message: expect.stringMatching(/file system is full.*not acknowledged.*slot/) });
    expect(d.process.log()).toMatch(/"wal.disk_full"/);
    // It stays so, without knocking at the server every few seconds: no flapping to "streaming".
    for (let i = 0; i < 8; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      expect((await d.get("/v1/clusters/db1")).receiver.state).toBe("disk-full");
    }
    expect(d.process.log().match(/"wal.disk_full"/g)).toHaveLength(1);
    // The server keeps what was not acknowledged.
    const [slot] = await sql`select restart_lsn, pg_current_wal_lsn() - restart_lsn as held, pg_walfile_name(restart_lsn) as file from pg_replication_slots`;
    expect(Number(slot!.held)).toBeGreaterThan(16 * MB);
    expect((await sql`select name from pg_ls_waldir() where name = ${slot!.file}`).length).toBe(1);
    const metrics = await waitFor("the metrics to show it", async () => {
      const m = parsePrometheus(await (await d.call("GET", "/metrics")).text());
      return m.get("klio_disk_low")?.[0]?.value === 1 ? m : undefined;
    }, 60_000);
    expect(metrics.get("klio_receiver_disk_full")![0]!.value).toBe(1);
    expect(d.process.log()).toMatch(/"disk.low_space"/);

    // A backup now fails with a clear error and leaves nothing behind.
    const failed = await backupThroughApi(d, "db1");
    expect(failed).toMatchObject({ state: "failed", error: { code: "disk-full" } });
    expect(files(path.join(d.repo, "packs")).filter((f) => f.endsWith(".klio-tmp"))).toEqual([]);
    expect((await d.get("/v1/clusters/db1/backups")).backups).toHaveLength(1);

    // More WAL while full; then space comes back, and the receiver with it.
    await sql`insert into marks select 2, 'while full' from generate_series(1, 1000)`;
    rmSync(filler);
    await waitFor("streaming again", async () => (await d.get("/v1/clusters/db1")).receiver.state === "streaming", 120_000);
    await sql`select pg_switch_wal()`;
    // LSNs compare as numbers ("0/10000000" sorts before "0/9000000" as text).
    const end = parseLsn((await sql`select pg_current_wal_lsn()::text as l`)[0]!.l);
    await waitFor("the archive to catch up", async () => {
      const w = await d.get("/v1/clusters/db1/wal");
      return w.receiver.flushedLsn && parseLsn(w.receiver.flushedLsn) >= end ? w : undefined;
    }, 180_000);
    const wal = await d.get("/v1/clusters/db1/wal");
    expect(wal.archive.gaps).toEqual([]);
    // Every segment from the first to the last is there.
    const segnos = [...new Set(readdirSync(path.join(d.repo, "wal", "db1")).filter((n) => /^[0-9A-F]{24}/.test(n)).map((n) => parseInt(n.slice(16, 24), 16) + 256 * parseInt(n.slice(8, 16), 16)))].sort((a, b) => a - b);
    expect(segnos.at(-1)! - segnos[0]! + 1).toBe(segnos.length);

    const check = await runKlioAsync(["repo", "check", "--repo", d.repo, "--read-data"]);
    expect(check.code, check.stdout).toBe(0);
    const restored = await restoreAndStart(cleanups, 15, d.repo, ["--backup-id", before.backupId]);
    const counts = await restored.sql()`select n, count(*)::int as c from marks group by n order by n`;
    expect(counts.map((r) => [r.n, r.c])).toEqual([[1, 60000], [2, 1000]]);
  });
});
