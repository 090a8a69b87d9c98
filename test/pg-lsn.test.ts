import { describe, it, expect } from "vitest";
import { formatLsn, parseLsn, parseSegmentName, parseSegmentSize, segmentStart, walFileName, historyFileName } from "../src/pg/lsn.ts";
import { parseTimelineHistory } from "../src/pg/timeline-history.ts";

describe("LSN and WAL name maths", () => {
  it("parses and formats LSNs as PostgreSQL prints them", () => {
    expect(parseLsn("16/B374D848")).toBe(0x16b374d848n);
    expect(formatLsn(0x16b374d848n)).toBe("16/B374D848");
    expect(formatLsn(0n)).toBe("0/0");
    for (const bad of ["", "16", "16/", "/1", "G/1", "123456789/0", "1/2/3"]) expect(() => parseLsn(bad)).toThrow(/not an LSN/);
  });

  it("names segments for every segment size from 1 MB to 1 GB", () => {
    // As XLogFileName() computes them; the receiver tests compare with pg_walfile_name() too.
    expect(walFileName(1, 0x16b374d848n / 16777216n, 16 * 1024 ** 2)).toBe("0000000100000016000000B3");
    expect(walFileName(2, 0x16b374d848n / 1048576n, 1024 ** 2)).toBe("000000020000001600000B37");
    expect(walFileName(3, 0x16b374d848n / 1024n ** 3n, 1024 ** 3)).toBe("000000030000001600000002");
    for (const size of [1, 2, 16, 64, 256, 1024].map((m) => m * 1024 ** 2)) {
      const segno = 0x16b374d848n / BigInt(size);
      const name = walFileName(7, segno, size);
      expect(parseSegmentName(name, size)).toEqual({ timeline: 7, segno });
    }
    expect(historyFileName(10)).toBe("0000000A.history");
    expect(segmentStart(0x16b374d848n, 16 * 1024 ** 2)).toBe(0x16b3000000n);
  });

  it("refuses impossible names and sizes", () => {
    expect(() => parseSegmentName("../../etc/passwd", 16 * 1024 ** 2)).toThrow(/not a WAL segment name/);
    expect(() => parseSegmentName("000000010000000000000100", 16 * 1024 ** 2)).toThrow(/16MB segments/);
    expect(() => parseSegmentName("000000000000000000000001", 16 * 1024 ** 2)).toThrow();
    expect(parseSegmentSize("16MB")).toBe(16 * 1024 ** 2);
    expect(parseSegmentSize("1GB")).toBe(1024 ** 3);
    for (const bad of ["512kB", "3MB", "2GB", "x", ""]) expect(() => parseSegmentSize(bad)).toThrow(/WAL segment size/);
  });

  it("reads timeline history files", () => {
    const h = parseTimelineHistory("1\t0/3000060\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n");
    expect(h).toEqual([
      { timeline: 1, switchpoint: 0x3000060n, reason: "no recovery target specified" },
      { timeline: 2, switchpoint: 0x5000000n, reason: 'at restore point "x"' },
    ]);
    expect(() => parseTimelineHistory("2\t0/1\tx\n1\t0/2\ty\n")).toThrow(/increase/);
  });
});
