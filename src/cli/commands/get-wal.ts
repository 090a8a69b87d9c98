// `klio get-wal WALNAME TARGET`: PostgreSQL's restore_command. Exit 0 with the exact
// original bytes in TARGET, 1 when the archive does not have the file.
import { rename, writeFile, unlink } from "node:fs/promises";
import type { Command } from "../command.ts";
import { TEMP_SUFFIX } from "../../util/durable-fs.ts";
import { openClusterArchive, parseWalRequest, readWalFile } from "../../wal/archive-reader.ts";

export const command: Command = {
  spec: {
    name: "get-wal",
    summary: "Fetch a WAL segment or timeline history file from the archive (a PostgreSQL restore_command).",
    usage: "klio get-wal WALNAME TARGET --repo DIR [--cluster NAME] [--partial]",
    positionals: [
      { name: "WALNAME", help: "file PostgreSQL asks for (%f), e.g. 000000010000000000000003 or 00000002.history" },
      { name: "TARGET", help: "where to write it (%p)" },
    ],
    flags: {
      repo: { kind: "string", value: "DIR", help: "repository directory", required: true },
      cluster: { kind: "string", value: "NAME", help: "cluster name (needed when the repository holds several)" },
      partial: { kind: "boolean", help: "serve the newest .partial segment when the complete one is not archived" },
    },
    details: "Example restore_command:\n  restore_command = '/usr/local/bin/klio get-wal %f %p --repo /var/lib/klio/repo --cluster db1 --partial'",
  },
  async run(args, ctx) {
    const [walName, target] = args.positionals as [string, string];
    const archive = await openClusterArchive(String(args.flags.repo), args.flags.cluster as string | undefined);
    const req = parseWalRequest(walName, archive.identity.walSegmentSize, Boolean(args.flags.partial));
    const found = await readWalFile(archive, req);
    if (!found) {
      ctx.stderr(`klio: get-wal: ${walName} is not in the archive of cluster ${archive.cluster}\n`);
      return 1;
    }
    // Never leave a half-written file under the name PostgreSQL will read.
    const tmp = target + TEMP_SUFFIX;
    try {
      await writeFile(tmp, found.bytes);
      await rename(tmp, target);
    } catch (e) {
      await unlink(tmp).catch(() => {});
      throw e;
    }
    return 0;
  },
};
