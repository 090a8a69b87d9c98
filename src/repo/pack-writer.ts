// A ChunkWriter: stores each chunk not already in the repository.
//
// New chunks are gathered into frames of about FRAME_TARGET plain bytes (16 pages), each
// compressed as a whole on libuv's thread pool while this thread hashes the next chunks; one
// deflate call per frame instead of one per 8 KB page costs a third less CPU and stores
// ~15 % less (pages of one table share much). pgBackRest's block incremental groups blocks
// into compressed "super blocks" for the same reasons. The price is paid on reads: a chunk
// is read by decoding its frame (the repository keeps recent frames for the chunks after it).
//
// Frames are appended to the open pack file as they are compressed, in order, straight to
// the file: no pack is held in memory. A full pack is closed without waiting for the disk;
// in the background, each closed pack in turn is made durable (fsync, rename), then an index
// file names it (pack before index: an index never names a pack that is not durable).
// Until their index is written, the writer itself remembers their chunks, so later puts of
// the same data are deduplicated against them.
//
// Pack file, version 1 (docs/FORMAT.md, "Packs"): "KLIOPACK" | version u32 (1) | reserved
// u32 (0) | the stored frames back to back; where each one is, only the index says.
import { randomBytes } from "node:crypto";
import os from "node:os";
import { KlioError } from "../util/errors.ts";
import { CHUNK_ID_BYTES, type ChunkId } from "./chunk-id.ts";
import type { ChunkIndex } from "./chunk-index.ts";
import { encodeFrame, type BlobContext } from "./blob.ts";
import { Compressor, type Compression } from "./codec.ts";
import { ENTRY_BYTES, MAX_PLAIN, compareIds, encodeEntry, encodeIndexFile, hexOf, indexKey, packKey, readIndexHead } from "./index-file.ts";
import { IndexRun, RunBuilder } from "./index-run.ts";
import type { ObjectWriter, Storage } from "./storage.ts";

export const PACK_MAGIC = new TextEncoder().encode("KLIOPACK");
export const PACK_VERSION = 1;
export const PACK_HEADER = 16;
/** Plain bytes gathered into one frame (a chunk larger than this is a frame of its own). */
export const FRAME_TARGET = 128 * 1024;
/** Frames are a small part of a pack however small the packs (tests use packs of 64 KB). */
const FRAMES_PER_PACK_MIN = 16;
/** Frames compressing at once: enough to keep every core busy, few enough to bound memory. */
const FRAMES_IN_FLIGHT = Math.max(2, os.availableParallelism?.() ?? 2) * 2;
/** Closed packs waiting for their fsync and index before put() waits for the disk. */
const PACKS_UNSYNCED = 8;

export interface WriterStats {
  chunks: number;
  newChunks: number;
  plainBytes: number;
  newPlainBytes: number;
  storedBytes: number;
}

export interface ChunkWriter {
  /** Stores `data` unless the repository has it. `data` is copied before this returns: the caller may reuse it. */
  put(data: Uint8Array, id?: ChunkId): Promise<{ id: ChunkId; isNew: boolean }>;
  /** Resolves once every chunk put so far is durable and indexed. */
  flush(): Promise<void>;
  /** Drops what is not yet durable (after a failure): temporary files are removed. */
  abandon(): Promise<void>;
  readonly stats: WriterStats;
}

export interface WriterContext extends BlobContext {
  compression: Compression;
  storage: Storage;
  index: ChunkIndex;
  packTargetBytes: number;
}

/** Chunk ids held outside the index (not yet indexed), found without a string per id. */
class IdSet {
  private readonly map = new Map<number, ChunkId | ChunkId[]>();

  has(id: ChunkId): boolean {
    const v = this.map.get(keyOf(id));
    if (v === undefined) return false;
    if (v instanceof Uint8Array) return compareIds(v, 0, id, 0) === 0;
    return v.some((x) => compareIds(x, 0, id, 0) === 0);
  }

  add(id: ChunkId): void {
    const k = keyOf(id);
    const v = this.map.get(k);
    if (v === undefined) this.map.set(k, id);
    else if (v instanceof Uint8Array) this.map.set(k, [v, id]);
    else v.push(id);
  }
}

/** 30 bits of the id: a small integer key. */
function keyOf(id: ChunkId): number {
  return ((id[0]! << 22) | (id[1]! << 14) | (id[2]! << 6) | (id[3]! >> 2)) >>> 0;
}

/** New chunks being gathered, then compressed together. */
class Frame {
  readonly ids: ChunkId[] = [];
  readonly offsets: number[] = [];
  size = 0;
  constructor(readonly buf: Uint8Array) {}

