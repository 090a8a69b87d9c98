// Retention: which backups a policy keeps, and why. A backup is kept when any rule keeps it
// (as restic's forget and pgBackRest's expire do: rules add up), and never fewer than
// minBackups are kept. With no rule at all, everything is kept. Days, weeks (ISO, from
// Monday) and months are UTC calendar periods of the backup's start time.
import { KlioError } from "../util/errors.ts";
import { formatDuration, parseDuration } from "../util/duration.ts";

export interface RetentionPolicy {
  /** Keep what a recovery to any moment of this window needs ("7d"): every backup that ended in it, and the newest before it. */
  recoveryWindow?: string;
  /**
   * Redundancy: the newest N full backups and every backup taken after the oldest of them
   * (pgBackRest's repo-retention-full, which keeps the incremental backups of the full ones
   * it keeps). Incremental backups restore alone here; the rule only counts as pgBackRest does.
   */
  full?: number;
  /** The newest N backups, full or incremental. */
  keepLatest?: number;
  /** The newest backup of each of the N most recent days (weeks, months) that have one. */
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  /** Never fewer backups than this (default 1 once any rule is set). */
  minBackups?: number;
}

export const RULES = ["recoveryWindow", "full", "keepLatest", "keepDaily", "keepWeekly", "keepMonthly", "minBackups"] as const;
const COUNTS = ["full", "keepLatest", "keepDaily", "keepWeekly", "keepMonthly", "minBackups"] as const;
const MAX_COUNT = 100_000;

export interface RetainedBackup {
  id: string;
  startTime: string;
  endTime: string;
  /** Absent: full (backups from before incremental ones). */
  kind?: "full" | "incremental";
}

export interface RetentionDecision {
  id: string;
  keep: boolean;
  /** Why it is kept (each rule that keeps it), or why it goes. */
  reasons: string[];
}

/** Checks a policy from a file, the API or flags; an error names the field. */
export function validatePolicy(p: unknown, where: string): RetentionPolicy {
  if (typeof p !== "object" || p === null || Array.isArray(p)) throw new KlioError("bad-policy", `${where}: a retention policy is an object`);
  const o = p as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!(RULES as readonly string[]).includes(k)) throw new KlioError("bad-policy", `${where}: unknown rule "${k}" (rules: ${RULES.join(", ")})`);
  if (o.recoveryWindow !== undefined) {
    const ms = typeof o.recoveryWindow === "string" ? parseDuration(o.recoveryWindow) : null;
    if (ms === null || ms <= 0) throw new KlioError("bad-policy", `${where}: recoveryWindow must be a duration such as 7d or 36h, got ${JSON.stringify(o.recoveryWindow)}`);
  }
  for (const k of COUNTS) {
    const v = o[k];
    if (v !== undefined && !(Number.isInteger(v) && (v as number) >= 1 && (v as number) <= MAX_COUNT))
      throw new KlioError("bad-policy", `${where}: ${k} must be a whole number from 1 to ${MAX_COUNT}, got ${JSON.stringify(v)}`);
  }
  return o as RetentionPolicy;
}

export function hasRules(p: RetentionPolicy): boolean {
  return RULES.some((k) => k !== "minBackups" && p[k] !== undefined);
}

/** One line: "recovery window 7d, 3 full, …" */
export function describePolicy(p: RetentionPolicy): string {
  if (!hasRules(p)) return "keep everything (no retention rule)";
  const parts: string[] = [];
  if (p.recoveryWindow) parts.push(`recovery window ${formatDuration(parseDuration(p.recoveryWindow)!)}`);
  if (p.full) parts.push(`${p.full} full`);
  if (p.keepLatest) parts.push(`latest ${p.keepLatest}`);
  if (p.keepDaily) parts.push(`${p.keepDaily} daily`);
  if (p.keepWeekly) parts.push(`${p.keepWeekly} weekly`);
  if (p.keepMonthly) parts.push(`${p.keepMonthly} monthly`);
  parts.push(`at least ${p.minBackups ?? 1}`);
  return parts.join(", ");
}

