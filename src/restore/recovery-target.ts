// Where recovery should stop, parsed once from the restore flags, and what PostgreSQL
// settings say it. Also picks the backup that can reach the target.
import { KlioError } from "../util/errors.ts";
import { formatLsn, parseLsn, type Lsn } from "../pg/lsn.ts";
import type { Snapshot } from "../backup/snapshot.ts";

export type RecoveryTarget =
  | { kind: "end" }
  | { kind: "immediate" }
  | { kind: "time"; time: Date; text: string }
  | { kind: "lsn"; lsn: Lsn }
  | { kind: "xid"; xid: string }
  | { kind: "name"; name: string };

export type TargetAction = "promote" | "pause" | "shutdown";

export interface TargetFlags {
  time?: string;
  lsn?: string;
  xid?: string;
  name?: string;
  immediate?: boolean;
}

export function parseRecoveryTarget(f: TargetFlags): RecoveryTarget {
  const given = (["time", "lsn", "xid", "name", "immediate"] as const).filter((k) => f[k] !== undefined && f[k] !== false);
  if (given.length > 1) throw new KlioError("usage", `restore: give at most one recovery target, got ${given.map((g) => `--target-${g}`).join(" and ")}`);
  if (f.time !== undefined) {
    // PostgreSQL reads recovery_target_time as a timestamptz; insist on an explicit zone so
    // the target does not depend on the restored server's TimeZone setting.
    const m = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)(Z|[+-]\d{2})(?::?(\d{2}))?$/.exec(f.time.trim());
    const time = new Date(m ? `${m[1]}T${m[2]}${m[3] === "Z" ? "Z" : `${m[3]}:${m[4] ?? "00"}`}` : "invalid");
    if (!m || Number.isNaN(time.getTime()))
      throw new KlioError("usage", `restore: --target-time must be a timestamp with a time zone, like 2026-11-24 07:15:00+00 or 2026-11-24T07:15:00Z, got "${f.time}"`);
    // Written for PostgreSQL's own parser, which refuses the ISO "T" and "Z" forms here.
    return { kind: "time", time, text: `${m![1]} ${m![2]}${m![3] === "Z" ? "+00" : m![3]}${m![4] !== undefined && m![3] !== "Z" ? ":" + m![4] : ""}` };
  }
  if (f.lsn !== undefined) {
    try {
      return { kind: "lsn", lsn: parseLsn(f.lsn) };
    } catch {
      throw new KlioError("usage", `restore: --target-lsn must be an LSN like 0/3000028, got "${f.lsn}"`);
    }
  }
  if (f.xid !== undefined) {
    if (!/^\d{1,20}$/.test(f.xid)) throw new KlioError("usage", `restore: --target-xid must be a transaction id (digits), got "${f.xid}"`);
    return { kind: "xid", xid: f.xid };
  }
  if (f.name !== undefined) {
    if (f.name === "" || f.name.length > 63 || /[\0\n\r]/.test(f.name)) throw new KlioError("usage", `restore: --target-name must be a restore point name (1 to 63 characters)`);
    return { kind: "name", name: f.name };
  }
  if (f.immediate) return { kind: "immediate" };
  return { kind: "end" };
}

export function parseTargetAction(text: string | undefined, target: RecoveryTarget): TargetAction {
  const a = text ?? "promote";
  if (a !== "promote" && a !== "pause" && a !== "shutdown") throw new KlioError("usage", `restore: --target-action must be promote, pause or shutdown, got "${a}"`);
  if (target.kind === "end" && text !== undefined) throw new KlioError("usage", "restore: --target-action needs a recovery target (--target-time, --target-lsn, …)");
  return a;
}

export function parseTargetTimeline(text: string | undefined): string {
  const t = text ?? "latest";
  if (t === "latest" || t === "current" || /^[1-9]\d{0,9}$/.test(t)) return t;
  throw new KlioError("usage", `restore: --target-timeline must be latest, current or a timeline number, got "${t}"`);
}

/** postgresql.auto.conf settings for the target (restore_command is added by the caller). */
export function targetSettings(target: RecoveryTarget, action: TargetAction, timeline: string): [string, string][] {
  const out: [string, string][] = [];
  switch (target.kind) {
    case "end":
      break;
    case "immediate":
      out.push(["recovery_target", "immediate"]);
      break;
    case "time":
      out.push(["recovery_target_time", target.text]);
      break;
    case "lsn":
      out.push(["recovery_target_lsn", formatLsn(target.lsn)]);
      break;
    case "xid":
      out.push(["recovery_target_xid", target.xid]);
      break;
    case "name":
      out.push(["recovery_target_name", target.name]);
      break;
  }
  if (target.kind !== "end") out.push(["recovery_target_action", action]);
  out.push(["recovery_target_timeline", timeline]);
  return out;
}

/**
 * The newest backup that can reach the target: it must end before a time or LSN target
 * (recovery cannot stop before the backup is consistent). For xid, name, immediate and end
 * the newest backup is the one with the least WAL to replay.
 */
export function chooseBackup(snapshots: Snapshot[], target: RecoveryTarget): Snapshot | undefined {
  const fits = (s: Snapshot) => {
    if (target.kind === "time") return new Date(s.endTime).getTime() <= target.time.getTime();
    if (target.kind === "lsn") return parseLsn(s.endLsn) <= target.lsn;
    return true;
  };
  return [...snapshots].sort((a, b) => (a.id < b.id ? -1 : 1)).filter(fits).pop();
}
