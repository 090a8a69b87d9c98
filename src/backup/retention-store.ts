// Where a repository keeps its retention settings (beside the data, so the CLI, the API and
// the daemon see the same): retention/<cluster>.json, a policy set with `klio retention set`
// or the API (replaced whole, atomically), and pins/<cluster>/<backup id>, one empty file per
// pinned backup. Neither is part of the offsite copy: they govern this repository's deletions.
import { readdir, readFile, unlink } from "node:fs/promises";
import path from "node:path";
import { fsyncDir, writeFileDurable } from "../util/durable-fs.ts";
import { KlioError } from "../util/errors.ts";
import { validateClusterName } from "../wal/archive-layout.ts";
import { validatePolicy, type RetentionPolicy } from "./retention.ts";
import { isSnapshotId, validateSnapshotId } from "./snapshot.ts";
import { makeDirectories } from "../util/make-directories.ts";

function policyFile(repoDir: string, cluster: string): string {
  return path.join(repoDir, "retention", `${validateClusterName(cluster)}.json`);
}

function pinDir(repoDir: string, cluster: string): string {
  return path.join(repoDir, "pins", validateClusterName(cluster));
}

export interface StoredPolicy {
  policy: RetentionPolicy;
  updatedAt: string;
}

/** The policy set for the cluster in the repository, or null. */
export async function readStoredPolicy(repoDir: string, cluster: string): Promise<StoredPolicy | null> {
  const file = policyFile(repoDir, cluster);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  let v: { format?: unknown; version?: unknown; policy?: unknown; updatedAt?: unknown };
  try {
    v = JSON.parse(text);
  } catch {
    throw new KlioError("bad-policy", `${file} is not JSON: set the policy again with \`klio retention set\``);
  }
  if (v.format !== "klio-retention" || v.version !== 1) throw new KlioError("bad-policy", `${file} is not a retention policy this klio reads`);
  return { policy: validatePolicy(v.policy, file), updatedAt: String(v.updatedAt) };
}

/** Stores (or, with null, removes) the cluster's policy. */
export async function writeStoredPolicy(repoDir: string, cluster: string, policy: RetentionPolicy | null): Promise<void> {
  const file = policyFile(repoDir, cluster);
  if (policy === null) {
    await unlink(file).catch((e) => {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    });
    return;
  }
  await makeDirectories(path.dirname(file), 0o750);
  await writeFileDurable(file, JSON.stringify({ format: "klio-retention", version: 1, policy: validatePolicy(policy, "the policy"), updatedAt: new Date().toISOString() }, null, 1) + "\n");
}

export async function readPins(repoDir: string, cluster: string): Promise<Set<string>> {
  const names = await readdir(pinDir(repoDir, cluster)).catch(() => [] as string[]);
  return new Set(names.filter(isSnapshotId));
}

export async function setPin(repoDir: string, cluster: string, id: string, pinned: boolean): Promise<void> {
  const file = path.join(pinDir(repoDir, cluster), validateSnapshotId(id));
  if (pinned) {
    await makeDirectories(path.dirname(file), 0o750);
    await writeFileDurable(file, "");
  } else {
    await unlink(file).catch((e) => {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    });
    await fsyncDir(path.dirname(file)).catch(() => {});
  }
}
