// A ChunkWriter: stores each chunk not already in the repository.
//
// Chunks are copied into batches of about BATCH_BYTES and hashed on worker threads
// (chunk-workers.ts); results are taken in order, so every chunk's id reaches its caller in
// the order the chunks came, interleaved with the caller's after() callbacks (a backup's
// file list is written that way). A chunk the index and this writer do not know is new: it
// is copied into the frame being gathered.
//
// New chunks are gathered into frames of about FRAME_TARGET plain bytes (16 pages), each
// compressed (and sealed) as a whole on a worker; one brotli call per frame instead of one
// per 8 KB page costs less CPU and stores ~15 % less (pages of one table share much).
// pgBackRest's block incremental groups blocks into compressed "super blocks" for the same
// reasons. The price is paid on reads: a chunk is read by decoding its frame (the repository
// keeps recent frames for the chunks after it).
//
// Frames are appended to the open pack file as they are compressed, in order, straight to
// the file: no pack is held in memory. A full pack is closed without waiting for the disk;
// in the background, each closed pack in turn is made durable (fsync, rename), then an index
// file names it (pack before index: an index never names a pack that is not durable).
// Until their index is written, the writer itself remembers their chunks, so later chunks
// with the same data are deduplicated against them.
//
// Pack file, version 1 (docs/FORMAT.md, "Packs"): "KLIOPACK" | version u32 (1) | reserved
// u32 (0) | the stored frames back to back; where each one is, only the index says.
import { randomBytes } from "node:crypto";
import { Waiters } from "../util/waiters.ts";
import { KlioError } from "../util/errors.ts";
import { CHUNK_ID_BYTES, type ChunkId } from "./chunk-id.ts";
import type { ChunkIndex } from "./chunk-index.ts";
import type { ChunkWorkerPool } from "./chunk-workers.ts";
import { ENTRY_BYTES, MAX_PLAIN, compareIds, encodeEntry, encodeIndexFile, hexOf, indexKey, packKey, readIndexHead } from "./index-file.ts";
import { IdTable } from "./id-table.ts";
import { batchLayout, FRAME_HEADROOM } from "./chunk-worker.ts";
import { IndexRun, RunBuilder } from "./index-run.ts";
import type { ObjectWriter, Storage } from "./storage.ts";

export const PACK_MAGIC = new TextEncoder().encode("KLIOPACK");
export const PACK_VERSION = 1;
export const PACK_HEADER = 16;
/** Plain bytes gathered into one frame (a chunk larger than this is a frame of its own). */
export const FRAME_TARGET = 128 * 1024;
/** Frames are a small part of a pack however small the packs (tests use packs of 64 KB). */
const FRAMES_PER_PACK_MIN = 16;
/** Bytes of chunks hashed in one job (a larger chunk is a batch of its own), and at most this many chunks. */
const BATCH_BYTES = 256 * 1024;
const BATCH_CHUNKS = 512;
/** Batches being hashed, and frames being compressed, before ready() waits. */
const BATCHES_IN_FLIGHT = 6;
const FRAMES_IN_FLIGHT = 6;
/** Closed packs waiting for their fsync and index before ready() waits for the disk (each holds its index entries, ~1 MB). */
const PACKS_UNSYNCED = 4;
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

/** Receives a chunk's id (a view: copy it to keep it), its length, and whether it was new. */
export type ChunkCallback = (id: ChunkId, length: number, isNew: boolean) => void;

export interface ChunkWriter {
  /**
   * Stores `data` unless the repository has it; `data` is copied before this returns. The
   * chunk's id reaches `then` later, in the order of add() and after() calls. Never waits:
   * call ready() after each buffer of input. Throws the writer's failure, if it has one.
   * `id`, when given, is taken as the chunk's id instead of its hash.
   */
  add(data: Uint8Array, then: ChunkCallback, id?: ChunkId): void;
  /** Runs `f` once every chunk added before has reached its callback (at once if none waits). */
  after(f: () => void): void;
  /** Resolves once the writer can take more; rejects with its failure. */
  ready(): Promise<void>;
  /** Resolves once every chunk added so far has reached its callback; rejects with the writer's failure. */
  drain(): Promise<void>;
  /** add() and its callback as a promise. */
  put(data: Uint8Array, id?: ChunkId): Promise<{ id: ChunkId; isNew: boolean }>;
  /** Resolves once every chunk added so far has reached its callback and is durable and indexed. */
  flush(): Promise<void>;
  /** Drops what is not yet durable (after a failure): temporary files are removed. */
  abandon(): Promise<void>;
  readonly stats: WriterStats;
}

