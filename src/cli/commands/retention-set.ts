import type { Command } from "../command.ts";
import { KlioError } from "../../util/errors.ts";
import { describePolicy } from "../../backup/retention.ts";
import { writeStoredPolicy } from "../../backup/retention-store.ts";
import { validateClusterName } from "../../wal/archive-layout.ts";
import { isRepository } from "../../repo/repository.ts";
import { notARepository } from "../../repo/wal-only.ts";
import { repoFlag } from "../repo-location.ts";
import { policyFromFlags, RETENTION_RULE_FLAGS } from "../retention-flags.ts";

export const command: Command = {
  spec: {
    name: "retention set",
    summary: "Set a cluster's retention policy in the repository (replacing the one there).",
    usage: "klio retention set --repo DIR --cluster NAME [--recovery-window 7d] [--full N] [--keep-latest N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--min-backups N] | --clear",
    flags: {
      repo: repoFlag("retention set"),
      cluster: { kind: "string", value: "NAME", help: "the cluster", required: true },
      ...RETENTION_RULE_FLAGS,
      clear: { kind: "boolean", help: "remove the policy set here (the daemon's config, if it has one, applies again)" },
      json: { kind: "boolean", help: "print JSON for scripts" },
    },
    details:
      "A backup is kept when any rule keeps it; pinned backups (klio backup pin) are always kept. A policy set here takes precedence over the one in the daemon's config. " +
      "Nothing is deleted until `klio retention apply` runs (the daemon applies it after each backup).",
  },
  async run(args, ctx) {
    const f = args.flags;
    const repoDir = String(f.repo);
    const cluster = validateClusterName(String(f.cluster));
    if (!(await isRepository(repoDir))) throw await notARepository(repoDir);
    const policy = policyFromFlags(f);
    if (f.clear && policy) throw new KlioError("usage", "--clear takes no rules with it");
    if (!f.clear && !policy) throw new KlioError("usage", "give at least one rule (--recovery-window, --full, --keep-…), or --clear");
    await writeStoredPolicy(repoDir, cluster, policy);
    ctx.stdout(f.json ? JSON.stringify({ cluster, policy }) + "\n" : policy ? `retention of ${cluster}: ${describePolicy(policy)}\n` : `retention of ${cluster} cleared\n`);
    return 0;
  },
};
