import type { Command } from "../command.ts";
import { validateClusterName } from "../../wal/archive-layout.ts";
import { listSnapshotClusters, listSnapshots, snapshotSummary, type Snapshot } from "../../backup/snapshot.ts";
import { openRepoFromFlags, readerRepoFlags } from "../repo-flags.ts";
import { bytes } from "../progress.ts";
import { isRepository } from "../../repo/repository.ts";
import { readPins } from "../../backup/retention-store.ts";

export const command: Command = {
  spec: {
    name: "backup list",
    summary: "List the backups in the repository, oldest first.",
    usage: "klio backup list --repo DIR|URL [--cluster NAME] [--json]",
    flags: {
      ...readerRepoFlags("backup list"),
      cluster: { kind: "string", value: "NAME", help: "only this cluster's backups" },
      json: { kind: "boolean", help: "print JSON for scripts" },
    },
  },
  async run(args, ctx) {
    const f = args.flags;
    const repo = await openRepoFromFlags(f, ctx);
    try {
      const clusters = f.cluster !== undefined ? [validateClusterName(String(f.cluster))] : await listSnapshotClusters(repo);
      const all: Snapshot[] = [];
      const unreadable: { cluster: string; id: string; error: string }[] = [];
      for (const c of clusters) {
        const r = await listSnapshots(repo, c);
        all.push(...r.snapshots);
        unreadable.push(...r.unreadable.map((u) => ({ cluster: c, ...u })));
      }
      // Pins live beside a local repository (retention-store.ts); its copies have none.
      const local = await isRepository(String(f.repo));
      const pins = new Map<string, Set<string>>();
      for (const c of clusters) pins.set(c, local ? await readPins(String(f.repo), c) : new Set());
      const pinned = (s: Snapshot) => pins.get(s.cluster)?.has(s.id) ?? false;
      if (f.json) {
        ctx.stdout(JSON.stringify({ backups: all.map((s) => ({ ...snapshotSummary(s), pinned: pinned(s) })), unreadable }, null, 2) + "\n");
      } else {
        const rows = [["ID", "CLUSTER", "KIND", "END TIME", "SIZE", "SENT", "NEW", "STORED", "START LSN", "END LSN", "FROM", "PINNED", "NAME"]];
        for (const s of all) {
          const x = snapshotSummary(s);
          rows.push([x.id, x.cluster, x.kind, x.endTime.replace("T", " ").replace(/\.\d+Z$/, "Z"), bytes(x.bytes), bytes(x.sentBytes), bytes(x.newBytes), bytes(x.storedBytes), x.startLsn, x.endLsn, x.fromStandby ? "standby" : "primary", pinned(s) ? "yes" : "", x.name ?? ""]);
        }
        const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
        ctx.stdout(rows.map((r) => r.map((v, i) => v.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n") + "\n");
        for (const u of unreadable) ctx.stderr(`klio: backup ${u.id} of ${u.cluster} is unreadable: ${u.error}\n`);
      }
      return unreadable.length ? 1 : 0;
    } finally {
      await repo.close();
    }
  },
};
