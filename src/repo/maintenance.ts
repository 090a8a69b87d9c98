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
import { randomBytes } from "node:crypto";
import { readdir, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { KlioError, isKlioError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { isPidAlive } from "../util/process-liveness.ts";
import { writeFileDurable } from "../util/durable-fs.ts";
import { CHUNK_ID_BYTES, type ChunkId } from "./chunk-id.ts";
import { IndexRun, idKey } from "./index-run.ts";
import { ChunkIndex, loadRun } from "./chunk-index.ts";
import { ENTRY_BYTES, INDEX_PREFIX, decodeEntry, encodeEntry, hexOf, indexIdOfKey, indexKey, packIdOfKey, packKey, readIndexBlocks, readIndexHead, type IndexHead } from "./index-file.ts";
import { writeMerged, type MergePlan } from "./index-merge.ts";
import { PACK_HEADER, PACK_MAGIC, PACK_VERSION } from "./pack-writer.ts";
import { chunkOfFrame, decodeFrame, encodeFrame } from "./blob.ts";
import { Compressor, type Compression } from "./codec.ts";
import { concatBytes } from "../util/bytes.ts";
import { acquireMaintenance, releaseMaintenance, writeMaintenanceState, type MaintenancePlan, type MaintenanceState } from "./maintenance-state.ts";
import { COMMIT_SUFFIX, listMarkers, listSessions, MAINTENANCE_DIR, MERGE_SUFFIX } from "./sessions.ts";
import type { ObjectWriter, Storage } from "./storage.ts";

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

const DEFAULT_REPACK_SHARE = 0.5;
const DEFAULT_MAX_WAIT_MS = 60 * 60_000;
/** A pack no index names is another process's until it is this much older than every live session. */
const UNINDEXED_GRACE_MS = 60_000;
export const LAST_REPORT = `${MAINTENANCE_DIR}/last.json`;

export function droppedKey(fileId: string): string {
  return `${MAINTENANCE_DIR}/${fileId}.idx`;
}

interface PackTally {
  entries: number;
  liveEntries: number;
  liveBytes: number;
}

interface Survey {
  packs: Map<string, { size: number; modified: number }>;
  /** Every index file present, and the runs of those no present file supersedes. */
  heads: IndexHead[];
  runs: IndexRun[];
  live: Uint8Array[];
  known: string[];
  tally: Map<string, PackTally>;
  remove: string[];
  rewrite: string[];
  /** Frames of the packs to rewrite. */
  frames: Frames;
  unindexed: string[];
  liveChunks: number;
  garbageLeft: number;
}

function setBit(bits: Uint8Array, n: number): void {
  bits[n >> 3]! |= 1 << (n & 7);
}
function bit(bits: Uint8Array, n: number): boolean {
  return (bits[n >> 3]! & (1 << (n & 7))) !== 0;
}

/** Marks every entry whose key is the id's; whether any was. */
function mark(runs: readonly IndexRun[], bits: readonly Uint8Array[], id: ChunkId): boolean {
  const [p, w0, w1, w2] = idKey(id);
  let found = false;
  runs.forEach((r, i) => {
    for (let pos = r.lowerBound(p, w0, w1, w2); r.matches(pos, p, w0, w1, w2); pos++) {
      setBit(bits[i]!, pos);
      found = true;
    }
  });
  return found;
}

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

async function surveyRetrying(ctx: MaintenanceContext, refs: ReferenceSource, opts: MaintenanceOptions): Promise<Survey> {
  // Without the lock (a dry run), a consolidation may remove a file being read: look again.
  for (let attempt = 0; ; attempt++) {
    try {
      return await survey(ctx, refs, opts);
    } catch (e) {
      if (attempt < 3 && isKlioError(e) && e.code === "not-found") continue;
      throw e;
    }
  }
}

async function survey(ctx: MaintenanceContext, refs: ReferenceSource, opts: MaintenanceOptions): Promise<Survey> {
  const { storage, dataKey } = ctx;
  // Packs first, then sessions, then the index: a pack listed here whose writer still runs
  // has a session listed below, and one whose writer ended is named by an index listed after.
  const packs = new Map<string, { size: number; modified: number }>();
  for (const e of await storage.list("packs/")) {
    const id = packIdOfKey(e.key);
    if (id) packs.set(id, { size: e.size, modified: e.modified ?? Date.now() });
  }
  const sessions = (await listSessions(ctx.root)).filter((s) => s.alive);
  const heads: IndexHead[] = [];
  for (const e of await storage.list(INDEX_PREFIX)) {
    if (indexIdOfKey(e.key) === null) continue;
    try {
      heads.push(await readIndexHead(storage, e.key, dataKey, e.size));
    } catch (err) {
      if (isKlioError(err) && err.code === "not-found") throw err;
      throw new KlioError("corrupt-index", `maintenance needs every index file readable, and ${e.key} is not (${(err as Error).message}): run \`klio repo check\``);
    }
  }
  // As readers do (chunk-index.ts): a file that a present file supersedes is skipped.
  const superseded = new Set(heads.flatMap((h) => h.superseded));
  const runs: IndexRun[] = [];
  for (const h of heads) if (!superseded.has(h.fileId)) runs.push(await loadRun(storage, h, dataKey));
  const live = runs.map((r) => new Uint8Array(Math.ceil(r.count / 8)));

  // Mark. A snapshot that cannot be read stops everything: what it names is unknown.
  const s: Survey = { packs, heads, runs, live, known: [], tally: new Map(), remove: [], rewrite: [], frames: new Map(), unindexed: [], liveChunks: 0, garbageLeft: 0 };
  const keys = await refs.list();
  for (const key of keys) {
    await markSnapshot(refs, s, key);
    s.known.push(key);
    if (s.known.length % 10 === 0) opts.log.debug("maintenance.marking", { done: s.known.length, of: keys.length });
    if (opts.signal?.aborted) throw new KlioError("aborted", "maintenance interrupted");
  }
  const named = new Set(heads.flatMap((h) => h.packs));
  const oldestSession = Math.min(...sessions.map((x) => Date.parse(x.startedAt) || 0));
  const unindexed = [...packs].filter(([id, p]) => !named.has(id) && p.modified + UNINDEXED_GRACE_MS < oldestSession).map(([id]) => id);
  s.unindexed = unindexed;
  return s;
}

/** Marks what the snapshots committed since the survey name (under the barrier: no more come). */
async function markLater(refs: ReferenceSource, s: Survey): Promise<void> {
  const known = new Set(s.known);
  for (const key of await refs.list()) {
    if (known.has(key)) continue;
    await markSnapshot(refs, s, key);
    s.known.push(key);
  }
}

async function markSnapshot(refs: ReferenceSource, s: Survey, key: string): Promise<void> {
  try {
    await refs.chunksOf(key, (id) => void mark(s.runs, s.live, id));
  } catch (e) {
    throw new KlioError("unreadable-snapshot", `maintenance cannot tell what ${key} needs (${(e as Error).message}); nothing was freed: repair or delete that backup first`);
  }
}

/** Per pack, how much of it is live; which packs go whole and which are rewritten. */
async function tally(ctx: MaintenanceContext, s: Survey, opts: MaintenanceOptions): Promise<void> {
  const { storage, dataKey } = ctx;
  const { runs, live, packs } = s;
  const tally = new Map<string, PackTally>();
  let liveChunks = 0;
  for (let i = 0; i < runs.length; i++) {
    const r = runs[i]!;
    let n = 0;
    for await (const block of readIndexBlocks(storage, r.head, dataKey)) {
      for (let at = 0; at < block.length; at += ENTRY_BYTES, n++) {
        const e = decodeEntry(block, at);
        const packId = r.head.packs[e.pack]!;
        let t = tally.get(packId);
        if (!t) tally.set(packId, (t = { entries: 0, liveEntries: 0, liveBytes: 0 }));
        t.entries++;
        if (bit(live[i]!, n)) {
          t.liveEntries++;
          t.liveBytes += (e.length * e.plainLength) / Math.max(1, e.frameLength);
          liveChunks++;
        }
      }
    }
  }

  // A chunk's share of its frame's stored bytes: what rewriting a pack without its dead
  // chunks saves, about (frames are compressed anew).
  const repackShare = opts.repackShare ?? DEFAULT_REPACK_SHARE;
  const remove: string[] = [];
  const rewrite: string[] = [];
  let garbageLeft = 0;
  for (const [id, t] of tally) {
    const p = packs.get(id);
    if (!p) continue; // named but missing: repo check reports it
    const garbage = Math.max(0, p.size - PACK_HEADER - t.liveBytes);
    if (t.liveEntries === 0) remove.push(id);
    else if (garbage >= repackShare * p.size) rewrite.push(id);
    else garbageLeft += garbage;
  }
  const frames = await scanFrames(ctx, s, new Set(rewrite));
  Object.assign(s, { tally, remove, rewrite, liveChunks, garbageLeft, frames });
}

/** A chunk of a frame being rewritten. */
interface FrameChunk {
  id: Uint8Array;
  plainLength: number;
  live: boolean;
}

/** A frame of a pack being rewritten: its stored bytes, and its chunks by offset in its plain bytes. */
interface FrameInfo {
  length: number;
  flags: number;
  frameLength: number;
  chunks: Map<number, FrameChunk>;
}

/** Per pack, its frames by offset. */
type Frames = Map<string, Map<number, FrameInfo>>;

async function scanFrames(ctx: MaintenanceContext, s: Survey, of: ReadonlySet<string>): Promise<Frames> {
  const frames: Frames = new Map();
  for (let i = 0; i < s.runs.length; i++) {
    const r = s.runs[i]!;
    let n = 0;
    for await (const block of readIndexBlocks(ctx.storage, r.head, ctx.dataKey)) {
      for (let at = 0; at < block.length; at += ENTRY_BYTES, n++) {
        const e = decodeEntry(block, at);
        const packId = r.head.packs[e.pack]!;
        if (!of.has(packId)) continue;
        let f = frames.get(packId);
        if (!f) frames.set(packId, (f = new Map()));
        let frame = f.get(e.offset);
        if (!frame) f.set(e.offset, (frame = { length: e.length, flags: e.flags, frameLength: e.frameLength, chunks: new Map() }));
        // Two entries for one chunk (two index files naming the pack): one chunk, live if either is.
        const had = frame.chunks.get(e.inFrame);
        frame.chunks.set(e.inFrame, { id: e.id.slice(), plainLength: e.plainLength, live: (had?.live ?? false) || bit(s.live[i]!, n) });
      }
    }
  }
  return frames;
}

/** Where a chunk of a rewritten pack is now. */
interface Moved {
  pack: string;
  offset: number;
  length: number;
  flags: number;
  frameLength: number;
  inFrame: number;
}

/**
 * Writes the live chunks of the packs to rewrite into new packs: a frame whose chunks are all
 * live as it is stored; one with dead chunks decoded, the live ones checked against their ids
 * and stored as a new frame. Returns where each live chunk went (by pack:offset:inFrame).
 */
async function repack(ctx: MaintenanceContext, s: Survey, report: MaintenanceReport): Promise<{ moved: Map<string, Moved>; newPacks: string[] }> {
  const moved = new Map<string, Moved>();
  const newPacks: string[] = [];
  const compressor = new Compressor(ctx.compression);
  let out: { id: string; file: ObjectWriter; bytes: number } | null = null;
  const append = async (stored: Uint8Array): Promise<{ pack: string; offset: number }> => {
    if (out !== null && out.bytes + stored.length > ctx.packTargetBytes) {
      await out.file.commit();
      out = null;
    }
    if (out === null) {
      const id = hexOf(randomBytes(16));
      const file = await ctx.storage.create(packKey(id));
      const head = new Uint8Array(PACK_HEADER);
      head.set(PACK_MAGIC, 0);
      new DataView(head.buffer).setUint32(8, PACK_VERSION);
      await file.write(head);
      out = { id, file, bytes: PACK_HEADER };
      newPacks.push(id);
    }
    const at = { pack: out.id, offset: out.bytes };
    await out.file.write(stored);
    out.bytes += stored.length;
    report.bytes.written += stored.length;
    return at;
  };
  for (const packId of s.rewrite) {
    const key = packKey(packId);
    const list = [...(s.frames.get(packId) ?? new Map<number, FrameInfo>()).entries()].sort((a, b) => a[0] - b[0]);
    for (const [offset, f] of list) {
      const chunks = [...f.chunks.entries()].sort((a, b) => a[0] - b[0]);
      const live = chunks.filter(([, c]) => c.live);
      if (live.length === 0) continue;
      const stored = await ctx.storage.getRange(key, offset, f.length);
      if (live.length === chunks.length) {
        const to = await append(stored);
        for (const [inFrame] of live) moved.set(`${packId}:${offset}:${inFrame}`, { ...to, length: f.length, flags: f.flags, frameLength: f.frameLength, inFrame });
        continue;
      }
      const plain = decodeFrame(ctx.dataKey, stored, f, key);
      const parts = live.map(([inFrame, c]) => chunkOfFrame(ctx.chunkId, c.id, plain, { inFrame, plainLength: c.plainLength }, key));
      const joined = concatBytes(parts);
      const encoded = encodeFrame(ctx.dataKey, compressor, joined);
      const to = await append(encoded.stored);
      let inNew = 0;
      live.forEach(([inFrame], k) => {
        moved.set(`${packId}:${offset}:${inFrame}`, { ...to, length: encoded.stored.length, flags: encoded.flags, frameLength: joined.length, inFrame: inNew });
        inNew += parts[k]!.length;
      });
    }
  }
  if (out !== null) await (out as { file: ObjectWriter }).file.commit();
  report.packs.written = newPacks.length;
  return { moved, newPacks };
}

function setPack(entry: Uint8Array, at: number, pack: number): void {
  new DataView(entry.buffer, entry.byteOffset + at + CHUNK_ID_BYTES, 4).setUint32(0, pack);
}

function movedKey(packId: string, entry: Uint8Array, at: number): string {
  const e = decodeEntry(entry, at);
  return `${packId}:${e.offset}:${e.inFrame}`;
}

/** Steps 3 and 4: new packs, the entries left out kept aside, the plan recorded, the new index in place. */
async function swap(ctx: MaintenanceContext, s: Survey, state: MaintenanceState, opts: MaintenanceOptions, report: MaintenanceReport): Promise<void> {
  const { moved, newPacks } = await repack(ctx, s, report);
  const gone = new Set([...s.remove, ...s.rewrite]);
  const total = s.runs.reduce((n, r) => n + r.count, 0);
  // Every entry of a pack that goes, but those of chunks that moved.
  let droppedCount = 0;
  for (const id of gone) droppedCount += s.tally.get(id)!.entries;
  for (let i = 0; i < s.runs.length; i++) {
    const r = s.runs[i]!;
    for await (const block of readIndexBlocks(ctx.storage, r.head, ctx.dataKey))
      for (let at = 0; at < block.length; at += ENTRY_BYTES) {
        const packId = r.head.packs[decodeEntry(block, at).pack]!;
        if (gone.has(packId) && moved.has(movedKey(packId, block, at))) droppedCount--;
      }
  }
  report.chunks.dropped = droppedCount;

  const dropPacks = [...gone];
  const dropNo = new Map(dropPacks.map((p, i) => [p, i]));
  const keepPacks = [...new Set(s.runs.flatMap((r) => r.head.packs))].filter((p) => !gone.has(p)).concat(newPacks);
  const keepNo = new Map(keepPacks.map((p, i) => [p, i]));
  const isMoved = (packId: string, entry: Uint8Array, at: number) => moved.get(movedKey(packId, entry, at));

  let dropped: string | null = null;
  if (droppedCount > 0) {
    dropped = hexOf(randomBytes(16));
    const plan: MergePlan = {
      packs: dropPacks, count: droppedCount, superseded: [], fileId: dropped, keyOf: droppedKey,
      place: (entry, at, packId) => {
        if (!gone.has(packId) || isMoved(packId, entry, at)) return false;
        setPack(entry, at, dropNo.get(packId)!);
        return true;
      },
    };
    await writeMerged(ctx.storage, ctx.dataKey, s.runs, plan);
  }
  const merged = hexOf(randomBytes(16));
  const mp: MaintenancePlan = {
    merged, replaced: s.heads.map((h) => h.fileId), dropped, free: dropPacks,
    freeBytes: dropPacks.reduce((n, id) => n + s.packs.get(id)!.size, 0), known: s.known,
  };
  state.plan = mp;
  await writeMaintenanceState(ctx.root, state);
  opts.log.info("maintenance.swapping", { merged, dropped_entries: droppedCount, free_packs: dropPacks.length });
  await writeMerged(ctx.storage, ctx.dataKey, s.runs, {
    packs: keepPacks, count: total - droppedCount, superseded: mp.replaced, fileId: merged,
    place: (entry, at, packId) => {
      if (!gone.has(packId)) {
        setPack(entry, at, keepNo.get(packId)!);
        return true;
      }
      const to = isMoved(packId, entry, at);
      if (!to) return false;
      const e = decodeEntry(entry, at);
      encodeEntry(entry, at, { id: e.id, pack: keepNo.get(to.pack)!, offset: to.offset, length: to.length, flags: to.flags, plainLength: e.plainLength, frameLength: to.frameLength, inFrame: to.inFrame });
      return true;
    },
  });
  state.phase = "freeing";
  await writeMaintenanceState(ctx.root, state);
  opts.log.info("maintenance.swapped", { merged });
  for (const id of mp.replaced) await ctx.storage.remove(indexKey(id));
  if (dropPacks.length === 0) state.plan = null;
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
