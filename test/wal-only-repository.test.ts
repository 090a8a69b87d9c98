// What `klio wal stream` into an empty directory leaves (only wal/…) is no dead end: commands
// that need a repository say that `klio init` makes one keeping the WAL, and it does; and
// `wal status` says precisely why it has nothing to show (no directory, no repository, no WAL
// archived yet, a receiver that has not reached its server yet).
import { describe, it, expect, afterEach } from "vitest";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { runKlioAsync, startKlio, waitFor } from "./harness/klio.ts";
import { streamWal, tempDir, type Cleanup } from "./harness/backup.ts";
import { freePort, startPostgres } from "./harness/postgres.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function walStatusJson(repo: string): Promise<{ segments: { stored: number; uncompressed: number }; firstSegment: string | null } | undefined> {
  const r = await runKlioAsync(["wal", "status", "--repo", repo, "--json"]);
  return r.code === 0 ? JSON.parse(r.stdout) : undefined;
}

describe("wal status without an archive", () => {
  it("says which of the cases it is", { timeout: 120_000 }, async () => {
    const base = tempDir(cleanups, "klio-wal-none-");
    const q = (p: string) => JSON.stringify(p);
    const status = (repo: string, ...more: string[]) => runKlioAsync(["wal", "status", "--repo", repo, ...more]);

    // Given no directory at all, a file, and a directory that is no repository:
    const missing = path.join(base, "missing");
    const file = path.join(base, "file");
    writeFileSync(file, "x");
    const empty = path.join(base, "empty");
    mkdirSync(empty);
    expect((await status(missing)).stderr).toBe(`klio: there is no directory ${q(missing)}: give the repository directory with --repo\n`);
    expect((await status(file)).stderr).toBe(`klio: ${q(file)} is not a directory: give the repository directory with --repo\n`);
    expect((await status(empty)).stderr).toBe(`klio: ${q(empty)} is not a klio repository (it has no klio-repository.json) and holds no WAL archive\n`);

    // Given a fresh repository: no WAL archived yet, and what archives it.
    const repo = path.join(base, "repo");
    expect((await runKlioAsync(["init", "--repo", repo])).code).toBe(0);
    const fresh = await status(repo);
    expect(fresh.code).toBe(1);
    expect(fresh.stderr).not.toMatch(/is it a klio repository/);
    expect(fresh.stderr).toBe(`klio: no WAL has been archived in ${q(repo)} yet: \`klio wal stream --repo ${repo} --cluster NAME --pg …\` or the daemon (\`klio server start\`) archives it\n`);
    expect((await status(repo, "--cluster", "db1")).stderr).toMatch(/^klio: no WAL has been archived in .* yet for cluster "db1": `klio wal stream --repo .* --cluster db1 --pg …`/);

    // When a receiver runs but cannot reach its server: it has not reached it yet.
    const port = await freePort();
    const receiver = startKlio(["wal", "stream", "--repo", repo, "--cluster", "db1", "--pg", `host=127.0.0.1 port=${port} user=postgres connect_timeout=2`, "--log-format", "text"]);
    cleanups.push(async () => void (await receiver.kill9()));
    await receiver.waitForLog(/wal.reconnecting|wal.disconnected/, 60_000);
    for (const args of [[], ["--cluster", "db1"]]) {
      const r = await status(repo, ...args);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^klio: the WAL receiver of cluster "db1" has not reached its server yet: .* has its WAL directory but no cluster\.json/);
    }
    await receiver.stop();
  });
});

describe("a directory that holds only a WAL archive", () => {
  it("becomes a repository with klio init, keeping its WAL", { timeout: 180_000 }, async () => {
    // Given `klio wal stream` into an empty directory, and WAL in it:
    const pg = await startPostgres({ version: 15 });
    cleanups.push(() => pg.destroy());
    const dir = path.join(tempDir(cleanups, "klio-wal-only-"), "repo");
    const receiver = streamWal(cleanups, pg, dir);
    await receiver.waitForLog(/wal.streaming/);
    const sql = pg.sql();
    await sql`create table t as select g from generate_series(1, 1000) g`;
    await sql`select pg_switch_wal()`;
    const before = await waitFor("a completed segment in the WAL-only directory", async () => {
      const s = await walStatusJson(dir);
      return s && s.segments.stored + s.segments.uncompressed > 0 ? s : undefined;
    }, 60_000);
    expect(readdirSync(dir)).toEqual(["wal"]);

    // Then a command that needs a repository says how to make one, keeping the WAL:
    const list = await runKlioAsync(["backup", "list", "--repo", dir]);
    expect(list.code).not.toBe(0);
    expect(list.stderr).toBe(`klio: ${JSON.stringify(dir)} is not a klio repository yet: it holds only a WAL archive (what \`klio wal stream\` writes); \`klio init --repo ${dir}\` turns it into one and keeps its WAL\n`);

    // An encrypted repository over that plaintext WAL is refused, changing nothing:
    const pass = path.join(path.dirname(dir), "pass");
    writeFileSync(pass, "correct horse\n");
    const encrypted = await runKlioAsync(["init", "--repo", dir, "--encryption-passphrase-file", pass]);
    expect(encrypted.code).toBe(2);
    expect(encrypted.stderr).toMatch(/holds a WAL archive, in plaintext .*refusing to make it an encrypted repository; nothing was changed/);
    expect(readdirSync(dir)).toEqual(["wal"]);

    // When klio init makes it a repository (the receiver still running):
    const init = await runKlioAsync(["init", "--repo", dir]);
    expect(init.stderr).toBe("");
    expect(init.code).toBe(0);

    // Then backup list works, and wal status still shows the segments.
    const listed = await runKlioAsync(["backup", "list", "--repo", dir]);
    expect(listed.stderr).toBe("");
    expect(listed.code).toBe(0);
    const after = await walStatusJson(dir);
    expect(after?.firstSegment).toBe(before.firstSegment);
    expect(after!.segments.stored + after!.segments.uncompressed).toBeGreaterThanOrEqual(before.segments.stored + before.segments.uncompressed);
    expect(existsSync(path.join(dir, "klio-repository.json"))).toBe(true);
  });

  it("is refused by klio init when it holds anything else", { timeout: 60_000 }, async () => {
    const dir = tempDir(cleanups, "klio-wal-stray-");
    mkdirSync(path.join(dir, "wal", "db1"), { recursive: true });
    writeFileSync(path.join(dir, "notes.txt"), "mine");
    const r = await runKlioAsync(["init", "--repo", dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`klio: ${dir} is not empty and is not a klio repository: give a new or empty directory (or one that holds only a WAL archive)\n`);
    expect(readdirSync(dir).sort()).toEqual(["notes.txt", "wal"]);
  });
});
