// Reads the WAL archive: finds a cluster's archive, serves one file with its original bytes
// (get-wal), and summarises what is there (wal status). Small imports only: PostgreSQL runs
// get-wal once per segment during recovery.
import { copyFile, open, readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import { isSegmentName, parseSegmentName } from "../pg/lsn.ts";
import { clusterWalDir, PARTIAL_SUFFIX, STORED_SUFFIX, validateClusterName, walRoot } from "./archive-layout.ts";
import { IDENTITY_FILE, readIdentity, type ClusterIdentity } from "./archive-meta.ts";
import { decodeStoredSegment } from "./stored-segment.ts";
import { decodeStoredSegmentFile } from "./stored-segment-file.ts";

export interface ClusterArchive {
  cluster: string;
  dir: string;
  identity: ClusterIdentity;
}

/** The archive of `cluster`, or of the only cluster in the repository when none is named. */
export async function openClusterArchive(repo: string, cluster: string | undefined): Promise<ClusterArchive> {
  let name = cluster === undefined ? undefined : validateClusterName(cluster);
  if (name === undefined) {
    let entries: string[] = [];
    try {
      entries = await readdir(walRoot(repo));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    const clusters: string[] = [];
    for (const e of entries.sort()) {
      if ((await readdir(path.join(walRoot(repo), e)).catch(() => [] as string[])).includes(IDENTITY_FILE)) clusters.push(e);
    }
    if (clusters.length === 0) throw new KlioError("no-archive", `${repo} holds no WAL archive (is it a klio repository?)`);
    if (clusters.length > 1) throw new KlioError("usage", `${repo} holds WAL of several clusters (${clusters.join(", ")}): name one with --cluster`);
    name = clusters[0]!;
  }
  const dir = clusterWalDir(repo, name);
  const identity = await readIdentity(dir);
  if (!identity) throw new KlioError("no-archive", `${repo} holds no WAL archive for cluster ${name}`);
  return { cluster: name, dir, identity };
}

export type WalRequest =
  | { kind: "segment"; name: string; partial: boolean }
  | { kind: "history"; name: string }
  /** Backup history files (…​.backup) and the like: PostgreSQL may ask; klio keeps none. */
  | { kind: "other"; name: string };

/**
 * Validates a file name PostgreSQL (or an operator) asks for. Anything that is not a WAL
 * file name is refused, so that no name can reach outside the archive directory.
 */
export function parseWalRequest(name: string, segSize: number, allowPartial: boolean): WalRequest {
  if (/^[0-9A-F]{8}\.history$/.test(name)) return { kind: "history", name };
  if (/^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$/.test(name)) return { kind: "other", name };
  const base = name.endsWith(PARTIAL_SUFFIX) ? name.slice(0, -PARTIAL_SUFFIX.length) : name;
  if (isSegmentName(base)) {
    parseSegmentName(base, segSize);
    return { kind: "segment", name: base, partial: allowPartial || base !== name };
  }
  throw new KlioError("bad-wal-name", `"${name}" is not a WAL file name (expected e.g. 000000010000000000000003 or 00000002.history)`);
}

async function readIfExists(file: string): Promise<Uint8Array | undefined> {
  try {
    return await readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

/**
 * A segment moves partial → raw → stored while we look (the receiver renames, the compressor
 * writes the .kwal and then unlinks the raw file), and each move happens in the order we
 * probe backwards: a probe can miss a segment that exists. Probing again finds it in its
 * next form; three rounds cover two moves during one lookup.
 */
const PROBE_ROUNDS = 3;

/** The file's original bytes, or undefined when the archive does not have it. */
export async function readWalFile(archive: ClusterArchive, req: WalRequest): Promise<{ bytes: Uint8Array; from: string } | undefined> {
  if (req.kind === "other") return undefined;
  if (req.kind === "history") {
    const bytes = await readIfExists(path.join(archive.dir, req.name));
    return bytes && { bytes, from: req.name };
  }
  for (let round = 0; round < PROBE_ROUNDS; round++) {
    const stored = await readIfExists(path.join(archive.dir, req.name + STORED_SUFFIX));
    if (stored) return { bytes: decodeStoredSegment(stored, segmentWhat(archive, req.name)), from: req.name + STORED_SUFFIX };
    // Completed but not yet compressed: raw, fsync'd, whole.
    const raw = await readIfExists(path.join(archive.dir, req.name));
    if (raw) return { bytes: raw, from: req.name };
    if (!req.partial) continue;
    const partial = await readIfExists(path.join(archive.dir, req.name + PARTIAL_SUFFIX));
    if (partial) return { bytes: partial, from: req.name + PARTIAL_SUFFIX };
  }
  return undefined;
}

function segmentWhat(archive: ClusterArchive, name: string): string {
  return `WAL segment ${name} of cluster ${archive.cluster}`;
}

/** Whether the archive has `name` as a complete segment (stored or raw), not only partial. */
export async function hasCompleteSegment(archive: ClusterArchive, name: string): Promise<boolean> {
  for (const file of [name + STORED_SUFFIX, name, name + STORED_SUFFIX]) {
    if (await stat(path.join(archive.dir, file)).then(() => true, () => false)) return true;
  }
  return false;
}

export type WalSourceKind = "stored" | "raw" | "partial" | "history";

export interface CopyOptions {
  /** fsync `dest` before resolving. */
  sync?: boolean;
}

/**
 * Writes the file's original bytes to `dest` (created or truncated; a temporary name that the
 * caller renames into place) without holding the segment in memory, and says which archive
 * file they came from; undefined when the archive does not have it. A damaged stored segment
 * throws KlioError("corrupt-wal") and leaves garbage in `dest` for the caller to remove.
 */
export async function copyWalFile(archive: ClusterArchive, req: WalRequest, dest: string, opts: CopyOptions = {}): Promise<{ from: string; kind: WalSourceKind } | undefined> {
  if (req.kind === "other") return undefined;
  // Below, ENOENT means "not in the archive": make sure it cannot come from dest's side.
  const destDir = path.dirname(dest);
  if (!(await stat(destDir).catch(() => undefined))?.isDirectory()) throw new KlioError("bad-target", `cannot write into ${destDir}: it does not exist or is not a directory`);
  const copy = async (file: string): Promise<boolean> => {
    try {
      await copyFile(path.join(archive.dir, file), dest);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw e;
    }
    if (opts.sync) await syncFile(dest);
    return true;
  };
  if (req.kind === "history") return (await copy(req.name)) ? { from: req.name, kind: "history" } : undefined;
  for (let round = 0; round < PROBE_ROUNDS; round++) {
    try {
      await decodeStoredSegmentFile(path.join(archive.dir, req.name + STORED_SUFFIX), dest, segmentWhat(archive, req.name), { sync: opts.sync });
      return { from: req.name + STORED_SUFFIX, kind: "stored" };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    if (await copy(req.name)) return { from: req.name, kind: "raw" };
    if (req.partial && (await copy(req.name + PARTIAL_SUFFIX))) return { from: req.name + PARTIAL_SUFFIX, kind: "partial" };
  }
  return undefined;
}

async function syncFile(file: string): Promise<void> {
  const fh = await open(file, "r+");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
