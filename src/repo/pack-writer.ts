// A ChunkWriter: stores each chunk not already in the repository into the open pack; a full
// pack is sealed in the background while the next one fills — written once (pack first,
// then its index file, so an index never names a pack that is not durable), then its chunks
// join the in-memory index and later puts of the same data are deduplicated against it.
//
// Pack file, version 1 (docs/FORMAT.md, "Packs"): "KLIOPACK" | version u32 (1) | reserved
// u32 (0) | the stored chunks back to back; where each one is, only the index says.
//
// put() does all its work synchronously (hash, lookup, compress, seal, copy into the pack)
// and awaits only to hold back a caller that runs ahead of the disk: at most one pack is
// being written while the next fills, so memory stays near two pack sizes.
import { randomBytes } from "node:crypto";
import { KlioError } from "../util/errors.ts";
import { chunkIdHex, CHUNK_ID_BYTES, type ChunkId } from "./chunk-id.ts";
import type { ChunkIndex } from "./chunk-index.ts";
import { encodeChunk, type BlobContext } from "./blob.ts";
import { Compressor, type Compression } from "./codec.ts";
import { ENTRY_BYTES, MAX_PLAIN, compareIds, encodeEntry, encodeIndexFile, hexOf, indexKey, packKey, readIndexHead } from "./index-file.ts";
import { IndexRun, RunBuilder } from "./index-run.ts";
import type { Storage } from "./storage.ts";

export const PACK_MAGIC = new TextEncoder().encode("KLIOPACK");
export const PACK_VERSION = 1;
export const PACK_HEADER = 16;
const SEGMENT = 1 << 20;

export interface WriterStats {
  chunks: number;
  newChunks: number;
  plainBytes: number;
  newPlainBytes: number;
  storedBytes: number;
}

export interface ChunkWriter {
  put(data: Uint8Array, id?: ChunkId): Promise<{ id: ChunkId; isNew: boolean; storedBytes: number }>;
  flush(): Promise<void>;
  readonly stats: WriterStats;
}

export interface WriterContext extends BlobContext {
  compression: Compression;
  storage: Storage;
  index: ChunkIndex;
  packTargetBytes: number;
}

/** The pack being filled: its bytes in 1 MB segments, its entries in one growing buffer. */
class OpenPack {
  readonly id = hexOf(randomBytes(16));
  readonly segments: Uint8Array[] = [];
  size = 0;
  entries = new Uint8Array(256 * ENTRY_BYTES);
  count = 0;
  readonly ids = new Set<string>();

  constructor(private readonly pool: Uint8Array[]) {
    const head = new Uint8Array(PACK_HEADER);
    head.set(PACK_MAGIC, 0);
    new DataView(head.buffer).setUint32(8, PACK_VERSION);
    this.append(head);
  }

  append(bytes: Uint8Array): number {
    const at = this.size;
    let i = 0;
    while (i < bytes.length) {
      let seg = this.segments[this.segments.length - 1];
      const used = this.size - (this.segments.length - 1) * SEGMENT;
      if (!seg || used === SEGMENT) {
        // Fresh memory is slow to fault in (3-4 ms per MB on these VMs): reuse sealed packs' segments.
        seg = this.pool.pop() ?? new Uint8Array(SEGMENT);
        this.segments.push(seg);
        continue;
      }
      const n = Math.min(SEGMENT - used, bytes.length - i);
      seg.set(bytes.subarray(i, i + n), used);
      i += n;
      this.size += n;
    }
    return at;
  }

  addEntry(id: ChunkId, offset: number, length: number, flags: number, plainLength: number): void {
    if ((this.count + 1) * ENTRY_BYTES > this.entries.length) {
      const grown = new Uint8Array(this.entries.length * 2);
      grown.set(this.entries);
      this.entries = grown;
    }
    encodeEntry(this.entries, this.count * ENTRY_BYTES, { id, pack: 0, offset, length, flags, plainLength });
    this.count++;
  }

  /** The pack's bytes: whole segments, the last one cut to size. */
  bytes(): Uint8Array[] {
    const last = this.size - (this.segments.length - 1) * SEGMENT;
    return this.segments.map((s, i) => (i === this.segments.length - 1 ? s.subarray(0, last) : s));
  }

