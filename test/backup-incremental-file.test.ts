// The INCREMENTAL file reader against hand-made files: a valid file gives the same events
// however its bytes are split; every kind of damage is one KlioError naming the file, and
// nothing is yielded from a header that does not check out.
import { describe, it, expect } from "vitest";
import { Buffer } from "node:buffer";
import { KlioError } from "../src/util/errors.ts";
import {
  encodeIncrementalHeader,
  incrementalRelationPath,
  readIncrementalFile,
  INCREMENTAL_MAGIC,
  RELSEG_SIZE,
  type IncrementalFileEvent,
} from "../src/backup/incremental-file.ts";

const BLCKSZ = 8192;
const NAME = "base/5/INCREMENTAL.16384";

interface Spec {
  blocks: number[];
  truncationBlockLength: number;
  /** Header fields as written, when they should differ from the honest ones. */
  magic?: number;
  blockCount?: number;
  bigEndian?: boolean;
}

/** A page whose bytes say which block it is. */
function page(blockNumber: number): Uint8Array {
  const p = new Uint8Array(BLCKSZ);
  for (let i = 0; i < BLCKSZ; i++) p[i] = (blockNumber * 31 + i * 7) & 0xff;
  return p;
}

/** An INCREMENTAL file as basebackup.c's sendFile() writes it. */
function incrementalFile(spec: Spec): Uint8Array {
  const n = spec.blocks.length;
  const unpadded = 12 + 4 * n;
  const header = n === 0 ? unpadded : Math.ceil(unpadded / BLCKSZ) * BLCKSZ;
  const out = new Uint8Array(header + n * BLCKSZ);
  const v = new DataView(out.buffer);
  const little = !spec.bigEndian;
  v.setUint32(0, spec.magic ?? INCREMENTAL_MAGIC, little);
  v.setUint32(4, spec.blockCount ?? n, little);
  v.setUint32(8, spec.truncationBlockLength, little);
  spec.blocks.forEach((b, i) => v.setUint32(12 + 4 * i, b, little));
  spec.blocks.forEach((b, i) => out.set(page(b), header + i * BLCKSZ));
  return out;
}

/** `bytes` cut at `cuts` (ascending offsets), as chunks of their own buffers. */
async function* splitAt(bytes: Uint8Array, cuts: number[]): AsyncGenerator<Uint8Array> {
  let at = 0;
  for (const c of [...cuts, bytes.length]) {
    if (c > at) yield bytes.slice(at, c);
    at = Math.max(at, c);
  }
}

async function* chunksOf(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.slice(at, at + size);
}

type Seen = { header: Extract<IncrementalFileEvent, { kind: "header" }>; blocks: { blockNumber: number; page: Uint8Array }[] };

async function readAll(content: AsyncIterable<Uint8Array>, name = NAME): Promise<Seen> {
  let header: Seen["header"] | undefined;
  const blocks: Seen["blocks"] = [];
  for await (const ev of readIncrementalFile(name, content)) {
    if (ev.kind === "header") header = ev;
    else blocks.push({ blockNumber: ev.blockNumber, page: ev.page.slice() }); // the page is only valid until the next event
  }
  return { header: header!, blocks };
}

/** The error reading `bytes` ends with, and how many events came before it. */
async function failure(bytes: Uint8Array, name = NAME): Promise<{ error: KlioError; events: number }> {
  let events = 0;
  try {
    for await (const _ of readIncrementalFile(name, chunksOf(bytes, 1000))) events++;
  } catch (e) {
    expect(e).toBeInstanceOf(KlioError);
    return { error: e as KlioError, events };
  }
  throw new Error("read without an error");
}

function expectValid(seen: Seen, spec: Spec): void {
  expect(seen.header.relationPath).toBe("base/5/16384");
  expect([...seen.header.blockNumbers]).toEqual(spec.blocks);
  expect(seen.header.truncationBlockLength).toBe(spec.truncationBlockLength);
  expect(seen.blocks.map((b) => b.blockNumber)).toEqual(spec.blocks);
  // Buffer.equals: a deep toEqual over 8 KB is slow enough to matter across hundreds of splits.
  for (const b of seen.blocks) expect(Buffer.from(b.page).equals(page(b.blockNumber)), `block ${b.blockNumber}`).toBe(true);
}

