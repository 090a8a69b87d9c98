// The background WAL prefetcher, like pgBackRest's asynchronous archive-get: started by the
// first get-wal that has a spool, it keeps the segments after the one PostgreSQL last got
// decompressed, verified and fsync'd in the spool (wal-spool.ts), so that each restore_command
// call is a rename instead of a decompression — or, with restoreCommandWithSpool, a shell `mv`
// instead of starting klio at all.
//
// What it knows of PostgreSQL's progress: the `want` file (the segment get-wal last served)
// and the spooled segments that disappear (taken by get-wal or by `mv`). It fetches only
// complete segments that are in the archive now, on the timeline of the segment PostgreSQL
// last got, in order, and stops at the first one missing: it never spools a .partial
// segment and never guesses past the archive's end. It leaves when PostgreSQL has taken
// nothing for --prefetch-idle seconds, or soon after it has handed over everything up to
// the archive's end, or when another prefetcher owns the spool; it then removes what it
// spooled. Killed (kill -9), it leaves complete, fsync'd segments behind, which are still
// right for their names; the next get-wal starts a new prefetcher, which adopts them.
import { isPidAlive } from "../util/process-liveness.ts";
import { readdir, rename, rmdir } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../util/log.ts";
import { isKlioError } from "../util/errors.ts";
import { TEMP_SUFFIX } from "../util/durable-fs.ts";
import { shellQuote } from "../util/self-command.ts";
import { parseSegmentName, walFileName, type Timeline } from "../pg/lsn.ts";
import type { WalSource } from "./wal-source.ts";
import { PARTIAL_SUFFIX, STORED_SUFFIX } from "./archive-layout.ts";
import { IDENTITY_FILE } from "./archive-meta.ts";
import { HEARTBEAT_MS, LOCK_FILE, LOCK_STALE_MS, WANT_FILE, readLock, readWant, removeIfExists, touchLock, writeLock, type Spool } from "./wal-spool.ts";
import { sleep } from "../util/sleep.ts";
import { makeDirectories } from "../util/make-directories.ts";

/** Nothing left to hand over and nothing new in the archive for this long: leave. */
const END_GRACE_MS = 2_000;
const POLL_MS = 100;

export interface PrefetchOptions {
  source: WalSource;
  spool: Spool;
  /** The segment get-wal served when it started us: we keep the ones after it. */
  from: string;
  /** How many segments to keep ready. */
  window: number;
  idleMs: number;
  pid: number;
  log: Logger;
  signal: AbortSignal;
  pollMs?: number;
}

export type StopReason = "idle" | "end-of-archive" | "superseded" | "spool-removed" | "signal";

export interface PrefetchResult {
  reason: StopReason;
  /** Segments written to the spool. */
  fetched: number;
  /** Spooled segments PostgreSQL took. */
  taken: number;
}

interface Position {
  timeline: Timeline;
  segno: bigint;
}

