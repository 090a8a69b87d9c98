// The WAL spool: a directory where the background prefetcher (wal-prefetch.ts) keeps the next
// segments decompressed and ready, so that get-wal — PostgreSQL's restore_command, run once
// per segment — only has to rename a file. This module is what both sides share: where the
// spool is, how a segment is taken from it, how get-wal tells the prefetcher which segment
// PostgreSQL asked for, and whether a prefetcher is alive. It is on get-wal's start-up path:
// small imports only.
//
//   SPOOL/                        --spool (klio restore: DEST/pg_wal/klio-spool)
//     prefetch.log                one line per prefetcher start, stop and error
//     <id>/                       one archive: sha256(archive directory, system identifier)
//       prefetch.pid              the prefetcher's pid; its mtime is the heartbeat
//       want                      the newest segment get-wal served (its mtime: when)
//       000000010000000A00000041  complete segments, original bytes, fsync'd, then renamed
//
// Only complete segments are ever spooled (never a .partial one), under their own name, and
// only after their checksum is verified: a spooled file is byte for byte what the archive
// serves for that name, now and later, so get-wal (or a shell `mv`, see
// restoreCommandWithSpool) may hand it to PostgreSQL without asking anyone. The per-archive
// subdirectory keeps the segments of another repository or cluster out of reach.
import { isPidAlive } from "../util/process-liveness.ts";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readFile, rename, stat, unlink, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import process from "node:process";
import { TEMP_SUFFIX } from "../util/durable-fs.ts";
import { makeDirectories } from "../util/make-directories.ts";

/** How many segments to keep ready by default: 256 MB of 16 MB segments, seconds of replay. */
export const DEFAULT_PREFETCH = 16;
/** The prefetcher leaves after this long without a request (PostgreSQL is done, or stopped). */
export const DEFAULT_IDLE_SECONDS = 30;

export const LOCK_FILE = "prefetch.pid";
export const WANT_FILE = "want";
export const LOG_FILE = "prefetch.log";
/** A prefetcher touches its lock at least this often… */
export const HEARTBEAT_MS = 2_000;
/** …so a lock untouched for this long is a dead prefetcher's (or one from before a reboot). */
export const LOCK_STALE_MS = 30_000;

export interface Spool {
  /** The --spool directory. */
  root: string;
  /** This archive's subdirectory: where segments, lock and want live. */
  dir: string;
}

/** The spool of one archive (its directory in the repository, and the cluster's identity). */
export function openSpool(root: string, archiveDir: string, systemIdentifier: string): Spool {
  const absRoot = path.resolve(root);
  return { root: absRoot, dir: path.join(absRoot, spoolId(archiveDir, systemIdentifier)) };
}

/**
 * The name of an archive's subdirectory in a spool. A restore_command may name
 * `SPOOL/<id>` relative to the data directory (PostgreSQL runs it there), e.g.
 * `pg_wal/klio-spool/<id>`, so that the data directory can move.
 */
export function spoolId(archiveDir: string, systemIdentifier: string): string {
  return createHash("sha256").update(`${path.resolve(archiveDir)}\0${systemIdentifier}`).digest("hex").slice(0, 16);
}

/**
 * Moves a spooled segment to `target` (rename: atomic, no copy). False when it is not
 * spooled. The spool must be on target's filesystem (inside pg_wal, as klio restore puts it).
 */
export async function takeSpooled(spool: Spool, name: string, target: string): Promise<boolean> {
  try {
    await rename(path.join(spool.dir, name), target);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}

/** Tells the prefetcher which segment PostgreSQL now has: it keeps the ones after it ready. */
export async function noteServed(spool: Spool, name: string): Promise<void> {
  await makeDirectories(spool.dir, 0o700);
  await writeSmall(path.join(spool.dir, WANT_FILE), name + "\n");
}

export async function readWant(spool: Spool): Promise<{ name: string; mtimeMs: number } | undefined> {
  try {
    const file = path.join(spool.dir, WANT_FILE);
    const [text, st] = await Promise.all([readFile(file, "utf8"), stat(file)]);
    const name = text.trim();
    return /^[0-9A-F]{24}$/.test(name) ? { name, mtimeMs: st.mtimeMs } : undefined;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

/** The pid in the lock file, and when it was last touched; undefined when there is none. */
export async function readLock(spool: Spool): Promise<{ pid: number; mtimeMs: number } | undefined> {
  try {
    const file = path.join(spool.dir, LOCK_FILE);
    const [text, st] = await Promise.all([readFile(file, "utf8"), stat(file)]);
    const pid = Number(text.trim());
    return Number.isSafeInteger(pid) && pid > 0 ? { pid, mtimeMs: st.mtimeMs } : { pid: 0, mtimeMs: st.mtimeMs };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

/** The pid of the spool's running prefetcher, or undefined. */
export async function livePrefetcher(spool: Spool, now = Date.now()): Promise<number | undefined> {
  const lock = await readLock(spool);
  if (!lock || lock.pid === 0 || now - lock.mtimeMs > LOCK_STALE_MS) return undefined;
  return isPidAlive(lock.pid) ? lock.pid : undefined;
}

export async function writeLock(spool: Spool, pid: number): Promise<void> {
  await writeSmall(path.join(spool.dir, LOCK_FILE), `${pid}\n`);
}

export async function touchLock(spool: Spool, at = new Date()): Promise<void> {
  await utimes(path.join(spool.dir, LOCK_FILE), at, at);
}

/**
 * Starts the prefetcher (`argv`: this klio's `get-wal … --prefetcher` command) detached from
 * PostgreSQL's restore_command: its own session, no inherited stdio, so that the caller's exit
 * (and PostgreSQL waiting for it) never waits for the prefetcher. Returns its pid.
 */
export async function startPrefetcher(spool: Spool, argv: string[]): Promise<number> {
  await makeDirectories(spool.dir, 0o700);
  const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: "ignore" });
  const pid = await new Promise<number>((resolve, reject) => {
    child.once("error", reject);
    child.once("spawn", () => resolve(child.pid!));
  });
  child.unref();
  // Written here too, not only by the prefetcher itself, so that the next get-wal (maybe
  // before the new process has even started) sees it and does not start a second one.
  await writeLock(spool, pid);
  return pid;
}

/** Small state files: temporary name and rename (never seen half-written), no fsync. */
async function writeSmall(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}${TEMP_SUFFIX}`;
  await writeFile(tmp, text);
  await rename(tmp, file);
}

/** Removes a file; true when it was there. */
export async function removeIfExists(file: string): Promise<boolean> {
  try {
    await unlink(file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}
