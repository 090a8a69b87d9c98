// The small metadata files beside a cluster's WAL: the identity it was created for
// (written once), the receiver's last reported position (rewritten, informative only:
// the segment files are the truth), the gaps it could not fill and the timeline forks it
// found (both append-only, fsync'd).
import { open, readFile, writeFile, rename } from "node:fs/promises";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import { writeFileDurable } from "../util/durable-fs.ts";
import { formatLsn, isValidSegmentSize, parseLsn, type Lsn, type Timeline } from "../pg/lsn.ts";

export const IDENTITY_FILE = "cluster.json";
export const STATE_FILE = "state.json";
export const GAPS_FILE = "gaps.jsonl";
export const FORKS_FILE = "forks.jsonl";

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
  await appendLine(dir, GAPS_FILE, { ...gap, from: formatLsn(gap.from), to: formatLsn(gap.to) });
}

export async function readGaps(dir: string): Promise<WalGap[]> {
  return readLines(dir, GAPS_FILE, (g) => ({ ...(g as unknown as WalGap), from: parseLsn(g.from as string), to: parseLsn(g.to as string) }));
}

/**
 * The archive holds WAL of `timeline` past the point where the server it now follows left
 * that timeline: the old primary's, which the new one never had (a failover to a standby
 * that was behind). That WAL stays under the old timeline's names.
 */
export interface TimelineFork {
  timeline: Timeline;
  /** Where the new primary's history leaves `timeline` for `nextTimeline`. */
  forkLsn: Lsn;
  nextTimeline: Timeline;
  /** The end of `timeline`'s WAL in the archive when the fork was found. */
  archivedEnd: Lsn;
  detectedAt: string;
  /** The server whose history showed the fork. */
  server: string;
}

/** Records `fork` unless the same one (timeline and fork point) is recorded already. */
export async function recordFork(dir: string, fork: TimelineFork): Promise<boolean> {
  if ((await readForks(dir)).some((f) => f.timeline === fork.timeline && f.forkLsn === fork.forkLsn)) return false;
  await appendLine(dir, FORKS_FILE, { ...fork, forkLsn: formatLsn(fork.forkLsn), archivedEnd: formatLsn(fork.archivedEnd) });
  return true;
}

export async function readForks(dir: string): Promise<TimelineFork[]> {
  return readLines(dir, FORKS_FILE, (f) => ({ ...(f as unknown as TimelineFork), forkLsn: parseLsn(f.forkLsn as string), archivedEnd: parseLsn(f.archivedEnd as string) }));
}

async function appendLine(dir: string, file: string, record: object): Promise<void> {
  const fh = await open(path.join(dir, file), "a+", 0o640);
  try {
    // After a line torn by a crash, the record starts on a line of its own.
    const size = (await fh.stat()).size;
    const last = new Uint8Array(1);
    const torn = size > 0 && (await fh.read(last, 0, 1, size - 1)).bytesRead === 1 && last[0] !== 0x0a;
    await fh.write((torn ? "\n" : "") + JSON.stringify(record) + "\n");
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The records of an append-only file; a line torn by a crash while appending is skipped (the next start records it again). */
async function readLines<T>(dir: string, file: string, parse: (record: Record<string, unknown>) => T): Promise<T[]> {
  let text: string;
  try {
    text = await readFile(path.join(dir, file), "utf8");
  } catch {
    return [];
  }
  const out: T[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      out.push(parse(JSON.parse(line) as Record<string, unknown>));
    } catch {
      // torn
    }
  }
  return out;
}