export interface WriterContext {
  dataKey: Uint8Array | null;
  storage: Storage;
  index: ChunkIndex;
  packTargetBytes: number;
  /** Hashes batches and encodes frames; the writer closes it when flushed or abandoned. */
  workers: ChunkWorkerPool;
}

/**
 * Chunks copied end to end into one buffer, to be hashed together, and what follows each.
 * The buffer holds their lengths and gets their ids too (chunk-worker.ts, batchLayout).
 */
class Batch {
  used = 0;
  count = 0;
  /** Written while filling; a view of the buffer the batch started with. */
  private readonly lengths: Int32Array;
  private readonly idsAt: number;
  readonly thens: ChunkCallback[] = [];
  given: (ChunkId | undefined)[] | null = null;
  /** after() callbacks, each to run before chunk number opsAt[k] (after the last when = count). */
  readonly ops: (() => void)[] = [];
  readonly opsAt: number[] = [];
  hashed = false;
  done: Promise<void> = Promise.resolve();

  constructor(public buf: Uint8Array, readonly dataBytes: number, readonly maxCount: number) {
    const layout = batchLayout(dataBytes, maxCount);
    this.lengths = new Int32Array(buf.buffer, buf.byteOffset + layout.lengthsAt, maxCount);
    this.idsAt = layout.idsAt;
  }

  static bufferFor(dataBytes: number, maxCount: number): Uint8Array {
    return new Uint8Array(batchLayout(dataBytes, maxCount).bytes);
  }

  fits(length: number): boolean {
    return this.count < this.maxCount && this.used + length <= this.dataBytes;
  }

  push(data: Uint8Array, then: ChunkCallback, given: ChunkId | undefined): void {
    this.buf.set(data, this.used);
    this.used += data.length;
    this.lengths[this.count] = data.length;
    this.thens.push(then);
    if (given !== undefined) (this.given ??= [])[this.count] = given;
    this.count++;
  }

  addOp(f: () => void): void {
    this.ops.push(f);
    this.opsAt.push(this.count);
  }

  /** The lengths and, once hashed, the ids, in the buffer as it is now (back from a worker, it is a new view). */
  parts(): { lengths: Int32Array; ids: Uint8Array } {
    const layout = batchLayout(this.dataBytes, this.maxCount);
    return { lengths: new Int32Array(this.buf.buffer, this.buf.byteOffset + layout.lengthsAt, this.count), ids: this.buf.subarray(this.idsAt, this.idsAt + this.count * CHUNK_ID_BYTES) };
  }
}

/** New chunks being gathered, then compressed together; the buffer has FRAME_HEADROOM to spare. */
class Frame {
  private idBytes = new Uint8Array(32 * CHUNK_ID_BYTES);
  readonly offsets: number[] = [];
  size = 0;
  constructor(readonly seq: number, public buf: Uint8Array) {}

  get count(): number {
    return this.offsets.length;
  }

  add(id: ChunkId, data: Uint8Array): void {
    const n = this.offsets.length;
    if ((n + 1) * CHUNK_ID_BYTES > this.idBytes.length) {
      const more = new Uint8Array(this.idBytes.length * 2);
      more.set(this.idBytes);
      this.idBytes = more;
    }
    this.idBytes.set(id, n * CHUNK_ID_BYTES);
    this.buf.set(data, this.size);
    this.offsets.push(this.size);
    this.size += data.length;
  }

  idOf(i: number): ChunkId {
    return this.idBytes.subarray(i * CHUNK_ID_BYTES, (i + 1) * CHUNK_ID_BYTES);
  }

