// A real S3 server on loopback for tests (s3rver-process.mjs), and the flags klio needs to use it.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Cleanup } from "./backup.ts";
import { freePort } from "./postgres.ts";

const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), "s3rver-process.mjs");

export interface TestS3 {
  endpoint: string;
  bucket: string;
  dir: string;
  /** --s3-… flags with key files, for klio commands. */
  flags: string[];
  accessKeyFile: string;
  secretKeyFile: string;
  kill9(): Promise<void>;
  /** Starts it again on the same port and data. */
  start(): Promise<void>;
}

export async function startS3(cleanups: Cleanup[], bucket = "klio"): Promise<TestS3> {
  const dir = mkdtempSync(path.join(tmpdir(), "klio-s3-"));
  const keys = mkdtempSync(path.join(tmpdir(), "klio-s3-keys-"));
  cleanups.push(() => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(keys, { recursive: true, force: true });
  });
  chmodSync(keys, 0o755); // PostgreSQL's user runs restore_command, which reads them
  writeFileSync(path.join(keys, "access"), "S3RVER\n", { mode: 0o644 });
  writeFileSync(path.join(keys, "secret"), "S3RVER\n", { mode: 0o644 });
  const port = await freePort();
  let child: ChildProcess | null = null;
  const start = async () => {
    child = spawn(process.execPath, ["--openssl-legacy-provider", SCRIPT, dir, String(port), bucket], { cwd: path.dirname(SCRIPT), stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stderr!.on("data", (d) => (out += d));
    await new Promise<void>((resolve, reject) => {
      child!.stdout!.on("data", (d) => ((out += d), out.includes('"port"') && resolve()));
      child!.on("exit", (code) => reject(new Error(`the S3 server exited (${code}):\n${out}`)));
    });
  };
  const kill9 = async () => {
    const c = child;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((r) => c.on("exit", r));
    c.kill("SIGKILL");
    await exited;
  };
  await start();
  cleanups.push(kill9);
  return {
    endpoint: `http://127.0.0.1:${port}`, bucket, dir, accessKeyFile: path.join(keys, "access"), secretKeyFile: path.join(keys, "secret"),
    flags: ["--s3-endpoint", `http://127.0.0.1:${port}`, "--s3-access-key-file", path.join(keys, "access"), "--s3-secret-key-file", path.join(keys, "secret")],
    kill9, start,
  };
}
