// Which repository locations a command accepts, as data on its --repo flag: a directory
// always; the appliance's API (https://…) and an S3 copy (s3://…) only for commands that just
// read. The parser refuses any other location before the command runs, and --help shows only
// the accepted ones. Kept free of the repository code: get-wal loads it on every call.
import type { FlagSpec } from "./args.ts";
import { KlioError } from "../util/errors.ts";
import { isS3Location } from "../repo/s3-storage.ts";
import { isApiLocation } from "../util/api-client.ts";

export type RepoLocationKind = "directory" | "api" | "s3";

export function repoLocationKind(location: string): RepoLocationKind {
  return isS3Location(location) ? "s3" : isApiLocation(location) ? "api" : "directory";
}

const WHAT: Record<RepoLocationKind, string> = {
  directory: "a repository directory",
  api: "the appliance's API (https://host:port)",
  s3: "an S3 copy (s3://BUCKET[/PREFIX])",
};

export interface RepoFlagOptions {
  /** Besides a directory. */
  remote?: ("api" | "s3")[];
  /** What this command does with a directory only, for the refusal: "changes the repository". */
  why?: string;
  /** The flag's help line instead of the generated one (for a directory-only flag). */
  help?: string;
}

/** The --repo flag of a command; its check refuses the locations the command does not accept. */
export function repoFlag(command: string, o: RepoFlagOptions = {}): FlagSpec {
  const accepted: RepoLocationKind[] = ["directory", ...(o.remote ?? [])];
  const help = o.help ?? (accepted.length === 1 ? "the repository directory" : anyOf(accepted.map((k) => WHAT[k])));
  const value = accepted.length === 1 ? "DIR" : accepted.includes("s3") && !accepted.includes("api") ? "DIR|s3://…" : "DIR|URL";
  return {
    kind: "string", value, help, required: true,
    check(location) {
      const kind = repoLocationKind(location);
      if (accepted.includes(kind)) return;
      const takes = anyOf(accepted.map((k) => WHAT[k]));
      const why = o.why ?? "changes the repository, and an S3 copy or the appliance's API can only be read";
      throw new KlioError("usage", `${command}: --repo takes ${takes}, not ${JSON.stringify(location)}: ${command} ${why}`);
    },
  };
}

/** "a, b, or c"; "a or b". */
function anyOf(items: string[]): string {
  return items.length > 2 ? `${items.slice(0, -1).join(", ")}, or ${items.at(-1)}` : items.join(" or ");
}
