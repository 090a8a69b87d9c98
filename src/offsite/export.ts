// `klio repo export`: a self-contained repository holding only what the chosen backups and
// their WAL need, for removable media and a restore on a machine with no network. It is the
// same repository (same header: id, keys, passphrase), so its chunk ids and snapshots are the
// source's; the chunks the chosen backups use are read and written again into new packs, so
// nothing of other backups goes along.
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { fsyncDir, writeFileDurable } from "../util/durable-fs.ts";
import type { ChunkId } from "../repo/chunk-id.ts";
import { readFileList } from "../repo/file-list.ts";
import { HEADER_KEY } from "../repo/header.ts";
import { openRepository, type OpenOptions, type Repository } from "../repo/repository.ts";
import type { Storage, StorageEntry } from "../repo/storage.ts";
import { chunkIds, listSnapshotClusters, listSnapshots, readChunks, snapshotKey, type Snapshot } from "../backup/snapshot.ts";
import { parseLsn, parseSegmentName, segmentNumber, type SegmentSize } from "../pg/lsn.ts";
import { FORKS_FILE, GAPS_FILE, IDENTITY_FILE } from "../wal/archive-meta.ts";
import { PARTIAL_SUFFIX, STORED_SUFFIX } from "../wal/archive-layout.ts";
import { CHECKSUM_SUFFIX } from "../wal/segment-checksum.ts";
import { makeDirectories } from "../util/make-directories.ts";

export interface ExportOptions {
  source: Repository;
  /** The source's files as objects (for the WAL under wal/). */
  sourceStorage: Storage;
  dest: string;
  open: OpenOptions;
  cluster?: string;
  backupId?: string;
  /** Only WAL needed to recover up to this time (the segments written until then, and the one after). */
  walUntil?: Date;
  log: Logger;
  onProgress?: (chunks: number) => void;
}

export interface ExportResult {
  dest: string;
  backups: { cluster: string; id: string }[];
  chunks: number;
  plainBytes: number;
  walFiles: number;
  walBytes: number;
}

export async function exportRepository(o: ExportOptions): Promise<ExportResult> {
  await prepareDest(o.dest);
  const clusters = o.cluster !== undefined ? [o.cluster] : await listSnapshotClusters(o.source);
  const chosen: Snapshot[] = [];
  for (const c of clusters) {
    const { snapshots } = await listSnapshots(o.source, c);
    if (o.backupId === undefined) chosen.push(...snapshots);
    else if (o.backupId === "latest") chosen.push(...snapshots.slice(-1));
    else chosen.push(...snapshots.filter((s) => s.id === o.backupId));
  }
  if (chosen.length === 0) throw new KlioError("no-backup", `${o.source.root} has no backup${o.backupId && o.backupId !== "latest" ? ` ${o.backupId}` : ""}${o.cluster ? ` of cluster ${o.cluster}` : ""} to export`);

  // The same repository: its header (id, parameters, wrapped key) is the source's.
  await writeFileDurable(path.join(o.dest, HEADER_KEY), await o.sourceStorage.get(HEADER_KEY));
  await fsyncDir(path.dirname(path.resolve(o.dest)));
  const dest = await openRepository(o.dest, o.open);
  const result: ExportResult = { dest: o.dest, backups: chosen.map((s) => ({ cluster: s.cluster, id: s.id })), chunks: 0, plainBytes: 0, walFiles: 0, walBytes: 0 };
  try {
    for (const s of chosen) {
      await copyChunks(o, dest, s, result);
      await dest.putObject(snapshotKey(s.cluster, s.id), await o.source.getObject(snapshotKey(s.cluster, s.id)));
      o.log.info("export.backup", { cluster: s.cluster, id: s.id });
    }
  } finally {
    await dest.close();
  }
  for (const c of new Set(chosen.map((s) => s.cluster))) await copyWal(o, c, chosen.filter((s) => s.cluster === c), result);
  return result;
}

async function prepareDest(dest: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dest);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new KlioError("bad-target", `cannot use ${dest}: ${(e as Error).message}`);
    await makeDirectories(dest, 0o750);
    return;
  }
  if (names.length > 0) throw new KlioError("bad-target", `${dest} is not empty: export into a new or empty directory`);
}

