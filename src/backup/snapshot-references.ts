// What the snapshots name, for the repository's maintenance (src/repo/maintenance.ts), which
// does not know their format: the file list's pieces and PostgreSQL's backup_manifest, named
// in the snapshot object itself, then every chunk the file list names.
import type { ReferenceSource } from "../repo/maintenance.ts";
import type { Repository } from "../repo/repository.ts";
import { parseSnapshot, snapshotChunks } from "./snapshot.ts";

const SNAPSHOT_KEY = /^snapshots\/[^/]+\/\d{8}T\d{6}Z(?:-\d+)?$/;

export function snapshotReferences(repo: Repository): ReferenceSource {
  return {
    list: async () => (await repo.listObjects("snapshots/")).filter((k) => SNAPSHOT_KEY.test(k)),
    chunksOf: async (key, visit, afterDirect) => snapshotChunks(repo, parseSnapshot(await repo.getObject(key), key), visit, afterDirect),
  };
}
