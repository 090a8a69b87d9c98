// The WAL receiver: streams a cluster's WAL over physical replication into the archive.
//
// The correctness argument is the order in receiveLoop(): write what arrived, make it
// durable (fdatasync), and only then report it as flushed. The flush position the primary
// sees, and so its slot's restart_lsn, is never ahead of what is on disk here.
import { statfs } from "node:fs/promises";
import path from "node:path";
import { KlioError, isDiskFull } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { writeFileDurable } from "../util/durable-fs.ts";
import { connect, type CopyStream, type ReplicationConnection, type ResultSet } from "../pg/replication-connection.ts";
import { describeConnInfo, type ConnInfo } from "../pg/conninfo.ts";
import { PgServerError } from "../pg/server-error.ts";
import { formatLsn, historyFileName, segmentStart, type Lsn, type SegmentSize, type Timeline } from "../pg/lsn.ts";
import { parseReplicationMessage, standbyStatusUpdate } from "../pg/replication-messages.ts";
import { parseTimelineHistory } from "../pg/timeline-history.ts";
import {
  createPhysicalSlot, identifySystem, nextTimeline, readReplicationSlot, startReplication, timelineHistory, walSegmentSize,
  type SystemIdentity,
} from "../pg/replication-commands.ts";
import { clusterWalDir, listArchive, type ArchiveListing } from "./archive-layout.ts";
import { readGaps, readIdentity, recordFork, recordGap, writeIdentity, writeState, type ReceiverState, type TimelineFork, type WalGap } from "./archive-meta.ts";
import { archivedEnd, branchOf } from "./timeline-fork.ts";
import { createSegmentWriter, type SegmentWriter } from "./segment-writer.ts";
import { startCompressor, type Compressor } from "./compressor.ts";
import { acquireReceiverLock } from "./receiver-lock.ts";
import { sleep } from "../util/sleep.ts";
import { makeDirectories } from "../util/make-directories.ts";

export interface ReceiverOptions {
  repo: string;
  cluster: string;
  conninfo: ConnInfo;
  slot: string;
  createSlot: boolean;
  /** fsync and reply after every batch (for synchronous_standby_names). */
  synchronous: boolean;
  log: Logger;
  signal: AbortSignal;
  now?: () => number;
  /** Reconnect backoff, doubled per failed attempt. */
  backoff?: { initialMs: number; maxMs: number };
  /** With the archive's file system full, how often to try again (default 5 s). */
  diskFullRetryMs?: number;
  /**
   * Longest silence between status updates (default 10 s, like pg_receivewal -s). An idle
   * update asks the server to answer; no answer for three intervals means the connection is
   * dead (a silent network cut), and the receiver reconnects.
   */
  statusIntervalMs?: number;
  /** Stop once WAL up to this position is durable (like pg_receivewal --endpos). */
  endpos?: Lsn;
  /** Seen after each status update sent to the server (tests and the daemon watch it). */
  onStatus?: (s: ReceiverState) => void;
}

interface Pace {
  catchingUp: boolean;
}
/** Further behind the server than this, the receiver is draining a backlog. */
const CATCHING_UP_BYTES = 64n * 1024n * 1024n;

/** Errors that no retry can fix: the operator must act. */
const FATAL = new Set(["system-id-mismatch", "segment-size-mismatch", "slot-missing", "slot-wrong-type", "bad-conninfo", "usage", "bad-archive", "busy", "bad-segment-size"]);

function isFatal(e: unknown, everConnected: boolean): boolean {
  if (e instanceof PgServerError) return !everConnected && e.sqlstate.startsWith("28"); // authentication
  return e instanceof KlioError && FATAL.has(e.code);
}