  add(id: ChunkId, data: Uint8Array): void {
    this.buf.set(data, this.size);
    this.ids.push(id);
    this.offsets.push(this.size);
    this.size += data.length;
  }

  lengthOf(i: number): number {
    return (i + 1 < this.offsets.length ? this.offsets[i + 1]! : this.size) - this.offsets[i]!;
  }
}

/** A pack file being written, then closed, then committed with the others of its batch. */
interface Pack {
  id: string;
  file: ObjectWriter;
  /** Entries with `pack` = 0, in put order; numbered per index file when it is written. */
  entries: Uint8Array;
  count: number;
  ids: IdSet;
}

export class PackChunkWriter implements ChunkWriter {
  readonly stats: WriterStats = { chunks: 0, newChunks: 0, plainBytes: 0, newPlainBytes: 0, storedBytes: 0 };
  private readonly compressor: Compressor;
  private readonly frameTarget: number;
  private frame: Frame | null = null;
  /** Frame buffers of FRAME_TARGET bytes, for reuse: fresh memory is slow to fault in. */
  private readonly buffers: Uint8Array[] = [];
  /** The frames handed to compression, in order, and the chain that appends them. */
  private inFlight = 0;
  private appending: Promise<void> = Promise.resolve();
  private readonly inFlightIds: IdSet[] = [];
  private open: Pack | null = null;
  /** Closed packs, oldest first, not yet indexed; and the background work that indexes them, one at a time. */
  private readonly closed: Pack[] = [];
  private syncing: Promise<void> | null = null;
  private failure: unknown = null;
  /** put() calls waiting for compression or the disk (several: callers keep a few puts in flight). */
  private waiting: (() => void)[] = [];

  constructor(private readonly ctx: WriterContext) {
    this.compressor = new Compressor(ctx.compression);
    this.frameTarget = Math.max(1, Math.min(FRAME_TARGET, Math.floor(ctx.packTargetBytes / FRAMES_PER_PACK_MIN)));
  }

  async put(data: Uint8Array, given?: ChunkId): Promise<{ id: ChunkId; isNew: boolean }> {
    this.check();
    if (data.length > MAX_PLAIN) throw new KlioError("bad-chunk", `a chunk of ${data.length} bytes is larger than the largest stored chunk (${MAX_PLAIN} bytes)`);
    if (given !== undefined && given.length !== CHUNK_ID_BYTES) throw new KlioError("bad-chunk-id", `a chunk id has ${CHUNK_ID_BYTES} bytes, not ${given.length}`);
    const id = given ?? this.ctx.chunkId(data);
    this.stats.chunks++;
    this.stats.plainBytes += data.length;
    if (this.known(id)) return { id, isNew: false };

    if (this.frame && this.frame.size > 0 && this.frame.size + data.length > this.frameTarget) this.closeFrame();
    if (!this.frame) {
      this.frame = new Frame(data.length <= this.frameTarget ? (this.buffers.pop() ?? new Uint8Array(this.frameTarget)) : new Uint8Array(data.length));
      this.inFlightIds.push(new IdSet());
    }
    this.frame.add(id, data);
    this.inFlightIds[this.inFlightIds.length - 1]!.add(id);
    this.stats.newChunks++;
    this.stats.newPlainBytes += data.length;
    if (this.frame.size >= this.frameTarget) this.closeFrame();
    // Hold the caller back while the thread pool or the disk is behind.
    while (!this.failure && (this.inFlight >= FRAMES_IN_FLIGHT || this.closed.length >= PACKS_UNSYNCED)) await new Promise<void>((r) => this.waiting.push(r));
    this.check();
    return { id, isNew: true };
  }

  async flush(): Promise<void> {
    this.check();
    if (this.frame) this.closeFrame();
    await this.appending;
    this.check();
    if (this.open) this.closePack();
    while (this.syncing) await this.syncing;
    this.check();
  }

