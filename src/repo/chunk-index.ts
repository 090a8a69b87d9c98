// The repository's chunk index in memory, bounded by design (DESIGN invariant 6): for each
// index file a "run" (index-run.ts), 12 bytes per chunk in typed arrays and no JavaScript
// object per chunk. has() searches every run; where a chunk is (pack, offset, length) is read
// from the index file's entry block on demand, and the full 32-byte id compared there.
//
// Dedup decisions (has) compare the first 112 bits of the id: a false match between two
// different chunks needs about 2^56 chunks to become likely (a repository of 10 million has
// odds of 1 in 10^19 per lookup). readChunk compares all 256 bits and verifies the data's
// hash, so nothing wrong is ever returned.
import { chunkIdHex, type ChunkId } from "./chunk-id.ts";
import { IndexRun, idKey } from "./index-run.ts";
import {
  ENTRY_BYTES,
  INDEX_PREFIX,
  compareIds,
  decodeEntry,
  indexIdOfKey,
  readIndexBlock,
  readIndexBlocks,
  readIndexHead,
  copyLocation,
  entryOfLocation,
  LOCATION_WORDS,
  readIndexKeys,
  type IndexEntry,
  type IndexHead,
} from "./index-file.ts";
import type { Storage } from "./storage.ts";
import { isKlioError, KlioError } from "../util/errors.ts";
import { chooseMerge, mergeRuns } from "./index-merge.ts";

/** Decoded entry blocks kept for lookups (14 KB each). */
const BLOCK_CACHE = 256;
/** Location tables (24 bytes per entry) kept for readers in all: 64 MB, about 2.8 million chunks. */
const LOCATION_BUDGET = 64 * 1024 * 1024;

export interface ChunkLocation {
  packId: string;
  entry: IndexEntry;
  indexKey: string;
}

export interface IndexProblem {
  key: string;
  message: string;
}

export class ChunkIndex {
  private runs: IndexRun[] = [];
  private merging: Promise<void> | null = null;
  /** Runs whose files turned out damaged when merging: left alone. */
  private readonly unmergeable = new Set<string>();
  private readonly blockCache = new Map<string, Uint8Array>();
  private readonly locations = new Map<IndexRun, Promise<Uint32Array>>();
  private locationBytes = 0;
  /** Index files that failed to load at the last refresh. */
  unreadable: IndexProblem[] = [];

  constructor(
    private readonly storage: Storage,
    private readonly dataKey: Uint8Array | null,
    /** Runs a consolidation unless the repository's maintenance is rewriting the index (sessions.ts). */
    private readonly mergeGuard: (merge: () => Promise<void>) => Promise<boolean> = async (merge) => (await merge(), true),
  ) {}

  get loadedRuns(): readonly IndexRun[] {
    return this.runs;
  }

  get chunkCount(): number {
    return this.runs.reduce((n, r) => n + r.count, 0);
  }

  has(id: ChunkId): boolean {
    const [p, w0, w1, w2] = idKey(id);
    for (const r of this.runs) if (r.matches(r.lowerBound(p, w0, w1, w2), p, w0, w1, w2)) return true;
    return false;
  }

  /** Where the chunk is stored, comparing the full id; null when no index names it. */
  async locate(id: ChunkId): Promise<ChunkLocation | null> {
    const [p, w0, w1, w2] = idKey(id);
    for (const r of this.runs) {
      for (let pos = r.lowerBound(p, w0, w1, w2); r.matches(pos, p, w0, w1, w2); pos++) {
        const e = await this.entryAt(r, pos);
        if (compareIds(e.id, 0, id, 0) !== 0) continue;
        const packId = r.head.packs[e.pack];
        if (packId === undefined) throw new KlioError("corrupt-index", `index file ${r.head.key} is damaged: chunk ${chunkIdHex(id)} names pack number ${e.pack} of ${r.head.packs.length}`);
        return { packId, entry: e, indexKey: r.head.key };
      }
    }
    return null;
  }

