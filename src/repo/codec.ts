// Compression of stored frames and objects. Each stored frame records its codec (the low
// bits of its index flags), so a repository can change its default and still read every
// frame it holds.
//
// brotli at quality 1 (node:zlib) is the default. On the frames of a real backup (bench:backup's
// 1.1 GB database: md5 text, pgbench, log-like rows; 128 KB frames, one core of this VM) it
// compresses at ~240 MB/s to 26 % where DEFLATE level 1 manages ~85 MB/s to 29 % (and ~67
// MB/s on the md5 text alone), and decompresses about as fast (~370 MB/s). A backup is still
// CPU-bound on a 2-core machine, but with a third of DEFLATE's compression CPU. deflate and
// lz4 (lz4.ts: 160 MB/s to 45 % on frames, in JavaScript) stay for repositories made with
// them. fflate, measured beside node:zlib, is slower at every level and stores no less.
import { brotliCompressSync, brotliDecompressSync, constants, deflateRawSync, inflateRawSync } from "node:zlib";
import { KlioError } from "../util/errors.ts";
import { Lz4Compressor, lz4Decompress } from "./lz4.ts";

export const COMPRESSIONS = ["brotli", "deflate", "lz4", "none"] as const;
export type Compression = (typeof COMPRESSIONS)[number];

export const CODEC_NONE = 0;
export const CODEC_DEFLATE = 1;
export const CODEC_LZ4 = 2;
export const CODEC_BROTLI = 3;

export function isCompression(s: unknown): s is Compression {
  return typeof s === "string" && (COMPRESSIONS as readonly string[]).includes(s);
}

type Coded = { codec: number; bytes: Uint8Array };

/** Compresses with one codec; holds the codec's reusable state (one per writer). */
export class Compressor {
  private readonly lz4: Lz4Compressor | null;

  constructor(readonly compression: Compression) {
    this.lz4 = compression === "lz4" ? new Lz4Compressor() : null;
  }

  /**
   * The stored form and its codec: the plain bytes themselves when compressing does not pay.
   * `bytes` may be this compressor's buffer: use it before the next call.
   */
  compress(plain: Uint8Array): Coded {
    if (this.compression === "none" || plain.length < 64) return { codec: CODEC_NONE, bytes: plain };
    if (this.lz4) return worthIt(plain, this.lz4.compress(plain), CODEC_LZ4);
    if (this.compression === "brotli") return worthIt(plain, brotliCompressSync(plain, brotliOptions(plain)), CODEC_BROTLI);
    return worthIt(plain, deflateRawSync(plain, deflateOptions(plain)), CODEC_DEFLATE);
  }
}

/** Quality 1, a window no larger than the data (18 bits at least: brotli's fast paths want it). */
function brotliOptions(plain: Uint8Array) {
  // zlib's default 16 KB output pieces: one piece the size of the frame is slower here (a
  // fresh 128 KB buffer per call is mapped, faulted in and unmapped: 120 vs 190 MB/s).
  return {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: 1,
      [constants.BROTLI_PARAM_LGWIN]: Math.min(24, Math.max(18, Math.ceil(Math.log2(plain.length)))),
      [constants.BROTLI_PARAM_SIZE_HINT]: plain.length,
    },
  };
}

/** Level 1, and a window no larger than the data: less state to set up per call, the same output. */
function deflateOptions(plain: Uint8Array) {
  return { level: 1, windowBits: Math.min(15, Math.max(9, Math.ceil(Math.log2(plain.length)))) };
}

/** Not worth a decompression on every read unless it saves at least 1/16. */
function worthIt(plain: Uint8Array, out: Uint8Array | null, codec: number): Coded {
  if (out === null || out.length + (plain.length >> 4) >= plain.length) return { codec: CODEC_NONE, bytes: plain };
  return { codec, bytes: out };
}

const MAX_OUTPUT_PIECE = 4 * 1024 * 1024;

/** The plain bytes; KlioError "corrupt-data" when `bytes` do not decompress to exactly `plainLength` bytes. */
export function decompress(codec: number, bytes: Uint8Array, plainLength: number): Uint8Array {
  let out: Uint8Array;
  // The output in one piece: zlib's default 16 KB pieces are garbage to collect and a copy to
  // join (decompressing a 128 KB brotli frame measured 314 MB/s this way, 300 in pieces). A
  // length read from a damaged file must not size a huge buffer: pieces above 4 MB.
  const limits = { maxOutputLength: Math.max(plainLength, 1), chunkSize: Math.min(Math.max(plainLength, constants.Z_MIN_CHUNK), MAX_OUTPUT_PIECE) };
  try {
    switch (codec) {
      case CODEC_NONE:
        out = bytes;
        break;
      case CODEC_DEFLATE:
        out = inflateRawSync(bytes, limits);
        break;
      case CODEC_LZ4:
        out = lz4Decompress(bytes, plainLength);
        break;
      case CODEC_BROTLI:
        out = brotliDecompressSync(bytes, limits);
        break;
      default:
        throw new Error(`unknown codec ${codec}`);
    }
  } catch (e) {
    throw new KlioError("corrupt-data", `does not decompress: ${(e as Error).message}`);
  }
  if (out.length !== plainLength) throw new KlioError("corrupt-data", `decompresses to ${out.length} bytes, not ${plainLength}`);
  // A plain Uint8Array, not node:zlib's Buffer: callers compare and slice it as one.
  return out.constructor === Uint8Array ? out : new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}