describe("readIncrementalFile", () => {
  // Four blocks: the header is 28 bytes, padded to 8 KB.
  const spec: Spec = { blocks: [0, 7, 8, 4000], truncationBlockLength: 4100 };
  const file = incrementalFile(spec);

  it("reads a file in one buffer", async () => {
    expect(file.length).toBe(5 * BLCKSZ);
    expectValid(await readAll(splitAt(file, [])), spec);
  });

  it("reads the same file split into 1-byte chunks", async () => {
    expectValid(await readAll(chunksOf(file, 1)), spec);
  });

  it("reads the same file split at every awkward place: in the header, the list, the padding, the pages", async () => {
    const places = [
      ...Array.from({ length: 40 }, (_, i) => i + 1), // the fixed header, the block numbers, the padding's start
      BLCKSZ - 1, BLCKSZ, BLCKSZ + 1, // padding → first page
      2 * BLCKSZ - 1, 2 * BLCKSZ + 1, // between pages
      BLCKSZ + 4096, 3 * BLCKSZ + 3, // inside pages
      5 * BLCKSZ - 1, // the last byte
    ];
    for (const cut of places) expectValid(await readAll(splitAt(file, [cut])), spec);
    for (const a of places) for (const b of places) if (a < b) expectValid(await readAll(splitAt(file, [a, b])), spec);
    // Random splittings, reproducibly.
    let seed = 14;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < 50; round++) {
      const cuts = Array.from({ length: 8 }, () => Math.floor(random() * file.length)).sort((x, y) => x - y);
      expectValid(await readAll(splitAt(file, cuts)), spec);
    }
  });

  it("reads a header that fills its block exactly (no padding) and one that needs a second block", async () => {
    // 12 + 4 × 2045 = 8192.
    const exact: Spec = { blocks: Array.from({ length: 2045 }, (_, i) => 2 * i), truncationBlockLength: 5000 };
    const exactFile = incrementalFile(exact);
    expect(exactFile.length).toBe(BLCKSZ + 2045 * BLCKSZ);
    expectValid(await readAll(chunksOf(exactFile, 3000)), exact);
    const over: Spec = { blocks: Array.from({ length: 2046 }, (_, i) => i), truncationBlockLength: 2046 };
    const overFile = incrementalFile(over);
    expect(overFile.length).toBe(2 * BLCKSZ + 2046 * BLCKSZ);
    expectValid(await readAll(chunksOf(overFile, 5000)), over);
  });

  it("reads a file without blocks: 12 bytes, no padding, the truncation length only", async () => {
    const none: Spec = { blocks: [], truncationBlockLength: 5 };
    const bytes = incrementalFile(none);
    expect(bytes.length).toBe(12);
    expectValid(await readAll(chunksOf(bytes, 1)), none);
  });

  it("reads a segment shrunk to nothing (truncation length 0)", async () => {
    expectValid(await readAll(splitAt(incrementalFile({ blocks: [], truncationBlockLength: 0 }), [5])), { blocks: [], truncationBlockLength: 0 });
  });

  it("reads the limits: a full segment's truncation length and its last block", async () => {
    const last: Spec = { blocks: [RELSEG_SIZE - 1], truncationBlockLength: RELSEG_SIZE };
    expectValid(await readAll(chunksOf(incrementalFile(last), 4096)), last);
  });

  it("reads a file from a big-endian server (the magic says the byte order)", async () => {
    const big: Spec = { ...spec, bigEndian: true };
    expectValid(await readAll(chunksOf(incrementalFile(big), 777)), big);
  });

  it("says the byte order, and encodeIncrementalHeader writes the header back as the server did", async () => {
    for (const s of [spec, { ...spec, bigEndian: true }, { blocks: [], truncationBlockLength: 3 }]) {
      const file = incrementalFile(s);
      const seen = await readAll(chunksOf(file, 4096));
      expect(seen.header.littleEndian).toBe(!s.bigEndian);
      const header = encodeIncrementalHeader(seen.header.blockNumbers, seen.header.truncationBlockLength, seen.header.littleEndian);
      expect(Buffer.from(header).equals(Buffer.from(file.subarray(0, header.length)))).toBe(true);
      expect(header.length + s.blocks.length * BLCKSZ).toBe(file.length);
    }
  });

  it("names the relation in tablespace archives, global/, forks and segments", async () => {
    const seen = await readAll(splitAt(incrementalFile({ blocks: [], truncationBlockLength: 1 }), []), "PG_18_202506291/16384/INCREMENTAL.16385_vm.2");
    expect(seen.header.relationPath).toBe("PG_18_202506291/16384/16385_vm.2");
  });

  it("refuses a bad magic number", async () => {
    const { error, events } = await failure(incrementalFile({ ...spec, magic: 0xd3ae1f0e }));
    expect(events).toBe(0);
    expect(error.code).toBe("damaged-incremental-file");
    expect(error.message).toBe(`incremental file "${NAME}" is damaged: bad magic number 0xd3ae1f0e (expected 0xd3ae1f0d)`);
  });

  it("refuses a block count above the segment size", async () => {
    const { error, events } = await failure(incrementalFile({ blocks: [], truncationBlockLength: 10, blockCount: RELSEG_SIZE + 1 }));
    expect(events).toBe(0);
    expect(error.message).toMatch(/: block count 131073 exceeds the segment size of 131072 blocks$/);
  });

  it("refuses a truncation block length above the segment size", async () => {
    const { error } = await failure(incrementalFile({ blocks: [1], truncationBlockLength: RELSEG_SIZE + 1 }));
    expect(error.message).toMatch(/: truncation block length 131073 exceeds the segment size of 131072 blocks$/);
  });

  it("refuses block numbers out of order or twice", async () => {
    expect((await failure(incrementalFile({ blocks: [3, 1], truncationBlockLength: 10 }))).error.message).toMatch(
      /: block number 1 follows 3 \(they must ascend, each once\)$/,
    );
    const twice = await failure(incrementalFile({ blocks: [0, 2, 2], truncationBlockLength: 10 }));
    expect(twice.events).toBe(0);
    expect(twice.error.message).toMatch(/: block number 2 follows 2 /);
  });

  it("refuses a block number at or beyond the truncation block length (and so the segment size)", async () => {
    expect((await failure(incrementalFile({ blocks: [1, 10], truncationBlockLength: 10 }))).error.message).toMatch(
      /: block number 10 lies beyond the truncation block length 10$/,
    );
    expect((await failure(incrementalFile({ blocks: [RELSEG_SIZE], truncationBlockLength: RELSEG_SIZE }))).error.message).toMatch(
      /: block number 131072 lies beyond the truncation block length 131072$/,
    );
  });

  it("refuses padding that is not zeros", async () => {
    const bytes = incrementalFile(spec);
    bytes[BLCKSZ - 1] = 1;
    const { error, events } = await failure(bytes);
    expect(events).toBe(0);
    expect(error.message).toBe(`incremental file "${NAME}" is damaged: the padding after the block numbers is not zeros`);
  });

  it("refuses a file cut short anywhere: header, block numbers, padding, a page, a whole page", async () => {
    const cases: [number, RegExp, number][] = [
      [0, /it ends inside the header, after 0 of 12 bytes$/, 0],
      [11, /it ends inside the header, after 11 of 12 bytes$/, 0],
      [20, /it ends inside the block numbers, after 20 of 40960 bytes$/, 0],
      [100, /it ends inside the padding, after 100 of 40960 bytes$/, 0],
      [BLCKSZ + 100, /it ends inside block 0, after 8292 of 40960 bytes$/, 1],
      [4 * BLCKSZ, /it ends inside block 4000, after 32768 of 40960 bytes$/, 4],
    ];
    for (const [length, message, events] of cases) {
      const got = await failure(file.subarray(0, length));
      expect(got.error.message, `cut at ${length}`).toMatch(message);
      expect(got.events, `cut at ${length}`).toBe(events);
    }
    expect((await failure(incrementalFile({ blocks: [], truncationBlockLength: 3 }).subarray(0, 8))).error.message).toMatch(
      /after 8 of 12 bytes$/,
    );
  });

  it("refuses bytes after the last block, and after a header without blocks", async () => {
    const longer = new Uint8Array(file.length + 1);
    longer.set(file);
    const { error, events } = await failure(longer);
    expect(events).toBe(5); // everything before was fine
    expect(error.message).toBe(`incremental file "${NAME}" is damaged: it has bytes after its last block (it should be 40960 bytes)`);
    const empty = new Uint8Array(12 + 4);
    empty.set(incrementalFile({ blocks: [], truncationBlockLength: 2 }));
    expect((await failure(empty)).error.message).toMatch(/it has bytes after its last block \(it should be 12 bytes\)$/);
  });

  it("refuses to read a file whose name is not an INCREMENTAL name", async () => {
    await expect(readAll(splitAt(file, []), "base/5/16384")).rejects.toMatchObject({ code: "usage" });
  });
});

