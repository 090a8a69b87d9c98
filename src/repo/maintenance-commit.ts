// The writer's side of maintenance (maintenance.ts): committing a snapshot so that it is
// restorable the moment it exists, whatever maintenance is doing.
//
// A commit puts a commit marker first, then reads maintenance's state (maintenance raises
// its barrier first, then waits for the markers it sees: one of the two sees the other).
//   no maintenance, or surveying   commit; maintenance marks this snapshot under its barrier
//   barrier up ("swapping")        wait: the index is being replaced
//   freeing                        the chunks this snapshot names that the new index left out
//                                  (this writer deduplicated against them before the swap) are
//                                  brought back first; their packs are still there, because
//                                  maintenance removes them only after this session ends
import { KlioError } from "../util/errors.ts";
import { processState } from "../util/process-liveness.ts";
import type { ChunkId } from "./chunk-id.ts";
import { indexKey } from "./index-file.ts";
import { bringBack, type MaintenanceContext } from "./maintenance.ts";
import { readMaintenanceState, type MaintenanceState } from "./maintenance-state.ts";
import { COMMIT_SUFFIX, putMarker, type RepoSession } from "./sessions.ts";

/** How long a commit waits for maintenance's barrier before giving up. */
const BARRIER_WAIT_MS = 6 * 60 * 60_000;

type Names = (visit: (id: ChunkId) => void, afterDirect: () => Promise<void>) => Promise<void>;

/** What a commit has to do, given maintenance's state: wait, or bring back from a dropped file (or nothing). */
async function commitAction(ctx: MaintenanceContext, s: MaintenanceState | null): Promise<"wait" | { dropped: string | null }> {
  if (!s || s.phase === "started") return { dropped: null };
  if (s.phase === "freeing") return { dropped: s.plan?.dropped ?? null };
  // "swapping": a live run holds the barrier; a dead one's plan took effect only if its new index exists.
  if (s.process && processState(s.process) !== "dead") return "wait";
  if (!s.plan || !(await ctx.storage.exists(indexKey(s.plan.merged)))) return { dropped: null };
  return { dropped: s.plan.dropped };
}

/**
 * Writes the object with `put` while `session` holds, after bringing back what `names` visits
 * and the index no longer has (how many chunks: the result). `refresh` reloads the caller's index (it may still hold the
 * files maintenance replaced); `present` then says whether the index has a chunk.
 */
export async function commitInSession(
  ctx: MaintenanceContext,
  session: RepoSession,
  names: Names,
  put: () => Promise<void>,
  index: { refresh(): Promise<void>; present(id: ChunkId): boolean },
): Promise<{ broughtBack: number }> {
  const deadline = Date.now() + BARRIER_WAIT_MS;
  for (;;) {
    const removeMarker = await putMarker(ctx.root, COMMIT_SUFFIX);
    try {
      const action = await commitAction(ctx, await readMaintenanceState(ctx.root));
      if (action !== "wait") {
        let broughtBack = 0;
        if (action.dropped) {
          await index.refresh();
          broughtBack = (await bringBack(ctx, action.dropped, names, (id) => index.present(id)))?.chunks ?? 0;
          await index.refresh();
        }
        await session.confirm();
        await put();
        return { broughtBack };
      }
    } finally {
      await removeMarker();
    }
    if (Date.now() > deadline) throw new KlioError("maintenance-running", "the repository's maintenance held its barrier for 6 hours: the backup is not recorded");
    await new Promise((r) => setTimeout(r, 100));
  }
}