  /** The entries sorted by chunk id. */
  sortedEntries(): Uint8Array {
    const e = this.entries;
    const order = Array.from({ length: this.count }, (_, i) => i * ENTRY_BYTES);
    order.sort((a, b) => compareIds(e, a, e, b));
    const out = new Uint8Array(this.count * ENTRY_BYTES);
    order.forEach((from, i) => out.set(e.subarray(from, from + ENTRY_BYTES), i * ENTRY_BYTES));
    return out;
  }
}

export class PackChunkWriter implements ChunkWriter {
  readonly stats: WriterStats = { chunks: 0, newChunks: 0, plainBytes: 0, newPlainBytes: 0, storedBytes: 0 };
  /** Segments of sealed packs, for the next packs. */
  private readonly pool: Uint8Array[] = [];
  private open = new OpenPack(this.pool);
  /** Packs handed to the background but not yet indexed: their chunks still count as stored. */
  private readonly sealingPacks = new Set<OpenPack>();
  private sealing: Promise<void> = Promise.resolve();
  private failure: unknown = null;

  private readonly compressor: Compressor;

  constructor(private readonly ctx: WriterContext) {
    this.compressor = new Compressor(ctx.compression);
  }

  async put(data: Uint8Array, given?: ChunkId): Promise<{ id: ChunkId; isNew: boolean; storedBytes: number }> {
    if (this.failure) throw this.failure;
    if (data.length > MAX_PLAIN) throw new KlioError("bad-chunk", `a chunk of ${data.length} bytes is larger than the largest stored chunk (${MAX_PLAIN} bytes)`);
    if (given !== undefined && given.length !== CHUNK_ID_BYTES) throw new KlioError("bad-chunk-id", `a chunk id has ${CHUNK_ID_BYTES} bytes, not ${given.length}`);
    const id = given ?? this.ctx.chunkId(data);
    this.stats.chunks++;
    this.stats.plainBytes += data.length;
    if (this.ctx.index.has(id)) return { id, isNew: false, storedBytes: 0 };
    const hex = chunkIdHex(id);
    if (this.open.ids.has(hex)) return { id, isNew: false, storedBytes: 0 };
    for (const p of this.sealingPacks) if (p.ids.has(hex)) return { id, isNew: false, storedBytes: 0 };

    const { stored, flags } = encodeChunk(this.ctx, this.compressor, id, data);
    if (this.open.count > 0 && this.open.size + stored.length > this.ctx.packTargetBytes) this.rotate();
    const offset = this.open.append(stored);
    this.open.addEntry(id, offset, stored.length, flags, data.length);
    this.open.ids.add(hex);
    this.stats.newChunks++;
    this.stats.newPlainBytes += data.length;
    this.stats.storedBytes += stored.length;
    // More than one pack waiting for the disk: let it catch up.
    while (this.sealingPacks.size > 1) await this.sealing;
    if (this.failure) throw this.failure;
    return { id: given ?? id, isNew: true, storedBytes: stored.length };
  }

  async flush(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.open.count > 0) this.rotate();
    await this.sealing;
    if (this.failure) throw this.failure;
  }

  /** Hands the open pack to the background (after the packs before it) and opens a new one. */
  private rotate(): void {
    const pack = this.open;
    this.open = new OpenPack(this.pool);
    this.sealingPacks.add(pack);
    this.sealing = this.sealing.then(async () => {
      try {
        if (!this.failure) await sealPack(this.ctx, pack);
      } catch (e) {
        this.failure = e;
      } finally {
        this.sealingPacks.delete(pack);
        this.pool.push(...pack.segments.splice(0));
      }
    });
  }
}

/** Writes the pack, then its index file, then makes its chunks visible in memory. */
async function sealPack(ctx: WriterContext, pack: OpenPack): Promise<void> {
  await ctx.storage.put(packKey(pack.id), pack.bytes());
  const entries = pack.sortedEntries();
  const fileId = hexOf(randomBytes(16));
  const key = indexKey(fileId);
  const run = new RunBuilder(pack.count);
  const parts: Uint8Array[] = [];
  for await (const b of encodeIndexFile({ fileId, key: ctx.dataKey, packs: [pack.id], superseded: [], count: pack.count }, [entries], run)) parts.push(b);
  await ctx.storage.put(key, parts);
  const head = await readIndexHead(ctx.storage, key, ctx.dataKey, parts.reduce((n, p) => n + p.length, 0));
  const { fan, keys } = run.done();
  ctx.index.addRun(new IndexRun(head, keys, fan));
  await ctx.index.consolidate();
}
