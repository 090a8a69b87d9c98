// Damaged bytes in a pack is found by `repo check --read-data` (naming the backup and file
// that use the chunk) and by `backup verify`; neither crashes.
import { describe, it, expect, afterEach } from "vitest";
import { readdirSync, statSync } from "node:fs";
import path from "node:path";
import { startPostgres } from "./harness/postgres.ts";
import { runKlioAsync } from "./harness/klio.ts";
import { damageFile } from "./harness/damage.ts";
import { klio, streamWal, tempDir, type Cleanup } from "./harness/backup.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function packs(repo: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".pack")) out.push(p);
    }
  };
  walk(path.join(repo, "packs"));
  return out;
}

describe("a corrupted pack byte", () => {
  it("is reported by repo check --read-data and backup verify; the backup can then be shown and deleted", { timeout: 180_000 }, async () => {
    const pg = await startPostgres({ version: 15 });
    cleanups.push(() => pg.destroy());
    const sql = pg.sql();
    await sql`create table big as select g as id, md5(g::text) as v from generate_series(1, 100000) g`;
    const repo = tempDir(cleanups, "klio-repo-");
    await klio(["init", "--repo", repo]);
    const receiver = streamWal(cleanups, pg, repo);
    await receiver.waitForLog(/wal.streaming/);
    const backup = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"]));
    expect((await runKlioAsync(["repo", "check", "--repo", repo, "--read-data"])).code).toBe(0);

    // Damage the middle of the largest pack.
    damageFile(packs(repo).sort((a, b) => statSync(b).size - statSync(a).size)[0]!);

    const check = await runKlioAsync(["repo", "check", "--repo", repo, "--read-data", "--json"]);
    expect(check.code).toBe(1);
    const report = JSON.parse(check.stdout);
    expect(report.ok).toBe(false);
    const damaged = report.problems.find((p: { chunkId?: string }) => p.chunkId);
    expect(damaged).toBeDefined();
    expect(damaged.usedBy).toEqual(expect.arrayContaining([expect.objectContaining({ backup: backup.id })]));

    const verify = await runKlioAsync(["backup", "verify", backup.id, "--repo", repo, "--json"]);
    expect(verify.code).toBe(1);
    expect(JSON.parse(verify.stdout).problems.length).toBeGreaterThan(0);

    // show, then delete: the backup is gone from the list; bad or unknown ids change nothing.
    expect(JSON.parse(await klio(["backup", "show", backup.id, "--repo", repo, "--json"])).endLsn).toBe(backup.endLsn);
    const bad = await runKlioAsync(["backup", "delete", "../../etc", "--repo", repo]);
    expect({ code: bad.code, err: bad.stderr }).toEqual({ code: 2, err: expect.stringMatching(/is not a backup id/) });
    const unknown = await runKlioAsync(["backup", "delete", "20200101T000000Z", "--repo", repo]);
    expect({ code: unknown.code, err: unknown.stderr }).toEqual({ code: 1, err: expect.stringMatching(/has no backup 20200101T000000Z/) });
    expect(JSON.parse(await klio(["backup", "list", "--repo", repo, "--json"])).backups).toHaveLength(1);
    await klio(["backup", "delete", backup.id, "--repo", repo]);
    expect(JSON.parse(await klio(["backup", "list", "--repo", repo, "--cluster", "db1", "--json"])).backups).toEqual([]);
  });
});
