// Index files: which pack holds each chunk, where, how long, and how it is encoded. Sorted by
// chunk id so that readers binary-search them and merge them by streaming. Each file names
// the packs it indexes and the index files it supersedes (a consolidation's inputs).
//
// Two views of the same entries: the entry blocks (full 56-byte entries, small blocks, read
// one at a time to locate a chunk) and, after them, the key section — exactly the in-memory
// form of index-run.ts (a fan-out table and 12 bytes per chunk), so that opening a
// repository reads only the key section, straight into its typed arrays, a quarter of the
// file and no per-entry work.
//
// Version 2 (docs/FORMAT.md, "Index files"); integers big-endian unless said otherwise:
//   preamble      "KLIOINDX" | version u32 (2) | stored length of the head u32
//   head          entries u32 | packs u32 | superseded u32 | entries per block u32 (256) |
//                 keys per block u32 (65536) | pack ids (16 bytes each) | superseded index ids (16 each)
//   entry blocks  ceil(entries / 256) blocks of up to 256 entries, 56 bytes each:
//                 chunk id (32) | pack number u32 | offset u32 | stored length u32 |
//                 flags (4 high bits) and plain length (28 low bits) u32 |
//                 frame plain length u32 | offset in the frame u32
//                 (offset and stored length are the frame's: pack-writer.ts)
//   fan           65537 u32 little-endian: fan[p] = entries whose first 2 id bytes are < p
//   key blocks    ceil(entries / 65536) blocks of up to 65536 keys, 12 bytes each: id bytes
//                 2-5, 6-9 and 10-13, each read as a big-endian u32 and stored little-endian
//   trailer       SHA-256 of every byte before it
// In an encrypted repository the head, every entry block, the fan and every key block are
// sealed (crypto.ts: nonce ‖ ciphertext ‖ tag) with associated data naming the file and the
// part, so nothing but the preamble is readable without the key, and no part can be moved.
import { createHash } from "node:crypto";
import { KlioError } from "../util/errors.ts";
import { CHUNK_ID_BYTES } from "./chunk-id.ts";
import { SEAL_OVERHEAD, seal, unseal } from "./crypto.ts";
import type { Storage } from "./storage.ts";

const MAGIC = new TextEncoder().encode("KLIOINDX");
export const INDEX_VERSION = 2;
const PREAMBLE = 16;
export const ENTRY_BYTES = 56;
export const ENTRIES_PER_BLOCK = 256;
export const KEYS_PER_BLOCK = 65536;
export const KEY_WORDS = 3;
export const KEY_BYTES = KEY_WORDS * 4;
export const FAN_SIZE = 65537;
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

/**
 * The file id of any file in the index format: an index file, or the entries maintenance
 * dropped (maintenance/<id>.idx, kept until the space is freed).
 */
export function indexFormatIdOfKey(key: string): string | null {
  const m = /^(?:index|maintenance)\/([0-9a-f]{32})\.idx$/.exec(key);
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
  sealed: boolean;
  /** Where the sections start, and the file's size. */
  blocksAt: number;
  fanAt: number;
  keysAt: number;
  trailerAt: number;
  size: number;
}

/** One decoded entry, pointing into `packs` of its file. */
export interface IndexEntry {
  id: Uint8Array;
  pack: number;
  offset: number;
  length: number;
  /** The codec of the frame. */
  flags: number;
  plainLength: number;
  /** The plain length of the whole frame the chunk is in, and where in it the chunk starts. */
  frameLength: number;
  inFrame: number;
}

/** A chunk stored alone is a frame of one: frameLength = plainLength, inFrame = 0. */
export type EntryInput = Omit<IndexEntry, "frameLength" | "inFrame"> & Partial<Pick<IndexEntry, "frameLength" | "inFrame">>;

