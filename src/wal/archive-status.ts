// What `klio wal status` reports: the receiver's last position, the segments held per
// timeline, every gap, whether the receiver recorded it or the listing shows a hole, and the
// files that are damaged or not the receiver's (archive-verify.ts; with readData, every file
// read and verified).
import { formatLsn, walFileName, type Timeline } from "../pg/lsn.ts";
import { listArchive } from "./archive-layout.ts";
import { readForks, readGaps, readState } from "./archive-meta.ts";
import type { ClusterArchive } from "./archive-reader.ts";
import { inspectArchive, verifyArchiveFiles, type ArchiveProblem } from "./archive-verify.ts";

export interface WalStatus {
  cluster: string;
  systemIdentifier: string;
  walSegmentSize: number;
  timeline: Timeline | null;
  receivedLsn: string | null;
  flushedLsn: string | null;
  serverWalEnd: string | null;
  /** Bytes the server had that the archive had not flushed, at the last status update. */
  lagBytes: number | null;
  updatedAt: string | null;
  segments: { stored: number; uncompressed: number; partial: number };
  firstSegment: string | null;
  lastSegment: string | null;
  timelines: Timeline[];
  histories: Timeline[];
  gaps: { timeline: Timeline; from: string; to: string; reason: string; detectedAt?: string }[];
  /** Timelines the archive holds past the point where a new primary left them (archive-meta.ts, TimelineFork). */
  forks: { timeline: Timeline; forkLsn: string; nextTimeline: Timeline; archivedEnd: string; bytesPastFork: number; detectedAt: string; server: string }[];
  /** Damaged files, and files named like WAL that the receiver did not write: never served. */
  problems: ArchiveProblem[];
}

export async function walStatus(archive: ClusterArchive, opts: { readData?: boolean } = {}): Promise<WalStatus> {
  const segSize = archive.identity.walSegmentSize;
  const listing = await listArchive(archive.dir, segSize);
  const state = await readState(archive.dir);
  const recorded = await readGaps(archive.dir);
  const segs = listing.segments;
  const gaps: WalStatus["gaps"] = recorded.map((g) => ({ timeline: g.timeline, from: formatLsn(g.from), to: formatLsn(g.to), reason: g.reason, detectedAt: g.detectedAt }));
  // A hole between consecutive segment numbers (across timelines, a switch repeats a number).
  for (let i = 1; i < segs.length; i++) {
    const prev = segs[i - 1]!;
    const cur = segs[i]!;
    if (cur.segno > prev.segno + 1n) {
      const from = (prev.segno + 1n) * BigInt(segSize);
      const to = cur.segno * BigInt(segSize);
      if (!recorded.some((g) => g.from <= from && g.to >= to))
        gaps.push({ timeline: cur.timeline, from: formatLsn(from), to: formatLsn(to), reason: `segments ${walFileName(cur.timeline, prev.segno + 1n, segSize)} to ${walFileName(cur.timeline, cur.segno - 1n, segSize)} are missing` });
    }
  }
  const count = (kind: string) => segs.filter((s) => s.kind === kind).length;
  return {
    cluster: archive.cluster,
    systemIdentifier: archive.identity.systemIdentifier,
    walSegmentSize: segSize,
    timeline: state?.timeline ?? segs[segs.length - 1]?.timeline ?? null,
    receivedLsn: state ? formatLsn(state.receivedLsn) : null,
    flushedLsn: state ? formatLsn(state.flushedLsn) : null,
    serverWalEnd: state ? formatLsn(state.serverWalEnd) : null,
    lagBytes: state ? Number(state.serverWalEnd > state.flushedLsn ? state.serverWalEnd - state.flushedLsn : 0n) : null,
    updatedAt: state?.updatedAt ?? null,
    segments: { stored: count("stored"), uncompressed: count("raw"), partial: count("partial") },
    firstSegment: segs[0]?.name ?? null,
    lastSegment: segs[segs.length - 1]?.name ?? null,
    timelines: [...new Set(segs.map((s) => s.timeline))].sort((a, b) => a - b),
    histories: listing.histories,
    gaps,
    forks: (await readForks(archive.dir)).map((f) => ({
      timeline: f.timeline, forkLsn: formatLsn(f.forkLsn), nextTimeline: f.nextTimeline, archivedEnd: formatLsn(f.archivedEnd),
      bytesPastFork: Number(f.archivedEnd - f.forkLsn), detectedAt: f.detectedAt, server: f.server,
    })),
    problems: opts.readData ? await verifyArchiveFiles(archive, listing) : await inspectArchive(archive, listing),
  };
}