  async abandon(): Promise<void> {
    if (!this.failure) this.failure = new KlioError("abandoned", "the chunk writer was abandoned");
    await this.appending.catch(() => {});
    while (this.syncing) await this.syncing.catch(() => {});
    for (const p of [...(this.open ? [this.open] : []), ...this.closed.splice(0)]) await p.file.abandon();
    this.open = null;
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  /** In the index, in a frame or pack of this writer not yet indexed. */
  private known(id: ChunkId): boolean {
    if (this.ctx.index.has(id)) return true;
    for (const s of this.inFlightIds) if (s.has(id)) return true;
    if (this.open?.ids.has(id)) return true;
    for (const p of this.closed) if (p.ids.has(id)) return true;
    return false;
  }

  private closeFrame(): void {
    const frame = this.frame!;
    const ids = this.inFlightIds[this.inFlightIds.length - 1]!;
    this.frame = null;
    this.inFlight++;
    const encoded = encodeFrame(this.ctx, this.compressor, frame.buf.subarray(0, frame.size));
    encoded.catch(() => {}); // awaited in order below
    this.appending = this.appending.then(async () => {
      try {
        if (!this.failure) await this.append(frame, await encoded);
      } catch (e) {
        this.failure ??= e;
      } finally {
        this.inFlightIds.splice(this.inFlightIds.indexOf(ids), 1);
        if (frame.buf.length === this.frameTarget) this.buffers.push(frame.buf);
        this.inFlight--;
        this.notify();
      }
    });
  }

  /** Appends a compressed frame to the open pack (opening or rotating packs as needed). */
  private async append(frame: Frame, enc: { stored: Uint8Array; flags: number }): Promise<void> {
    if (this.open && this.open.count > 0 && this.open.file.size + enc.stored.length > this.ctx.packTargetBytes) this.closePack();
    if (!this.open) this.open = await this.newPack();
    const pack = this.open;
    const offset = pack.file.size;
    await pack.file.write(enc.stored);
    for (let i = 0; i < frame.ids.length; i++) {
      if ((pack.count + 1) * ENTRY_BYTES > pack.entries.length) {
        const grown = new Uint8Array(pack.entries.length * 2);
        grown.set(pack.entries);
        pack.entries = grown;
      }
      encodeEntry(pack.entries, pack.count * ENTRY_BYTES, {
        id: frame.ids[i]!, pack: 0, offset, length: enc.stored.length, flags: enc.flags,
        plainLength: frame.lengthOf(i), frameLength: frame.size, inFrame: frame.offsets[i]!,
      });
      pack.count++;
      pack.ids.add(frame.ids[i]!);
    }
    this.stats.storedBytes += enc.stored.length;
  }

  private async newPack(): Promise<Pack> {
    const id = hexOf(randomBytes(16));
    const file = await this.ctx.storage.create(packKey(id));
    const head = new Uint8Array(PACK_HEADER);
    head.set(PACK_MAGIC, 0);
    new DataView(head.buffer).setUint32(8, PACK_VERSION);
    await file.write(head);
    return { id, file, entries: new Uint8Array(256 * ENTRY_BYTES), count: 0, ids: new IdSet() };
  }

  /** Closes the open pack and starts indexing the closed ones unless that is under way. */
  private closePack(): void {
    const pack = this.open!;
    this.open = null;
    this.closed.push(pack);
    void pack.file.close().catch((e) => (this.failure ??= e));
    this.startSync();
  }

  private startSync(): void {
    if (this.syncing || this.closed.length === 0) return;
    this.syncing = (async () => {
      try {
        if (!this.failure) await indexPack(this.ctx, this.closed[0]!);
        this.closed.shift();
      } catch (e) {
        this.failure ??= e;
      } finally {
        this.syncing = null;
        this.notify();
      }
      // Packs closed meanwhile: their turn.
      if (!this.failure) this.startSync();
    })();
  }

  private notify(): void {
    for (const w of this.waiting.splice(0)) w();
  }
}

/** Makes the pack durable, then writes its index file, then makes its chunks visible in memory. */
async function indexPack(ctx: WriterContext, pack: Pack): Promise<void> {
  await pack.file.commit();
  const entries = sortEntries(pack.entries, pack.count);
  const fileId = hexOf(randomBytes(16));
  const key = indexKey(fileId);
  const run = new RunBuilder(pack.count);
  const parts: Uint8Array[] = [];
  for await (const b of encodeIndexFile({ fileId, key: ctx.dataKey, packs: [pack.id], superseded: [], count: pack.count }, [entries], run)) parts.push(b);
  await ctx.storage.put(key, parts);
  const head = await readIndexHead(ctx.storage, key, ctx.dataKey, parts.reduce((n, p) => n + p.length, 0));
  const { fan, keys } = run.done();
  ctx.index.addRun(new IndexRun(head, keys, fan));
  await ctx.index.consolidate();
}

function sortEntries(e: Uint8Array, count: number): Uint8Array {
  const order = Array.from({ length: count }, (_, i) => i * ENTRY_BYTES);
  order.sort((a, b) => compareIds(e, a, e, b));
  const out = new Uint8Array(count * ENTRY_BYTES);
  order.forEach((from, i) => out.set(e.subarray(from, from + ENTRY_BYTES), i * ENTRY_BYTES));
  return out;
}