export function encodeEntry(out: Uint8Array, at: number, e: EntryInput): void {
  out.set(e.id, at);
  const v = new DataView(out.buffer, out.byteOffset + at + CHUNK_ID_BYTES, ENTRY_BYTES - CHUNK_ID_BYTES);
  v.setUint32(0, e.pack);
  v.setUint32(4, e.offset);
  v.setUint32(8, e.length);
  v.setUint32(12, ((e.flags & 0xf) << 28) + e.plainLength);
  v.setUint32(16, e.frameLength ?? e.plainLength);
  v.setUint32(20, e.inFrame ?? 0);
}

export function decodeEntry(buf: Uint8Array, at: number): IndexEntry {
  const v = new DataView(buf.buffer, buf.byteOffset + at + CHUNK_ID_BYTES, ENTRY_BYTES - CHUNK_ID_BYTES);
  return entryOf(buf.subarray(at, at + CHUNK_ID_BYTES), v.getUint32(0), v.getUint32(4), v.getUint32(8), v.getUint32(12), v.getUint32(16), v.getUint32(20));
}

function entryOf(id: Uint8Array, pack: number, offset: number, length: number, flagsAndLength: number, frameLength: number, inFrame: number): IndexEntry {
  return { id, pack, offset, length, flags: flagsAndLength >>> 28, plainLength: flagsAndLength & MAX_PLAIN, frameLength, inFrame };
}

/** u32 words after an entry's id: pack, frame offset, frame stored length, flags|plain length, frame length, offset in frame. */
export const LOCATION_WORDS = 6;

/** Copies the location words of the entry at `at` of a plain entry block into `out` at `outAt`. */
export function copyLocation(plain: Uint8Array, at: number, out: Uint32Array, outAt: number): void {
  const v = new DataView(plain.buffer, plain.byteOffset + at + CHUNK_ID_BYTES, LOCATION_WORDS * 4);
  for (let w = 0; w < LOCATION_WORDS; w++) out[outAt + w] = v.getUint32(4 * w);
}

/** The entry of chunk `id` from its location words (LOCATION_WORDS at `at`). */
export function entryOfLocation(id: Uint8Array, t: Uint32Array, at: number): IndexEntry {
  return entryOf(id, t[at]!, t[at + 1]!, t[at + 2]!, t[at + 3]!, t[at + 4]!, t[at + 5]!);
}

const enc = new TextEncoder();
const aad = (fileId: string, part: string) => enc.encode(`klio index ${part} ${fileId}`);

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

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** The bytes of `words` as little-endian u32s: a view on little-endian machines, a swapped copy elsewhere. */
export function wordsToLe(words: Uint32Array): Uint8Array {
  const view = new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
  if (LITTLE_ENDIAN) return view;
  const out = new Uint8Array(view.length);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < words.length; i++) dv.setUint32(i * 4, words[i]!, true);
  return out;
}

/** After reading little-endian words into `words`' bytes: fix them up on a big-endian machine. */
export function leToWords(words: Uint32Array): void {
  if (LITTLE_ENDIAN) return;
  const dv = new DataView(words.buffer, words.byteOffset, words.byteLength);
  for (let i = 0; i < words.length; i++) words[i] = dv.getUint32(i * 4, true);
}

/** The layout a head implies: where each section starts and how big the file is. */
function layout(entries: number, headStored: number, sealed: boolean): { blocksAt: number; fanAt: number; keysAt: number; trailerAt: number; size: number } {
  const ov = sealed ? SEAL_OVERHEAD : 0;
  const sectionBytes = (n: number, per: number, bytes: number) => Math.floor(n / per) * (per * bytes + ov) + (n % per ? (n % per) * bytes + ov : 0);
  const blocksAt = PREAMBLE + headStored;
  const fanAt = blocksAt + sectionBytes(entries, ENTRIES_PER_BLOCK, ENTRY_BYTES);
  const keysAt = fanAt + FAN_SIZE * 4 + ov;
  const trailerAt = keysAt + sectionBytes(entries, KEYS_PER_BLOCK, KEY_BYTES);
  return { blocksAt, fanAt, keysAt, trailerAt, size: trailerAt + TRAILER };
}

