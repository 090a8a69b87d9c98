// Index files: which pack holds each chunk, where, how long, and how it is encoded. Sorted by
// chunk id so that readers binary-search them and merge them by streaming. Each file names
// the packs it indexes and the index files it supersedes (a consolidation's inputs).
//
// Version 1 (big-endian; documented in docs/FORMAT.md, "Index files"):
//   preamble      "KLIOINDX" | version u32 (1) | stored length of the head block u32
//   head block    entries-per-block u32 | entries u32 | packs u32 | superseded u32 |
//                 pack ids (16 bytes each) | superseded index ids (16 bytes each)
//   entry blocks  ceil(entries / entries-per-block) blocks of entries, 48 bytes each:
//                 chunk id (32) | pack number u32 | offset u32 | stored length u32 |
//                 flags (4 high bits) and plain length (28 low bits) u32
//   trailer       SHA-256 of every byte before it
// In an encrypted repository the head block and every entry block are sealed (crypto.ts)
// with associated data naming the file and the block, so nothing in an index but its
// preamble is readable without the key; blocks keep a lookup to one small decryption.
import { createHash } from "node:crypto";
import { KlioError } from "../util/errors.ts";
import { CHUNK_ID_BYTES } from "./chunk-id.ts";
import { SEAL_OVERHEAD, seal, unseal } from "./crypto.ts";
import type { Storage } from "./storage.ts";

const MAGIC = new TextEncoder().encode("KLIOINDX");
export const INDEX_VERSION = 1;
const PREAMBLE = 16;
export const ENTRY_BYTES = 48;
export const ENTRIES_PER_BLOCK = 256;
const TRAILER = 32;
export const ID16 = 16;
export const MAX_PLAIN = (1 << 28) - 1;

export const INDEX_PREFIX = "index/";

export function indexKey(fileId: string): string {
  return `${INDEX_PREFIX}${fileId}.idx`;
}

/** The file id of an index key, or null when the key is not an index file's. */
export function indexIdOfKey(key: string): string | null {
  const m = /^index\/([0-9a-f]{32})\.idx$/.exec(key);
  return m ? m[1]! : null;
}

export function packKey(packId: string): string {
  return `packs/${packId.slice(0, 2)}/${packId}.pack`;
}

export function packIdOfKey(key: string): string | null {
  const m = /^packs\/([0-9a-f]{2})\/([0-9a-f]{32})\.pack$/.exec(key);
  return m && m[2]!.startsWith(m[1]!) ? m[2]! : null;
}

export interface IndexHead {
  key: string;
  fileId: string;
  entries: number;
  entriesPerBlock: number;
  /** Pack ids (32 hex digits), by pack number. */
  packs: string[];
  superseded: string[];
  /** Where the first entry block starts. */
  blocksAt: number;
  /** Stored bytes of a full block. */
  blockStored: number;
  /** Size of the whole file. */
  size: number;
}

/** One decoded entry, pointing into `packs` of its file. */
export interface IndexEntry {
  id: Uint8Array;
  pack: number;
  offset: number;
  length: number;
  flags: number;
  plainLength: number;
}

export function encodeEntry(out: Uint8Array, at: number, e: IndexEntry): void {
  out.set(e.id, at);
  const v = new DataView(out.buffer, out.byteOffset + at + CHUNK_ID_BYTES, 16);
  v.setUint32(0, e.pack);
  v.setUint32(4, e.offset);
  v.setUint32(8, e.length);
  v.setUint32(12, ((e.flags & 0xf) << 28) + e.plainLength);
}

export function decodeEntry(buf: Uint8Array, at: number): IndexEntry {
  const v = new DataView(buf.buffer, buf.byteOffset + at + CHUNK_ID_BYTES, 16);
  const last = v.getUint32(12);
  return { id: buf.subarray(at, at + CHUNK_ID_BYTES), pack: v.getUint32(0), offset: v.getUint32(4), length: v.getUint32(8), flags: last >>> 28, plainLength: last & MAX_PLAIN };
}

const enc = new TextEncoder();
function headAad(fileId: string): Uint8Array {
  return enc.encode(`klio index head ${fileId}`);
}
function blockAad(fileId: string, block: number): Uint8Array {
  return enc.encode(`klio index block ${fileId} ${block}`);
}

export function hexOf(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += (b[i]! < 16 ? "0" : "") + b[i]!.toString(16);
  return s;
}

export function bytesOfHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * The bytes of an index file, as a stream: `entries` yields encoded entries in id order
 * (any number per yield, a multiple of 48 bytes) and must yield exactly `count` entries.
 */
