// Sessions: how maintenance knows which processes may still need data it is about to free,
// without a fixed delay (Kopia waits 24 hours). A writer (a backup) registers a session file
// before it looks at the index, keeps it while it deduplicates against the index, and removes
// it only after the snapshot that names its chunks is written; a long reader (a restore)
// holds one while it reads. Maintenance frees space only once every session that could have
// seen the old index has ended (maintenance.ts).
//
// A session of a process on this host counts as alive while that process runs (pid and start
// time); one of another host (a repository on shared storage) while its heartbeat, the file's
// modification time, is younger than SESSION_STALE_MS.
//
// Index consolidation (chunk-index.ts) must not run while maintenance rewrites the index: a
// writer first puts a merge marker beside its session files, then looks for maintenance's
// state file; maintenance first writes its state file, then waits for the markers it sees.
// Each looks after writing its own, so at least one of them sees the other.
import { readdir, readFile, stat, unlink, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import process from "node:process";
import { randomBytes } from "node:crypto";
import { writeFileDurable, fsyncDir } from "../util/durable-fs.ts";
import { KlioError } from "../util/errors.ts";
import { parseStamp, processState, thisProcess, type ProcessStamp } from "../util/process-liveness.ts";
import { makeDirectories } from "../util/make-directories.ts";

export const SESSIONS_DIR = "sessions";
export const MAINTENANCE_DIR = "maintenance";
export const MAINTENANCE_STATE = "state.json";
const SESSION_SUFFIX = ".session";
export const MERGE_SUFFIX = ".merging";
export const COMMIT_SUFFIX = ".committing";
const HEARTBEAT_MS = 60_000;
/** A session of another host without a heartbeat for this long is taken as ended. */
export const SESSION_STALE_MS = 15 * 60_000;

export interface SessionInfo {
  id: string;
  purpose: string;
  startedAt: string;
  process: ProcessStamp;
  file: string;
  alive: boolean;
}

function sessionsDir(root: string): string {
  return path.join(root, SESSIONS_DIR);
}

/** A registered writer or reader; end() it once what it wrote is named by a snapshot (or abandoned), or once it read what it needed. */
export class RepoSession {
  private timer: ReturnType<typeof setInterval> | null = null;
  private ended = false;

  private constructor(readonly id: string, private readonly file: string) {}

  /**
   * `leaseMs`: the session lapses when not touched for this long, even while its process runs
   * (the daemon holds such sessions for readers that reach the repository over its API).
   */
  static async begin(root: string, purpose: string, opts: { leaseMs?: number } = {}): Promise<RepoSession> {
    const id = `${Date.now().toString(36)}-${randomBytes(6).toString("hex")}`;
    const dir = sessionsDir(root);
    await makeDirectories(dir, 0o750);
    const file = path.join(dir, id + SESSION_SUFFIX);
    const body = { format: "klio-session", version: 1, id, purpose, startedAt: new Date().toISOString(), process: thisProcess(), ...(opts.leaseMs ? { leaseMs: opts.leaseMs } : {}) };
    // Durable: after a crash of the machine every process is gone, but a session must never
    // be missed by a maintenance that runs while this writer does.
    await writeFileDurable(file, JSON.stringify(body) + "\n");
    await fsyncDir(root).catch(() => {});
    const s = new RepoSession(id, file);
    // A lease is kept alive by touch() alone.
    if (!opts.leaseMs) {
      s.timer = setInterval(() => void utimes(file, new Date(), new Date()).catch(() => {}), HEARTBEAT_MS);
      s.timer.unref?.();
    }
    return s;
  }

  /**
   * Throws when maintenance took this session for dead (its host's clock, or a heartbeat
   * stalled for SESSION_STALE_MS): what it deduplicated against may be gone, so what it
   * writes must not be recorded.
   */
  async confirm(): Promise<void> {
    try {
      await stat(this.file);
    } catch {
      throw new KlioError("session-expired", `the repository's maintenance took this writer for dead (session ${this.id}): the backup is not recorded; run it again`);
    }
  }

  /** Marks the session as in use now (a lease's clock starts again). */
  async touch(): Promise<void> {
    await utimes(this.file, new Date(), new Date()).catch(() => {});
  }

  async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    if (this.timer) clearInterval(this.timer);
    await unlink(this.file).catch(() => {});
  }
}

