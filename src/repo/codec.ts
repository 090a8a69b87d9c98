// Per-chunk compression. Each stored chunk records its codec (the low bits of its index
// flags), so a repository can change its default and still read every chunk it holds.
//
// deflate (node:zlib, raw, level 1) is the default: on PostgreSQL pages it stores ~40% fewer
// bytes than LZ4 and ~25% fewer than LZ4 on mixed data (docs/FORMAT.md has the figures).
// lz4 (lz4.ts) costs about half the CPU per page, for repositories where backup speed
// matters more than size. fflate, measured beside them, is slower than node:zlib at every
// level here and stores no less.
import { deflateRaw, deflateRawSync, inflateRawSync } from "node:zlib";
import { KlioError } from "../util/errors.ts";
import { Lz4Compressor, lz4Decompress } from "./lz4.ts";

export const COMPRESSIONS = ["deflate", "lz4", "none"] as const;
export type Compression = (typeof COMPRESSIONS)[number];

export const CODEC_NONE = 0;
export const CODEC_DEFLATE = 1;
export const CODEC_LZ4 = 2;

export function isCompression(s: unknown): s is Compression {
  return typeof s === "string" && (COMPRESSIONS as readonly string[]).includes(s);
}

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
  compress(plain: Uint8Array): { codec: number; bytes: Uint8Array } {
    if (this.compression === "none" || plain.length < 64) return { codec: CODEC_NONE, bytes: plain };
    if (this.lz4) return worthIt(plain, this.lz4.compress(plain), CODEC_LZ4);
    return worthIt(plain, deflateRawSync(plain, deflateOptions(plain)), CODEC_DEFLATE);
  }

  /**
   * The same, with deflate run on libuv's thread pool: a writer keeps several frames
   * compressing on other cores while its own thread reads and hashes the next ones. The
   * result is always a new buffer (or `plain` itself).
   */
  compressAsync(plain: Uint8Array): Promise<{ codec: number; bytes: Uint8Array }> {
    if (this.compression !== "deflate" || plain.length < 64) {
      const c = this.compress(plain);
      return Promise.resolve(c.bytes === plain ? c : { codec: c.codec, bytes: c.bytes.slice() });
    }
    return new Promise((resolve, reject) =>
      deflateRaw(plain, deflateOptions(plain), (err, out) => (err ? reject(err) : resolve(worthIt(plain, out, CODEC_DEFLATE)))),
    );
  }
}

/** Level 1, and a window no larger than the data: less state to set up per call, the same output. */
function deflateOptions(plain: Uint8Array) {
  return { level: 1, windowBits: Math.min(15, Math.max(9, Math.ceil(Math.log2(plain.length)))) };
}

/** Not worth a decompression on every read unless it saves at least 1/16. */
function worthIt(plain: Uint8Array, out: Uint8Array | null, codec: number): { codec: number; bytes: Uint8Array } {
  if (out === null || out.length + (plain.length >> 4) >= plain.length) return { codec: CODEC_NONE, bytes: plain };
  return { codec, bytes: out };
}

/** The plain bytes; KlioError "corrupt-data" when `bytes` do not decompress to exactly `plainLength` bytes. */
export function decompress(codec: number, bytes: Uint8Array, plainLength: number): Uint8Array {
  let out: Uint8Array;
  try {
    switch (codec) {
      case CODEC_NONE:
        out = bytes;
        break;
      case CODEC_DEFLATE:
        out = inflateRawSync(bytes, { maxOutputLength: Math.max(plainLength, 1) });
        break;
      case CODEC_LZ4:
        out = lz4Decompress(bytes, plainLength);
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
