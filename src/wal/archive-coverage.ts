// Whether the archive holds the WAL a base backup needs: every byte from its start LSN to its
// end LSN, durable. A backup is only recorded once this holds, so that every backup the
// repository shows can be restored.
import { formatLsn, segmentNumber, walFileName, type Lsn, type SegmentSize, type Timeline } from "../pg/lsn.ts";
import { listArchive } from "./archive-layout.ts";
import { readState } from "./archive-meta.ts";

export interface WalCoverage {
  covered: boolean;
  /** The first segment that is not (yet) archived, when not covered. */
  missing?: string;
}

/**
 * Complete segments from the one holding `from` to the one holding the byte before `to`;
 * the last may still be partial if the receiver has made WAL up to `to` durable in it (a
 * backup taken from a standby ends mid-segment, and the primary may take long to fill it).
 */
export async function walCoverage(dir: string, segSize: SegmentSize, timeline: Timeline, from: Lsn, to: Lsn): Promise<WalCoverage> {
  const first = segmentNumber(from, segSize);
  const last = segmentNumber(to > from ? to - 1n : from, segSize);
  const listing = await listArchive(dir, segSize);
  const complete = new Set<bigint>();
  const partial = new Set<bigint>();
  for (const s of listing.segments) {
    if (s.timeline !== timeline || s.segno < first || s.segno > last) continue;
    (s.kind === "partial" ? partial : complete).add(s.segno);
  }
  for (let segno = first; segno <= last; segno++) {
    if (complete.has(segno)) continue;
    if (segno === last && partial.has(segno)) {
      const state = await readState(dir);
      if (state && state.timeline === timeline && state.flushedLsn >= to) continue;
    }
    return { covered: false, missing: walFileName(timeline, segno, segSize) };
  }
  return { covered: true };
}

/** Polls walCoverage until covered; false when `timeoutMs` passes or `signal` aborts first. */
export async function waitForWalCoverage(
  dir: string, segSize: SegmentSize, timeline: Timeline, from: Lsn, to: Lsn,
  opts: { timeoutMs: number; signal: AbortSignal; pollMs?: number; onWait?: (missing: string) => void },
): Promise<WalCoverage> {
  const deadline = Date.now() + opts.timeoutMs;
  let told = "";
  for (;;) {
    const c = await walCoverage(dir, segSize, timeline, from, to);
    if (c.covered || Date.now() >= deadline || opts.signal.aborted) return c;
    if (c.missing !== told) {
      told = c.missing!;
      opts.onWait?.(told);
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 250));
  }
}

export function describeRange(from: Lsn, to: Lsn): string {
  return `${formatLsn(from)} to ${formatLsn(to)}`;
}
