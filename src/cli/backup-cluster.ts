import { KlioError } from "../util/errors.ts";
import type { Repository } from "../repo/repository.ts";
import { listSnapshotClusters } from "../backup/snapshot.ts";

/** The cluster named, or the only one with backups. */
export async function resolveCluster(repo: Repository, cluster: string | undefined): Promise<string> {
  if (cluster !== undefined) return cluster;
  const clusters = await listSnapshotClusters(repo);
  if (clusters.length === 1) return clusters[0]!;
  if (clusters.length === 0) throw new KlioError("no-backup", `${repo.root} holds no backups`);
  throw new KlioError("usage", `${repo.root} holds backups of several clusters (${clusters.join(", ")}): name one with --cluster`);
}
