// `klio restore`: a backup from the repository into a new data directory, set up to recover
// to a point in time with this same binary as its restore_command.
import { appendFile, readFile, readlink, symlink, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { writeFileDurable } from "../util/durable-fs.ts";
import { shellQuote } from "../util/self-command.ts";
import type { Repository } from "../repo/repository.ts";
import { listSnapshots, loadSnapshot, readBackupManifest, type Snapshot } from "../backup/snapshot.ts";
import { clusterWalDir } from "../wal/archive-layout.ts";
import { isApiLocation } from "../util/api-client.ts";
import { remoteWalLocation } from "../wal/wal-source.ts";
import { isS3Location } from "../repo/s3-storage.ts";
import { restoreCommandWithSpool } from "../wal/wal-prefetch.ts";
import { spoolId } from "../wal/wal-spool.ts";
import { materialize } from "./materialize.ts";
import { fullBackupLabel, incrementalFiles, rewriteIncrementalManifest } from "./restored-manifest.ts";
import { crc32c } from "../backup/crc32c.ts";
import { checkTargetAfterBackup, checkTargetInArchive, chooseBackup, targetSettings, type RecoveryTarget, type TargetAction } from "./recovery-target.ts";
import { checkDestination, prepareDestination, undoDestination, type Destination } from "./destination.ts";
import type { ArchiveEnd } from "../wal/archive-end.ts";
import { makeDirectories } from "../util/make-directories.ts";

/** get-wal's spool, inside pg_wal: same filesystem as %p, and ignored by PostgreSQL and its tools. */
const SPOOL = "pg_wal/klio-spool";

export interface TablespaceMapping {
  /** A tablespace name or oid. */
  key: string;
  path: string;
}

export interface RestoreOptions {
  /** A directory, or the appliance's API (https://host:port). */
  repoDir: string;
  /** What get-wal needs to reach a remote repoDir (--token-file, --s3-… flags), for restore_command. */
  accessFlags?: string[];
  repo: Repository;
  cluster: string;
  /** The data directory, checked before the repository was opened. */
  dest: Destination;
  /** A backup id, or "latest"/undefined: the newest that can reach the target. */
  backupId?: string;
  target: RecoveryTarget;
  action: TargetAction;
  timeline: string;
  /** Where the cluster's WAL archive ends (a time or LSN target past it is refused), given the segment size. */
  archiveEnd: (walSegmentSize: number) => Promise<ArchiveEnd | null>;
  /** --allow-future-target: write a time or LSN target past the archive's end all the same. */
  allowFutureTarget: boolean;
  tablespaces: TablespaceMapping[];
  /** argv that runs this klio (util/self-command.ts), for restore_command. */
  klio: string[];
  /** get-wal's --retry-for in restore_command (its default when undefined). */
  walRetrySeconds?: number;
  concurrency: number;
  log: Logger;
  /** One line for the operator on stderr (a backup skipped). */
  warn: (line: string) => void;
  signal: AbortSignal;
  onProgress?: (bytes: number, total: number) => void;
}

export interface RestoreResult {
  snapshot: Snapshot;
  dest: string;
  files: number;
  bytes: number;
  tablespaces: { oid: number; name: string | null; path: string }[];
  /** Newer backups whose snapshots could not be read, passed over. */
  skipped: { id: string; error: string }[];
}

export async function runRestore(o: RestoreOptions): Promise<RestoreResult> {
  const dest = o.dest.dir;
  const { snapshot, skipped } = await pickSnapshot(o);
  checkTargetAfterBackup(o.target, snapshot);
  checkTargetInArchive(o.target, await o.archiveEnd(snapshot.walSegmentSize), o.allowFutureTarget, o.cluster);
  const tablespaceDirs = mapTablespaces(snapshot, o.tablespaces, dest);
  const made: Destination[] = [o.dest];
  for (const [oid, dir] of tablespaceDirs) {
    const t = snapshot.tablespaces.find((t) => t.oid === oid);
    made.push(await checkDestination(dir, `the directory of tablespace ${t?.name ?? oid} (oid ${oid})`));
  }

  o.log.info("restore.start", { backup: snapshot.id, dest, end_lsn: snapshot.endLsn });
  // From the first directory made on, a failure puts every destination back as it was.
  try {
    for (const d of made) await prepareDestination(d);
    const serverManifest = await readBackupManifest(o.repo, snapshot);
    // An incremental backup's manifest describes the blocks PostgreSQL sent, not the files restored.
    const checksummed = snapshot.kind === "incremental" ? incrementalFiles(serverManifest) : undefined;
    const { files, bytes, checksums } = await materialize({
      repo: o.repo, snapshot, dest, tablespaceDirs, concurrency: o.concurrency, signal: o.signal, checksummed,
      onProgress: (n) => o.onProgress?.(n, snapshot.stats.bytes),
    });
    if (checksummed) checksums.set("backup_label", await writeFullBackupLabel(dest));
    const manifest = checksummed ? rewriteIncrementalManifest(serverManifest, checksums) : serverManifest;
    await finishDataDirectory(o, snapshot, dest, tablespaceDirs, manifest);
    o.log.info("restore.done", { backup: snapshot.id, dest, files, bytes });
    return {
      snapshot, dest, files, bytes, skipped,
      tablespaces: snapshot.tablespaces.map((t) => ({ oid: t.oid, name: t.name, path: tablespaceDirs.get(t.oid)! })),
    };
  } catch (e) {
    for (const d of made.reverse()) {
      await undoDestination(d).catch((u) => o.warn(`could not remove what the failed restore wrote in ${d.dir}: ${u instanceof Error ? u.message : String(u)}`));
    }
    throw e;
  }
}

/** An incremental backup's backup_label, rewritten as a full backup's; its size and CRC-32C. */
async function writeFullBackupLabel(dest: string): Promise<{ size: number; crc32c: number }> {
  const file = path.join(dest, "backup_label");
  const label = new TextEncoder().encode(fullBackupLabel(await readFile(file, "utf8")));
  await writeFile(file, label);
  return { size: label.length, crc32c: crc32c(label) };
}

/** What makes the restored files a data directory that recovers: manifest, links, map, recovery settings. */
async function finishDataDirectory(o: RestoreOptions, snapshot: Snapshot, dest: string, tablespaceDirs: Map<number, string>, manifest: Uint8Array): Promise<void> {
  // PostgreSQL's own manifest (an incremental backup's rewritten for the whole files), so
  // that pg_verifybackup can check the restored directory.
  await writeFile(path.join(dest, "backup_manifest"), manifest, { mode: 0o600 });
  // A backup of a standby carries its standby.signal: the restored cluster is to recover to
  // the target and open, not to follow a primary (as pgBackRest's default restore type).
  await unlink(path.join(dest, "standby.signal")).catch((e) => {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  });
  await linkTablespaces(dest, tablespaceDirs);
  if (snapshot.tablespaceMap !== null) await writeTablespaceMap(dest, snapshot, tablespaceDirs);
  await writeRecoveryConfig(dest, snapshot, o);
}

/**
 * The backup asked for, or the newest that can reach the target. A newer backup whose
 * snapshot cannot be read is passed over — the older one reaches the same target by replaying
 * more WAL — but never in silence: one warning line names it and why.
 */
async function pickSnapshot(o: RestoreOptions): Promise<{ snapshot: Snapshot; skipped: { id: string; error: string }[] }> {
  if (o.backupId !== undefined && o.backupId !== "latest") return { snapshot: await loadSnapshot(o.repo, o.cluster, o.backupId), skipped: [] };
  const { snapshots, unreadable } = await listSnapshots(o.repo, o.cluster);
  if (snapshots.length === 0) {
    const why = unreadable.length ? `: the snapshot of ${unreadable.map((u) => `backup ${u.id} cannot be read (${u.error})`).join("; ")}` : "";
    throw new KlioError("no-backup", `cluster ${o.cluster} has no ${unreadable.length ? "readable " : ""}backup in ${o.repoDir}${why}`);
  }
  const chosen = chooseBackup(snapshots, o.target);
  if (!chosen) {
    const what = o.target.kind === "time" ? `ends before ${o.target.text}` : "ends before the target LSN";
    throw new KlioError("bad-target", `restore: no backup of cluster ${o.cluster} ${what} (the oldest ends at ${snapshots[0]!.endTime}, LSN ${snapshots[0]!.endLsn})`);
  }
  // A backup that started after a time target could not have been chosen anyway.
  const skipped = unreadable.filter((u) => u.id > chosen.id && !(o.target.kind === "time" && snapshotIdTime(u.id) > o.target.time.getTime()));
  for (const u of skipped) o.warn(`backup ${u.id} of ${o.cluster} is newer than backup ${chosen.id} but its snapshot cannot be read (${u.error}): restoring ${chosen.id} instead; run klio repo check, or name a backup with --backup-id`);
  return { snapshot: chosen, skipped };
}

/** The start time a snapshot id names (20261124T071500Z). */
function snapshotIdTime(id: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(id)!;
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}

/** oid → directory: mapped ones where the operator said, the others where they were. */
function mapTablespaces(s: Snapshot, mappings: TablespaceMapping[], dest: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const m of mappings) {
    const t = s.tablespaces.find((t) => t.name === m.key || String(t.oid) === m.key);
    if (!t) throw new KlioError("usage", `restore: backup ${s.id} has no tablespace "${m.key}" (it has: ${s.tablespaces.map((t) => `${t.name ?? "?"} (oid ${t.oid})`).join(", ") || "none"})`);
    if (!path.isAbsolute(m.path)) throw new KlioError("usage", `restore: tablespace directory ${m.path} must be an absolute path`);
    out.set(t.oid, path.resolve(m.path));
  }
  for (const t of s.tablespaces) if (!out.has(t.oid)) out.set(t.oid, t.location);
  const overlap = (a: string, b: string) => a === b || a.startsWith(b + path.sep) || b.startsWith(a + path.sep);
  const dirs = [...out];
  for (const [i, [oid, dir]] of dirs.entries()) {
    if (overlap(dir, dest)) throw new KlioError("bad-destination", `restore: tablespace ${oid}'s directory ${dir} overlaps the destination ${dest}`);
    for (const [other, otherDir] of dirs.slice(i + 1)) {
      if (overlap(dir, otherDir)) throw new KlioError("bad-destination", `restore: the directories of tablespaces ${oid} and ${other} overlap (${dir}, ${otherDir}): give each its own with --tablespaces`);
    }
  }
  return out;
}