/** Every chunk the backup needs (its files, its file list, its backup_manifest), read in order, stored once. */
async function copyChunks(o: ExportOptions, dest: Repository, s: Snapshot, result: ExportResult): Promise<void> {
  const writer = dest.writer();
  const reader = o.source.reader();
  const counted = (_id: ChunkId, length: number, isNew: boolean) => {
    if (!isNew) return;
    result.chunks++;
    result.plainBytes += length;
    if (result.chunks % 4096 === 0) o.onProgress?.(result.chunks);
  };
  try {
    for (const id of [...chunkIds(s.fileList.pieces), ...chunkIds(s.backupManifest.chunks)]) writer.add(await o.source.readChunk(id), counted, id);
    for await (const ev of readFileList(readChunks(o.source, s.fileList.pieces))) {
      if (ev.kind !== "chunk" || dest.has(ev.id)) continue;
      // The writer copies the bytes before add() returns: the reader's buffer may be reused after.
      await reader.read(ev.id, ev.length, (data) => writer.add(data, counted, ev.id));
      await writer.ready();
    }
    await reader.drain();
    await writer.flush();
  } catch (e) {
    await writer.abandon();
    throw e;
  } finally {
    await reader.close();
  }
}

/**
 * The cluster's WAL from the oldest chosen backup's start on: identity, history files, gaps, forks,
 * segments (stored or raw), the partial one; with walUntil, none written after the first
 * segment completed after that time.
 */
async function copyWal(o: ExportOptions, cluster: string, backups: Snapshot[], result: ExportResult): Promise<void> {
  const prefix = `wal/${cluster}/`;
  const all = await o.sourceStorage.list(prefix);
  const identity = all.find((e) => e.key === prefix + IDENTITY_FILE);
  if (!identity) throw new KlioError("no-archive", `${o.source.root} holds no WAL archive for cluster ${cluster}: its backups could not be restored`);
  const segSize = backups[0]!.walSegmentSize as SegmentSize;
  const firstSegno = backups.map((b) => segmentNumber(parseLsn(b.startLsn), segSize)).reduce((a, b) => (a < b ? a : b));
  const segments: (StorageEntry & { segno: bigint; name: string; partial: boolean })[] = [];
  const keep: StorageEntry[] = [];
  for (const e of all) {
    const name = e.key.slice(prefix.length);
    if (name === IDENTITY_FILE || name === GAPS_FILE || name === FORKS_FILE || /^[0-9A-F]{8}\.history$/.test(name)) keep.push(e);
    const base = name.slice(0, 24);
    if (!/^[0-9A-F]{24}$/.test(base) || !["", STORED_SUFFIX, PARTIAL_SUFFIX].includes(name.slice(24))) continue;
    const { segno } = parseSegmentName(base, segSize);
    if (segno >= firstSegno) segments.push({ ...e, segno, name, partial: name.endsWith(PARTIAL_SUFFIX) });
  }
  segments.sort((a, b) => (a.segno < b.segno ? -1 : a.segno > b.segno ? 1 : a.name < b.name ? -1 : 1));
  let chosen = segments;
  if (o.walUntil !== undefined) {
    const until = o.walUntil.getTime();
    const modified = async (e: StorageEntry) => e.modified ?? (await localModified(o, e.key));
    const out: typeof segments = [];
    for (const s of segments) {
      out.push(s);
      if (!s.partial && (await modified(s)) > until) break; // holds the target time: the last one needed
    }
    chosen = out;
  }
  // A raw segment goes with its checksum file.
  const raw = new Set(chosen.map((s) => s.name));
  const checksums = all.filter((e) => e.key.endsWith(CHECKSUM_SUFFIX) && raw.has(e.key.slice(prefix.length, -CHECKSUM_SUFFIX.length)));
  for (const e of [...keep, ...chosen, ...checksums]) {
    const bytes = await o.sourceStorage.get(e.key);
    const file = path.join(o.dest, ...e.key.split("/"));
    await makeDirectories(path.dirname(file), 0o750);
    await writeFileDurable(file, bytes);
    result.walFiles++;
    result.walBytes += bytes.length;
  }
  await fsyncDir(path.join(o.dest, "wal", cluster));
  o.log.info("export.wal", { cluster, files: result.walFiles, first: chosen[0]?.name ?? null, last: chosen.at(-1)?.name ?? null });
}

async function localModified(o: ExportOptions, key: string): Promise<number> {
  return (await stat(path.join(o.source.root, ...key.split("/")))).mtimeMs;
}
