// Reads many chunks in a given order, fast: a restore asks for every chunk of a backup, file
// by file. Consecutive chunks of one frame (a backup stores a file's new pages together) are
// served by one read of the frame; several frames are read at once, and decoded and verified
// on worker threads (chunk-workers.ts); the bytes reach the caller's callbacks strictly in
// the order asked, interleaved with its after() callbacks.
//
// Every chunk is checked as Repository.readChunk checks it (the frame decrypts and
// decompresses to its length, the chunk hashes to its id): damaged data is reported, never
// handed on.
import { Waiters } from "../util/waiters.ts";
import { KlioError, isKlioError } from "../util/errors.ts";
import { chunkIdHex, CHUNK_ID_BYTES, type ChunkId } from "./chunk-id.ts";
import type { ChunkIndex, ChunkLocation } from "./chunk-index.ts";
import type { ChunkWorkerPool } from "./chunk-workers.ts";
import { decodeLayout, FRAME_HEADROOM, VERIFY_ENTRY } from "./chunk-worker.ts";
import { MAX_PLAIN, packKey } from "./index-file.ts";
import { readStoredFrame } from "./blob.ts";
import { FRAME_TARGET } from "./pack-writer.ts";
import type { Storage } from "./storage.ts";

/** Frames read or decoding at once before ready() waits, unless the caller says. */
const DEFAULT_IN_FLIGHT = 12;
/** Chunks verified per frame read (more from one frame make another read of it). */
const CHUNKS_PER_READ = 64;
/** Buffers of this size are reused; larger frames get one of their own. */
const POOLED_BYTES = decodeLayout(FRAME_TARGET + FRAME_HEADROOM, CHUNKS_PER_READ).bytes;

export interface ChunkReaderContext {
  storage: Storage;
  index: ChunkIndex;
  workers: ChunkWorkerPool;
  /** The repository, for messages. */
  root: string;
  /** Picks up index files written since the repository was opened (once, on a miss). */
  refresh(): Promise<void>;
  /** Frames read or decoding at once. */
  inFlight?: number;
}

interface Wanted {
  id: ChunkId;
  inFrame: number;
  length: number;
  then: (data: Uint8Array) => void;
}

/** One read of a frame, and the chunks asked of it (with the caller's after() callbacks between them). */
class FrameRead {
  readonly wanted: Wanted[] = [];
  readonly ops: (() => void)[] = [];
  readonly opsAt: number[] = [];
  buf: Uint8Array | null = null;
  done = false;
  constructor(readonly key: string, readonly at: ChunkLocation) {}

  get frameKey(): string {
    return `${this.at.packId}:${this.at.entry.offset}`;
  }
}

export class ChunkReader {
  private open: FrameRead | null = null;
  private readonly reading: FrameRead[] = [];
  private readonly buffers: Uint8Array[] = [];
  private failure: unknown = null;
  private readonly waiters = new Waiters();
  private refreshed = false;

  constructor(private readonly ctx: ChunkReaderContext) {}

  /**
   * Asks for chunk `id` of `length` bytes: `then` receives its bytes (valid during the call)
   * after every earlier callback. Resolves once the chunk is found in the index; throws
   * KlioError "missing-chunk" when no index names it.
   */
  async read(id: ChunkId, length: number, then: (data: Uint8Array) => void): Promise<void> {
    this.check();
    const at = await this.locate(id);
    if (at.entry.plainLength !== length)
      throw new KlioError("corrupt-chunk", `chunk ${chunkIdHex(id)} has ${at.entry.plainLength} bytes in the repository, but ${length} where it is used: the backup's file list or the index is damaged`);
    const key = packKey(at.packId);
    const open = this.open;
    if (!(open && open.frameKey === `${at.packId}:${at.entry.offset}` && open.wanted.length < CHUNKS_PER_READ)) {
      if (open) this.dispatch(open);
      this.open = new FrameRead(key, at);
    }
    this.open!.wanted.push({ id, inFrame: at.entry.inFrame, length, then });
  }

  /** Runs `f` once every chunk asked for before has reached its callback (at once if none waits). */
  after(f: () => void): void {
    this.check();
    const last = this.open ?? this.reading[this.reading.length - 1];
    if (!last) return f();
    last.ops.push(f);
    last.opsAt.push(last.wanted.length);
  }

