// Why there is no WAL archive to read at a repository path, said precisely, since each case has
// its own remedy: no directory at all; a directory that is no repository; a repository into
// which no WAL has been archived yet; a receiver that has not reached its server yet (its
// directory exists, the cluster's identity file does not). Only ever loaded on that failure.
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import { HEADER_KEY } from "../repo/header.ts";
import { walRoot } from "./archive-layout.ts";
import { IDENTITY_FILE } from "./archive-meta.ts";

async function entries(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).sort();
}

/** The error for "no archive of `cluster` (or of any cluster, when undefined) in `repo`". */
export async function noArchiveError(repo: string, cluster: string | undefined): Promise<KlioError> {
  const where = JSON.stringify(repo);
  const st = await stat(repo).catch(() => undefined);
  if (!st) return new KlioError("no-archive", `there is no directory ${where}: give the repository directory with --repo`);
  if (!st.isDirectory()) return new KlioError("no-archive", `${where} is not a directory: give the repository directory with --repo`);
  const top = await entries(repo);
  const clusterDirs = (await readdir(walRoot(repo), { withFileTypes: true }).catch(() => [])).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  const archived: string[] = [];
  const waiting: string[] = [];
  for (const c of clusterDirs) ((await entries(path.join(walRoot(repo), c))).includes(IDENTITY_FILE) ? archived : waiting).push(c);
  const named = cluster === undefined ? waiting : waiting.filter((c) => c === cluster);
  if (named.length > 0)
    return new KlioError("no-archive",
      `the WAL receiver of cluster ${named.map((c) => JSON.stringify(c)).join(", ")} has not reached its server yet: ${where} has its WAL directory but no ${IDENTITY_FILE}, ` +
      "which it writes once it has connected (see the receiver's log, or `klio server start`'s)");
  if (!top.includes(HEADER_KEY) && clusterDirs.length === 0)
    return new KlioError("no-archive", `${where} is not a klio repository (it has no ${HEADER_KEY}) and holds no WAL archive`);
  const name = cluster === undefined ? "NAME" : cluster;
  const how = `\`klio wal stream --repo ${repo} --cluster ${name} --pg …\` or the daemon (\`klio server start\`) archives it`;
  if (cluster !== undefined && archived.length > 0)
    return new KlioError("no-archive", `no WAL of cluster ${JSON.stringify(cluster)} has been archived in ${where} yet (it holds the WAL of ${archived.join(", ")}): ${how}`);
  return new KlioError("no-archive", `no WAL has been archived in ${where} yet${cluster === undefined ? "" : ` for cluster ${JSON.stringify(cluster)}`}: ${how}`);
}
