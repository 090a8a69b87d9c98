import type { Command } from "../command.ts";
import { snapshotKey } from "../../backup/snapshot.ts";
import { BACKUP_ID_POSITIONAL, CLUSTER_FLAG, withBackup } from "../backup-cluster.ts";
import { localRepoFlags } from "../repo-flags.ts";

export const command: Command = {
  spec: {
    name: "backup delete",
    summary: "Delete a backup from the repository (its data is freed later by maintenance, once no backup uses it).",
    usage: "klio backup delete ID --repo DIR [--cluster NAME] [--json]",
    positionals: [BACKUP_ID_POSITIONAL],
    flags: {
      ...localRepoFlags("backup delete"),
      cluster: CLUSTER_FLAG,
      json: { kind: "boolean", help: "print JSON for scripts" },
    },
  },
  async run(args, ctx) {
    const f = args.flags;
    return withBackup(f, ctx, args.positionals[0]!, async (repo, cluster, s) => {
      await repo.deleteObject(snapshotKey(cluster, s.id));
      ctx.stdout(f.json ? JSON.stringify({ deleted: s.id, cluster }) + "\n" : `deleted backup ${s.id} of ${cluster}\n`);
      return 0;
    });
  },
};