/** The in-memory keys of a file, built while its entries stream by (index-run.ts uses them as they are). */
export interface KeySink {
  add(plainEntries: Uint8Array): void;
  /** After every entry was added: the fan and the keys. */
  done(): { fan: Uint32Array; keys: Uint32Array };
}

/**
 * The bytes of an index file, as a stream: `entries` yields encoded entries in id order (any
 * number per yield, whole entries) and must yield exactly `count`; `sink` receives
 * them too and provides the key section written after them.
 */
export async function* encodeIndexFile(
  o: { fileId: string; key: Uint8Array | null; packs: string[]; superseded: string[]; count: number },
  entries: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  sink: KeySink,
): AsyncGenerator<Uint8Array> {
  const hash = createHash("sha256");
  const emit = (b: Uint8Array) => {
    hash.update(b);
    return b;
  };
  const sealPart = (plain: Uint8Array, part: string) => (o.key ? seal(o.key, plain, aad(o.fileId, part)) : plain);
  const head = new Uint8Array(20 + ID16 * (o.packs.length + o.superseded.length));
  const hv = new DataView(head.buffer);
  hv.setUint32(0, o.count);
  hv.setUint32(4, o.packs.length);
  hv.setUint32(8, o.superseded.length);
  hv.setUint32(12, ENTRIES_PER_BLOCK);
  hv.setUint32(16, KEYS_PER_BLOCK);
  let at = 20;
  for (const id of [...o.packs, ...o.superseded]) {
    head.set(bytesOfHex(id), at);
    at += ID16;
  }
  const storedHead = sealPart(head, "head");
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
    out.push(emit(sealPart(plain, `block ${blockNo}`)));
    blockNo++;
  };
  for await (const chunk of entries) {
    if (chunk.length % ENTRY_BYTES !== 0) throw new Error(`index entries come in ${ENTRY_BYTES}-byte records`);
    sink.add(chunk);
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

  const { fan, keys } = sink.done();
  yield emit(sealPart(wordsToLe(fan).slice(), "fan"));
  const keyBytes = wordsToLe(keys);
  for (let b = 0; b * KEYS_PER_BLOCK < o.count; b++) {
    const part = keyBytes.subarray(b * KEYS_PER_BLOCK * KEY_BYTES, Math.min(o.count, (b + 1) * KEYS_PER_BLOCK) * KEY_BYTES);
    // A copy when not sealed: the caller keeps `keys`, the storage may hold the bytes a while.
    yield emit(o.key ? sealPart(part, `keys ${b}`) : part.slice());
  }
  yield new Uint8Array(hash.digest());
}

function corrupt(key: string, why: string): KlioError {
  return new KlioError("corrupt-index", `index file ${key} is damaged: ${why}`);
}

/** Reads and checks the preamble and head. */
export async function readIndexHead(storage: Storage, key: string, dataKey: Uint8Array | null, size: number): Promise<IndexHead> {
  if (size < PREAMBLE + TRAILER) throw corrupt(key, `only ${size} bytes`);
  const h = await readHeadAsWritten(storage, key, dataKey, size);
  if (h.size !== size) throw corrupt(key, `${size} bytes, but its head announces ${h.size}${size < h.size ? " (truncated)" : ""}`);
  return h;
}

/**
 * The packs a damaged index file names, when its head can still be read (a truncated file):
 * so that check() can tell the packs whose chunks became unfindable from a writer's leftovers.
 */
export async function packsOfDamagedIndex(storage: Storage, key: string, dataKey: Uint8Array | null, size: number): Promise<string[] | null> {
  try {
    return (await readHeadAsWritten(storage, key, dataKey, size)).packs;
  } catch {
    return null;
  }
}

