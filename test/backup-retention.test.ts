// Each retention rule keeps exactly what it promises, for backups at known times.
import { describe, it, expect } from "vitest";
import { evaluateRetention, validatePolicy, type RetentionPolicy } from "../src/backup/retention.ts";

/** A backup started at `start` (UTC, "2026-12-01 03:00") that took ten minutes. */
function b(start: string) {
  const t = new Date(start.replace(" ", "T") + ":00Z");
  const id = t.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  return { id, startTime: t.toISOString(), endTime: new Date(t.getTime() + 600_000).toISOString() };
}

const NOW = new Date("2026-12-01T12:00:00Z");
// Nightly at 03:00 for 40 days back, plus a second backup on 2026-11-30 at 15:00.
const NIGHTLY = [...Array.from({ length: 40 }, (_, k) => b(new Date(Date.UTC(2026, 10, 21 - k + 10, 3)).toISOString().slice(0, 16).replace("T", " "))), b("2026-11-30 15:00")];

function kept(policy: RetentionPolicy, backups = NIGHTLY, pinned: string[] = [], now = NOW): string[] {
  return evaluateRetention(backups, policy, new Set(pinned), now).filter((d) => d.keep).map((d) => d.id.slice(0, 13)).sort();
}

describe("retention rules", () => {
  const cases: [string, RetentionPolicy, string[]][] = [
    ["no rule keeps everything", {}, NIGHTLY.map((x) => x.id.slice(0, 13)).sort()],
    ["full 3: the newest three", { full: 3 }, ["20261130T0300", "20261130T1500", "20261201T0300"]],
    ["keepLatest 2", { keepLatest: 2 }, ["20261130T1500", "20261201T0300"]],
    // The window starts 2026-11-29 12:00: backups that ended after it, and the newest that ended before.
    ["recovery window 2d", { recoveryWindow: "2d" }, ["20261129T0300", "20261130T0300", "20261130T1500", "20261201T0300"]],
    // Starts 2026-12-01 00:00: the 03:00 backup ended in it; the 15:00 one of the day before is where recovery to 00:00 begins.
    ["recovery window 12h", { recoveryWindow: "12h" }, ["20261130T1500", "20261201T0300"]],
    // Days: the newest of each of the three most recent days (the 15:00 one wins on the 30th).
    ["keepDaily 3", { keepDaily: 3 }, ["20261129T0300", "20261130T1500", "20261201T0300"]],
    // ISO weeks: 2026-12-01 is a Tuesday (week 49 from Monday 30 Nov); week 48 ends Sunday 29 Nov.
    ["keepWeekly 3", { keepWeekly: 3 }, ["20261122T0300", "20261129T0300", "20261201T0300"]],
    ["keepMonthly 2", { keepMonthly: 2 }, ["20261130T1500", "20261201T0300"]],
    ["keepMonthly 3 (October's last)", { keepMonthly: 3 }, ["20261031T0300", "20261130T1500", "20261201T0300"]],
    ["rules add up", { keepDaily: 1, keepMonthly: 2 }, ["20261130T1500", "20261201T0300"]],
    ["minBackups tops up with the newest", { recoveryWindow: "1h", minBackups: 3 }, ["20261130T0300", "20261130T1500", "20261201T0300"]],
  ];
  for (const [name, policy, expected] of cases) {
    it(name, () => expect(kept(policy)).toEqual(expected));
  }

  it("full N counts full backups as pgBackRest does: the newest N and every backup after the oldest of them", () => {
    // Sunday fulls, incremental backups the other days.
    const week = NIGHTLY.map((x) => ({ ...x, kind: new Date(x.startTime).getUTCDay() === 0 ? "full" as const : "incremental" as const }));
    const fulls = week.filter((x) => x.kind === "full").map((x) => x.id).sort();
    const expected = week.filter((x) => x.startTime >= week.find((y) => y.id === fulls.at(-2))!.startTime).map((x) => x.id.slice(0, 13)).sort();
    expect(kept({ full: 2 }, week)).toEqual(expected);
    expect(expected.length).toBeGreaterThan(2);
    const d = evaluateRetention(week, { full: 2 }, new Set(), NOW);
    expect(d.find((x) => x.id === week.find((y) => y.kind === "incremental" && y.startTime > week.find((z) => z.id === fulls.at(-1))!.startTime)!.id)!.reasons)
      .toEqual([`taken after ${fulls.at(-2)}, the oldest of the newest 2 full backups`]);
    // Fewer full backups than asked for: nothing goes.
    expect(kept({ full: 50 }, week)).toHaveLength(week.length);
    // Only incremental backups left (their fulls deleted by hand): the rule keeps them all.
    expect(kept({ full: 1 }, week.filter((x) => x.kind === "incremental"))).toHaveLength(week.filter((x) => x.kind === "incremental").length);
  });

  it("keeps pinned backups whatever the rules say, and says why each stays or goes", () => {
    const pinned = NIGHTLY[30]!.id;
    const d = evaluateRetention(NIGHTLY, { full: 1 }, new Set([pinned]), NOW);
    expect(d.filter((x) => x.keep).map((x) => x.id).sort()).toEqual([pinned, "20261201T030000Z"].sort());
    expect(d.find((x) => x.id === pinned)!.reasons).toEqual(["pinned"]);
    expect(d.find((x) => x.id === "20261201T030000Z")!.reasons).toEqual(["one of the newest 1 full backups"]);
    expect(d.find((x) => x.id === "20261125T030000Z")).toMatchObject({ keep: false, reasons: ["no rule keeps it"] });
  });

  it("a window older than every backup keeps the newest before it, so recovery to its start works", () => {
    const old = [b("2026-10-01 03:00"), b("2026-10-02 03:00")];
    expect(kept({ recoveryWindow: "7d" }, old)).toEqual(["20261002T0300"]);
  });

  it("keeps nothing extra when every rule is satisfied, and at least one backup always", () => {
    expect(kept({ recoveryWindow: "1s" }, NIGHTLY)).toEqual(["20261201T0300"]);
    expect(kept({ full: 5 }, [])).toEqual([]);
  });

  it("refuses unknown rules, bad durations and counts, naming the field", () => {
    expect(() => validatePolicy({ keepHourly: 3 }, "x")).toThrow(/unknown rule "keepHourly"/);
    expect(() => validatePolicy({ recoveryWindow: "7 days" }, "x")).toThrow(/recoveryWindow must be a duration such as 7d/);
    expect(() => validatePolicy({ full: 0 }, "x")).toThrow(/full must be a whole number from 1/);
    expect(() => validatePolicy({ keepDaily: 2.5 }, "x")).toThrow(/keepDaily must be a whole number/);
    expect(() => validatePolicy([], "x")).toThrow(/is an object/);
    expect(validatePolicy({ recoveryWindow: "7d", full: 2 }, "x")).toEqual({ recoveryWindow: "7d", full: 2 });
  });
});
