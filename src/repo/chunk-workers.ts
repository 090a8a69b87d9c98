// Worker threads that run chunk jobs (chunk-worker.ts): for a writer, hashing batches of
// chunks and compressing and sealing frames; for a reader, decoding and verifying frames.
// Measured on bench:backup's 1.1 GB database (2 cores): with
// hashing and brotli on the main thread and libuv's pool, the main thread alone used ~3.8 s
// of CPU, a third of it hashing and much of the rest the zlib stream machinery of one async
// call per frame; moving both to workers leaves the main thread reading, cutting and indexing.
//
// With `count` 0 the same jobs run on the calling thread (`--workers 0`, and tests). Workers start on the first job and keep the process alive only while they
// have work; close() ends them.
//
// The single executable cannot load a module file into a worker: scripts/build.mjs bundles
// chunk-worker.ts on its own and defines KLIO_CHUNK_WORKER_SOURCE as that code, which runs
// with `eval`. From the sources, the worker loads chunk-worker.ts (through tsx under Node).
import os from "node:os";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { KlioError } from "../util/errors.ts";
import { keepYoungGenerationSmall } from "../util/heap.ts";
import { ChunkJobs, WORKER_MARK, type JobContext, type JobReply, type JobRequest } from "./chunk-worker.ts";

declare const KLIO_CHUNK_WORKER_SOURCE: string | undefined;

/** One per core, up to 4: the main thread needs a share too, and more buys little. */
export function defaultWorkerCount(): number {
  return Math.max(1, Math.min(4, os.availableParallelism?.() ?? os.cpus().length));
}

interface Pending {
  resolve: (r: JobReply) => void;
  reject: (e: unknown) => void;
  worker: Slot;
}

interface Slot {
  worker: Worker;
  outstanding: number;
}

export interface EncodeResult {
  /** The stored bytes are buf[0, storedLength). */
  storedLength: number;
  flags: number;
}

/** The buffers of these jobs are handed to a worker and back: each must be a whole ArrayBuffer, unused meanwhile. */
export class ChunkWorkerPool {
  private slots: Slot[] | null = null;
  private readonly inline: ChunkJobs | null;
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private failure: KlioError | null = null;

  constructor(private readonly ctx: JobContext, private readonly count: number) {
    this.inline = count === 0 ? new ChunkJobs(ctx) : null;
  }

  /** Fills in the ids of a batch (chunk-worker.ts, batchLayout); resolves with its buffer. */
  async hash(buf: Uint8Array, dataBytes: number, maxCount: number, count: number): Promise<Uint8Array> {
    if (this.inline) {
      this.inline.hash(buf, dataBytes, maxCount, count);
      return buf;
    }
    const r = await this.run({ seq: 0, kind: "hash", buf: wholeBuffer(buf), dataBytes, maxCount, count });
    return new Uint8Array(r.buf);
  }

  /** Compresses (and seals) the frame buf[0, length) in place; resolves with its buffer and where the stored bytes are. */
  async encode(buf: Uint8Array, length: number): Promise<{ buf: Uint8Array } & EncodeResult> {
    if (this.inline) return { buf, ...this.inline.encode(buf, length) };
    const r = await this.run({ seq: 0, kind: "encode", buf: wholeBuffer(buf), length });
    return { buf: new Uint8Array(r.buf), storedLength: r.storedLength!, flags: r.flags! };
  }

  /**
   * Decodes the stored frame buf[0, storedLength) in place into buf[0, frameLength) and checks
   * the chunks listed in its verify part (chunk-worker.ts, decodeLayout). Rejects with
   * KlioError("corrupt-chunk") naming `where` when the data is damaged.
   */
  async decode(buf: Uint8Array, job: { storedLength: number; flags: number; frameLength: number; dataBytes: number; count: number; where: string }): Promise<Uint8Array> {
    if (this.inline) {
      this.inline.decode(buf, job.storedLength, job.flags, job.frameLength, job.dataBytes, job.count, job.where);
      return buf;
    }
    const r = await this.run({ seq: 0, kind: "decode", buf: wholeBuffer(buf), ...job });
    return new Uint8Array(r.buf);
  }

