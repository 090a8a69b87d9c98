// `klio backup run`: a hot base backup over the replication protocol into the repository.
//
// BASE_BACKUP's tar streams are read as they arrive, every file is cut into chunks that fit
// its kind (8 KB pages for relation files), each chunk is stored once, and the file list
// records which chunks make each file. Memory stays flat whatever the database size: a few
// frames compressing, the packs not yet indexed, and one piece of the file list.
//
// Incremental backups (PostgreSQL 17+): when backup-kind.ts finds a parent, the parent's
// backup_manifest goes to the server (UPLOAD_MANIFEST) and BASE_BACKUP sends the changed
// blocks of relation files as INCREMENTAL.<file> entries, each stored as the whole file
// (synthetic-file.ts: the parent's chunks for the pages not sent). The snapshot is then a
// full one in all but name: it restores alone. When the server refuses (its WAL summaries do
// not reach back to the parent, another timeline), the backup is a full one, and says why.
//
// The order is the correctness argument: chunks durable (writer.flush), then the WAL from
// the backup's start to its end in the archive, then — and only then — the snapshot object
// that makes the backup visible. A backup interrupted at any step leaves no snapshot; the
// chunks it stored are reused by the next one.
import { KlioError, isDiskFull, isKlioError } from "../util/errors.ts";
import { concatBytes } from "../util/bytes.ts";
import type { Logger } from "../util/log.ts";
import { connect, type ReplicationConnection } from "../pg/replication-connection.ts";
import { describeConnInfo, type ConnInfo, type ServerConnInfo } from "../pg/conninfo.ts";
import { formatLsn } from "../pg/lsn.ts";
import { runBaseBackup, uploadManifest, type BaseBackupEvent, type BaseBackupOptions } from "../pg/base-backup.ts";
import { PgServerError } from "../pg/server-error.ts";
import { chunkIdHex } from "../repo/chunk-id.ts";
import { createChunker } from "../repo/chunker.ts";
import type { ChunkWriter, Repository } from "../repo/repository.ts";
import { openClusterArchive, type ClusterArchive } from "../wal/archive-reader.ts";
import { waitForWalCoverage } from "../wal/archive-coverage.ts";
import { chunkingFor, isVisibilityMapFile } from "./file-kind.ts";
import { FileListRecorder } from "./file-list-recorder.ts";
import type { EntryHead } from "../repo/file-list.ts";
import { readTar } from "./tar-reader.ts";
import { chunkIds, listSnapshots, readBackupManifest, saveSnapshot, SNAPSHOT_FORMAT, SNAPSHOT_VERSION, type Snapshot, type SnapshotTablespace } from "./snapshot.ts";
import type { BackupLock } from "./backup-lock.ts";
import { decideBackupKind, type BackupMode } from "./backup-kind.ts";
import { manifestCrc32cs, parseBackupManifest } from "./backup-manifest.ts";
import { incrementalRelationPath, readIncrementalFile } from "./incremental-file.ts";
import { ParentFileLayout, ParentFileList } from "./parent-file-list.ts";
import { recordSyntheticFile } from "./synthetic-file.ts";

export interface BackupProgress {
  phase: "copying" | "waiting-for-wal" | "done";
  doneBytes: number;
  totalBytes: number | null;
}

export interface BackupOptions {
  repoDir: string;
  repo: Repository;
  cluster: string;
  /** The cluster's backup lock (backup-lock.ts), taken before anything else; the caller releases it. */
  lock: BackupLock;
  conninfo: ConnInfo;
  name?: string;
  log: Logger;
  signal: AbortSignal;
  /** How long to wait for the archive to hold the backup's WAL before failing. */
  walTimeoutMs: number;
  /** Full, incremental, or (auto) incremental where the server and the repository allow it. */
  mode: BackupMode;
  /** A full backup at least this often; null: no bound. */
  fullEveryMs: number | null;
  onProgress?: (p: BackupProgress) => void;
  now?: () => Date;
}

/** Small files of the data directory kept in the snapshot itself as well. */
const LABEL_FILES = new Set(["backup_label", "tablespace_map"]);
const LABEL_FILE_MAX = 1024 * 1024;
const MANIFEST_PIECE = 1024 * 1024;

