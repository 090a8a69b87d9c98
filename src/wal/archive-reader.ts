// Reads the WAL archive: finds a cluster's archive, serves one file with its original bytes
// (get-wal), and summarises what is there (wal status). Small imports only: PostgreSQL runs
// get-wal once per segment during recovery.
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import { isSegmentName, parseSegmentName } from "../pg/lsn.ts";
import { clusterWalDir, PARTIAL_SUFFIX, STORED_SUFFIX, validateClusterName, walRoot } from "./archive-layout.ts";
import { IDENTITY_FILE, readIdentity, type ClusterIdentity } from "./archive-meta.ts";
import { decodeStoredSegment } from "./stored-segment.ts";

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

/** The file's original bytes, or undefined when the archive does not have it. */
export async function readWalFile(archive: ClusterArchive, req: WalRequest): Promise<{ bytes: Uint8Array; from: string } | undefined> {
  if (req.kind === "other") return undefined;
  if (req.kind === "history") {
    const bytes = await readIfExists(path.join(archive.dir, req.name));
    return bytes && { bytes, from: req.name };
  }
  const stored = await readIfExists(path.join(archive.dir, req.name + STORED_SUFFIX));
  if (stored) return { bytes: decodeStoredSegment(stored, `WAL segment ${req.name} of cluster ${archive.cluster}`), from: req.name + STORED_SUFFIX };
  // Completed but not yet compressed: raw, fsync'd, whole.
  const raw = await readIfExists(path.join(archive.dir, req.name));
  if (raw) return { bytes: raw, from: req.name };
  if (!req.partial) return undefined;
  const partial = await readIfExists(path.join(archive.dir, req.name + PARTIAL_SUFFIX));
  return partial && { bytes: partial, from: req.name + PARTIAL_SUFFIX };
}