function day(t: Date): string {
  return t.toISOString().slice(0, 10);
}
function month(t: Date): string {
  return t.toISOString().slice(0, 7);
}
/** ISO 8601 week, "2026-W49" (weeks start on Monday; a week belongs to the year of its Thursday). */
function week(t: Date): string {
  const d = new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), t.getUTCDate()));
  d.setUTCDate(d.getUTCDate() + 4 - (d.getUTCDay() || 7));
  const n = Math.ceil(((d.getTime() - Date.UTC(d.getUTCFullYear(), 0, 1)) / 86_400_000 + 1) / 7);
  return `${d.getUTCFullYear()}-W${String(n).padStart(2, "0")}`;
}

/** Decisions for `backups` (any order), newest first. */
export function evaluateRetention(backups: readonly RetainedBackup[], policy: RetentionPolicy, pinned: ReadonlySet<string>, now: Date): RetentionDecision[] {
  const newest = [...backups].sort((a, b) => (a.startTime === b.startTime ? (a.id < b.id ? 1 : -1) : a.startTime < b.startTime ? 1 : -1));
  const reasons = new Map(newest.map((b) => [b.id, [] as string[]]));
  const keep = (b: RetainedBackup, why: string) => reasons.get(b.id)!.push(why);
  if (!hasRules(policy)) {
    for (const b of newest) keep(b, "no retention rule");
  } else {
    for (const b of newest) if (pinned.has(b.id)) keep(b, "pinned");
    if (policy.full) {
      const fulls = newest.filter((b) => (b.kind ?? "full") === "full").slice(0, policy.full);
      const oldest = fulls.length === policy.full ? fulls[fulls.length - 1]! : null;
      for (const b of newest) {
        if (fulls.includes(b)) keep(b, `one of the newest ${policy.full} full backups`);
        else if (oldest === null) keep(b, `fewer than ${policy.full} full backups exist`);
        else if (b.startTime > oldest.startTime) keep(b, `taken after ${oldest.id}, the oldest of the newest ${policy.full} full backups`);
      }
    }
    if (policy.keepLatest) newest.slice(0, policy.keepLatest).forEach((b) => keep(b, `one of the latest ${policy.keepLatest}`));
    const periods: [number | undefined, string, (t: Date) => string][] = [[policy.keepDaily, "day", day], [policy.keepWeekly, "week", week], [policy.keepMonthly, "month", month]];
    for (const [n, name, periodOf] of periods) {
      if (!n) continue;
      const seen = new Set<string>();
      for (const b of newest) {
        const p = periodOf(new Date(b.startTime));
        if (seen.has(p)) continue;
        seen.add(p);
        if (seen.size > n) break;
        keep(b, `newest of ${name} ${p}`);
      }
    }
    if (policy.recoveryWindow) {
      const start = now.getTime() - parseDuration(policy.recoveryWindow)!;
      let before = false;
      for (const b of newest) {
        if (Date.parse(b.endTime) >= start) keep(b, `ended within the recovery window (${policy.recoveryWindow})`);
        else if (!before) {
          before = true;
          keep(b, `the newest before the recovery window's start: recovery to that moment starts from it`);
        }
      }
    }
    const min = policy.minBackups ?? 1;
    let kept = newest.filter((b) => reasons.get(b.id)!.length > 0).length;
    for (const b of newest) {
      if (kept >= min) break;
      if (reasons.get(b.id)!.length > 0) continue;
      keep(b, `at least ${min} backups are kept`);
      kept++;
    }
  }
  return newest.map((b) => {
    const why = reasons.get(b.id)!;
    return why.length > 0 ? { id: b.id, keep: true, reasons: why } : { id: b.id, keep: false, reasons: ["no rule keeps it"] };
  });
}
