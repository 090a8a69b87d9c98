// A backup interrupted at any moment leaves no visible backup and no damage, and the next one
// reuses what it stored; a backup whose WAL never reaches the archive is not recorded.
import { describe, it, expect, afterEach } from "vitest";
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { runKlioAsync, startKlio, waitFor } from "./harness/klio.ts";
import { klio, streamingServer, type Cleanup } from "./harness/backup.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function packCount(repo: string): number {
  const dir = path.join(repo, "packs");
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const sub of readdirSync(dir, { withFileTypes: true })) {
    if (sub.isDirectory()) n += readdirSync(path.join(dir, sub.name)).filter((f) => f.endsWith(".pack")).length;
    else if (sub.name.endsWith(".pack")) n++;
  }
  return n;
}

describe("an interrupted backup", () => {
  it("leaves nothing visible after kill -9, and the next backup reuses its chunks", { timeout: 300_000 }, async () => {
    const { pg, repo } = await streamingServer(cleanups);
    // ~250 MB that compresses only about 2×: several packs, the first sealed long before the end.
    await pg.sql()`create table noise as select md5(random()::text) || md5(random()::text) as v from generate_series(1, 2500000)`;

    const first = startKlio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString()]);
    cleanups.push(async () => void (await first.kill9()));
    await waitFor("a first sealed pack", () => packCount(repo) >= 1, 120_000);
    await first.kill9();
    expect(JSON.parse(await klio(["backup", "list", "--repo", repo, "--json"])).backups).toEqual([]);
    const check = await runKlioAsync(["repo", "check", "--repo", repo]);
    expect({ code: check.code, out: check.stdout }).toEqual({ code: 0, out: expect.stringMatching(/no problems found/) });

    const second = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"]));
    expect(second.stats.newBytes).toBeLessThan(second.stats.bytes - second.stats.zeroBytes);
    expect(JSON.parse(await klio(["backup", "list", "--repo", repo, "--json"])).backups.map((b: { id: string }) => b.id)).toEqual([second.id]);
    expect((await runKlioAsync(["backup", "verify", second.id, "--repo", repo])).code).toBe(0);
  });

  it("is not recorded when its WAL does not reach the archive in time", { timeout: 120_000 }, async () => {
    const { pg, repo, receiver } = await streamingServer(cleanups);
    await receiver.stop(); // the archive exists, but nothing receives the backup's WAL

    const r = await runKlioAsync(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--wal-timeout", "2"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/has not reached the archive after 2 s: is `klio wal stream --cluster db1` running\?/);
    expect(JSON.parse(await klio(["backup", "list", "--repo", repo, "--json"])).backups).toEqual([]);

    const noArchive = await runKlioAsync(["backup", "run", "--repo", repo, "--cluster", "other", "--pg", pg.connString()]);
    expect(noArchive.code).not.toBe(0);
    expect(noArchive.stderr).toMatch(/cluster other has no WAL archive/);
  });
});
