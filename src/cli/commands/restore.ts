import path from "node:path";
import type { Command } from "../command.ts";
import { KlioError } from "../../util/errors.ts";
import { selfCommand } from "../../util/self-command.ts";
import { runRestore, type TablespaceMapping } from "../../restore/restore.ts";
import { checkDestination } from "../../restore/destination.ts";
import { archiveEndAt } from "../../wal/archive-end.ts";
import { isS3Location, parseS3Url, S3Storage } from "../../repo/s3-storage.ts";
import { s3OptionsFromFlags } from "../s3-flags.ts";
import { tokenFromFlags } from "../secret-files.ts";
import { formatLsn } from "../../pg/lsn.ts";
import { parseRecoveryTarget, parseTargetAction, parseTargetTimeline } from "../../restore/recovery-target.ts";
import { CLUSTER_FLAG, clusterFromFlags } from "../backup-cluster.ts";
import { commandLogger, openRepoFromFlags, remoteAccessFlags, readerRepoFlags, WORKERS_FLAG } from "../repo-flags.ts";
import { bytes, createProgress } from "../progress.ts";

export const command: Command = {
  spec: {
    name: "restore",
    summary: "Restore a backup into a new data directory, set up to recover to a point in time.",
    usage: "klio restore DEST --repo DIR|URL [--cluster NAME] [--backup-id ID|latest] [--target-time T | --target-lsn L | --target-xid X | --target-name N | --target-immediate] [--allow-future-target] [--target-action promote|pause|shutdown] [--target-timeline latest|current|N] [--tablespaces name:path,…]",
    positionals: [{ name: "DEST", help: "the new data directory (must not exist, or be an empty directory; not a symbolic link)" }],
    flags: {
      ...readerRepoFlags("restore"),
      ...WORKERS_FLAG,
      cluster: CLUSTER_FLAG,
      "backup-id": { kind: "string", value: "ID", help: "the backup to restore (default: the newest that can reach the target)" },
      "target-time": { kind: "string", value: "T", help: "recover to this time (with a time zone, e.g. 2026-11-24 07:15:00+00)" },
      "target-lsn": { kind: "string", value: "L", help: "recover to this WAL position" },
      "target-xid": { kind: "string", value: "X", help: "recover to this transaction id" },
      "target-name": { kind: "string", value: "N", help: "recover to this restore point (pg_create_restore_point)" },
      "target-immediate": { kind: "boolean", help: "stop as soon as the backup is consistent" },
      "target-action": { kind: "string", value: "ACTION", help: "at the target: promote (default), pause or shutdown" },
      "target-timeline": { kind: "string", value: "TLI", help: "latest (default), current or a number" },
      "allow-future-target": { kind: "boolean", help: "write a --target-time or --target-lsn past the end of the WAL archive all the same (WAL still to come)" },
      tablespaces: { kind: "string", value: "MAP", help: "where tablespaces go: name:/path or oid:/path, comma-separated (default: where they were)" },
      concurrency: { kind: "number", value: "N", help: "frames (of up to 16 chunks) read and decoded at once", default: 12 },
      "wal-retry-for": { kind: "number", value: "SECONDS", help: "how long the restore_command retries network and HTTP 5xx errors before recovery stops (get-wal --retry-for; default 60)" },
      progress: { kind: "boolean", help: "show progress" },
      json: { kind: "boolean", help: "print the result as JSON" },
    },
    details: [
      "With no target, recovery replays every archived WAL byte, including the segment the receiver is still",
      "writing (get-wal --partial). The restore_command written to postgresql.auto.conf calls this same klio.",
      "Then start PostgreSQL on DEST (pg_ctl -D DEST start).",
      "DEST and the tablespace directories are checked before anything is written (new or empty, writable, not a",
      "symbolic link, not on /proc, /sys or /dev), and a restore that fails removes what it wrote.",
    ].join("\n"),
  },
  async run(args, ctx) {
    const f = args.flags;
    const target = parseRecoveryTarget({
      time: f["target-time"] as string | undefined, lsn: f["target-lsn"] as string | undefined, xid: f["target-xid"] as string | undefined,
      name: f["target-name"] as string | undefined, immediate: Boolean(f["target-immediate"]),
    });
    const action = parseTargetAction(f["target-action"] as string | undefined, target);
    const timeline = parseTargetTimeline(f["target-timeline"] as string | undefined);
    const tablespaces = parseTablespaceMap(f.tablespaces as string | undefined);
    const concurrency = Number(f.concurrency);
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) throw new KlioError("usage", `restore: --concurrency must be 1 to 256, got ${f.concurrency}`);
    const walRetrySeconds = f["wal-retry-for"] as number | undefined;
    if (walRetrySeconds !== undefined && !(walRetrySeconds >= 0 && walRetrySeconds <= 86_400)) throw new KlioError("usage", `restore: --wal-retry-for must be between 0 and 86400 seconds, got ${walRetrySeconds}`);
    // The destination first: a bad one is refused before the repository is even opened.
    const dest = await checkDestination(path.resolve(args.positionals[0]!), "the restore destination");
    const repo = await openRepoFromFlags(f, ctx);
    const progress = createProgress(ctx, "restore", Boolean(f.progress));
    const hold = await repo.holdForReading(`restore into ${dest.dir}`).catch(async (e) => {
      await repo.close();
      throw e;
    });
    try {
      const cluster = await clusterFromFlags(repo, f);
      const location = String(f.repo);
      const access = {
        token: await tokenFromFlags(f, ctx),
        s3: isS3Location(location) ? async () => S3Storage.open(parseS3Url(location), await s3OptionsFromFlags(f, ctx)) : undefined,
      };
      const r = await runRestore({
        repoDir: location, accessFlags: remoteAccessFlags(f, ctx), repo, cluster, dest, backupId: f["backup-id"] as string | undefined,
        target, action, timeline, tablespaces, klio: selfCommand(), walRetrySeconds, concurrency,
        archiveEnd: (segSize) => archiveEndAt(location, cluster, segSize, access), allowFutureTarget: Boolean(f["allow-future-target"]),
        log: commandLogger(ctx, !ctx.isTTY), warn: (line) => ctx.stderr(`klio: warning: ${line}\n`),
        signal: ctx.signal, onProgress: (done, total) => progress.update(done, total),
      });
      progress.end();
      if (f.json) ctx.stdout(JSON.stringify({ backup: r.snapshot.id, cluster, dest: r.dest, files: r.files, bytes: r.bytes, tablespaces: r.tablespaces, target, skipped: r.skipped }, (_k, v) => (typeof v === "bigint" ? formatLsn(v) : v), 2) + "\n");
      else ctx.stdout(`restored backup ${r.snapshot.id} of ${cluster} into ${r.dest}: ${r.files} files, ${bytes(r.bytes)}; start it with: pg_ctl -D ${r.dest} start\n`);
      return 0;
    } finally {
      progress.end();
      await hold?.end();
      await repo.close();
    }
  },
};

function parseTablespaceMap(text: string | undefined): TablespaceMapping[] {
  if (text === undefined) return [];
  return text.split(",").map((item) => {
    const at = item.indexOf(":");
    const key = item.slice(0, at).trim();
    const dir = item.slice(at + 1).trim();
    if (at <= 0 || dir === "" || !path.isAbsolute(dir)) throw new KlioError("usage", `restore: --tablespaces takes name:/absolute/path items, got "${item}"`);
    return { key, path: dir };
  });
}
