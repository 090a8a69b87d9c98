// The manifest a restore of an incremental backup writes: INCREMENTAL. entries become the
// whole files' (path, size, CRC-32C of what was restored), the rest stays byte for byte, and
// the manifest's own checksum is right again.
import { describe, it, expect } from "vitest";
import { createHash } from "node:crypto";
import { fullBackupLabel, incrementalFiles, rewriteIncrementalManifest, wholeFileOf } from "../src/restore/restored-manifest.ts";

/** A manifest as PostgreSQL 17+ writes one (backup_manifest.c), with its checksum. */
function manifest(files: string[]): Uint8Array {
  const body = `{ "PostgreSQL-Backup-Manifest-Version": 2,\n"System-Identifier": 7441234567890123456,\n"Files": [\n${files.join(",\n")}\n],\n` +
    `"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/4000028", "End-LSN": "0/4000120" }\n],\n`;
  const sum = createHash("sha256").update(body).digest("hex");
  return new TextEncoder().encode(`${body}"Manifest-Checksum": "${sum}"}\n`);
}

const LABEL = `{ "Path": "backup_label", "Size": 227, "Last-Modified": "2026-12-06 02:00:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "0badf00d" }`;
const INCR = `{ "Path": "base/5/INCREMENTAL.16384", "Size": 8232, "Last-Modified": "2026-12-06 01:59:58 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "11223344" }`;
const SPC = `{ "Path": "pg_tblspc/16390/PG_18_202506291/5/INCREMENTAL.16391_fsm", "Size": 12, "Last-Modified": "2026-12-06 01:59:57 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "55667788" }`;

function checksumHolds(bytes: Uint8Array): boolean {
  const text = new TextDecoder().decode(bytes);
  const at = text.lastIndexOf('"Manifest-Checksum"');
  return createHash("sha256").update(text.slice(0, at)).digest("hex") === /"Manifest-Checksum": "([0-9a-f]{64})"/.exec(text)![1];
}

describe("the restored backup_manifest", () => {
  it("names the whole files of INCREMENTAL. entries", () => {
    expect(wholeFileOf("base/5/INCREMENTAL.16384")).toBe("base/5/16384");
    expect(wholeFileOf("INCREMENTAL.x")).toBe("x");
    expect(wholeFileOf("base/5/16384")).toBeNull();
    expect(wholeFileOf("base/5/INCREMENTAL.")).toBeNull();
    expect([...incrementalFiles(manifest([LABEL, INCR, SPC]))]).toEqual(["base/5/16384", "pg_tblspc/16390/PG_18_202506291/5/16391_fsm"]);
  });

  it("rewrites those entries with the restored size and CRC-32C and keeps every other byte", () => {
    const before = manifest([LABEL, INCR, SPC]);
    expect(checksumHolds(before)).toBe(true);
    const after = rewriteIncrementalManifest(before, new Map([
      ["base/5/16384", { size: 8192 * 3, crc32c: 0x04030201 }],
      ["pg_tblspc/16390/PG_18_202506291/5/16391_fsm", { size: 24576, crc32c: 0xddccbbaa }],
    ]));
    const text = new TextDecoder().decode(after);
    expect(text).toContain(`${LABEL},\n{ "Path": "base/5/16384", "Size": 24576, "Last-Modified": "2026-12-06 01:59:58 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "01020304" },\n`);
    expect(text).toContain(`{ "Path": "pg_tblspc/16390/PG_18_202506291/5/16391_fsm", "Size": 24576, "Last-Modified": "2026-12-06 01:59:57 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "aabbccdd" }\n],\n`);
    expect(text).not.toContain("INCREMENTAL.");
    expect(checksumHolds(after)).toBe(true);
    // Everything but the rewritten lines and the checksum is PostgreSQL's.
    const strip = (t: string) => t.split("\n").filter((l) => !/"Path": "(base\/5|pg_tblspc)|Manifest-Checksum/.test(l)).join("\n");
    expect(strip(text)).toBe(strip(new TextDecoder().decode(before)));
    expect(JSON.parse(text).Files).toHaveLength(3);
  });

  it("drops the INCREMENTAL FROM lines of backup_label, and describes the label written", () => {
    const label = "START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\nCHECKPOINT LOCATION: 0/4000080\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n" +
      "START TIME: 2026-12-06 02:00:00 UTC\nLABEL: klio x\nSTART TIMELINE: 1\nINCREMENTAL FROM LSN: 0/2000028\nINCREMENTAL FROM TLI: 1\n";
    expect(fullBackupLabel(label)).toBe(label.replace("INCREMENTAL FROM LSN: 0/2000028\nINCREMENTAL FROM TLI: 1\n", ""));
    const after = new TextDecoder().decode(rewriteIncrementalManifest(manifest([LABEL, INCR]), new Map([
      ["backup_label", { size: 200, crc32c: 1 }], ["base/5/16384", { size: 8192, crc32c: 2 }],
    ])));
    expect(after).toContain(`{ "Path": "backup_label", "Size": 200, "Last-Modified": "2026-12-06 02:00:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "01000000" },\n`);
    expect(checksumHolds(new TextEncoder().encode(after))).toBe(true);
  });

  it("refuses an INCREMENTAL. entry the restore did not write, and a manifest without its checksum", () => {
    expect(() => rewriteIncrementalManifest(manifest([LABEL, INCR]), new Map())).toThrow(/lists INCREMENTAL\.16384 for base\/5\/16384, which the restore did not write/);
    const cut = new TextDecoder().decode(manifest([LABEL])).replace(/"Manifest-Checksum".*\n$/, "");
    expect(() => rewriteIncrementalManifest(new TextEncoder().encode(cut), new Map())).toThrow(/no Manifest-Checksum line/);
  });
});
