// The CPU-heavy part of storing chunks — hashing them, compressing and sealing frames — as
// jobs that run on worker threads (chunk-workers.ts starts them), so that a backup uses
// every core and its main thread only reads, cuts and indexes. This module is both the
// jobs (plain functions, also run in-thread when there are no workers) and, when loaded as
// a worker, the loop that serves them.
//
// A job works in place in one buffer that travels to the worker and back (transferred,
// never copied), so nothing is allocated in one thread and freed in another:
//   hash    buffer = chunk bytes end to end | lengths (i32) | ids (32 bytes each), see batchLayout
//           { seq, kind: "hash", buf, dataBytes, maxCount, count }  →  { seq, buf }
//   encode  buffer = the frame's plain bytes [0, length), and FRAME_HEADROOM more
//           { seq, kind: "encode", buf, length }  →  { seq, buf, storedLength, flags }
//           the stored bytes (compressed, sealed) replace the plain ones at the start
//   decode  buffer = the stored frame [0, storedLength) in a data part of dataBytes (at least
//           the frame's plain length) | what to verify: per chunk u32 offset in the frame,
//           u32 length, 32-byte id (little-endian u32s), see decodeLayout
//           { seq, kind: "decode", buf, storedLength, flags, frameLength, dataBytes, count }
//           →  { seq, buf }: the plain frame is buf[0, frameLength), every listed chunk checked
//   any job that fails  →  { seq, buf, error, corrupt }: corrupt when the data is damaged
import v8 from "node:v8";
import vm from "node:vm";
import { isMainThread, parentPort, workerData, type MessagePort } from "node:worker_threads";
import { CHUNK_ID_BYTES, chunkIdFunction, type ChunkId } from "./chunk-id.ts";
import { Compressor, type Compression } from "./codec.ts";
import { chunkOfFrame, decodeFrame, encodeFrame } from "./blob.ts";
import { isKlioError } from "../util/errors.ts";
import { SEAL_OVERHEAD } from "./crypto.ts";

export interface JobContext {
  compression: Compression;
  /** The chunk-id HMAC key of an encrypted repository, else null (plain SHA-256). */
  idKey: Uint8Array | null;
  /** The data key of an encrypted repository, else null. */
  dataKey: Uint8Array | null;
}

/** Marks a worker as one of ours (workerData.klioChunkWorker). */
export const WORKER_MARK = "klio-chunk-worker-2";

/** Room after a frame's plain bytes: a frame that does not compress grows by the seal. */
export const FRAME_HEADROOM = SEAL_OVERHEAD + 36;

/** Where the parts of a batch buffer of `dataBytes` of chunks and up to `maxCount` chunks are. */
export function batchLayout(dataBytes: number, maxCount: number): { lengthsAt: number; idsAt: number; bytes: number } {
  const lengthsAt = Math.ceil(dataBytes / 4) * 4;
  const idsAt = lengthsAt + maxCount * 4;
  return { lengthsAt, idsAt, bytes: idsAt + maxCount * CHUNK_ID_BYTES };
}

/** Per chunk to verify after a decode: offset u32, length u32, id. */
export const VERIFY_ENTRY = 8 + CHUNK_ID_BYTES;

export function decodeLayout(dataBytes: number, count: number): { verifyAt: number; bytes: number } {
  const verifyAt = Math.ceil(dataBytes / 4) * 4;
  return { verifyAt, bytes: verifyAt + count * VERIFY_ENTRY };
}

export class ChunkJobs {
  private readonly chunkId: (data: Uint8Array) => ChunkId;
  private readonly compressor: Compressor;

  constructor(private readonly ctx: JobContext) {
    this.chunkId = chunkIdFunction(ctx.idKey);
    this.compressor = new Compressor(ctx.compression);
  }

  /** Writes the ids of the batch's `count` chunks into its ids part (batchLayout). */
  hash(buf: Uint8Array, dataBytes: number, maxCount: number, count: number): void {
    const { lengthsAt, idsAt } = batchLayout(dataBytes, maxCount);
    const lengths = new Int32Array(buf.buffer, buf.byteOffset + lengthsAt, count);
    let at = 0;
    for (let i = 0; i < count; i++) {
      const n = lengths[i]!;
      buf.set(this.chunkId(buf.subarray(at, at + n)), idsAt + i * CHUNK_ID_BYTES);
      at += n;
    }
  }

