// Point-in-time restore on real PostgreSQL 15 and 18: a backup taken under pgbench load,
// restored for every kind of recovery target, comes up with exactly the rows committed before
// the target and none after — including, with no target, rows whose WAL the receiver still
// holds in its .partial segment.
import { describe, it, expect, afterEach } from "vitest";
import { rmSync, readdirSync, existsSync } from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { PG_VERSIONS, binDir, pgTempDir, startPostgres } from "./harness/postgres.ts";
import { runKlioAsync } from "./harness/klio.ts";
import { klio, pgbench, restoreAndStart, streamWal, tempDir, type Cleanup } from "./harness/backup.ts";
import { waitForFlush } from "./harness/wal.ts";
import { parseLsn, segmentNumber, walFileName } from "../src/pg/lsn.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe.each(PG_VERSIONS)("point-in-time restore on PostgreSQL %i", (version) => {
  it("restores a backup taken under load to each kind of target", { timeout: 600_000 }, async () => {
    const pg = await startPostgres({ version, conf: { wal_keep_size: "'512MB'" } });
    cleanups.push(() => pg.destroy());
    const sql = pg.sql();
    const tsDir = pgTempDir(`klio-ts-${version}-`);
    cleanups.push(() => rmSync(tsDir, { recursive: true, force: true }));
    await sql.unsafe(`create tablespace ts1 location '${tsDir}'`);
    await sql`create table in_ts (id int) tablespace ts1`;
    await sql`insert into in_ts select generate_series(1, 1000)`;
    await sql`create table marks (id int primary key, note text)`;

    const repo = tempDir(cleanups, "klio-repo-");
    await klio(["init", "--repo", repo]);
    const receiver = streamWal(cleanups, pg, repo);
    await receiver.waitForLog(/wal.streaming/);
    await pgbench(pg, ["-i", "-s", "2", "-q"]);

    // The backup runs while pgbench writes.
    const load = pgbench(pg, ["-c", "2", "-T", "8", "-n"]);
    const backup = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"]));
    await load;
    expect(backup.id).toMatch(/^\d{8}T\d{6}Z$/);
    expect(backup.tablespaces).toEqual([expect.objectContaining({ name: "ts1", location: tsDir })]);
    const listed = JSON.parse(await klio(["backup", "list", "--repo", repo, "--json"]));
    expect(listed.backups.map((b: { id: string }) => b.id)).toEqual([backup.id]);
    expect((await runKlioAsync(["backup", "verify", backup.id, "--repo", repo])).code).toBe(0);

    // Rows around the targets: 1 before, 2 at, 3 after; 4 only in the newest (partial) WAL.
    await sql`insert into marks values (1, 'before')`;
    const [{ xid }] = await sql.begin(async (tx) => {
      await tx`insert into marks values (2, 'at the target')`;
      return tx`select txid_current()::text as xid`;
    });
    const [{ lsn }] = await sql`select pg_current_wal_lsn()::text as lsn`;
    const [{ t }] = await sql`select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || 'Z' as t`;
    await sql`select pg_create_restore_point('before-row-3')`;
    await new Promise((r) => setTimeout(r, 1100));
    await sql`insert into marks values (3, 'after')`;
    await sql`select pg_switch_wal()`;
    await sql`insert into marks values (4, 'newest')`;
    const [{ end }] = await sql`select pg_current_wal_lsn()::text as end`;
    await waitForFlush(repo, end);
    // Row 4's WAL exists only as a partial segment: restoring it proves get-wal --partial.
    const lastSeg = walFileName(1, segmentNumber(parseLsn(end) - 1n, 16 * 1024 * 1024), 16 * 1024 * 1024);
    const walDir = path.join(repo, "wal", "db1");
    expect(readdirSync(walDir)).toContain(`${lastSeg}.partial`);
    expect(existsSync(path.join(walDir, lastSeg)) || existsSync(path.join(walDir, `${lastSeg}.kwal`))).toBe(false);

    const cases: [string, string[], number[]][] = [
      ["xid", ["--target-xid", String(xid)], [1, 2]],
      ["lsn", ["--target-lsn", String(lsn)], [1, 2]],
      ["time", ["--target-time", String(t)], [1, 2]],
      ["name", ["--target-name", "before-row-3"], [1, 2]],
      ["immediate", ["--target-immediate"], []],
      ["end of WAL", [], [1, 2, 3, 4]],
    ];
    for (const [what, flags, expected] of cases) {
      // PostgreSQL's own checker on the restored directory (Debian's 15; the 18 package has
      // none): every file of the backup_manifest there, sizes and checksums right. The
      // tablespace_map is rewritten on purpose (the tablespace moved).
      const verify = version === 15 && what === "xid"
        ? (dest: string) => void execFileSync(path.join(binDir(15), "pg_verifybackup"), ["-n", "-q", "-i", "tablespace_map", dest], { stdio: "pipe" })
        : undefined;
      const restored = await restoreAndStart(cleanups, version, repo, ["--tablespaces", "ts1:{base}/ts", ...flags], verify);
      const rsql = restored.sql();
      const ids = (await rsql`select id from marks order by id`).map((r) => Number(r.id));
      const tsRows = Number((await rsql`select count(*) as n from in_ts`)[0]!.n);
      expect({ what, ids, tsRows }).toEqual({ what, ids: expected, tsRows: 1000 });
      await restored.destroy();
    }
  });
});
