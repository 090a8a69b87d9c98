// An exclusive lock between processes on one machine: a small file naming its holder (pid,
// host, process start time), so that a lock left by a process that died (kill -9, a crash, a
// reboot) is taken over and never blocks, and a live holder is never robbed. node:fs has no
// flock(); the lock is built from the two atomic directory operations it has:
//
//   - link(temp, lock) creates the lock from a fully written temporary file, and fails with
//     EEXIST when the name exists: of two creators one wins, and nobody ever reads a lock
//     file half written.
//   - rename(temp, lock) replaces a stale lock whole, in one step.
//
// Why two processes never both hold a lock (the argument; keep it true when changing this):
//
//  1. Every lock file's content is unique (a random nonce), so its content names one tenure
//     ("generation"); a name never goes back to an old generation.
//  2. A generation ends only (a) when its live holder removes it (release), or (b) when a
//     process replaces it by rename, which it does only while it holds the takeover guard of
//     that very generation (`<lock>.takeover-<hash of the content>`, itself a lock of this
//     kind), after re-reading the file under the guard and finding that generation still
//     there, with its holder dead.
//  3. Between that re-read and the rename nothing else can change the file: creating needs the
//     name free (link fails), release is by the holder (dead: a dead process does nothing),
//     and replacing that generation needs the guard (ours, and a guard is held by one process
//     at a time by this same argument, one level down).
//  4. "Dead" is exact on one host: the pid does not run, or runs with another start time
//     (/proc/<pid>/stat), or the lock was written before the machine last booted (start
//     times count from boot, so they repeat across boots). Where it cannot be told (another
//     host sharing the directory, no /proc) the holder counts as alive: a lock is never taken
//     from a live process, at worst an operator removes one by hand.
//
// So from a successful link or rename until its release, the file holds the holder's own
// generation and nobody else can believe they hold it. A process killed inside a takeover
// leaves its guard behind: a stale lock like any other, taken over the same way (the guard's
// guard), so nothing stays blocked; the depth is bounded because each level needs another
// process killed within the microseconds a takeover lasts.
//
// Lock files are not fsync'd: after a crash of the machine every holder is gone anyway, and a
// lock file written before the boot (even an empty one) is stale by rule 4.
import { createHash, randomBytes } from "node:crypto";
import { link, open, readFile, rename, unlink, writeFile, type FileHandle } from "node:fs/promises";
import { hostname } from "node:os";
import path from "node:path";
import { tempNameFor } from "./durable-fs.ts";
import { bootTimeMs, isPidAlive, parseStamp, processState, startedAtMs, thisProcess, type ProcessStamp } from "./process-liveness.ts";
import { sleep } from "./sleep.ts";

export const LOCK_FORMAT = "klio-lock";
export const LOCK_VERSION = 1;

/** Who holds a lock, as its file says. */
export interface LockHolder {
  /** null: the file could not be read as a lock (being written by an older klio). */
  process: ProcessStamp | null;
  /** When the lock was taken (ISO 8601), when the file says. */
  since: string | null;
  /** What the holder does ("klio backup run"), when the file says. */
  purpose: string | null;
}

export interface HeldLock {
  readonly file: string;
  /** Removes the lock (only if it is still this holder's; a second call does nothing). */
  release(): Promise<void>;
}

export type LockAttempt = { held: HeldLock; holder?: undefined } | { held?: undefined; holder: LockHolder };

/** A guard of a guard of a guard…: deeper needs processes killed inside each level's takeover. */
const MAX_TAKEOVER_DEPTH = 4;
/** Attempts when the lock keeps changing under us (takeovers by others in flight). */
const ATTEMPTS = 50;
/** A file that is not a lock is taken for one being written by an older klio for this long. */
const UNREADABLE_GRACE_MS = 10_000;
/** Slack between a process's start time (known to a second) and a legacy lock's mtime. */
const START_SLACK_MS = 2_000;

/** Takes the lock if it is free or stale; otherwise says who holds it. Never waits for a live holder. */
export function tryLock(file: string, purpose: string): Promise<LockAttempt> {
  return attempt(file, purpose, 0);
}

export interface WaitOptions {
  signal: AbortSignal;
  /** Give up after this long (default: never). */
  timeoutMs?: number;
  pollMs?: number;
  /** Called once, when the lock is first found held. */
  onBusy?: (holder: LockHolder) => void;
}

/** Takes the lock, waiting while a live process holds it; the last holder seen if the wait ends first. */
export async function waitForLock(file: string, purpose: string, o: WaitOptions): Promise<LockAttempt> {
  const deadline = o.timeoutMs === undefined ? Infinity : Date.now() + o.timeoutMs;
  let said = false;
  for (;;) {
    const a = await tryLock(file, purpose);
    if (a.held || o.signal.aborted || Date.now() >= deadline) return a;
    if (!said) o.onBusy?.(a.holder);
    said = true;
    await sleep(Math.min(o.pollMs ?? 500, deadline - Date.now()), o.signal);
  }
}

