// One receiver per cluster and repository: two would interleave writes to the same partial
// segment. The lock (src/util/lock-file.ts) names its holder by pid and process start time,
// so a lock left by a dead process (kill -9, a reboot) is taken over, atomically, and a pid
// reused since (the postmaster's after a reboot) blocks nothing.
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import { describeHolder, tryLock } from "../util/lock-file.ts";

export const LOCK_FILE = "receiver.lock";

/** Takes the receiver lock of the cluster's WAL directory; KlioError "busy" when a live receiver holds it. */
export async function acquireReceiverLock(dir: string, cluster: string): Promise<() => Promise<void>> {
  const a = await tryLock(path.join(dir, LOCK_FILE), `WAL receiver of cluster ${cluster}`);
  if (!a.held) throw new KlioError("busy", `another klio receiver (${describeHolder(a.holder)}) is already streaming cluster ${cluster} into this repository`);
  return () => a.held.release();
}
