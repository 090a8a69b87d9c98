import type { Command } from "../command.ts";
import { verifyBackup } from "../../backup/backup-verify.ts";
import { BACKUP_ID_POSITIONAL, CLUSTER_FLAG, withBackup } from "../backup-cluster.ts";
import { readerRepoFlags } from "../repo-flags.ts";
import { bytes, createProgress } from "../progress.ts";
import { parseLsn } from "../../pg/lsn.ts";
import { isS3Location } from "../../repo/s3-storage.ts";
import { isApiLocation } from "../../util/api-client.ts";
import { openClusterArchive } from "../../wal/archive-reader.ts";
import { verifyBackupWal, type ArchiveProblem } from "../../wal/archive-verify.ts";

export const command: Command = {
  spec: {
    name: "backup verify",
    summary: "Re-read every file of a backup and check it against PostgreSQL's backup_manifest checksums.",
    usage: "klio backup verify ID --repo DIR|URL [--cluster NAME] [--progress] [--json]",
    positionals: [BACKUP_ID_POSITIONAL],
    flags: {
      ...readerRepoFlags("backup verify"),
      cluster: CLUSTER_FLAG,
      progress: { kind: "boolean", help: "show progress" },
      json: { kind: "boolean", help: "print JSON for scripts" },
    },
    details: "Also reads and verifies the WAL segments from the backup's start to its end (a repository directory's).\nExit 0 when every file matches, 1 when a problem is found (each one printed).",
  },
  async run(args, ctx) {
    const f = args.flags;
    return withBackup(f, ctx, args.positionals[0]!, async (repo, cluster, s) => {
      const progress = createProgress(ctx, "verify", Boolean(f.progress));
      const hold = await repo.holdForReading(`verify ${cluster} ${s.id}`);
      const r = await verifyBackup(repo, s, (n) => progress.update(n, s.stats.bytes)).finally(() => hold?.end());
      progress.end();
      // The WAL from the backup's start to its end: without it the backup never becomes consistent.
      const location = String(f.repo);
      const walChecked = !isS3Location(location) && !isApiLocation(location);
      const wal: ArchiveProblem[] = walChecked ? await verifyBackupWal(await openClusterArchive(location, cluster), parseLsn(s.startLsn), s.timeline, parseLsn(s.endLsn)) : [];
      const ok = r.problems.length === 0 && wal.length === 0;
      if (f.json) {
        ctx.stdout(JSON.stringify({ backup: s.id, cluster, ok, ...r, wal, walChecked }, null, 2) + "\n");
      } else {
        for (const p of r.problems) ctx.stdout(`PROBLEM ${p.file ? p.file + ": " : ""}${p.message}\n`);
        for (const w of wal) ctx.stdout(`PROBLEM wal ${w.kind} ${w.file}: ${w.problem}\n`);
        const walNote = walChecked ? (wal.length === 0 ? ", its WAL from start to end verified" : "") : " (its WAL is not checked in this repository)";
        ctx.stdout(`backup ${s.id}: ${r.files} files, ${bytes(r.bytes)} checked, ${ok ? "all match backup_manifest" : `${r.problems.length + wal.length} problem(s)`}${walNote}\n`);
      }
      return ok ? 0 : 1;
    });
  },
};