/** The preamble and head, checked in themselves; `size` (the file's) only bounds the head. */
async function readHeadAsWritten(storage: Storage, key: string, dataKey: Uint8Array | null, size: number): Promise<IndexHead> {
  const fileId = indexFormatIdOfKey(key);
  if (fileId === null) throw corrupt(key, "not an index file name");
  const pre = await storage.getRange(key, 0, PREAMBLE);
  for (let i = 0; i < MAGIC.length; i++) if (pre[i] !== MAGIC[i]) throw corrupt(key, "no index magic");
  const pv = new DataView(pre.buffer, pre.byteOffset, PREAMBLE);
  const version = pv.getUint32(8);
  if (version !== INDEX_VERSION) throw new KlioError("corrupt-index", `index file ${key} has format version ${version}; this klio reads version ${INDEX_VERSION}`);
  const headStored = pv.getUint32(12);
  if (headStored < 20 || PREAMBLE + headStored + TRAILER > size) throw corrupt(key, "bad head length");
  const stored = await storage.getRange(key, PREAMBLE, headStored);
  const head = dataKey ? unseal(dataKey, stored, aad(fileId, "head")) : stored;
  if (head === null) throw corrupt(key, "the head does not decrypt (damaged, or not of this repository)");
  const hv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const entries = hv.getUint32(0);
  const nPacks = hv.getUint32(4);
  const nSuper = hv.getUint32(8);
  if (hv.getUint32(12) !== ENTRIES_PER_BLOCK || hv.getUint32(16) !== KEYS_PER_BLOCK) throw corrupt(key, "unexpected block sizes");
  if (head.length !== 20 + ID16 * (nPacks + nSuper)) throw corrupt(key, "head length does not match its counts");
  const ids: string[] = [];
  for (let i = 0; i < nPacks + nSuper; i++) ids.push(hexOf(head.subarray(20 + i * ID16, 20 + (i + 1) * ID16)));
  const l = layout(entries, headStored, dataKey !== null);
  return { key, fileId, entries, entriesPerBlock: ENTRIES_PER_BLOCK, packs: ids.slice(0, nPacks), superseded: ids.slice(nPacks), sealed: dataKey !== null, ...l };
}

export function blockCount(h: IndexHead): number {
  return Math.ceil(h.entries / ENTRIES_PER_BLOCK);
}

function partRange(h: IndexHead, sectionAt: number, per: number, bytes: number, b: number): { at: number; stored: number } {
  const ov = h.sealed ? SEAL_OVERHEAD : 0;
  const n = Math.min(per, h.entries - b * per);
  return { at: sectionAt + b * (per * bytes + ov), stored: n * bytes + ov };
}

function open(h: IndexHead, stored: Uint8Array, dataKey: Uint8Array | null, part: string): Uint8Array {
  const plain = dataKey ? unseal(dataKey, stored, aad(h.fileId, part)) : stored;
  if (plain === null) throw corrupt(h.key, `its ${part} does not decrypt`);
  return plain;
}

/** One entry block, decoded: `entries × ENTRY_BYTES` bytes. */
export async function readIndexBlock(storage: Storage, h: IndexHead, b: number, dataKey: Uint8Array | null): Promise<Uint8Array> {
  const r = partRange(h, h.blocksAt, ENTRIES_PER_BLOCK, ENTRY_BYTES, b);
  return open(h, await storage.getRange(h.key, r.at, r.stored), dataKey, `block ${b}`);
}

/**
 * Reads `parts` consecutive parts of a section in batches of about 4 MB into two reused
 * buffers (fresh memory is slow to fault in on these VMs), the next batch read while the
 * current one is used; yields each part's stored bytes, valid until the next is asked for.
 */
async function* readParts(storage: Storage, h: IndexHead, parts: number, range: (b: number) => { at: number; stored: number }, batchBytes = 4 << 20): AsyncGenerator<Uint8Array> {
  if (parts === 0) return;
  const full = range(0).stored;
  const batch = Math.max(1, Math.floor(batchBytes / full));
  const buffers = [new Uint8Array(Math.min(parts, batch) * full), new Uint8Array(parts > batch ? batch * full : 0)];
  const read = (b: number, into: Uint8Array) => {
    const start = range(b).at;
    const last = range(Math.min(parts, b + batch) - 1);
    const p = storage.getRange(h.key, start, last.at + last.stored - start, into);
    p.catch(() => {}); // a consumer that stops early leaves the read ahead unawaited
    return p;
  };
  let pending = read(0, buffers[0]!);
  for (let b = 0, turn = 0; b < parts; b += batch, turn ^= 1) {
    const buf = await pending;
    const last = Math.min(parts, b + batch);
    if (last < parts) pending = read(last, buffers[turn ^ 1]!);
    const start = range(b).at;
    for (let i = b; i < last; i++) {
      const r = range(i);
      yield buf.subarray(r.at - start, r.at - start + r.stored);
    }
  }
}

