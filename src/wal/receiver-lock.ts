// One receiver per cluster and repository: two would interleave writes to the same
// partial segment. The lock holds the owner's pid; a lock left by a dead process (kill -9)
// is taken over.
import { open, readFile, unlink } from "node:fs/promises";
import path from "node:path";
import process from "node:process";
import { KlioError } from "../util/errors.ts";
import { isPidAlive } from "../util/process-liveness.ts";

export const LOCK_FILE = "receiver.lock";

export async function acquireReceiverLock(dir: string, cluster: string): Promise<() => Promise<void>> {
  const file = path.join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(file, "wx", 0o640);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return async () => {
        await unlink(file).catch(() => {});
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    const pid = Number((await readFile(file, "utf8").catch(() => "")).trim());
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isPidAlive(pid))
      throw new KlioError("receiver-locked", `another klio receiver (pid ${pid}) is already streaming cluster ${cluster} into this repository`);
    await unlink(file).catch(() => {});
  }
  throw new KlioError("receiver-locked", `cannot take the receiver lock ${file}`);
}
