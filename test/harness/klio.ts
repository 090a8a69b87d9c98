// Runs klio from the sources as a separate process, the way an operator (or PostgreSQL's
// restore_command) does, so that tests can kill -9 it, SIGSTOP it and read its exit code.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const MAIN = path.join(ROOT, "src", "cli", "main.ts");

export function klioArgv(args: string[]): string[] {
  return ["--import", "tsx", MAIN, ...args];
}

export interface KlioRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runKlio(args: string[], env: NodeJS.ProcessEnv = {}): KlioRun {
  const r = spawnSync(process.execPath, klioArgv(args), { cwd: ROOT, env: { ...process.env, ...env }, encoding: "utf8", timeout: 60_000, input: "" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The single executable (npm test builds it first): what an operator runs. */
export const KLIO_BIN = path.join(ROOT, "dist", "klio");

/**
 * Runs klio to completion without blocking the test's event loop (other children's pipes
 * keep draining). `bin` runs the single executable instead of the sources.
 */
export function runKlioAsync(args: string[], opts: { env?: NodeJS.ProcessEnv; bin?: boolean; timeoutMs?: number } = {}): Promise<KlioRun> {
  const [cmd, argv] = opts.bin ? [KLIO_BIN, args] : [process.execPath, klioArgv(args)];
  const child = spawn(cmd, argv, { cwd: ROOT, env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 300_000);
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface KlioProcess {
  child: ChildProcess;
  /** Everything written to stderr so far (the log). */
  log(): string;
  /** Resolves when a log line matches (within 60 s unless told). */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<void>;
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop(): Promise<number | null>;
  kill9(): Promise<void>;
  exited: Promise<number | null>;
}

/** `bin` runs the single executable (starts in a tenth of the time: for processes that must start together). */
export function startKlio(args: string[], env: NodeJS.ProcessEnv = {}, opts: { bin?: boolean } = {}): KlioProcess {
  const [cmd, argv] = opts.bin ? [KLIO_BIN, args] : [process.execPath, klioArgv(args)];
  const child = spawn(cmd, argv, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout!.on("data", (d) => (log += d));
  child.stderr!.on("data", (d) => (log += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return {
    child,
    exited,
    log: () => log,
    async waitForLog(re, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      while (!re.test(log)) {
        if (child.exitCode !== null) throw new Error(`klio exited (${child.exitCode}) before logging ${re}:\n${log}`);
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${re} in klio's log:\n${log}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      return await exited;
    },
    async kill9() {
      if (child.exitCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

/** Polls `probe` until it returns something other than undefined or false (within 60 s unless told). */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