/** Runs until `signal` aborts; reconnects with backoff; throws only what needs an operator. */
export async function runReceiver(opts: ReceiverOptions): Promise<void> {
  const dir = clusterWalDir(opts.repo, opts.cluster);
  await makeDirectories(dir, 0o750);
  const release = await acquireReceiverLock(dir, opts.cluster);
  // Shared with the compressor: true while the server is far ahead of the archive.
  const pace = { catchingUp: false };
  const compressor = startCompressor(dir, opts.log, () => pace.catchingUp && !opts.signal.aborted);
  compressor.wake(); // segments completed before a crash
  // Capped at 5 s, as pg_receivewal retries: after a failover the new primary is found within seconds.
  const backoff = opts.backoff ?? { initialMs: 1000, maxMs: 5000 };
  let attempt = 0;
  let everConnected = false;
  let diskFullSaid = false;
  try {
    while (!opts.signal.aborted) {
      try {
        if ((await streamSession(opts, dir, compressor, pace, () => {
          everConnected = true;
          attempt = 0;
          diskFullSaid = false;
        })) === "stopped") break;
      } catch (e) {
        pace.catchingUp = false;
        if (isFatal(e, everConnected)) throw e;
        if (opts.signal.aborted) break;
        if (isDiskFull(e)) {
          // Nothing unwritten was acknowledged: the server keeps that WAL in the slot until
          // there is room again. Try again soon, whatever the backoff: space may come back any
          // time. Said once per episode (until streaming resumes), not at every try.
          const retry = opts.diskFullRetryMs ?? 5000;
          if (!diskFullSaid) {
            diskFullSaid = true;
            opts.log.error("wal.disk_full", {
              dir, retry_in_ms: retry,
              error: `the archive's file system is full (${e instanceof Error ? e.message : String(e)}): WAL is not acknowledged, ${describeConnInfo(opts.conninfo)} keeps it in slot ${opts.slot}; streaming resumes once space is freed`,
            });
          }
          // Reconnecting is pointless until there is room for a segment or two: the server is
          // left alone meanwhile, and the state stays "disk-full" instead of flapping.
          do await sleep(retry, opts.signal);
          while (!opts.signal.aborted && !(await hasRoom(dir)));
          continue;
        }
        opts.log.warn("wal.disconnected", { error: e instanceof Error ? e.message : String(e) });
      }
      if (opts.signal.aborted) break;
      const delay = Math.min(backoff.maxMs, backoff.initialMs * 2 ** attempt++);
      opts.log.info("wal.reconnecting", { in_ms: delay });
      await sleep(delay, opts.signal);
    }
  } finally {
    await compressor.drain();
    await release();
  }
}

/** Room to write on: free space for two 16 MiB segments (true where the file system cannot say). */
async function hasRoom(dir: string): Promise<boolean> {
  try {
    const st = await statfs(dir);
    return Number(st.bavail) * Number(st.bsize) >= 32 * 1024 * 1024;
  } catch {
    return true;
  }
}

/**
 * Where to resume: on the newest timeline, the start of its newest partial segment, or just
 * after its newest complete one; past a recorded gap that begins there (the server no longer
 * has that WAL). An older timeline may reach further (the old primary's WAL past a fork):
 * it is not followed.
 */
export function resumePoint(listing: ArchiveListing, segSize: SegmentSize, gaps: WalGap[]): { timeline: Timeline; start: Lsn } | undefined {
  const newest = Math.max(...listing.segments.map((s) => s.timeline));
  const last = listing.segments.filter((s) => s.timeline === newest).at(-1);
  let pos: { timeline: Timeline; start: Lsn } | undefined;
  if (last) pos = { timeline: last.timeline, start: (last.kind === "partial" ? last.segno : last.segno + 1n) * BigInt(segSize) };
  for (const gap of gaps) {
    if (pos && gap.from <= pos.start && gap.to > pos.start) pos = { timeline: gap.timeline, start: gap.to };
  }
  return pos;
}

async function checkIdentity(dir: string, cluster: string, ident: SystemIdentity, segSize: SegmentSize, where: string): Promise<void> {
  const known = await readIdentity(dir);
  if (!known) {
    await writeIdentity(dir, { format: 1, cluster, systemIdentifier: ident.systemIdentifier, walSegmentSize: segSize, createdAt: new Date().toISOString() });
    return;
  }
  if (known.systemIdentifier !== ident.systemIdentifier)
    throw new KlioError("system-id-mismatch",
      `${where} has system identifier ${ident.systemIdentifier}, but the archive of cluster ${cluster} belongs to ${known.systemIdentifier}: refusing to mix WAL of two clusters`);
  if (known.walSegmentSize !== segSize)
    throw new KlioError("segment-size-mismatch", `${where} uses ${segSize}-byte WAL segments, but the archive of cluster ${cluster} holds ${known.walSegmentSize}-byte segments`);
}

