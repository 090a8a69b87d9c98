// Maintenance's survey (maintenance.ts, steps 2 and 3): which chunks the snapshots name,
// marked as a bit per index entry through the in-memory keys (no object per chunk); how much
// of each pack is live; which packs go whole, which are rewritten, which no index names.
import { isKlioError, KlioError } from "../util/errors.ts";
import type { ChunkId } from "./chunk-id.ts";
import { IndexRun, idKey } from "./index-run.ts";
import { loadRun } from "./chunk-index.ts";
import { ENTRY_BYTES, INDEX_PREFIX, decodeEntry, indexIdOfKey, packIdOfKey, readIndexBlocks, readIndexHead, type IndexHead } from "./index-file.ts";
import { PACK_HEADER } from "./pack-writer.ts";
import { listSessions } from "./sessions.ts";
import type { MaintenanceContext, MaintenanceOptions, ReferenceSource } from "./maintenance.ts";

const DEFAULT_REPACK_SHARE = 0.5;
/** A pack no index names is another process's until it is this much older than every live session. */
const UNINDEXED_GRACE_MS = 60_000;

interface PackTally {
  entries: number;
  liveEntries: number;
  liveBytes: number;
}

export interface Survey {
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

export function setBit(bits: Uint8Array, n: number): void {
  bits[n >> 3]! |= 1 << (n & 7);
}
export function bit(bits: Uint8Array, n: number): boolean {
  return (bits[n >> 3]! & (1 << (n & 7))) !== 0;
}

/** Marks every entry whose key is the id's; whether any was. */
export function mark(runs: readonly IndexRun[], bits: readonly Uint8Array[], id: ChunkId): boolean {
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

export async function surveyRetrying(ctx: MaintenanceContext, refs: ReferenceSource, opts: MaintenanceOptions): Promise<Survey> {
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

export async function survey(ctx: MaintenanceContext, refs: ReferenceSource, opts: MaintenanceOptions): Promise<Survey> {
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
export async function markLater(refs: ReferenceSource, s: Survey): Promise<void> {
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
export async function tally(ctx: MaintenanceContext, s: Survey, opts: MaintenanceOptions): Promise<void> {
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
export interface FrameInfo {
  length: number;
  flags: number;
  frameLength: number;
  chunks: Map<number, FrameChunk>;
}

/** Per pack, its frames by offset. */
export type Frames = Map<string, Map<number, FrameInfo>>;

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