/** Runs until it is time to leave (see the top of this file). */
export async function runPrefetcher(o: PrefetchOptions): Promise<PrefetchResult> {
  const segSize = o.source.identity.walSegmentSize;
  const pollMs = o.pollMs ?? POLL_MS;
  const graceMs = Math.min(END_GRACE_MS, o.idleMs);
  const position = (name: string): Position => parseSegmentName(name, segSize);
  const nameAt = (p: Position, ahead: number) => walFileName(p.timeline, p.segno + BigInt(ahead), segSize);
  /** A file in the spool named like no segment of this size is not ours to serve: dropped. */
  const tryPosition = (name: string): Position | undefined => {
    try {
      return position(name);
    } catch {
      return undefined;
    }
  };

  await makeDirectories(o.spool.dir, 0o700);
  const holder = await readLock(o.spool);
  if (holder && holder.pid !== o.pid && holder.pid !== 0 && Date.now() - holder.mtimeMs < LOCK_STALE_MS && isPidAlive(holder.pid)) {
    return { reason: "superseded", fetched: 0, taken: 0 };
  }
  await writeLock(o.spool, o.pid);

  let pos = position(o.from);
  let want = await readWant(o.spool);
  let lastActivity = Date.now();
  let lastHeartbeat = Date.now();
  /** Segments in the spool that we know of: gone from the directory means taken. */
  const ready = new Set<string>();
  let fetched = 0;
  let taken = 0;
  /** The name that is damaged in the archive: get-wal reports it; we stop before it. */
  let blockedAt: string | undefined;

  // Leftovers of a prefetcher killed before us: complete segments are adopted (they are
  // right for their names), its temporary files removed.
  for (const f of await listSpool(o.spool)) {
    if (f.endsWith(TEMP_SUFFIX) && /^[0-9A-F]{24}\./.test(f)) await removeIfExists(path.join(o.spool.dir, f));
    else if (/^[0-9A-F]{24}$/.test(f)) ready.add(f);
  }
  o.log.info("prefetch.start", { pid: o.pid, from: o.from, window: o.window, adopted: ready.size });

  const stop = async (reason: StopReason): Promise<PrefetchResult> => {
    if (reason !== "superseded" && reason !== "spool-removed") await cleanUp(o.spool, o.pid);
    o.log.info("prefetch.stop", { pid: o.pid, reason, fetched, taken });
    return { reason, fetched, taken };
  };

  for (;;) {
    if (o.signal.aborted) return await stop("signal");
    const now = Date.now();
    let lock;
    try {
      lock = await readLock(o.spool);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ENOTDIR") return await stop("spool-removed");
      throw e;
    }
    if (!lock) return await stop("spool-removed");
    if (lock.pid !== o.pid) return await stop("superseded");
    if (now - lastHeartbeat >= HEARTBEAT_MS) {
      await touchLock(o.spool);
      lastHeartbeat = now;
    }

    // Where PostgreSQL is: get-wal's note (which may jump, e.g. to a new timeline) …
    const w = await readWant(o.spool);
    if (w && (w.name !== want?.name || w.mtimeMs !== want?.mtimeMs)) {
      want = w;
      pos = position(w.name);
      lastActivity = now;
      blockedAt = undefined;
    }
    // … and the spooled segments that were taken since we last looked.
    const present = new Set(await listSpool(o.spool));
    for (const name of ready) {
      if (present.has(name)) continue;
      ready.delete(name);
      taken++;
      lastActivity = now;
      const p = tryPosition(name);
      if (p && p.timeline === pos.timeline && p.segno > pos.segno) pos = p;
    }
    // Whatever is not ahead of PostgreSQL on its timeline will not be asked for again.
    for (const name of present) {
      if (!/^[0-9A-F]{24}$/.test(name)) continue;
      const p = tryPosition(name);
      const inWindow = p !== undefined && p.timeline === pos.timeline && p.segno > pos.segno && p.segno <= pos.segno + BigInt(o.window);
      if (inWindow) ready.add(name);
      else {
        ready.delete(name);
        await removeIfExists(path.join(o.spool.dir, name));
      }
    }

    // Fill the window in order; the first segment the archive does not have ends it.
    let next: string | undefined;
    let atEnd = false;
    for (let i = 1; i <= o.window; i++) {
      const name = nameAt(pos, i);
      if (ready.has(name)) continue;
      if (name === blockedAt) break;
      next = name;
      break;
    }
    if (next !== undefined) {
      const got = await fetchInto(o, next);
      if (got === "fetched") {
        ready.add(next);
        fetched++;
        continue;
      }
      if (got === "damaged") blockedAt = next;
      else atEnd = true;
    }

    const idleFor = Date.now() - lastActivity;
    if (idleFor >= o.idleMs) return await stop("idle");
    if (atEnd && ready.size === 0 && idleFor >= graceMs) return await stop("end-of-archive");
    await sleep(pollMs, o.signal);
  }
}

