import type { Command } from "../command.ts";
import { verifyBackup } from "../../backup/backup-verify.ts";
import { BACKUP_ID_POSITIONAL, CLUSTER_FLAG, withBackup } from "../backup-cluster.ts";
import { REPO_FLAGS } from "../repo-flags.ts";
import { bytes, createProgress } from "../progress.ts";

export const command: Command = {
  spec: {
    name: "backup verify",
    summary: "Re-read every file of a backup and check it against PostgreSQL's backup_manifest checksums.",
    usage: "klio backup verify ID --repo DIR [--cluster NAME] [--progress] [--json]",
    positionals: [BACKUP_ID_POSITIONAL],
    flags: {
      ...REPO_FLAGS,
      cluster: CLUSTER_FLAG,
      progress: { kind: "boolean", help: "show progress" },
      json: { kind: "boolean", help: "print JSON for scripts" },
    },
    details: "Exit 0 when every file matches, 1 when a problem is found (each one printed).",
  },
  async run(args, ctx) {
    const f = args.flags;
    return withBackup(f, ctx, args.positionals[0]!, async (repo, cluster, s) => {
      const progress = createProgress(ctx, "verify", Boolean(f.progress));
      const hold = await repo.holdForReading(`verify ${cluster} ${s.id}`);
      const r = await verifyBackup(repo, s, (n) => progress.update(n, s.stats.bytes)).finally(() => hold?.end());
      progress.end();
      if (f.json) {
        ctx.stdout(JSON.stringify({ backup: s.id, cluster, ok: r.problems.length === 0, ...r }, null, 2) + "\n");
      } else {
        for (const p of r.problems) ctx.stdout(`PROBLEM ${p.file ? p.file + ": " : ""}${p.message}\n`);
        ctx.stdout(`backup ${s.id}: ${r.files} files, ${bytes(r.bytes)} checked, ${r.problems.length === 0 ? "all match backup_manifest" : `${r.problems.length} problem(s)`}\n`);
      }
      return r.problems.length === 0 ? 0 : 1;
    });
  },
};
