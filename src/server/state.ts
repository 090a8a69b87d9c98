// What the daemon remembers of each cluster across restarts: the last backup it ran (or
// tried), the last scheduled run (so a restart neither repeats nor skips one), and the last
// errors. Everything else (backups, WAL positions) is read from the repository, which is the
// truth. One small JSON file per cluster in the state directory, replaced atomically.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { writeFileDurable } from "../util/durable-fs.ts";
import type { Logger } from "../util/log.ts";
import { makeDirectories } from "../util/make-directories.ts";

export interface ErrorRecord {
  at: string;
  code: string;
  message: string;
}

export interface ClusterState {
  /** When the schedule last started a backup (ms since the epoch), or null. */
  lastScheduledAt: number | null;
  lastBackup: { id: string | null; jobId: string; startedAt: string; finishedAt: string; ok: boolean; error?: ErrorRecord } | null;
  lastReceiverError: ErrorRecord | null;
  receiverRestarts: number;
  backupFailures: number;
}

export const EMPTY_STATE: ClusterState = { lastScheduledAt: null, lastBackup: null, lastReceiverError: null, receiverRestarts: 0, backupFailures: 0 };

export class StateStore {
  constructor(private readonly dir: string, private readonly log: Logger) {}

  private file(cluster: string): string {
    return path.join(this.dir, "clusters", `${cluster}.json`);
  }

  /** The saved state; a missing or unreadable file is a fresh start (logged), never a failure to start. */
  async load(cluster: string): Promise<ClusterState> {
    let text: string;
    try {
      text = await readFile(this.file(cluster), "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") this.log.warn("state.unreadable", { cluster, error: (e as Error).message });
      return { ...EMPTY_STATE };
    }
    try {
      const v = JSON.parse(text) as Partial<ClusterState>;
      return { ...EMPTY_STATE, ...v };
    } catch (e) {
      this.log.warn("state.unreadable", { cluster, error: (e as Error).message });
      return { ...EMPTY_STATE };
    }
  }

  async save(cluster: string, s: ClusterState): Promise<void> {
    await makeDirectories(path.dirname(this.file(cluster)), 0o700);
    await writeFileDurable(this.file(cluster), JSON.stringify(s, null, 2) + "\n");
  }
}