  /**
   * Where the chunk is, for a reader that checks the data it gets against the full id (a
   * restore): the 112-bit key finds the entry, and its location comes from the run's location
   * table, read whole on first use. A restore asks for chunks in file order, which is random
   * order in the index: through the block cache every lookup of a large backup read a block
   * (a 5 GB restore took 100 s). Beyond LOCATION_BUDGET, lookups fall back to locate().
   */
  async locateForRead(id: ChunkId): Promise<ChunkLocation | null> {
    const [p, w0, w1, w2] = idKey(id);
    for (const r of this.runs) {
      const pos = r.lowerBound(p, w0, w1, w2);
      if (!r.matches(pos, p, w0, w1, w2)) continue;
      let table = this.locations.get(r);
      if (!table) {
        const bytes = r.count * LOCATION_WORDS * 4;
        if (this.locationBytes + bytes > LOCATION_BUDGET) return this.locate(id);
        this.locationBytes += bytes;
        const loading = loadLocations(this.storage, r, this.dataKey);
        this.locations.set(r, loading);
        // A failed load is not kept: the next lookup tries again (and reports the damage).
        loading.catch(() => {
          if (this.locations.get(r) !== loading) return;
          this.locations.delete(r);
          this.locationBytes -= bytes;
        });
        table = loading;
      }
      const entry = entryOfLocation(id, await table, pos * LOCATION_WORDS);
      const packId = r.head.packs[entry.pack];
      if (packId === undefined) throw new KlioError("corrupt-index", `index file ${r.head.key} is damaged: chunk ${chunkIdHex(id)} names pack number ${entry.pack} of ${r.head.packs.length}`);
      return { packId, entry, indexKey: r.head.key };
    }
    return null;
  }

  /**
   * The error for a chunk no loaded index names. When index files could not be read at the
   * last refresh, one of them may be the one that names it: they are named as the likely
   * cause, rather than leaving the chunk's absence unexplained.
   */
  missingChunk(id: ChunkId, root: string): KlioError {
    const what = `chunk ${chunkIdHex(id)} is not in the repository ${root}`;
    if (this.unreadable.length === 0) return new KlioError("missing-chunk", what);
    return new KlioError("missing-chunk", `${what}; a damaged index file may be what names it: ${this.unreadable.map((u) => u.message).join("; ")} (klio repo check reports it)`);
  }

  private async entryAt(r: IndexRun, pos: number): Promise<IndexEntry> {
    const b = Math.floor(pos / r.head.entriesPerBlock);
    const ck = `${r.head.fileId}:${b}`;
    let plain = this.blockCache.get(ck);
    if (plain) {
      this.blockCache.delete(ck);
    } else {
      plain = await readIndexBlock(this.storage, r.head, b, this.dataKey);
      if (this.blockCache.size >= BLOCK_CACHE) this.blockCache.delete(this.blockCache.keys().next().value!);
    }
    this.blockCache.set(ck, plain);
    return decodeEntry(plain, (pos - b * r.head.entriesPerBlock) * ENTRY_BYTES);
  }

  /** Adds a run this process has just written (its keys already in hand). */
  addRun(run: IndexRun): void {
    this.runs.push(run);
  }

  /** Replaces the runs of `inputs` by `merged` (a consolidation this process did). */
  replaceRuns(inputs: readonly IndexRun[], merged: IndexRun): void {
    const gone = new Set(inputs);
    this.runs = [...this.runs.filter((r) => !gone.has(r)), merged];
    this.forgetLocations();
  }

  /** Drops the location tables of runs no longer loaded. */
  private forgetLocations(): void {
    const live = new Set(this.runs);
    for (const r of [...this.locations.keys()]) {
      if (live.has(r)) continue;
      this.locations.delete(r);
      this.locationBytes -= r.count * LOCATION_WORDS * 4;
    }
  }

