// What the benchmarks share: child processes (spawned, collected, stopped, killed on exit), the
// klio to measure, one SQL client per server, and the small figures helpers. Each bench-*.ts
// keeps only its own method and report.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { createInterface } from "node:readline";
import type { PgServer } from "../test/harness/postgres.ts";
import { ROOT, klioArgv } from "../test/harness/klio.ts";

export const MB = 1024 * 1024;
const TIME_BIN = "/usr/bin/time";

export const say = (text: string) => process.stderr.write(`[bench] ${text}\n`);

// ---------------------------------------------------------------- processes

/** Every child still running, so that an interrupted benchmark leaves none behind. */
const children = new Set<ChildProcess>();

export function killChildren(): void {
  for (const c of children) c.kill("SIGKILL");
}

/** On SIGINT/SIGTERM: say `what`, run `cleanup` once, exit 130. */
export function cleanUpOnInterrupt(what: string, cleanup: () => Promise<void>): void {
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    say(`interrupted: ${what}`);
    void cleanup().finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  /** stdout and stderr interleaved by line (the last 4 MB). */
  output: string;
  /** From spawn to exit. */
  seconds: number;
  /** Peak RSS in bytes, when measured. */
  rss: number | null;
}

export interface Running {
  child: ChildProcess;
  exited: Promise<Exit>;
  output(): string;
}

export interface LaunchOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** A scratch file: measure the peak RSS (Exit.rss). */
  measureRss?: string;
  /** Sees each line as it arrives, with the seconds since spawn. */
  onLine?: (line: string, seconds: number) => void;
}

/**
 * Spawns a process, collecting its output. `measureRss` measures its peak RSS: with
 * /usr/bin/time when installed (exact, read as it exits), else by polling VmHWM.
 */
export function launch(cmd: string, args: string[], opts: LaunchOptions = {}): Running {
  let argv = [cmd, ...args];
  const timeFile = opts.measureRss !== undefined && existsSync(TIME_BIN) ? opts.measureRss : undefined;
  if (timeFile) argv = [TIME_BIN, "-f", "%M", "-o", timeFile, ...argv];
  const startedAt = performance.now();
  const child = spawn(argv[0]!, argv.slice(1), { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let output = "";
  let stdout = "";
  const collect = (stream: NodeJS.ReadableStream, isStdout: boolean) => {
    createInterface({ input: stream }).on("line", (line) => {
      if (output.length < 4 * MB) output += line + "\n";
      if (isStdout && stdout.length < 16 * MB) stdout += line + "\n";
      opts.onLine?.(line, (performance.now() - startedAt) / 1000);
    });
  };
  collect(child.stdout!, true);
  collect(child.stderr!, false);
  let polledHwm = 0;
  const poll = opts.measureRss !== undefined && !timeFile
    ? setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"));
        if (m) polledHwm = Math.max(polledHwm, Number(m[1]) * 1024);
      } catch {
        // exited between two polls
      }
    }, 50)
    : undefined;
  const exited = new Promise<Exit>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const seconds = (performance.now() - startedAt) / 1000;
      children.delete(child);
      if (poll) clearInterval(poll);
      let rss: number | null = null;
      if (timeFile) {
        // The last line is %M (kB); a line before it says "Command exited with non-zero status".
        const kb = Number(readFileSync(timeFile, "utf8").trim().split("\n").pop());
        if (Number.isFinite(kb) && kb > 0) rss = kb * 1024;
      } else if (opts.measureRss !== undefined) rss = polledHwm || null;
      resolve({ code, signal, stdout, output, seconds, rss });
    });
  });
  return { child, exited, output: () => output };
}

