// Where recovery should stop, parsed once from the restore flags, and what PostgreSQL
// settings say it. Also picks the backup that can reach the target.
import { KlioError } from "../util/errors.ts";
import { formatLsn, parseLsn, type Lsn } from "../pg/lsn.ts";
import type { Snapshot } from "../backup/snapshot.ts";
import type { ArchiveEnd } from "../wal/archive-end.ts";

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
  if (f.time !== undefined) return parseTargetTime(f.time);
  if (f.lsn !== undefined) {
    try {
      return { kind: "lsn", lsn: parseLsn(f.lsn) };
    } catch {
      throw new KlioError("usage", `restore: --target-lsn must be an LSN like 0/3000028, got "${f.lsn}"`);
    }
  }
  if (f.xid !== undefined) return { kind: "xid", xid: parseTargetXid(f.xid) };
  if (f.name !== undefined) {
    if (f.name === "" || f.name.length > 63 || /[\0\n\r]/.test(f.name)) throw new KlioError("usage", `restore: --target-name must be a restore point name (1 to 63 characters)`);
    return { kind: "name", name: f.name };
  }
  if (f.immediate) return { kind: "immediate" };
  return { kind: "end" };
}

/**
 * PostgreSQL reads recovery_target_time as a timestamptz; an explicit zone is insisted on so
 * the target does not depend on the restored server's TimeZone setting. A date or time that
 * does not exist (February 31st, 25:00) is refused here, where PostgreSQL would refuse it only
 * when the restored server starts.
 */
function parseTargetTime(given: string): RecoveryTarget {
  const bad = () => new KlioError("bad-target", `restore: --target-time must be a timestamp with a time zone, like 2026-11-24 07:15:00+00 or 2026-11-24T07:15:00Z, got "${given}"`);
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?(Z|[+-]\d{2})(?::?(\d{2}))?$/.exec(given.trim());
  if (!m) throw bad();
  const [, year, month, day, hour, minute, second, fraction = "", zone, zoneMinutes] = m;
  // PostgreSQL takes zone offsets up to 15:59.
  if (zone === "Z" ? zoneMinutes !== undefined : Math.abs(Number(zone)) > 15 || Number(zoneMinutes ?? 0) > 59) throw bad();
  const offset = zone === "Z" ? 0 : (zone!.startsWith("-") ? -1 : 1) * (Math.abs(Number(zone)) * 60 + Number(zoneMinutes ?? 0));
  const wall = Date.UTC(Number(year), Number(month) - 1, Number(day), Number(hour), Number(minute), Number(second));
  const w = new Date(wall);
  const exists = w.getUTCFullYear() === Number(year) && w.getUTCMonth() === Number(month) - 1 && w.getUTCDate() === Number(day) &&
    w.getUTCHours() === Number(hour) && w.getUTCMinutes() === Number(minute) && w.getUTCSeconds() === Number(second);
  if (!exists) throw new KlioError("bad-target", `restore: --target-time ${given} names a date or time that does not exist`);
  const time = new Date(wall - offset * 60_000 + Math.floor(Number(`0${fraction || ".0"}`) * 1000));
  // Written for PostgreSQL's own parser, which refuses the ISO "T" and "Z" forms here.
  const zoneText = zone === "Z" ? "+00" : `${zone}${zoneMinutes !== undefined ? ":" + zoneMinutes : ""}`;
  return { kind: "time", time, text: `${year}-${month}-${day} ${hour}:${minute}:${second}${fraction}${zoneText}` };
}

/** Transaction ids that never commit: invalid (0), bootstrap (1), frozen (2). */
const FIRST_NORMAL_XID = 3n;
const MAX_FULL_XID = (1n << 64n) - 1n;

/**
 * PostgreSQL (15 and 18 alike) reads recovery_target_xid with strtou64 and keeps the low 32
 * bits: a 32-bit xid, or the 64-bit epoch-qualified form txid_current() and
 * pg_current_xact_id() show (its epoch is ignored). Anything past 2^64-1 stops the server at
 * start-up; a low part under 3 names no transaction, so recovery could never stop there. Only
 * decimal digits are taken (strtou64 would read 0x… as hex and a leading 0 as octal), and
 * the number is written back without leading zeros.
 */
export function parseTargetXid(given: string): string {
  const text = given.trim();
  if (!/^\d{1,20}$/.test(text)) throw new KlioError("bad-target", `restore: --target-xid must be a transaction id (decimal digits), got "${given}"`);
  const xid = BigInt(text);
  if (xid > MAX_FULL_XID || (xid & 0xffffffffn) < FIRST_NORMAL_XID)
    throw new KlioError("bad-target", `restore: --target-xid ${text} is not a transaction id PostgreSQL can stop at: give one from 3 to 4294967295, or the 64-bit form of txid_current() (up to 18446744073709551615)`);
  return xid.toString();
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

/**
 * A time or LSN target past the archive's end is refused: PostgreSQL would replay every byte
 * and then stop with "recovery ended before configured recovery target was reached", long
 * after the restore said it was done. `allowFuture` (--allow-future-target) is for WAL still
 * to come (a receiver catching up, clocks that differ between the primary and the appliance).
 */
export function checkTargetInArchive(target: RecoveryTarget, end: ArchiveEnd | null, allowFuture: boolean, cluster: string): void {
  if (allowFuture || end === null) return;
  const tail = "recovery could not reach it; give an earlier target, or --allow-future-target if the WAL up to it is still to come";
  if (target.kind === "time" && end.time !== null && target.time.getTime() > end.time.getTime())
    throw new KlioError("bad-target", `restore: --target-time ${target.text} is after the end of the WAL archive of ${cluster} (last written at ${end.time.toISOString()}, per ${end.basis}): ${tail}`);
  if (target.kind === "lsn" && target.lsn > end.lsn)
    throw new KlioError("bad-target", `restore: --target-lsn ${formatLsn(target.lsn)} is after the end of the WAL archive of ${cluster} (${formatLsn(end.lsn)}, per ${end.basis}): ${tail}`);
}

/** Recovery cannot stop before the backup is consistent: a time or LSN target must not lie before its end. */
export function checkTargetAfterBackup(target: RecoveryTarget, s: Snapshot): void {
  const early = (target.kind === "time" && new Date(s.endTime).getTime() > target.time.getTime()) || (target.kind === "lsn" && parseLsn(s.endLsn) > target.lsn);
  if (early) throw new KlioError("bad-target", `restore: backup ${s.id} ends at ${s.endTime} (LSN ${s.endLsn}), after the target: recovery cannot stop before a backup is consistent; choose an older backup or a later target`);
}