interface SourceFacts {
  /** Of the connection string's servers, the one target_session_attrs chose: the whole backup is taken from it. */
  server: ServerConnInfo;
  pgVersion: number;
  /** summarize_wal (PostgreSQL 17+; false on older servers). */
  summarizeWal: boolean;
  inRecovery: boolean;
  systemIdentifier: string;
  tablespaceNames: Map<number, string>;
}

export async function runBackup(o: BackupOptions): Promise<Snapshot> {
  try {
    return await takeBackup(o);
  } catch (e) {
    if (!isDiskFull(e) || isKlioError(e)) throw e;
    throw new KlioError("disk-full", `the repository's file system is full (${(e as Error).message}): the backup stopped and left nothing behind; free space (klio retention apply, klio repo maintenance) and run it again`);
  }
}

async function takeBackup(o: BackupOptions): Promise<Snapshot> {
  if (o.lock.cluster !== o.cluster || o.lock.repoDir !== o.repoDir) throw new Error(`backup of ${o.cluster} in ${o.repoDir} run under the lock of ${o.lock.cluster} in ${o.lock.repoDir}`);
  const now = o.now ?? (() => new Date());
  const started = now();
  const archive = await openClusterArchive(o.repoDir, o.cluster).catch((e) => {
    if ((e as KlioError).code === "no-archive")
      throw new KlioError("no-archive", `cluster ${o.cluster} has no WAL archive in ${o.repoDir}: start \`klio wal stream --cluster ${o.cluster}\` first (a backup without its WAL cannot be restored)`);
    throw e;
  });
  const facts = await readSourceFacts(o.conninfo, o.signal);
  const where = describeConnInfo(facts.server);
  if (facts.systemIdentifier !== archive.identity.systemIdentifier)
    throw new KlioError("system-id-mismatch", `${where} has system identifier ${facts.systemIdentifier}, but cluster ${o.cluster}'s archive holds WAL of ${archive.identity.systemIdentifier}: wrong server or wrong --cluster`);

  const id = await o.lock.issueId(o.repo, started);
  o.log.info("backup.start", { id, server: where, standby: facts.inRecovery });

  let plan = await planIncremental(o, id, facts, started);
  for (;;) {
    try {
      return await storeBackup(o, id, facts, archive, started, plan);
    } catch (e) {
      // The parent's file list is read as the backup goes: found damaged, the backup starts
      // over as a full one, which needs nothing of it (a damaged parent must not stop every
      // later backup).
      if (!(plan && isKlioError(e) && e.code === PARENT_UNREADABLE)) throw e;
      if (o.mode === "incremental") throw new KlioError("incremental-impossible", `an incremental backup cannot be taken: ${e.message}`);
      o.log.warn("backup.full", { id, reason: e.message });
      plan = null;
    }
  }
}

/** The error of a parent whose file list turns out unreadable during the copy. */
const PARENT_UNREADABLE = "incremental-parent-unreadable";

