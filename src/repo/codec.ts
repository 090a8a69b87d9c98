// Per-chunk compression. Each stored chunk records its codec (the low bits of its index
// flags), so a repository can change its default and still read every chunk it holds.
import { deflateRawSync, inflateRawSync } from "node:zlib";
import { KlioError } from "../util/errors.ts";

export const COMPRESSIONS = ["deflate", "none"] as const;
export type Compression = (typeof COMPRESSIONS)[number];

export const CODEC_NONE = 0;
export const CODEC_DEFLATE = 1;

export function isCompression(s: unknown): s is Compression {
  return typeof s === "string" && (COMPRESSIONS as readonly string[]).includes(s);
}

/** The stored form and its codec: the plain bytes themselves when compressing does not pay. */
export function compress(c: Compression, plain: Uint8Array): { codec: number; bytes: Uint8Array } {
  if (c === "none" || plain.length < 64) return { codec: CODEC_NONE, bytes: plain };
  const out = deflateRawSync(plain, { level: 1 });
  // Not worth a decompression on every read unless it saves at least 1/16.
  if (out.length + (plain.length >> 4) >= plain.length) return { codec: CODEC_NONE, bytes: plain };
  return { codec: CODEC_DEFLATE, bytes: out };
}

/** The plain bytes; KlioError "corrupt-data" when `bytes` do not decompress to exactly `plainLength` bytes. */
export function decompress(codec: number, bytes: Uint8Array, plainLength: number): Uint8Array {
  let out: Uint8Array;
  switch (codec) {
    case CODEC_NONE:
      out = bytes;
      break;
    case CODEC_DEFLATE:
      try {
        out = inflateRawSync(bytes, { maxOutputLength: Math.max(plainLength, 1) });
      } catch (e) {
        throw new KlioError("corrupt-data", `does not decompress: ${(e as Error).message}`);
      }
      break;
    default:
      throw new KlioError("corrupt-data", `unknown codec ${codec}`);
  }
  if (out.length !== plainLength) throw new KlioError("corrupt-data", `decompresses to ${out.length} bytes, not ${plainLength}`);
  return out;
}
