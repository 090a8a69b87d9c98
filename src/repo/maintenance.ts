// Maintenance: frees the space of chunks no snapshot names, while backups keep running.
//
// 1. Lock (maintenance-state.ts) and wait for index consolidations under way (sessions.ts):
//    from here on only this run replaces index files.
// 2. Survey: list packs, writer sessions and index files; mark every chunk the snapshots name
//    (a bit per index entry, found through the in-memory keys: no object per chunk). Packs no
//    index names are removed at once when no running writer can be about to index them
//    (older than every live session), as are temporary files of dead processes.
// 3. Barrier (phase "swapping"): snapshot commits wait (maintenance-commit.ts); the snapshots
//    committed since the survey are marked too. Then, per pack, the stored bytes of live and
//    dead chunks (a chunk's share of its frame): packs with nothing live are to go; packs
//    mostly garbage have their live frames copied into new packs (bytes as stored, no
//    decoding) and are to go too. The entries left out are kept aside in maintenance/<id>.idx,
//    the plan is recorded, and one new index file with every other entry (moved ones pointing
//    at their new place) supersedes every index file there was. A writer that starts from now
//    on cannot deduplicate against what is to go.
// 4. Free (phase "freeing", commits allowed again): a writer that started before the swap may
//    have deduplicated against a chunk that was left out. When it commits its snapshot it
//    first brings such chunks back itself (an index file with their entries: their packs are
//    still there), so every committed snapshot is restorable at once. Maintenance waits until
//    every session present after the swap has ended, brings back what the snapshots committed
//    since then name (again: it keeps their packs), and only then removes the packs.
//
// A crash at any point leaves a readable repository: until the swap the old index is whole;
// after it, the new one is, and packs are removed only in step 4, which the next run finishes
// from the recorded plan.
import { readdir, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { isPidAlive } from "../util/process-liveness.ts";
import { writeFileDurable } from "../util/durable-fs.ts";
import type { ChunkId } from "./chunk-id.ts";
import { ChunkIndex, loadRun } from "./chunk-index.ts";
import { INDEX_PREFIX, indexKey, packKey, readIndexHead } from "./index-file.ts";
import { writeMerged } from "./index-merge.ts";
import type { Compression } from "./codec.ts";
import { acquireMaintenance, droppedKey, releaseMaintenance, writeMaintenanceState, type MaintenanceState } from "./maintenance-state.ts";
import { bit, mark, markLater, setBit, survey, surveyRetrying, tally, type Survey } from "./maintenance-survey.ts";
import { swap } from "./maintenance-swap.ts";
import { COMMIT_SUFFIX, listMarkers, listSessions, MAINTENANCE_DIR, MERGE_SUFFIX } from "./sessions.ts";
import type { Storage } from "./storage.ts";

/** What names chunks: the snapshots (the repository does not know their format). */
export interface ReferenceSource {
  /** Keys of every object that names chunks, now. */
  list(): Promise<string[]>;
  /**
   * Visits every chunk the object names: first those it names itself, then, after
   * `afterDirect` resolved, those named inside them (a file list's chunks).
   */
  chunksOf(key: string, visit: (id: ChunkId) => void, afterDirect?: () => Promise<void>): Promise<void>;
}

export interface MaintenanceContext {
  root: string;
  storage: Storage;
  dataKey: Uint8Array | null;
  packTargetBytes: number;
  /** Codec of frames written anew, and the chunk id function (a rewritten chunk is checked against its id). */
  compression: Compression;
  chunkId: (data: Uint8Array) => ChunkId;
}

export interface MaintenanceOptions {
  dryRun?: boolean;
  /** A pack is rewritten when at least this share of its bytes is garbage (default 0.5). */
  repackShare?: number;
  /** How long to wait for writers that started before the swap; past it, the freeing is left to the next run. */
  maxWaitMs?: number;
  pollMs?: number;
  log: Logger;
  signal?: AbortSignal;
}

export interface MaintenanceReport {
  dryRun: boolean;
  /** A run that was interrupted (or left its plan), finished first. */
  resumed: string | null;
  snapshots: number;
  chunks: { live: number; dropped: number; broughtBack: number };
  packs: { before: number; removed: number; rewritten: number; written: number; unindexedRemoved: number };
  indexFiles: { before: number; after: number };
  bytes: { before: number; freed: number; written: number; garbageLeft: number };
  tempFilesRemoved: number;
  sessionsRemoved: number;
  /** Set when the freeing waits for these writers (it is finished by the next run). */
  deferred: { sessions: string[]; bytes: number } | null;
  seconds: number;
}

const DEFAULT_MAX_WAIT_MS = 60 * 60_000;
export const LAST_REPORT = `${MAINTENANCE_DIR}/last.json`;

function newReport(dryRun: boolean): MaintenanceReport {
  return {
    dryRun, resumed: null, snapshots: 0, chunks: { live: 0, dropped: 0, broughtBack: 0 },
    packs: { before: 0, removed: 0, rewritten: 0, written: 0, unindexedRemoved: 0 }, indexFiles: { before: 0, after: 0 },
    bytes: { before: 0, freed: 0, written: 0, garbageLeft: 0 }, tempFilesRemoved: 0, sessionsRemoved: 0, deferred: null, seconds: 0,
  };
}

export async function maintainRepository(ctx: MaintenanceContext, refs: ReferenceSource, opts: MaintenanceOptions): Promise<MaintenanceReport> {
  const t0 = performance.now();
  const report = newReport(Boolean(opts.dryRun));
  const finish = () => ((report.seconds = (performance.now() - t0) / 1000), report);
  if (opts.dryRun) {
    const s = await surveyRetrying(ctx, refs, opts);
    await tally(ctx, s, opts);
    describe(report, s);
    report.packs.unindexedRemoved = s.unindexed.length;
    return finish();
  }
  const { state, previous } = await acquireMaintenance(ctx.root);
  try {
    opts.log.info("maintenance.start", { id: state.id, resuming: state.plan !== null });
    await waitForMarkers(ctx.root, MERGE_SUFFIX, opts);
    report.sessionsRemoved = await removeDeadSessions(ctx.root);
    report.tempFilesRemoved = await removeDeadTempFiles(ctx.root);
    if (state.plan) {
      report.resumed = previous?.id ?? state.id;
      if (!(await finishPrevious(ctx, refs, state, opts, report))) return finish();
    }
    // Entries set aside by a run that failed before it recorded its plan: nothing refers to them.
    for (const e of await ctx.storage.list(`${MAINTENANCE_DIR}/`)) if (e.key.endsWith(".idx")) await ctx.storage.remove(e.key);
    const s = await survey(ctx, refs, opts);
    for (const id of s.unindexed) {
      await ctx.storage.remove(packKey(id));
      report.packs.unindexedRemoved++;
      report.bytes.freed += s.packs.get(id)!.size;
    }
    opts.log.info("maintenance.surveyed", { snapshots: s.known.length, unindexed: s.unindexed.length });
    // The barrier: snapshot commits wait until the new index is in place.
    state.phase = "swapping";
    await writeMaintenanceState(ctx.root, state);
    await waitForMarkers(ctx.root, COMMIT_SUFFIX, opts);
    await markLater(refs, s);
    await tally(ctx, s, opts);
    describe(report, s);
    opts.log.info("maintenance.planned", { snapshots: s.known.length, live_chunks: s.liveChunks, remove: s.remove.length, rewrite: s.rewrite.length });
    if (s.remove.length > 0 || s.rewrite.length > 0 || s.heads.length > 1) {
      await swap(ctx, s, state, opts, report);
      if (state.plan) await free(ctx, refs, state, opts, report);
    } else {
      state.phase = "started";
      await writeMaintenanceState(ctx.root, state);
    }
    report.indexFiles.after = (await ctx.storage.list(INDEX_PREFIX)).length;
    await writeFileDurable(path.join(ctx.root, ...LAST_REPORT.split("/")), JSON.stringify({ ...finish(), finishedAt: new Date().toISOString() }) + "\n");
    opts.log.info("maintenance.done", { freed_bytes: report.bytes.freed, written_bytes: report.bytes.written, garbage_left_bytes: report.bytes.garbageLeft, deferred: report.deferred !== null });
    return finish();
  } finally {
    // A recorded plan not carried out (a writer still running, or a failure) is left for the
    // next run, whatever happened: the packs it would free may hold chunks an older backup
    // brings back when it commits, which it does only while the plan is there.
    if (state.plan) await writeMaintenanceState(ctx.root, { ...state, process: null });
    else await releaseMaintenance(ctx.root);
  }
}

function describe(report: MaintenanceReport, s: Survey): void {
  report.snapshots = s.known.length;
  report.chunks.live = s.liveChunks;
  report.packs.before = s.packs.size;
  report.indexFiles.before = s.heads.length;
  report.bytes.before = [...s.packs.values()].reduce((n, p) => n + p.size, 0);
  report.bytes.garbageLeft = Math.round(s.garbageLeft);
  report.packs.removed = s.remove.length;
  report.packs.rewritten = s.rewrite.length;
}

/** Waits until no live process holds a marker of this kind (consolidations, or commits); removes those of dead ones. */
async function waitForMarkers(root: string, suffix: typeof MERGE_SUFFIX | typeof COMMIT_SUFFIX, opts: MaintenanceOptions): Promise<void> {
  for (;;) {
    const markers = await listMarkers(root, suffix);
    for (const m of markers) if (!m.alive) await unlink(m.file).catch(() => {});
    if (!markers.some((m) => m.alive)) return;
    if (opts.signal?.aborted) throw new KlioError("aborted", "maintenance interrupted");
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function removeDeadSessions(root: string): Promise<number> {
  let n = 0;
  for (const s of await listSessions(root)) {
    if (s.alive) continue;
    await unlink(s.file).catch(() => {});
    n++;
  }
  return n;
}

/** Temporary files (name.<pid>-<random>.klio-tmp) of processes that are gone, in the repository's own directories. */
async function removeDeadTempFiles(root: string): Promise<number> {
  let n = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const d of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const file = path.join(dir, d.name);
      if (d.isDirectory()) await walk(file);
      const m = /\.(\d+)(?:-[0-9a-f]+)?\.klio-tmp$/.exec(d.name);
      if (d.isFile() && m && !isPidAlive(Number(m[1]))) {
        await unlink(file).catch(() => {});
        n++;
      }
    }
  };
  for (const top of ["packs", "index", "snapshots", MAINTENANCE_DIR]) await walk(path.join(root, top));
  return n;
}

/** A plan taken over from a run that stopped: finished (true), or still waiting (false). */
async function finishPrevious(ctx: MaintenanceContext, refs: ReferenceSource, state: MaintenanceState, opts: MaintenanceOptions, report: MaintenanceReport): Promise<boolean> {
  const plan = state.plan!;
  if (state.phase === "swapping" && !(await ctx.storage.exists(indexKey(plan.merged)))) {
    // The swap never happened: the old index is whole. Its new packs are unindexed and go in the survey.
    opts.log.info("maintenance.discarded", { merged: plan.merged });
    if (plan.dropped) await ctx.storage.remove(droppedKey(plan.dropped));
    state.phase = "started";
    state.plan = null;
    await writeMaintenanceState(ctx.root, state);
    return true;
  }
  state.phase = "freeing";
  await writeMaintenanceState(ctx.root, state);
  for (const id of plan.replaced) await ctx.storage.remove(indexKey(id));
  if (!(await free(ctx, refs, state, opts, report))) return false;
  state.phase = "started";
  state.plan = null;
  await writeMaintenanceState(ctx.root, state);
  return true;
}

/** Step 5. False when a writer from before the swap still runs after maxWaitMs. */
async function free(ctx: MaintenanceContext, refs: ReferenceSource, state: MaintenanceState, opts: MaintenanceOptions, report: MaintenanceReport): Promise<boolean> {
  const plan = state.plan!;
  const before = new Set((await listSessions(ctx.root)).filter((s) => s.alive).map((s) => s.id));
  const deadline = Date.now() + (opts.maxWaitMs ?? DEFAULT_MAX_WAIT_MS);
  let lastSaid = 0;
  for (;;) {
    const still = (await listSessions(ctx.root)).filter((s) => s.alive && before.has(s.id));
    if (still.length === 0) break;
    if (Date.now() >= deadline || opts.signal?.aborted) {
      report.deferred = { sessions: still.map((s) => `${s.purpose} (pid ${s.process.pid}, since ${s.startedAt})`), bytes: plan.freeBytes };
      opts.log.warn("maintenance.deferred", { waiting_for: report.deferred.sessions, bytes: plan.freeBytes });
      return false;
    }
    if (Date.now() - lastSaid > 60_000) {
      lastSaid = Date.now();
      opts.log.info("maintenance.waiting", { writers: still.map((s) => s.purpose) });
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 1000));
  }

  // The index as it is now: writers that committed meanwhile brought back what they used
  // themselves; their packs stay, and those chunks need no second entry.
  const current = new ChunkIndex(ctx.storage, ctx.dataKey);
  await current.refresh();
  const keep = new Set(current.loadedRuns.flatMap((r) => r.head.packs));
  if (plan.dropped) {
    const known = new Set(plan.known);
    const names = async (visit: (id: ChunkId) => void, afterDirect: () => Promise<void>) => {
      for (const key of await refs.list()) if (!known.has(key)) await refs.chunksOf(key, visit, afterDirect);
    };
    const back = await bringBack(ctx, plan.dropped, names, (id) => current.has(id));
    if (back) {
      for (const id of back.packs) keep.add(id);
      report.chunks.broughtBack += back.chunks;
      if (back.chunks > 0) opts.log.info("maintenance.brought_back", { chunks: back.chunks, packs: back.packs.size });
    }
  }
  for (const id of plan.free) {
    if (keep.has(id)) continue;
    const key = packKey(id);
    const size = await stat(path.join(ctx.root, ...key.split("/"))).then((st) => st.size, () => 0);
    await ctx.storage.remove(key);
    report.bytes.freed += size;
  }
  if (plan.dropped) await ctx.storage.remove(droppedKey(plan.dropped));
  state.plan = null;
  return true;
}

