// How chunks are stored in a pack, and read back. New chunks are gathered into frames (a few
// consecutive chunks, pack-writer.ts); a frame is compressed as a whole when it pays
// (codec.ts), then sealed when the repository is encrypted. Reading checks every step and,
// last, that the chunk's plain bytes hash to the id asked for: damaged data is reported,
// never returned, and a frame in the wrong place cannot pass for another (the ids are keyed
// hashes in an encrypted repository).
import { isKlioError, KlioError } from "../util/errors.ts";
import type { Storage } from "./storage.ts";
import { chunkIdHex, sameChunkId, type ChunkId } from "./chunk-id.ts";
import { decompress, type Compressor } from "./codec.ts";
import { seal, unseal } from "./crypto.ts";
import type { IndexEntry } from "./index-file.ts";

const FRAME_AAD = new TextEncoder().encode("klio frame");

export interface BlobContext {
  /** The data key of an encrypted repository, else null. */
  dataKey: Uint8Array | null;
  chunkId: (data: Uint8Array) => ChunkId;
}

/**
 * The bytes to store for a frame's plain bytes (`plain` itself when compressing does not pay
 * and the repository is not encrypted), and the index flags (the codec).
 */
export function encodeFrame(dataKey: Uint8Array | null, compressor: Compressor, plain: Uint8Array): { stored: Uint8Array; flags: number } {
  const c = compressor.compress(plain);
  return { stored: dataKey ? seal(dataKey, c.bytes, FRAME_AAD) : c.bytes, flags: c.codec };
}

/**
 * The stored bytes of the frame `e` names in pack `key` (into `into` when given), with the
 * pack missing reported as KlioError "missing-chunk" and a truncated pack as "corrupt-chunk".
 */
export async function readStoredFrame(storage: Storage, key: string, e: Pick<IndexEntry, "offset" | "length">, root: string, into?: Uint8Array): Promise<Uint8Array> {
  try {
    return await storage.getRange(key, e.offset, e.length, into);
  } catch (err) {
    if (isKlioError(err) && err.code === "not-found") throw new KlioError("missing-chunk", `a frame of ${key} is missing: the pack is not in ${root}`);
    if (isKlioError(err) && err.code === "short-object") throw new KlioError("corrupt-chunk", `a frame of ${key} is damaged: the pack is truncated`);
    throw err;
  }
}

/** A frame's plain bytes; KlioError "corrupt-chunk" (naming `where`) when they do not decode. */
export function decodeFrame(dataKey: Uint8Array | null, stored: Uint8Array, e: Pick<IndexEntry, "flags" | "frameLength">, where: string): Uint8Array {
  let body = stored;
  if (dataKey) {
    const plain = unseal(dataKey, stored, FRAME_AAD);
    if (plain === null) throw new KlioError("corrupt-chunk", `a frame in ${where} is damaged: it does not decrypt`);
    body = plain;
  }
  try {
    return decompress(e.flags, body, e.frameLength);
  } catch (err) {
    throw new KlioError("corrupt-chunk", `a frame in ${where} is damaged: ${(err as Error).message}`);
  }
}

/** The chunk `id` out of its decoded frame; KlioError "corrupt-chunk" unless its bytes hash to `id`. */
export function chunkOfFrame(chunkId: (data: Uint8Array) => ChunkId, id: ChunkId, frame: Uint8Array, e: Pick<IndexEntry, "inFrame" | "plainLength">, where: string): Uint8Array {
  if (e.inFrame + e.plainLength > frame.length)
    throw new KlioError("corrupt-chunk", `chunk ${chunkIdHex(id)} in ${where} is damaged: it would end at ${e.inFrame + e.plainLength} of a ${frame.length}-byte frame`);
  const data = frame.subarray(e.inFrame, e.inFrame + e.plainLength);
  if (!sameChunkId(chunkId(data), id)) throw new KlioError("corrupt-chunk", `chunk ${chunkIdHex(id)} in ${where} is damaged: its content does not match its id`);
  return data;
}
