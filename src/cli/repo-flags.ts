// The flags every repository command shares, and opening the repository from them.
import path from "node:path";
import type { FlagSpec } from "./args.ts";
import type { CliContext } from "./command.ts";
import { KlioError } from "../util/errors.ts";
import { readPassphrase, TOKEN_FILE_FLAG, tokenFromFlags } from "./secret-files.ts";
import { S3_FLAGS, s3FlagsToPass, s3OptionsFromFlags } from "./s3-flags.ts";
import { isS3Location } from "../repo/s3-storage.ts";
import { createLogger, type Logger } from "../util/log.ts";
import { openRepository, type Repository } from "../repo/repository.ts";

export const REPO_FLAGS: Record<string, FlagSpec> = {
  repo: { kind: "string", value: "DIR|URL", help: "repository directory, the appliance's API (https://host:port), or s3://bucket/prefix (both read-only)", required: true },
  "encryption-passphrase-file": { kind: "string", value: "FILE", help: "file holding the passphrase of an encrypted repository (or KLIO_PASSPHRASE_FILE)" },
  ...TOKEN_FILE_FLAG,
  ...S3_FLAGS,
};

/** For commands that change a repository, which only a local one allows. */
export const LOCAL_REPO_FLAGS: Record<string, FlagSpec> = {
  repo: { kind: "string", value: "DIR", help: "the repository directory", required: true },
  "encryption-passphrase-file": REPO_FLAGS["encryption-passphrase-file"]!,
};

/** For commands that move much data: how many threads hash, compress, decompress and verify. */
export const WORKERS_FLAG: Record<string, FlagSpec> = {
  workers: { kind: "number", value: "N", help: "worker threads for hashing and (de)compression (default: one per core, up to 4; 0: all on the main thread)" },
};

export async function openRepoFromFlags(flags: Record<string, unknown>, ctx: CliContext): Promise<Repository> {
  const file = (flags["encryption-passphrase-file"] as string | undefined) ?? ctx.env.KLIO_PASSPHRASE_FILE;
  let workers: number | undefined;
  if (flags.workers !== undefined) {
    workers = Number(flags.workers);
    if (!Number.isInteger(workers) || workers < 0 || workers > 64) throw new KlioError("usage", `--workers must be a whole number from 0 to 64, got ${String(flags.workers)}`);
  }
  const location = String(flags.repo);
  const s3 = isS3Location(location) ? await s3OptionsFromFlags(flags, ctx) : undefined;
  return openRepository(location, { passphrase: await readPassphrase(file), token: await tokenFromFlags(flags, ctx), s3, workers });
}

/**
 * The flags another klio (PostgreSQL's restore_command) needs to reach the same remote
 * repository: the token file, the S3 endpoint and key files (from flags or KLIO_* variables),
 * as absolute paths.
 */
export function remoteAccessFlags(flags: Record<string, unknown>, ctx: CliContext): string[] {
  const tokenFile = (flags["token-file"] as string | undefined) ?? ctx.env.KLIO_TOKEN_FILE;
  return [...(tokenFile === undefined ? [] : ["--token-file", path.resolve(tokenFile)]), ...s3FlagsToPass(flags, ctx.env, (p) => path.resolve(p))];
}

/** Text log lines on stderr for commands that run a while (JSON when --log-format json). */
export function commandLogger(ctx: CliContext, json: boolean): Logger {
  return createLogger({ write: ctx.stderr, format: json ? "json" : "text", level: "info" });
}