/** Archives history files of the server's timelines that the archive lacks. */
async function archiveHistories(conn: ReplicationConnection, dir: string, upTo: Timeline, have: Set<Timeline>, log: Logger): Promise<void> {
  for (let tli = 2; tli <= upTo; tli++) {
    if (have.has(tli)) continue;
    try {
      const { content } = await timelineHistory(conn, tli);
      // Refuse to archive something recovery could not read.
      parseTimelineHistory(new TextDecoder().decode(content));
      await writeFileDurable(path.join(dir, historyFileName(tli)), content);
      have.add(tli);
      log.info("wal.history_archived", { timeline: tli });
    } catch (e) {
      // A timeline that is not an ancestor of the server's own has no history file there.
      if (!(e instanceof PgServerError) || tli === upTo) throw e;
    }
  }
}

/**
 * Where to stream from on a server whose timeline is not the archive's (a promoted standby):
 * on in the archive's timeline when the archive ends before the server's history leaves it
 * (the server streams the rest, then switches); otherwise the archive holds the old primary's
 * WAL past the fork, which stays as it is, recorded and logged, and the server's next
 * timeline is streamed from the segment holding the fork point, as a restarted standby would.
 */
async function followHistory(
  conn: ReplicationConnection, opts: ReceiverOptions, dir: string, listing: ArchiveListing, segSize: SegmentSize,
  serverTimeline: Timeline, pos: { timeline: Timeline; start: Lsn },
): Promise<{ timeline: Timeline; start: Lsn }> {
  const where = conn.server;
  const unrelated = () => new KlioError("timeline-unrelated",
    `${where} is on timeline ${serverTimeline}, whose history does not hold timeline ${pos.timeline} that the archive of ${opts.cluster} follows: not the current primary of this cluster's timeline`);
  if (pos.timeline > serverTimeline) throw unrelated();
  const history = parseTimelineHistory(new TextDecoder().decode((await timelineHistory(conn, serverTimeline)).content));
  const branch = branchOf(history, serverTimeline, pos.timeline);
  if (!branch) throw unrelated();
  const end = await archivedEnd(dir, listing, segSize, pos.timeline);
  if (end <= branch.switchpoint) return pos;
  const fork: TimelineFork = {
    timeline: pos.timeline, forkLsn: branch.switchpoint, nextTimeline: branch.next, archivedEnd: end, detectedAt: new Date().toISOString(), server: where,
  };
  if (await recordFork(dir, fork)) {
    opts.log.warn("wal.timeline_fork", {
      timeline: fork.timeline, fork_lsn: formatLsn(fork.forkLsn), next_timeline: fork.nextTimeline, archived_end: formatLsn(end),
      bytes_past_fork: Number(end - fork.forkLsn), server: where,
      note: `the archive keeps timeline ${fork.timeline}'s WAL past the fork (restore it with --target-timeline ${fork.timeline})`,
    });
  }
  return { timeline: branch.next, start: segmentStart(branch.switchpoint, segSize) };
}