  /** Resolves once the reader can take more; rejects with its failure. */
  async ready(): Promise<void> {
    while (!this.failure && this.reading.length >= (this.ctx.inFlight ?? DEFAULT_IN_FLIGHT)) await this.waiters.wait();
    this.check();
  }

  /** Resolves once every chunk asked for has reached its callback. */
  async drain(): Promise<void> {
    this.check();
    if (this.open) this.dispatch(this.open);
    while (!this.failure && this.reading.length > 0) await this.waiters.wait();
    this.check();
  }

  /** Stops (after a failure: waits for the reads under way), and ends the workers. */
  async close(): Promise<void> {
    this.failure ??= new KlioError("closed", "the chunk reader is closed");
    this.open = null;
    while (this.reading.some((r) => !r.done)) await this.waiters.wait();
    await this.ctx.workers.close();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }



  private async locate(id: ChunkId): Promise<ChunkLocation> {
    for (;;) {
      let at: ChunkLocation | null = null;
      try {
        at = await this.ctx.index.locateForRead(id);
      } catch (e) {
        if (!(isKlioError(e) && e.code === "not-found") || this.refreshed) throw e;
      }
      if (at) return at;
      // Another process may have consolidated (or added) index files since we opened: look again once.
      if (this.refreshed) throw this.ctx.index.missingChunk(id, this.ctx.root);
      this.refreshed = true;
      await this.ctx.refresh();
    }
  }

  private dispatch(r: FrameRead): void {
    if (r === this.open) this.open = null;
    this.reading.push(r);
    this.fetch(r).then(
      (buf) => {
        r.buf = buf;
        r.done = true;
        this.takeDone();
      },
      (e) => {
        r.done = true;
        this.failure ??= e;
        this.waiters.wake();
      },
    );
  }

  private async fetch(r: FrameRead): Promise<Uint8Array> {
    const e = r.at.entry;
    // A damaged index must not make us allocate gigabytes: frames are at most MAX_PLAIN.
    if (e.frameLength > MAX_PLAIN || e.length > MAX_PLAIN + FRAME_HEADROOM || r.wanted.some((w) => w.inFrame + w.length > e.frameLength))
      throw new KlioError("corrupt-index", `index file ${r.at.indexKey} is damaged: it places a frame of ${e.frameLength} bytes (${e.length} stored) in ${r.key}`);
    const dataBytes = Math.max(e.length, e.frameLength);
    const layout = decodeLayout(dataBytes, r.wanted.length);
    const buf = layout.bytes <= POOLED_BYTES ? (this.buffers.pop() ?? new Uint8Array(POOLED_BYTES)) : new Uint8Array(layout.bytes);
    await readStoredFrame(this.ctx.storage, r.key, e, this.ctx.root, buf);
    const verify = new DataView(buf.buffer, buf.byteOffset + layout.verifyAt, r.wanted.length * VERIFY_ENTRY);
    r.wanted.forEach((w, i) => {
      verify.setUint32(i * VERIFY_ENTRY, w.inFrame, true);
      verify.setUint32(i * VERIFY_ENTRY + 4, w.length, true);
      buf.set(w.id.subarray(0, CHUNK_ID_BYTES), layout.verifyAt + i * VERIFY_ENTRY + 8);
    });
    return this.ctx.workers.decode(buf, { storedLength: e.length, flags: e.flags, frameLength: e.frameLength, dataBytes, count: r.wanted.length, where: r.key });
  }

  /** Hands out the frames read at the front, in order. */
  private takeDone(): void {
    try {
      while (!this.failure && this.reading[0]?.done) {
        const r = this.reading.shift()!;
        const buf = r.buf!;
        let op = 0;
        r.wanted.forEach((w, i) => {
          while (op < r.ops.length && r.opsAt[op] === i) r.ops[op++]!();
          w.then(buf.subarray(w.inFrame, w.inFrame + w.length));
        });
        while (op < r.ops.length) r.ops[op++]!();
        if (buf.length === POOLED_BYTES) this.buffers.push(buf);
      }
    } catch (e) {
      this.failure ??= e;
    }
    this.waiters.wake();
  }
}
