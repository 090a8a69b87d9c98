// One cluster's supervisor: keeps its WAL receiver running (restarting it with backoff when
// it stops on an error that needs an operator, since the operator may fix the server while
// we wait), starts its scheduled backups, and runs backups asked for through the API — one
// at a time. Nothing here reaches another cluster: a failure stays in this supervisor's
// state, logs and metrics.
import { KlioError, isDiskFull, isKlioError } from "../util/errors.ts";
import { observedLogger, withFields, type Logger } from "../util/log.ts";
import { sleep } from "../util/sleep.ts";
import { describeConnInfo } from "../pg/conninfo.ts";
import { formatLsn } from "../pg/lsn.ts";
import { runReceiver } from "../wal/receiver.ts";
import type { ReceiverState } from "../wal/archive-meta.ts";
import { runBackup } from "../backup/backup-run.ts";
import { lockBackup, type BackupLock } from "../backup/backup-lock.ts";
import { openRepository } from "../repo/repository.ts";
import type { ClusterConfig, DaemonConfig } from "./config.ts";
import { nextRun } from "./schedule.ts";
import type { ClusterState, ErrorRecord, StateStore } from "./state.ts";
import type { Job, JobTable } from "./jobs.ts";
import type { RepositoryKeeper } from "./keeper.ts";

const RESTART_INITIAL_MS = 5_000;
const RESTART_MAX_MS = 300_000;
/** The scheduler re-reads the clock at least this often (suspend, clock changes). */
const SCHEDULER_TICK_MS = 30_000;

export interface ReceiverView {
  /** running: connected or reconnecting by itself; restarting: stopped on an error, waiting to start again. */
  state: "starting" | "streaming" | "reconnecting" | "restarting" | "disk-full" | "stopped";
  /** The servers of the connection string. */
  server: string;
  /** Of those, the one streamed from (null while not streaming). */
  streamingFrom: string | null;
  slot: string;
  synchronous: boolean;
  last: ReceiverState | null;
  lastSegment: string | null;
  segmentsArchived: number;
  lastError: ErrorRecord | null;
  restarts: number;
  /** When the archive last held everything the server had (ms since the epoch). */
  caughtUpAt: number | null;
}

/** Seconds the archive is behind: 0 while streaming with nothing outstanding, else since it last was not. */
export function lagSeconds(r: ReceiverView, now: number): number | null {
  if (r.last === null) return null;
  if (r.state === "streaming" && r.last.flushedLsn >= r.last.serverWalEnd) return 0;
  return r.caughtUpAt === null ? null : Math.max(0, (now - r.caughtUpAt) / 1000);
}

export interface SupervisorDeps {
  config: DaemonConfig;
  log: Logger;
  store: StateStore;
  jobs: JobTable;
  /** Applies retention after each backup. */
  keeper: RepositoryKeeper;
  now?: () => Date;
}

export class ClusterSupervisor {
  readonly receiver: ReceiverView;
  state: ClusterState;
  nextBackupAt: number | null = null;
  running: Job | null = null;
  /** Taking the backup lock for a backup about to start. */
  private claiming = false;
  private readonly log: Logger;
  private readonly stopper = new AbortController();
  private backupStopper: AbortController | null = null;
  private backupRun: Promise<void> | null = null;
  private loops: Promise<void>[] = [];
  private readonly startedAt: number;
  private readonly now: () => Date;

  constructor(readonly cluster: ClusterConfig, private readonly deps: SupervisorDeps, initial: ClusterState) {
    this.now = deps.now ?? (() => new Date());
    this.startedAt = this.now().getTime();
    this.state = initial;
    this.log = withFields(deps.log, { cluster: cluster.name });
    this.receiver = {
      state: "starting", server: describeConnInfo(cluster.conninfo), streamingFrom: null, slot: cluster.slot, synchronous: cluster.synchronous,
      last: null, lastSegment: null, segmentsArchived: 0, lastError: initial.lastReceiverError, restarts: initial.receiverRestarts, caughtUpAt: null,
    };
  }

  start(): void {
    this.loops = [this.receiverLoop(), this.schedulerLoop()];
  }

