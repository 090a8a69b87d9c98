// The snapshot manifest: what one completed base backup is. One small JSON object per
// backup, stored through the repository (encrypted when it is) under
// snapshots/<cluster>/<id>; written last, after every chunk it names is durable and the WAL
// it needs is archived, so a snapshot that exists is a restorable backup. The file list
// (every file and its chunks) and PostgreSQL's backup_manifest are stored as chunks and
// named here by id. Format documented in docs/FORMAT.md ("Snapshots").
import { KlioError } from "../util/errors.ts";
import { parseChunkId, type ChunkId } from "../repo/chunk-id.ts";
import type { Repository } from "../repo/repository.ts";
import type { RepoSession } from "../repo/sessions.ts";
import { readFileList } from "../repo/file-list.ts";
import { validateClusterName } from "../wal/archive-layout.ts";
import { concatBytes } from "../util/bytes.ts";

export const SNAPSHOT_FORMAT = "klio-snapshot";
/** Version 2 adds kind, parent, incrementalByteOrder and stats.sentBytes; version 1 is still read (a full backup). */
export const SNAPSHOT_VERSION = 2;
const READABLE_VERSIONS: readonly number[] = [1, 2];

export interface SnapshotTablespace {
  oid: number;
  /** spcname, when the backup could read it (needed by restore --tablespaces name:path). */
  name: string | null;
  /** Where the tablespace lived on the source server. */
  location: string;
}

export interface Snapshot {
  format: typeof SNAPSHOT_FORMAT;
  version: 1 | typeof SNAPSHOT_VERSION;
  id: string;
  cluster: string;
  /** --name given to backup run, if any. */
  name: string | null;
  startTime: string;
  endTime: string;
  startLsn: string;
  endLsn: string;
  timeline: number;
  endTimeline: number;
  systemIdentifier: string;
  /** server_version_num of the source, e.g. 150018. */
  pgVersion: number;
  walSegmentSize: number;
  /** Taken on a hot standby. */
  fromStandby: boolean;
  /**
   * "incremental": PostgreSQL sent only the blocks changed since `parent`, and the file list
   * is a synthetic full (it restores alone). Absent in snapshots from before incremental
   * backups: full.
   */
  kind?: "full" | "incremental";
  /** The backup an incremental one was taken against (it may since have been deleted). */
  parent?: string | null;
  /** The byte order of the server's INCREMENTAL. headers, which `backup verify` rebuilds. */
  incrementalByteOrder?: "little" | "big";
  backupLabel: string;
  tablespaceMap: string | null;
  tablespaces: SnapshotTablespace[];
  /** The file list (src/repo/file-list.ts): its pieces in order. */
  fileList: { pieces: string[]; entries: number };
  /** PostgreSQL's backup_manifest, as chunks in order. */
  backupManifest: { chunks: string[]; bytes: number };
  stats: {
    files: number;
    /** Bytes of all files. */
    bytes: number;
    /** Bytes of the files PostgreSQL sent (an incremental backup's changed blocks); absent before incremental backups: `bytes`. */
    sentBytes?: number;
    /** Bytes that were all-zero chunks, not stored. */
    zeroBytes: number;
    chunks: number;
    newChunks: number;
    /** Plain bytes of the chunks this backup stored first. */
    newBytes: number;
    /** What those took in the repository (compressed, encrypted). */
    storedBytes: number;
    durationMs: number;
  };
}

/** What a listing shows of a backup (backup list --json, the API). */
export function snapshotSummary(s: Snapshot) {
  return {
    id: s.id, cluster: s.cluster, name: s.name, startTime: s.startTime, endTime: s.endTime, startLsn: s.startLsn, endLsn: s.endLsn,
    timeline: s.timeline, pgVersion: s.pgVersion, fromStandby: s.fromStandby, kind: s.kind ?? "full", parent: s.parent ?? null,
    files: s.stats.files, bytes: s.stats.bytes, sentBytes: s.stats.sentBytes ?? s.stats.bytes, newBytes: s.stats.newBytes, storedBytes: s.stats.storedBytes,
  };
}

const ID_PATTERN = /^\d{8}T\d{6}Z(?:-\d+)?$/;

export function snapshotKey(cluster: string, id: string): string {
  return `snapshots/${validateClusterName(cluster)}/${validateSnapshotId(id)}`;
}

export function isSnapshotId(id: string): boolean {
  return ID_PATTERN.test(id);
}

export function validateSnapshotId(id: string): string {
  if (!isSnapshotId(id)) throw new KlioError("bad-backup-id", `"${id}" is not a backup id (like 20261124T071500Z)`);
  return id;
}

const ID_TIME = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/;

function idOfTime(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

/** The UTC second an id names (without the -2, -3… of older klio), in ms; null when it is not an id. */
function timeOfId(id: string): number | null {
  const m = ID_TIME.exec(id);
  return m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])) : null;
}

/**
 * A new id: the UTC start time, 20261124T071500Z, or one second after the latest id in `seen`
 * when that is not earlier (a second backup within one second, a clock set back), so that ids
 * never repeat and sort, as text, in the order the backups were taken. `seen` must hold every
 * id the cluster has had: backup-lock.ts issues ids under the cluster's backup lock.
 */
