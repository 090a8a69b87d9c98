// Backup schedules: a cron expression (five fields, local time, as crontab(5) reads them) or
// a fixed interval ("every 6h"). Both answer one question: when is the next run after t?
import { KlioError } from "../util/errors.ts";
import { parseDuration } from "../util/duration.ts";

export type Schedule =
  | { kind: "interval"; text: string; everyMs: number }
  | { kind: "cron"; text: string; minutes: Set<number>; hours: Set<number>; days: Set<number>; months: Set<number>; weekdays: Set<number>; anyDay: boolean; anyWeekday: boolean };

const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const SHORTHANDS: Record<string, string> = {
  "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
};

function bad(text: string, why: string): KlioError {
  return new KlioError("bad-schedule", `"${text}" is not a schedule: ${why} (a cron expression such as "0 3 * * *", or an interval such as "every 6h")`);
}

export function parseSchedule(text: string): Schedule {
  const t = text.trim();
  const every = /^every\s+(\d+\s*[smhd])$/i.exec(t);
  if (every) {
    const everyMs = parseDuration(every[1]!)!;
    if (everyMs < 10_000 || everyMs > 366 * 86_400_000) throw bad(text, "an interval must be between 10 seconds and 366 days");
    return { kind: "interval", text: t, everyMs };
  }
  const fields = (SHORTHANDS[t.toLowerCase()] ?? t).split(/\s+/);
  if (fields.length !== 5) throw bad(text, `a cron expression has 5 fields (minute hour day month weekday), this has ${fields.length}`);
  const [m, h, dom, mon, dow] = fields as [string, string, string, string, string];
  const weekdays = field(text, dow, 0, 7, WEEKDAYS, "weekday");
  if (weekdays.delete(7)) weekdays.add(0); // 7 is Sunday too
  return {
    kind: "cron", text: t,
    minutes: field(text, m, 0, 59, null, "minute"),
    hours: field(text, h, 0, 23, null, "hour"),
    days: field(text, dom, 1, 31, null, "day of month"),
    months: field(text, mon, 1, 12, MONTHS, "month"),
    weekdays,
    anyDay: dom === "*", anyWeekday: dow === "*",
  };
}

function field(text: string, f: string, lo: number, hi: number, names: string[] | null, what: string): Set<number> {
  const out = new Set<number>();
  const value = (s: string): number => {
    const named = names?.indexOf(s.toLowerCase()) ?? -1;
    if (named >= 0) return named + (lo === 1 ? 1 : 0);
    if (!/^\d+$/.test(s)) throw bad(text, `the ${what} field has "${s}"`);
    const n = Number(s);
    if (n < lo || n > hi) throw bad(text, `the ${what} field must be within ${lo}-${hi}, found ${n}`);
    return n;
  };
  for (const part of f.split(",")) {
    const [range, stepText] = part.split("/") as [string, string | undefined];
    if (stepText !== undefined && !/^[1-9]\d*$/.test(stepText)) throw bad(text, `the ${what} field has the step "${stepText}"`);
    const step = stepText === undefined ? 1 : Number(stepText);
    let from: number;
    let to: number;
    if (range === "*") [from, to] = [lo, hi];
    else if (range.includes("-")) {
      const [a, b] = range.split("-") as [string, string];
      [from, to] = [value(a), value(b)];
      if (from > to) throw bad(text, `the ${what} range ${range} runs backwards`);
    } else {
      from = value(range);
      to = stepText === undefined ? from : hi;
    }
    for (let v = from; v <= to; v += step) out.add(v);
  }
  return out;
}

/**
 * The first run strictly after `after` (ms since the epoch). An interval counts from `anchor`
 * (the last run, or the daemon's start when there was none), so a restart does not shift it.
 */
export function nextRun(s: Schedule, after: number, anchor: number): number {
  if (s.kind === "interval") {
    if (anchor > after) return anchor;
    return anchor + (Math.floor((after - anchor) / s.everyMs) + 1) * s.everyMs;
  }
  const d = new Date(after);
  d.setSeconds(0, 0);
  d.setMinutes(d.getMinutes() + 1);
  // At most a few years of days; each step skips a whole month, day or hour that cannot match.
  for (let guard = 0; guard < 5 * 366 * 24 * 60; guard++) {
    if (!s.months.has(d.getMonth() + 1)) {
      d.setMonth(d.getMonth() + 1, 1);
      d.setHours(0, 0, 0, 0);
      continue;
    }
    if (!dayMatches(s, d)) {
      d.setDate(d.getDate() + 1);
      d.setHours(0, 0, 0, 0);
      continue;
    }
    if (!s.hours.has(d.getHours())) {
      d.setHours(d.getHours() + 1, 0, 0, 0);
      continue;
    }
    if (!s.minutes.has(d.getMinutes())) {
      d.setMinutes(d.getMinutes() + 1, 0, 0);
      continue;
    }
    return d.getTime();
  }
  throw new KlioError("bad-schedule", `the schedule "${s.text}" never runs (no such date)`);
}

/** crontab(5): when both day fields are restricted, either may match. */
function dayMatches(s: Extract<Schedule, { kind: "cron" }>, d: Date): boolean {
  const dom = s.days.has(d.getDate());
  const dow = s.weekdays.has(d.getDay());
  if (s.anyDay && s.anyWeekday) return true;
  if (s.anyDay) return dow;
  if (s.anyWeekday) return dom;
  return dom || dow;
}
