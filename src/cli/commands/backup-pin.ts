import type { Command } from "../command.ts";
import { setPin } from "../../backup/retention-store.ts";
import { BACKUP_ID_POSITIONAL, CLUSTER_FLAG, withBackup } from "../backup-cluster.ts";
import { localRepoFlags } from "../repo-flags.ts";

/** `backup pin` and `backup unpin`: the same but for the direction. */
export function pinCommand(pin: boolean): Command {
  const name = pin ? "backup pin" : "backup unpin";
  return {
    spec: {
      name,
      summary: pin ? "Keep a backup whatever the retention policy says." : "Let the retention policy decide about a pinned backup again.",
      usage: `klio ${name} ID --repo DIR [--cluster NAME] [--json]`,
      positionals: [BACKUP_ID_POSITIONAL],
      flags: { ...localRepoFlags(name), cluster: CLUSTER_FLAG, json: { kind: "boolean", help: "print JSON for scripts" } },
    },
    async run(args, ctx) {
      const f = args.flags;
      return withBackup(f, ctx, args.positionals[0]!, async (_repo, cluster, s) => {
        await setPin(String(f.repo), cluster, s.id, pin);
        ctx.stdout(f.json ? JSON.stringify({ cluster, backup: s.id, pinned: pin }) + "\n" : `backup ${s.id} of ${cluster} ${pin ? "pinned" : "unpinned"}\n`);
        return 0;
      });
    },
  };
}

export const command = pinCommand(true);