  lengthOf(i: number): number {
    return (i + 1 < this.offsets.length ? this.offsets[i + 1]! : this.size) - this.offsets[i]!;
  }
}

/** A pack file being written, then closed, then committed with the others of its batch. */
interface Pack {
  id: string;
  file: ObjectWriter;
  /** Bytes of the pack so far, written or waiting in `out`. */
  bytes: number;
  /** Stored frames not yet written (a buffer of WRITE_BATCH bytes), `outUsed` bytes of it. */
  out: Uint8Array | null;
  outUsed: number;
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
  private readonly frameTarget: number;
  private filling: Batch | null = null;
  /** Batches handed to hashing, in order; taken from the front as their ids arrive. */
  private readonly hashing: Batch[] = [];
  private readonly batchBuffers: Uint8Array[] = [];
  private readonly writeBuffers: Uint8Array[] = [];
  private frame: Frame | null = null;
  private frameSeq = 0;
  /** Frame buffers (FRAME_TARGET bytes and the headroom), for reuse: fresh memory is slow to fault in. */
  private readonly frameBuffers: Uint8Array[] = [];
  /** The frames handed to compression, and the chain that appends them in order. */
  private inFlight = 0;
  private appending: Promise<void> = Promise.resolve();
  private readonly pending: PendingIds[] = [];
  /** Emptied id tables and index entry buffers of indexed packs, for reuse: fresh large buffers fragment the heap. */
  private readonly spareTables: IdTable[] = [];
  private readonly spareEntries: Uint8Array[] = [];
  private open: Pack | null = null;
  /** Closed packs, oldest first, not yet indexed; and the background work that indexes them, one at a time. */
  private readonly closed: Pack[] = [];
  private syncing: Promise<void> | null = null;
  private failure: unknown = null;
  /** ready() and flush() calls waiting for hashing, compression or the disk. */
  private readonly waiters = new Waiters();

  constructor(private readonly ctx: WriterContext) {
    this.frameTarget = Math.max(1, Math.min(FRAME_TARGET, Math.floor(ctx.packTargetBytes / FRAMES_PER_PACK_MIN)));
  }

  add(data: Uint8Array, then: ChunkCallback, given?: ChunkId): void {
    this.check();
    if (data.length > MAX_PLAIN) throw new KlioError("bad-chunk", `a chunk of ${data.length} bytes is larger than the largest stored chunk (${MAX_PLAIN} bytes)`);
    if (given !== undefined && given.length !== CHUNK_ID_BYTES) throw new KlioError("bad-chunk-id", `a chunk id has ${CHUNK_ID_BYTES} bytes, not ${given.length}`);
    if (data.length > BATCH_BYTES) {
      if (this.filling) this.dispatch(this.filling);
      const big = new Batch(Batch.bufferFor(data.length, 1), data.length, 1);
      big.push(data, then, given);
      this.dispatch(big);
      return;
    }
    if (this.filling && !this.filling.fits(data.length)) this.dispatch(this.filling);
    this.filling ??= new Batch(this.batchBuffers.pop() ?? Batch.bufferFor(BATCH_BYTES, BATCH_CHUNKS), BATCH_BYTES, BATCH_CHUNKS);
    this.filling.push(data, then, given);
  }

  after(f: () => void): void {
    this.check();
    const last = this.filling ?? this.hashing[this.hashing.length - 1];
    if (last) last.addOp(f);
    else f();
  }

  async ready(): Promise<void> {
    // Hold the caller back while the workers or the disk are behind.
    while (!this.failure && (this.hashing.length >= BATCHES_IN_FLIGHT || this.inFlight >= FRAMES_IN_FLIGHT || this.closed.length >= PACKS_UNSYNCED)) await this.waiters.wait();
    this.check();
  }

  async put(data: Uint8Array, given?: ChunkId): Promise<{ id: ChunkId; isNew: boolean }> {
    let result: { id: ChunkId; isNew: boolean } | undefined;
    this.add(data, (id, _length, isNew) => (result = { id: id.slice(), isNew }), given);
    await this.drain(); // the callback has run once this resolves
    await this.ready();
    return result!;
  }