/** Copies the backup (incremental against `plan`'s parent, or full) and records it. */
async function storeBackup(o: BackupOptions, id: string, facts: SourceFacts, archive: ClusterArchive, started: Date, plan: IncrementalPlan | null): Promise<Snapshot> {
  const now = o.now ?? (() => new Date());
  // The session spans the copy and the snapshot: maintenance frees nothing this backup may name.
  const { session, writer } = await o.repo.beginWrite(`backup ${o.cluster} ${id}`);
  try {
    const copy = await copyFiles(o, facts.server, id, writer, started, now, plan).catch(async (e) => {
      await writer.abandon();
      throw e;
    });
    const { start, end, stats, labels, pieces, entries, manifestChunks, manifestBytes, copiedAt, backupLabel, incremental } = copy;
    o.log.info("backup.copied", { id, files: stats.files, bytes: stats.bytes, end_lsn: formatLsn(end.endLsn) });

    // The backup is only restorable with the WAL from its start to its end.
    o.onProgress?.({ phase: "waiting-for-wal", doneBytes: stats.bytes, totalBytes: start.totalBytes });
    const coverage = await waitForWalCoverage(archive.dir, archive.identity.walSegmentSize, start.timeline, start.startLsn, end.endLsn, {
      timeoutMs: o.walTimeoutMs, signal: o.signal,
      onWait: (missing) => o.log.info("backup.waiting_for_wal", { id, segment: missing }),
    });
    if (!coverage.covered) {
      if (o.signal.aborted) throw new KlioError("aborted", "backup interrupted while waiting for its WAL");
      throw new KlioError("wal-missing",
        `backup ${id} needs WAL up to ${formatLsn(end.endLsn)}, but ${coverage.missing} has not reached the archive after ${Math.round(o.walTimeoutMs / 1000)} s: ` +
        `is \`klio wal stream --cluster ${o.cluster}\` running? The backup is not recorded (its data is kept for the next one).`);
    }

    const w = writer.stats;
    const snapshot: Snapshot = {
      format: SNAPSHOT_FORMAT, version: SNAPSHOT_VERSION, id, cluster: o.cluster, name: o.name ?? null,
      startTime: started.toISOString(), endTime: copiedAt.toISOString(),
      startLsn: formatLsn(start.startLsn), endLsn: formatLsn(end.endLsn), timeline: start.timeline, endTimeline: end.timeline,
      systemIdentifier: facts.systemIdentifier, pgVersion: facts.pgVersion, walSegmentSize: archive.identity.walSegmentSize,
      fromStandby: facts.inRecovery,
      kind: incremental ? "incremental" : "full", parent: incremental?.parent.id ?? null,
      ...(incremental ? { incrementalByteOrder: incremental.byteOrder ?? "little" } : {}),
      backupLabel, tablespaceMap: labels.get("tablespace_map") ?? null,
      tablespaces: start.tablespaces.map((t): SnapshotTablespace => ({ oid: t.oid, name: facts.tablespaceNames.get(t.oid) ?? null, location: t.location })),
      fileList: { pieces, entries },
      backupManifest: { chunks: manifestChunks, bytes: manifestBytes },
      stats: {
        ...stats, chunks: w.chunks, newChunks: w.newChunks, newBytes: w.newPlainBytes, storedBytes: w.storedBytes,
        durationMs: now().getTime() - started.getTime(),
      },
    };
    const { broughtBack } = await saveSnapshot(o.repo, snapshot, session);
    // Chunks the repository's maintenance had set aside meanwhile, indexed again for this backup.
    if (broughtBack > 0) o.log.info("backup.kept_from_maintenance", { id, chunks: broughtBack });
    o.onProgress?.({ phase: "done", doneBytes: stats.bytes, totalBytes: start.totalBytes });
    o.log.info("backup.done", { id, files: stats.files, bytes: stats.bytes, new_bytes: w.newPlainBytes, stored_bytes: w.storedBytes });
    return snapshot;
  } finally {
    await session.end();
  }
}

/** What an incremental backup is taken against: the parent, its manifest for the server, its file list (read alongside the copy). */
interface IncrementalPlan {
  parent: Snapshot;
  manifest: Uint8Array;
  files: ParentFileList;
  /** The server's byte order, as its first INCREMENTAL. header shows it. */
  byteOrder?: "little" | "big";
}

/** The parent of an incremental backup, or null for a full one (logged with the reason). */
async function planIncremental(o: BackupOptions, id: string, facts: SourceFacts, started: Date): Promise<IncrementalPlan | null> {
  const { snapshots } = await listSnapshots(o.repo, o.cluster);
  const d = decideBackupKind({
    mode: o.mode, pgVersion: facts.pgVersion, summarizeWal: facts.summarizeWal, systemIdentifier: facts.systemIdentifier,
    backups: snapshots, fullEveryMs: o.fullEveryMs, now: started,
  });
  if (d.kind === "full") {
    o.log.info("backup.full", { id, reason: d.reason });
    return null;
  }
  try {
    const manifest = await readBackupManifest(o.repo, d.parent);
    // A full parent's per-file checksums are in its manifest: an unchanged file keeps its own.
    const checksums = manifestCrc32cs(parseBackupManifest(manifest));
    // Its file list is read alongside the copy, as far as the files sent need.
    const files = new ParentFileList(chunkIds(d.parent.fileList.pieces), (chunk) => o.repo.readChunk(chunk), checksums);
    o.log.debug("backup.parent_read", { id, parent: d.parent.id, manifest_bytes: manifest.length });
    return { parent: d.parent, manifest, files };
  } catch (e) {
    // A parent that cannot be read (damaged, say) must not stop every later backup: a full one needs nothing of it.
    const reason = parentUnreadable(d.parent, e);
    if (o.mode === "incremental") throw new KlioError("incremental-impossible", `an incremental backup cannot be taken: ${reason}`);
    o.log.warn("backup.full", { id, reason });
    return null;
  }
}