/**
 * pg_tblspc/<oid> → the tablespace's directory. With a tablespace_map the server sends no
 * links (PostgreSQL would make them from the map at start-up); making them here as well lets
 * pg_verifybackup and people find the files before the server has started.
 */
async function linkTablespaces(dest: string, dirs: Map<number, string>): Promise<void> {
  if (dirs.size === 0) return;
  await makeDirectories(path.join(dest, "pg_tblspc"), 0o700);
  for (const [oid, dir] of dirs) {
    const link = path.join(dest, "pg_tblspc", String(oid));
    const existing = await readlink(link).catch(() => undefined);
    if (existing === dir) continue;
    await symlink(dir, link);
  }
}

/** tablespace_map lines are "<oid> <path>": point them where the tablespaces now are. */
async function writeTablespaceMap(dest: string, s: Snapshot, dirs: Map<number, string>): Promise<void> {
  const lines = s.tablespaces.map((t) => `${t.oid} ${dirs.get(t.oid)!.replace(/\\/g, "\\\\").replace(/\n/g, "\\\n")}\n`);
  await writeFile(path.join(dest, "tablespace_map"), lines.join(""), { mode: 0o600 });
}

/** recovery.signal and the recovery settings, with get-wal of this same binary as restore_command. */
async function writeRecoveryConfig(dest: string, s: Snapshot, o: RestoreOptions): Promise<void> {
  const getWal = [...o.klio, "get-wal"];
  // The spool (relative: PostgreSQL runs restore_command in the data directory) lets a
  // background prefetcher keep the next segments ready; a shell `mv` hands a ready one over
  // without starting klio at all, so replay does not wait on start-up once per segment.
  let restoreCommand: string;
  const retryFlags = o.walRetrySeconds === undefined ? [] : ["--retry-for", String(o.walRetrySeconds)];
  if (isApiLocation(o.repoDir) || isS3Location(o.repoDir)) {
    // From the appliance or from S3: get-wal reads the same place, with the same access flags (token or key files PostgreSQL's user must be able to read).
    const flags = ["--repo", o.repoDir, ...(o.accessFlags ?? []), "--cluster", o.cluster, "--partial", ...retryFlags, "--spool", SPOOL];
    restoreCommand = restoreCommandWithSpool(`${shellQuote(getWal)} %f %p ${shellQuote(flags)}`, path.join(SPOOL, spoolId(remoteWalLocation(o.repoDir, o.cluster), s.systemIdentifier)));
  } else {
    const flags = ["--repo", path.resolve(o.repoDir), "--cluster", o.cluster, "--partial", ...retryFlags, "--spool", SPOOL];
    const archiveDir = clusterWalDir(path.resolve(o.repoDir), o.cluster);
    restoreCommand = restoreCommandWithSpool(
      `${shellQuote(getWal)} %f %p ${shellQuote(flags)}`,
      path.join(SPOOL, spoolId(archiveDir, s.systemIdentifier)),
      { archiveDir, partial: true },
    );
  }
  const settings: [string, string][] = [["restore_command", restoreCommand], ...targetSettings(o.target, o.action, o.timeline)];
  const conf = path.join(dest, "postgresql.auto.conf");
  const existing = await readFile(conf, "utf8").catch(() => "");
  const block = [
    existing.endsWith("\n") || existing === "" ? "" : "\n",
    `# Recovery settings written by klio restore from backup ${s.id} of cluster ${s.cluster}.\n`,
    ...settings.map(([k, v]) => `${k} = '${v.replace(/\\/g, "\\\\").replace(/'/g, "''")}'\n`),
  ].join("");
  await appendFile(conf, block, { mode: 0o600 });
  await writeFileDurable(path.join(dest, "recovery.signal"), "");
}