  async drain(): Promise<void> {
    this.check();
    if (this.filling) this.dispatch(this.filling);
    while (!this.failure && this.hashing.length > 0) await this.waiters.wait();
    this.check();
  }

  async flush(): Promise<void> {
    await this.drain();
    if (this.frame) this.closeFrame();
    await this.appending;
    this.check();
    if (this.open) await this.closePack();
    while (this.syncing) await this.syncing;
    this.check();
    await this.ctx.workers.close();
  }

  async abandon(): Promise<void> {
    if (!this.failure) this.failure = new KlioError("abandoned", "the chunk writer was abandoned");
    this.filling = null;
    await Promise.allSettled(this.hashing.map((b) => b.done));
    await this.appending.catch(() => {});
    while (this.syncing) await this.syncing.catch(() => {});
    for (const p of [...(this.open ? [this.open] : []), ...this.closed.splice(0)]) await p.file.abandon();
    this.open = null;
    await this.ctx.workers.close();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }


  private fail(e: unknown): void {
    this.failure ??= e;
    this.waiters.wake();
  }

  private dispatch(b: Batch): void {
    if (b === this.filling) this.filling = null;
    this.hashing.push(b);
    b.done = this.ctx.workers.hash(b.buf, b.dataBytes, b.maxCount, b.count).then(
      (buf) => {
        b.buf = buf;
        b.hashed = true;
        this.takeHashed();
      },
      (e) => this.fail(e),
    );
  }

  /** Takes the hashed batches at the front, in order. */
  private takeHashed(): void {
    try {
      while (!this.failure && this.hashing[0]?.hashed) this.take(this.hashing.shift()!);
    } catch (e) {
      this.fail(e);
    }
    this.waiters.wake();
  }

  private take(b: Batch): void {
    const { lengths, ids } = b.parts();
    let at = 0;
    let op = 0;
    for (let i = 0; i < b.count; i++) {
      while (op < b.ops.length && b.opsAt[op] === i) b.ops[op++]!();
      const length = lengths[i]!;
      const id = b.given?.[i] ?? ids.subarray(i * CHUNK_ID_BYTES, (i + 1) * CHUNK_ID_BYTES);
      this.stats.chunks++;
      this.stats.plainBytes += length;
      const isNew = !this.known(id);
      if (isNew) this.storeNew(id, b.buf.subarray(at, at + length));
      b.thens[i]!(id, length, isNew);
      at += length;
    }
    while (op < b.ops.length) b.ops[op++]!();
    if (b.dataBytes === BATCH_BYTES) this.batchBuffers.push(b.buf);
  }

  /** In the index, or added by this writer and not yet indexed. */
  private known(id: ChunkId): boolean {
    for (const p of this.pending) if (p.table.has(id)) return true;
    return this.ctx.index.has(id);
  }

  private storeNew(id: ChunkId, data: Uint8Array): void {
    if (this.frame && this.frame.size > 0 && this.frame.size + data.length > this.frameTarget) this.closeFrame();
    if (!this.frame) {
      const small = data.length <= this.frameTarget;
      this.frame = new Frame(this.frameSeq++, small ? (this.frameBuffers.pop() ?? new Uint8Array(this.frameTarget + FRAME_HEADROOM)) : new Uint8Array(data.length + FRAME_HEADROOM));
    }
    this.frame.add(id, data);
    let ids = this.pending[this.pending.length - 1];
    if (!ids || ids.table.count >= PENDING_TABLE) this.pending.push((ids = { table: this.spareTables.pop() ?? new IdTable(PENDING_TABLE), lastFrame: 0 }));
    ids.table.add(id);
    ids.lastFrame = this.frame.seq;
    this.stats.newChunks++;
    this.stats.newPlainBytes += data.length;
    if (this.frame.size >= this.frameTarget) this.closeFrame();
  }

