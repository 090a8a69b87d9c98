// The parent's file list, read alongside: passing a paged file notes where its records are; a
// file's layout is read page by page from the pieces, records straddling them, each piece
// read about once when the files are asked for in the list's order.
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { chunkIdHex, type ChunkId } from "../src/repo/chunk-id.ts";
import { FileListWriter } from "../src/repo/file-list.ts";
import { ParentFileList, type ParentFileLayout } from "../src/backup/parent-file-list.ts";

const P = 8192;
const id = (n: number): ChunkId => new Uint8Array(createHash("sha256").update(`chunk ${n}`).digest());

/** A list written in pieces of `pieceBytes`, stored by id; `reads` counts the pieces read. */
function storedList(build: (w: FileListWriter) => void, pieceBytes = 100) {
  const pieces = new Map<string, Uint8Array>();
  const ids: ChunkId[] = [];
  const w = new FileListWriter((piece) => {
    const pid = new Uint8Array(createHash("sha256").update(piece).digest());
    pieces.set(chunkIdHex(pid), piece.slice());
    ids.push(pid);
  }, pieceBytes);
  build(w);
  w.finish();
  const counter = { reads: 0 };
  const readPiece = async (pid: ChunkId) => {
    counter.reads++;
    return pieces.get(chunkIdHex(pid))!;
  };
  return { ids, readPiece, counter, pieces };
}

const file = (w: FileListWriter, path: string, size: number, root = 0) => w.beginFile({ root, path, mode: 0o600, mtime: 0, size });

function pagesOf(l: ParentFileLayout): (string | "zero")[] {
  return Array.from({ length: l.blocks }, (_, b) => {
    const p = l.pageAt(b);
    return p === "zero" ? p : chunkIdHex(p);
  });
}

