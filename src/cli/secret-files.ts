// Secrets the CLI reads from files: an encrypted repository's passphrase, and the API token
// for a repository read over HTTP. Light on purpose: get-wal loads it on every call.
import { readFile } from "node:fs/promises";
import type { FlagSpec } from "./args.ts";
import type { CliContext } from "./command.ts";
import { KlioError } from "../util/errors.ts";

export const TOKEN_FILE_FLAG: Record<string, FlagSpec> = {
  "token-file": { kind: "string", value: "FILE", help: "file holding an API token, for --repo https://… (or KLIO_TOKEN_FILE)" },
};

/** A secret kept in a file (one line; a final newline is not part of it). */
export async function readSecretFile(file: string | undefined, what: string): Promise<string | undefined> {
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new KlioError("bad-secret-file", `cannot read the ${what} file ${file}: ${(e as Error).message}`);
  }
  const secret = text.replace(/\r?\n$/, "");
  if (secret === "") throw new KlioError("bad-secret-file", `the ${what} file ${file} is empty`);
  return secret;
}

export function readPassphrase(file: string | undefined): Promise<string | undefined> {
  return readSecretFile(file, "passphrase");
}

/** The API token of --token-file (or KLIO_TOKEN_FILE), for a repository read over HTTP. */
export function tokenFromFlags(flags: Record<string, unknown>, ctx: CliContext): Promise<string | undefined> {
  return readSecretFile((flags["token-file"] as string | undefined) ?? ctx.env.KLIO_TOKEN_FILE, "token");
}
