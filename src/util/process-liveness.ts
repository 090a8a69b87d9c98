// Whether the process that left a lock or a session file behind is still running. A pid alone
// can be reused after a crash; with the process's start time (from /proc on Linux) a reused
// pid is told apart. Where /proc is not there, the pid alone decides, which errs on the side
// of "alive": whoever waits on it waits longer, nothing is taken from a live process.
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import process from "node:process";

/** Who a process is: enough to tell later whether it still runs. */
export interface ProcessStamp {
  pid: number;
  host: string;
  /** Start time in clock ticks since boot (/proc/PID/stat field 22), or null where unknown. */
  start: string | null;
}

export function isPidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: alive, but another user's.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function startOf(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

/** When this machine last booted (ms since the epoch, /proc/stat "btime"), or null where unknown. */
export function bootTimeMs(): number | null {
  try {
    const m = /^btime (\d+)$/m.exec(readFileSync("/proc/stat", "utf8"));
    return m ? Number(m[1]) * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * When a process started (ms since the epoch, to about a second: the boot time is in whole
 * seconds), or null where unknown. /proc counts in USER_HZ ticks, 100 a second on every
 * architecture Linux runs klio on.
 */
export function startedAtMs(pid: number): number | null {
  const boot = bootTimeMs();
  const ticks = startOf(pid);
  return boot === null || ticks === null || !/^\d+$/.test(ticks) ? null : boot + Number(ticks) * 10;
}

export function thisProcess(): ProcessStamp {
  return { pid: process.pid, host: hostname(), start: startOf(process.pid) };
}

/**
 * "alive", "dead", or "unknown" when the process ran on another host (only the file's age
 * can tell then).
 */
export function processState(p: ProcessStamp): "alive" | "dead" | "unknown" {
  if (p.host !== hostname()) return "unknown";
  if (!isPidAlive(p.pid)) return "dead";
  if (p.start === null) return "alive";
  const now = startOf(p.pid);
  return now === null || now === p.start ? "alive" : "dead";
}

/** Parses a stamp read from a file; null when it is not one. */
export function parseStamp(v: unknown): ProcessStamp | null {
  const o = v as Partial<ProcessStamp> | null;
  if (!o || typeof o !== "object" || !Number.isSafeInteger(o.pid) || (o.pid as number) <= 0 || typeof o.host !== "string") return null;
  if (o.start !== null && typeof o.start !== "string") return null;
  return { pid: o.pid as number, host: o.host, start: o.start ?? null };
}
