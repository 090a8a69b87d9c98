// Maintenance's swap (maintenance.ts, step 3): the live chunks of mostly-garbage packs written
// into new packs, the entries left out kept aside, the plan recorded, and the one new index
// file in place of every index file there was.
import { randomBytes } from "node:crypto";
import { concatBytes } from "../util/bytes.ts";
import { CHUNK_ID_BYTES } from "./chunk-id.ts";
import { ENTRY_BYTES, decodeEntry, encodeEntry, hexOf, indexKey, packKey, readIndexBlocks } from "./index-file.ts";
import { writeMerged, type MergePlan } from "./index-merge.ts";
import { PACK_HEADER, PACK_MAGIC, PACK_VERSION } from "./pack-writer.ts";
import { chunkOfFrame, decodeFrame, encodeFrame } from "./blob.ts";
import { Compressor } from "./codec.ts";
import { droppedKey, writeMaintenanceState, type MaintenancePlan, type MaintenanceState } from "./maintenance-state.ts";
import type { FrameInfo, Survey } from "./maintenance-survey.ts";
import type { MaintenanceContext, MaintenanceOptions, MaintenanceReport } from "./maintenance.ts";
import type { ObjectWriter } from "./storage.ts";

/** Where a chunk of a rewritten pack is now. */
interface Moved {
  pack: string;
  offset: number;
  length: number;
  flags: number;
  frameLength: number;
  inFrame: number;
}

/**
 * Writes the live chunks of the packs to rewrite into new packs: a frame whose chunks are all
 * live as it is stored; one with dead chunks decoded, the live ones checked against their ids
 * and stored as a new frame. Returns where each live chunk went (by pack:offset:inFrame).
 */
async function repack(ctx: MaintenanceContext, s: Survey, report: MaintenanceReport): Promise<{ moved: Map<string, Moved>; newPacks: string[] }> {
  const moved = new Map<string, Moved>();
  const newPacks: string[] = [];
  const compressor = new Compressor(ctx.compression);
  let out: { id: string; file: ObjectWriter; bytes: number } | null = null;
  const append = async (stored: Uint8Array): Promise<{ pack: string; offset: number }> => {
    if (out !== null && out.bytes + stored.length > ctx.packTargetBytes) {
      await out.file.commit();
      out = null;
    }
    if (out === null) {
      const id = hexOf(randomBytes(16));
      const file = await ctx.storage.create(packKey(id));
      const head = new Uint8Array(PACK_HEADER);
      head.set(PACK_MAGIC, 0);
      new DataView(head.buffer).setUint32(8, PACK_VERSION);
      await file.write(head);
      out = { id, file, bytes: PACK_HEADER };
      newPacks.push(id);
    }
    const at = { pack: out.id, offset: out.bytes };
    await out.file.write(stored);
    out.bytes += stored.length;
    report.bytes.written += stored.length;
    return at;
  };
  for (const packId of s.rewrite) {
    const key = packKey(packId);
    const list = [...(s.frames.get(packId) ?? new Map<number, FrameInfo>()).entries()].sort((a, b) => a[0] - b[0]);
    for (const [offset, f] of list) {
      const chunks = [...f.chunks.entries()].sort((a, b) => a[0] - b[0]);
      const live = chunks.filter(([, c]) => c.live);
      if (live.length === 0) continue;
      const stored = await ctx.storage.getRange(key, offset, f.length);
      if (live.length === chunks.length) {
        const to = await append(stored);
        for (const [inFrame] of live) moved.set(`${packId}:${offset}:${inFrame}`, { ...to, length: f.length, flags: f.flags, frameLength: f.frameLength, inFrame });
        continue;
      }
      const plain = decodeFrame(ctx.dataKey, stored, f, key);
      const parts = live.map(([inFrame, c]) => chunkOfFrame(ctx.chunkId, c.id, plain, { inFrame, plainLength: c.plainLength }, key));
      const joined = concatBytes(parts);
      const encoded = encodeFrame(ctx.dataKey, compressor, joined);
      const to = await append(encoded.stored);
      let inNew = 0;
      live.forEach(([inFrame], k) => {
        moved.set(`${packId}:${offset}:${inFrame}`, { ...to, length: encoded.stored.length, flags: encoded.flags, frameLength: joined.length, inFrame: inNew });
        inNew += parts[k]!.length;
      });
    }
  }
  if (out !== null) await (out as { file: ObjectWriter }).file.commit();
  report.packs.written = newPacks.length;
  return { moved, newPacks };
}