/** Decompresses and verifies one segment into the spool: fsync'd, then renamed into view. */
async function fetchInto(o: PrefetchOptions, name: string): Promise<"fetched" | "missing" | "damaged"> {
  const final = path.join(o.spool.dir, name);
  const tmp = `${final}.${o.pid}${TEMP_SUFFIX}`;
  try {
    // fsync'd before the rename: after a machine crash a spooled name holds the whole
    // segment or does not exist, since a shell `mv` may serve it without any check.
    const got = await o.source.copy({ kind: "segment", name, partial: false }, tmp, { sync: true });
    if (!got) return "missing";
    await rename(tmp, final);
    return "fetched";
  } catch (e) {
    if (isKlioError(e) && e.code === "corrupt-wal") {
      o.log.error("prefetch.damaged", { segment: name, error: e.message });
      return "damaged";
    }
    throw e;
  } finally {
    await removeIfExists(tmp).catch(() => {});
  }
}

async function listSpool(spool: Spool): Promise<string[]> {
  try {
    return await readdir(spool.dir);
  } catch (e) {
    // Removed under us (the data directory deleted): the lock check then says so.
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw e;
  }
}

/** Removes what the prefetcher spooled, the want note and (last) its own lock. */
async function cleanUp(spool: Spool, pid: number): Promise<void> {
  let names: string[] = [];
  try {
    names = await readdir(spool.dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw e;
  }
  for (const f of names) {
    if (/^[0-9A-F]{24}$/.test(f) || (/^[0-9A-F]{24}\./.test(f) && f.endsWith(TEMP_SUFFIX)) || f === WANT_FILE) await removeIfExists(path.join(spool.dir, f));
  }
  const lock = await readLock(spool).catch(() => undefined);
  if (lock?.pid === pid) await removeIfExists(path.join(spool.dir, LOCK_FILE));
  // Empty now unless a get-wal just wrote into it: then it stays, and that is fine.
  await rmdir(spool.dir).catch(() => {});
}

/**
 * A restore_command that serves spooled segments without starting klio at all: a shell `mv`
 * of the spooled file (a rename inside pg_wal), and `klio get-wal` only when it is not there.
 * `getWal` is the complete get-wal command line (shell-quoted, with %f %p and --spool);
 * `spoolDir` is that spool's subdirectory for the repository and cluster: openSpool(...).dir,
 * or `--spool`/spoolId(...) when --spool is relative to the data directory.
 *
 *   mv -f '/data/pg_wal/klio-spool/3f2a…'/%f %p 2>/dev/null || /usr/local/bin/klio get-wal %f %p …
 *
 * Node's start-up (~0.1–0.2 s) per segment is what get-wal costs even when the segment is
 * ready; `mv` costs a few milliseconds. What `mv` may find there is always right for the
 * name (see wal-spool.ts); a missing file falls through to get-wal, which also restarts the
 * prefetcher if it died.
 *
 * With `local` (a repository on a local filesystem), files the archive does not have at all
 * are answered by the shell too, without starting klio: recovery asks for several of those
 * (the next timeline's history file at start and end, the segment after the end of WAL,
 * twice). The test looks for every name get-wal would serve (docs/FORMAT.md) and probes
 * again in the order a segment moves (partial → raw → stored), so a segment that moves while
 * it looks is not missed; anything found goes to get-wal, which checks it. The shell answers
 * "missing" (1) only while the archive's identity file is readable: an unmounted or unreadable
 * repository goes to get-wal too, whose fatal status stops recovery (get-wal's exit contract).
 */
export function restoreCommandWithSpool(getWal: string, spoolDir: string, local?: { archiveDir: string; partial: boolean }): string {
  const fast = `mv -f ${shellQuote([spoolDir])}/%f %p 2>/dev/null`;
  if (!local) return `${fast} || ${getWal}`;
  const a = shellQuote([local.archiveDir]);
  const forms = [`%f${STORED_SUFFIX}`, "%f", ...(local.partial ? [`%f${PARTIAL_SUFFIX}`, "%f"] : []), `%f${STORED_SUFFIX}`];
  const anyForm = [...forms.map((f) => `[ -e ${a}/${f} ]`), `! [ -r ${a}/${IDENTITY_FILE} ]`].join(" || ");
  return `${fast} || { { ${anyForm}; } && ${getWal}; }`;
}
