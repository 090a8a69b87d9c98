// Backups of one cluster never collide, on real PostgreSQL 15 and 18: `klio backup run`s
// started in simultaneous pairs — one backs up, the other exits 4 at once with one line naming
// it (or, with --wait, waits and backs up after it) — and the daemon's scheduled and API
// backups racing CLI ones: every run that succeeds has a backup id of its own, listed by
// `backup list` and restorable. The pairs run the single executable (node scripts/build.mjs
// --if-stale): it starts in a tenth of the time of the sources, so a pair really starts together.
import { describe, it, expect, afterEach } from "vitest";
import { chmodSync } from "node:fs";
import { PG_VERSIONS, startPostgres, type PgServer, type PgVersion } from "./harness/postgres.ts";
import { runKlioAsync, startKlio, waitFor, type KlioRun } from "./harness/klio.ts";
import { klio, restoreAndStart, streamingServer, type Cleanup } from "./harness/backup.ts";
import { startTestDaemon } from "./harness/daemon.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Simultaneous pairs without --wait (40 runs), then pairs with --wait. */
const PAIRS = 20;
const WAIT_PAIRS = 2;

function backupRun(pg: PgServer, repo: string, extra: string[] = []): Promise<KlioRun> {
  return runKlioAsync(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json", "--wal-timeout", "60", ...extra], { bin: true, timeoutMs: 120_000 });
}

const BUSY_LINE = (holder: string) => new RegExp(`^klio: a backup of cluster db1 is already running \\(pid \\d+, since \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ, ${holder}\\)$`);

/** The restored cluster (up to its backup's consistency point) holds exactly the marks before `mark`. */
async function expectRestoredAt(version: PgVersion, repo: string, id: string, mark: number): Promise<void> {
  const restored = await restoreAndStart(cleanups, version, repo, ["--backup-id", id, "--target-immediate"]);
  const [row] = await restored.sql()`select max(mark) as m, count(*)::int as n from marks`;
  expect({ id, mark: row!.m, n: row!.n }).toEqual({ id, mark, n: mark + 1 });
  await restored.destroy(); // its get-wal prefetcher too (harness)
}


describe.each(PG_VERSIONS)("concurrent backups of one cluster on PostgreSQL %i", (version) => {
  it("of two started together one backs up and the other exits 4 at once; with --wait both back up; every id its own", { timeout: 420_000 }, async () => {
    const { pg, repo, receiver } = await streamingServer(cleanups, [], version);
    const sql = pg.sql();
    await sql`create table marks (mark int)`;

    /** Backup id → the mark the cluster had last when it was taken. */
    const taken = new Map<string, number>();
    const ok: string[] = [];
    let refused = 0;
    const record = (r: KlioRun, mark: number) => {
      if (r.code === 0) {
        const id = JSON.parse(r.stdout).id as string;
        ok.push(id);
        taken.set(id, mark);
      }
    };
    for (let mark = 0; mark < PAIRS; mark++) {
      await sql`insert into marks values (${mark})`;
      const pair = await Promise.all([backupRun(pg, repo), backupRun(pg, repo)]);
      for (const r of pair) {
        expect([0, 4], `pair ${mark}: ${r.stderr}`).toContain(r.code);
        record(r, mark);
        if (r.code === 4) {
          refused++;
          // One line, and nothing before it: it read nothing and connected to nothing.
          expect(r.stderr.trim().split("\n")).toHaveLength(1);
          expect(r.stderr.trim()).toMatch(BUSY_LINE("klio backup run"));
          expect(r.stdout).toBe("");
        }
      }
      expect(pair.some((r) => r.code === 0), `pair ${mark}: ${pair.map((r) => r.stderr).join("\n")}`).toBe(true);
    }
    // They did start together: most pairs met the lock.
    expect(refused).toBeGreaterThanOrEqual(PAIRS / 2);

    for (let p = 0; p < WAIT_PAIRS; p++) {
      const mark = PAIRS + p;
      await sql`insert into marks values (${mark})`;
      const pair = await Promise.all([backupRun(pg, repo, ["--wait"]), backupRun(pg, repo, ["--wait"])]);
      for (const r of pair) {
        expect(r.code, r.stderr).toBe(0);
        record(r, mark);
      }
      expect(pair.some((r) => /backup\.waiting/.test(r.stderr) && /already running/.test(r.stderr))).toBe(true);
    }

    // Every successful run has its own id; the repository lists exactly those, in the order taken.
    expect(new Set(ok).size).toBe(ok.length);
    const backups: { id: string; startTime: string }[] = JSON.parse(await klio(["backup", "list", "--repo", repo, "--json"])).backups;
    expect(backups.map((b) => b.id).sort()).toEqual([...ok].sort());
    // Listed by id, which is the order they were taken in.
    const starts = backups.map((b) => b.startTime);
    expect([...starts].sort()).toEqual(starts);
    expect(await klio(["repo", "check", "--repo", repo])).toMatch(/no problems/);

    // Restorable: the first backup, and both of the last --wait pair.
    await receiver.stop();
    for (const id of [ok[0]!, ...ok.slice(-2)]) await expectRestoredAt(version, repo, id, taken.get(id)!);
  });
});

describe("the daemon's backups and CLI ones", () => {
  it("share the cluster's lock: the API answers 409, a scheduled run is skipped with the reason, a CLI run exits 4; every backup its own id", { timeout: 300_000 }, async () => {
    const pg = await startPostgres({ version: 15 });
    cleanups.push(() => pg.destroy());
    const d = await startTestDaemon(cleanups, [{ name: "db1", pg, schedule: "every 10s" }]);
    await waitFor("the receiver streaming", async () => ((await d.get("/v1/clusters/db1")).receiver.state === "streaming" ? true : undefined), 60_000);
    const sql = pg.sql();
    await sql`create table marks (mark int)`;
    await sql`insert into marks values (0)`;
    const cliIds: string[] = [];

    // A CLI backup holds the lock (stopped mid-way): the API refuses, the schedule skips.
    const cli = await waitFor("a CLI backup past the lock", async () => {
      const k = startKlio(["backup", "run", "--repo", d.repo, "--cluster", "db1", "--pg", pg.connString(), "--json"], {}, { bin: true });
      cleanups.push(async () => void (await k.kill9()));
      // A scheduled backup may hold the lock just now: then this one exits 4, and we try again.
      return await k.waitForLog(/backup\.start/).then(() => k, async () => (await k.exited) === 4 ? undefined : Promise.reject(new Error(k.log())));
    }, 180_000);
    cli.child.kill("SIGSTOP");
    try {
      const r = await d.call("POST", "/v1/clusters/db1/backups", { body: "{}" });
      expect(r.status).toBe(409);
      const body = await r.json();
      expect(body.error).toBe("busy");
      expect(body.detail).toMatch(new RegExp(`^a backup of cluster db1 is already running \\(pid ${cli.child.pid}, since .*, klio backup run\\)$`));
      const skipped = await waitFor("a scheduled backup skipped", async () =>
        (await d.get("/v1/clusters/db1/jobs")).jobs.find((j: any) => j.trigger === "schedule" && j.error?.code === "busy"), 120_000);
      expect(skipped.state).toBe("failed");
      expect(skipped.error.message).toMatch(new RegExp(`^scheduled backup skipped: a backup of cluster db1 is already running \\(pid ${cli.child.pid}, `));
    } finally {
      cli.child.kill("SIGCONT");
    }
    expect(await cli.exited).toBe(0);
    cliIds.push(JSON.parse(cli.log().slice(cli.log().indexOf("{\n"))).id);

    // The daemon holds the lock (an API backup, the daemon stopped mid-way): the CLI exits 4 naming it.
    await waitFor("an API backup started", async () => {
      const r = await d.call("POST", "/v1/clusters/db1/backups", { body: "{}" });
      // 409: a scheduled backup is running; once it ends, the API one starts.
      if (r.status === 409) return void (await r.body?.cancel());
      expect(r.status).toBe(202);
      return await r.json();
    }, 180_000);
    d.process.child.kill("SIGSTOP");
    try {
      const r = await runKlioAsync(["backup", "run", "--repo", d.repo, "--cluster", "db1", "--pg", pg.connString()], { bin: true });
      expect(r.code).toBe(4);
      expect(r.stderr.trim()).toMatch(new RegExp(`^klio: a backup of cluster db1 is already running \\(pid ${d.process.child.pid}, since .*, klio server start, (API|scheduled) backup\\)$`));
    } finally {
      d.process.child.kill("SIGCONT");
    }

    // CLI backups started when the schedule fires: whoever comes second steps aside.
    for (let round = 1; round <= 4; round++) {
      await sql`insert into marks values (${round})`;
      const next = Date.parse((await d.get("/v1/clusters/db1")).nextBackupAt);
      await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())));
      const r = await runKlioAsync(["backup", "run", "--repo", d.repo, "--cluster", "db1", "--pg", pg.connString(), "--json"], { bin: true });
      expect([0, 4], r.stderr).toContain(r.code);
      if (r.code === 0) cliIds.push(JSON.parse(r.stdout).id);
      else expect(r.stderr.trim()).toMatch(BUSY_LINE("klio server start, (API|scheduled) backup"));
    }
    await waitFor("no backup job running", async () => ((await d.get("/v1/clusters/db1/jobs")).jobs.some((j: any) => j.state === "running") ? undefined : true), 120_000);

    const jobs = (await d.get("/v1/clusters/db1/jobs")).jobs;
    for (const j of jobs.filter((j: any) => j.state === "failed")) expect(j.error.code, JSON.stringify(j)).toBe("busy");
    const daemonIds: string[] = jobs.filter((j: any) => j.state === "succeeded").map((j: any) => j.backupId);
    expect(daemonIds.length).toBeGreaterThan(0);
    const all = [...cliIds, ...daemonIds];
    expect(new Set(all).size).toBe(all.length);
    // The schedule keeps firing: the daemon stops before the repository is listed, and a backup
    // it started after the jobs were read may be there too, newer than every one of them.
    expect(await d.process.stop()).toBe(0);
    const listed: string[] = JSON.parse(await klio(["backup", "list", "--repo", d.repo, "--json"])).backups.map((b: { id: string }) => b.id);
    expect(listed).toEqual(expect.arrayContaining(all));
    const newest = [...all].sort().at(-1)!;
    expect(listed.filter((id) => !all.includes(id) && id <= newest)).toEqual([]);

    // Restorable: the first CLI backup (mark 0 only), and the newest scheduled one. PostgreSQL's
    // restore_command runs as its user: let it through the daemon's directory to the repository,
    // with the daemon stopped (above), so that no file it writes later (0640) is beyond its reach.
    chmodSync(d.dir, 0o755);
    await expectRestoredAt(15, d.repo, cliIds[0]!, 0);
    const restored = await restoreAndStart(cleanups, 15, d.repo, ["--backup-id", daemonIds[0]!, "--target-immediate"]);
    expect((await restored.sql()`select count(*)::int as n from marks`)[0]!.n).toBeGreaterThanOrEqual(1);
    await restored.destroy(); // its get-wal prefetcher too (harness)
  });
});
