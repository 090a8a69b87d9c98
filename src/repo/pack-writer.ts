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
import { IdTable } from "./id-table.ts";
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
/** Closed packs waiting for their fsync and index before ready() waits for the disk. */
const PACKS_UNSYNCED = 8;
/** Compressed frames gathered before they are written to the pack file. */
const WRITE_BATCH = 1 << 20;
/** Ids per table of chunks added but not yet indexed (32 bytes each, and 16 per slot). */
const PENDING_TABLE = 16384;

export interface WriterStats {
  chunks: number;
  newChunks: number;
  plainBytes: number;
  newPlainBytes: number;
  storedBytes: number;
}

export interface ChunkWriter {
  /**
   * Stores `data` unless the repository has it, and returns its id at once: `data` is hashed
   * and, when new, copied before this returns, so the caller may reuse it. Never waits: call
   * ready() now and then (after each buffer of input) to let compression and the disk keep
   * up. Throws the writer's failure, if it has one.
   */
  add(data: Uint8Array, id?: ChunkId): ChunkId;
  /** Resolves once the writer can take more; rejects with its failure. */
  ready(): Promise<void>;
  /** add() then ready(), saying whether the chunk was new. */
  put(data: Uint8Array, id?: ChunkId): Promise<{ id: ChunkId; isNew: boolean }>;
  /** Resolves once every chunk added so far is durable and indexed. */
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

/** New chunks being gathered, then compressed together. */
class Frame {
  readonly ids: ChunkId[] = [];
  readonly offsets: number[] = [];
  size = 0;
  constructor(readonly seq: number, readonly buf: Uint8Array) {}

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
  /** Bytes of the pack so far, written or waiting in `unwritten`. */
  bytes: number;
  unwritten: Uint8Array[];
  unwrittenBytes: number;
  /** Frame buffers that parts of `unwritten` are (frames that did not compress): reused once written. */
  lent: Uint8Array[];
  /** Entries with `pack` = 0, in put order; numbered per index file when it is written. */
  entries: Uint8Array;
  count: number;
  /** The last frame appended to it. */
  lastFrame: number;
}

/** Ids of chunks added but not yet indexed, in tables of up to PENDING_TABLE ids. */
interface PendingIds {
  table: IdTable;
  /** The last frame that put an id in it: once that frame's pack is indexed, the table goes. */
  lastFrame: number;
}

export class PackChunkWriter implements ChunkWriter {
  readonly stats: WriterStats = { chunks: 0, newChunks: 0, plainBytes: 0, newPlainBytes: 0, storedBytes: 0 };
  private readonly compressor: Compressor;
  private readonly frameTarget: number;
  private frame: Frame | null = null;
  private frameSeq = 0;
  /** Frame buffers of FRAME_TARGET bytes, for reuse: fresh memory is slow to fault in. */
  private readonly buffers: Uint8Array[] = [];
  /** The frames handed to compression, and the chain that appends them in order. */
  private inFlight = 0;
  private appending: Promise<void> = Promise.resolve();
  private readonly pending: PendingIds[] = [];
  private open: Pack | null = null;
  /** Closed packs, oldest first, not yet indexed; and the background work that indexes them, one at a time. */
  private readonly closed: Pack[] = [];
  private syncing: Promise<void> | null = null;
  private failure: unknown = null;
  /** ready() calls waiting for compression or the disk. */
  private waiting: (() => void)[] = [];

  constructor(private readonly ctx: WriterContext) {
    this.compressor = new Compressor(ctx.compression);
    this.frameTarget = Math.max(1, Math.min(FRAME_TARGET, Math.floor(ctx.packTargetBytes / FRAMES_PER_PACK_MIN)));
  }

  add(data: Uint8Array, given?: ChunkId): ChunkId {
    this.check();
    if (data.length > MAX_PLAIN) throw new KlioError("bad-chunk", `a chunk of ${data.length} bytes is larger than the largest stored chunk (${MAX_PLAIN} bytes)`);
    if (given !== undefined && given.length !== CHUNK_ID_BYTES) throw new KlioError("bad-chunk-id", `a chunk id has ${CHUNK_ID_BYTES} bytes, not ${given.length}`);
    const id = given ?? this.ctx.chunkId(data);
    this.stats.chunks++;
    this.stats.plainBytes += data.length;
    if (this.known(id)) return id;

    if (this.frame && this.frame.size > 0 && this.frame.size + data.length > this.frameTarget) this.closeFrame();
    if (!this.frame) this.frame = new Frame(this.frameSeq++, data.length <= this.frameTarget ? (this.buffers.pop() ?? new Uint8Array(this.frameTarget)) : new Uint8Array(data.length));
    this.frame.add(id, data);
    let ids = this.pending[this.pending.length - 1];
    if (!ids || ids.table.count >= PENDING_TABLE) this.pending.push((ids = { table: new IdTable(PENDING_TABLE), lastFrame: 0 }));
    ids.table.add(id);
    ids.lastFrame = this.frame.seq;
    this.stats.newChunks++;
    this.stats.newPlainBytes += data.length;
    if (this.frame.size >= this.frameTarget) this.closeFrame();
    return id;
  }

