import type { Command } from "../command.ts";
import { bytes } from "../progress.ts";
import { offsiteFlags, openRemote } from "../offsite-target.ts";
import { verifyOffsite } from "../../offsite/verify.ts";

export const command: Command = {
  spec: {
    name: "offsite verify",
    summary: "Compare the S3 copy with the local repository: every object's size and checksum (ETag).",
    usage: "klio offsite verify --repo DIR --to s3://BUCKET[/PREFIX] --s3-endpoint URL [--json]",
    flags: { ...offsiteFlags("offsite verify"), json: { kind: "boolean", help: "print JSON for scripts" } },
    details: "Exit 0 when every object that goes offsite is in the bucket with the same bytes, 1 otherwise (each problem is listed).",
  },
  async run(args, ctx) {
    const remote = await openRemote(args.flags, ctx);
    try {
      const r = await verifyOffsite(String(args.flags.repo), remote);
      if (args.flags.json) ctx.stdout(JSON.stringify(r, null, 2) + "\n");
      else {
        for (const p of r.problems) ctx.stdout(`PROBLEM ${p.key}: ${p.problem}: ${p.detail}\n`);
        ctx.stdout(`${r.remote}: ${r.checked} objects, ${bytes(r.bytes)} checked, ${r.problems.length} problem(s)${r.extra.length ? `, ${r.extra.length} objects only in the bucket` : ""}\n`);
      }
      return r.problems.length === 0 ? 0 : 1;
    } finally {
      await remote.close();
    }
  },
};
