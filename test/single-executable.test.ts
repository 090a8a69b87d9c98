// Given the shipped executable dist/klio, copied alone into an empty directory (no
// node_modules, no sources next to it), when it is run, then it answers like the sources
// do and prints no Node warning. The build is redone first when any input changed.
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startPostgres } from "./harness/postgres.ts";
import { waitFor } from "./harness/klio.ts";
import { ROOT, cleanEnv, runner, smokeTests, type Runner } from "./cli-smoke.ts";

describe("the single executable dist/klio, alone in an empty directory", () => {
  let dir = "";
  let klio: Runner;

  beforeAll(() => {
    // A no-op when dist/klio was built from the current sources (scripts/build.mjs --if-stale).
    execFileSync(process.execPath, [path.join(ROOT, "scripts", "build.mjs"), "--if-stale"], { cwd: ROOT, stdio: "pipe", timeout: 300_000 });
    dir = mkdtempSync(path.join(tmpdir(), "klio-sea-"));
    const exe = path.join(dir, "klio");
    copyFileSync(path.join(ROOT, "dist", "klio"), exe);
    chmodSync(exe, 0o755);
    klio = runner(exe, [], { cwd: dir, env: cleanEnv() });
  }, 300_000);

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  smokeTests(() => klio);

  it("streams WAL from a real PostgreSQL 18 and serves it back as restore_command", async () => {
    const pg = await startPostgres({ version: 18, walSegmentMb: 1, conf: { wal_keep_size: "'64MB'" } });
    const repo = path.join(dir, "repo");
    const child = spawn(path.join(dir, "klio"), ["wal", "stream", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--create-slot"], { cwd: dir, env: cleanEnv(), stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    child.stderr.on("data", (d) => (log += d));
    try {
      await waitFor("streaming", () => log.includes("wal.streaming"));
      const sql = pg.sql();
      await sql`create table t as select g, md5(g::text) from generate_series(1, 20000) g`;
      const [{ name }] = await sql`select pg_walfile_name(pg_switch_wal()) as name`;
      const target = path.join(dir, "RECOVERYXLOG");
      await waitFor(`${name} archived`, () => klio(["get-wal", name, target, "--repo", repo]).code === 0);
      expect(readFileSync(target).equals(readFileSync(path.join(pg.dataDir, "pg_wal", name)))).toBe(true);
      // JSON log lines when stderr is not a terminal.
      expect(JSON.parse(log.split("\n")[0]!).event).toBeTypeOf("string");
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
      await pg.destroy();
    }
  });
});
