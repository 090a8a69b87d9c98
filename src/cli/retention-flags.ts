// The retention rules as flags (klio retention set), and the clusters a retention command is about.
import { readdir } from "node:fs/promises";
import path from "node:path";
import type { FlagSpec } from "./args.ts";
import { KlioError } from "../util/errors.ts";
import { validatePolicy, type RetentionPolicy } from "../backup/retention.ts";
import { listSnapshotClusters } from "../backup/snapshot.ts";
import type { Repository } from "../repo/repository.ts";
import { isClusterName, validateClusterName } from "../wal/archive-layout.ts";

/** Flag name → policy field. */
const RULE_FLAGS: [flag: string, field: keyof RetentionPolicy, spec: FlagSpec][] = [
  ["recovery-window", "recoveryWindow", { kind: "string", value: "DURATION", help: "keep what recovery to any moment of this window needs, e.g. 7d" }],
  ["full", "full", { kind: "number", value: "N", help: "keep the newest N full backups and every backup taken after the oldest of them (redundancy, as pgBackRest's repo-retention-full)" }],
  ["keep-latest", "keepLatest", { kind: "number", value: "N", help: "keep the newest N backups" }],
  ["keep-daily", "keepDaily", { kind: "number", value: "N", help: "keep the newest backup of each of the last N days that have one (UTC)" }],
  ["keep-weekly", "keepWeekly", { kind: "number", value: "N", help: "the same per ISO week" }],
  ["keep-monthly", "keepMonthly", { kind: "number", value: "N", help: "the same per month" }],
  ["min-backups", "minBackups", { kind: "number", value: "N", help: "never keep fewer backups than this (default 1)" }],
];

export const RETENTION_RULE_FLAGS: Record<string, FlagSpec> = Object.fromEntries(RULE_FLAGS.map(([flag, , spec]) => [flag, spec]));

/** The policy the flags describe; null when they name no rule. */
export function policyFromFlags(flags: Record<string, unknown>): RetentionPolicy | null {
  const p: Record<string, unknown> = {};
  for (const [flag, field] of RULE_FLAGS) if (flags[flag] !== undefined) p[field] = flags[flag];
  if (Object.keys(p).length === 0) return null;
  return validatePolicy(p, "the flags");
}

/** --cluster, or every cluster the repository has backups, a WAL archive or a policy of. */
export async function retentionClusters(repo: Repository, repoDir: string, flags: Record<string, unknown>): Promise<string[]> {
  if (flags.cluster !== undefined) return [validateClusterName(String(flags.cluster))];
  const names = new Set(await listSnapshotClusters(repo));
  for (const f of await readdir(path.join(repoDir, "retention")).catch(() => [] as string[])) if (f.endsWith(".json")) names.add(f.slice(0, -5));
  for (const d of await readdir(path.join(repoDir, "wal")).catch(() => [] as string[])) names.add(d);
  const out = [...names].filter(isClusterName).sort();
  if (out.length === 0) throw new KlioError("usage", `${repoDir} has no clusters yet: name one with --cluster`);
  return out;
}
