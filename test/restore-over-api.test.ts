// A new database host restores straight from the appliance: `klio restore --repo http://…`
// reads the backup's snapshot, indexes and packs over the API, and the restored server's
// restore_command (get-wal --repo http://…) fetches its WAL the same way, up to a target time.
// Only a read token is needed; nothing on the "other host" touches the appliance's files.
import { describe, it, expect, afterEach } from "vitest";
import { chmodSync, writeFileSync } from "node:fs";
import path from "node:path";
import { startPostgres } from "./harness/postgres.ts";
import { runKlioAsync, waitFor } from "./harness/klio.ts";
import { restoreAndStart, tempDir, type Cleanup } from "./harness/backup.ts";
import { backupThroughApi, READ_TOKEN, startTestDaemon } from "./harness/daemon.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("restore from the appliance over HTTP", () => {
  it("reaches a target time with only the API and a read token", { timeout: 300_000 }, async () => {
    const pg = await startPostgres({ version: 15 });
    cleanups.push(() => pg.destroy());
    const d = await startTestDaemon(cleanups, [{ name: "db1", pg }]);
    await waitFor("the receiver to stream", async () => (await d.get("/v1/clusters/db1")).receiver.state === "streaming", 60_000);
    const sql = pg.sql();
    await sql`create table t (id int, at timestamptz default clock_timestamp())`;
    await sql`insert into t (id) select generate_series(1, 1000)`;
    expect((await backupThroughApi(d, "db1")).state).toBe("succeeded");

    await sql`insert into t (id) values (2000)`;
    await new Promise((r) => setTimeout(r, 1100));
    const [{ target }] = await sql`select now()::text as target`;
    await new Promise((r) => setTimeout(r, 1100));
    await sql`insert into t (id) values (3000)`;
    const [{ seg }] = await sql`select pg_walfile_name(pg_current_wal_lsn()) as seg`;
    await sql`select pg_switch_wal()`;
    await waitFor("the segment past the target in the archive", async () => (await d.call("GET", `/v1/clusters/db1/wal/${seg}`)).status === 200, 60_000);

    // The other host: a token file PostgreSQL's user can read, and no access to the repository.
    const host = tempDir(cleanups, "klio-other-host-");
    chmodSync(host, 0o755);
    const tokenFile = path.join(host, "read.token");
    writeFileSync(tokenFile, READ_TOKEN + "\n", { mode: 0o644 });

    // A wrong token is one clear error, and nothing is written.
    const badToken = path.join(host, "bad.token");
    writeFileSync(badToken, "not-the-token-0123456789\n");
    const refused = await runKlioAsync(["restore", path.join(host, "never"), "--repo", d.url, "--token-file", badToken, "--cluster", "db1"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/refused the request \(401\)/);

    const restored = await restoreAndStart(cleanups, 15, d.url, ["--token-file", tokenFile, "--target-time", target, "--target-action", "promote"]);
    const rows = await restored.sql()`select count(*) filter (where id <= 1000) as old, count(*) filter (where id = 2000) as before, count(*) filter (where id = 3000) as after from t`;
    expect({ old: Number(rows[0]!.old), before: Number(rows[0]!.before), after: Number(rows[0]!.after) }).toEqual({ old: 1000, before: 1, after: 0 });
    expect(await d.process.stop()).toBe(0);
  });
});
