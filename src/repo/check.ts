// The repository's self-check. Structure: every index file parses and checks (checksum,
// order, decryption, key section matching the entries), every entry lies inside an existing pack, every pack starts with a
// pack header and is named by some index. With readData, every chunk is read back, decrypted,
// decompressed and hashed: the entries of an index file are taken READ_WINDOW at a time and
// grouped by frame, so that a frame is decoded once for all its chunks in the window.
// Problems are values; damaged data never makes this throw.
import { isKlioError } from "../util/errors.ts";
import { chunkIdHex } from "./chunk-id.ts";
import { chunkOfFrame, decodeFrame, type BlobContext } from "./blob.ts";
import { ENTRY_BYTES, INDEX_PREFIX, MAX_PLAIN, decodeEntry, type IndexEntry, indexIdOfKey, packIdOfKey, packKey, packsOfDamagedIndex, readIndexHead, verifyIndexFile, type IndexHead } from "./index-file.ts";
import { PACK_HEADER, PACK_MAGIC, PACK_VERSION } from "./pack-writer.ts";
import type { Storage } from "./storage.ts";

export interface RepoProblem {
  kind: string;
  pack?: string;
  chunkId?: string;
  /** A problem of a whole pack (missing, truncated): the chunks the index places in it. */
  chunkIds?: string[];
  message: string;
}

