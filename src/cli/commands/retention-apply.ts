import type { Command } from "../command.ts";
import { KlioError } from "../../util/errors.ts";
import { applyRetention, type OffsiteHoldings, type RetentionResult } from "../../backup/retention-apply.ts";
import { describePolicy } from "../../backup/retention.ts";
import { readStoredPolicy } from "../../backup/retention-store.ts";
import { readOffsiteMarker } from "../../offsite/sync.ts";
import { parseS3Url, S3Storage } from "../../repo/s3-storage.ts";
import { CLUSTER_FLAG } from "../backup-cluster.ts";
import { commandLogger, localRepoFlags, openRepoFromFlags } from "../repo-flags.ts";
import { retentionClusters } from "../retention-flags.ts";
import { S3_FLAGS, s3OptionsFromFlags } from "../s3-flags.ts";
import { bytes } from "../progress.ts";
import type { CliContext } from "../command.ts";

export const command: Command = {
  spec: {
    name: "retention apply",
    summary: "Delete the backups no retention rule keeps, and the WAL no kept backup needs.",
    usage: "klio retention apply --repo DIR [--cluster NAME] [--dry-run] [--offsite s3://BUCKET/PREFIX --s3-… | --ignore-offsite] [--json]",
    flags: {
      ...localRepoFlags("retention apply"),
      cluster: CLUSTER_FLAG,
      "dry-run": { kind: "boolean", help: "only report what would be deleted, and why each backup stays" },
      offsite: { kind: "string", value: "s3://BUCKET[/PREFIX]", help: "the repository's offsite copy: nothing is deleted before it is there" },
      ...S3_FLAGS,
      "ignore-offsite": { kind: "boolean", help: "delete even what has not reached the offsite copy the repository names" },
      json: { kind: "boolean", help: "print JSON for scripts" },
    },
    details:
      "Uses the policy set with `klio retention set`. Deleting a backup removes its snapshot; `klio repo maintenance` then frees the data no backup uses. " +
      "WAL is removed only below the oldest backup that stays, and not at all while a backup cannot be read.",
  },
  async run(args, ctx) {
    const f = args.flags;
    const repoDir = String(f.repo);
    const offsite = await offsiteView(f, ctx, repoDir);
    const repo = await openRepoFromFlags(f, ctx);
    try {
      const log = commandLogger(ctx, false);
      const results: (RetentionResult & { policy: string })[] = [];
      const without: string[] = [];
      for (const cluster of await retentionClusters(repo, repoDir, f)) {
        const stored = await readStoredPolicy(repoDir, cluster);
        if (!stored) {
          if (f.cluster !== undefined) throw new KlioError("no-policy", `cluster ${cluster} has no retention policy in ${repoDir}: set one with \`klio retention set\``);
          without.push(cluster);
          continue;
        }
        const r = await applyRetention(repo, repoDir, cluster, stored.policy, { dryRun: Boolean(f["dry-run"]), now: new Date(), offsite, log });
        results.push({ ...r, policy: describePolicy(stored.policy) });
      }
      if (f.json) ctx.stdout(JSON.stringify({ results, withoutPolicy: without }, null, 2) + "\n");
      else {
        for (const r of results) ctx.stdout(describe(r));
        for (const c of without) ctx.stdout(`${c}: no retention policy here, nothing deleted (set one with klio retention set)\n`);
      }
      return 0;
    } finally {
      await repo.close();
    }
  },
};

/** The offsite copy to ask, from --offsite; refused when the repository names one and none is given. */
async function offsiteView(f: Record<string, unknown>, ctx: CliContext, repoDir: string): Promise<OffsiteHoldings | null> {
  const marker = await readOffsiteMarker(repoDir);
  if (f.offsite === undefined) {
    if (marker && !f["ignore-offsite"])
      throw new KlioError("usage", `${repoDir} is copied to ${marker.url}: give --offsite ${marker.url} and its --s3-… flags, so that nothing is deleted before it is there (or --ignore-offsite)`);
    return null;
  }
  const remote = await S3Storage.open(parseS3Url(String(f.offsite)), await s3OptionsFromFlags(f, ctx));
  const keys = new Set((await remote.list("")).map((e) => e.key));
  return { description: remote.description, has: (k) => keys.has(k) };
}

function describe(r: RetentionResult & { policy: string }): string {
  const verb = r.dryRun ? "would delete" : "deleted";
  const lines = [`${r.cluster} (${r.policy}):`];
  for (const d of r.decisions) {
    const what = d.keep ? "keep  " : r.deleted.includes(d.id) ? (r.dryRun ? "delete" : "gone  ") : "wait  ";
    lines.push(`  ${what} ${d.id}  ${d.keep ? d.reasons.join("; ") : r.deleted.includes(d.id) ? d.reasons[0] : "not yet in the offsite copy"}`);
  }
  for (const id of r.unreadable) lines.push(`  keep   ${id}  its snapshot cannot be read (WAL is left alone)`);
  lines.push(`  ${verb} ${r.deleted.length} backups; WAL: ${verb} ${r.wal.removed} files (${bytes(r.wal.bytes)})${r.wal.firstKept ? `, kept from ${r.wal.firstKept}` : ""}${r.wal.waitingForOffsite ? `, ${r.wal.waitingForOffsite} wait for the offsite copy` : ""}`);
  return lines.join("\n") + "\n";
}