export async function runToEnd(cmd: string, args: string[], what: string, opts: LaunchOptions = {}): Promise<Exit> {
  const r = await launch(cmd, args, opts).exited;
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code ?? r.signal}): ${cmd} ${args.join(" ")}\n${tail(r.output)}`);
  return r;
}

export function tail(text: string, lines = 30): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

export async function stopChild(r: Running, signal: NodeJS.Signals): Promise<Exit> {
  if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill(signal);
  const timer = setTimeout(() => r.child.kill("SIGKILL"), 15_000);
  try {
    return await r.exited;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------- klio

export interface KlioCommand {
  cmd: string;
  prefix: string[];
  label: string;
}

/**
 * auto: dist/klio, the executable we ship, rebuilt first if the sources changed since it was
 * built (scripts/build.mjs --if-stale, a few seconds); the sources if that fails.
 * dist: dist/klio as it is. src: the sources through tsx (same code; slower start-up, and
 * its RSS includes tsx). A path: that executable. `main` runs another tree's sources (a
 * worktree with a change, for A/B); `nodeArgs` (e.g. --cpu-prof) imply the sources.
 */
export async function resolveKlio(choice: string, from: { main?: string; nodeArgs?: string[] } = {}): Promise<KlioCommand> {
  const nodeArgs = from.nodeArgs ?? [];
  const viaNode = `sources via node ${[...nodeArgs, ""].join(" ")}--import tsx`;
  if (from.main !== undefined) {
    // tsx resolves from ROOT whichever tree the sources are in.
    const file = path.resolve(from.main);
    if (!existsSync(file)) throw new Error(`--klio-main ${from.main} does not exist`);
    return { cmd: process.execPath, prefix: [...nodeArgs, "--import", "tsx", file], label: `${viaNode} ${path.relative(ROOT, file) || file}` };
  }
  const dist = path.join(ROOT, "dist", "klio");
  const fromSources: KlioCommand = { cmd: process.execPath, prefix: [...nodeArgs, ...klioArgv([])], label: `${viaNode} src/cli/main.ts` };
  if (choice === "src" || nodeArgs.length > 0) return fromSources;
  if (choice === "dist") {
    if (!existsSync(dist)) throw new Error("dist/klio does not exist: run npm run build");
    return { cmd: dist, prefix: [], label: "dist/klio (single executable, not rebuilt)" };
  }
  if (choice !== "auto") return { cmd: path.resolve(choice), prefix: [], label: `${choice} (given)` };
  const build = await launch(process.execPath, [path.join(ROOT, "scripts", "build.mjs"), "--if-stale"]).exited;
  if (build.code !== 0 || !existsSync(dist)) {
    say(`building dist/klio failed, running klio from the sources instead:\n${tail(build.output, 10)}`);
    return { ...fromSources, label: fromSources.label + " (the build of dist/klio failed)" };
  }
  return { cmd: dist, prefix: [], label: "dist/klio (single executable, built from these sources)" };
}

// ---------------------------------------------------------------- servers

/** One SQL client per server (PgServer.sql() makes a new one at every call). */
const clients = new WeakMap<PgServer, ReturnType<PgServer["sql"]>>();
export function sqlOf(pg: PgServer): ReturnType<PgServer["sql"]> {
  let sql = clients.get(pg);
  if (!sql) clients.set(pg, (sql = pg.sql()));
  return sql;
}

export async function sqlValue(pg: PgServer, query: string): Promise<string> {
  const rows = await sqlOf(pg).unsafe(query);
  const v = Object.values(rows[0] ?? {})[0];
  return v === null || v === undefined ? "" : String(v);
}

/** libpq flags of the PostgreSQL client tools (pgbench, pg_basebackup, pg_receivewal). */
export function pgArgs(pg: PgServer): string[] {
  return ["-h", pg.host, "-p", String(pg.port), "-U", "postgres"];
}

// ---------------------------------------------------------------- figures

export function loadAverage(): string {
  return os.loadavg()[0]!.toFixed(2);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The runs of round k start at tool k, so each tool's runs spread over the machine's moods. */
export function rotate<T>(xs: T[], by: number): T[] {
  const k = by % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

export const f0 = (x: number) => x.toFixed(0);
export const f1 = (x: number) => x.toFixed(1);
export const f2 = (x: number) => x.toFixed(2);
