// Full or incremental: what `klio backup run` and the daemon take when nobody says, and why.
//
// An incremental backup (PostgreSQL 17+: WAL summaries, UPLOAD_MANIFEST, BASE_BACKUP
// INCREMENTAL) moves only the blocks changed since a parent backup, and is stored as a
// synthetic full, so any completed backup of the same system can be the parent. What only the
// server knows — whether its WAL summaries still reach back to the parent's start, whether the
// parent's timeline is in its history — it says when asked; the caller falls back to a full
// on that answer. Everything that can be known before connecting for the backup is decided
// here, with the one-line reason a DBA reads in the log.
import { KlioError } from "../util/errors.ts";
import { formatDuration, parseDuration } from "../util/duration.ts";
import type { Snapshot } from "./snapshot.ts";

/** `--full`, `--incremental`, or neither. */
export type BackupMode = "auto" | "full" | "incremental";

/** The first PostgreSQL with incremental base backups. */
export const INCREMENTAL_MIN_VERSION = 170000;
/** Default bound on trust in WAL summaries: a full at least this often. */
export const DEFAULT_FULL_EVERY_MS = 7 * 86_400_000;

export interface BackupKindInputs {
  mode: BackupMode;
  /** server_version_num of the server to back up. */
  pgVersion: number;
  /** Its summarize_wal setting (false on servers that have none). */
  summarizeWal: boolean;
  systemIdentifier: string;
  /** The cluster's completed backups, any order. */
  backups: Snapshot[];
  /** A full at least this often; null: no bound. */
  fullEveryMs: number | null;
  now: Date;
}

export type BackupKindDecision =
  | { kind: "full"; reason: string }
  | { kind: "incremental"; parent: Snapshot };

/** Whether a stored backup is a full one (snapshots written before incremental backups are). */
export function isFullBackup(s: Snapshot): boolean {
  return (s.kind ?? "full") === "full";
}

/**
 * Full or incremental, before the server is asked. With mode "incremental" a reason for a
 * full is an error instead.
 */
export function decideBackupKind(i: BackupKindInputs): BackupKindDecision {
  const d = decide(i);
  if (d.kind === "full" && i.mode === "incremental")
    throw new KlioError("incremental-impossible", `an incremental backup cannot be taken: ${d.reason}`);
  return d;
}

function decide(i: BackupKindInputs): BackupKindDecision {
  if (i.mode === "full") return { kind: "full", reason: "--full was given" };
  const major = Math.floor(i.pgVersion / 10000);
  if (i.pgVersion < INCREMENTAL_MIN_VERSION) return { kind: "full", reason: `PostgreSQL ${major} has no incremental backups (PostgreSQL 17 and newer have)` };
  if (!i.summarizeWal) return { kind: "full", reason: "summarize_wal is off on the server (incremental backups need its WAL summaries)" };
  const ours = i.backups.filter((b) => b.systemIdentifier === i.systemIdentifier).sort((a, b) => a.id.localeCompare(b.id));
  if (ours.length === 0) return { kind: "full", reason: "no earlier backup of this system" };
  const sameMajor = ours.filter((b) => Math.floor(b.pgVersion / 10000) === major);
  if (sameMajor.length === 0) {
    const newest = ours[ours.length - 1]!;
    return { kind: "full", reason: `no earlier backup of PostgreSQL ${major} (the newest, ${newest.id}, is of PostgreSQL ${Math.floor(newest.pgVersion / 10000)})` };
  }
  if (i.fullEveryMs !== null) {
    const fulls = sameMajor.filter(isFullBackup);
    const lastFull = fulls[fulls.length - 1];
    const every = formatDuration(i.fullEveryMs);
    if (!lastFull) return { kind: "full", reason: `no full backup of this system is left, and one is due every ${every} (full_every)` };
    const age = i.now.getTime() - Date.parse(lastFull.startTime);
    if (age >= i.fullEveryMs)
      return { kind: "full", reason: `the last full backup, ${lastFull.id}, is ${(age / 86_400_000).toFixed(1)} days old, and one is due every ${every} (full_every)` };
  }
  return { kind: "incremental", parent: sameMajor[sameMajor.length - 1]! };
}

/** `--full-every` / `full_every`: a duration ("7d", "36h") or "off". */
export function parseFullEvery(text: string, where: string): number | null {
  if (text.trim().toLowerCase() === "off") return null;
  const ms = parseDuration(text);
  if (ms === null || ms <= 0) throw new KlioError("usage", `${where} must be a duration such as 7d, 36h or 2w, or off; got ${JSON.stringify(text)}`);
  return ms;
}
