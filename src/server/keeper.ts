// The daemon's care of the repository's space: retention after every backup, maintenance on
// its schedule or on request (one at a time), and the file system's free space. Backups keep
// running meanwhile: maintenance is safe against them (src/repo/maintenance.ts).
import { readFile, statfs } from "node:fs/promises";
import path from "node:path";
import { isKlioError, KlioError } from "../util/errors.ts";
import { withFields, type Logger } from "../util/log.ts";
import { sleep } from "../util/sleep.ts";
import { applyRetention, type RetentionResult } from "../backup/retention-apply.ts";
import { hasRules, type RetentionPolicy } from "../backup/retention.ts";
import { readStoredPolicy } from "../backup/retention-store.ts";
import { snapshotReferences } from "../backup/snapshot-references.ts";
import { LAST_REPORT, type MaintenanceReport } from "../repo/maintenance.ts";
import type { Repository } from "../repo/repository.ts";
import type { DaemonConfig } from "./config.ts";
import type { Job, JobTable } from "./jobs.ts";
import type { OffsiteRunner } from "./offsite-runner.ts";
import { nextRun } from "./schedule.ts";
import type { ErrorRecord } from "./state.ts";

const SCHEDULER_TICK_MS = 30_000;
const DISK_POLL_MS = 10_000;

export interface DiskView {
  path: string;
  freeBytes: number;
  sizeBytes: number;
  /** Below the config's low_space_percent. */
  low: boolean;
  checkedAt: string;
}

export interface RetentionOutcome {
  at: string;
  deleted: string[];
  waitingForOffsite: string[];
  walRemoved: number;
  error: ErrorRecord | null;
}

export class RepositoryKeeper {
  running: Job | null = null;
  lastMaintenance: (MaintenanceReport & { finishedAt: string }) | null = null;
  lastMaintenanceError: ErrorRecord | null = null;
  nextMaintenanceAt: number | null = null;
  disk: DiskView | null = null;
  readonly retention = new Map<string, RetentionOutcome>();
  private readonly stopper = new AbortController();
  private loops: Promise<void>[] = [];
  private maintenanceRun: Promise<void> | null = null;
  private readonly log: Logger;
  private lastScheduledAt: number;

  constructor(private readonly config: DaemonConfig, private readonly repo: Repository, private readonly jobs: JobTable, private readonly offsite: OffsiteRunner | null, log: Logger) {
    this.log = log;
    this.lastScheduledAt = Date.now();
  }

  async start(): Promise<void> {
    // What the last maintenance reported survives restarts (it writes maintenance/last.json).
    this.lastMaintenance = await readLastReport(this.config.repository.path);
    this.loops = [this.scheduleLoop(), this.diskLoop()];
  }

  async stop(): Promise<void> {
    this.stopper.abort();
    await Promise.all([...this.loops, this.maintenanceRun]);
  }

  /** The policy that applies to the cluster: the repository's, else the config's. */
  async policyOf(cluster: string): Promise<{ policy: RetentionPolicy | null; source: "repository" | "config" | null }> {
    const stored = await readStoredPolicy(this.config.repository.path, cluster);
    if (stored) return { policy: stored.policy, source: "repository" };
    const configured = this.config.clusters.find((c) => c.name === cluster)?.retention ?? null;
    return configured ? { policy: configured, source: "config" } : { policy: null, source: null };
  }

  /**
   * Applies the cluster's retention; with an offsite copy, deletes only what it holds (a copy
   * that cannot be listed deletes nothing).
   */
  async applyRetention(cluster: string, dryRun: boolean): Promise<RetentionResult | null> {
    const { policy } = await this.policyOf(cluster);
    if (!policy || !hasRules(policy)) return null;
    const offsite = this.offsite ? await this.offsite.holdings() : null;
    return applyRetention(this.repo, this.config.repository.path, cluster, policy, { dryRun, now: new Date(), offsite, log: withFields(this.log, { cluster }) });
  }

