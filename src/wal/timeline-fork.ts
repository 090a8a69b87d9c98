// Where the archive's timeline and a server's history part: after a failover the receiver
// follows the new primary, whose history says where it left the archive's timeline. WAL the
// archive holds past that point is the old primary's own (a failover to a standby that was
// behind): kept under the old timeline's names, recorded, never overwritten.
import { open } from "node:fs/promises";
import path from "node:path";
import type { Lsn, SegmentSize, Timeline } from "../pg/lsn.ts";
import type { TimelineHistoryEntry } from "../pg/timeline-history.ts";
import type { ArchiveListing } from "./archive-layout.ts";

/**
 * Where the history of a server on `serverTimeline` leaves `timeline`, and for which timeline;
 * null when `timeline` is not among its ancestors.
 */
export function branchOf(history: TimelineHistoryEntry[], serverTimeline: Timeline, timeline: Timeline): { switchpoint: Lsn; next: Timeline } | null {
  const i = history.findIndex((e) => e.timeline === timeline);
  if (i < 0) return null;
  return { switchpoint: history[i]!.switchpoint, next: history[i + 1]?.timeline ?? serverTimeline };
}

/**
 * The end of `timeline`'s WAL in the archive: the end of its newest segment, or for a partial
 * one, just past its last byte written (the receiver zero-fills a partial segment before
 * writing it; WAL records start on 8-byte boundaries). 0n when it has none.
 */
export async function archivedEnd(dir: string, listing: ArchiveListing, segSize: SegmentSize, timeline: Timeline): Promise<Lsn> {
  const last = listing.segments.filter((s) => s.timeline === timeline).at(-1);
  if (!last) return 0n;
  const start = last.segno * BigInt(segSize);
  if (last.kind !== "partial") return start + BigInt(segSize);
  return start + BigInt(await writtenLength(path.join(dir, last.file)));
}

/** Bytes of `file` up to its last one that is not zero, rounded up to 8. */
async function writtenLength(file: string): Promise<number> {
  const fh = await open(file, "r");
  try {
    const size = (await fh.stat()).size;
    const buf = new Uint8Array(1024 * 1024);
    for (let end = size; end > 0; ) {
      const from = Math.max(0, end - buf.length);
      const { bytesRead } = await fh.read(buf, 0, end - from, from);
      for (let i = bytesRead - 1; i >= 0; i--) if (buf[i] !== 0) return Math.min(size, Math.ceil((from + i + 1) / 8) * 8);
      end = from;
    }
    return 0;
  } finally {
    await fh.close();
  }
}
