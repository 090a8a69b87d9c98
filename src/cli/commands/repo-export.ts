import path from "node:path";
import type { Command } from "../command.ts";
import { KlioError } from "../../util/errors.ts";
import { validateClusterName } from "../../wal/archive-layout.ts";
import { validateSnapshotId } from "../../backup/snapshot.ts";
import { parseRecoveryTarget } from "../../restore/recovery-target.ts";
import { exportRepository } from "../../offsite/export.ts";
import { FsStorage } from "../../repo/fs-storage.ts";
import { isS3Location, parseS3Url, S3Storage } from "../../repo/s3-storage.ts";
import type { Storage } from "../../repo/storage.ts";
import { commandLogger, openRepoFromFlags, readerRepoFlags } from "../repo-flags.ts";
import { s3OptionsFromFlags } from "../s3-flags.ts";
import { readPassphrase } from "../secret-files.ts";

export const command: Command = {
  spec: {
    name: "repo export",
    summary: "Write a self-contained copy of chosen backups and their WAL (removable media, air-gapped restore).",
    usage: "klio repo export DEST_DIR --repo DIR|s3://… [--cluster NAME] [--backup-id ID|latest] [--with-wal-until TIME] [--json]",
    positionals: [{ name: "DEST_DIR", help: "a new or empty directory (e.g. on a USB disk)" }],
    flags: {
      ...readerRepoFlags("repo export", ["s3"], "reads no repository over the appliance's API (on the appliance, export from its directory)"),
      cluster: { kind: "string", value: "NAME", help: "only this cluster's backups and WAL" },
      "backup-id": { kind: "string", value: "ID", help: "only this backup (or latest)" },
      "with-wal-until": { kind: "string", value: "TIME", help: "only the WAL needed to recover up to this time, e.g. 2026-12-01 09:30:00+00 (default: all of it)" },
      json: { kind: "boolean", help: "print what was exported as JSON" },
    },
    details: [
      "The copy is the same repository (the same id and keys: an encrypted one needs the same passphrase), holding",
      "the chosen backups' chunks in new packs, their snapshots, and the WAL from the oldest chosen backup's start.",
      "Restore from it with only the binary: klio restore DEST --repo /media/usb/klio --cluster NAME …",
    ].join("\n"),
  },
  async run(args, ctx) {
    const f = args.flags;
    const src = String(f.repo);
    const cluster = f.cluster === undefined ? undefined : validateClusterName(String(f.cluster));
    const backupId = f["backup-id"] === undefined || f["backup-id"] === "latest" ? (f["backup-id"] as string | undefined) : validateSnapshotId(String(f["backup-id"]));
    const until = f["with-wal-until"] === undefined ? undefined : parseRecoveryTarget({ time: String(f["with-wal-until"]) });
    const dest = path.resolve(args.positionals[0]!);
    if (!isS3Location(src) && path.resolve(src) === dest) throw new KlioError("usage", "repo export: DEST_DIR is the source repository");
    const source = await openRepoFromFlags(f, ctx);
    let storage: Storage | null = null;
    try {
      storage = isS3Location(src) ? await S3Storage.open(parseS3Url(src), await s3OptionsFromFlags(f, ctx)) : new FsStorage(src);
      const passphrase = await readPassphrase((f["encryption-passphrase-file"] as string | undefined) ?? ctx.env.KLIO_PASSPHRASE_FILE);
      const r = await exportRepository({
        source, sourceStorage: storage, dest, open: { passphrase }, cluster, backupId,
        walUntil: until && until.kind === "time" ? until.time : undefined, log: commandLogger(ctx, !ctx.isTTY),
      });
      if (f.json) ctx.stdout(JSON.stringify(r, null, 2) + "\n");
      else ctx.stdout(`exported ${r.backups.length} backup${r.backups.length === 1 ? "" : "s"} (${r.backups.map((b) => `${b.cluster}/${b.id}`).join(", ")}) into ${dest}: ${r.chunks} chunks, ${r.walFiles} WAL files\n`);
      return 0;
    } finally {
      await storage?.close();
      await source.close();
    }
  },
};
