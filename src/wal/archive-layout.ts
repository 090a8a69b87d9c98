// Where a cluster's WAL lives in the repository, and what each file name means.
// Documented in docs/FORMAT.md ("WAL archive"). Nothing here reads file contents.
import { readdir } from "node:fs/promises";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import { isSegmentName, parseSegmentName, type SegmentSize, type Timeline } from "../pg/lsn.ts";
import { CHECKSUM_SUFFIX } from "./segment-checksum.ts";

const CLUSTER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function isClusterName(name: string): boolean {
  return CLUSTER_NAME.test(name) && !name.includes("..");
}

export function validateClusterName(name: string): string {
  if (!isClusterName(name))
    throw new KlioError("usage", `"${name}" is not a valid cluster name (letters, digits, "_", "." and "-", at most 63, starting with a letter or digit)`);
  return name;
}

export function walRoot(repo: string): string {
  return path.join(repo, "wal");
}

export function clusterWalDir(repo: string, cluster: string): string {
  return path.join(walRoot(repo), validateClusterName(cluster));
}

/** Suffix of a completed segment stored in the compressed, checksummed container. */
export const STORED_SUFFIX = ".kwal";
export const PARTIAL_SUFFIX = ".partial";

export type ArchiveFileKind =
  /** completed, compressed and checksummed: the final form */
  | "stored"
  /** completed and fsync'd, not yet compressed (the compressor's queue); its checksum in NAME.crc32 */
  | "raw"
  /** the segment being received, or the tail of a timeline that ended mid-segment */
  | "partial";

export interface ArchivedSegment {
  name: string;
  file: string;
  kind: ArchiveFileKind;
  timeline: Timeline;
  segno: bigint;
}

export interface ArchiveListing {
  segments: ArchivedSegment[];
  /** Timelines with a NNNNNNNN.history file. */
  histories: Timeline[];
  /** Segments with a checksum file (NAME.crc32: a raw segment's, or one left behind by a crash). */
  checksums: ArchivedSegment[];
  /** Files named like segments that no segment of this size can have (never ours). */
  impossible: string[];
}

/** Lists the archive directory; names that are not ours are ignored, never deleted. */
export async function listArchive(dir: string, segSize: SegmentSize): Promise<ArchiveListing> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { segments: [], histories: [], checksums: [], impossible: [] };
    throw e;
  }
  return archiveListingOf(names, segSize);
}

/** What the archive's file names (of a directory, or of objects under wal/CLUSTER/) say it holds. */
export function archiveListingOf(names: Iterable<string>, segSize: SegmentSize): ArchiveListing {
  const segments: ArchivedSegment[] = [];
  const histories: Timeline[] = [];
  const checksums: ArchivedSegment[] = [];
  const impossible: string[] = [];
  for (const file of names) {
    const hist = /^([0-9A-F]{8})\.history$/.exec(file);
    if (hist) {
      histories.push(Number.parseInt(hist[1]!, 16));
      continue;
    }
    const base = file.slice(0, 24);
    if (!isSegmentName(base)) continue;
    const rest = file.slice(24);
    const kind: ArchiveFileKind | undefined =
      rest === STORED_SUFFIX ? "stored" : rest === "" ? "raw" : rest === PARTIAL_SUFFIX ? "partial" : undefined;
    if (!kind && rest !== CHECKSUM_SUFFIX) continue;
    let parsed;
    try {
      parsed = parseSegmentName(base, segSize);
    } catch {
      impossible.push(file);
      continue;
    }
    const { timeline, segno } = parsed;
    if (kind) segments.push({ name: base, file, kind, timeline, segno });
    else checksums.push({ name: base, file, kind: "raw", timeline, segno });
  }
  segments.sort((a, b) => (a.segno === b.segno ? a.timeline - b.timeline : a.segno < b.segno ? -1 : 1));
  histories.sort((a, b) => a - b);
  return { segments, histories, checksums, impossible };
}
