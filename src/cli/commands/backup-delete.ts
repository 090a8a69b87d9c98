import type { Command } from "../command.ts";
import { validateClusterName } from "../../wal/archive-layout.ts";
import { loadSnapshot, snapshotKey } from "../../backup/snapshot.ts";
import { resolveCluster } from "../backup-cluster.ts";
import { openRepoFromFlags, REPO_FLAGS } from "../repo-flags.ts";

export const command: Command = {
  spec: {
    name: "backup delete",
    summary: "Delete a backup from the repository (its data is freed later by maintenance, once no backup uses it).",
    usage: "klio backup delete ID --repo DIR [--cluster NAME] [--json]",
    positionals: [{ name: "ID", help: "backup id (see klio backup list)" }],
    flags: {
      ...REPO_FLAGS,
      cluster: { kind: "string", value: "NAME", help: "cluster (needed when the repository holds several)" },
      json: { kind: "boolean", help: "print JSON for scripts" },
    },
  },
  async run(args, ctx) {
    const f = args.flags;
    const repo = await openRepoFromFlags(f, ctx);
    try {
      const cluster = await resolveCluster(repo, f.cluster === undefined ? undefined : validateClusterName(String(f.cluster)));
      const s = await loadSnapshot(repo, cluster, args.positionals[0]!); // refuses ids that do not exist
      await repo.deleteObject(snapshotKey(cluster, s.id));
      ctx.stdout(f.json ? JSON.stringify({ deleted: s.id, cluster }) + "\n" : `deleted backup ${s.id} of ${cluster}\n`);
      return 0;
    } finally {
      await repo.close();
    }
  },
};
