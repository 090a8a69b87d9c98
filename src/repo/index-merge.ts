// Consolidation: many small index files (one per sealed pack) would make opening and every
// lookup slow, so writers merge them, size-tiered like an LSM tree. Runs are grouped by size
// class (a factor of 4 apart); when a class holds MERGE_FAN runs, those and every smaller run
// are merged into one file. Each entry is rewritten O(log n) times in all, and a repository
// holds at most a few files per class.
//
// Safe at every instant: the merged file is written (durably) before its inputs are removed,
// and it names them as superseded, so a reader that sees both skips the inputs; a reader that
// read an input before it vanished lists again (chunk-index.ts). Two processes merging the
// same inputs at once leave two merged files with the same entries: harmless, merged later.
import { randomBytes } from "node:crypto";
import { CHUNK_ID_BYTES } from "./chunk-id.ts";
import { IndexRun, RunBuilder } from "./index-run.ts";
import { ENTRY_BYTES, compareIds, encodeIndexFile, hexOf, indexKey, readIndexBlocks, readIndexHead } from "./index-file.ts";
import type { Storage } from "./storage.ts";
import { KlioError } from "../util/errors.ts";

export const MERGE_FAN = 4;
/** Bytes read at a time from each input of a merge. */
const MERGE_READ_BYTES = 256 * 1024;

function sizeClass(n: number): number {
  return Math.floor(Math.log2(Math.max(n, 1)) / 2);
}

/** The runs to merge now, or null. */
export function chooseMerge(runs: readonly IndexRun[]): IndexRun[] | null {
  const byClass = new Map<number, number>();
  for (const r of runs) byClass.set(sizeClass(r.count), (byClass.get(sizeClass(r.count)) ?? 0) + 1);
  const full = [...byClass.entries()].filter(([, n]) => n >= MERGE_FAN).map(([c]) => c);
  if (full.length === 0) return null;
  const top = Math.max(...full);
  return runs.filter((r) => sizeClass(r.count) <= top);
}

/** One entry stream per input, advanced entry by entry. */
class Cursor {
  private block: Uint8Array = new Uint8Array(0);
  private at = 0;
  constructor(
    private readonly it: AsyncIterator<Uint8Array>,
    readonly packs: readonly string[],
  ) {}

  get current(): Uint8Array | null {
    return this.at < this.block.length ? this.block : null;
  }
  get offset(): number {
    return this.at;
  }

  async fill(): Promise<boolean> {
    while (this.at >= this.block.length) {
      const r = await this.it.next();
      if (r.done) return false;
      this.block = r.value;
      this.at = 0;
    }
    return true;
  }

  advance(): void {
    this.at += ENTRY_BYTES;
  }
}

/**
 * How entries of the inputs become the output's: which packs the output names, how many
 * entries it has, and, per entry (56 bytes, its pack field still the input's pack number),
 * whether it is kept — `place` may rewrite it in place (its pack number into `packs`, its
 * offset) and returns false to leave it out. Maintenance drops and moves entries this way.
 */
export interface MergePlan {
  packs: string[];
  count: number;
  superseded: string[];
  place(entry: Uint8Array, at: number, inputPack: string): boolean;
  /** The output's file id (default: random), and where it goes (default: an index file). */
  fileId?: string;
  keyOf?: (fileId: string) => string;
}

/** The plain merge: every entry of every input, the inputs superseded. */
function keepAll(inputs: readonly IndexRun[]): MergePlan {
  const packs: string[] = [];
  const packNo = new Map<string, number>();
  for (const r of inputs) for (const p of r.head.packs) if (!packNo.has(p)) packNo.set(p, packs.push(p) - 1);
  return {
    packs,
    count: inputs.reduce((n, r) => n + r.count, 0),
    superseded: inputs.map((r) => r.head.fileId),
    place: (entry, at, inputPack) => (new DataView(entry.buffer, entry.byteOffset + at + CHUNK_ID_BYTES, 4).setUint32(0, packNo.get(inputPack)!), true),
  };
}

/** Writes the merged file of `inputs` and returns its run (its keys built on the way). */
export function mergeRuns(storage: Storage, dataKey: Uint8Array | null, inputs: readonly IndexRun[]): Promise<IndexRun> {
  return writeMerged(storage, dataKey, inputs, keepAll(inputs));
}

/** Streams the inputs in id order through `plan` into one new index file (written durably). */
export async function writeMerged(storage: Storage, dataKey: Uint8Array | null, inputs: readonly IndexRun[], plan: MergePlan): Promise<IndexRun> {
  // Small reads per input: a merge has up to a dozen inputs open at once, and a backup runs
  // merges as it goes (two 4 MB read buffers per input grew a 4 GB backup's heap by 40 MB).
  const cursors = inputs.map((r) => new Cursor(readIndexBlocks(storage, r.head, dataKey, MERGE_READ_BYTES)[Symbol.asyncIterator](), r.head.packs));
  const keys = new RunBuilder(plan.count);

  async function* entries(): AsyncGenerator<Uint8Array> {
    const live: Cursor[] = [];
    for (const c of cursors) if (await c.fill()) live.push(c);
    const batch = new Uint8Array(1024 * ENTRY_BYTES);
    let fill = 0;
    while (live.length > 0) {
      let min = 0;
      for (let i = 1; i < live.length; i++) if (compareIds(live[i]!.current!, live[i]!.offset, live[min]!.current!, live[min]!.offset) < 0) min = i;
      const c = live[min]!;
      const src = c.current!;
      const at = c.offset;
      batch.set(src.subarray(at, at + ENTRY_BYTES), fill);
      const inputPack = c.packs[new DataView(batch.buffer, fill + CHUNK_ID_BYTES, 4).getUint32(0)];
      if (inputPack === undefined) throw new KlioError("corrupt-index", `an index file being merged names a pack number it does not have`);
      if (plan.place(batch, fill, inputPack)) fill += ENTRY_BYTES;
      c.advance();
      if (!(await c.fill())) live.splice(min, 1);
      if (fill === batch.length) {
        yield batch;
        fill = 0;
      }
    }
    if (fill > 0) yield batch.subarray(0, fill);
  }

  const fileId = plan.fileId ?? hexOf(randomBytes(16));
  const key = (plan.keyOf ?? indexKey)(fileId);
  let size = 0;
  async function* counted(): AsyncGenerator<Uint8Array> {
    for await (const b of encodeIndexFile({ fileId, key: dataKey, packs: plan.packs, superseded: plan.superseded, count: plan.count }, entries(), keys)) {
      size += b.length;
      yield b;
    }
  }
  await storage.put(key, counted());
  const { fan, keys: words } = keys.done();
  return new IndexRun(await readIndexHead(storage, key, dataKey, size), words, fan);
}
