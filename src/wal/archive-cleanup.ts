// Removing WAL no retained backup needs: every segment file (stored, raw with its checksum
// file, or partial, of any timeline) numbered below the first segment the oldest retained backup starts in. Recovery
// from any retained backup reads WAL from its own start onwards only, on its timeline and the
// ones after it, and those segments all number at or above that. History files, the cluster's
// identity and its gaps record are kept whatever their age.
import { stat, unlink } from "node:fs/promises";
import path from "node:path";
import { fsyncDir } from "../util/durable-fs.ts";
import { listArchive, type ArchivedSegment } from "./archive-layout.ts";

export interface WalCleanup {
  /** Files removed (or, in a dry run, that would be). */
  removed: string[];
  bytes: number;
  /** Files that would go but are not yet in the offsite copy. */
  waitingForOffsite: string[];
}

/**
 * Removes the segment files numbered below `firstNeeded`; `canGo` says whether a file may go
 * (the offsite copy has it). With `dryRun` nothing is removed.
 */
export async function removeWalBefore(dir: string, segSize: number, firstNeeded: bigint, opts: { dryRun: boolean; canGo?: (s: ArchivedSegment) => boolean }): Promise<WalCleanup> {
  const out: WalCleanup = { removed: [], bytes: 0, waitingForOffsite: [] };
  const { segments, checksums } = await listArchive(dir, segSize);
  for (const s of [...segments, ...checksums]) {
    if (s.segno >= firstNeeded) continue;
    if (opts.canGo && !opts.canGo(s)) {
      out.waitingForOffsite.push(s.file);
      continue;
    }
    const file = path.join(dir, s.file);
    const size = await stat(file).then((st) => st.size, () => 0);
    if (!opts.dryRun) {
      try {
        await unlink(file);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      }
    }
    out.removed.push(s.file);
    out.bytes += size;
  }
  if (!opts.dryRun && out.removed.length > 0) await fsyncDir(dir);
  return out;
}
