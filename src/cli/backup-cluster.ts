import { KlioError } from "../util/errors.ts";
import type { Repository } from "../repo/repository.ts";
import { listSnapshotClusters, loadSnapshot, type Snapshot } from "../backup/snapshot.ts";
import { validateClusterName } from "../wal/archive-layout.ts";
import type { CommandSpec, FlagSpec } from "./args.ts";
import type { CliContext } from "./command.ts";
import { openRepoFromFlags } from "./repo-flags.ts";

export const CLUSTER_FLAG: FlagSpec = { kind: "string", value: "NAME", help: "cluster (needed when the repository holds several)" };
export const BACKUP_ID_POSITIONAL: NonNullable<CommandSpec["positionals"]>[number] = { name: "ID", help: "backup id (see klio backup list)" };

/** The cluster named, or the only one with backups. */
export async function resolveCluster(repo: Repository, cluster: string | undefined): Promise<string> {
  if (cluster !== undefined) return cluster;
  const clusters = await listSnapshotClusters(repo);
  if (clusters.length === 1) return clusters[0]!;
  if (clusters.length === 0) throw new KlioError("no-backup", `${repo.root} holds no backups`);
  throw new KlioError("usage", `${repo.root} holds backups of several clusters (${clusters.join(", ")}): name one with --cluster`);
}

/** The cluster of `--cluster` (validated), or the only one with backups. */
export function clusterFromFlags(repo: Repository, flags: Record<string, unknown>): Promise<string> {
  return resolveCluster(repo, flags.cluster === undefined ? undefined : validateClusterName(String(flags.cluster)));
}

/**
 * Opens the repository from the flags, finds backup `id` of the cluster (refusing ids that do
 * not exist) and hands it to `use`; the repository is closed however `use` ends.
 */
export async function withBackup<T>(
  flags: Record<string, unknown>, ctx: CliContext, id: string,
  use: (repo: Repository, cluster: string, snapshot: Snapshot) => Promise<T>,
): Promise<T> {
  const repo = await openRepoFromFlags(flags, ctx);
  try {
    const cluster = await clusterFromFlags(repo, flags);
    return await use(repo, cluster, await loadSnapshot(repo, cluster, id));
  } finally {
    await repo.close();
  }
}