function setPack(entry: Uint8Array, at: number, pack: number): void {
  new DataView(entry.buffer, entry.byteOffset + at + CHUNK_ID_BYTES, 4).setUint32(0, pack);
}

function movedKey(packId: string, entry: Uint8Array, at: number): string {
  const e = decodeEntry(entry, at);
  return `${packId}:${e.offset}:${e.inFrame}`;
}

/** Steps 3 and 4: new packs, the entries left out kept aside, the plan recorded, the new index in place. */
export async function swap(ctx: MaintenanceContext, s: Survey, state: MaintenanceState, opts: MaintenanceOptions, report: MaintenanceReport): Promise<void> {
  const { moved, newPacks } = await repack(ctx, s, report);
  const gone = new Set([...s.remove, ...s.rewrite]);
  const total = s.runs.reduce((n, r) => n + r.count, 0);
  // Every entry of a pack that goes, but those of chunks that moved.
  let droppedCount = 0;
  for (const id of gone) droppedCount += s.tally.get(id)!.entries;
  for (let i = 0; i < s.runs.length; i++) {
    const r = s.runs[i]!;
    for await (const block of readIndexBlocks(ctx.storage, r.head, ctx.dataKey))
      for (let at = 0; at < block.length; at += ENTRY_BYTES) {
        const packId = r.head.packs[decodeEntry(block, at).pack]!;
        if (gone.has(packId) && moved.has(movedKey(packId, block, at))) droppedCount--;
      }
  }
  report.chunks.dropped = droppedCount;

  const dropPacks = [...gone];
  const dropNo = new Map(dropPacks.map((p, i) => [p, i]));
  const keepPacks = [...new Set(s.runs.flatMap((r) => r.head.packs))].filter((p) => !gone.has(p)).concat(newPacks);
  const keepNo = new Map(keepPacks.map((p, i) => [p, i]));
  const isMoved = (packId: string, entry: Uint8Array, at: number) => moved.get(movedKey(packId, entry, at));

  let dropped: string | null = null;
  if (droppedCount > 0) {
    dropped = hexOf(randomBytes(16));
    const plan: MergePlan = {
      packs: dropPacks, count: droppedCount, superseded: [], fileId: dropped, keyOf: droppedKey,
      place: (entry, at, packId) => {
        if (!gone.has(packId) || isMoved(packId, entry, at)) return false;
        setPack(entry, at, dropNo.get(packId)!);
        return true;
      },
    };
    await writeMerged(ctx.storage, ctx.dataKey, s.runs, plan);
  }
  const merged = hexOf(randomBytes(16));
  const mp: MaintenancePlan = {
    merged, replaced: s.heads.map((h) => h.fileId), dropped, free: dropPacks,
    freeBytes: dropPacks.reduce((n, id) => n + s.packs.get(id)!.size, 0), known: s.known,
  };
  state.plan = mp;
  await writeMaintenanceState(ctx.root, state);
  opts.log.info("maintenance.swapping", { merged, dropped_entries: droppedCount, free_packs: dropPacks.length });
  await writeMerged(ctx.storage, ctx.dataKey, s.runs, {
    packs: keepPacks, count: total - droppedCount, superseded: mp.replaced, fileId: merged,
    place: (entry, at, packId) => {
      if (!gone.has(packId)) {
        setPack(entry, at, keepNo.get(packId)!);
        return true;
      }
      const to = isMoved(packId, entry, at);
      if (!to) return false;
      const e = decodeEntry(entry, at);
      encodeEntry(entry, at, { id: e.id, pack: keepNo.get(to.pack)!, offset: to.offset, length: to.length, flags: to.flags, plainLength: e.plainLength, frameLength: to.frameLength, inFrame: to.inFrame });
      return true;
    },
  });
  state.phase = "freeing";
  await writeMaintenanceState(ctx.root, state);
  opts.log.info("maintenance.swapped", { merged });
  for (const id of mp.replaced) await ctx.storage.remove(indexKey(id));
  if (dropPacks.length === 0) state.plan = null;
}
