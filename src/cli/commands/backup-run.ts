import type { Command } from "../command.ts";
import { KlioError } from "../../util/errors.ts";
import { parseConnInfo } from "../../pg/conninfo.ts";
import { pgFlag } from "../pg-flag.ts";
import { validateClusterName } from "../../wal/archive-layout.ts";
import { runBackup } from "../../backup/backup-run.ts";
import { parseFullEvery } from "../../backup/backup-kind.ts";
import { lockBackup } from "../../backup/backup-lock.ts";
import { commandLogger, openRepoFromFlags, localRepoFlags, WORKERS_FLAG } from "../repo-flags.ts";
import { bytes, createProgress } from "../progress.ts";

export const command: Command = {
  spec: {
    name: "backup run",
    summary: "Take a hot base backup of a cluster over the replication protocol into the repository.",
    usage: "klio backup run --repo DIR --cluster NAME [--pg CONNSTR] [--full | --incremental] [--full-every 7d] [--name N] [--wait [--wait-timeout SECONDS]] [--progress] [--json]",
    flags: {
      ...localRepoFlags("backup run", { why: "writes the backup into it, and an S3 copy or the appliance's API can only be read (the offsite copy follows with `klio offsite sync`)" }),
      ...WORKERS_FLAG,
      cluster: { kind: "string", value: "NAME", help: "cluster name (its WAL must be streamed into the same repository)", required: true },
      pg: pgFlag("the primary or a standby"),
      full: { kind: "boolean", help: "take a full backup even where an incremental one could be taken" },
      incremental: { kind: "boolean", help: "take an incremental backup, or fail (exit 1) saying why one cannot be taken" },
      "full-every": { kind: "string", value: "DURATION", help: "take a full backup when the last full one is this old (7d, 36h, 2w; off: never by age)", default: "7d" },
      name: { kind: "string", value: "N", help: "a label kept with the backup" },
      progress: { kind: "boolean", help: "show progress (a bar on a terminal, a line every 10 s otherwise)" },
      "wal-timeout": { kind: "number", value: "SECONDS", help: "how long to wait for the backup's WAL to reach the archive", default: 300 },
      json: { kind: "boolean", help: "print the finished backup as JSON on stdout (logs stay on stderr)" },
      wait: { kind: "boolean", help: "when another backup of the cluster is running, wait for it to end instead of exiting 4" },
      "wait-timeout": { kind: "number", value: "SECONDS", help: "with --wait: exit 4 if the other backup still runs after this long (default: wait as long as it takes)" },
    },
    details: [
      "Full or incremental: with neither --full nor --incremental the backup is incremental when it can be —",
      "the server is PostgreSQL 17 or newer with summarize_wal = on, the repository holds a backup of the same",
      "system, and the server's WAL summaries still reach back to its start — and full otherwise, with the",
      "reason in one log line. An incremental backup moves only the changed blocks and is stored as a complete",
      "backup: it restores alone, and deleting any other backup never breaks it. PostgreSQL 15 and 16 servers",
      "always get full backups.",
      "The backup is recorded only once every chunk is durable and the WAL from its start to its end is in the",
      "archive (klio wal stream must be running for the cluster). An interrupted backup leaves nothing visible;",
      "the next one reuses the data it had stored.",
      "One backup of a cluster runs at a time (this command, and the daemon's scheduled and API backups): while",
      "another runs, this one exits 4 at once, naming it, before it reads anything; --wait waits for it instead.",
    ].join("\n"),
  },
  async run(args, ctx) {
    const f = args.flags;
    const cluster = validateClusterName(String(f.cluster));
    const walTimeout = Number(f["wal-timeout"]);
    if (!(walTimeout >= 1 && walTimeout <= 86_400)) throw new KlioError("usage", `backup run: --wal-timeout must be between 1 and 86400 seconds, got ${walTimeout}`);
    if (f.name !== undefined && (String(f.name).length > 200 || /[\0-\x1f]/.test(String(f.name)))) throw new KlioError("usage", "backup run: --name must be at most 200 printable characters");
    const waitTimeout = f["wait-timeout"] === undefined ? undefined : Number(f["wait-timeout"]);
    if (waitTimeout !== undefined && !(f.wait && waitTimeout >= 0 && waitTimeout <= 7 * 86_400))
      throw new KlioError("usage", `backup run: --wait-timeout goes with --wait and must be between 0 and 604800 seconds, got ${waitTimeout}`);
    if (f.full && f.incremental) throw new KlioError("usage", "backup run: --full and --incremental exclude each other");
    const fullEveryMs = parseFullEvery(String(f["full-every"]), "backup run: --full-every");
    const conninfo = parseConnInfo(String(f.pg ?? ""), ctx.env, { application_name: "klio" });
    const log = commandLogger(ctx, !ctx.isTTY);
    // Before anything is read or connected to: one backup of a cluster at a time.
    const repoDir = String(f.repo);
    const lock = await lockBackup(repoDir, cluster, {
      purpose: "klio backup run",
      wait: f.wait ? { signal: ctx.signal, timeoutMs: waitTimeout === undefined ? undefined : waitTimeout * 1000, onBusy: (m) => log.info("backup.waiting", { reason: m }) } : undefined,
    });
    const repo = await openRepoFromFlags(f, ctx).catch(async (e) => {
      await lock.release();
      throw e;
    });
    const progress = createProgress(ctx, "backup", Boolean(f.progress));
    try {
      const s = await runBackup({
        repoDir, repo, cluster, lock, conninfo, name: f.name as string | undefined, log, signal: ctx.signal,
        walTimeoutMs: walTimeout * 1000, mode: f.full ? "full" : f.incremental ? "incremental" : "auto", fullEveryMs,
        onProgress: (p) => progress.update(p.doneBytes, p.totalBytes, p.phase === "waiting-for-wal" ? "waiting for WAL" : undefined),
      });
      progress.end();
      if (f.json) ctx.stdout(JSON.stringify(s, null, 2) + "\n");
      else ctx.stdout(`${s.kind === "incremental" ? `incremental backup ${s.id} of ${cluster} (against ${s.parent}, ${bytes(s.stats.sentBytes ?? 0)} sent)` : `backup ${s.id} of ${cluster}`}: ${s.stats.files} files, ${bytes(s.stats.bytes)}, ${bytes(s.stats.newBytes)} new, ${bytes(s.stats.storedBytes)} stored, ${s.startLsn} … ${s.endLsn} in ${(s.stats.durationMs / 1000).toFixed(1)} s\n`);
      return 0;
    } finally {
      progress.end();
      await repo.close();
      await lock.release();
    }
  },
};