  private closeFrame(): void {
    const frame = this.frame!;
    this.frame = null;
    this.inFlight++;
    const encoded = this.ctx.workers.encode(frame.buf, frame.size);
    encoded.catch(() => {}); // awaited in order below
    this.appending = this.appending.then(async () => {
      try {
        const r = await encoded;
        frame.buf = r.buf;
        if (!this.failure) await this.append(frame, r.buf.subarray(0, r.storedLength), r.flags);
        if (frame.buf.length === this.frameTarget + FRAME_HEADROOM) this.frameBuffers.push(frame.buf);
      } catch (e) {
        this.failure ??= e;
      } finally {
        this.inFlight--;
        this.waiters.wake();
      }
    });
  }

  /** Appends a frame's stored bytes to the open pack (opening or rotating packs as needed); they are copied. */
  private async append(frame: Frame, stored: Uint8Array, flags: number): Promise<void> {
    if (this.open && this.open.count > 0 && this.open.bytes + stored.length > this.ctx.packTargetBytes) await this.closePack();
    if (!this.open) this.open = await this.newPack();
    const pack = this.open;
    const offset = pack.bytes;
    await this.output(pack, stored);
    pack.lastFrame = frame.seq;
    for (let i = 0; i < frame.count; i++) {
      if ((pack.count + 1) * ENTRY_BYTES > pack.entries.length) {
        const grown = new Uint8Array(pack.entries.length * 2);
        grown.set(pack.entries);
        pack.entries = grown;
      }
      encodeEntry(pack.entries, pack.count * ENTRY_BYTES, {
        id: frame.idOf(i), pack: 0, offset, length: stored.length, flags,
        plainLength: frame.lengthOf(i), frameLength: frame.size, inFrame: frame.offsets[i]!,
      });
      pack.count++;
    }
    this.stats.storedBytes += stored.length;
  }

  /**
   * Adds bytes to the pack: copied into its write buffer, written out a megabyte at a time
   * (one system call per megabyte, not per frame); bytes larger than half a buffer go straight
   * to the file.
   */
  private async output(pack: Pack, bytes: Uint8Array): Promise<void> {
    pack.bytes += bytes.length;
    if (bytes.length > WRITE_BATCH / 2) {
      await this.writeOut(pack);
      await pack.file.write(bytes);
      return;
    }
    if (pack.out && pack.outUsed + bytes.length > WRITE_BATCH) await this.writeOut(pack);
    pack.out ??= this.writeBuffers.pop() ?? new Uint8Array(WRITE_BATCH);
    pack.out.set(bytes, pack.outUsed);
    pack.outUsed += bytes.length;
  }

  private async writeOut(pack: Pack): Promise<void> {
    const out = pack.out;
    if (!out) return;
    const used = pack.outUsed;
    pack.out = null;
    pack.outUsed = 0;
    await pack.file.write(out.subarray(0, used));
    this.writeBuffers.push(out);
  }

  private async newPack(): Promise<Pack> {
    const id = hexOf(randomBytes(16));
    const file = await this.ctx.storage.create(packKey(id));
    const pack: Pack = { id, file, bytes: 0, out: null, outUsed: 0, entries: this.spareEntries.pop() ?? new Uint8Array(256 * ENTRY_BYTES), count: 0, lastFrame: -1 };
    const head = new Uint8Array(PACK_HEADER);
    head.set(PACK_MAGIC, 0);
    new DataView(head.buffer).setUint32(8, PACK_VERSION);
    await this.output(pack, head);
    return pack;
  }

  /** Writes out and closes the open pack, and starts indexing the closed ones unless that is under way. */
  private async closePack(): Promise<void> {
    const pack = this.open!;
    this.open = null;
    await this.writeOut(pack);
    this.closed.push(pack);
    void pack.file.close().catch((e) => this.fail(e));
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
          while (this.pending.length > 0 && this.pending[0]!.lastFrame <= pack.lastFrame) {
            const done = this.pending.shift()!.table;
            done.clear();
            this.spareTables.push(done);
          }
          this.spareEntries.push(pack.entries);
        }
        this.closed.shift();
      } catch (e) {
        this.failure ??= e;
      } finally {
        this.syncing = null;
        this.waiters.wake();
      }
      // Packs closed meanwhile: their turn.
      if (!this.failure) this.startSync();
    })();
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
