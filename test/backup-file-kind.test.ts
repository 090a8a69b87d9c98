// Which files of a data directory (or of a tablespace's archive) are cut into pages, and
// which are content-defined or whole.
import { describe, it, expect } from "vitest";
import { chunkingFor, isPagedFile, PAGE_CHUNK, WHOLE_MAX, CDC } from "../src/backup/file-kind.ts";
import { createChunker } from "../src/repo/chunker.ts";

describe("chunkingFor", () => {
  it("cuts relation and SLRU files into pages, whatever their size", () => {
    for (const p of [
      "base/1/1259",
      "base/16384/16385_fsm",
      "base/16384/16385_vm",
      "base/16384/16385_init",
      "base/16384/16385.1",
      "base/16384/16385_fsm.12",
      "base/16384/t3_16390",
      "global/1262",
      "global/1262_vm",
      "pg_tblspc/16385/PG_15_202209061/5/16386",
      "pg_tblspc/16385/PG_18_202506291/16384/16386.3",
      // In a tablespace's own archive, paths are relative to the tablespace directory.
      "PG_15_202209061/5/16386",
      "PG_18_202506291/16384/16386_vm",
      "pg_xact/0000",
      "pg_multixact/offsets/0000",
      "pg_multixact/members/0001",
      "pg_commit_ts/0000",
    ]) {
      expect(isPagedFile(p), p).toBe(true);
      expect(chunkingFor(p, 100), p).toEqual({ kind: "fixed", size: PAGE_CHUNK });
      expect(chunkingFor(p, 2 ** 30), p).toEqual({ kind: "fixed", size: PAGE_CHUNK });
    }
    expect(PAGE_CHUNK).toBe(8192);
  });

  it("stores other small files whole and large ones in content-defined chunks", () => {
    for (const p of [
      "global/pg_control",
      "global/pg_filenode.map",
      "global/pg_internal.init",
      "base/1/PG_VERSION",
      "base/1/pg_filenode.map",
      "base/1/1259.txt",
      "base/1/1259_xyz",
      "base/x/1259",
      "PG_VERSION",
      "postgresql.conf",
      "backup_label",
      "tablespace_map",
      "log/postgresql-2026-11-24.log",
      "pg_logical/replorigin_checkpoint",
      "PG_15_202209061/5/pg_filenode.map",
      "pg_xact/readme",
    ]) {
      expect(isPagedFile(p), p).toBe(false);
      expect(chunkingFor(p, 0), p).toEqual({ kind: "whole", max: WHOLE_MAX });
      expect(chunkingFor(p, WHOLE_MAX), p).toEqual({ kind: "whole", max: WHOLE_MAX });
      expect(chunkingFor(p, WHOLE_MAX + 1), p).toEqual({ kind: "cdc", ...CDC });
    }
  });

  it("gives policies the chunker accepts", () => {
    for (const [p, size] of [["base/1/1259", 1], ["PG_VERSION", 3], ["log/big.log", 10 * 1024 * 1024]] as const) {
      expect(() => createChunker(chunkingFor(p, size))).not.toThrow();
    }
  });
});
