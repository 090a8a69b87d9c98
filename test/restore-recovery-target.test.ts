import { describe, expect, it } from "vitest";
import { chooseBackup, parseRecoveryTarget, parseTargetAction, parseTargetTimeline, targetSettings } from "../src/restore/recovery-target.ts";
import type { Snapshot } from "../src/backup/snapshot.ts";

const snap = (id: string, endTime: string, endLsn: string) => ({ id, endTime, endLsn }) as Snapshot;

describe("recovery targets", () => {
  it("parses each kind and refuses bad or several targets", () => {
    expect(parseRecoveryTarget({})).toEqual({ kind: "end" });
    expect(parseRecoveryTarget({ immediate: true })).toEqual({ kind: "immediate" });
    expect(parseRecoveryTarget({ lsn: "0/3000028" })).toEqual({ kind: "lsn", lsn: 0x3000028n });
    expect(parseRecoveryTarget({ xid: "742" })).toEqual({ kind: "xid", xid: "742" });
    expect(parseRecoveryTarget({ name: "before-upgrade" })).toEqual({ kind: "name", name: "before-upgrade" });
    expect(parseRecoveryTarget({ time: "2026-11-24 07:15:00+00" })).toMatchObject({ kind: "time", text: "2026-11-24 07:15:00+00" });
    expect(parseRecoveryTarget({ time: "2026-11-24T07:15:00.123456Z" })).toMatchObject({ text: "2026-11-24 07:15:00.123456+00" });
    expect(parseRecoveryTarget({ time: "2026-11-24T09:15:00+0230" })).toMatchObject({ text: "2026-11-24 09:15:00+02:30" });
    expect(parseRecoveryTarget({ time: "2026-11-24T09:15:00+02:30" }).kind === "time" && parseRecoveryTarget({ time: "2026-11-24T09:15:00+02:30" })).toMatchObject({ time: new Date("2026-11-24T06:45:00Z") });
    expect(() => parseRecoveryTarget({ time: "2026-11-24 07:15:00" })).toThrow(/time zone/);
    expect(() => parseRecoveryTarget({ time: "yesterday" })).toThrow(/time zone/);
    expect(() => parseRecoveryTarget({ lsn: "3000028" })).toThrow(/LSN/);
    expect(() => parseRecoveryTarget({ xid: "12a" })).toThrow(/transaction id/);
    expect(() => parseRecoveryTarget({ lsn: "0/1", xid: "5" })).toThrow(/at most one/);
    expect(() => parseTargetAction("explode", { kind: "immediate" })).toThrow(/promote, pause or shutdown/);
    expect(() => parseTargetAction("pause", { kind: "end" })).toThrow(/needs a recovery target/);
    expect(() => parseTargetTimeline("0")).toThrow(/timeline/);
    expect(parseTargetTimeline("3")).toBe("3");
  });

  it("writes the settings PostgreSQL reads", () => {
    expect(targetSettings({ kind: "lsn", lsn: 0x3000028n }, "promote", "latest")).toEqual([
      ["recovery_target_lsn", "0/3000028"], ["recovery_target_action", "promote"], ["recovery_target_timeline", "latest"],
    ]);
    expect(targetSettings({ kind: "end" }, "promote", "latest")).toEqual([["recovery_target_timeline", "latest"]]);
  });

  it("picks the newest backup that ends before a time or LSN target", () => {
    const all = [snap("20261124T010000Z", "2026-11-24T01:05:00Z", "0/5000000"), snap("20261124T020000Z", "2026-11-24T02:05:00Z", "0/9000000")];
    expect(chooseBackup(all, { kind: "end" })?.id).toBe("20261124T020000Z");
    expect(chooseBackup(all, parseRecoveryTarget({ time: "2026-11-24T01:30:00Z" }))?.id).toBe("20261124T010000Z");
    expect(chooseBackup(all, parseRecoveryTarget({ lsn: "0/9000000" }))?.id).toBe("20261124T020000Z");
    expect(chooseBackup(all, parseRecoveryTarget({ lsn: "0/4000000" }))).toBeUndefined();
  });
});