export function newSnapshotId(now: Date, seen: Iterable<string>): string {
  let t = Math.floor(now.getTime() / 1000) * 1000;
  for (const id of seen) {
    const at = timeOfId(id);
    if (at !== null && at >= t) t = at + 1000;
  }
  return idOfTime(t);
}

/** The ids of a cluster's backups, from the listing alone (unreadable snapshots included). */
export async function listSnapshotIds(repo: Repository, cluster: string): Promise<string[]> {
  const prefix = `snapshots/${validateClusterName(cluster)}/`;
  return (await repo.listObjects(prefix)).map((k) => k.slice(prefix.length)).filter(isSnapshotId).sort();
}

/** Records the backup: written through the writer session that stored its chunks, so maintenance keeps them. */
export async function saveSnapshot(repo: Repository, s: Snapshot, session: RepoSession): Promise<{ broughtBack: number }> {
  const bytes = new TextEncoder().encode(JSON.stringify(s, null, 1) + "\n");
  return repo.commitObject(session, snapshotKey(s.cluster, s.id), bytes, (visit, afterDirect) => snapshotChunks(repo, s, visit, afterDirect));
}

export async function loadSnapshot(repo: Repository, cluster: string, id: string): Promise<Snapshot> {
  const key = snapshotKey(cluster, id);
  let bytes: Uint8Array;
  try {
    bytes = await repo.getObject(key);
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT" || (e as { code?: string }).code === "missing-object")
      throw new KlioError("no-backup", `cluster ${cluster} has no backup ${id}`);
    throw e;
  }
  return parseSnapshot(bytes, key);
}

export function parseSnapshot(bytes: Uint8Array, where: string): Snapshot {
  let s: Partial<Snapshot>;
  try {
    s = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new KlioError("bad-snapshot", `${where} is not valid JSON`);
  }
  if (s.format !== SNAPSHOT_FORMAT) throw new KlioError("bad-snapshot", `${where} is not a klio snapshot`);
  if (!READABLE_VERSIONS.includes(s.version as number)) throw new KlioError("bad-snapshot", `${where} has snapshot format version ${s.version}; this klio reads versions ${READABLE_VERSIONS.join(" and ")}`);
  if (s.kind !== undefined && s.kind !== "full" && s.kind !== "incremental") throw new KlioError("bad-snapshot", `${where} has kind ${JSON.stringify(s.kind)}, neither full nor incremental`);
  if (s.kind === "incremental" && (typeof s.parent !== "string" || (s.incrementalByteOrder !== "little" && s.incrementalByteOrder !== "big")))
    throw new KlioError("bad-snapshot", `${where} is an incremental backup without its parent or byte order`);
  const ok = typeof s.id === "string" && isSnapshotId(s.id) && typeof s.cluster === "string" &&
    typeof s.startLsn === "string" && typeof s.endLsn === "string" && typeof s.endTime === "string" &&
    Number.isInteger(s.timeline) && Array.isArray(s.fileList?.pieces) && Array.isArray(s.backupManifest?.chunks) &&
    Array.isArray(s.tablespaces) && typeof s.backupLabel === "string";
  if (!ok) throw new KlioError("bad-snapshot", `${where} lacks fields a snapshot must have`);
  return s as Snapshot;
}

/** The backups of a cluster, oldest first (ids sort by time). Unreadable ones are reported, not hidden. */
export async function listSnapshots(repo: Repository, cluster: string): Promise<{ snapshots: Snapshot[]; unreadable: { id: string; error: string }[] }> {
  const snapshots: Snapshot[] = [];
  const unreadable: { id: string; error: string }[] = [];
  for (const id of await listSnapshotIds(repo, cluster)) {
    const key = snapshotKey(cluster, id);
    try {
      snapshots.push(parseSnapshot(await repo.getObject(key), key));
    } catch (e) {
      unreadable.push({ id, error: e instanceof Error ? e.message : String(e) });
    }
  }
  return { snapshots, unreadable };
}

/** Clusters that have snapshots. */
export async function listSnapshotClusters(repo: Repository): Promise<string[]> {
  const keys = await repo.listObjects("snapshots/");
  return [...new Set(keys.map((k) => k.split("/")[1]!).filter(Boolean))].sort();
}

export function chunkIds(hex: string[]): ChunkId[] {
  return hex.map(parseChunkId);
}

/** Reads chunks in order, one at a time. */
/** PostgreSQL's backup_manifest of the backup, as the server sent it. */
export async function readBackupManifest(repo: Repository, s: Snapshot): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of readChunks(repo, s.backupManifest.chunks)) parts.push(p);
  return concatBytes(parts);
}

export async function* readChunks(repo: Repository, ids: string[]): AsyncGenerator<Uint8Array> {
  for (const id of chunkIds(ids)) yield await repo.readChunk(id);
}

/** Visits the chunks a snapshot names itself (file list pieces, backup_manifest), then, after `afterDirect`, its files' chunks. */
export async function snapshotChunks(repo: Repository, s: Snapshot, visit: (id: ChunkId) => void, afterDirect?: () => Promise<void>): Promise<void> {
  for (const id of chunkIds(s.fileList.pieces)) visit(id);
  for (const id of chunkIds(s.backupManifest.chunks)) visit(id);
  await afterDirect?.();
  for await (const ev of readFileList(readChunks(repo, s.fileList.pieces))) if (ev.kind === "chunk") visit(ev.id);
}