  async ready(): Promise<void> {
    // Hold the caller back while the thread pool or the disk is behind.
    while (!this.failure && (this.inFlight >= FRAMES_IN_FLIGHT || this.closed.length >= PACKS_UNSYNCED)) await new Promise<void>((r) => this.waiting.push(r));
    this.check();
  }

  async put(data: Uint8Array, given?: ChunkId): Promise<{ id: ChunkId; isNew: boolean }> {
    const before = this.stats.newChunks;
    const id = this.add(data, given);
    const isNew = this.stats.newChunks > before;
    await this.ready();
    return { id, isNew };
  }

  async flush(): Promise<void> {
    this.check();
    if (this.frame) this.closeFrame();
    await this.appending;
    this.check();
    if (this.open) await this.closePack();
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

  /** In the index, or added by this writer and not yet indexed. */
  private known(id: ChunkId): boolean {
    for (const p of this.pending) if (p.table.has(id)) return true;
    return this.ctx.index.has(id);
  }

  private closeFrame(): void {
    const frame = this.frame!;
    this.frame = null;
    this.inFlight++;
    const encoded = encodeFrame(this.ctx, this.compressor, frame.buf.subarray(0, frame.size));
    encoded.catch(() => {}); // awaited in order below
    let lent = false;
    this.appending = this.appending.then(async () => {
      try {
        if (!this.failure) lent = await this.append(frame, await encoded);
      } catch (e) {
        this.failure ??= e;
      } finally {
        if (!lent) this.recycle(frame.buf);
        this.inFlight--;
        this.notify();
      }
    });
  }

  /**
   * Appends a compressed frame to the open pack (opening or rotating packs as needed). True
   * when the frame is stored as it is: its buffer is then the pack's until written out.
   */
  private async append(frame: Frame, enc: { stored: Uint8Array; flags: number }): Promise<boolean> {
    if (this.open && this.open.count > 0 && this.open.bytes + enc.stored.length > this.ctx.packTargetBytes) await this.closePack();
    if (!this.open) this.open = await this.newPack();
    const pack = this.open;
    const offset = pack.bytes;
    pack.unwritten.push(enc.stored);
    pack.unwrittenBytes += enc.stored.length;
    pack.bytes += enc.stored.length;
    pack.lastFrame = frame.seq;
    const lent = enc.stored.buffer === frame.buf.buffer;
    if (lent) pack.lent.push(frame.buf);
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
    }
    this.stats.storedBytes += enc.stored.length;
    if (pack.unwrittenBytes >= WRITE_BATCH) await this.writeOut(pack);
    return lent;
  }

  /** Writes the frames a pack holds in memory (several at once: one system call per megabyte, not per frame). */
  private async writeOut(pack: Pack): Promise<void> {
    if (pack.unwritten.length === 0) return;
    const parts = pack.unwritten;
    const lent = pack.lent;
    pack.unwritten = [];
    pack.unwrittenBytes = 0;
    pack.lent = [];
    await pack.file.write(parts);
    for (const b of lent) this.recycle(b);
  }

  private recycle(buf: Uint8Array): void {
    if (buf.length === this.frameTarget) this.buffers.push(buf);
  }

  private async newPack(): Promise<Pack> {
    const id = hexOf(randomBytes(16));
    const file = await this.ctx.storage.create(packKey(id));
    const head = new Uint8Array(PACK_HEADER);
    head.set(PACK_MAGIC, 0);
    new DataView(head.buffer).setUint32(8, PACK_VERSION);
    return { id, file, bytes: PACK_HEADER, unwritten: [head], unwrittenBytes: PACK_HEADER, lent: [], entries: new Uint8Array(256 * ENTRY_BYTES), count: 0, lastFrame: -1 };
  }

  /** Writes out and closes the open pack, and starts indexing the closed ones unless that is under way. */
  private async closePack(): Promise<void> {
    const pack = this.open!;
    this.open = null;
    await this.writeOut(pack);
    this.closed.push(pack);
    void pack.file.close().catch((e) => (this.failure ??= e));
    this.startSync();
  }

  private startSync(): void {
    if (this.syncing || this.closed.length === 0) return;
    this.syncing = (async () => {
      try {
        if (!this.failure) {
          const pack = this.closed[0]!;
          await indexPack(this.ctx, pack);
          // Its chunks are in the index now: the tables that only named chunks up to its last frame can go.
          while (this.pending.length > 0 && this.pending[0]!.lastFrame <= pack.lastFrame) this.pending.shift();
        }
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