  /**
   * Compresses (and seals) the frame buf[0, length) and puts the stored bytes at the start of
   * `buf` (which has FRAME_HEADROOM bytes more than the frame); returns their length and the
   * index flags (the codec).
   */
  encode(buf: Uint8Array, length: number): { storedLength: number; flags: number } {
    const plain = buf.subarray(0, length);
    const { stored, flags } = encodeFrame(this.ctx.dataKey, this.compressor, plain);
    if (stored !== plain) buf.set(stored, 0);
    return { storedLength: stored.length, flags };
  }

  /**
   * Decodes the stored frame buf[0, storedLength) into buf[0, frameLength) and checks that each
   * chunk listed in the verify part hashes to its id. Throws KlioError("corrupt-chunk") naming
   * `where` and the chunk otherwise.
   */
  decode(buf: Uint8Array, storedLength: number, flags: number, frameLength: number, dataBytes: number, count: number, where: string): void {
    const plain = decodeFrame(this.ctx.dataKey, buf.subarray(0, storedLength), { flags, frameLength }, where);
    if (plain.byteOffset !== buf.byteOffset || plain.buffer !== buf.buffer) buf.set(plain, 0);
    const frame = buf.subarray(0, frameLength);
    const verify = new DataView(buf.buffer, buf.byteOffset + decodeLayout(dataBytes, count).verifyAt, count * VERIFY_ENTRY);
    for (let i = 0; i < count; i++) {
      const at = i * VERIFY_ENTRY;
      const id = new Uint8Array(verify.buffer, verify.byteOffset + at + 8, CHUNK_ID_BYTES);
      chunkOfFrame(this.chunkId, id, frame, { inFrame: verify.getUint32(at, true), plainLength: verify.getUint32(at + 4, true) }, where);
    }
  }
}

export type JobRequest =
  | { seq: number; kind: "hash"; buf: ArrayBuffer; dataBytes: number; maxCount: number; count: number }
  | { seq: number; kind: "encode"; buf: ArrayBuffer; length: number }
  | { seq: number; kind: "decode"; buf: ArrayBuffer; storedLength: number; flags: number; frameLength: number; dataBytes: number; count: number; where: string };

export interface JobReply {
  seq: number;
  buf: ArrayBuffer;
  storedLength?: number;
  flags?: number;
  error?: string;
  /** The error is damage to the data (KlioError "corrupt-chunk"), not a failure of the worker. */
  corrupt?: boolean;
}

/** Jobs between two young-generation collections of a worker (see youngCollector). */
const JOBS_PER_COLLECTION = 16;

/**
 * A function that collects the young generation now, or null where that is not available
 * (Deno). A job leaves little JavaScript garbage but much memory outside the heap: zlib's
 * output buffers and engine state, hash contexts (~100–400 KB a job). V8 counts that memory
 * only loosely, so a worker with a small young generation ran a few hundred jobs between
 * collections and held 10–15 MB of dead buffers: a 4.6 GB restore peaked at 193 MB RSS, 158
 * MB when each worker collects every 16 jobs (a minor collection of a small heap takes well
 * under a millisecond). The `gc` function comes from V8's extension, exposed at run time.
 */
function youngCollector(): (() => void) | null {
  if (typeof (globalThis as { Deno?: unknown }).Deno !== "undefined") return null;
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as (options: { type: "minor" }) => void;
  return () => gc({ type: "minor" });
}

function serve(port: MessagePort, ctx: JobContext): void {
  const jobs = new ChunkJobs(ctx);
  const collect = youngCollector();
  let served = 0;
  port.on("message", (m: JobRequest) => {
    if (collect && ++served % JOBS_PER_COLLECTION === 0) collect();
    const buf = new Uint8Array(m.buf);
    let reply: JobReply;
    try {
      if (m.kind === "hash") {
        jobs.hash(buf, m.dataBytes, m.maxCount, m.count);
        reply = { seq: m.seq, buf: m.buf };
      } else if (m.kind === "encode") {
        const { storedLength, flags } = jobs.encode(buf, m.length);
        reply = { seq: m.seq, buf: m.buf, storedLength, flags };
      } else {
        jobs.decode(buf, m.storedLength, m.flags, m.frameLength, m.dataBytes, m.count, m.where);
        reply = { seq: m.seq, buf: m.buf };
      }
    } catch (e) {
      reply = { seq: m.seq, buf: m.buf, error: e instanceof Error ? e.message : String(e), corrupt: isKlioError(e) && e.code === "corrupt-chunk" };
    }
    port.postMessage(reply, [m.buf]);
  });
}

if (!isMainThread && parentPort && (workerData as { klioChunkWorker?: string } | null)?.klioChunkWorker === WORKER_MARK) {
  serve(parentPort, (workerData as { context: JobContext }).context);
}