function parentUnreadable(parent: Snapshot, e: unknown): string {
  return `the backup to take it against, ${parent.id}, cannot be read: ${e instanceof Error ? e.message : String(e)}`;
}

/**
 * BASE_BACKUP begun on `conn`: incremental against `plan`'s parent when the server takes it,
 * else full. The server refuses before it sends anything (its WAL summaries do not reach back
 * to the parent, the parent's timeline is not in its history, …): with --incremental that
 * fails the backup, otherwise it is a full one, and the log says why.
 */
async function beginBaseBackup(conn: ReplicationConnection, o: BackupOptions, id: string, plan: IncrementalPlan | null): Promise<{ events: EventReader; incremental: IncrementalPlan | null }> {
  const options: BaseBackupOptions = { label: `klio ${id}`, fastCheckpoint: true, manifestChecksums: "CRC32C" };
  if (plan) {
    try {
      await uploadManifest(conn, plan.manifest);
      o.log.debug("backup.manifest_uploaded", { id, parent: plan.parent.id });
      const events = new EventReader(runBaseBackup(conn, { ...options, incremental: true })[Symbol.asyncIterator]());
      await events.peek();
      o.log.info("backup.incremental", { id, parent: plan.parent.id });
      return { events, incremental: plan };
    } catch (e) {
      if (!(e instanceof PgServerError)) throw e;
      const reason = `the server refused an incremental backup against ${plan.parent.id}: ${e.message}${e.detail ? ` (${e.detail})` : ""}`;
      if (o.mode === "incremental") throw new KlioError("incremental-impossible", `an incremental backup cannot be taken: ${reason}`);
      o.log.info("backup.full", { id, reason });
    }
  }
  return { events: new EventReader(runBaseBackup(conn, options)[Symbol.asyncIterator]()), incremental: null };
}

interface Copied {
  /** The parent, when the backup is incremental. */
  incremental: IncrementalPlan | null;
  start: Extract<BaseBackupEvent, { kind: "start" }>;
  end: Extract<BaseBackupEvent, { kind: "end" }>;
  stats: { files: number; bytes: number; sentBytes: number; zeroBytes: number };
  labels: Map<string, string>;
  backupLabel: string;
  pieces: string[];
  entries: number;
  manifestChunks: string[];
  manifestBytes: number;
  copiedAt: Date;
}