  /**
   * Picks up index files written (or consolidated) by other processes since the last call,
   * and drops runs whose files are superseded or gone. Files superseded by a file that is
   * present are skipped: they are a consolidation's inputs that a crash left behind.
   */
  async refresh(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const listing = (await this.storage.list(INDEX_PREFIX)).filter((e) => indexIdOfKey(e.key) !== null);
      const present = new Map(listing.map((e) => [e.key, e.size]));
      const loaded = new Map(this.runs.map((r) => [r.head.key, r]));
      const heads = new Map<string, IndexHead>();
      const unreadable: IndexProblem[] = [];
      let vanished = false;
      for (const [key, size] of present) {
        if (loaded.has(key)) continue;
        try {
          heads.set(key, await readIndexHead(this.storage, key, this.dataKey, size));
        } catch (e) {
          if (isKlioError(e) && e.code === "not-found") vanished = true;
          else if (isKlioError(e) && (e.code === "corrupt-index" || e.code === "short-object")) unreadable.push({ key, message: e.message });
          else throw e;
        }
      }
      const superseded = new Set<string>();
      for (const h of [...heads.values(), ...[...loaded.values()].map((r) => r.head)]) if (present.has(h.key)) for (const s of h.superseded) superseded.add(s);
      const dropped = new Set([...loaded.values()].filter((r) => !present.has(r.head.key) || superseded.has(r.head.fileId)));
      const added: IndexRun[] = [];
      for (const h of heads.values()) {
        if (superseded.has(h.fileId)) continue;
        try {
          added.push(await loadRun(this.storage, h, this.dataKey));
        } catch (e) {
          if (isKlioError(e) && e.code === "not-found") vanished = true;
          else if (isKlioError(e) && (e.code === "corrupt-index" || e.code === "short-object")) unreadable.push({ key: h.key, message: e.message });
          else throw e;
        }
      }
      // Applied to the runs as they are now: a writer of this process may have added one
      // (or consolidated some) while this refresh was reading.
      const have = new Set(this.runs.map((r) => r.head.key));
      this.runs = [...this.runs.filter((r) => !dropped.has(r)), ...added.filter((r) => !have.has(r.head.key))];
      this.forgetLocations();
      this.unreadable = unreadable;
      // A file that vanished between the listing and the read was consolidated by another
      // process: its replacement exists now, so list again.
      if (vanished && attempt < 5) continue;
      return;
    }
  }

  /**
   * Merges small index files when a size class is full (index-merge.ts), after removing
   * consolidation inputs a crash left behind. One at a time per process.
   */
  consolidate(): Promise<void> {
    if (this.merging) return this.merging;
    this.merging = this.mergeGuard(() => this.mergeNow())
      .then(() => {})
      .finally(() => (this.merging = null));
    return this.merging;
  }

  private async mergeNow(): Promise<void> {
    for (const k of await this.leftovers()) await this.storage.remove(k);
    const inputs = chooseMerge(this.runs.filter((r) => !this.unmergeable.has(r.head.key)));
    if (!inputs) return;
    let merged: IndexRun;
    try {
      merged = await mergeRuns(this.storage, this.dataKey, inputs);
    } catch (e) {
      // Another process consolidated (and removed) an input first: its file covers ours.
      if (isKlioError(e) && e.code === "not-found") return;
      // A damaged input stays as it is, for check() to report; merging must not copy
      // damage into a new file, nor fail the backup that happened to trigger it.
      if (isKlioError(e) && (e.code === "corrupt-index" || e.code === "short-object")) {
        const bad = inputs.find((r) => e.message.includes(r.head.key));
        for (const r of bad ? [bad] : inputs) this.unmergeable.add(r.head.key);
        return;
      }
      throw e;
    }
    this.replaceRuns(inputs, merged);
    for (const r of inputs) await this.storage.remove(r.head.key);
  }

  /** Files present that a present file supersedes: safe to remove. */
  async leftovers(): Promise<string[]> {
    const listing = await this.storage.list(INDEX_PREFIX);
    const superseded = new Set(this.runs.flatMap((r) => r.head.superseded));
    return listing.map((e) => e.key).filter((k) => superseded.has(indexIdOfKey(k) ?? ""));
  }
}

/** Every entry's location (LOCATION_WORDS words) of a run, read from its index file in order. */
async function loadLocations(storage: Storage, r: IndexRun, dataKey: Uint8Array | null): Promise<Uint32Array> {
  const t = new Uint32Array(r.count * LOCATION_WORDS);
  let n = 0;
  for await (const plain of readIndexBlocks(storage, r.head, dataKey)) {
    for (let at = 0; at < plain.length; at += ENTRY_BYTES, n++) {
      if (n >= r.count) throw new KlioError("corrupt-index", `index file ${r.head.key} is damaged: it has more entries than its keys`);
      copyLocation(plain, at, t, n * LOCATION_WORDS);
    }
  }
  if (n !== r.count) throw new KlioError("corrupt-index", `index file ${r.head.key} is damaged: ${n} entries for ${r.count} keys`);
  return t;
}

/** Reads an index file's key section into a run. */
export async function loadRun(storage: Storage, h: IndexHead, dataKey: Uint8Array | null): Promise<IndexRun> {
  const { fan, keys } = await readIndexKeys(storage, h, dataKey);
  return new IndexRun(h, keys, fan);
}

