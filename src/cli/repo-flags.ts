// The flags every repository command shares, and opening the repository from them.
import type { FlagSpec } from "./args.ts";
import type { CliContext } from "./command.ts";
import { KlioError } from "../util/errors.ts";
import { readPassphrase, TOKEN_FILE_FLAG, tokenFromFlags } from "./secret-files.ts";
import { createLogger, type Logger } from "../util/log.ts";
import { openRepository, type Repository } from "../repo/repository.ts";

export const REPO_FLAGS: Record<string, FlagSpec> = {
  repo: { kind: "string", value: "DIR|URL", help: "repository directory, or the appliance's API (https://host:port, read-only)", required: true },
  "encryption-passphrase-file": { kind: "string", value: "FILE", help: "file holding the passphrase of an encrypted repository (or KLIO_PASSPHRASE_FILE)" },
  ...TOKEN_FILE_FLAG,
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
  return openRepository(String(flags.repo), { passphrase: await readPassphrase(file), token: await tokenFromFlags(flags, ctx), workers });
}

/** Text log lines on stderr for commands that run a while (JSON when --log-format json). */
export function commandLogger(ctx: CliContext, json: boolean): Logger {
  return createLogger({ write: ctx.stderr, format: json ? "json" : "text", level: "info" });
}
