import type { Command } from "../command.ts";
import { KlioError } from "../../util/errors.ts";
import { sleep } from "../../util/sleep.ts";
import { commandLogger } from "../repo-flags.ts";
import { openOffsite, offsiteFlags } from "../offsite-target.ts";

export const command: Command = {
  spec: {
    name: "offsite sync",
    summary: "Copy the repository (backups and WAL) to an S3-compatible bucket, once or continuously.",
    usage: "klio offsite sync --repo DIR --to s3://BUCKET[/PREFIX] --s3-endpoint URL [--once] [--interval SECONDS] [--concurrency N] [--json]",
    flags: {
      ...offsiteFlags("offsite sync"),
      once: { kind: "boolean", help: "one pass, then exit (0 when the remote has everything)" },
      interval: { kind: "number", value: "SECONDS", help: "seconds between passes when continuous (WAL reaches the bucket within about this)", default: 2 },
      json: { kind: "boolean", help: "print each pass as a JSON line on stdout" },
    },
    details: [
      "Uploads what the bucket lacks: the header, packs, indexes, WAL, then snapshots, so the bucket is a whole",
      "repository at every instant; the newest partial WAL segment is sent again whenever it changed. A pass",
      "interrupted anywhere is finished by the next. Removes from the bucket only what the local repository",
      "replaced: deleted snapshots, superseded indexes, WAL segments once their complete or compressed form is up.",
    ].join("\n"),
  },
  async run(args, ctx) {
    const f = args.flags;
    const interval = Number(f.interval);
    if (!(interval >= 0.2 && interval <= 3600)) throw new KlioError("usage", `offsite sync: --interval must be between 0.2 and 3600 seconds, got ${f.interval}`);
    const log = commandLogger(ctx, !ctx.isTTY);
    const sync = await openOffsite(f, ctx, log);
    try {
      let first = true;
      while (!ctx.signal.aborted) {
        const p = await sync.pass({ fullListing: first });
        first = false;
        if (f.json) ctx.stdout(JSON.stringify(p) + "\n");
        if (p.uploaded || p.removed || f.once) log.info("offsite.pass", { uploaded: p.uploaded, bytes: p.uploadedBytes, removed: p.removed, behind: p.behind.objects, seconds: Number(p.seconds.toFixed(2)) });
        if (f.once) return p.behind.objects === 0 ? 0 : 1;
        await sleep(interval * 1000, ctx.signal);
      }
      return 0;
    } finally {
      await sync.close();
    }
  },
};
