// Full or incremental before the server is asked: every reason for a full, the parent an
// incremental backup is taken against, and --incremental failing on each reason.
import { describe, it, expect } from "vitest";
import { decideBackupKind, parseFullEvery, type BackupKindInputs } from "../src/backup/backup-kind.ts";
import type { Snapshot } from "../src/backup/snapshot.ts";

const SYSID = "7400000000000000001";
const DAY = 86_400_000;
const NOW = new Date("2026-12-06T03:00:00Z");

function backup(id: string, o: Partial<Snapshot> = {}): Snapshot {
  const t = `${id.slice(0, 4)}-${id.slice(4, 6)}-${id.slice(6, 8)}T${id.slice(9, 11)}:${id.slice(11, 13)}:${id.slice(13, 15)}Z`;
  return { id, systemIdentifier: SYSID, pgVersion: 180001, startTime: t, endTime: t, ...o } as Snapshot;
}

function inputs(o: Partial<BackupKindInputs>): BackupKindInputs {
  return { mode: "auto", pgVersion: 180001, summarizeWal: true, systemIdentifier: SYSID, backups: [], fullEveryMs: 7 * DAY, now: NOW, ...o };
}

describe("decideBackupKind", () => {
  it("takes an incremental backup against the newest backup of the same system and major version", () => {
    const backups = [backup("20261203T030000Z"), backup("20261205T030000Z", { kind: "incremental", parent: "20261203T030000Z" }), backup("20261204T030000Z")];
    const d = decideBackupKind(inputs({ backups }));
    expect(d.kind).toBe("incremental");
    expect(d.kind === "incremental" && d.parent.id).toBe("20261205T030000Z");
  });

  it("ignores backups of another system or another major version as parents", () => {
    const backups = [backup("20261203T030000Z"), backup("20261205T030000Z", { systemIdentifier: "7400000000000000002" }), backup("20261205T040000Z", { pgVersion: 170005 })];
    const d = decideBackupKind(inputs({ backups }));
    expect(d.kind === "incremental" && d.parent.id).toBe("20261203T030000Z");
  });

  const fulls: [string, Partial<BackupKindInputs>, RegExp][] = [
    ["--full", { mode: "full", backups: [backup("20261205T030000Z")] }, /^--full was given$/],
    ["PostgreSQL 15", { pgVersion: 150010, backups: [backup("20261205T030000Z", { pgVersion: 150010 })] }, /^PostgreSQL 15 has no incremental backups/],
    ["PostgreSQL 16", { pgVersion: 160004 }, /^PostgreSQL 16 has no incremental backups/],
    ["summarize_wal off", { summarizeWal: false, backups: [backup("20261205T030000Z")] }, /^summarize_wal is off/],
    ["no backup", { backups: [] }, /^no earlier backup of this system$/],
    ["another system only", { backups: [backup("20261205T030000Z", { systemIdentifier: "1" })] }, /^no earlier backup of this system$/],
    ["another major only", { backups: [backup("20261205T030000Z", { pgVersion: 170002 })] }, /^no earlier backup of PostgreSQL 18 \(the newest, 20261205T030000Z, is of PostgreSQL 17\)$/],
    ["last full too old", { backups: [backup("20261129T030000Z"), backup("20261205T030000Z", { kind: "incremental" })] },
      /^the last full backup, 20261129T030000Z, is 7\.0 days old, and one is due every 1w \(full_every\)$/],
    ["no full left", { backups: [backup("20261205T030000Z", { kind: "incremental" })] }, /^no full backup of this system is left, and one is due every 1w/],
  ];
  for (const [what, given, reason] of fulls) {
    it(`takes a full when ${what}, saying why; --incremental refuses with the same reason`, () => {
      const d = decideBackupKind(inputs(given));
      expect(d.kind).toBe("full");
      expect(d.kind === "full" && d.reason).toMatch(reason);
      if (given.mode !== "full") expect(() => decideBackupKind(inputs({ ...given, mode: "incremental" }))).toThrow(/^an incremental backup cannot be taken: /);
    });
  }

  it("full_every off trusts the summaries however old the last full is", () => {
    const d = decideBackupKind(inputs({ fullEveryMs: null, backups: [backup("20260101T030000Z"), backup("20261205T030000Z", { kind: "incremental" })] }));
    expect(d.kind === "incremental" && d.parent.id).toBe("20261205T030000Z");
  });

  it("a full younger than full_every keeps incremental backups coming", () => {
    const d = decideBackupKind(inputs({ backups: [backup("20261130T040000Z")] }));
    expect(d.kind).toBe("incremental");
  });
});

describe("parseFullEvery", () => {
  it("takes durations and off, and refuses anything else with one line", () => {
    expect(parseFullEvery("7d", "--full-every")).toBe(7 * DAY);
    expect(parseFullEvery("36h", "--full-every")).toBe(36 * 3_600_000);
    expect(parseFullEvery("off", "--full-every")).toBeNull();
    for (const bad of ["", "7", "0d", "-1d", "week", "7d 1h"]) expect(() => parseFullEvery(bad, "--full-every"), bad).toThrow(/^--full-every must be a duration such as 7d/);
  });
});
