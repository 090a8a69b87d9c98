// The smoke every way of running klio must pass: the shipped single executable
// (single-executable.test.ts) and the sources under Deno (deno.test.ts). Each run is a
// fresh process, exactly as PostgreSQL runs `klio get-wal` from restore_command.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";
import { startPostgres } from "./harness/postgres.ts";
import { waitFor } from "./harness/klio.ts";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const PACKAGE_VERSION: string = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")).version;

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs klio with argv; `how` says how (the executable, or deno with main.ts). */
export type Runner = (argv: string[]) => Run;

export function runner(file: string, prefix: string[], opts: { cwd: string; env: NodeJS.ProcessEnv }): Runner {
  return (argv) => {
    const r = spawnSync(file, [...prefix, ...argv], { cwd: opts.cwd, env: opts.env, input: "", encoding: "utf8", timeout: 60_000 });
    if (r.error) throw r.error;
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
}

/** An environment with nothing of this repository or of Node's in it. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: "/usr/local/bin:/usr/bin:/bin", LANG: "C.UTF-8", ...extra };
  if (process.env.HOME) env.HOME = process.env.HOME;
  return env;
}

function expectQuiet(r: Run): void {
  expect(r.stderr).not.toMatch(/ExperimentalWarning/);
  expect(r.stderr).not.toMatch(/Warning/);
}

/** Command names as the top-level --help lists them ("wal stream", "get-wal", ...). */
export function commandsIn(help: string): string[] {
  const after = help.split(/^Commands:\s*$/m)[1] ?? "";
  const names: string[] = [];
  for (const line of after.split("\n")) {
    const m = /^ {2}([a-z][a-z-]*(?: [a-z][a-z-]*)?) {2,}\S/.exec(line);
    if (m) names.push(m[1]!);
  }
  return names;
}

/** Declares the smoke tests; `klio()` is read when each test runs, after beforeAll. */
export function smokeTests(klio: () => Runner): void {
  it("prints its version, from package.json, and nothing else", () => {
    const r = klio()(["--version"]);
    expect(r).toEqual({ code: 0, stdout: `klio ${PACKAGE_VERSION}\n`, stderr: "" });
  });

  it("prints the list of commands for --help", () => {
    const r = klio()(["--help"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Usage: klio COMMAND");
    expect(commandsIn(r.stdout)).toEqual(expect.arrayContaining(["wal stream", "wal status", "get-wal"]));
  });

  it("loads every command and prints its --help", () => {
    const names = commandsIn(klio()(["--help"]).stdout);
    expect(names.length).toBeGreaterThan(0);
    for (const name of names) {
      const r = klio()([...name.split(" "), "--help"]);
      expect(r.stderr, `klio ${name} --help`).toBe("");
      expect(r.code, `klio ${name} --help`).toBe(0);
      expect(r.stdout, `klio ${name} --help`).toContain("Usage:");
      expect(r.stdout, `klio ${name} --help`).toContain(`klio ${name}`);
    }
  });

  it("prints get-wal's flags for get-wal --help", () => {
    const r = klio()(["get-wal", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Usage: .*klio get-wal/);
    expect(r.stdout).toContain("--help");
    expectQuiet(r);
  });

  it("rejects an unknown flag with exit 2 and one line on stderr", () => {
    const r = klio()(["get-wal", "--no-such-flag"]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^[^\n]*--no-such-flag[^\n]*\n$/);
    expectQuiet(r);
  });

  it("rejects an unknown command with exit 2 and one line on stderr", () => {
    const r = klio()(["no-such-command"]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^[^\n]*no-such-command[^\n]*\n$/);
    expectQuiet(r);
  });
}

export interface Launch {
  file: string;
  prefix: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
}

/** Declares the end-to-end check: stream a real server's WAL, serve a segment back as restore_command. */
export function streamingTest(launch: () => Launch): void {
  it("streams WAL from a real PostgreSQL 18 and serves it back as restore_command", async () => {
    const { file, prefix, cwd, env } = launch();
    const klio = runner(file, prefix, { cwd, env });
    const pg = await startPostgres({ version: 18, walSegmentMb: 1, conf: { wal_keep_size: "'64MB'" } });
    const work = mkdtempSync(path.join(tmpdir(), "klio-stream-"));
    const repo = path.join(work, "repo");
    const child = spawn(file, [...prefix, "wal", "stream", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--create-slot"], { cwd, env, stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    child.stderr.on("data", (d) => (log += d));
    try {
      await waitFor("streaming", () => log.includes("wal.streaming"));
      const sql = pg.sql();
      await sql`create table t as select g, md5(g::text) from generate_series(1, 20000) g`;
      const [{ name }] = await sql`select pg_walfile_name(pg_switch_wal()) as name`;
      const target = path.join(work, "RECOVERYXLOG");
      // Compressed and checksummed in the background; get-wal serves either form.
      await waitFor(`${name} stored`, () => existsSync(path.join(repo, "wal", "db1", `${name}.kwal`)));
      expect(klio(["get-wal", name, target, "--repo", repo]).code).toBe(0);
      expect(readFileSync(target).equals(readFileSync(path.join(pg.dataDir, "pg_wal", name)))).toBe(true);
      // JSON log lines when stderr is not a terminal.
      expect(JSON.parse(log.split("\n")[0]!).event).toBeTypeOf("string");
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
      await pg.destroy();
      rmSync(work, { recursive: true, force: true });
    }
  });
}