  /** After a backup: retention, recorded for status and metrics; a failure is logged, never thrown. */
  async afterBackup(cluster: string): Promise<void> {
    const at = new Date().toISOString();
    try {
      const r = await this.applyRetention(cluster, false);
      if (r) this.retention.set(cluster, { at, deleted: r.deleted, waitingForOffsite: r.waitingForOffsite, walRemoved: r.wal.removed, error: null });
    } catch (e) {
      const error = { at, code: isKlioError(e) ? e.code : "error", message: (e as Error).message };
      this.retention.set(cluster, { at, deleted: [], waitingForOffsite: [], walRemoved: 0, error });
      this.log.error("retention.failed", { cluster, code: error.code, error: error.message });
    }
  }

  /** Starts maintenance; KlioError "busy" while one runs. */
  startMaintenance(trigger: Job["trigger"], dryRun = false): Job {
    if (this.stopper.signal.aborted) throw new KlioError("stopping", "the daemon is stopping");
    if (this.running) throw new KlioError("busy", `maintenance is running already (job ${this.running.id})`);
    const job = this.jobs.start("maintenance", null, trigger);
    this.running = job;
    this.maintenanceRun = this.maintenanceJob(job, dryRun);
    return job;
  }

  private async maintenanceJob(job: Job, dryRun: boolean): Promise<void> {
    const log = withFields(this.log, { job: job.id });
    try {
      const report = await this.repo.maintain(snapshotReferences(this.repo), {
        dryRun, repackShare: this.config.maintenance.repackShare, maxWaitMs: this.config.maintenance.maxWaitMs, log, signal: this.stopper.signal,
      });
      this.jobs.finish(job, { result: report });
      if (!dryRun) {
        this.lastMaintenance = { ...report, finishedAt: job.finishedAt! };
        this.lastMaintenanceError = null;
      }
    } catch (e) {
      const error = { at: new Date().toISOString(), code: isKlioError(e) ? e.code : "error", message: (e as Error).message };
      this.jobs.finish(job, { error: { code: error.code, message: error.message } });
      this.lastMaintenanceError = error;
      log.error("maintenance.failed", { code: error.code, error: error.message });
    } finally {
      this.running = null;
      this.maintenanceRun = null;
    }
  }

  private async scheduleLoop(): Promise<void> {
    const schedule = this.config.maintenance.schedule;
    const signal = this.stopper.signal;
    if (!schedule) return;
    while (!signal.aborted) {
      const now = Date.now();
      const next = nextRun(schedule, now, this.lastScheduledAt);
      this.nextMaintenanceAt = next;
      if (next > now) {
        await sleep(Math.min(next - now, SCHEDULER_TICK_MS), signal);
        if (Date.now() < next) continue;
      }
      if (signal.aborted) break;
      this.lastScheduledAt = next;
      try {
        this.startMaintenance("schedule");
      } catch (e) {
        this.log.warn("maintenance.schedule_skipped", { reason: (e as Error).message });
      }
    }
  }

  /** Free space on the repository's file system, with a warning when it crosses the threshold. */
  private async diskLoop(): Promise<void> {
    const signal = this.stopper.signal;
    const dir = this.config.repository.path;
    while (!signal.aborted) {
      try {
        const st = await statfs(dir);
        const sizeBytes = Number(st.blocks) * Number(st.bsize);
        const freeBytes = Number(st.bavail) * Number(st.bsize);
        const low = sizeBytes > 0 && (freeBytes / sizeBytes) * 100 < this.config.lowSpacePercent;
        if (low && !this.disk?.low) this.log.warn("disk.low_space", { path: dir, free_bytes: freeBytes, size_bytes: sizeBytes, threshold_percent: this.config.lowSpacePercent });
        if (!low && this.disk?.low) this.log.info("disk.space_ok", { path: dir, free_bytes: freeBytes });
        this.disk = { path: dir, freeBytes, sizeBytes, low, checkedAt: new Date().toISOString() };
      } catch (e) {
        this.log.debug("disk.statfs_failed", { error: (e as Error).message });
      }
      await sleep(DISK_POLL_MS, signal);
    }
  }
}

async function readLastReport(repoDir: string): Promise<(MaintenanceReport & { finishedAt: string }) | null> {
  try {
    return JSON.parse(await readFile(path.join(repoDir, ...LAST_REPORT.split("/")), "utf8"));
  } catch {
    return null;
  }
}
