// Applying a retention policy to one cluster: deleting the backups no rule keeps, then the WAL
// no kept backup needs. Deleting a backup removes its snapshot only; its data is freed later
// by maintenance (DESIGN invariant 4). When the repository is copied offsite, nothing that has
// not reached the copy is deleted: a backup waits until its snapshot is there, a WAL segment
// until its file is, so the copy never lacks what the local repository gave up.
import { KlioError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { parseLsn, segmentNumber } from "../pg/lsn.ts";
import type { Repository } from "../repo/repository.ts";
import { openClusterArchive } from "../wal/archive-reader.ts";
import { removeWalBefore } from "../wal/archive-cleanup.ts";
import { STORED_SUFFIX } from "../wal/archive-layout.ts";
import { evaluateRetention, hasRules, type RetentionDecision, type RetentionPolicy } from "./retention.ts";
import { readPins } from "./retention-store.ts";
import { listSnapshots, snapshotKey } from "./snapshot.ts";

/** What the offsite copy holds (from one listing of it). */
export interface OffsiteHoldings {
  description: string;
  has(key: string): boolean;
}

export interface ApplyOptions {
  dryRun: boolean;
  now: Date;
  /** The offsite copy, when the repository has one. */
  offsite: OffsiteHoldings | null;
  log: Logger;
}

export interface RetentionResult {
  cluster: string;
  dryRun: boolean;
  decisions: (RetentionDecision & { startTime: string; endTime: string })[];
  /** Backups deleted (or that would be). */
  deleted: string[];
  /** Backups no rule keeps that wait for the offsite copy. */
  waitingForOffsite: string[];
  /** Backups whose snapshot could not be read: kept, and WAL is not touched while they are there. */
  unreadable: string[];
  wal: { removed: number; bytes: number; waitingForOffsite: number; firstKept: string | null };
}

export async function applyRetention(repo: Repository, repoDir: string, cluster: string, policy: RetentionPolicy, o: ApplyOptions): Promise<RetentionResult> {
  const { snapshots, unreadable } = await listSnapshots(repo, cluster);
  const pinned = await readPins(repoDir, cluster);
  const decisions = evaluateRetention(snapshots, policy, pinned, o.now);
  const byId = new Map(snapshots.map((s) => [s.id, s]));
  const result: RetentionResult = {
    cluster, dryRun: o.dryRun,
    decisions: decisions.map((d) => ({ ...d, startTime: byId.get(d.id)!.startTime, endTime: byId.get(d.id)!.endTime })),
    deleted: [], waitingForOffsite: [], unreadable: unreadable.map((u) => u.id),
    wal: { removed: 0, bytes: 0, waitingForOffsite: 0, firstKept: null },
  };
  for (const d of decisions) {
    if (d.keep) continue;
    const key = snapshotKey(cluster, d.id);
    if (o.offsite && !o.offsite.has(key)) {
      result.waitingForOffsite.push(d.id);
      continue;
    }
    if (!o.dryRun) await repo.deleteObject(key);
    result.deleted.push(d.id);
    o.log.info("retention.deleted", { cluster, backup: d.id, dry_run: o.dryRun });
  }

  // WAL: only below the oldest backup that stays, and only with every backup accounted for.
  const staying = snapshots.filter((s) => !result.deleted.includes(s.id));
  if (!hasRules(policy) || staying.length === 0 || unreadable.length > 0) return result;
  let archive;
  try {
    archive = await openClusterArchive(repoDir, cluster);
  } catch (e) {
    if ((e as KlioError).code === "no-archive") return result;
    throw e;
  }
  const segSize = archive.identity.walSegmentSize;
  const first = staying.reduce((min, s) => {
    const n = segmentNumber(parseLsn(s.startLsn), segSize);
    return n < min ? n : min;
  }, segmentNumber(parseLsn(staying[0]!.startLsn), segSize));
  const offsite = o.offsite;
  const wal = await removeWalBefore(archive.dir, segSize, first, {
    dryRun: o.dryRun,
    canGo: offsite ? (s) => offsite.has(`wal/${cluster}/${s.name}${STORED_SUFFIX}`) || offsite.has(`wal/${cluster}/${s.file}`) : undefined,
  });
  result.wal = { removed: wal.removed.length, bytes: wal.bytes, waitingForOffsite: wal.waitingForOffsite.length, firstKept: staying.find((s) => segmentNumber(parseLsn(s.startLsn), segSize) === first)!.startLsn };
  if (wal.removed.length > 0) o.log.info("retention.wal_removed", { cluster, files: wal.removed.length, bytes: wal.bytes, first: wal.removed[0], last: wal.removed.at(-1), dry_run: o.dryRun });
  return result;
}
