import type { Command } from "../command.ts";
import { describePolicy } from "../../backup/retention.ts";
import { readPins, readStoredPolicy } from "../../backup/retention-store.ts";
import { localRepoFlags, openRepoFromFlags } from "../repo-flags.ts";
import { retentionClusters } from "../retention-flags.ts";
import { CLUSTER_FLAG } from "../backup-cluster.ts";

export const command: Command = {
  spec: {
    name: "retention get",
    summary: "Show each cluster's retention policy and pinned backups.",
    usage: "klio retention get --repo DIR [--cluster NAME] [--json]",
    flags: { ...localRepoFlags("retention get", { why: "reads the policies and pins kept in a repository directory (an S3 copy or the appliance's API has none)" }), cluster: CLUSTER_FLAG, json: { kind: "boolean", help: "print JSON for scripts" } },
    details: "Only the policy set in the repository is shown; the daemon's config may define one for clusters that have none here.",
  },
  async run(args, ctx) {
    const f = args.flags;
    const repoDir = String(f.repo);
    const repo = await openRepoFromFlags(f, ctx);
    try {
      const out = [];
      for (const cluster of await retentionClusters(repo, repoDir, f)) {
        const stored = await readStoredPolicy(repoDir, cluster);
        out.push({ cluster, policy: stored?.policy ?? null, updatedAt: stored?.updatedAt ?? null, pinned: [...(await readPins(repoDir, cluster))].sort() });
      }
      if (f.json) ctx.stdout(JSON.stringify({ clusters: out }, null, 2) + "\n");
      else
        for (const c of out)
          ctx.stdout(`${c.cluster}: ${c.policy ? describePolicy(c.policy) : "no policy set here"}${c.pinned.length ? `; pinned: ${c.pinned.join(", ")}` : ""}\n`);
      return 0;
    } finally {
      await repo.close();
    }
  },
};
