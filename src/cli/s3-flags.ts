// How the CLI reaches an S3-compatible store: flags, or KLIO_S3_* environment variables for
// what the flags do not give. Keys come from files or the environment, never the command
// line (where `ps` would show them).
import type { FlagSpec } from "./args.ts";
import type { CliContext } from "./command.ts";
import { KlioError } from "../util/errors.ts";
import type { S3Options } from "../repo/s3-storage.ts";
import { readSecretFile } from "./secret-files.ts";

export const S3_FLAGS: Record<string, FlagSpec> = {
  "s3-endpoint": { kind: "string", value: "URL", help: "S3 endpoint for s3:// locations, e.g. https://minio.example.net:9000 (or KLIO_S3_ENDPOINT)" },
  "s3-region": { kind: "string", value: "NAME", help: "S3 region (or KLIO_S3_REGION; default us-east-1)" },
  "s3-access-key-file": { kind: "string", value: "FILE", help: "file holding the S3 access key (or KLIO_S3_ACCESS_KEY_FILE, or KLIO_S3_ACCESS_KEY)" },
  "s3-secret-key-file": { kind: "string", value: "FILE", help: "file holding the S3 secret key (or KLIO_S3_SECRET_KEY_FILE, or KLIO_S3_SECRET_KEY)" },
  "s3-ca-file": { kind: "string", value: "FILE", help: "PEM file of the CA that signed the endpoint's certificate (or KLIO_S3_CA_FILE)" },
  "s3-virtual-hosted": { kind: "boolean", help: "bucket in the host name (AWS style) instead of in the path (MinIO, Swift; the default)" },
};

/** Each value flag, and the KLIO_S3_* variable that gives it when the flag does not. */
const S3_ENV: Record<string, string> = {
  "s3-endpoint": "KLIO_S3_ENDPOINT", "s3-region": "KLIO_S3_REGION", "s3-access-key-file": "KLIO_S3_ACCESS_KEY_FILE",
  "s3-secret-key-file": "KLIO_S3_SECRET_KEY_FILE", "s3-ca-file": "KLIO_S3_CA_FILE",
};

function given(flags: Record<string, unknown>, env: Record<string, string | undefined>, name: string): string | undefined {
  return (flags[name] as string | undefined) ?? env[S3_ENV[name]!];
}

/**
 * The S3 flags to hand on to another klio (restore_command, the prefetcher), from the flags or
 * their KLIO_S3_* variables: files as absolute paths.
 */
export function s3FlagsToPass(flags: Record<string, unknown>, env: Record<string, string | undefined>, abs: (p: string) => string): string[] {
  const out: string[] = [];
  for (const name of Object.keys(S3_ENV)) {
    const v = given(flags, env, name);
    if (v !== undefined) out.push(`--${name}`, name.endsWith("-file") ? abs(v) : v);
  }
  if (flags["s3-virtual-hosted"]) out.push("--s3-virtual-hosted");
  return out;
}

async function key(flags: Record<string, unknown>, ctx: CliContext, flag: string, env: string, what: "S3 access key" | "S3 secret key"): Promise<string> {
  const file = given(flags, ctx.env, flag); // --s3-…-key-file, else ${env}_FILE
  const value = file !== undefined ? await readSecretFile(file, what) : ctx.env[env];
  if (value === undefined || value === "") throw new KlioError("usage", `an s3:// location needs the ${what}: --${flag} FILE, ${env}_FILE or ${env}`);
  return value;
}

export async function s3OptionsFromFlags(flags: Record<string, unknown>, ctx: CliContext): Promise<S3Options> {
  const endpoint = given(flags, ctx.env, "s3-endpoint");
  if (endpoint === undefined) throw new KlioError("usage", "an s3:// location needs --s3-endpoint URL (or KLIO_S3_ENDPOINT)");
  return {
    endpoint,
    region: given(flags, ctx.env, "s3-region") ?? "us-east-1",
    accessKey: await key(flags, ctx, "s3-access-key-file", "KLIO_S3_ACCESS_KEY", "S3 access key"),
    secretKey: await key(flags, ctx, "s3-secret-key-file", "KLIO_S3_SECRET_KEY", "S3 secret key"),
    caFile: given(flags, ctx.env, "s3-ca-file"),
    pathStyle: !flags["s3-virtual-hosted"],
  };
}
