// Retention on a real repository: a dry run changes nothing; pinned backups stay; WAL below the
// oldest kept backup goes and every kept backup still restores, to its end and to a time
// between backups; with an offsite copy nothing goes before the copy has it.
import { describe, it, expect, afterEach } from "vitest";
import { readdirSync } from "node:fs";
import path from "node:path";
import { runKlioAsync } from "./harness/klio.ts";
import { klio, restoreAndStart, streamingServer, type Cleanup } from "./harness/backup.ts";
import { waitForFlush } from "./harness/wal.ts";
import { startS3 } from "./harness/s3.ts";
import { parseLsn, segmentNumber } from "../src/pg/lsn.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const SEG = 16 * 1024 * 1024;

/** The segments in the archive (whatever form each is in), and their numbers. */
function walSegments(repo: string): { name: string; segno: bigint }[] {
  const names = new Set(readdirSync(path.join(repo, "wal", "db1")).filter((n) => /^[0-9A-F]{24}/.test(n)).map((n) => n.slice(0, 24)));
  return [...names].sort().map((n) => ({ name: n, segno: (BigInt(`0x${n.slice(8, 16)}`) << 8n) + BigInt(`0x${n.slice(16, 24)}`) }));
}

const from = (repo: string, segno: bigint) => walSegments(repo).filter((s) => s.segno >= segno).map((s) => s.name);

const ids = async (repo: string) => JSON.parse(await klio(["backup", "list", "--repo", repo, "--json"])).backups.map((b: { id: string }) => b.id);