/**
 * Every entry block in order, decoded, checked as it goes: ids ascend (equal ids only from
 * concurrent writers, allowed), pack numbers lie inside the pack table. A yielded block is
 * valid until the next one is asked for.
 */
export async function* readIndexBlocks(storage: Storage, h: IndexHead, dataKey: Uint8Array | null, batchBytes?: number): AsyncGenerator<Uint8Array> {
  const prev = new Uint8Array(CHUNK_ID_BYTES);
  const nPacks = h.packs.length;
  let i = 0;
  for await (const stored of readParts(storage, h, blockCount(h), (b) => partRange(h, h.blocksAt, ENTRIES_PER_BLOCK, ENTRY_BYTES, b), batchBytes)) {
    const plain = open(h, stored, dataKey, `block ${i}`);
    if (i > 0 && compareIds(prev, 0, plain, 0) > 0) throw corrupt(h.key, `entries out of order at block ${i}`);
    for (let at = 0; at < plain.length; at += ENTRY_BYTES) {
      if (at > 0 && compareIds(plain, at - ENTRY_BYTES, plain, at) > 0) throw corrupt(h.key, `entries out of order in block ${i}`);
      const pack = ((plain[at + 32]! << 24) | (plain[at + 33]! << 16) | (plain[at + 34]! << 8) | plain[at + 35]!) >>> 0;
      if (pack >= nPacks) throw corrupt(h.key, `an entry in block ${i} names pack number ${pack} of ${nPacks}`);
    }
    prev.set(plain.subarray(plain.length - ENTRY_BYTES, plain.length - ENTRY_BYTES + CHUNK_ID_BYTES));
    i++;
    yield plain;
  }
}

/**
 * The key section, read straight into the typed arrays a run keeps, and checked: the fan
 * ascends to the entry count, and keys ascend within each fan bucket (what binary search
 * needs). Entries themselves are not read: a damaged entry fails the chunk's own checks when
 * it is used, and check() compares the two views.
 */
export async function readIndexKeys(storage: Storage, h: IndexHead, dataKey: Uint8Array | null): Promise<{ fan: Uint32Array; keys: Uint32Array }> {
  const ov = h.sealed ? SEAL_OVERHEAD : 0;
  const fan = new Uint32Array(FAN_SIZE);
  const fanBytes = open(h, await storage.getRange(h.key, h.fanAt, FAN_SIZE * 4 + ov), dataKey, "fan");
  new Uint8Array(fan.buffer).set(fanBytes);
  leToWords(fan);
  const keys = new Uint32Array(h.entries * KEY_WORDS);
  const keyBytes = new Uint8Array(keys.buffer);
  if (!h.sealed) {
    // Straight from the file into the array, in 8 MB reads.
    for (let at = 0; at < keyBytes.length; at += 8 << 20) {
      const n = Math.min(8 << 20, keyBytes.length - at);
      await storage.getRange(h.key, h.keysAt + at, n, keyBytes.subarray(at, at + n));
    }
  } else {
    let b = 0;
    for await (const stored of readParts(storage, h, Math.ceil(h.entries / KEYS_PER_BLOCK), (i) => partRange(h, h.keysAt, KEYS_PER_BLOCK, KEY_BYTES, i))) {
      keyBytes.set(open(h, stored, dataKey, `keys ${b}`), b * KEYS_PER_BLOCK * KEY_BYTES);
      b++;
    }
  }
  leToWords(keys);
  checkKeys(h, fan, keys);
  return { fan, keys };
}