  /** Stops the receiver (it flushes and logs its last durable position) and abandons a running backup. */
  async stop(): Promise<void> {
    this.stopper.abort();
    this.backupStopper?.abort();
    await Promise.all([...this.loops, this.backupRun]);
    this.receiver.state = "stopped";
  }

  /**
   * Starts a backup now; KlioError "busy" when one of the cluster is running, here or in
   * another process (`klio backup run`): they share the cluster's backup lock.
   */
  async startBackup(trigger: Job["trigger"], request: { name?: string; kind?: "full" | "incremental" } = {}): Promise<Job> {
    if (this.stopper.signal.aborted) throw new KlioError("stopping", "the daemon is stopping");
    if (this.running || this.claiming) throw new KlioError("busy", `a backup of ${this.cluster.name} is running already${this.running ? ` (job ${this.running.id})` : ""}`);
    this.claiming = true;
    // Another backup holding the lock refuses the request; any other failure to take it (a
    // full disk, say) is this backup failing, reported by its job like every other failure.
    let lock: BackupLock | { failed: unknown };
    try {
      lock = await lockBackup(this.deps.config.repository.path, this.cluster.name, { purpose: `klio server start, ${trigger === "schedule" ? "scheduled" : "API"} backup` })
        .catch((e) => {
          if (isKlioError(e) && e.code === "busy") throw e;
          return { failed: e };
        });
    } finally {
      this.claiming = false;
    }
    if (this.stopper.signal.aborted) {
      if (!("failed" in lock)) await lock.release();
      throw new KlioError("stopping", "the daemon is stopping");
    }
    const job = this.deps.jobs.start("backup", this.cluster.name, trigger);
    this.running = job;
    this.backupRun = this.backupJob(job, request, lock);
    return job;
  }

  private async backupJob(job: Job, request: { name?: string; kind?: "full" | "incremental" }, lock: BackupLock | { failed: unknown }): Promise<void> {
    const stopper = (this.backupStopper = new AbortController());
    const { config } = this.deps;
    const started = job.startedAt;
    try {
      if ("failed" in lock) throw lock.failed;
      const repo = await openRepository(config.repository.path, { passphrase: config.repository.passphrase, workers: config.repository.workers });
      try {
        const s = await runBackup({
          repoDir: config.repository.path, repo, cluster: this.cluster.name, lock, conninfo: this.cluster.conninfo, name: request.name,
          log: withFields(this.log, { job: job.id }), signal: stopper.signal, walTimeoutMs: this.cluster.walTimeoutMs,
          mode: request.kind ?? "auto", fullEveryMs: this.cluster.fullEveryMs,
          onProgress: (p) => void (job.progress = { phase: p.phase, doneBytes: p.doneBytes, totalBytes: p.totalBytes }),
        });
        // The job ends with the retention that follows it: what it deleted is visible when it ends.
        await this.deps.keeper.afterBackup(this.cluster.name);
        this.deps.jobs.finish(job, { backupId: s.id });
        this.state.lastBackup = { id: s.id, jobId: job.id, startedAt: started, finishedAt: job.finishedAt!, ok: true };
      } finally {
        await repo.close();
      }
    } catch (e) {
      const error = errorRecord(e, this.now());
      this.deps.jobs.finish(job, { error: { code: error.code, message: error.message } });
      this.state.lastBackup = { id: null, jobId: job.id, startedAt: started, finishedAt: job.finishedAt!, ok: false, error };
      this.state.backupFailures++;
      this.log.error("backup.failed", { job: job.id, code: error.code, error: error.message });
    } finally {
      if (!("failed" in lock)) await lock.release();
      this.running = null;
      this.backupStopper = null;
      this.backupRun = null;
      await this.save();
    }
  }

