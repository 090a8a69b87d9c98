// The small metadata files beside a cluster's WAL: the identity it was created for
// (written once), the receiver's last reported position (rewritten, informative only:
// the segment files are the truth) and the gaps it could not fill (append-only, fsync'd).
import { open, readFile, writeFile, rename } from "node:fs/promises";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import { writeFileDurable } from "../util/durable-fs.ts";
import { formatLsn, isValidSegmentSize, parseLsn, type Lsn, type Timeline } from "../pg/lsn.ts";

export const IDENTITY_FILE = "cluster.json";
export const STATE_FILE = "state.json";
export const GAPS_FILE = "gaps.jsonl";

export interface ClusterIdentity {
  format: 1;
  cluster: string;
  systemIdentifier: string;
  walSegmentSize: number;
  createdAt: string;
}

export async function readIdentity(dir: string): Promise<ClusterIdentity | undefined> {
  let text: string;
  try {
    text = await readFile(path.join(dir, IDENTITY_FILE), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  return parseIdentity(text, path.join(dir, IDENTITY_FILE));
}

/** A cluster identity file's text, checked; `where` names it in errors. */
export function parseIdentity(text: string, where: string): ClusterIdentity {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new KlioError("bad-archive", `${where} is not valid JSON`);
  }
  const id = parsed as Partial<ClusterIdentity>;
  if (id.format !== 1 || typeof id.systemIdentifier !== "string" || !/^[0-9]+$/.test(id.systemIdentifier) ||
      typeof id.walSegmentSize !== "number" || !isValidSegmentSize(id.walSegmentSize) || typeof id.cluster !== "string")
    throw new KlioError("bad-archive", `${where} is not a klio cluster identity (format 1)`);
  return id as ClusterIdentity;
}

export async function writeIdentity(dir: string, id: ClusterIdentity): Promise<void> {
  await writeFileDurable(path.join(dir, IDENTITY_FILE), JSON.stringify(id, null, 2) + "\n");
}

export interface ReceiverState {
  timeline: Timeline;
  /** Written to the archive (maybe not yet fsync'd). */
  receivedLsn: Lsn;
  /** fsync'd and reported to the primary as flushed. */
  flushedLsn: Lsn;
  /** Newest WAL position the server said it has. */
  serverWalEnd: Lsn;
  updatedAt: string;
  slot?: string;
  connectedTo?: string;
}

interface ReceiverStateJson extends Omit<ReceiverState, "receivedLsn" | "flushedLsn" | "serverWalEnd"> {
  receivedLsn: string;
  flushedLsn: string;
  serverWalEnd: string;
}

/** Rewritten about once a second; not fsync'd: losing it loses nothing the segments do not say. */
export async function writeState(dir: string, s: ReceiverState): Promise<void> {
  const json: ReceiverStateJson = { ...s, receivedLsn: formatLsn(s.receivedLsn), flushedLsn: formatLsn(s.flushedLsn), serverWalEnd: formatLsn(s.serverWalEnd) };
  const tmp = path.join(dir, `${STATE_FILE}.tmp`);
  await writeFile(tmp, JSON.stringify(json, null, 2) + "\n");
  await rename(tmp, path.join(dir, STATE_FILE));
}

export async function readState(dir: string): Promise<ReceiverState | undefined> {
  try {
    const j = JSON.parse(await readFile(path.join(dir, STATE_FILE), "utf8")) as ReceiverStateJson;
    return { ...j, receivedLsn: parseLsn(j.receivedLsn), flushedLsn: parseLsn(j.flushedLsn), serverWalEnd: parseLsn(j.serverWalEnd) };
  } catch {
    return undefined; // absent or torn by a crash: informative only
  }
}

export interface WalGap {
  timeline: Timeline;
  /** First missing byte. */
  from: Lsn;
  /** First byte archived again after the gap. */
  to: Lsn;
  detectedAt: string;
  reason: string;
}

export async function recordGap(dir: string, gap: WalGap): Promise<void> {
  const fh = await open(path.join(dir, GAPS_FILE), "a", 0o640);
  try {
    await fh.write(JSON.stringify({ ...gap, from: formatLsn(gap.from), to: formatLsn(gap.to) }) + "\n");
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function readGaps(dir: string): Promise<WalGap[]> {
  let text: string;
  try {
    text = await readFile(path.join(dir, GAPS_FILE), "utf8");
  } catch {
    return [];
  }
  const gaps: WalGap[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const g = JSON.parse(line);
      gaps.push({ ...g, from: parseLsn(g.from), to: parseLsn(g.to) });
    } catch {
      // a line torn by a crash while appending: the next start records the gap again
    }
  }
  return gaps;
}
