// Chunk ids: 32 bytes naming a chunk by its content. SHA-256 of the plain data in a plain
// repository; HMAC-SHA-256 keyed with a secret derived from the master key in an encrypted
// one, so that an id says nothing about the data to whoever can read the repository's files.
import { createHash, createHmac } from "node:crypto";
import { KlioError } from "../util/errors.ts";

export type ChunkId = Uint8Array;

export const CHUNK_ID_BYTES = 32;

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

export function chunkIdHex(id: ChunkId): string {
  let s = "";
  for (let i = 0; i < id.length; i++) s += HEX[id[i]!];
  return s;
}

const HEX_ID = /^[0-9a-f]{64}$/;

export function parseChunkId(hex: string): ChunkId {
  if (typeof hex !== "string" || !HEX_ID.test(hex)) throw new KlioError("bad-chunk-id", `"${String(hex).slice(0, 80)}" is not a chunk id (64 lower-case hex digits)`);
  const id = new Uint8Array(CHUNK_ID_BYTES);
  for (let i = 0; i < CHUNK_ID_BYTES; i++) id[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return id;
}

export function sameChunkId(a: ChunkId, b: ChunkId): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The id function of a repository: plain SHA-256, or HMAC-SHA-256 with `secret`. */
export function chunkIdFunction(secret: Uint8Array | null): (data: Uint8Array) => ChunkId {
  const plain = (b: Uint8Array) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  if (secret === null) return (data) => plain(createHash("sha256").update(data).digest());
  return (data) => plain(createHmac("sha256", secret).update(data).digest());
}