describe("incrementalRelationPath", () => {
  it("maps INCREMENTAL names of relation files to the relation file", () => {
    expect(incrementalRelationPath("base/5/INCREMENTAL.16384")).toBe("base/5/16384");
    expect(incrementalRelationPath("base/5/INCREMENTAL.16384.12")).toBe("base/5/16384.12");
    expect(incrementalRelationPath("base/5/INCREMENTAL.16384_vm")).toBe("base/5/16384_vm");
    expect(incrementalRelationPath("base/5/INCREMENTAL.16384_init")).toBe("base/5/16384_init");
    expect(incrementalRelationPath("global/INCREMENTAL.1262")).toBe("global/1262");
    // A tablespace's own archive, and the data directory's (manifest's) view of it.
    expect(incrementalRelationPath("PG_18_202506291/16384/INCREMENTAL.16385")).toBe("PG_18_202506291/16384/16385");
    expect(incrementalRelationPath("pg_tblspc/16390/PG_18_202506291/16384/INCREMENTAL.16385.1")).toBe("pg_tblspc/16390/PG_18_202506291/16384/16385.1");
  });

  it("says null for everything else: whole files, temporary relations, other directories, other names", () => {
    for (const p of [
      "base/5/16384",
      "base/5/INCREMENTAL.t3_16384", // temporary relations are never in a backup
      "INCREMENTAL.config",
      "base/INCREMENTAL.5",
      "pg_wal/INCREMENTAL.000000010000000000000001",
      "base/5/INCREMENTAL.",
      "base/5/INCREMENTAL.16384_main",
      "base/5/XINCREMENTAL.16384",
      "base/5/INCREMENTAL.INCREMENTAL.16384",
    ]) {
      expect(incrementalRelationPath(p), p).toBeNull();
    }
  });
});
