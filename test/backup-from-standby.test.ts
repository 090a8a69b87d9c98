// A base backup taken from a hot standby restores: the receiver streams WAL from the primary,
// the standby serves BASE_BACKUP, and the backup is recorded once the archive holds the WAL
// up to the standby's end position.
import { describe, it, expect, afterEach } from "vitest";
import { PG_VERSIONS, startPostgres, startStandby } from "./harness/postgres.ts";
import { waitFor } from "./harness/klio.ts";
import { klio, restoreAndStart, streamWal, tempDir, type Cleanup } from "./harness/backup.ts";
import { waitForFlush } from "./harness/wal.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe.each(PG_VERSIONS)("backup from a standby on PostgreSQL %i", (version) => {
  it("is taken on the standby and restores with the primary's WAL", { timeout: 300_000 }, async () => {
    const primary = await startPostgres({ version, conf: { wal_keep_size: "'256MB'" } });
    cleanups.push(() => primary.destroy());
    const standby = await startStandby(primary);
    cleanups.push(() => standby.destroy());
    const sql = primary.sql();
    await sql`create table t (id int)`;
    await sql`insert into t select generate_series(1, 5000)`;

    const repo = tempDir(cleanups, "klio-repo-");
    await klio(["init", "--repo", repo]);
    const receiver = streamWal(cleanups, primary, repo);
    await receiver.waitForLog(/wal.streaming/);
    const ssql = standby.sql();
    await waitFor("the standby to replay the table", async () => Number((await ssql`select count(*) as n from t`.catch(() => [{ n: 0 }]))[0]!.n) === 5000);

    // The standby's backup ends mid-segment; the primary keeps writing, so the archive gets there.
    const writer = setInterval(() => void sql`insert into t values (-1)`.catch(() => {}), 200);
    let backup;
    try {
      backup = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", standby.connString(), "--json", "--wal-timeout", "120"]));
    } finally {
      clearInterval(writer);
    }
    expect(backup.fromStandby).toBe(true);
    await sql`insert into t values (6000)`;
    const [{ end }] = await sql`select pg_current_wal_lsn()::text as end`;
    await waitForFlush(repo, end);

    const restored = await restoreAndStart(cleanups, version, repo, []);
    const rows = await restored.sql()`select count(*) filter (where id between 1 and 5000) as old, count(*) filter (where id = 6000) as newest from t`;
    expect({ old: Number(rows[0]!.old), newest: Number(rows[0]!.newest) }).toEqual({ old: 5000, newest: 1 });
  });
});
