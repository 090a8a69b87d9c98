// How a chunk is stored in a pack, and read back: compressed when it pays (codec.ts), then
// sealed when the repository is encrypted, with the chunk id as associated data (a blob
// copied under another id does not decrypt). Reading checks every step and, last, that the
// plain bytes hash to the id asked for: damaged data is reported, never returned.
import { KlioError } from "../util/errors.ts";
import { chunkIdHex, sameChunkId, type ChunkId } from "./chunk-id.ts";
import { decompress, type Compressor } from "./codec.ts";
import { seal, unseal } from "./crypto.ts";

const CHUNK_AAD = new TextEncoder().encode("klio chunk ");

function chunkAad(id: ChunkId): Uint8Array {
  const aad = new Uint8Array(CHUNK_AAD.length + id.length);
  aad.set(CHUNK_AAD, 0);
  aad.set(id, CHUNK_AAD.length);
  return aad;
}

export interface BlobContext {
  /** The data key of an encrypted repository, else null. */
  dataKey: Uint8Array | null;
  chunkId: (data: Uint8Array) => ChunkId;
}

/** The bytes to store (valid until the compressor's next call) and the index flags (the codec). */
export function encodeChunk(ctx: BlobContext, compressor: Compressor, id: ChunkId, plain: Uint8Array): { stored: Uint8Array; flags: number } {
  const c = compressor.compress(plain);
  return { stored: ctx.dataKey ? seal(ctx.dataKey, c.bytes, chunkAad(id)) : c.bytes, flags: c.codec };
}

/** The plain bytes of a stored chunk; KlioError "corrupt-chunk" when anything does not check. */
export function decodeChunk(ctx: BlobContext, id: ChunkId, stored: Uint8Array, flags: number, plainLength: number, where: string): Uint8Array {
  const bad = (why: string) => new KlioError("corrupt-chunk", `chunk ${chunkIdHex(id)} in ${where} is damaged: ${why}`);
  let body = stored;
  if (ctx.dataKey) {
    const plain = unseal(ctx.dataKey, stored, chunkAad(id));
    if (plain === null) throw bad("it does not decrypt");
    body = plain;
  }
  let data: Uint8Array;
  try {
    data = decompress(flags, body, plainLength);
  } catch (e) {
    throw bad((e as Error).message);
  }
  if (!sameChunkId(ctx.chunkId(data), id)) throw bad("its content does not match its id");
  return data;
}
