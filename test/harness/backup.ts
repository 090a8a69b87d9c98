// Shared steps of the backup and restore scenarios: a repository with a running receiver,
// klio commands that must succeed, a restored server to query.
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { binDir, pgTempDir, startDataDir, startPostgres, type PgServer, type PgVersion } from "./postgres.ts";
import { runKlioAsync, startKlio, waitFor, type KlioProcess } from "./klio.ts";

export type Cleanup = () => Promise<void> | void;

export function tempDir(cleanups: Cleanup[], prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs klio (the sources, or the single executable with bin) and returns stdout; throws on failure. */
export async function klio(args: string[], bin = false): Promise<string> {
  const r = await runKlioAsync(args, { bin });
  if (r.code !== 0) throw new Error(`klio ${args.join(" ")} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

export function streamWal(cleanups: Cleanup[], pg: PgServer, repo: string, cluster = "db1"): KlioProcess {
  const k = startKlio(["wal", "stream", "--repo", repo, "--cluster", cluster, "--pg", pg.connString(), "--create-slot", "--log-format", "text"]);
  cleanups.push(async () => void (await k.kill9()));
  return k;
}

/** A PostgreSQL server (15 unless told), a new repository, and `klio wal stream` archiving its WAL (cluster db1). */
export async function streamingServer(cleanups: Cleanup[], initFlags: string[] = [], version: PgVersion = 15): Promise<{ pg: PgServer; repo: string; receiver: KlioProcess }> {
  const pg = await startPostgres({ version });
  cleanups.push(() => pg.destroy());
  const repo = tempDir(cleanups, "klio-repo-");
  await klio(["init", "--repo", repo, ...initFlags]);
  const receiver = streamWal(cleanups, pg, repo);
  await receiver.waitForLog(/wal.streaming/);
  return { pg, repo, receiver };
}

/** pgbench from Debian's PostgreSQL 15 (the PostgreSQL 18 package has none), against any server. */
export function pgbench(pg: PgServer, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(binDir(15), "pgbench"), [...args, "-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "postgres"], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout!.on("data", (d) => (out += d));
    child.stderr!.on("data", (d) => (out += d));
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`pgbench ${args.join(" ")} exited ${code}: ${out}`))));
  });
}

/**
 * PostgreSQL runs restore_command as its own user: let it read the repository — also what a
 * receiver still running writes later (mode 0640), or recovery stops at the first new file
 * (get-wal: EACCES). Each directory, before what is in it, gets the postgres group, inherited
 * by what is made in it later (setgid); files come and go meanwhile (vanished ones are passed).
 */
export function shareRepo(repo: string): void {
  const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
  const share = (p: string, extra: number): boolean => {
    try {
      chownSync(p, -1, gid);
      chmodSync(p, statSync(p).mode | extra);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw e;
    }
  };
  const walk = (dir: string): void => {
    if (!share(dir, 0o2055)) return;
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      throw e;
    }
    for (const e of entries) {
      if (e.isDirectory()) walk(path.join(dir, e.name));
      else if (e.isFile()) share(path.join(dir, e.name), 0o044);
    }
  };
  walk(repo);
}

/**
 * `klio restore` (the single executable, as an operator runs it, so restore_command is the
 * binary too) into a fresh directory, then the server started on it and promoted.
 */
export async function restoreAndStart(cleanups: Cleanup[], version: PgVersion, repo: string, flags: string[], beforeStart?: (dest: string) => void, cluster = "db1"): Promise<PgServer> {
  const base = pgTempDir(`klio-restore-${version}-`);
  cleanups.push(() => rmSync(base, { recursive: true, force: true }));
  const dest = path.join(base, "data");
  await klio(["restore", dest, "--repo", repo, "--cluster", cluster, ...flags.map((f) => f.replace("{base}", base))], true);
  if (!/^(https?|s3):\/\//.test(repo)) shareRepo(repo);
  beforeStart?.(dest);
  let pg: PgServer | undefined;
  try {
    pg = await startDataDir(version, dest);
    cleanups.push(() => pg!.destroy());
    const sql = pg.sql();
    await waitFor("recovery to end and promote", async () => (await sql`select pg_is_in_recovery() as r`)[0]!.r === false, 120_000);
    return pg;
  } catch (e) {
    const log = existsSync(path.join(base, "server.log")) ? readFileSync(path.join(base, "server.log"), "utf8") : "(no server log)";
    throw new Error(`${(e as Error).message}\nserver log of the restored cluster:\n${log.slice(-4000)}`);
  }
}
