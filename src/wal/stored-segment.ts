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
export const STORED_HEADER_BYTES = 48;
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
  const out = new Uint8Array(STORED_HEADER_BYTES + payload.length);
  out.set(MAGIC, 0);
  out[8] = compressed ? 1 : 0;
  new DataView(out.buffer).setUint32(12, raw.length);
  out.set(digest, 16);
  out.set(payload, STORED_HEADER_BYTES);
  return out;
}

export interface StoredSegmentHeader {
  compressed: boolean;
  /** Of the original bytes. */
  length: number;
  sha256: Uint8Array;
}

export function corruptSegment(what: string, why: string): KlioError {
  return new KlioError("corrupt-wal", `${what} is damaged: ${why}`);
}

/** The first STORED_HEADER_BYTES of a stored segment, checked; throws corruptSegment. */
export function parseStoredSegmentHeader(header: Uint8Array, what: string): StoredSegmentHeader {
  if (header.length < STORED_HEADER_BYTES || !MAGIC.every((b, i) => header[i] === b)) throw corruptSegment(what, "not a klio WAL file (bad header)");
  if (header[8] !== 0 && header[8] !== 1) throw corruptSegment(what, `unknown compression ${header[8]}`);
  const length = new DataView(header.buffer, header.byteOffset, header.byteLength).getUint32(12);
  return { compressed: header[8] === 1, length, sha256: header.subarray(16, 48) };
}

/** Returns the original bytes, or throws KlioError("corrupt-wal") naming `what`. */
export function decodeStoredSegment(stored: Uint8Array, what: string): Uint8Array {
  const h = parseStoredSegmentHeader(stored, what);
  const payload = stored.subarray(STORED_HEADER_BYTES);
  let raw: Uint8Array;
  if (!h.compressed) raw = payload;
  else {
    try {
      const out = inflateRawSync(payload, { maxOutputLength: Math.max(h.length, 1) });
      raw = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
    } catch (e) {
      throw corruptSegment(what, `cannot decompress (${(e as Error).message})`);
    }
  }
  if (raw.length !== h.length) throw corruptSegment(what, `length ${raw.length} instead of ${h.length}`);
  const actual = sha256(raw);
  if (!h.sha256.every((b, i) => actual[i] === b)) throw corruptSegment(what, "checksum mismatch");
  return raw;
}