  private async receiverLoop(): Promise<void> {
    const signal = this.stopper.signal;
    let delay = RESTART_INITIAL_MS;
    const observed = observedLogger(this.log, (_level, event, fields) => {
      if (event === "wal.streaming") {
        this.receiver.state = "streaming";
        this.receiver.streamingFrom = String(fields.server);
        delay = RESTART_INITIAL_MS;
      } else if (event === "wal.disconnected" || event === "wal.reconnecting") {
        this.receiver.state = "reconnecting";
        this.receiver.streamingFrom = null;
        if (event === "wal.disconnected") this.noteReceiverError({ at: this.now().toISOString(), code: "disconnected", message: String(fields.error) });
      } else if (event === "wal.segment_archived") {
        this.receiver.lastSegment = String(fields.segment);
        this.receiver.segmentsArchived++;
      } else if (event === "wal.disk_full") {
        this.receiver.state = "disk-full";
        this.noteReceiverError({ at: this.now().toISOString(), code: "disk-full", message: String(fields.error) });
      } else if (event === "wal.gap") {
        this.noteReceiverError({ at: this.now().toISOString(), code: "wal-gap", message: `WAL ${String(fields.from)} … ${String(fields.to)} is missing: ${String(fields.reason)}` });
      }
    });
    while (!signal.aborted) {
      this.receiver.state = "starting";
      try {
        await runReceiver({
          repo: this.deps.config.repository.path, cluster: this.cluster.name, conninfo: this.cluster.conninfo, slot: this.cluster.slot,
          createSlot: this.cluster.createSlot, synchronous: this.cluster.synchronous, log: observed, signal,
          onStatus: (s) => {
            this.receiver.last = s;
            if (s.flushedLsn >= s.serverWalEnd) this.receiver.caughtUpAt = this.now().getTime();
          },
        });
      } catch (e) {
        const error = errorRecord(e, this.now());
        this.noteReceiverError(error);
        this.receiver.restarts = ++this.state.receiverRestarts;
        this.log.error("wal.receiver_failed", { code: error.code, error: error.message, restart_in_ms: delay });
        await this.save();
      }
      if (signal.aborted) break;
      this.receiver.state = "restarting";
      this.receiver.streamingFrom = null;
      await sleep(delay, signal);
      delay = Math.min(RESTART_MAX_MS, delay * 2);
    }
    this.log.info("wal.stopped", { flushed_lsn: this.receiver.last ? formatLsn(this.receiver.last.flushedLsn) : null });
  }

  private noteReceiverError(e: ErrorRecord): void {
    this.receiver.lastError = e;
    this.state.lastReceiverError = e;
  }

  private async schedulerLoop(): Promise<void> {
    const schedule = this.cluster.schedule;
    const signal = this.stopper.signal;
    if (!schedule) return;
    while (!signal.aborted) {
      const now = this.now().getTime();
      const next = nextRun(schedule, now, this.state.lastScheduledAt ?? this.startedAt);
      this.nextBackupAt = next;
      if (next > now) {
        await sleep(Math.min(next - now, SCHEDULER_TICK_MS), signal);
        if (this.now().getTime() < next) continue;
      }
      if (signal.aborted) break;
      this.state.lastScheduledAt = next;
      try {
        await this.startBackup("schedule");
        this.log.info("backup.scheduled", { at: new Date(next).toISOString() });
      } catch (e) {
        const reason = e instanceof Error ? e.message : String(e);
        this.log.warn("backup.schedule_skipped", { at: new Date(next).toISOString(), reason });
        // Another backup of the cluster is running (a `klio backup run`, say): the skipped run
        // is a job of its own, failed with the reason, for whoever follows /v1/jobs.
        if (isKlioError(e) && e.code === "busy") {
          this.deps.jobs.finish(this.deps.jobs.start("backup", this.cluster.name, "schedule"), { error: { code: "busy", message: `scheduled backup skipped: ${reason}` } });
        }
      }
      await this.save();
    }
  }

  private async save(): Promise<void> {
    try {
      await this.deps.store.save(this.cluster.name, this.state);
    } catch (e) {
      this.log.error("state.save_failed", { error: (e as Error).message });
    }
  }
}

function errorRecord(e: unknown, now: Date): ErrorRecord {
  if (isKlioError(e)) return { at: now.toISOString(), code: e.code, message: e.message };
  if (isDiskFull(e)) return { at: now.toISOString(), code: "disk-full", message: `the repository's file system is full (${(e as Error).message})` };
  const sqlstate = (e as { sqlstate?: string }).sqlstate;
  return { at: now.toISOString(), code: sqlstate ? `pg-${sqlstate}` : "error", message: e instanceof Error ? e.message : String(e) };
}
