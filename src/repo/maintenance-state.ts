// maintenance/state.json: the lock of a maintenance run and, once it has decided what to
// free, its plan, so that a run killed at any point is finished by the next one. The file is
// replaced atomically (temporary name, fsync, rename), never edited in place.
//
//   phase "started"   nothing decided yet; a successor simply starts afresh
//   phase "swapping"  the plan is recorded; the new index file (merged) may or may not exist:
//                     if it does, the swap happened and the successor frees; if not, nothing did
//   phase "freeing"   the new index is in place; what is left is to wait for older writers,
//                     bring back what they used (from the dropped entries), and remove packs
import { link, readFile, unlink } from "node:fs/promises";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { fsyncDir, tempNameFor, writeFileDurable } from "../util/durable-fs.ts";
import { KlioError } from "../util/errors.ts";
import { parseStamp, processState, thisProcess, type ProcessStamp } from "../util/process-liveness.ts";
import { MAINTENANCE_DIR, maintenanceStateFile } from "./sessions.ts";
import { makeDirectories } from "../util/make-directories.ts";

export interface MaintenancePlan {
  /** File id of the index file that replaces `replaced`. */
  merged: string;
  /** Index files it supersedes (all that were present). */
  replaced: string[];
  /** File id of maintenance/<id>.idx, the entries left out of `merged`, or null when none were. */
  dropped: string | null;
  /** Packs to remove once no older writer can need them. */
  free: string[];
  /** Bytes those packs take. */
  freeBytes: number;
  /** Snapshot keys that were marked; a snapshot not among them was written meanwhile. */
  known: string[];
}

export interface MaintenanceState {
  format: "klio-maintenance";
  version: 1;
  id: string;
  /** The run holding the lock; null when a run left its plan for the next one (it waited too long for a writer). */
  process: ProcessStamp | null;
  startedAt: string;
  phase: "started" | "swapping" | "freeing";
  plan: MaintenancePlan | null;
}

/** Where a run keeps the entries it left out of the new index (the index file format). */
export function droppedKey(fileId: string): string {
  return `${MAINTENANCE_DIR}/${fileId}.idx`;
}

function stateFile(root: string): string {
  return maintenanceStateFile(root);
}

export async function readMaintenanceState(root: string): Promise<MaintenanceState | null> {
  let text: string;
  try {
    text = await readFile(stateFile(root), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  let v: MaintenanceState;
  try {
    v = JSON.parse(text);
  } catch {
    throw new KlioError("bad-repository", `${stateFile(root)} is not JSON: it was not written by klio (remove it only if no maintenance runs)`);
  }
  const stamp = v?.process === null ? null : parseStamp(v?.process);
  if (v?.format !== "klio-maintenance" || v.version !== 1 || stamp === null && v.process !== null || !["started", "swapping", "freeing"].includes(v.phase))
    throw new KlioError("bad-repository", `${stateFile(root)} is not a maintenance state this klio reads (format ${String(v?.format)}, version ${String(v?.version)})`);
  return { ...v, process: stamp };
}

export async function writeMaintenanceState(root: string, s: MaintenanceState): Promise<void> {
  await writeFileDurable(stateFile(root), JSON.stringify(s) + "\n");
}

/**
 * Takes the maintenance lock: creates the state file, or takes over one whose process is
 * gone (returning its state, to be finished). Refuses while another maintenance runs.
 */
export async function acquireMaintenance(root: string): Promise<{ state: MaintenanceState; previous: MaintenanceState | null }> {
  await makeDirectories(path.join(root, MAINTENANCE_DIR), 0o750);
  const state: MaintenanceState = {
    format: "klio-maintenance", version: 1, id: randomBytes(8).toString("hex"), process: thisProcess(), startedAt: new Date().toISOString(), phase: "started", plan: null,
  };
  const file = stateFile(root);
  const tmp = tempNameFor(file);
  await writeFileDurable(tmp, JSON.stringify(state) + "\n");
  try {
    // link, not rename: of two runs starting at once, one fails.
    await link(tmp, file);
    await fsyncDir(path.dirname(file));
    return { state, previous: null };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  } finally {
    await unlink(tmp).catch(() => {});
  }
  const previous = await readMaintenanceState(root);
  if (previous?.process && processState(previous.process) !== "dead")
    throw new KlioError("maintenance-running", `maintenance is already running on this repository (pid ${previous.process.pid} on ${previous.process.host}, since ${previous.startedAt})`);
  // The owner is gone (killed, or the machine restarted) or left its plan: it passes to this run.
  const taken: MaintenanceState = previous?.plan ? { ...state, phase: previous.phase, plan: previous.plan } : state;
  await writeMaintenanceState(root, taken);
  return { state: taken, previous };
}

export async function releaseMaintenance(root: string): Promise<void> {
  await unlink(stateFile(root)).catch(() => {});
  await fsyncDir(path.join(root, MAINTENANCE_DIR)).catch(() => {});
}