/**
 * Writes an index file with the entries of the dropped file (maintenance/<id>.idx) whose
 * chunks `names` visits, unless `present` says the index has them already; null when the
 * dropped file is gone (its maintenance finished). `names` calls its second argument after
 * visiting what an object names itself and before reading chunks those name: what it visited
 * is brought back then, so that those chunks can be read.
 */
export async function bringBack(
  ctx: MaintenanceContext,
  dropped: string,
  names: (visit: (id: ChunkId) => void, afterDirect: () => Promise<void>) => Promise<void>,
  present: (id: ChunkId) => boolean = () => false,
): Promise<{ chunks: number; packs: Set<string> } | null> {
  const key = droppedKey(dropped);
  let size: number;
  try {
    size = (await stat(path.join(ctx.root, ...key.split("/")))).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  const run = await loadRun(ctx.storage, await readIndexHead(ctx.storage, key, ctx.dataKey, size), ctx.dataKey);
  const wanted = new Uint8Array(Math.ceil(run.count / 8));
  const taken = new Uint8Array(wanted.length);
  const packs = new Set<string>();
  let chunks = 0;
  const writeWanted = async () => {
    let count = 0;
    for (let n = 0; n < run.count; n++) if (bit(wanted, n) && !bit(taken, n)) count++;
    if (count === 0) return;
    let n = 0;
    await writeMerged(ctx.storage, ctx.dataKey, [run], {
      packs: run.head.packs, count, superseded: [],
      place: (_entry, _at, packId) => {
        const pos = n++;
        if (!bit(wanted, pos) || bit(taken, pos)) return false;
        setBit(taken, pos);
        packs.add(packId);
        return true;
      },
    });
    chunks += count;
  };
  await names((id) => void (present(id) || mark([run], [wanted], id)), writeWanted);
  await writeWanted();
  return { chunks, packs };
}