  /** Ends the workers (a later job starts them again). */
  async close(): Promise<void> {
    const slots = this.slots;
    this.slots = null;
    if (slots) await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  private run(req: JobRequest): Promise<JobReply> {
    if (this.failure) return Promise.reject(this.failure);
    const slots = (this.slots ??= this.start());
    let slot = slots[0]!;
    for (const s of slots) if (s.outstanding < slot.outstanding) slot = s;
    req.seq = ++this.seq;
    // A worker with work keeps the process alive; an idle one does not.
    if (slot.outstanding++ === 0) slot.worker.ref();
    return new Promise<JobReply>((resolve, reject) => {
      this.pending.set(req.seq, { resolve, reject, worker: slot });
      slot.worker.postMessage(req, [req.buf]);
    }).then((r) => {
      if (r.error !== undefined) throw r.corrupt ? new KlioError("corrupt-chunk", r.error) : new KlioError("worker-failed", `a chunk worker failed: ${r.error}`);
      return r;
    });
  }

  private start(): Slot[] {
    const slots: Slot[] = [];
    for (let i = 0; i < this.count; i++) {
      const worker = spawnWorker(this.ctx);
      worker.unref();
      const slot: Slot = { worker, outstanding: 0 };
      worker.on("message", (r: JobReply) => {
        const p = this.pending.get(r.seq);
        if (!p) return;
        this.pending.delete(r.seq);
        if (--slot.outstanding === 0) worker.unref();
        p.resolve(r);
      });
      const fail = (e: unknown) => {
        this.failure ??= new KlioError("worker-failed", `a chunk worker stopped: ${e instanceof Error ? e.message : String(e)}`);
        for (const [seq, p] of this.pending) {
          if (p.worker !== slot) continue;
          this.pending.delete(seq);
          p.reject(this.failure);
        }
      };
      worker.on("error", fail);
      worker.once("online", keepYoungGenerationSmall);
      worker.on("exit", (code) => {
        if (this.slots?.includes(slot)) fail(new Error(`it exited with code ${code}`));
      });
      slots.push(slot);
    }
    return slots;
  }
}

function wholeBuffer(b: Uint8Array): ArrayBuffer {
  if (b.byteOffset !== 0 || b.byteLength !== b.buffer.byteLength || !(b.buffer instanceof ArrayBuffer))
    throw new Error("chunk worker jobs take buffers that are a whole ArrayBuffer of their own");
  return b.buffer;
}

function spawnWorker(ctx: JobContext): Worker {
  const workerData = { klioChunkWorker: WORKER_MARK, context: ctx };
  // A worker holds little (its buffers are the caller's); small heaps keep each worker's
  // memory near 20 MB (defaults: ~30 MB each on bench:backup's database).
  const resourceLimits = { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 16 };
  if (typeof KLIO_CHUNK_WORKER_SOURCE === "string") return new Worker(KLIO_CHUNK_WORKER_SOURCE, { eval: true, workerData, resourceLimits });
  const url = new URL("./chunk-worker.ts", import.meta.url);
  if (typeof (globalThis as { Deno?: unknown }).Deno !== "undefined") return new Worker(url, { workerData, resourceLimits });
  // Node runs the TypeScript sources through tsx, which a worker does not inherit (loader
  // hooks are per thread in Node 20): the worker imports the module with tsx's own API.
  const api = createRequire(import.meta.url).resolve("tsx/cjs/api");
  const file = fileURLToPath(url);
  const code = `require(${JSON.stringify(api)}).require(${JSON.stringify(file)}, ${JSON.stringify(file)});`;
  return new Worker(code, { eval: true, workerData, resourceLimits });
}