function checkKeys(h: IndexHead, fan: Uint32Array, keys: Uint32Array): void {
  if (fan[0] !== 0 || fan[FAN_SIZE - 1] !== h.entries) throw corrupt(h.key, "its fan-out table does not cover its entries");
  for (let p = 0; p < FAN_SIZE - 1; p++) {
    const lo = fan[p]!;
    const hi = fan[p + 1]!;
    if (hi < lo) throw corrupt(h.key, "its fan-out table does not ascend");
    for (let i = lo + 1; i < hi; i++) {
      const a = (i - 1) * KEY_WORDS;
      const b = i * KEY_WORDS;
      const c = keys[a]! - keys[b]! || keys[a + 1]! - keys[b + 1]! || keys[a + 2]! - keys[b + 2]!;
      if (c > 0) throw corrupt(h.key, `its keys are out of order at entry ${i}`);
    }
  }
}

/**
 * The whole file checked, for check(): the trailer's SHA-256, every entry block (as
 * readIndexBlocks), and the key section equal, key for key, to what the entries imply. Each
 * entry block is handed to `onBlock` on the way. Memory stays a few buffers.
 */
export async function verifyIndexFile(storage: Storage, h: IndexHead, dataKey: Uint8Array | null, onBlock: (plain: Uint8Array) => Promise<void>): Promise<void> {
  const hash = createHash("sha256");
  const buf = new Uint8Array(4 << 20);
  for (let at = 0; at < h.trailerAt; at += buf.length) hash.update(await storage.getRange(h.key, at, Math.min(buf.length, h.trailerAt - at), buf));
  const trailer = await storage.getRange(h.key, h.trailerAt, TRAILER);
  const digest = hash.digest();
  for (let i = 0; i < TRAILER; i++) if (digest[i] !== trailer[i]) throw corrupt(h.key, "checksum mismatch");

  const ov = h.sealed ? SEAL_OVERHEAD : 0;
  const fan = new Uint32Array(FAN_SIZE);
  new Uint8Array(fan.buffer).set(open(h, await storage.getRange(h.key, h.fanAt, FAN_SIZE * 4 + ov), dataKey, "fan"));
  leToWords(fan);
  const keyParts = readParts(storage, h, Math.ceil(h.entries / KEYS_PER_BLOCK), (i) => partRange(h, h.keysAt, KEYS_PER_BLOCK, KEY_BYTES, i))[Symbol.asyncIterator]();
  let keys: DataView = new DataView(new ArrayBuffer(0));
  let keyBlock = -1;
  let n = 0;
  let next = 0;
  const mismatch = () => corrupt(h.key, "its key section does not match its entries");
  for await (const plain of readIndexBlocks(storage, h, dataKey)) {
    for (let at = 0; at < plain.length; at += ENTRY_BYTES, n++) {
      const p = (plain[at]! << 8) | plain[at + 1]!;
      for (; next <= p; next++) if (fan[next] !== n) throw mismatch();
      if (Math.floor(n / KEYS_PER_BLOCK) !== keyBlock) {
        keyBlock++;
        const r = await keyParts.next();
        if (r.done) throw mismatch();
        const kp = open(h, r.value, dataKey, `keys ${keyBlock}`);
        keys = new DataView(kp.buffer, kp.byteOffset, kp.byteLength);
      }
      const k = (n % KEYS_PER_BLOCK) * KEY_BYTES;
      const e = new DataView(plain.buffer, plain.byteOffset + at);
      if (keys.getUint32(k, true) !== e.getUint32(2) || keys.getUint32(k + 4, true) !== e.getUint32(6) || keys.getUint32(k + 8, true) !== e.getUint32(10)) throw mismatch();
    }
    await onBlock(plain);
  }
  for (; next < FAN_SIZE; next++) if (fan[next] !== n) throw mismatch();
}

/** Byte order of two ids (32 bytes each) at the given offsets. */
export function compareIds(a: Uint8Array, ai: number, b: Uint8Array, bi: number): number {
  for (let i = 0; i < CHUNK_ID_BYTES; i++) {
    const d = a[ai + i]! - b[bi + i]!;
    if (d !== 0) return d;
  }
  return 0;
}
