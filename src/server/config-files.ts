// Every file the appliance's config names, checked before the daemon starts (`klio server start
// --check`, which klio.service runs as ExecStartPre): one problem per missing or unreadable
// file, all of them at once, so that one round of edits fixes them. Which settings name files
// is declared here, in one list; a test holds that list to the schema (every `*_file` setting
// is in it), so a new setting cannot be forgotten.
import { open, stat } from "node:fs/promises";
import { userInfo } from "node:os";
import path from "node:path";
import { connInfoFiles, FILE_KEYWORDS } from "../pg/conninfo.ts";
import type { ConfigFile } from "./config.ts";

/** A setting that names a file: where it sits in the config ("*" is every item of an array) and what the file is. */
export interface FileSetting {
  at: string;
  what: string;
}

/** The settings whose values are files klio reads; relative paths are relative to the config file's directory. */
export const FILE_SETTINGS: readonly FileSetting[] = [
  { at: "/repository/passphrase_file", what: "passphrase file" },
  { at: "/offsite/access_key_file", what: "S3 access key file" },
  { at: "/offsite/secret_key_file", what: "S3 secret key file" },
  { at: "/offsite/ca_file", what: "S3 CA certificate file" },
  { at: "/api/tls/cert_file", what: "TLS certificate" },
  { at: "/api/tls/key_file", what: "TLS key" },
  { at: "/api/tokens/*/token_file", what: "token file" },
  { at: "/clusters/*/password_file", what: "password file" },
];

/**
 * The settings that hold a libpq connection string: the files its sslrootcert, sslcert, sslkey
 * and passfile name are read as libpq reads them (a relative path from the working directory).
 */
export const CONNECTION_SETTINGS: readonly string[] = ["/clusters/*/connection"];

export interface NamedFile {
  /** Where in the config, e.g. "/clusters/0/password_file". */
  at: string;
  what: string;
  /** The path as klio will open it. */
  file: string;
}

/** Each place in `value` the pattern matches, with its value ("*" matches every array item). */
function select(value: unknown, pattern: string): [string, unknown][] {
  let found: [string, unknown][] = [["", value]];
  for (const part of pattern.split("/").slice(1)) {
    const next: [string, unknown][] = [];
    for (const [at, v] of found) {
      if (part === "*") {
        if (Array.isArray(v)) v.forEach((item, i) => next.push([`${at}/${i}`, item]));
      } else if (v !== null && typeof v === "object" && Object.hasOwn(v, part)) {
        next.push([`${at}/${part}`, (v as Record<string, unknown>)[part]]);
      }
    }
    found = next;
  }
  return found;
}

/**
 * The files a schema-checked config names, in the order of the declared lists; a connection
 * string that does not parse is returned as a problem instead (its files are unknown).
 */
export function namedFiles(config: ConfigFile, configFile: string): { files: NamedFile[]; problems: string[] } {
  const files: NamedFile[] = [];
  const problems: string[] = [];
  for (const s of FILE_SETTINGS) {
    for (const [at, v] of select(config, s.at)) {
      if (typeof v === "string") files.push({ at, what: s.what, file: path.resolve(path.dirname(configFile), v) });
    }
  }
  for (const pattern of CONNECTION_SETTINGS) {
    for (const [at, v] of select(config, pattern)) {
      if (typeof v !== "string") continue;
      try {
        for (const f of connInfoFiles(v)) files.push({ at, what: FILE_KEYWORDS[f.keyword], file: path.resolve(f.file) });
      } catch (e) {
        problems.push(`at ${at}: ${(e as Error).message}`);
      }
    }
  }
  return { files, problems };
}

const REASONS: Record<string, string> = {
  ENOENT: "no such file",
  ENOTDIR: "a part of the path is not a directory",
  ELOOP: "too many levels of symbolic links",
};

/** Why klio cannot read the file, or null when it can. */
async function unreadable(file: string): Promise<string | null> {
  try {
    const st = await stat(file);
    if (st.isDirectory()) return "it is a directory";
    if (!st.isFile()) return "not a regular file";
    await (await open(file, "r")).close();
    return null;
  } catch (e) {
    const code = (e as { code?: string }).code ?? "";
    if (code === "EACCES" || code === "EPERM") return `permission denied for the user ${whoami()}`;
    return REASONS[code] ?? (e as Error).message;
  }
}

function whoami(): string {
  try {
    return userInfo().username;
  } catch {
    return `with uid ${process.getuid?.() ?? "?"}`;
  }
}

/**
 * One line per file the config names that klio cannot read ("at /clusters/0/password_file:
 * cannot read the password file /etc/klio/db1.password: no such file"); empty when all are there.
 */
export async function checkConfigFiles(config: ConfigFile, configFile: string): Promise<{ problems: string[]; checked: number }> {
  const { files, problems } = namedFiles(config, configFile);
  for (const f of files) {
    const why = await unreadable(f.file);
    if (why !== null) problems.push(`at ${f.at}: cannot read the ${f.what} ${f.file}: ${why}`);
  }
  return { problems, checked: files.length };
}