/** Runs BASE_BACKUP and stores every file into `writer`, durably (flushed) once this resolves. */
async function copyFiles(o: BackupOptions, server: ServerConnInfo, id: string, writer: ChunkWriter, started: Date, now: () => Date, plan: IncrementalPlan | null): Promise<Copied> {
  const where = describeConnInfo(server);
  // The file list is written as the chunks' ids come back from the writer, in order.
  const fileList = new FileListRecorder(writer);
  const stats = { files: 0, bytes: 0, sentBytes: 0 };
  const labels = new Map<string, string>();
  const manifestChunks: string[] = [];
  let manifestBytes = 0;
  let start: Extract<BaseBackupEvent, { kind: "start" }> | undefined;
  let end: Extract<BaseBackupEvent, { kind: "end" }> | undefined;
  // When the server wrote the backup's end: a recovery target time must not be earlier.
  let copiedAt = started;

  // The backup reads as fast as it stores: a megabyte of socket buffering keeps the pipe full
  // (the receiver's default 8 MB would only cost memory here).
  const conn = await connect(server, { replication: "true", signal: o.signal, copyHighWater: 1024 * 1024 });
  let incremental: IncrementalPlan | null = null;
  try {
    const begun = await beginBaseBackup(conn, o, id, plan);
    const events = begun.events;
    incremental = begun.incremental;
    let done = 0;
    const progress = (phase: BackupProgress["phase"]) => o.onProgress?.({ phase, doneBytes: done, totalBytes: start?.totalBytes ?? null });
    for (;;) {
      const ev = await events.next();
      if (ev === undefined) break;
      switch (ev.kind) {
        case "start":
          start = ev;
          o.log.info("backup.started", { id, start_lsn: formatLsn(ev.startLsn), timeline: ev.timeline, tablespaces: ev.tablespaces.length });
          progress("copying");
          break;
        case "progress":
          done = ev.doneBytes;
          progress("copying");
          break;
        case "archive": {
          const root = ev.tablespaceOid ?? 0;
          for await (const { entry, content } of readTar(events.dataOf(() => progress("copying"), (n) => (done = n)))) {
            if (o.signal.aborted) throw new KlioError("aborted", "backup interrupted");
            const head = { root, path: entry.path, mode: entry.mode, mtime: entry.mtime };
            if (entry.type === "directory") {
              fileList.record((l) => l.dir(head));
              continue;
            }
            if (entry.type === "symlink") {
              fileList.record((l) => l.symlink({ ...head, target: entry.linkTarget ?? "" }));
              continue;
            }
            stats.files++;
            stats.sentBytes += entry.size;
            const relationPath = incremental ? incrementalRelationPath(entry.path) : null;
            if (incremental && relationPath !== null) {
              stats.bytes += await recordIncrementalFile(fileList, incremental, { ...head, path: relationPath }, entry.path, content);
              continue;
            }
            stats.bytes += entry.size;
            fileList.record((l) => l.beginFile({ ...head, size: entry.size }));
            const keepText = root === 0 && LABEL_FILES.has(entry.path) && entry.size <= LABEL_FILE_MAX;
            const text: Uint8Array[] = [];
            const chunker = createChunker(chunkingFor(entry.path, entry.size));
            // Chunks are stored as they come (the writer copies what it keeps), and the writer
            // paces the reading once per buffer: nothing per chunk waits.
            for await (const bytes of content) {
              if (keepText) text.push(bytes.slice());
              for (const c of chunker.push(bytes)) fileList.store(c);
              await writer.ready();
            }
            for (const c of chunker.end()) fileList.store(c);
            fileList.record((l) => l.endFile());
            if (keepText) labels.set(entry.path, new TextDecoder().decode(concatBytes(text)));
          }
          // The tar reader stops at the end-of-archive blocks; what may follow is padding.
          for await (const _ of events.dataOf(() => progress("copying"), (n) => (done = n)));
          break;
        }
        case "manifest":
          for (let at = 0; at < ev.bytes.length; at += MANIFEST_PIECE) {
            const r = await writer.put(ev.bytes.subarray(at, at + MANIFEST_PIECE));
            manifestChunks.push(chunkIdHex(r.id));
          }
          manifestBytes = ev.bytes.length;
          break;
        case "end":
          end = ev;
          copiedAt = now();
          break;
        case "data":
          throw new KlioError("pg-protocol", "BASE_BACKUP sent archive data before naming the archive");
      }
    }
  } finally {
    await conn.close().catch(() => conn.destroy());
  }
  if (!start || !end) throw new KlioError("pg-protocol", `BASE_BACKUP on ${where} ended without its start or end position`);
  if (manifestChunks.length === 0) throw new KlioError("pg-protocol", `BASE_BACKUP on ${where} sent no backup_manifest`);
  const backupLabel = labels.get("backup_label");
  if (backupLabel === undefined) throw new KlioError("pg-protocol", `BASE_BACKUP on ${where} sent no backup_label`);
  const entries = await fileList.finish();
  await writer.flush();
  return { incremental, start, end, stats: { ...stats, zeroBytes: fileList.zeroBytes }, labels, backupLabel, pieces: fileList.pieces, entries, manifestChunks, manifestBytes, copiedAt };
}

