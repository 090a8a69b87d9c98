// One backup of a cluster at a time in a repository, whichever process takes it: `klio backup
// run`, and the daemon's scheduled and API backups all take the cluster's backup lock
// (locks/backup-<cluster>.lock, src/util/lock-file.ts) before they read anything or connect
// to PostgreSQL. Two backups of one cluster at once would only race for the same id and the
// same WAL; the second refuses at once (or waits, with `backup run --wait`).
//
// Ids are issued under the lock, so they cannot repeat: later than every backup the cluster
// has, and than the last id issued (locks/backup-<cluster>.last-id), so that an id is not
// used again after its backup was deleted, even when the clock went back.
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { writeFileDurable } from "../util/durable-fs.ts";
import { KlioError } from "../util/errors.ts";
import { isApiLocation } from "../util/api-client.ts";
import { describeHolder, tryLock, waitForLock, type LockAttempt, type LockHolder } from "../util/lock-file.ts";
import { HEADER_KEY } from "../repo/header.ts";
import { notARepository } from "../repo/wal-only.ts";
import type { Repository } from "../repo/repository.ts";
import { isS3Location } from "../repo/s3-storage.ts";
import { validateClusterName } from "../wal/archive-layout.ts";
import { isSnapshotId, listSnapshotIds, newSnapshotId } from "./snapshot.ts";
import { makeDirectories } from "../util/make-directories.ts";

export const LOCKS_DIR = "locks";

export interface BackupLock {
  readonly repoDir: string;
  readonly cluster: string;
  /** A new backup id (see above), recorded before it is returned. */
  issueId(repo: Repository, now: Date): Promise<string>;
  release(): Promise<void>;
}

export interface BackupLockOptions {
  /** What the holder is, for the message another backup prints ("klio backup run"). */
  purpose: string;
  /** Wait while another backup runs, instead of refusing at once. */
  wait?: { signal: AbortSignal; timeoutMs?: number; onBusy?: (message: string) => void };
}

/**
 * Takes the cluster's backup lock in the local repository `repoDir`. KlioError "busy" (exit 4,
 * HTTP 409) naming the holder when another backup of the cluster runs.
 */
export async function lockBackup(repoDir: string, cluster: string, o: BackupLockOptions): Promise<BackupLock> {
  validateClusterName(cluster);
  if (isApiLocation(repoDir) || isS3Location(repoDir))
    throw new KlioError("usage", `backups are written to a local repository (a directory), not to ${repoDir}: the offsite copy follows with \`klio offsite sync\``);
  const isRepo = await stat(path.join(repoDir, HEADER_KEY)).then((s) => s.isFile(), (e) => {
    if (["ENOENT", "ENOTDIR"].includes((e as NodeJS.ErrnoException).code ?? "")) return false;
    throw e;
  });
  if (!isRepo) throw await notARepository(repoDir);
  const dir = path.join(repoDir, LOCKS_DIR);
  await makeDirectories(dir, 0o750);
  const file = path.join(dir, `backup-${cluster}.lock`);
  const running = (h: LockHolder) => `a backup of cluster ${cluster} is already running (${describeHolder(h)}${h.purpose ? `, ${h.purpose}` : ""})`;
  const w = o.wait;
  const a: LockAttempt = w
    ? await waitForLock(file, o.purpose, { signal: w.signal, timeoutMs: w.timeoutMs, onBusy: (h) => w.onBusy?.(`${running(h)}: waiting for it to finish`) })
    : await tryLock(file, o.purpose);
  if (!a.held) {
    if (w?.signal.aborted) throw new KlioError("aborted", `interrupted while waiting for the running backup of cluster ${cluster}`);
    if (w) throw new KlioError("busy", `${running(a.holder)}: gave up waiting after ${Math.round((w.timeoutMs ?? 0) / 1000)} s`);
    throw new KlioError("busy", running(a.holder));
  }
  const held = a.held;
  const lastIdFile = path.join(dir, `backup-${cluster}.last-id`);
  return {
    repoDir, cluster,
    async issueId(repo, now) {
      const last = (await readFile(lastIdFile, "utf8").catch(() => "")).trim();
      const id = newSnapshotId(now, [...(await listSnapshotIds(repo, cluster)), ...(isSnapshotId(last) ? [last] : [])]);
      await writeFileDurable(lastIdFile, id + "\n");
      return id;
    },
    release: () => held.release(),
  };
}
