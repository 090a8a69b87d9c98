// `klio init`: creates a plain or encrypted repository, refuses bad input with exit 2 and a
// clear message while changing nothing, and the repository it makes holds the WAL archive
// of `klio wal stream` beside its chunks.
import { describe, it, expect, afterEach } from "vitest";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { runKlio, runKlioAsync, waitFor } from "./harness/klio.ts";
import { streamWal, type Cleanup } from "./harness/backup.ts";
import { startPostgres } from "./harness/postgres.ts";
import { openRepository } from "../src/repo/repository.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), "klio-init-cli-"));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

describe("klio init", () => {
  it("creates a plain repository, and says so (text and --json)", async () => {
    const base = tempDir();
    const repo = path.join(base, "repo");
    const r = runKlio(["init", "--repo", repo]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^created repository .*repo \(id [0-9a-f]{32}, not encrypted, compression brotli\)\n$/);
    const opened = await openRepository(repo);
    expect(opened.encrypted).toBe(false);
    await opened.close();

    const j = runKlio(["init", "--repo", path.join(base, "raw"), "--compression", "none", "--json"]);
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({ encrypted: false, compression: "none", packTargetBytes: 32 * 1024 * 1024 });
  });

  it("creates an encrypted repository from a passphrase file (trailing newline stripped)", async () => {
    const base = tempDir();
    const repo = path.join(base, "repo");
    const pass = path.join(base, "pass");
    writeFileSync(pass, "s3cret phrase\n");
    const r = runKlio(["init", "--repo", repo, "--encryption-passphrase-file", pass]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/, encrypted,/);
    const opened = await openRepository(repo, { passphrase: "s3cret phrase" });
    expect(opened.encrypted).toBe(true);
    await opened.close();
    await expect(openRepository(repo, { passphrase: "s3cret phrase\n" })).rejects.toMatchObject({ code: "bad-passphrase" });
    // The header holds no passphrase and no key in the clear.
    const header = readFileSync(path.join(repo, "klio-repository.json"), "utf8");
    expect(header).not.toContain("s3cret");
    expect(JSON.parse(header).encryption).toMatchObject({ algorithm: "aes-256-gcm", kdf: { name: "scrypt" } });
  });

  it("refuses bad input with exit 2, one clear message, and changes nothing", () => {
    const base = tempDir();
    const empty = path.join(base, "empty-pass");
    writeFileSync(empty, "\n");
    runKlio(["init", "--repo", path.join(base, "existing")]);
    const header = readFileSync(path.join(base, "existing", "klio-repository.json"));
    writeFileSync(path.join(base, "stray"), "x");
    const cases: [string[], RegExp][] = [
      [["init"], /--repo/],
      [["init", "--repo", path.join(base, "a"), "--encryption-passphrase-file", empty], /passphrase file .* is empty/],
      [["init", "--repo", path.join(base, "b"), "--encryption-passphrase-file", path.join(base, "missing")], /cannot read the passphrase file/],
      [["init", "--repo", path.join(base, "c"), "--compression", "zstd"], /--compression must be brotli or deflate or lz4 or none/],
      [["init", "--repo", path.join(base, "existing")], /already a klio repository \(id [0-9a-f]{32}\); nothing was changed/],
      [["init", "--repo", base], /is not empty and is not a klio repository/],
      [["init", "--repo", path.join(base, "stray")], /exists and is not a directory/],
    ];
    for (const [args, message] of cases) {
      const r = runKlio(args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr, args.join(" ")).toMatch(message);
      expect(r.stderr.trim().split("\n").length).toBe(1);
    }
    for (const d of ["a", "b", "c"]) expect(existsSync(path.join(base, d))).toBe(false);
    expect(readFileSync(path.join(base, "existing", "klio-repository.json"))).toEqual(header);
    expect(readdirSync(base).sort()).toEqual(["empty-pass", "existing", "stray"]);
  });

  it("the repository it creates holds the WAL archive too", { timeout: 120_000 }, async () => {
    const pg = await startPostgres({ version: 15 });
    cleanups.push(() => pg.destroy());
    const repo = path.join(tempDir(), "repo");
    expect(runKlio(["init", "--repo", repo]).code).toBe(0);
    const receiver = streamWal(cleanups, pg, repo);
    await receiver.waitForLog(/wal.streaming/);
    const sql = pg.sql();
    await sql`create table t as select g from generate_series(1, 1000) g`;
    await sql`select pg_switch_wal()`;
    await waitFor("a completed segment in the archive", async () => {
      const r = await runKlioAsync(["wal", "status", "--repo", repo, "--json"]);
      if (r.code !== 0) return false;
      const s = JSON.parse(r.stdout);
      return s.segments.stored + s.segments.uncompressed > 0;
    }, 60_000);
    const opened = await openRepository(repo);
    expect(await opened.check({ readData: true })).toEqual([]);
    await opened.close();
  });
});
