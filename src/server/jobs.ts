// Jobs the daemon runs on request or on schedule (backups, maintenance): an id to follow, a state,
// progress while running and the outcome. Kept in memory, the newest few hundred; what must
// survive a restart is in the cluster state (state.ts).
import { randomBytes } from "node:crypto";

export type JobState = "running" | "succeeded" | "failed";

export interface Job {
  id: string;
  kind: "backup" | "maintenance";
  /** The cluster a backup is of; null for maintenance (the whole repository). */
  cluster: string | null;
  trigger: "schedule" | "api";
  state: JobState;
  startedAt: string;
  finishedAt: string | null;
  progress: { phase: string; doneBytes: number; totalBytes: number | null } | null;
  /** The backup made, once succeeded. */
  backupId: string | null;
  /** What maintenance reported, once succeeded. */
  result: unknown;
  error: { code: string; message: string } | null;
}

const KEEP = 500;

export class JobTable {
  private readonly jobs = new Map<string, Job>();

  constructor(private readonly now: () => Date = () => new Date()) {}

  start(kind: Job["kind"], cluster: string | null, trigger: Job["trigger"]): Job {
    const id = `${this.now().toISOString().replace(/[-:]/g, "").slice(0, 15)}-${randomBytes(4).toString("hex")}`;
    const job: Job = { id, kind, cluster, trigger, state: "running", startedAt: this.now().toISOString(), finishedAt: null, progress: null, backupId: null, result: null, error: null };
    this.jobs.set(id, job);
    for (const old of this.jobs.keys()) {
      if (this.jobs.size <= KEEP) break;
      if (this.jobs.get(old)!.state !== "running") this.jobs.delete(old);
    }
    return job;
  }

  finish(job: Job, outcome: { backupId: string } | { result: unknown } | { error: { code: string; message: string } }): void {
    job.finishedAt = this.now().toISOString();
    if ("backupId" in outcome) {
      job.state = "succeeded";
      job.backupId = outcome.backupId;
    } else if ("result" in outcome) {
      job.state = "succeeded";
      job.result = outcome.result;
    } else {
      job.state = "failed";
      job.error = outcome.error;
    }
  }

  get(id: string): Job | undefined {
    return this.jobs.get(id);
  }

  list(cluster?: string): Job[] {
    return [...this.jobs.values()].filter((j) => cluster === undefined || j.cluster === cluster).reverse();
  }
}