/** One connection's life: identify, pick the start, stream timeline after timeline. */
async function streamSession(opts: ReceiverOptions, dir: string, compressor: Compressor, pace: Pace, onStreaming: () => void): Promise<"stopped" | "reconnect"> {
  // The signal may interrupt connecting; once connected, receiveLoop stops on it gracefully
  // (flush, report the last durable position), which a torn-down socket would prevent.
  const connecting = new AbortController();
  const interrupt = () => connecting.abort(opts.signal.reason);
  opts.signal.addEventListener("abort", interrupt, { once: true });
  let conn: ReplicationConnection;
  let writer: SegmentWriter | undefined;
  try {
    conn = await connect(opts.conninfo, { replication: "true", signal: connecting.signal });
  } finally {
    opts.signal.removeEventListener("abort", interrupt);
  }
  // Of a connection string's servers, the one that answered.
  const where = conn.server;
  try {
    const ident = await identifySystem(conn);
    const segSize = await walSegmentSize(conn);
    await checkIdentity(dir, opts.cluster, ident, segSize, where);
    if (opts.createSlot && (await createPhysicalSlot(conn, opts.slot)))
      opts.log.info("wal.slot_created", { slot: opts.slot });
    const slot = await readReplicationSlot(conn, opts.slot);
    if (!slot) throw new KlioError("slot-missing", `replication slot ${opts.slot} does not exist on ${where}: create it with --create-slot`);

    const listing = await listArchive(dir, segSize);
    const histories = new Set(listing.histories);
    await archiveHistories(conn, dir, ident.timeline, histories, opts.log);
    let pos = resumePoint(listing, segSize, await readGaps(dir)) ?? {
      timeline: slot.restartTimeline ?? ident.timeline,
      start: segmentStart(slot.restartLsn ?? ident.xlogpos, segSize),
    };
    if (pos.timeline !== ident.timeline) pos = await followHistory(conn, opts, dir, listing, segSize, ident.timeline, pos);
    writer = createSegmentWriter(dir, segSize, (name) => {
      opts.log.info("wal.segment_archived", { segment: name });
      compressor.wake();
    });
    for (;;) {
      const progress = { written: pos.start };
      let ended: ResultSet[] | "stopped";
      try {
        const copy = await startReplication(conn, { slot: opts.slot, start: pos.start, timeline: pos.timeline });
        opts.log.info("wal.streaming", { from: formatLsn(pos.start), timeline: pos.timeline, server: where, synchronous: opts.synchronous });
        onStreaming();
        ended = await receiveLoop(opts, dir, copy, writer, pos, progress, where, pace);
      } catch (e) {
        if (!(e instanceof PgServerError) || e.sqlstate !== "58P01") throw e;
        // The server no longer has the WAL we need: record the hole loudly, never paper over
        // it. The next session resumes after it (resumePoint reads the recorded gaps).
        writer.closePartial();
        // Resume where the server's WAL starts again: the slot's restart_lsn, or failing that
        // (a slot older than the hole) the server's current position.
        const from = progress.written;
        const candidates = [slot.restartLsn, ident.xlogpos].map((l) => (l === undefined ? 0n : segmentStart(l, segSize)));
        const to = candidates.find((l) => l > from);
        if (to === undefined) throw e; // nothing to resume from yet: retry later, record nothing
        const gap = { timeline: pos.timeline, from, to, detectedAt: new Date().toISOString(), reason: e.message };
        await recordGap(dir, gap);
        opts.log.error("wal.gap", { timeline: gap.timeline, from: formatLsn(gap.from), to: formatLsn(to), reason: e.message });
        throw new KlioError("wal-gap", `WAL from ${formatLsn(gap.from)} to ${formatLsn(to)} is missing on ${where}: recorded as a gap`);
      }
      if (ended === "stopped") return "stopped";
      const next = nextTimeline(ended);
      if (!next) return "reconnect"; // the server ended the stream without naming a next timeline
      await archiveHistories(conn, dir, next.timeline, histories, opts.log);
      opts.log.info("wal.timeline_switch", { from_timeline: pos.timeline, timeline: next.timeline, at: formatLsn(next.start) });
      // Like pg_receivewal: the new timeline's first segment is streamed from its start,
      // since the promoted server's copy of it holds the old timeline's bytes before the switch.
      pos = { timeline: next.timeline, start: segmentStart(next.start, segSize) };
    }
  } catch (e) {
    if (e instanceof PgServerError && e.sqlstate === "55006")
      throw new KlioError("slot-busy", `${e.message}: an earlier connection of ours that ${where} has not yet noticed is dead (it notices after wal_sender_timeout), or another receiver`, { cause: e });
    throw e;
  } finally {
    // What was written is kept (fsync'd) as a partial segment; the next session resumes there.
    try {
      writer?.closePartial();
    } catch (e) {
      opts.log.error("wal.close_failed", { error: String(e) });
    }
    await conn.close().catch(() => conn.destroy());
  }
}

/**
 * Receives until the server ends the timeline (returns the result sets that follow, which
 * name the next timeline) or until the signal aborts (returns "stopped").
 */
