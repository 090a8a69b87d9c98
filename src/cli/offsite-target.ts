// The flags of the offsite commands, and the sync they describe.
import type { FlagSpec } from "./args.ts";
import type { CliContext } from "./command.ts";
import { KlioError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { S3_FLAGS, s3OptionsFromFlags } from "./s3-flags.ts";
import { repoFlag } from "./repo-location.ts";
import { OffsiteSync } from "../offsite/sync.ts";
import { parseRate, RateLimit } from "../util/rate-limit.ts";
import { parseS3Url, S3Storage } from "../repo/s3-storage.ts";

/** The flags of the offsite commands: the local repository (a directory) and its copy in a bucket. */
export function offsiteFlags(command: string): Record<string, FlagSpec> {
  return {
    repo: repoFlag(command, { help: "the local repository", why: "copies a repository directory (the copy is --to)" }),
    to: { kind: "string", value: "s3://BUCKET[/PREFIX]", help: "where the copy lives", required: true },
    ...S3_FLAGS,
    concurrency: { kind: "number", value: "N", help: "uploads at once", default: 4 },
    bandwidth: { kind: "string", value: "RATE", help: "at most this much for all uploads together, e.g. 20MB/s or 500KiB/s (default: no limit)" },
  };
}

/** The bucket of --to, reached with the --s3-… flags. */
export async function openRemote(flags: Record<string, unknown>, ctx: CliContext): Promise<S3Storage> {
  return S3Storage.open(parseS3Url(String(flags.to)), await s3OptionsFromFlags(flags, ctx));
}

export async function openOffsite(flags: Record<string, unknown>, ctx: CliContext, log: Logger): Promise<OffsiteSync> {
  const concurrency = Number(flags.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new KlioError("usage", `--concurrency must be a whole number from 1 to 64, got ${String(flags.concurrency)}`);
  const limit = flags.bandwidth === undefined ? undefined : new RateLimit(parseRate(String(flags.bandwidth)));
  return new OffsiteSync({ repoDir: String(flags.repo), remote: await openRemote(flags, ctx), concurrency, limit, log, signal: ctx.signal });
}
