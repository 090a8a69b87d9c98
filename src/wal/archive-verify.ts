// Checking the WAL archive of a cluster, as `repo check` checks the chunks and packs:
// - inspectArchive: cheap checks of every file (sizes, headers, checksum files, positions)
//   plus the damage readers noted and that is still there: what `wal status` reports;
// - verifyArchiveFiles: every segment and history file read and verified (--read-data);
// - walPathProblems: whether the segments from a backup's start to the archive's end (or to the
//   backup's end) are all there, on the timelines recovery would read them from.
import { open, readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { isKlioError, KlioError } from "../util/errors.ts";
import { formatLsn, historyFileName, segmentNumber, walFileName, type Lsn, type SegmentSize, type Timeline } from "../pg/lsn.ts";
import { parseTimelineHistory } from "../pg/timeline-history.ts";
import { isClusterName, listArchive, walRoot, type ArchivedSegment, type ArchiveListing } from "./archive-layout.ts";
import { IDENTITY_FILE, readState } from "./archive-meta.ts";
import { checkHistoryFile, openClusterArchive, segmentIdentity, type ClusterArchive } from "./archive-reader.ts";
import { noteDamage, readDamageNotes } from "./archive-damage.ts";
import { CHECKSUM_SUFFIX } from "./segment-checksum.ts";
import { LONG_PAGE_HEADER_BYTES, segmentStartProblem } from "./segment-page-header.ts";
import { copyPlainSegment, readChecksumFile } from "./segment-verify.ts";
import { parseStoredSegmentHeader, STORED_HEADER_BYTES } from "./stored-segment.ts";
import { decodeStoredSegmentFile } from "./stored-segment-file.ts";

export interface ArchiveProblem {
  /** The file in the cluster's WAL directory. */
  file: string;
  /** "damaged": klio's file, no longer as written; "foreign": not written by klio for this cluster; "missing": recovery needs it. */
  kind: "damaged" | "foreign" | "missing";
  problem: string;
}

/** A margin for the receiver's state file, rewritten about once a second. */
const STATE_SLACK_MS = 5_000;

/**
 * Cheap checks of every file: names no segment can have, sizes, stored segments' headers, raw
 * and partial segments' first pages and checksum files, complete segments beyond what the
 * receiver ever flushed; and the files readers found damaged (checked again).
 */
export async function inspectArchive(archive: ClusterArchive, listing?: ArchiveListing): Promise<ArchiveProblem[]> {
  const segSize = archive.identity.walSegmentSize;
  const l = listing ?? (await listArchive(archive.dir, segSize));
  const problems: ArchiveProblem[] = l.impossible.map((file) => ({ file, kind: "foreign", problem: `named like a WAL segment, but no segment of ${segSize}-byte WAL has that number` }));
  const state = await readState(archive.dir);
  const stateTime = state ? Date.parse(state.updatedAt) : NaN;
  for (const s of l.segments) {
    const at = path.join(archive.dir, s.file);
    const st = await stat(at).catch(() => undefined);
    if (!st) continue; // moved on (compressed, removed) since the listing
    const problem = await inspectSegmentFile(archive, s, at, st.size).catch((e) => ((e as NodeJS.ErrnoException).code === "ENOENT" ? undefined : (e as Error).message.replace(`${s.file} is damaged: `, "")));
    if (problem) {
      problems.push(typeof problem === "string" ? { file: s.file, kind: "damaged", problem } : problem);
      continue;
    }
    // A complete segment the receiver had not flushed when it last wrote its state, though
    // the file is older than that state: not the receiver's.
    if (state && s.kind !== "partial" && s.timeline >= state.timeline && (s.segno + 1n) * BigInt(segSize) > state.flushedLsn && st.mtimeMs < stateTime - STATE_SLACK_MS)
      problems.push({ file: s.file, kind: "foreign", problem: `lies beyond the receiver's flushed position ${formatLsn(state.flushedLsn)}: the receiver did not write it` });
  }
  for (const t of l.histories) {
    const file = historyFileName(t);
    try {
      checkHistoryFile(await readFile(path.join(archive.dir, file)), file, `history file ${file}`);
    } catch (e) {
      problems.push({ file, kind: "damaged", problem: (e as Error).message });
    }
  }
  const reported = new Set(problems.map((p) => p.file));
  for (const note of await readDamageNotes(archive.dir)) {
    if (reported.has(note.file)) continue;
    const s = l.segments.find((x) => x.file === note.file);
    if (!s) continue; // gone, or a history file (checked above)
    const still = await verifySegmentFile(archive, s);
    if (still) problems.push({ file: s.file, kind: "damaged", problem: still });
  }
  return problems.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
}

async function inspectSegmentFile(archive: ClusterArchive, s: ArchivedSegment, at: string, size: number): Promise<ArchiveProblem | string | undefined> {
  const segSize = archive.identity.walSegmentSize;
  const first = await readHead(at, Math.max(STORED_HEADER_BYTES, LONG_PAGE_HEADER_BYTES));
  if (s.kind === "stored") {
    const h = parseStoredSegmentHeader(first, s.file); // throws "… is damaged: not a klio WAL file"
    if (h.length !== segSize) return `holds ${h.length} bytes of WAL, not a ${segSize}-byte segment`;
    return undefined;
  }
  if (size !== segSize) return `has ${size} bytes, not ${segSize}`;
  const header = segmentStartProblem(first, s.name, archive.identity);
  if (header === "empty" && s.kind === "partial") return undefined;
  if (s.kind === "raw") {
    const checksum = await readChecksumFile(at + CHECKSUM_SUFFIX, s.file);
    if (!checksum && header) return { file: s.file, kind: "foreign", problem: `not a WAL segment of this cluster (it ${header}) and has no checksum file` };
    if (checksum && checksum.length !== segSize) return `its checksum file is for ${checksum.length} bytes, not ${segSize}`;
  }
  if (header) return header === "empty" ? "its first page is all zeros" : `its first page ${header}`;
  return undefined;
}

async function readHead(file: string, n: number): Promise<Uint8Array> {
  const fh = await open(file, "r");
  try {
    const buf = new Uint8Array(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Reads one segment file whole and verifies it: undefined when sound, else why not. */
export async function verifySegmentFile(archive: ClusterArchive, s: ArchivedSegment): Promise<string | undefined> {
  const at = path.join(archive.dir, s.file);
  const id = segmentIdentity(archive, s.name);
  try {
    if (s.kind === "stored") {
      await decodeStoredSegmentFile(at, undefined, id.what, { checkStart: (first) => {
        const p = segmentStartProblem(first, s.name, archive.identity);
        if (p) throw new KlioError("corrupt-wal", `${id.what} is damaged: ${p}`);
      } });
    } else {
      const checksum = s.kind === "raw" ? await readChecksumFile(at + CHECKSUM_SUFFIX, id.what) : undefined;
      await copyPlainSegment(at, undefined, id, { checksum, partial: s.kind === "partial" });
    }
    return undefined;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined; // moved on meanwhile
    if (e instanceof KlioError && e.code === "corrupt-wal") return e.message.replace(`${id.what} is damaged: `, "");
    throw e;
  }
}

/**
 * Every segment and history file read and verified; what is damaged is also noted for
 * `wal status`. `onFile` reports progress (bytes of the file just read).
 */
export async function verifyArchiveFiles(archive: ClusterArchive, listing: ArchiveListing, onFile?: (bytes: number) => void): Promise<ArchiveProblem[]> {
  const problems = (await inspectArchive(archive, listing)).filter((p) => p.kind === "foreign" || !listing.segments.some((s) => s.file === p.file));
  const foreign = new Set(problems.map((p) => p.file));
  for (const s of listing.segments) {
    if (foreign.has(s.file)) continue;
    const problem = await verifySegmentFile(archive, s);
    onFile?.(archive.identity.walSegmentSize);
    if (!problem) continue;
    problems.push({ file: s.file, kind: "damaged", problem });
    await noteDamage(archive.dir, s.file, problem);
  }
  return problems.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
}

/**
 * The segments recovery from `from` (on timeline `timeline`) reads, up to `to` (the backup's
 * end) or the end of the archive, that the archive lacks in complete form (the very last one
 * may be partial: the receiver is still writing it). Recovery reads each segment from the
 * newest timeline of its path whose history starts at or before that segment, as PostgreSQL
 * does (XLogFileReadAnyTLI); the path leads to the newest timeline that descends from
 * `timeline`, as with recovery_target_timeline = latest.
 */
export async function walPathProblems(archive: ClusterArchive, listing: ArchiveListing, from: Lsn, timeline: Timeline, to?: Lsn): Promise<ArchiveProblem[]> {
  return (await walPath(archive, listing, from, timeline, to))
    .filter((p) => p.segment === undefined)
    .map((p) => ({ file: p.name, kind: "missing", problem: `recovery from ${formatLsn(from)} needs it, and the archive does not have it` }));
}

/** The segments of that path in order, each with the archive's file for it (undefined: missing). */
async function walPath(archive: ClusterArchive, listing: ArchiveListing, from: Lsn, timeline: Timeline, to?: Lsn): Promise<{ name: string; segment: ArchivedSegment | undefined }[]> {
  const segSize = archive.identity.walSegmentSize as SegmentSize;
  const steps = await timelinePath(archive, listing, timeline, to === undefined);
  const complete = new Map(listing.segments.filter((s) => s.kind !== "partial").map((s) => [s.name, s]));
  const partial = new Map(listing.segments.filter((s) => s.kind === "partial").map((s) => [s.name, s]));
  const target = steps[steps.length - 1]!;
  const onTarget = listing.segments.filter((s) => s.timeline === target.timeline);
  const last = to !== undefined ? segmentNumber(to > from ? to - 1n : from, segSize) : onTarget.length ? onTarget[onTarget.length - 1]!.segno : segmentNumber(from, segSize);
  const out: { name: string; segment: ArchivedSegment | undefined }[] = [];
  for (let segno = segmentNumber(from, segSize); segno <= last; segno++) {
    const tli = [...steps].reverse().find((t) => segmentNumber(t.begin, segSize) <= segno)!.timeline;
    const name = walFileName(tli, segno, segSize);
    out.push({ name, segment: complete.get(name) ?? (segno === last ? partial.get(name) : undefined) });
  }
  return out;
}

/**
 * What `backup verify` checks of a backup's WAL: every segment from its start to its end is
 * in the archive, and each one reads back whole and verified.
 */
export async function verifyBackupWal(archive: ClusterArchive, from: Lsn, timeline: Timeline, to: Lsn): Promise<ArchiveProblem[]> {
  const listing = await listArchive(archive.dir, archive.identity.walSegmentSize);
  const problems: ArchiveProblem[] = [];
  for (const p of await walPath(archive, listing, from, timeline, to)) {
    if (!p.segment) {
      problems.push({ file: p.name, kind: "missing", problem: "the backup needs it to become consistent, and the archive does not have it" });
      continue;
    }
    const damage = await verifySegmentFile(archive, p.segment);
    if (!damage) continue;
    problems.push({ file: p.segment.file, kind: "damaged", problem: damage });
    await noteDamage(archive.dir, p.segment.file, damage);
  }
  return problems;
}

interface PathStep {
  timeline: Timeline;
  /** Where this timeline begins (its parent's switch point; 0 for the first). */
  begin: Lsn;
}

/** From the first timeline to `timeline`, or (latest) to the newest timeline whose history includes it. */
async function timelinePath(archive: ClusterArchive, listing: ArchiveListing, timeline: Timeline, latest: boolean): Promise<PathStep[]> {
  const newest = [...listing.histories].reverse();
  for (const t of latest ? newest : []) {
    if (t <= timeline) break;
    const steps = await historyPath(archive, t);
    if (steps.some((s) => s.timeline === timeline)) return steps;
  }
  return timeline > 1 && listing.histories.includes(timeline) ? await historyPath(archive, timeline) : [{ timeline, begin: 0n }];
}

async function historyPath(archive: ClusterArchive, t: Timeline): Promise<PathStep[]> {
  const file = historyFileName(t);
  const entries = parseTimelineHistory(await readFile(path.join(archive.dir, file), "utf8"));
  const steps: PathStep[] = [];
  let begin = 0n;
  for (const e of entries) {
    steps.push({ timeline: e.timeline, begin });
    begin = e.switchpoint;
  }
  steps.push({ timeline: t, begin });
  return steps;
}


export interface BackupWalNeed {
  id: string;
  startLsn: Lsn;
  timeline: Timeline;
}

export interface ClusterWalProblem extends ArchiveProblem {
  cluster: string;
  /** Backups whose recovery needs the file (missing or damaged segments on their path). */
  backups: string[];
}

/**
 * The WAL half of `repo check` for every cluster of a local repository: each archive's files
 * (read and verified with readData, else the cheap checks), and every backup's path from its
 * start to the archive's end.
 */
export async function checkRepositoryWal(repoDir: string, backups: Map<string, BackupWalNeed[]>, opts: { readData: boolean; onFile?: (bytes: number) => void }): Promise<ClusterWalProblem[]> {
  const clusters = new Set([...backups.keys(), ...(await archivedClusters(repoDir))]);
  const out: ClusterWalProblem[] = [];
  for (const cluster of [...clusters].sort()) {
    const needs = backups.get(cluster) ?? [];
    let archive: ClusterArchive;
    try {
      archive = await openClusterArchive(repoDir, cluster);
    } catch (e) {
      if (!(isKlioError(e) && e.code === "no-archive")) throw e;
      out.push({ cluster, file: "", kind: "missing", problem: `cluster ${cluster} has backups but no WAL archive: none of them can be restored`, backups: needs.map((b) => b.id) });
      continue;
    }
    const listing = await listArchive(archive.dir, archive.identity.walSegmentSize);
    const files = opts.readData ? await verifyArchiveFiles(archive, listing, opts.onFile) : await inspectArchive(archive, listing);
    const byFile = new Map<string, ClusterWalProblem>(files.map((p) => [p.file, { ...p, cluster, backups: [] }]));
    for (const b of needs) {
      for (const p of await walPathProblems(archive, listing, b.startLsn, b.timeline)) {
        const known = byFile.get(p.file) ?? [...byFile.values()].find((q) => q.file.startsWith(p.file) && q.kind === "damaged");
        if (known) known.backups.push(b.id);
        else byFile.set(p.file, { ...p, cluster, backups: [b.id] });
      }
      // A damaged segment on the path is as bad as a missing one.
      for (const q of byFile.values()) if (q.kind === "damaged" && !q.backups.includes(b.id) && (await isOnPath(archive, listing, b, q.file))) q.backups.push(b.id);
    }
    out.push(...[...byFile.values()].sort((a, b) => (a.file < b.file ? -1 : 1)));
  }
  return out;
}

async function isOnPath(archive: ClusterArchive, listing: ArchiveListing, b: BackupWalNeed, file: string): Promise<boolean> {
  const name = file.slice(0, 24);
  if (!/^[0-9A-F]{24}$/.test(name)) return false;
  const without = { ...listing, segments: listing.segments.filter((s) => s.name !== name) };
  return (await walPathProblems(archive, without, b.startLsn, b.timeline)).some((p) => p.file === name);
}

async function archivedClusters(repoDir: string): Promise<string[]> {
  const names = await readdir(walRoot(repoDir)).catch(() => [] as string[]);
  const out: string[] = [];
  for (const n of names) if (isClusterName(n) && (await stat(path.join(walRoot(repoDir), n, IDENTITY_FILE)).catch(() => undefined))) out.push(n);
  return out;
}
