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

/** A list written by hand: magic, records, end record counting `entries`. */
function rawList(version: 1 | 2, records: number[][], entries: number): Uint8Array {
  const end = new Uint8Array(9);
  end[0] = 0x58;
  new DataView(end.buffer).setFloat64(1, entries);
  return Uint8Array.from([...new TextEncoder().encode(`KLIOFL0${version}`), ...records.flat(), ...end]);
}
const u32 = (n: number) => [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
const f64 = (n: number) => [...new Uint8Array(new Float64Array([n]).buffer)].reverse();
const F = (path: string, size: number) => [0x46, ...u32(0), 0, path.length, ...new TextEncoder().encode(path), ...u32(0o600), ...f64(0), ...f64(size)];
const C = (length: number, n: number) => [0x43, ...u32(length), ...id(n)];
const Z = (length: number) => [0x5a, ...f64(length)];
const I = (length: number, blocks: number[]) => [0x49, ...u32(length), ...u32(blocks.length), ...blocks.flatMap(u32)];
const K = (crc: number) => [0x4b, ...u32(crc)];
const E = [0x45];

describe("file list version 2", () => {
  it("still reads version 1 lists as they were written, consecutive zero runs included", async () => {
    const v1 = rawList(1, [F("base/1/2", 8192 * 3), Z(8192), Z(8192), C(8192, 5), E], 1);
    const evs = await read([v1.subarray(0, 20), v1.subarray(20)]);
    expect(evs.map((e) => e.kind)).toEqual(["file", "zeros", "zeros", "chunk", "end-file"]);
    // What the writer writes, with a version 1 magic, is a version 1 list with the same events.
    const pieces = await write(async (w) => {
      w.beginFile({ root: 0, path: "f", mode: 0o600, mtime: 0, size: 10 });
      w.chunk(10, id(1));
      w.endFile();
    }, 1 << 20);
    const old = pieces[0]!.slice();
    old.set(new TextEncoder().encode("KLIOFL01"), 0);
    expect(await read([old])).toEqual(await read(pieces));
  });

  it("writes consecutive zeros as one zero run", async () => {
    const evs = await read(await write(async (w) => {
      w.beginFile({ root: 0, path: "f", mode: 0o600, mtime: 0, size: 700 });
      w.zeros(100);
      w.zeros(200);
      w.chunk(100, id(1));
      w.zeros(300);
      w.endFile();
    }));
    expect(evs.filter((e) => e.kind === "zeros" || e.kind === "chunk").map((e) => ("length" in e ? e.length : 0))).toEqual([300, 100, 300]);
  });

  it("round-trips incremental and checksum records, an incremental record longer than a piece included", async () => {
    const blocks = Array.from({ length: 100 }, (_, i) => i * 3);
    const pieces = await write(async (w) => {
      w.beginFile({ root: 1663, path: "PG_17_1/5/16384", mode: 0o600, mtime: 7, size: 8192 * 300 });
      w.incremental(300, blocks);
      w.chunk(8192, id(1));
      w.zeros(8192 * 299);
      w.fileChecksum(0xdeadbeef);
      w.endFile();
      w.beginFile({ root: 0, path: "base/5/16385", mode: 0o600, mtime: 7, size: 0 });
      w.incremental(0, []);
      w.fileChecksum(0);
      w.endFile();
    });
    expect(pieces[0]!.subarray(0, 8)).toEqual(new TextEncoder().encode("KLIOFL02"));
    const evs = await read(pieces);
    expect(evs.map((e) => e.kind)).toEqual(["file", "incremental", "chunk", "zeros", "file-checksum", "end-file", "file", "incremental", "file-checksum", "end-file"]);
    expect(evs[1]).toEqual({ kind: "incremental", truncationBlockLength: 300, blockNumbers: Uint32Array.from(blocks) });
    expect(evs[4]).toEqual({ kind: "file-checksum", crc32c: 0xdeadbeef });
    expect(evs[7]).toEqual({ kind: "incremental", truncationBlockLength: 0, blockNumbers: new Uint32Array(0) });
  });

  it("says where each record lies: piece, offset in it, offset in the list", async () => {
    const pieces = await write(async (w) => {
      w.dir({ root: 0, path: "base", mode: 0o700, mtime: 1 });
      for (let f = 0; f < 20; f++) {
        w.beginFile({ root: 0, path: `base/1/${1000 + f}`, mode: 0o600, mtime: 0, size: 8192 * 4 });
        w.incremental(4, f % 2 ? [1, 3] : []);
        w.chunk(8192, id(f));
        w.zeros(8192);
        w.chunk(8192 * 2, id(f + 1));
        if (f % 3 === 0) w.fileChecksum(f);
        w.endFile();
      }
    }, 50);
    const whole = Uint8Array.from(pieces.flatMap((p) => [...p]));
    const tags: Record<string, number> = { dir: 0x44, file: 0x46, incremental: 0x49, chunk: 0x43, zeros: 0x5a, "file-checksum": 0x4b, "end-file": 0x45 };
    const at = { version: 1 as 1 | 2, piece: -1, offset: -1, listOffset: -1 };
    async function* src() {
      for (const p of pieces) yield p;
    }
    let n = 0;
    for await (const ev of readFileList(src(), at)) {
      expect(at.version).toBe(2);
      expect(pieces[at.piece]![at.offset]).toBe(tags[ev.kind]);
      expect(whole[at.listOffset]).toBe(tags[ev.kind]);
      expect(pieces.slice(0, at.piece).reduce((s, p) => s + p.length, 0) + at.offset).toBe(at.listOffset);
      n++;
    }
    expect(n).toBe(1 + 20 * 6 + 7);
  });

  it("refuses incremental and checksum records out of place, and in a version 1 list", async () => {
    const cases: [number[][], RegExp][] = [
      [[F("f", 16384), C(8192, 1), I(2, [0]), C(8192, 2), E], /incremental record not right after its file's start/],
      [[F("f", 16384), I(2, [0]), I(2, [1]), C(16384, 2), E], /incremental record not right after/],
      [[I(2, [0])], /incremental record not right after its file's start$/],
      [[F("f", 16384), I(2, [1, 0]), C(16384, 2), E], /do not ascend/],
      [[F("f", 16384), I(2, [0, 2]), C(16384, 2), E], /not below the truncation length 2/],
      [[F("f", 16384), I(1, [0, 1]), C(16384, 2), E], /lists 2 blocks of a file of 1/],
      [[F("f", 16384), C(8192, 1), K(5), C(8192, 2), E], /checksum of f comes before its last chunk/],
      [[F("f", 8192), C(8192, 1), K(5), Z(8192), E], /chunks of f after its checksum/],
      [[F("f", 8192), C(8192, 1), K(5), K(6), E], /f has two checksums/],
      [[F("f", 0), K(5), E, K(5)], /checksum outside a file/],
    ];
    for (const [records, message] of cases) await expect(read([rawList(2, records, 1)])).rejects.toThrow(message);
    await expect(read([rawList(2, [F("f", 0), E, F("g", 8192), C(8192, 1), K(1), C(0, 1), E], 2)])).rejects.toThrow(/chunks of g after its checksum/);
    await expect(read([rawList(1, [F("f", 8192), I(1, [0]), C(8192, 1), E], 1)])).rejects.toThrow(/incremental record in a version 1 list/);
    await expect(read([rawList(1, [F("f", 8192), C(8192, 1), K(1), E], 1)])).rejects.toThrow(/checksum record in a version 1 list/);
    // The same records in their places read.
    expect((await read([rawList(2, [F("f", 16384), I(2, [1]), C(8192, 1), Z(8192), K(7), E], 1)])).length).toBe(6);
  });

  it("writes nothing a reader would refuse: misplaced records are refused by the writer", async () => {
    const refused: [(w: FileListWriter) => void, RegExp][] = [
      [(w) => w.incremental(1, []), /must follow beginFile/],
      [(w) => { w.beginFile({ root: 0, path: "f", mode: 0, mtime: 0, size: 8192 }); w.zeros(8192); w.incremental(1, []); }, /must follow beginFile/],
      [(w) => { w.beginFile({ root: 0, path: "f", mode: 0, mtime: 0, size: 8192 }); w.incremental(1, [1]); }, /not below the truncation length/],
      [(w) => { w.beginFile({ root: 0, path: "f", mode: 0, mtime: 0, size: 8192 }); w.incremental(2, [1, 1]); }, /do not ascend/],
      [(w) => { w.beginFile({ root: 0, path: "f", mode: 0, mtime: 0, size: 8192 }); w.fileChecksum(1); }, /before all its bytes/],
      [(w) => { w.beginFile({ root: 0, path: "f", mode: 0, mtime: 0, size: 0 }); w.fileChecksum(1); w.fileChecksum(1); }, /a second checksum/],
      [(w) => { w.beginFile({ root: 0, path: "f", mode: 0, mtime: 0, size: 0 }); w.fileChecksum(2 ** 32); }, /not a u32/],
    ];
    for (const [build, message] of refused) await expect(write(async (w) => build(w))).rejects.toThrow(message);
  });
});
