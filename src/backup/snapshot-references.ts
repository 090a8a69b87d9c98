// What the snapshots name, for the repository's maintenance (src/repo/maintenance.ts), which
// does not know their format: the file list's pieces and PostgreSQL's backup_manifest, named
// in the snapshot object itself, then every chunk the file list names.
import type { ReferenceSource } from "../repo/maintenance.ts";
import type { Repository } from "../repo/repository.ts";
import { isSnapshotId, parseSnapshot, snapshotChunks } from "./snapshot.ts";

/** snapshots/<cluster>/<backup id> */
function isSnapshotKey(key: string): boolean {
  const parts = key.split("/");
  return parts.length === 3 && parts[0] === "snapshots" && parts[1] !== "" && isSnapshotId(parts[2]!);
}

export function snapshotReferences(repo: Repository): ReferenceSource {
  return {
    list: async () => (await repo.listObjects("snapshots/")).filter(isSnapshotKey),
    chunksOf: async (key, visit, afterDirect) => snapshotChunks(repo, parseSnapshot(await repo.getObject(key), key), visit, afterDirect),
  };
}
