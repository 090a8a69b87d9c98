// Backups and maintenance at the same time, in a loop, on a real PostgreSQL: before each
// round the previous backups are mostly deleted, so the backup that runs deduplicates nearly
// every chunk against data that maintenance, started at a random moment beside it, is
// freeing. Every backup that completed must then restore, with the rows it had.
import { describe, it, expect, afterEach } from "vitest";
import { runKlioAsync, startKlio } from "./harness/klio.ts";
import { klio, pgbench, restoreAndStart, streamingServer, streamWal, type Cleanup } from "./harness/backup.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A small seeded generator: the same interleavings on every run, different in each round. */
function rng(seed: number): () => number {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
}

describe("backups and maintenance running together", () => {
  it("lose nothing: every completed backup restores with its rows", { timeout: 600_000 }, async () => {
    const { pg, repo } = await streamingServer(cleanups);
    const sql = pg.sql();
    await pgbench(pg, ["-i", "-q", "-s", "3"]);
    await sql`create table marks (round int)`;
    const random = rng(7);
    const kept = new Map<string, number>();
    let deferredRuns = 0;

    for (let round = 1; round <= 6; round++) {
      await sql`insert into marks values (${round})`;
      await pgbench(pg, ["-t", "150", "-c", "2"]);
      // Most of what the repository holds becomes garbage: the backup below finds it all there.
      // Rounds 3 and 5: everything (nothing protects the chunks but the running backup's session).
      for (const [id] of kept) {
        if (round === 3 || round === 5 || random() < 0.6) {
          await klio(["backup", "delete", id, "--repo", repo]);
          kept.delete(id);
        }
      }
      const backup = runKlioAsync(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"]);
      await new Promise((r) => setTimeout(r, Math.floor(random() * 1500)));
      const maintenance = await runKlioAsync(["repo", "maintenance", "--repo", repo, "--json"]);
      const done = await backup;
      expect(done.code, done.stderr).toBe(0);
      expect([0, 3], maintenance.stderr).toContain(maintenance.code);
      if (maintenance.code === 3) deferredRuns++;
      kept.set(JSON.parse(done.stdout).id, round);
    }
    // One more run with nothing else going on frees what waited for the last backups.
    const last = await runKlioAsync(["repo", "maintenance", "--repo", repo, "--json"]);
    expect(last.code, last.stderr).toBe(0);
    expect(JSON.parse(last.stdout).deferred).toBeNull();

    const check = await runKlioAsync(["repo", "check", "--repo", repo, "--read-data"]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).not.toMatch(/note:/);
    const listed = JSON.parse(await klio(["backup", "list", "--repo", repo, "--json"])).backups.map((b: { id: string }) => b.id);
    expect(listed.sort()).toEqual([...kept.keys()].sort());
    for (const [id, round] of kept) {
      expect((await runKlioAsync(["backup", "verify", id, "--repo", repo])).code).toBe(0);
      const restored = await restoreAndStart(cleanups, 15, repo, ["--backup-id", id, "--target-immediate"]);
      const [row] = await restored.sql()`select max(round) as m, (select count(*) from pgbench_accounts)::int as accounts from marks`;
      expect({ id, round: row!.m, accounts: row!.accounts }).toEqual({ id, round, accounts: 300000 });
      await restored.destroy();
    }
    expect(deferredRuns).toBe(0);
  });

  it("a backup held up past maintenance's wait commits restorable at once, bringing back what it used", { timeout: 300_000 }, async () => {
    const { pg, repo, receiver } = await streamingServer(cleanups);
    await pgbench(pg, ["-i", "-q", "-s", "3"]);
    const first = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"]));
    await klio(["backup", "delete", first.id, "--repo", repo]);
    // The next backup finds every chunk in the repository, garbage now. With the receiver
    // stopped it waits for its WAL, having deduplicated everything: there it is frozen.
    await receiver.stop();
    const second = startKlio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json", "--wal-timeout", "300"]);
    cleanups.push(async () => void (await second.kill9()));
    await second.waitForLog(/backup\.waiting_for_wal/, 120_000);
    second.child.kill("SIGSTOP");
    const waited = await runKlioAsync(["repo", "maintenance", "--repo", repo, "--max-wait", "2s", "--json"]);
    expect(waited.code, waited.stderr).toBe(3);
    const report = JSON.parse(waited.stdout);
    expect(report.snapshots).toBe(0);
    expect(report.chunks.dropped).toBeGreaterThan(1000);
    expect(report.deferred.sessions.join()).toMatch(/backup db1/);
    streamWal(cleanups, pg, repo);
    second.child.kill("SIGCONT");
    expect(await second.exited, second.log()).toBe(0);
    expect(second.log()).toMatch(/backup\.kept_from_maintenance/);
    const [{ id }] = JSON.parse(await klio(["backup", "list", "--repo", repo, "--json"])).backups;
    // Restorable before maintenance finishes, and after.
    expect((await runKlioAsync(["backup", "verify", id, "--repo", repo])).code).toBe(0);
    const done = await runKlioAsync(["repo", "maintenance", "--repo", repo, "--json"]);
    expect(done.code, done.stderr).toBe(0);
    // It finishes the plan the first run left; the pack stays: the backup uses it.
    expect(JSON.parse(done.stdout)).toMatchObject({ resumed: expect.any(String), deferred: null, snapshots: 1 });
    expect((await runKlioAsync(["backup", "verify", id, "--repo", repo])).code).toBe(0);
    const check = await runKlioAsync(["repo", "check", "--repo", repo, "--read-data"]);
    expect(check.code, check.stdout).toBe(0);
    const restored = await restoreAndStart(cleanups, 15, repo, ["--backup-id", id, "--target-immediate"]);
    expect((await restored.sql()`select count(*)::int as n from pgbench_accounts`)[0]!.n).toBe(300000);
  });
});
