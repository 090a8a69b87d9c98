import { describe, expect, it } from "vitest";
import { FileListWriter, readFileList, type FileListEvent } from "../src/repo/file-list.ts";

async function write(build: (w: FileListWriter) => Promise<void>, pieceBytes = 64): Promise<Uint8Array[]> {
  const pieces: Uint8Array[] = [];
  const w = new FileListWriter((p) => void pieces.push(p.slice()), pieceBytes);
  await build(w);
  await w.finish();
  return pieces;
}

async function read(pieces: Uint8Array[]): Promise<FileListEvent[]> {
  const out: FileListEvent[] = [];
  async function* src() {
    for (const p of pieces) yield p;
  }
  for await (const ev of readFileList(src())) out.push(ev);
  return out;
}

const id = (n: number) => new Uint8Array(32).fill(n);

describe("file list", () => {
  it("reads back directories, symlinks, files with chunks and zero runs, across small pieces", async () => {
    const pieces = await write(async (w) => {
      await w.dir({ root: 0, path: "base", mode: 0o700, mtime: 1 });
      await w.symlink({ root: 0, path: "pg_tblspc/16384", mode: 0o777, mtime: 2, target: "/srv/ts" });
      await w.beginFile({ root: 16384, path: "PG_15_x/5/16385", mode: 0o600, mtime: 3.5, size: 8192 * 3 });
      await w.chunk(8192, id(1));
      await w.zeros(8192);
      await w.chunk(8192, id(2));
      await w.endFile();
      await w.beginFile({ root: 0, path: "empty — ünïcode", mode: 0o600, mtime: 4, size: 0 });
      await w.endFile();
    });
    expect(pieces.length).toBeGreaterThan(3); // 64-byte pieces: records span them
    const evs = await read(pieces);
    expect(evs.map((e) => e.kind)).toEqual(["dir", "symlink", "file", "chunk", "zeros", "chunk", "end-file", "file", "end-file"]);
    expect(evs[1]).toMatchObject({ kind: "symlink", target: "/srv/ts", path: "pg_tblspc/16384" });
    expect(evs[2]).toMatchObject({ kind: "file", root: 16384, size: 24576, mtime: 3.5, mode: 0o600 });
    expect(evs[5]).toMatchObject({ kind: "chunk", length: 8192, id: id(2) });
    expect(evs[7]).toMatchObject({ path: "empty — ünïcode" });
  });

  it("refuses chunks that do not add up to the file's size, on both sides", async () => {
    await expect(write(async (w) => {
      await w.beginFile({ root: 0, path: "f", mode: 0o600, mtime: 0, size: 10 });
      await w.chunk(5, id(1));
      await w.endFile();
    })).rejects.toThrow(/5 bytes of chunks, not its size 10/);
    await expect(write(async (w) => {
      await w.beginFile({ root: 0, path: "f", mode: 0o600, mtime: 0, size: 10 });
      await w.chunk(11, id(1));
    })).rejects.toThrow(/exceed its size/);
  });

  it("detects truncation, bad magic, trailing garbage and damaged records", async () => {
    const pieces = await write(async (w) => {
      await w.beginFile({ root: 0, path: "f", mode: 0o600, mtime: 0, size: 4 });
      await w.chunk(4, id(9));
      await w.endFile();
    }, 1 << 20);
    const whole = pieces[0]!;
    await expect(read([whole.subarray(0, whole.length - 9)])).rejects.toThrow(/truncated/);
    await expect(read([new TextEncoder().encode("NOTALIST"), whole.subarray(8)])).rejects.toThrow(/bad magic/);
    await expect(read([whole, new Uint8Array([1])])).rejects.toThrow(/after the end record/);
    const damaged = whole.slice();
    damaged[8] = 0x21; // an unknown record type
    await expect(read([damaged])).rejects.toThrow(/unknown record type/);
    await expect(read([])).rejects.toThrow(/empty/);
  });
});
