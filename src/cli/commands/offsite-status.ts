import type { Command } from "../command.ts";
import { commandLogger } from "../repo-flags.ts";
import { bytes } from "../progress.ts";
import { openOffsite, offsiteFlags } from "../offsite-target.ts";

export const command: Command = {
  spec: {
    name: "offsite status",
    summary: "What the S3 copy lacks: objects and bytes behind, and the oldest of them.",
    usage: "klio offsite status --repo DIR --to s3://BUCKET[/PREFIX] --s3-endpoint URL [--json]",
    flags: { ...offsiteFlags("offsite status"), json: { kind: "boolean", help: "print JSON for scripts" } },
  },
  async run(args, ctx) {
    const sync = await openOffsite(args.flags, ctx, commandLogger(ctx, false));
    try {
      const s = await sync.status();
      if (args.flags.json) ctx.stdout(JSON.stringify(s, null, 2) + "\n");
      else {
        ctx.stdout(`${s.remote}: ${s.behind.objects === 0 ? "up to date" : `${s.behind.objects} objects (${bytes(s.behind.bytes)}) behind, the oldest ${s.behind.oldest?.key} from ${s.behind.oldest?.modified}`}\n`);
        ctx.stdout(`local: ${s.local.objects} objects, ${bytes(s.local.bytes)}${s.extra ? `; ${s.extra} remote objects to remove` : ""}\n`);
      }
      return 0;
    } finally {
      await sync.close();
    }
  },
};
