import type { Command } from "../command.ts";
import type { Snapshot } from "../../backup/snapshot.ts";
import { BACKUP_ID_POSITIONAL, CLUSTER_FLAG, withBackup } from "../backup-cluster.ts";
import { readerRepoFlags } from "../repo-flags.ts";
import { bytes } from "../progress.ts";

export const command: Command = {
  spec: {
    name: "backup show",
    summary: "Show one backup: positions, times, sizes, tablespaces, backup_label.",
    usage: "klio backup show ID --repo DIR|URL [--cluster NAME] [--json]",
    positionals: [BACKUP_ID_POSITIONAL],
    flags: {
      ...readerRepoFlags("backup show"),
      cluster: CLUSTER_FLAG,
      json: { kind: "boolean", help: "print the snapshot manifest as JSON" },
    },
  },
  async run(args, ctx) {
    const f = args.flags;
    return withBackup(f, ctx, args.positionals[0]!, async (_repo, _cluster, s) => {
      ctx.stdout(f.json ? JSON.stringify(s, null, 2) + "\n" : human(s));
      return 0;
    });
  },
};

function human(s: Snapshot): string {
  const st = s.stats;
  return [
    `backup        ${s.id}${s.name ? ` (${s.name})` : ""} of cluster ${s.cluster}`,
    `source        PostgreSQL ${Math.floor(s.pgVersion / 10000)}.${s.pgVersion % 100}, system identifier ${s.systemIdentifier}, ${s.fromStandby ? "standby" : "primary"}`,
    `time          ${s.startTime} … ${s.endTime}`,
    `WAL           ${s.startLsn} … ${s.endLsn}, timeline ${s.timeline}${s.endTimeline !== s.timeline ? ` → ${s.endTimeline}` : ""}`,
    `kind          ${s.kind === "incremental" ? `incremental, against ${s.parent} (it restores alone)` : "full"}`,
    `size          ${st.files} files, ${bytes(st.bytes)} (${bytes(st.zeroBytes)} zeros), ${st.chunks} chunks; ${bytes(st.sentBytes ?? st.bytes)} sent by the server`,
    `stored        ${bytes(st.newBytes)} new in ${st.newChunks} chunks, ${bytes(st.storedBytes)} on disk, in ${(st.durationMs / 1000).toFixed(1)} s`,
    `tablespaces   ${s.tablespaces.length === 0 ? "none" : s.tablespaces.map((t) => `${t.name ?? "?"} (oid ${t.oid}) at ${t.location}`).join(", ")}`,
    "",
    s.backupLabel.trimEnd(),
    "",
  ].join("\n");
}
