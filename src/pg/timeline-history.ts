// Timeline history files (NNNNNNNN.history): one line per ancestor timeline,
// "parentTLI <tab> switchpoint LSN <tab> reason". Used to follow a promoted standby.
import { KlioError } from "../util/errors.ts";
import { parseLsn, type Lsn, type Timeline } from "./lsn.ts";

export interface TimelineHistoryEntry {
  timeline: Timeline;
  /** The LSN at which `timeline` ended and its child began. */
  switchpoint: Lsn;
  reason: string;
}

export function parseTimelineHistory(text: string): TimelineHistoryEntry[] {
  const entries: TimelineHistoryEntry[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([0-9]+)\s+([0-9A-Fa-f]+\/[0-9A-Fa-f]+)\s*(.*)$/.exec(line);
    if (!m) throw new KlioError("bad-history", `invalid line in timeline history file: "${line}"`);
    const timeline = Number(m[1]);
    if (entries.length && timeline <= entries[entries.length - 1]!.timeline)
      throw new KlioError("bad-history", `timeline ids in a history file must increase: "${line}"`);
    entries.push({ timeline, switchpoint: parseLsn(m[2]!), reason: m[3]! });
  }
  return entries;
}
