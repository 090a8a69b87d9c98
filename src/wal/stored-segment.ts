// The stored form of a completed WAL segment (docs/FORMAT.md, "Stored WAL segment"):
//
//   0  8  magic "KLIOWAL" + format version 0x01
//   8  1  compression: 0 = none, 1 = raw DEFLATE (RFC 1951)
//   9  3  reserved, zero
//  12  4  original length, uint32 big-endian
//  16 32  SHA-256 of the original bytes
//  48  …  payload
//
// The checksum is of the original bytes, so a restore proves it hands PostgreSQL exactly
// what the primary sent, whatever happened to the compressed bytes on the way.
import { createHash } from "node:crypto";
import { deflateRaw, inflateRawSync } from "node:zlib";
import { KlioError } from "../util/errors.ts";

const MAGIC = new TextEncoder().encode("KLIOWAL\x01");
const HEADER = 48;
/**
 * node:zlib at level 1. Measured on real WAL (`npm run bench:compress`, README): on pgbench
 * WAL zlib level 1 packs ~580 MB/s to 7.0 %, fflate level 1 ~60 MB/s to 6.8 %, zlib level 6
 * ~130 MB/s to 6.4 %; on less compressible WAL (bench:wal's mixed load) zlib level 1 does
 * 120–165 MB/s. Compression has to keep up with ingest on a 2-core VM, so speed wins.
 */
export const WAL_COMPRESSION_LEVEL = 1;
/** zlib's default 16 KiB output chunks cost 15–25 % on 16 MB segments (bench:wal). */
const DEFLATE_CHUNK = 1024 * 1024;

export function sha256(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest());
}

function deflateOffThread(data: Uint8Array, level: number): Promise<Uint8Array> {
  // zlib's async API compresses on the thread pool: the receiver's event loop keeps
  // draining the replication socket meanwhile.
  return new Promise((resolve, reject) => deflateRaw(data, { level, chunkSize: DEFLATE_CHUNK }, (err, out) => (err ? reject(err) : resolve(new Uint8Array(out.buffer, out.byteOffset, out.byteLength)))));
}

export async function encodeStoredSegment(raw: Uint8Array, level = WAL_COMPRESSION_LEVEL): Promise<Uint8Array> {
  // Both off the event loop: Web Crypto digests on the thread pool, like zlib.
  const [digestBuffer, packed] = await Promise.all([
    crypto.subtle.digest("SHA-256", raw as Uint8Array<ArrayBuffer>),
    level > 0 ? deflateOffThread(raw, level) : raw,
  ]);
  const digest = new Uint8Array(digestBuffer);
  const compressed = packed.length < raw.length;
  const payload = compressed ? packed : raw;
  const out = new Uint8Array(HEADER + payload.length);
  out.set(MAGIC, 0);
  out[8] = compressed ? 1 : 0;
  new DataView(out.buffer).setUint32(12, raw.length);
  out.set(digest, 16);
  out.set(payload, HEADER);
  return out;
}

/** Returns the original bytes, or throws KlioError("corrupt-wal") naming `what`. */
export function decodeStoredSegment(stored: Uint8Array, what: string): Uint8Array {
  const corrupt = (why: string) => new KlioError("corrupt-wal", `${what} is damaged: ${why}`);
  if (stored.length < HEADER || !MAGIC.every((b, i) => stored[i] === b)) throw corrupt("not a klio WAL file (bad header)");
  const view = new DataView(stored.buffer, stored.byteOffset, stored.byteLength);
  const length = view.getUint32(12);
  const payload = stored.subarray(HEADER);
  let raw: Uint8Array;
  if (stored[8] === 0) raw = payload;
  else if (stored[8] === 1) {
    try {
      const out = inflateRawSync(payload, { maxOutputLength: Math.max(length, 1) });
      raw = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
    } catch (e) {
      throw corrupt(`cannot decompress (${(e as Error).message})`);
    }
  } else throw corrupt(`unknown compression ${stored[8]}`);
  if (raw.length !== length) throw corrupt(`length ${raw.length} instead of ${length}`);
  const expected = stored.subarray(16, 48);
  const actual = sha256(raw);
  if (!expected.every((b, i) => actual[i] === b)) throw corrupt("checksum mismatch");
  return raw;
}