/** "pid 1234, since 2026-12-05T10:00:00Z" (the host too when it is another). */
export function describeHolder(h: LockHolder): string {
  if (!h.process) return "a process that is still writing its lock file";
  const who = `pid ${h.process.pid}${h.process.host !== hostname() ? ` on ${h.process.host}` : ""}`;
  return h.since ? `${who}, since ${h.since.replace(/\.\d+Z$/, "Z")}` : who;
}

async function attempt(file: string, purpose: string, depth: number): Promise<LockAttempt> {
  const content = JSON.stringify({
    format: LOCK_FORMAT, version: LOCK_VERSION, nonce: randomBytes(8).toString("hex"), purpose, since: new Date().toISOString(), process: thisProcess(),
  }) + "\n";
  const tmp = tempNameFor(file);
  await writeFile(tmp, content, { flag: "wx", mode: 0o640 });
  const held = heldLock(file, content);
  let holder: LockHolder = { process: null, since: null, purpose: null };
  try {
    for (let i = 0; i < ATTEMPTS; i++) {
      try {
        await link(tmp, file);
        return { held };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      }
      const seen = await readLock(file);
      if (seen === null) continue; // released meanwhile
      holder = seen.holder;
      if (!isStale(seen)) return { holder };
      const took = await takeOver(file, seen.content, tmp, depth);
      if (took === "taken") return { held };
      // "busy": another process is taking it over right now; see who wins. "changed": look again.
      if (took === "busy") await new Promise((r) => setTimeout(r, 5 + Math.random() * 20));
    }
    return { holder };
  } finally {
    // After link() the lock has its own name; after rename() this name is gone already.
    await unlink(tmp).catch(() => {});
  }
}

/** Replaces the stale generation `stale` of `file` with `tmp`, under that generation's takeover guard. */
async function takeOver(file: string, stale: string, tmp: string, depth: number): Promise<"taken" | "changed" | "busy"> {
  if (depth >= MAX_TAKEOVER_DEPTH) return "busy";
  const guardFile = `${file}.takeover-${createHash("sha256").update(stale).digest("hex").slice(0, 16)}`;
  const guard = await attempt(guardFile, `taking over ${path.basename(file)}`, depth + 1);
  if (!guard.held) return "busy";
  try {
    const now = await readFile(file, "utf8").catch(() => null);
    if (now !== stale) return "changed";
    await rename(tmp, file);
    return "taken";
  } finally {
    await guard.held.release();
  }
}

interface SeenLock {
  content: string;
  holder: LockHolder;
  /** A pid-only file (klio before lock format 1): the pid, and no start time. */
  legacy: boolean;
  mtimeMs: number;
}

async function readLock(file: string): Promise<SeenLock | null> {
  let content: string;
  let mtimeMs: number;
  // Content and time of one file: through one descriptor, whatever replaces the name meanwhile.
  let fh: FileHandle;
  try {
    fh = await open(file, "r");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  try {
    [content, { mtimeMs }] = [await fh.readFile("utf8"), await fh.stat()];
  } finally {
    await fh.close();
  }
  if (/^\d+\n?$/.test(content)) {
    // Written by klio before this format: the pid alone, of a process on this host.
    return { content, legacy: true, mtimeMs, holder: { process: { pid: Number(content), host: hostname(), start: null }, since: null, purpose: null } };
  }
  let body: { format?: unknown; process?: unknown; since?: unknown; purpose?: unknown } | null = null;
  try {
    body = JSON.parse(content);
  } catch {
    body = null;
  }
  const process = body?.format === LOCK_FORMAT ? parseStamp(body.process) : null;
  return {
    content, legacy: false, mtimeMs,
    holder: { process, since: typeof body?.since === "string" ? body.since : null, purpose: typeof body?.purpose === "string" ? body.purpose : null },
  };
}

function isStale(seen: SeenLock): boolean {
  const p = seen.holder.process;
  const boot = bootTimeMs();
  const beforeBoot = boot !== null && seen.mtimeMs < boot;
  if (!p) return beforeBoot || Date.now() - seen.mtimeMs > UNREADABLE_GRACE_MS;
  if (p.host !== hostname()) return false; // another host's: only it can tell
  if (beforeBoot) return true;
  if (seen.legacy) {
    if (!isPidAlive(p.pid)) return true;
    // The pid runs, but a process that started after the lock was written did not write it.
    const started = startedAtMs(p.pid);
    return started !== null && started > seen.mtimeMs + START_SLACK_MS;
  }
  return processState(p) === "dead";
}

function heldLock(file: string, content: string): HeldLock {
  let released = false;
  return {
    file,
    async release() {
      if (released) return;
      released = true;
      // Only our own generation: never one a takeover put there (which would mean we were
      // taken for dead, and the other holder's lock must stay).
      const now = await readFile(file, "utf8").catch(() => null);
      if (now === content) await unlink(file).catch(() => {});
    },
  };
}