describe("retention apply", () => {
  it("deletes what no rule keeps, keeps pinned backups, and leaves every kept backup restorable", { timeout: 600_000 }, async () => {
    const { pg, repo, receiver } = await streamingServer(cleanups);
    const sql = pg.sql();
    await sql`create table marks (n int, at timestamptz default clock_timestamp())`;
    const backups: { id: string; startLsn: string }[] = [];
    let between = "";
    for (let n = 1; n <= 4; n++) {
      await sql`insert into marks (n) values (${n})`;
      for (let k = 0; k < 3; k++) {
        await sql`insert into marks (n) select ${n} from generate_series(1, 1000)`;
        await sql`select pg_switch_wal()`;
      }
      const b = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"]));
      backups.push({ id: b.id, startLsn: b.startLsn });
      if (n === 3) {
        await sql`insert into marks (n) values (30)`;
        between = (await sql`select clock_timestamp()::text as t`)[0]!.t;
        await new Promise((r) => setTimeout(r, 1100));
      }
    }
    await sql`insert into marks (n) values (99)`;
    await sql`select pg_switch_wal()`;
    // Everything written is archived; then the receiver stops, so that the segment listings
    // compared below are the test's own (a running receiver may complete one more meanwhile).
    const [{ lsn }] = await sql`select pg_current_wal_lsn()::text as lsn`;
    await waitForFlush(repo, lsn);
    expect(await receiver.stop()).toBe(0);

    expect((await runKlioAsync(["retention", "apply", "--repo", repo])).stdout).toBe("db1: no retention policy here, nothing deleted (set one with klio retention set)\n");
    expect((await runKlioAsync(["retention", "set", "--repo", repo, "--cluster", "db1", "--full", "0"])).code).toBe(2);
    await klio(["retention", "set", "--repo", repo, "--cluster", "db1", "--full", "2"]);
    await klio(["backup", "pin", backups[0]!.id, "--repo", repo]);
    expect(await klio(["retention", "get", "--repo", repo])).toMatch(/db1: 2 full, at least 1; pinned: /);
    const listed = JSON.parse(await klio(["backup", "list", "--repo", repo, "--json"])).backups;
    expect(listed.map((b: { pinned: boolean }) => b.pinned)).toEqual([true, false, false, false]);

    const walBefore = walSegments(repo).length;
    const dry = JSON.parse(await klio(["retention", "apply", "--repo", repo, "--dry-run", "--json"]));
    expect(dry.results[0].deleted).toEqual([backups[1]!.id]);
    expect(await ids(repo)).toHaveLength(4);
    expect(walSegments(repo).length).toBe(walBefore);

    // The pinned oldest stays, so does the WAL from its start; the second backup goes.
    const pinnedFrom = segmentNumber(parseLsn(backups[0]!.startLsn), SEG);
    const needed = from(repo, pinnedFrom);
    await klio(["retention", "apply", "--repo", repo]);
    expect(await ids(repo)).toEqual([backups[0]!.id, backups[2]!.id, backups[3]!.id]);
    expect(from(repo, pinnedFrom)).toEqual(needed);
    expect(walSegments(repo).every((s) => s.segno >= pinnedFrom)).toBe(true);

    // Unpinned, the oldest goes too, and the WAL below the third backup's start with it.
    await klio(["backup", "unpin", backups[0]!.id, "--repo", repo]);
    const applied = await klio(["retention", "apply", "--repo", repo]);
    expect(applied).toMatch(/deleted 1 backups; WAL: deleted \d+ files/);
    expect(await ids(repo)).toEqual([backups[2]!.id, backups[3]!.id]);
    const first = segmentNumber(parseLsn(backups[2]!.startLsn), SEG);
    const left = walSegments(repo);
    expect(left.every((s) => s.segno >= first)).toBe(true);
    expect(left.some((s) => s.segno === first)).toBe(true);
    expect(left.length).toBeLessThan(needed.length - 5);

    // Every kept backup restores: to the end of the WAL, and the older one to a time between the two.
    for (const b of [backups[2]!, backups[3]!]) {
      const restored = await restoreAndStart(cleanups, 15, repo, ["--backup-id", b.id]);
      expect((await restored.sql()`select max(n) as m from marks`)[0]!.m).toBe(99);
      await restored.destroy();
    }
    const atTime = await restoreAndStart(cleanups, 15, repo, ["--backup-id", backups[2]!.id, "--target-time", between]);
    expect((await atTime.sql()`select max(n) as m from marks`)[0]!.m).toBe(30);
    expect((await runKlioAsync(["repo", "maintenance", "--repo", repo])).code).toBe(0);
    expect((await runKlioAsync(["backup", "verify", backups[2]!.id, "--repo", repo])).code).toBe(0);
  });

  it("deletes nothing the offsite copy lacks, and refuses to run blind when the repository has one", { timeout: 300_000 }, async () => {
    const s3 = await startS3(cleanups);
    const { pg, repo, receiver } = await streamingServer(cleanups);
    const sql = pg.sql();
    const to = `s3://${s3.bucket}/r`;
    const first = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"])).id;
    await sql`select pg_switch_wal()`;
    await klio(["offsite", "sync", "--repo", repo, "--to", to, ...s3.flags, "--once"]);
    // Two more backups, not copied.
    await sql`create table t as select 1`;
    await sql`select pg_switch_wal()`;
    const secondRun = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"]));
    const second = secondRun.id;
    const third = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"])).id;
    await klio(["retention", "set", "--repo", repo, "--cluster", "db1", "--full", "1"]);

    const blind = await runKlioAsync(["retention", "apply", "--repo", repo]);
    expect(blind.code).toBe(2);
    expect(blind.stderr).toMatch(new RegExp(`is copied to ${to}/: give --offsite ${to}/ and its --s3-… flags`));
    expect(await ids(repo)).toHaveLength(3);

    // The first is in the copy and goes; the second is not and waits, with the WAL it needs;
    // older WAL goes only as far as the copy has it.
    const secondFrom = segmentNumber(parseLsn(secondRun.startLsn), SEG);
    const needed = from(repo, secondFrom);
    const r = JSON.parse(await klio(["retention", "apply", "--repo", repo, "--offsite", to, ...s3.flags, "--json"]));
    expect(r.results[0].deleted).toEqual([first]);
    expect(r.results[0].waitingForOffsite).toEqual([second]);
    expect(r.results[0].wal.waitingForOffsite).toBeGreaterThan(0);
    expect(await ids(repo)).toEqual([second, third]);
    // The receiver still runs and may have completed a segment since: what was needed is all
    // still there (inclusion, not equality).
    expect(from(repo, secondFrom)).toEqual(expect.arrayContaining(needed));

    // Once copied, it goes; the deletion reaches the copy with the next pass.
    await klio(["offsite", "sync", "--repo", repo, "--to", to, ...s3.flags, "--once"]);
    const r2 = JSON.parse(await klio(["retention", "apply", "--repo", repo, "--offsite", to, ...s3.flags, "--json"]));
    expect(r2.results[0].deleted).toEqual([second]);
    expect(await ids(repo)).toEqual([third]);
    await klio(["repo", "maintenance", "--repo", repo]);
    await receiver.stop(); // nothing moves locally from here on: the copy can be compared whole
    await klio(["offsite", "sync", "--repo", repo, "--to", to, ...s3.flags, "--once"]);
    expect(JSON.parse(await klio(["backup", "list", "--repo", to, ...s3.flags, "--json"])).backups.map((b: { id: string }) => b.id)).toEqual([third]);
    const check = await runKlioAsync(["repo", "check", "--repo", to, ...s3.flags, "--read-data"]);
    expect(check.code, check.stdout).toBe(0);
    const verify = await runKlioAsync(["offsite", "verify", "--repo", repo, "--to", to, ...s3.flags]);
    expect(verify.code, verify.stdout).toBe(0);
  });
});
