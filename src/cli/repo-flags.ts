// The flags every repository command shares, and opening the repository from them.
import path from "node:path";
import type { FlagSpec } from "./args.ts";
import type { CliContext } from "./command.ts";
import { KlioError } from "../util/errors.ts";
import { readPassphrase, TOKEN_FILE_FLAG, tokenFromFlags } from "./secret-files.ts";
import { S3_FLAGS, s3FlagsToPass, s3OptionsFromFlags } from "./s3-flags.ts";
import { isS3Location } from "../repo/s3-storage.ts";
import { repoFlag } from "./repo-location.ts";
import { createLogger, type Logger } from "../util/log.ts";
import { openRepository, type Repository } from "../repo/repository.ts";

const PASSPHRASE_FILE_FLAG: FlagSpec = {
  kind: "string", value: "FILE", help: "file holding the passphrase of an encrypted repository (or KLIO_PASSPHRASE_FILE)",
};

/**
 * The flags of a command that only reads the repository: --repo takes a directory or the
 * `remote` locations (all by default), with the flags that reach them.
 */
export function readerRepoFlags(command: string, remote: ("api" | "s3")[] = ["api", "s3"], why?: string): Record<string, FlagSpec> {
  return {
    repo: repoFlag(command, { remote, why }),
    "encryption-passphrase-file": PASSPHRASE_FILE_FLAG,
    ...(remote.includes("api") ? TOKEN_FILE_FLAG : {}),
    ...(remote.includes("s3") ? S3_FLAGS : {}),
  };
}

/** The flags of a command that changes a repository (or reads what only a directory has): --repo takes a directory. */
export function localRepoFlags(command: string, o: { why?: string } = {}): Record<string, FlagSpec> {
  return { repo: repoFlag(command, o), "encryption-passphrase-file": PASSPHRASE_FILE_FLAG };
}

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

/** Text log lines on stderr for commands that run a while (JSON when --log-format json); debug events too with KLIO_DEBUG=1. */
export function commandLogger(ctx: CliContext, json: boolean): Logger {
  return createLogger({ write: ctx.stderr, format: json ? "json" : "text", level: ctx.env.KLIO_DEBUG === "1" ? "debug" : "info" });
}