export async function* encodeIndexFile(
  o: { fileId: string; key: Uint8Array | null; packs: string[]; superseded: string[]; count: number },
  entries: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  const hash = createHash("sha256");
  const emit = (b: Uint8Array) => {
    hash.update(b);
    return b;
  };
  const head = new Uint8Array(16 + ID16 * (o.packs.length + o.superseded.length));
  const hv = new DataView(head.buffer);
  hv.setUint32(0, ENTRIES_PER_BLOCK);
  hv.setUint32(4, o.count);
  hv.setUint32(8, o.packs.length);
  hv.setUint32(12, o.superseded.length);
  let at = 16;
  for (const id of [...o.packs, ...o.superseded]) {
    head.set(bytesOfHex(id), at);
    at += ID16;
  }
  const storedHead = o.key ? seal(o.key, head, headAad(o.fileId)) : head;
  const pre = new Uint8Array(PREAMBLE);
  pre.set(MAGIC, 0);
  new DataView(pre.buffer).setUint32(8, INDEX_VERSION);
  new DataView(pre.buffer).setUint32(12, storedHead.length);
  yield emit(pre);
  yield emit(storedHead);

  const blockBytes = ENTRIES_PER_BLOCK * ENTRY_BYTES;
  let block = new Uint8Array(blockBytes);
  let fill = 0;
  let blockNo = 0;
  let seen = 0;
  const out: Uint8Array[] = [];
  const sealBlock = (plain: Uint8Array) => {
    out.push(emit(o.key ? seal(o.key, plain, blockAad(o.fileId, blockNo)) : plain));
    blockNo++;
  };
  for await (const chunk of entries) {
    if (chunk.length % ENTRY_BYTES !== 0) throw new Error("index entries come in 48-byte records");
    seen += chunk.length / ENTRY_BYTES;
    let i = 0;
    while (i < chunk.length) {
      const n = Math.min(blockBytes - fill, chunk.length - i);
      block.set(chunk.subarray(i, i + n), fill);
      fill += n;
      i += n;
      if (fill === blockBytes) {
        sealBlock(block);
        block = new Uint8Array(blockBytes);
        fill = 0;
      }
    }
    // Hand blocks out in batches of a few hundred KB: few awaits, bounded memory.
    if (out.length >= 32) yield* out.splice(0);
  }
  if (fill > 0) sealBlock(block.subarray(0, fill));
  yield* out.splice(0);
  if (seen !== o.count) throw new Error(`index file ${o.fileId}: ${seen} entries written, ${o.count} announced`);
  yield new Uint8Array(hash.digest());
}

function corrupt(key: string, why: string): KlioError {
  return new KlioError("corrupt-index", `index file ${key} is damaged: ${why}`);
}

/** Reads and checks the preamble and head block. */
export async function readIndexHead(storage: Storage, key: string, dataKey: Uint8Array | null, size: number): Promise<IndexHead> {
  const fileId = indexIdOfKey(key);
  if (fileId === null) throw corrupt(key, "not an index file name");
  if (size < PREAMBLE + TRAILER) throw corrupt(key, `only ${size} bytes`);
  const pre = await storage.getRange(key, 0, PREAMBLE);
  for (let i = 0; i < MAGIC.length; i++) if (pre[i] !== MAGIC[i]) throw corrupt(key, "no index magic");
  const pv = new DataView(pre.buffer, pre.byteOffset, PREAMBLE);
  const version = pv.getUint32(8);
  if (version !== INDEX_VERSION) throw new KlioError("corrupt-index", `index file ${key} has format version ${version}; this klio reads version ${INDEX_VERSION}`);
  const headStored = pv.getUint32(12);
  if (headStored < 16 || PREAMBLE + headStored + TRAILER > size) throw corrupt(key, "bad head length");
  const stored = await storage.getRange(key, PREAMBLE, headStored);
  const head = dataKey ? unseal(dataKey, stored, headAad(fileId)) : stored;
  if (head === null) throw corrupt(key, "the head block does not decrypt (damaged, or not of this repository)");
  const hv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const perBlock = hv.getUint32(0);
  const entries = hv.getUint32(4);
  const nPacks = hv.getUint32(8);
  const nSuper = hv.getUint32(12);
  if (perBlock !== ENTRIES_PER_BLOCK) throw corrupt(key, `${perBlock} entries per block`);
  if (head.length !== 16 + ID16 * (nPacks + nSuper)) throw corrupt(key, "head block length does not match its counts");
  const ids: string[] = [];
  for (let i = 0; i < nPacks + nSuper; i++) ids.push(hexOf(head.subarray(16 + i * ID16, 16 + (i + 1) * ID16)));
  const blockStored = ENTRIES_PER_BLOCK * ENTRY_BYTES + (dataKey ? SEAL_OVERHEAD : 0);
  const blocksAt = PREAMBLE + headStored;
  const full = Math.floor(entries / ENTRIES_PER_BLOCK);
  const rest = entries % ENTRIES_PER_BLOCK;
  const expected = blocksAt + full * blockStored + (rest ? rest * ENTRY_BYTES + (dataKey ? SEAL_OVERHEAD : 0) : 0) + TRAILER;
  if (expected !== size) throw corrupt(key, `${size} bytes, but its head announces ${expected}`);
  return { key, fileId, entries, entriesPerBlock: perBlock, packs: ids.slice(0, nPacks), superseded: ids.slice(nPacks), blocksAt, blockStored, size };
}

