import type { Command } from "../command.ts";
import { chunkIdHex } from "../../repo/chunk-id.ts";
import { readFileList } from "../../repo/file-list.ts";
import type { Repository, RepoProblem } from "../../repo/repository.ts";
import { listSnapshotClusters, listSnapshots, readChunks, type Snapshot } from "../../backup/snapshot.ts";
import { openRepoFromFlags, readerRepoFlags } from "../repo-flags.ts";
import { createProgress } from "../progress.ts";
import { parseLsn } from "../../pg/lsn.ts";
import { isS3Location } from "../../repo/s3-storage.ts";
import { isApiLocation } from "../../util/api-client.ts";
import { checkRepositoryWal, type BackupWalNeed, type ClusterWalProblem } from "../../wal/archive-verify.ts";
import { manifestPath } from "../../backup/backup-manifest.ts";

const LEFTOVERS = new Set(["unindexed-pack"]);

export const command: Command = {
  spec: {
    name: "repo check",
    summary: "Check the repository's structure; with --read-data read back every chunk and compare its hash.",
    usage: "klio repo check --repo DIR|URL [--read-data] [--progress] [--json]",
    flags: {
      ...readerRepoFlags("repo check"),
      "read-data": { kind: "boolean", help: "read, decrypt and decompress every chunk and compare its hash, and verify every WAL file (slow)" },
      progress: { kind: "boolean", help: "show progress" },
      json: { kind: "boolean", help: "print JSON for scripts" },
    },
    details:
      "Each problem names the pack and, for damaged chunks, the backups and files that use them. The WAL archive\n" +
      "(of a repository directory) is checked too: sizes, headers and checksum files of every segment (with\n" +
      "--read-data every segment and history file read and verified), and that every backup's WAL is there from\n" +
      "its start to the archive's end. Exit 1 when a problem is found.",
  },
  async run(args, ctx) {
    const f = args.flags;
    const repo = await openRepoFromFlags(f, ctx);
    try {
      const progress = createProgress(ctx, "check", Boolean(f.progress));
      const found = await repo.check({ readData: Boolean(f["read-data"]), onProgress: (d, t) => progress.update(d, t) });
      progress.end();
      // Leftovers of an interrupted writer lose nothing: noted, not failed on (GC frees them).
      const notes = found.filter((p) => LEFTOVERS.has(p.kind));
      const problems = found.filter((p) => !LEFTOVERS.has(p.kind));
      const backups = await backupsUsing(repo, problems);
      const report = problems.map((p) => describe(p, backups));
      const unreadable: string[] = [];
      const needs = new Map<string, BackupWalNeed[]>();
      for (const c of await listSnapshotClusters(repo)) {
        const { snapshots, unreadable: bad } = await listSnapshots(repo, c);
        for (const u of bad) unreadable.push(`backup ${u.id} of ${c}: ${u.error}`);
        needs.set(c, snapshots.map((s) => ({ id: s.id, startLsn: parseLsn(s.startLsn), timeline: s.timeline })));
      }
      const wal = await checkWal(String(f.repo), needs, Boolean(f["read-data"]));
      if (f.json) {
        ctx.stdout(JSON.stringify({ ok: report.length === 0 && unreadable.length === 0 && wal.problems.length === 0, problems: report, notes, unreadableBackups: unreadable, wal: wal.problems, walChecked: wal.checked }, null, 2) + "\n");
      } else {
        for (const p of report) {
          if ("chunks" in p) {
            // One line for a whole pack, however many chunks it held.
            const used = p.backups.length === 0 ? "no backup uses them" : `used by ${p.backups.length === 1 ? "backup" : `${p.backups.length} backups:`} ${listed(p.backups.map((b) => `${b.backup} of ${b.cluster} (${b.files} file${b.files === 1 ? "" : "s"})`))}`;
            ctx.stdout(`PROBLEM ${p.kind} in pack ${p.pack}: ${p.message}; ${used}\n`);
            continue;
          }
          ctx.stdout(`PROBLEM ${p.kind}${p.pack ? ` in pack ${p.pack}` : ""}${p.chunkId ? ` chunk ${p.chunkId}` : ""}: ${p.message}\n`);
          for (const u of p.usedBy) ctx.stdout(`  used by backup ${u.backup} of ${u.cluster}: ${u.file}\n`);
        }
        for (const u of unreadable) ctx.stdout(`PROBLEM ${u}\n`);
        for (const w of wal.problems) {
          ctx.stdout(`PROBLEM wal ${w.kind} ${w.file ? `${w.cluster}/${w.file}` : w.cluster}: ${w.problem}\n`);
          if (w.backups.length) ctx.stdout(`  needed by backup${w.backups.length > 1 ? "s" : ""} ${w.backups.join(", ")} of ${w.cluster}\n`);
        }
        if (!wal.checked) ctx.stdout(`note: the WAL archive of ${String(f.repo)} is not checked (only a repository directory's is)\n`);
        for (const n of notes) ctx.stdout(`note: ${n.message}\n`);
        if (report.length === 0 && unreadable.length === 0 && wal.problems.length === 0)
          ctx.stdout(`repository ${repo.root}: no problems found${f["read-data"] ? ` (every chunk${wal.checked ? " and WAL file" : ""} read back)` : ""}\n`);
      }
      return report.length === 0 && unreadable.length === 0 && wal.problems.length === 0 ? 0 : 1;
    } finally {
      await repo.close();
    }
  },
};

