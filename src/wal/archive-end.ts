// Where a cluster's WAL archive ends: the newest WAL position it holds and when that was
// written. A restore refuses a recovery target past it (PostgreSQL would replay everything and
// then stop with "recovery ended before configured recovery target was reached").
//
// Both are upper bounds, so that no reachable target is ever refused: the LSN is the
// receiver's flushed position (what `wal status` calls flushed), or the end of the newest
// segment file when the receiver's state says less (state.json is informative only: the
// segment files are the truth); the time is the newest of the receiver's last report and the
// newest segment file's modification time — for an S3 copy, its upload time.
import { stat } from "node:fs/promises";
import path from "node:path";
import { formatLsn, parseLsn, type Lsn, type SegmentSize } from "../pg/lsn.ts";
import { isKlioError } from "../util/errors.ts";
import { apiFailure, apiFetch, isApiLocation } from "../util/api-client.ts";
import type { Storage } from "../repo/storage.ts";
import { archiveListingOf, listArchive, validateClusterName, type ArchivedSegment } from "./archive-layout.ts";
import { readState, type ReceiverState } from "./archive-meta.ts";
import { openClusterArchive, type ClusterArchive } from "./archive-reader.ts";

export interface ArchiveEnd {
  lsn: Lsn;
  /** When the newest WAL was written (null when nothing says). */
  time: Date | null;
  /** What the end was read from, for messages. */
  basis: string;
}

function endOf(newest: ArchivedSegment | undefined, modified: number | undefined, segSize: SegmentSize, state: ReceiverState | undefined, where: string): ArchiveEnd | null {
  if (!newest && !state) return null;
  let lsn = 0n;
  let basis = "";
  if (newest) {
    const start = newest.segno * BigInt(segSize);
    const end = start + BigInt(segSize);
    // A partial segment is written in place: how far it is filled only the receiver says.
    const filled = newest.kind === "partial" && state && state.flushedLsn >= start && state.flushedLsn <= end;
    lsn = filled ? state.flushedLsn : end;
    basis = `the newest WAL file ${newest.file} in ${where}`;
  }
  if (state && state.flushedLsn >= lsn) {
    lsn = state.flushedLsn;
    basis = `the receiver's flushed position in ${where}`;
  }
  const times = [modified, state ? Date.parse(state.updatedAt) : undefined].filter((t): t is number => t !== undefined && Number.isFinite(t));
  return { lsn, time: times.length ? new Date(Math.max(...times)) : null, basis };
}

/** The end of an archive on this machine's disk. */
export async function localArchiveEnd(archive: ClusterArchive): Promise<ArchiveEnd | null> {
  const newest = (await listArchive(archive.dir, archive.identity.walSegmentSize)).segments.at(-1);
  const modified = newest ? (await stat(path.join(archive.dir, newest.file)).catch(() => undefined))?.mtimeMs : undefined;
  return endOf(newest, modified, archive.identity.walSegmentSize, await readState(archive.dir), archive.dir);
}

/** The end of an archive kept as objects (an S3 copy: wal/CLUSTER/…; no receiver state there). */
export async function storageArchiveEnd(storage: Storage, cluster: string, segSize: SegmentSize): Promise<ArchiveEnd | null> {
  const prefix = `wal/${validateClusterName(cluster)}/`;
  const entries = new Map((await storage.list(prefix)).map((e) => [e.key.slice(prefix.length), e]));
  const newest = archiveListingOf(entries.keys(), segSize).segments.at(-1);
  return endOf(newest, newest ? entries.get(newest.file)?.modified : undefined, segSize, undefined, `${storage.description} ${prefix}`);
}

/** The end as the API carries it (GET /v1/clusters/{name}/wal: archive.end). */
export function archiveEndJson(end: ArchiveEnd | null): { lsn: string; time: string | null; basis: string } | null {
  return end && { lsn: formatLsn(end.lsn), time: end.time?.toISOString() ?? null, basis: end.basis };
}

/**
 * The end of the archive of `cluster` wherever the repository is: a directory, the appliance's
 * API, or S3 (`s3` opens it). Null when the archive holds nothing to tell, or — from an older
 * appliance — does not say.
 */
export async function archiveEndAt(repo: string, cluster: string, segSize: SegmentSize, access: { token?: string; s3?: () => Promise<Storage> }): Promise<ArchiveEnd | null> {
  if (isApiLocation(repo)) {
    const base = repo.replace(/\/+$/, "");
    const r = await apiFetch(base, `/v1/clusters/${encodeURIComponent(cluster)}/wal`, access.token);
    if (r.status === 404) {
      await r.body?.cancel();
      return null;
    }
    if (r.status !== 200) throw await apiFailure(r, `reading the WAL archive of ${cluster} at ${base}`);
    const end = ((await r.json()) as { archive?: { end?: { lsn: string; time: string | null; basis: string } | null } | null }).archive?.end;
    if (!end) return null;
    return { lsn: parseLsn(end.lsn), time: end.time === null ? null : new Date(end.time), basis: `${end.basis} (at ${base})` };
  }
  if (access.s3) {
    const storage = await access.s3();
    try {
      return await storageArchiveEnd(storage, cluster, segSize);
    } finally {
      await storage.close();
    }
  }
  try {
    return await localArchiveEnd(await openClusterArchive(repo, cluster));
  } catch (e) {
    if (isKlioError(e) && e.code === "no-archive") return null;
    throw e;
  }
}