export function blockCount(h: IndexHead): number {
  return Math.ceil(h.entries / h.entriesPerBlock);
}

function blockRange(h: IndexHead, b: number): { at: number; stored: number; entries: number } {
  const entries = Math.min(h.entriesPerBlock, h.entries - b * h.entriesPerBlock);
  const overhead = h.blockStored - h.entriesPerBlock * ENTRY_BYTES;
  return { at: h.blocksAt + b * h.blockStored, stored: entries * ENTRY_BYTES + overhead, entries };
}

export function decodeBlock(h: IndexHead, b: number, stored: Uint8Array, dataKey: Uint8Array | null): Uint8Array {
  const plain = dataKey ? unseal(dataKey, stored, blockAad(h.fileId, b)) : stored;
  if (plain === null) throw corrupt(h.key, `entry block ${b} does not decrypt`);
  return plain;
}

/** One entry block, decoded: `entries × 48` bytes. */
export async function readIndexBlock(storage: Storage, h: IndexHead, b: number, dataKey: Uint8Array | null): Promise<Uint8Array> {
  const r = blockRange(h, b);
  return decodeBlock(h, b, await storage.getRange(h.key, r.at, r.stored), dataKey);
}

/**
 * Every entry block in order, checked as it goes: every block decrypts, ids ascend (equal ids
 * only from concurrent writers, allowed), pack numbers lie inside the pack table. With
 * `verifyChecksum` the trailer's SHA-256 is compared at the end too; opening a repository
 * skips it (a chunk read through a damaged entry fails its own hash check anyway, and an
 * encrypted block is authenticated by its tag), check() does not.
 *
 * Reads 4 MB at a time into one buffer: a yielded block is valid until the next one is asked for.
 */
export async function* readIndexBlocks(storage: Storage, h: IndexHead, dataKey: Uint8Array | null, verifyChecksum = true): AsyncGenerator<Uint8Array> {
  const hash = verifyChecksum ? createHash("sha256") : null;
  hash?.update(await storage.getRange(h.key, 0, h.blocksAt));
  const blocks = blockCount(h);
  const batch = Math.max(1, Math.floor((4 << 20) / h.blockStored));
  // Fresh memory is slow to fault in on these VMs (several ms per MB): two buffers, reused,
  // the next batch read while this one is decoded.
  const buffers = [new Uint8Array(Math.min(blocks, batch) * h.blockStored), new Uint8Array(blocks > batch ? batch * h.blockStored : 0)];
  const read = (b: number, into: Uint8Array): Promise<Uint8Array> => {
    const start = blockRange(h, b).at;
    const endR = blockRange(h, Math.min(blocks, b + batch) - 1);
    return storage.getRange(h.key, start, endR.at + endR.stored - start, into);
  };
  const prev = new Uint8Array(CHUNK_ID_BYTES);
  const nPacks = h.packs.length;
  let first = true;
  let pending = blocks > 0 ? read(0, buffers[0]!) : null;
  for (let b = 0, turn = 0; b < blocks; b += batch, turn ^= 1) {
    const last = Math.min(blocks, b + batch);
    const start = blockRange(h, b).at;
    const buf = await pending!;
    pending = last < blocks ? read(last, buffers[turn ^ 1]!) : null;
    // A consumer that stops early must not leave the read ahead unhandled.
    pending?.catch(() => {});
    hash?.update(buf);
    for (let i = b; i < last; i++) {
      const r = blockRange(h, i);
      const plain = decodeBlock(h, i, buf.subarray(r.at - start, r.at - start + r.stored), dataKey);
      if (!first && compareIds(prev, 0, plain, 0) > 0) throw corrupt(h.key, `entries out of order at block ${i}`);
      first = false;
      for (let at = 0; at < plain.length; at += ENTRY_BYTES) {
        if (at > 0 && compareIds(plain, at - ENTRY_BYTES, plain, at) > 0) throw corrupt(h.key, `entries out of order in block ${i}`);
        const pack = ((plain[at + 32]! << 24) | (plain[at + 33]! << 16) | (plain[at + 34]! << 8) | plain[at + 35]!) >>> 0;
        if (pack >= nPacks) throw corrupt(h.key, `an entry in block ${i} names pack number ${pack} of ${nPacks}`);
      }
      prev.set(plain.subarray(plain.length - ENTRY_BYTES, plain.length - ENTRY_BYTES + CHUNK_ID_BYTES));
      yield plain;
    }
  }
  if (hash) {
    const trailer = await storage.getRange(h.key, h.size - TRAILER, TRAILER);
    const digest = hash.digest();
    for (let i = 0; i < TRAILER; i++) if (digest[i] !== trailer[i]) throw corrupt(h.key, "checksum mismatch");
  }
}

/** Byte order of two ids (32 bytes each) at the given offsets. */
export function compareIds(a: Uint8Array, ai: number, b: Uint8Array, bi: number): number {
  for (let i = 0; i < CHUNK_ID_BYTES; i++) {
    const d = a[ai + i]! - b[bi + i]!;
    if (d !== 0) return d;
  }
  return 0;
}
