import type { Command } from "../command.ts";
import { KlioError } from "../../util/errors.ts";
import { parseDuration } from "../../util/duration.ts";
import { snapshotReferences } from "../../backup/snapshot-references.ts";
import type { MaintenanceReport } from "../../repo/maintenance.ts";
import { commandLogger, localRepoFlags, openRepoFromFlags } from "../repo-flags.ts";
import { bytes as formatBytes } from "../progress.ts";

export const command: Command = {
  spec: {
    name: "repo maintenance",
    summary: "Free the space of data no backup uses: remove and rewrite packs, merge the index.",
    usage: "klio repo maintenance --repo DIR [--dry-run] [--repack-share 0.5] [--max-wait 1h] [--json]",
    flags: {
      ...localRepoFlags("repo maintenance"),
      "dry-run": { kind: "boolean", help: "only report what would be freed" },
      "repack-share": { kind: "number", value: "SHARE", help: "rewrite a pack when at least this share of it is garbage (0.05 to 1, default 0.5)" },
      "max-wait": { kind: "string", value: "DURATION", help: "wait this long for backups that started before maintenance (default 1h); past it, the freeing is finished by the next run" },
      json: { kind: "boolean", help: "print JSON for scripts" },
    },
    details:
      "Safe while backups run: a backup that started before maintenance keeps every chunk it uses, and maintenance waits for it before removing packs. " +
      "A run killed at any point leaves the repository consistent; the next run finishes it. Exit 0 when done, 3 when the freeing waits for a running backup.",
  },
  async run(args, ctx) {
    const f = args.flags;
    const share = f["repack-share"] === undefined ? undefined : Number(f["repack-share"]);
    if (share !== undefined && !(share >= 0.05 && share <= 1)) throw new KlioError("usage", `--repack-share must be between 0.05 and 1, got ${String(f["repack-share"])}`);
    const maxWaitMs = f["max-wait"] === undefined ? undefined : parseDuration(String(f["max-wait"]));
    if (maxWaitMs === null) throw new KlioError("usage", `--max-wait must be a duration such as 30m or 2h, got "${String(f["max-wait"])}"`);
    const repo = await openRepoFromFlags(f, ctx);
    try {
      const log = commandLogger(ctx, false);
      const report = await repo.maintain(snapshotReferences(repo), { dryRun: Boolean(f["dry-run"]), repackShare: share, maxWaitMs, log });
      ctx.stdout(f.json ? JSON.stringify(report, null, 2) + "\n" : describe(report));
      return report.deferred ? 3 : 0;
    } finally {
      await repo.close();
    }
  },
};

function describe(r: MaintenanceReport): string {
  const lines: string[] = [];
  if (r.resumed) lines.push(`finished an interrupted maintenance first`);
  lines.push(`${r.snapshots} backups use ${r.chunks.live} chunks; ${r.packs.before} packs, ${formatBytes(r.bytes.before)}`);
  if (r.dryRun) {
    lines.push(`would remove ${r.packs.removed} packs, rewrite ${r.packs.rewritten}, remove ${r.packs.unindexedRemoved} left by interrupted backups; ${formatBytes(r.bytes.garbageLeft)} of garbage would stay in packs mostly in use`);
  } else {
    const gone = r.deferred ? 0 : r.packs.removed + r.packs.rewritten;
    lines.push(`removed ${gone} packs (${r.packs.rewritten} rewritten into ${r.packs.written} new ones), ${r.packs.unindexedRemoved} left by interrupted backups, ${r.tempFilesRemoved} temporary files`);
    lines.push(`freed ${formatBytes(r.bytes.freed)}, wrote ${formatBytes(r.bytes.written)}; ${formatBytes(r.bytes.garbageLeft)} of garbage stays in packs mostly in use`);
    lines.push(`index: ${r.indexFiles.before} files before, ${r.indexFiles.after} after`);
    if (r.chunks.broughtBack) lines.push(`kept ${r.chunks.broughtBack} chunks that backups running meanwhile used`);
    if (r.deferred) lines.push(`waiting for: ${r.deferred.sessions.join("; ")}: ${formatBytes(r.deferred.bytes)} will be freed by the next run`);
  }
  return lines.join("\n") + "\n";
}