export interface CheckOptions {
  readData: boolean;
  /** Packs maintenance has left out of the index and frees once no older writer needs them: not leftovers. */
  awaitingFree?: ReadonlySet<string>;
  onProgress?: (done: number, total: number) => void;
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** Entries whose frames are read together (about 4 MB of entries). */
const READ_WINDOW = 65536;

/** Decodes each frame of `window` once and checks every chunk of it the window holds. */
async function readWindow(storage: Storage, ctx: BlobContext, window: { key: string; e: IndexEntry }[], problems: RepoProblem[]): Promise<void> {
  const frames = new Map<string, { key: string; e: IndexEntry }[]>();
  for (const w of window) {
    const f = `${w.key}:${w.e.offset}`;
    const list = frames.get(f);
    if (list) list.push(w);
    else frames.set(f, [w]);
  }
  for (const list of frames.values()) {
    const { key, e } = list[0]!;
    let frame: Uint8Array | null = null;
    try {
      frame = decodeFrame(ctx.dataKey, await storage.getRange(key, e.offset, e.length), e, key);
    } catch (err) {
      if (!isKlioError(err) && !(err instanceof Error)) throw err;
      for (const w of list) problems.push({ kind: "corrupt-chunk", pack: key, chunkId: chunkIdHex(w.e.id), message: message(err) });
      continue;
    }
    for (const w of list) {
      try {
        chunkOfFrame(ctx.chunkId, w.e.id, frame, w.e, key);
      } catch (err) {
        problems.push({ kind: "corrupt-chunk", pack: key, chunkId: chunkIdHex(w.e.id), message: message(err) });
      }
    }
  }
  window.length = 0;
}

export async function checkRepository(storage: Storage, ctx: BlobContext, opts: CheckOptions): Promise<RepoProblem[]> {
  const problems: RepoProblem[] = [];
  const indexFiles = await storage.list(INDEX_PREFIX);
  const packFiles = await storage.list("packs/");
  const packSize = new Map<string, number>();
  for (const f of packFiles) {
    const id = packIdOfKey(f.key);
    if (id === null) problems.push({ kind: "stray-file", message: `${f.key} is not a pack file name` });
    else packSize.set(id, f.size);
  }
  for (const f of indexFiles) if (indexIdOfKey(f.key) === null) problems.push({ kind: "stray-file", message: `${f.key} is not an index file name` });

  const heads: IndexHead[] = [];
  /** Index files that cannot be read, and the packs their heads still name (null: not even that). */
  const damaged: { key: string; packs: string[] | null }[] = [];
  for (const f of indexFiles) {
    if (indexIdOfKey(f.key) === null) continue;
    try {
      heads.push(await readIndexHead(storage, f.key, ctx.dataKey, f.size));
    } catch (e) {
      problems.push({ kind: "bad-index", message: message(e) });
      damaged.push({ key: f.key, packs: await packsOfDamagedIndex(storage, f.key, ctx.dataKey, f.size) });
    }
  }
  const superseded = new Set(heads.flatMap((h) => h.superseded));
  const named = new Set(heads.flatMap((h) => h.packs));
  for (const p of opts.awaitingFree ?? []) named.add(p);

  for (const [id, size] of packSize) {
    const key = packKey(id);
    if (!named.has(id)) problems.push(unindexedPack(id, damaged));
    try {
      const head = size >= PACK_HEADER ? await storage.getRange(key, 0, PACK_HEADER) : null;
      const ok = head !== null && PACK_MAGIC.every((b, i) => head[i] === b) && new DataView(head.buffer, head.byteOffset).getUint32(8) === PACK_VERSION;
      if (!ok) problems.push({ kind: "bad-pack", pack: key, message: `${key} does not start with a version ${PACK_VERSION} pack header` });
    } catch (e) {
      problems.push({ kind: "bad-pack", pack: key, message: `${key}: ${message(e)}` });
    }
  }

  // Consolidation inputs a crash left behind are checked for structure; their chunks are
  // read through the file that superseded them.
  const total = heads.filter((h) => !superseded.has(h.fileId)).reduce((n, h) => n + h.entries, 0);
  let done = 0;
  // A missing or truncated pack is one problem, however many chunks the index places in it.
  const packProblems = new Map<string, RepoProblem>();
  const packProblem = (kind: string, key: string, hex: string, message: () => string) => {
    const at = `${kind} ${key}`;
    let p = packProblems.get(at);
    if (!p) packProblems.set(at, (p = { kind, pack: key, chunkIds: [], message: message() }));
    p.chunkIds!.push(hex);
  };
  for (const h of heads) {
    const readThis = opts.readData && !superseded.has(h.fileId);
    const window: { key: string; e: IndexEntry }[] = [];
    try {
      await verifyIndexFile(storage, h, ctx.dataKey, async (block) => {
        for (let at = 0; at < block.length; at += ENTRY_BYTES) {
          const e = decodeEntry(block, at);
          const packId = h.packs[e.pack]!;
          const key = packKey(packId);
          const hex = chunkIdHex(e.id);
          const size = packSize.get(packId);
          if (size === undefined) {
            packProblem("missing-pack", key, hex, () => `${h.key} names pack ${key}, which does not exist`);
          } else if (e.offset < PACK_HEADER || e.offset + e.length > size || e.plainLength > MAX_PLAIN) {
            packProblem("entry-outside-pack", key, hex, () => `${h.key} places chunks outside ${key} (${size} bytes: truncated, or the index is wrong), the first at ${e.offset}+${e.length}`);
          } else if (e.inFrame + e.plainLength > e.frameLength || e.frameLength > MAX_PLAIN) {
            problems.push({ kind: "bad-entry", pack: key, chunkId: hex, message: `${h.key} places chunk ${hex} at ${e.inFrame}+${e.plainLength} of a ${e.frameLength}-byte frame` });
          } else if (readThis) {
            window.push({ key, e: { ...e, id: e.id.slice() } });
            if (window.length >= READ_WINDOW) await readWindow(storage, ctx, window, problems);
          }
          if (!superseded.has(h.fileId)) {
            done++;
            if (opts.onProgress && done % 1024 === 0) opts.onProgress(done, total);
          }
        }
      });
    } catch (e) {
      problems.push({ kind: "bad-index", message: message(e) });
    }
    if (window.length) await readWindow(storage, ctx, window, problems);
  }
  for (const p of packProblems.values()) {
    const n = p.chunkIds!.length;
    problems.push({ ...p, message: `${p.message}: ${n} chunk${n === 1 ? "" : "s"} ${p.kind === "missing-pack" ? "lost" : "unreadable"}` });
  }
  opts.onProgress?.(total, total);
  return problems;
}

/**
 * A pack no readable index names. Without damaged index files it is a writer's leftover (its
 * chunks are stored again when needed; maintenance frees it). When the head of a damaged index
 * file still names it, its chunks are in the repository but cannot be found: a problem, whose
 * cause is that index file. When a damaged file names nothing readable, either may be true.
 */
function unindexedPack(id: string, damaged: { key: string; packs: string[] | null }[]): RepoProblem {
  const key = packKey(id);
  const namedBy = damaged.find((d) => d.packs?.includes(id));
  if (namedBy) return { kind: "pack-of-damaged-index", pack: key, message: `${key} is named only by the damaged index file ${namedBy.key}: its chunks cannot be found until that index is repaired or rebuilt` };
  const unknown = damaged.filter((d) => d.packs === null).map((d) => d.key);
  if (unknown.length) return { kind: "unindexed-pack", pack: key, message: `no readable index names pack ${key}: it is the leftover of an interrupted writer, or named by the damaged index file ${unknown.join(", ")}` };
  return { kind: "unindexed-pack", pack: key, message: `no index names pack ${key} (left by an interrupted writer; its chunks are stored again when needed)` };
}