/** The WAL archive's problems (a repository directory's; S3 and HTTP copies are not checked here). */
async function checkWal(location: string, needs: Map<string, BackupWalNeed[]>, readData: boolean): Promise<{ checked: boolean; problems: ClusterWalProblem[] }> {
  if (isS3Location(location) || isApiLocation(location)) return { checked: false, problems: [] };
  return { checked: true, problems: await checkRepositoryWal(location, needs, { readData }) };
}

type Usage = { cluster: string; backup: string; file: string };

/** A problem as reported: a chunk's names every file that uses it; a pack's, the backups (and how many of their files). */
function describe(p: RepoProblem, usage: Map<string, Usage[]>) {
  const { chunkIds, ...rest } = p;
  if (!chunkIds) return { ...rest, usedBy: p.chunkId ? (usage.get(p.chunkId) ?? []) : [] };
  const files = new Map<string, { cluster: string; backup: string; files: Set<string> }>();
  for (const id of chunkIds) {
    for (const u of usage.get(id) ?? []) {
      const k = `${u.cluster}/${u.backup}`;
      if (!files.has(k)) files.set(k, { cluster: u.cluster, backup: u.backup, files: new Set() });
      files.get(k)!.files.add(u.file);
    }
  }
  const backups = [...files.values()].sort((a, b) => (a.cluster === b.cluster ? (a.backup < b.backup ? -1 : 1) : a.cluster < b.cluster ? -1 : 1));
  return { ...rest, chunks: chunkIds.length, backups: backups.map((b) => ({ cluster: b.cluster, backup: b.backup, files: b.files.size })) };
}

/** "a, b and c", or the first few and how many more. */
function listed(items: string[], most = 5): string {
  if (items.length > most) return `${items.slice(0, most).join(", ")} and ${items.length - most} more`;
  return items.length <= 1 ? (items[0] ?? "") : `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;
}

/** Which backups and files use the damaged chunks (one pass over every file list). */
async function backupsUsing(repo: Repository, problems: RepoProblem[]): Promise<Map<string, Usage[]>> {
  const bad = new Set(problems.flatMap((p) => p.chunkIds ?? (p.chunkId === undefined ? [] : [p.chunkId])));
  const out = new Map<string, Usage[]>();
  if (bad.size === 0) return out;
  const note = (id: string, s: Snapshot, file: string) => {
    const list = out.get(id) ?? [];
    list.push({ cluster: s.cluster, backup: s.id, file });
    out.set(id, list);
  };
  for (const cluster of await listSnapshotClusters(repo)) {
    for (const s of (await listSnapshots(repo, cluster)).snapshots) {
      for (const id of s.backupManifest.chunks) if (bad.has(id)) note(id, s, "backup_manifest");
      for (const id of s.fileList.pieces) if (bad.has(id)) note(id, s, "(its file list)");
      if (s.fileList.pieces.some((p) => bad.has(p))) continue; // the list itself is damaged
      let file = "";
      try {
        for await (const ev of readFileList(readChunks(repo, s.fileList.pieces))) {
          if (ev.kind === "file") file = manifestPath(ev.root, ev.path);
          else if (ev.kind === "chunk") {
            const hex = chunkIdHex(ev.id);
            if (bad.has(hex)) note(hex, s, file);
          }
        }
      } catch {
        // reported by check() already (a damaged piece of the list)
      }
    }
  }
  return out;
}
