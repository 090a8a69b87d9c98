// Backup schedules: cron expressions as crontab(5) reads them (local time), and intervals
// anchored on the last run so that a restart neither repeats nor shifts them.
import { describe, it, expect } from "vitest";
import { nextRun, parseSchedule } from "../src/server/schedule.ts";

const at = (s: string) => new Date(s).getTime(); // local time, like cron
const iso = (ms: number) => {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
};

describe("parseSchedule and nextRun", () => {
  it.each([
    ["0 3 * * *", "2026-12-01T02:59:30", "2026-12-01T03:00"],
    ["0 3 * * *", "2026-12-01T03:00:00", "2026-12-02T03:00"],
    ["*/15 * * * *", "2026-12-01T10:07:00", "2026-12-01T10:15"],
    ["30 2 * * sun", "2026-12-01T00:00:00", "2026-12-06T02:30"], // 2026-12-01 is a Tuesday
    ["0 0 1 * *", "2026-12-15T12:00:00", "2027-01-01T00:00"],
    ["0 12 * jun-aug mon-fri", "2026-12-01T00:00:00", "2027-06-01T12:00"],
    ["0 0 13 * 5", "2026-12-01T00:00:00", "2026-12-04T00:00"], // day 13 OR a Friday
    ["5 4 29 2 *", "2026-03-01T00:00:00", "2028-02-29T04:05"],
    ["@daily", "2026-12-01T23:59:00", "2026-12-02T00:00"],
    ["0 0 * * 7", "2026-12-01T00:00:00", "2026-12-06T00:00"], // 7 is Sunday too
    ["1,31 8-9/1 * * *", "2026-12-01T08:31:00", "2026-12-01T09:01"],
  ])("%s after %s runs at %s", (expr, after, expected) => {
    expect(iso(nextRun(parseSchedule(expr), at(after), 0))).toBe(expected);
  });

  it("counts an interval from the last run, not from now", () => {
    const s = parseSchedule("every 6h");
    const last = at("2026-12-01T01:00:00");
    expect(iso(nextRun(s, at("2026-12-01T02:00:00"), last))).toBe("2026-12-01T07:00");
    // Down for a day: the next run is on the same grid, not a burst of missed ones.
    expect(iso(nextRun(s, at("2026-12-02T08:30:00"), last))).toBe("2026-12-02T13:00");
    expect(parseSchedule("every 30s")).toMatchObject({ kind: "interval", everyMs: 30_000 });
  });

  it.each([
    ["", /5 fields/], ["* * * *", /5 fields/], ["61 * * * *", /minute field must be within 0-59/], ["* 24 * * *", /hour/],
    ["* * 0 * *", /day of month/], ["* * * 13 *", /month/], ["* * * * 8", /weekday/], ["5-1 * * * *", /backwards/],
    ["*/0 * * * *", /step/], ["every 5s", /between 10 seconds and 366 days/], ["every 2w", /5 fields/], ["daily", /5 fields/],
    ["0 0 31 2 *", /never runs/],
  ])("refuses %j", (expr, message) => {
    expect(() => nextRun(parseSchedule(expr), at("2026-12-01T00:00:00"), 0)).toThrow(message);
  });
});
