// A real S3 server on loopback for tests (s3rver-process.mjs), and the flags klio needs to use it.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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

/** Key files for klio (in a directory PostgreSQL's user can read: restore_command reads them). */
export function keyFiles(cleanups: Cleanup[], access: string, secret: string): { accessKeyFile: string; secretKeyFile: string } {
  const keys = mkdtempSync(path.join(tmpdir(), "klio-s3-keys-"));
  cleanups.push(() => rmSync(keys, { recursive: true, force: true }));
  chmodSync(keys, 0o755);
  writeFileSync(path.join(keys, "access"), access + "\n", { mode: 0o644 });
  writeFileSync(path.join(keys, "secret"), secret + "\n", { mode: 0o644 });
  return { accessKeyFile: path.join(keys, "access"), secretKeyFile: path.join(keys, "secret") };
}

/** The --s3-… flags for an endpoint and key files. */
export function s3Flags(endpoint: string, k: { accessKeyFile: string; secretKeyFile: string }): string[] {
  return ["--s3-endpoint", endpoint, "--s3-access-key-file", k.accessKeyFile, "--s3-secret-key-file", k.secretKeyFile];
}

/**
 * s3rver writes an object's bytes, then its metadata file, without fsync or rename; killed in
 * between it keeps an object whose metadata is missing or cut short, and answers every listing
 * that reaches it with 500 from then on. A real S3 never shows an object whose PUT did not
 * complete, so after a kill -9 those objects are dropped, as S3 would never have had them.
 */
function dropTornObjects(dir: string): void {
  for (const name of readdirSync(dir, { recursive: true }) as string[]) {
    if (!name.endsWith("._S3rver_object")) continue;
    const base = path.join(dir, name.slice(0, -"object".length));
    try {
      JSON.parse(readFileSync(base + "metadata.json", "utf8"));
    } catch {
      for (const f of ["object", "object.md5", "metadata.json"]) rmSync(base + f, { force: true });
    }
  }
}

export async function startS3(cleanups: Cleanup[], bucket = "klio"): Promise<TestS3> {
  const dir = mkdtempSync(path.join(tmpdir(), "klio-s3-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const keys = keyFiles(cleanups, "S3RVER", "S3RVER");
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
    dropTornObjects(dir);
  };
  await start();
  cleanups.push(kill9);
  return { endpoint: `http://127.0.0.1:${port}`, bucket, dir, ...keys, flags: s3Flags(`http://127.0.0.1:${port}`, keys), kill9, start };
}
