import type { Command } from "../command.ts";
import { validateClusterName } from "../../wal/archive-layout.ts";
import { loadSnapshot, type Snapshot } from "../../backup/snapshot.ts";
import { resolveCluster } from "../backup-cluster.ts";
import { openRepoFromFlags, REPO_FLAGS } from "../repo-flags.ts";
import { bytes } from "../progress.ts";

export const command: Command = {
  spec: {
    name: "backup show",
    summary: "Show one backup: positions, times, sizes, tablespaces, backup_label.",
    usage: "klio backup show ID --repo DIR [--cluster NAME] [--json]",
    positionals: [{ name: "ID", help: "backup id (see klio backup list)" }],
    flags: {
      ...REPO_FLAGS,
      cluster: { kind: "string", value: "NAME", help: "cluster (needed when the repository holds several)" },
      json: { kind: "boolean", help: "print the snapshot manifest as JSON" },
    },
  },
  async run(args, ctx) {
    const f = args.flags;
    const repo = await openRepoFromFlags(f, ctx);
    try {
      const cluster = await resolveCluster(repo, f.cluster === undefined ? undefined : validateClusterName(String(f.cluster)));
      const s = await loadSnapshot(repo, cluster, args.positionals[0]!);
      ctx.stdout(f.json ? JSON.stringify(s, null, 2) + "\n" : human(s));
      return 0;
    } finally {
      await repo.close();
    }
  },
};

function human(s: Snapshot): string {
  const st = s.stats;
  return [
    `backup        ${s.id}${s.name ? ` (${s.name})` : ""} of cluster ${s.cluster}`,
    `source        PostgreSQL ${Math.floor(s.pgVersion / 10000)}.${s.pgVersion % 100}, system identifier ${s.systemIdentifier}, ${s.fromStandby ? "standby" : "primary"}`,
    `time          ${s.startTime} … ${s.endTime}`,
    `WAL           ${s.startLsn} … ${s.endLsn}, timeline ${s.timeline}${s.endTimeline !== s.timeline ? ` → ${s.endTimeline}` : ""}`,
    `size          ${st.files} files, ${bytes(st.bytes)} (${bytes(st.zeroBytes)} zeros), ${st.chunks} chunks`,
    `stored        ${bytes(st.newBytes)} new in ${st.newChunks} chunks, ${bytes(st.storedBytes)} on disk, in ${(st.durationMs / 1000).toFixed(1)} s`,
    `tablespaces   ${s.tablespaces.length === 0 ? "none" : s.tablespaces.map((t) => `${t.name ?? "?"} (oid ${t.oid}) at ${t.location}`).join(", ")}`,
    "",
    s.backupLabel.trimEnd(),
    "",
  ].join("\n");
}