async function readStampFile(file: string): Promise<{ body: Record<string, unknown> | null; mtimeMs: number } | null> {
  try {
    const [text, st] = await Promise.all([readFile(file, "utf8"), stat(file)]);
    let body: Record<string, unknown> | null = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    return { body, mtimeMs: st.mtimeMs };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

function aliveByStamp(p: ProcessStamp | null, mtimeMs: number, now: number): boolean {
  const state = p ? processState(p) : "unknown";
  return state === "alive" || (state === "unknown" && now - mtimeMs < SESSION_STALE_MS);
}

/** The registered sessions, each with whether its writer still runs. */
export async function listSessions(root: string, now = Date.now()): Promise<SessionInfo[]> {
  const out: SessionInfo[] = [];
  for (const name of await readdir(sessionsDir(root)).catch(() => [] as string[])) {
    if (!name.endsWith(SESSION_SUFFIX)) continue;
    const file = path.join(sessionsDir(root), name);
    const read = await readStampFile(file);
    if (!read) continue;
    const p = parseStamp(read.body?.process);
    const lease = Number(read.body?.leaseMs);
    const lapsed = Number.isFinite(lease) && lease > 0 && now - read.mtimeMs >= lease;
    out.push({
      id: name.slice(0, -SESSION_SUFFIX.length),
      purpose: String(read.body?.purpose ?? "?"),
      startedAt: String(read.body?.startedAt ?? new Date(read.mtimeMs).toISOString()),
      process: p ?? { pid: 0, host: "?", start: null },
      file,
      alive: !lapsed && aliveByStamp(p, read.mtimeMs, now),
    });
  }
  return out;
}

/** Markers of index consolidations (".merging") or snapshot commits (".committing") under way. */
export async function listMarkers(root: string, suffix: typeof MERGE_SUFFIX | typeof COMMIT_SUFFIX, now = Date.now()): Promise<{ file: string; alive: boolean }[]> {
  const out: { file: string; alive: boolean }[] = [];
  for (const name of await readdir(sessionsDir(root)).catch(() => [] as string[])) {
    if (!name.endsWith(suffix)) continue;
    const file = path.join(sessionsDir(root), name);
    const read = await readStampFile(file);
    if (read) out.push({ file, alive: aliveByStamp(parseStamp(read.body), read.mtimeMs, now) });
  }
  return out;
}

/** Puts a marker (pid and start time) beside the session files; returns its removal. */
export async function putMarker(root: string, suffix: typeof MERGE_SUFFIX | typeof COMMIT_SUFFIX): Promise<() => Promise<void>> {
  const dir = sessionsDir(root);
  await makeDirectories(dir, 0o750);
  const marker = path.join(dir, `${process.pid}-${randomBytes(6).toString("hex")}${suffix}`);
  await writeFile(marker, JSON.stringify(thisProcess()) + "\n", { flag: "wx", mode: 0o640 });
  return () => unlink(marker).catch(() => {});
}

export function maintenanceStateFile(root: string): string {
  return path.join(root, MAINTENANCE_DIR, MAINTENANCE_STATE);
}

/**
 * Runs `merge` unless maintenance is under way (then returns false without running it), with
 * a merge marker in place the whole time (see the top of this file).
 */
export async function guardedMerge(root: string, merge: () => Promise<void>): Promise<boolean> {
  const removeMarker = await putMarker(root, MERGE_SUFFIX);
  try {
    try {
      await stat(maintenanceStateFile(root));
      return false;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    await merge();
    return true;
  } finally {
    await removeMarker();
  }
}
