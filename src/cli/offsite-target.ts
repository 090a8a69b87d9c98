// The flags of the offsite commands, and the sync they describe.
import type { FlagSpec } from "./args.ts";
import type { CliContext } from "./command.ts";
import { KlioError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { S3_FLAGS, s3OptionsFromFlags } from "./s3-flags.ts";
import { OffsiteSync } from "../offsite/sync.ts";
import { parseS3Url, S3Storage } from "../repo/s3-storage.ts";

export const OFFSITE_FLAGS: Record<string, FlagSpec> = {
  repo: { kind: "string", value: "DIR", help: "the local repository", required: true },
  to: { kind: "string", value: "s3://BUCKET[/PREFIX]", help: "where the copy lives", required: true },
  ...S3_FLAGS,
  concurrency: { kind: "number", value: "N", help: "uploads at once", default: 4 },
};

export async function openOffsite(flags: Record<string, unknown>, ctx: CliContext, log: Logger): Promise<OffsiteSync> {
  const concurrency = Number(flags.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new KlioError("usage", `--concurrency must be a whole number from 1 to 64, got ${String(flags.concurrency)}`);
  const remote = await S3Storage.open(parseS3Url(String(flags.to)), await s3OptionsFromFlags(flags, ctx));
  return new OffsiteSync({ repoDir: String(flags.repo), remote, concurrency, log, signal: ctx.signal });
}