describe("parent file list", () => {
  it("reads thousands of files spread over small pieces, each piece once when asked for in order, and any file out of order", async () => {
    const FILES = 3000;
    const list = storedList((w) => {
      w.dir({ root: 0, path: "base/5", mode: 0o700, mtime: 0 });
      for (let f = 0; f < FILES; f++) {
        // Files of 1 to 5 pages: page k of file f is chunk f*10+k, every third page zero.
        const pages = 1 + (f % 5);
        file(w, `base/5/${16384 + f}`, pages * P);
        for (let k = 0; k < pages; k++) {
          if ((f + k) % 3 === 0) w.zeros(P);
          else w.chunk(P, id(f * 10 + k));
        }
        w.endFile();
        if (f % 100 === 0) {
          // Files that are not paged are not indexed.
          file(w, `pg_log/log${f}`, 10);
          w.chunk(10, id(-f - 1));
          w.endFile();
        }
      }
    });
    expect(list.ids.length).toBeGreaterThan(1000); // records straddle pieces all the time
    const parent = new ParentFileList(list.ids, list.readPiece);
    expect(list.counter.reads).toBe(0); // nothing is read before a file is asked for
    for (let f = 0; f < FILES; f++) {
      const l = (await parent.layoutOf(0, `base/5/${16384 + f}`))!;
      const pages = 1 + (f % 5);
      expect(l.unaligned).toBeNull();
      expect(l.size).toBe(pages * P);
      expect(pagesOf(l)).toEqual(Array.from({ length: pages }, (_, k) => ((f + k) % 3 === 0 ? "zero" : chunkIdHex(id(f * 10 + k)))));
      expect(l.crc32c).toBeNull();
    }
    // Asked for in the list's order, each piece is read once.
    expect(list.counter.reads).toBeLessThanOrEqual(list.ids.length);
    expect(parent.files).toBe(FILES);
    expect(await parent.layoutOf(0, "pg_log/log0")).toBeUndefined();
    expect(await parent.layoutOf(0, "base/5/1")).toBeUndefined();
    expect(await parent.layoutOf(1663, "base/5/16384")).toBeUndefined();
    // Out of order, too.
    expect(pagesOf((await parent.layoutOf(0, "base/5/16385"))!)).toEqual([chunkIdHex(id(10)), chunkIdHex(id(11))]);
  });

  it("answers callers at once, each with its own file, in any order", async () => {
    const list = storedList((w) => {
      for (let f = 0; f < 40; f++) {
        file(w, `base/5/${f}`, 2 * P);
        w.chunk(P, id(2 * f));
        w.chunk(P, id(2 * f + 1));
        w.endFile();
      }
    }, 64);
    const parent = new ParentFileList(list.ids, list.readPiece);
    const asked = [39, 3, 17, 0, 25, 3, 38, 1];
    const layouts = await Promise.all([...asked.map((f) => parent.layoutOf(0, `base/5/${f}`)), parent.layoutOf(0, "base/5/missing")]);
    expect(layouts.map((l) => (l ? pagesOf(l) : null))).toEqual([...asked.map((f) => [chunkIdHex(id(2 * f)), chunkIdHex(id(2 * f + 1))]), null]);
  });

  it("splits zero runs into pages: runs spanning pages, and runs that start or end mid-page", async () => {
    const list = storedList((w) => {
      file(w, "base/5/100", 8 * P);
      w.chunk(P, id(0));
      w.zeros(3 * P); // pages 1-3
      w.chunk(P, id(4));
      w.zeros(P / 2); // page 5 from two runs, written as one by the writer
      w.zeros(P / 2 + P); // and page 6
      w.chunk(P, id(7));
      w.fileChecksum(0x1234abcd);
      w.endFile();
      file(w, "PG_17_202406281/5/200", 2 * P, 16400);
      w.incremental(2, [1]);
      w.zeros(2 * P);
      w.endFile();
    }, 64);
    const parent = new ParentFileList(list.ids, list.readPiece);
    const l = (await parent.layoutOf(0, "base/5/100"))!;
    const z = "zero";
    expect(pagesOf(l)).toEqual([chunkIdHex(id(0)), z, z, z, chunkIdHex(id(4)), z, z, chunkIdHex(id(7))]);
    expect(l.crc32c).toBe(0x1234abcd);
    expect(l.isZeroPage(3)).toBe(true);
    expect(() => l.pageAt(8)).toThrow(RangeError);
    const t = (await parent.layoutOf(16400, "PG_17_202406281/5/200"))!;
    expect(pagesOf(t)).toEqual([z, z]);
  });

  it("reads a zero run that starts mid-page in a version 1 list (written before runs were joined)", async () => {
    // Z 4096, Z 12288: page 0 and page 1 wholly zero though neither run is a page.
    const records = [0x46, 0, 0, 0, 0, 0, 9, ...new TextEncoder().encode("base/5/77"), 0, 0, 1, 0x80, ...f64(0), ...f64(3 * P),
      0x5a, ...f64(P / 2), 0x5a, ...f64(P + P / 2), 0x43, ...u32(P), ...id(9), 0x45, 0x58, ...f64(1)];
    const bytes = Uint8Array.from([...new TextEncoder().encode("KLIOFL01"), ...records]);
    const pieces = [bytes.subarray(0, 30), bytes.subarray(30, 60), bytes.subarray(60)];
    const parent = new ParentFileList([id(-1), id(-2), id(-3)], async (pid) => pieces[[id(-1), id(-2), id(-3)].findIndex((x) => chunkIdHex(x) === chunkIdHex(pid))]!);
    expect(pagesOf((await parent.layoutOf(0, "base/5/77"))!)).toEqual(["zero", "zero", chunkIdHex(id(9))]);
  });

  it("says why a file is not one page per chunk", async () => {
    const list = storedList((w) => {
      file(w, "base/5/1", P + 100);
      w.chunk(P, id(1));
      w.chunk(100, id(2));
      w.endFile();
      file(w, "base/5/2", 2 * P);
      w.chunk(2 * P, id(3));
      w.endFile();
      file(w, "base/5/3", 2 * P);
      w.zeros(P / 2);
      w.chunk(P, id(4));
      w.zeros(P / 2);
      w.endFile();
      file(w, "base/5/4", 0);
      w.endFile();
    });
    const parent = new ParentFileList(list.ids, list.readPiece);
    expect((await parent.layoutOf(0, "base/5/1"))!.unaligned).toMatch(/size 8292 is not a whole number of 8192-byte pages/);
    expect((await parent.layoutOf(0, "base/5/2"))!.unaligned).toMatch(/chunk of 16384 bytes at offset 0 is not one 8192-byte page/);
    expect((await parent.layoutOf(0, "base/5/3"))!.unaligned).toMatch(/chunk of 8192 bytes at offset 4096/);
    const empty = (await parent.layoutOf(0, "base/5/4"))!;
    expect([empty.unaligned, empty.blocks]).toEqual([null, 0]);
  });

  it("refuses a damaged list: a file listed twice, a piece that does not read back", async () => {
    const twice = storedList((w) => {
      for (let i = 0; i < 2; i++) {
        file(w, "base/5/9", 0);
        w.endFile();
      }
    });
    // Found when the list is read that far: asking for a file it lacks reads it to the end.
    await expect(new ParentFileList(twice.ids, twice.readPiece).layoutOf(0, "base/5/10")).rejects.toThrow(/lists base\/5\/9 twice/);
    const list = storedList((w) => {
      file(w, "base/5/9", P);
      w.chunk(P, id(1));
      w.endFile();
    }, 40);
    const truncated = new ParentFileList(list.ids.slice(0, -1), list.readPiece);
    expect(pagesOf((await truncated.layoutOf(0, "base/5/9"))!)).toEqual([chunkIdHex(id(1))]);
    await expect(truncated.layoutOf(0, "base/5/10")).rejects.toThrow(/truncated/);
  });
});

function u32(n: number): number[] {
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}
function f64(n: number): number[] {
  return [...new Uint8Array(new Float64Array([n]).buffer)].reverse();
}