async function receiveLoop(
  opts: ReceiverOptions, dir: string, copy: CopyStream, writer: SegmentWriter,
  pos: { timeline: Timeline; start: Lsn }, progress: { written: Lsn }, where: string, pace: Pace,
): Promise<ResultSet[] | "stopped"> {
  const now = opts.now ?? Date.now;
  const interval = opts.statusIntervalMs ?? 10_000;
  let written = pos.start;
  let flushed = pos.start;
  let serverWalEnd = pos.start;
  let lastStatusAt = 0;
  let lastHeardAt = now();
  let lastFlushAt = now();
  let lastStateAt = 0;
  let onAbort = () => {};
  const stopped = new Promise<"stopped">((resolve) => {
    onAbort = () => resolve("stopped");
    if (opts.signal.aborted) resolve("stopped");
    opts.signal.addEventListener("abort", onAbort, { once: true });
  });

  const state = (): ReceiverState => ({
    timeline: pos.timeline, receivedLsn: written, flushedLsn: flushed, serverWalEnd, updatedAt: new Date(now()).toISOString(), slot: opts.slot, connectedTo: where,
  });
  const sendStatus = async (askForReply = false) => {
    await copy.write(standbyStatusUpdate(written, flushed, now(), askForReply));
    lastStatusAt = now();
    opts.onStatus?.(state());
    if (lastStatusAt - lastStateAt >= 1000) {
      lastStateAt = lastStatusAt;
      await writeState(dir, state()).catch(() => {});
    }
  };

  try {
    return await receiveBatches();
  } finally {
    pace.catchingUp = false;
    // One listener per stream; a receiver reconnecting for days must not pile them up.
    opts.signal.removeEventListener("abort", onAbort);
  }

  async function receiveBatches(): Promise<ResultSet[] | "stopped"> {
    for (;;) {
      // Wake for the next duty: the 1 s flush of unsynced WAL, or the periodic status update.
      const untilStatus = interval - (now() - lastStatusAt);
      const untilFlush = writer.dirty ? 1000 - (now() - lastFlushAt) : Infinity;
      const timeout = Math.max(0, Math.min(untilStatus, untilFlush));
      const pending = copy.read(timeout);
      const batch = await Promise.race([pending, stopped]);
      if (batch === "stopped" || (opts.endpos !== undefined && flushed >= opts.endpos)) {
        pending.catch(() => {});
        writer.closePartial();
        flushed = written;
        await sendStatus().catch(() => {});
        await writeState(dir, state()).catch(() => {});
        await finishQuietly(copy);
        return "stopped" as const;
      }
      if (batch === "end") {
        // The server finished this timeline: everything of it is written; make it durable.
        writer.closePartial();
        flushed = written;
        const results = await copy.finish();
        opts.onStatus?.(state());
        return results;
      }

      // 1. write what arrived
      let replyRequested = false;
      let runStart: Lsn | undefined;
      const run: Uint8Array[] = [];
      if (batch !== "timeout") {
        lastHeardAt = now();
        for (const payload of batch) {
          const msg = parseReplicationMessage(payload);
          if (msg.kind === "keepalive") {
            replyRequested ||= msg.replyRequested;
            if (msg.serverWalEnd > serverWalEnd) serverWalEnd = msg.serverWalEnd;
            continue;
          }
          if (msg.start !== written)
            throw new KlioError("pg-protocol", `WAL stream from ${where} jumped from ${formatLsn(written)} to ${formatLsn(msg.start)}`);
          runStart ??= msg.start;
          run.push(msg.data);
          written += BigInt(msg.data.length);
          progress.written = written;
          if (msg.serverWalEnd > serverWalEnd) serverWalEnd = msg.serverWalEnd;
        }
        if (runStart !== undefined) writer.write(pos.timeline, runStart, run);
        pace.catchingUp = serverWalEnd - written > CATCHING_UP_BYTES;
      }

      // 2. make it durable: after every batch in synchronous mode, at least once a second otherwise
      const progressed = written > flushed;
      const atEnd = opts.endpos !== undefined && written >= opts.endpos;
      if (writer.dirty && (opts.synchronous || atEnd || now() - lastFlushAt >= 1000)) {
        writer.flush();
        lastFlushAt = now();
      }
      // A segment completed by this batch was fsync'd on completion.
      if (!writer.dirty) flushed = written;

      // 3. only then report it
      if (now() - lastHeardAt > 3 * interval)
        throw new KlioError("pg-timeout", `${where} has not answered for ${Math.round((now() - lastHeardAt) / 1000)} s: the connection is dead`);
      const idle = now() - lastStatusAt >= interval;
      if ((progressed && flushed === written) || replyRequested || idle) await sendStatus(idle);
      if (atEnd) {
        writer.closePartial();
        await writeState(dir, state()).catch(() => {});
        await finishQuietly(copy);
        return "stopped";
      }
    }
  }
}

async function finishQuietly(copy: CopyStream): Promise<void> {
  await Promise.race([copy.finish().catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
}
