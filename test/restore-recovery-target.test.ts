import { describe, expect, it } from "vitest";
import { checkTargetAfterBackup, checkTargetInArchive, chooseBackup, parseRecoveryTarget, parseTargetAction, parseTargetTimeline, targetSettings } from "../src/restore/recovery-target.ts";
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
    // PostgreSQL's range: a normal 32-bit xid, or the 64-bit form (its low 32 bits a normal xid); decimal only.
    expect(parseRecoveryTarget({ xid: "3" })).toEqual({ kind: "xid", xid: "3" });
    expect(parseRecoveryTarget({ xid: "4294967295" })).toEqual({ kind: "xid", xid: "4294967295" });
    expect(parseRecoveryTarget({ xid: "4294968038" })).toEqual({ kind: "xid", xid: "4294968038" });
    expect(parseRecoveryTarget({ xid: "18446744073709551615" })).toEqual({ kind: "xid", xid: "18446744073709551615" });
    expect(parseRecoveryTarget({ xid: "0742" })).toEqual({ kind: "xid", xid: "742" });
    for (const xid of ["0", "2", "4294967296", "4294967298", "18446744073709551616", "99999999999999999999", "-5", "0x10", "1e3", ""])
      expect(() => parseRecoveryTarget({ xid }), xid).toThrow(/transaction id/);
    // Dates and zones PostgreSQL would refuse when the restored server starts.
    for (const time of ["2026-02-31 10:00:00+00", "2026-02-29 10:00:00+00", "2026-13-01 10:00:00+00", "2026-01-01 24:00:00+00", "2026-01-01 10:00:60+00", "2026-01-01 10:00:00+16", "2026-01-01 10:00:00+02:60", "2026-01-01 10:00:00Z:30"])
      expect(() => parseRecoveryTarget({ time }), time).toThrow(/does not exist|time zone/);
    expect(parseRecoveryTarget({ time: "2028-02-29 23:59:59.5-05" })).toMatchObject({ text: "2028-02-29 23:59:59.5-05", time: new Date("2028-03-01T04:59:59.500Z") });
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

  it("refuses a time or LSN target past the archive's end, unless allowed", () => {
    const end = { lsn: 0x5000000n, time: new Date("2026-11-24T02:00:00Z"), basis: "the receiver's flushed position in /r/wal/db1" };
    const at = (t: string) => parseRecoveryTarget({ time: t });
    expect(() => checkTargetInArchive(at("2026-11-24T01:59:59Z"), end, false, "db1")).not.toThrow();
    expect(() => checkTargetInArchive(at("2026-11-24T02:00:01Z"), end, false, "db1")).toThrow(/after the end of the WAL archive of db1 \(last written at 2026-11-24T02:00:00.000Z, per the receiver's flushed position/);
    expect(() => checkTargetInArchive(at("2026-11-24T02:00:01Z"), end, true, "db1")).not.toThrow();
    expect(() => checkTargetInArchive(parseRecoveryTarget({ lsn: "0/5000001" }), end, false, "db1")).toThrow(/--target-lsn 0\/5000001 is after the end .* \(0\/5000000,/);
    expect(() => checkTargetInArchive(parseRecoveryTarget({ lsn: "0/5000000" }), end, false, "db1")).not.toThrow();
    expect(() => checkTargetInArchive(parseRecoveryTarget({ xid: "742" }), end, false, "db1")).not.toThrow();
    expect(() => checkTargetInArchive(at("2030-01-01T00:00:00Z"), null, false, "db1")).not.toThrow();
    // With --backup-id, a target before that backup's end cannot be reached either.
    expect(() => checkTargetAfterBackup(at("2026-11-24T01:00:00Z"), snap("20261124T010000Z", "2026-11-24T01:05:00Z", "0/5000000"))).toThrow(/ends at 2026-11-24T01:05:00Z .*after the target/);
  });

  it("picks the newest backup that ends before a time or LSN target", () => {
    const all = [snap("20261124T010000Z", "2026-11-24T01:05:00Z", "0/5000000"), snap("20261124T020000Z", "2026-11-24T02:05:00Z", "0/9000000")];
    expect(chooseBackup(all, { kind: "end" })?.id).toBe("20261124T020000Z");
    expect(chooseBackup(all, parseRecoveryTarget({ time: "2026-11-24T01:30:00Z" }))?.id).toBe("20261124T010000Z");
    expect(chooseBackup(all, parseRecoveryTarget({ lsn: "0/9000000" }))?.id).toBe("20261124T020000Z");
    expect(chooseBackup(all, parseRecoveryTarget({ lsn: "0/4000000" }))).toBeUndefined();
  });
});