/** Records an INCREMENTAL.<file> entry as the whole file (a synthetic full); returns the file's size. */
async function recordIncrementalFile(fileList: FileListRecorder, plan: IncrementalPlan, head: EntryHead, entryPath: string, content: AsyncIterable<Uint8Array>): Promise<number> {
  const events = readIncrementalFile(entryPath, content);
  const first = await events.next();
  if (first.done || first.value.kind !== "header") throw new KlioError("damaged-incremental-file", `incremental file ${JSON.stringify(entryPath)} has no header`);
  const header = first.value;
  const byteOrder = header.littleEndian ? "little" : "big";
  if ((plan.byteOrder ??= byteOrder) !== byteOrder) throw new KlioError("damaged-incremental-file", `incremental file ${JSON.stringify(entryPath)} is in ${byteOrder}-endian order, the ones before it were not`);
  async function* pages(): AsyncGenerator<Uint8Array> {
    for await (const ev of events) if (ev.kind === "block") yield ev.page;
  }
  // PostgreSQL 17 and 18 clear visibility map bits on a heap change without registering the
  // map's page in the WAL record, so WAL summaries miss the change and the server does not
  // send that page: the parent's copy may say "all visible" of pages changed since (as
  // pg_combinebackup restores it). A map page the server did not send is zeros here — no
  // page all-visible or all-frozen, which is always safe; VACUUM sets the bits again.
  const parent = isVisibilityMapFile(head.path)
    ? ParentFileLayout.none()
    : await plan.files.layoutOf(head.root, head.path).catch((e) => {
      throw new KlioError(PARENT_UNREADABLE, parentUnreadable(plan.parent, e));
    });
  const made = await recordSyntheticFile(fileList, { head, header, pages: pages(), parent, parentId: plan.parent.id });
  return made.size;
}

/** What BASE_BACKUP does not say: version, standby or not, system identifier, tablespace names. */
async function readSourceFacts(ci: ConnInfo, signal: AbortSignal): Promise<SourceFacts> {
  const conn: ReplicationConnection = await connect(ci, { replication: false, signal });
  try {
    const [facts] = await conn.query(
      "select current_setting('server_version_num'), pg_is_in_recovery(), (select system_identifier from pg_control_system()), current_setting('summarize_wal', true)",
    );
    const [spaces] = await conn.query("select oid, spcname from pg_tablespace");
    const row = facts!.rows[0]!;
    return {
      server: conn.connInfo,
      pgVersion: Number(row[0]),
      summarizeWal: row[3] === "on",
      inRecovery: row[1] === "t",
      systemIdentifier: String(row[2]),
      tablespaceNames: new Map(spaces!.rows.map((r) => [Number(r[0]), String(r[1])])),
    };
  } finally {
    await conn.close().catch(() => conn.destroy());
  }
}

/**
 * BASE_BACKUP's events, read one at a time, with the data of one archive available as a
 * byte stream for the tar reader: it stops at the next event that is not data (left for
 * next()).
 */
class EventReader {
  private ahead: BaseBackupEvent | undefined;
  constructor(private readonly it: AsyncIterator<BaseBackupEvent>) {}

  /** Reads the next event ahead (a server error before the backup's first event surfaces here). */
  async peek(): Promise<BaseBackupEvent | undefined> {
    this.ahead ??= await this.next();
    return this.ahead;
  }

  async next(): Promise<BaseBackupEvent | undefined> {
    if (this.ahead) {
      const ev = this.ahead;
      this.ahead = undefined;
      return ev;
    }
    const r = await this.it.next();
    return r.done ? undefined : r.value;
  }

  async *dataOf(onProgress: () => void, setDone: (n: number) => void): AsyncGenerator<Uint8Array> {
    for (;;) {
      const ev = await this.next();
      if (ev === undefined) return;
      if (ev.kind === "data") {
        yield ev.bytes;
      } else if (ev.kind === "progress") {
        setDone(ev.doneBytes);
        onProgress();
      } else {
        this.ahead = ev;
        return;
      }
    }
  }
}
