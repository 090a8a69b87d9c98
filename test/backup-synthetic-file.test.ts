// The synthetic full: a relation file sent as INCREMENTAL.<file> is recorded as the whole
// file, naming the parent's chunks for the pages not sent. Given a parent backup stored in a
// real repository (as backup-run stores files), when the child's list is built through the
// builder, then the child restores alone, with the existing restore, to exactly the bytes
// pg_combinebackup would rebuild — and nothing of the parent was read or stored again.
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { chunkIdHex } from "../src/repo/chunk-id.ts";
import { createChunker } from "../src/repo/chunker.ts";
import { readFileList, type FileListEvent } from "../src/repo/file-list.ts";
import { initRepository, openRepository, type Repository } from "../src/repo/repository.ts";
import { chunkingFor, PAGE_CHUNK as P } from "../src/backup/file-kind.ts";
import { FileListRecorder } from "../src/backup/file-list-recorder.ts";
import { ParentFileList } from "../src/backup/parent-file-list.ts";
import { recordSyntheticFile, type IncrementalHeader, type SyntheticFileStats } from "../src/backup/synthetic-file.ts";
import { chunkIds, readChunks, type Snapshot } from "../src/backup/snapshot.ts";
import { materialize } from "../src/restore/materialize.ts";
import { KlioError } from "../src/util/errors.ts";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), "klio-synthetic-"));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

async function newRepo(): Promise<Repository> {
  const dir = tempDir();
  await initRepository(dir, { packTargetBytes: 64 * 1024 });
  const repo = await openRepository(dir, { workers: 0 });
  cleanups.push(() => repo.close());
  return repo;
}

/** A page of a relation file: its bytes say which file, block and version it is. */
function page(tag: string): Uint8Array {
  const b = new Uint8Array(P);
  for (let at = 0; at < P; at += 32) b.set(createHash("sha256").update(`${tag} ${at}`).digest(), at);
  return b;
}
const zeroPage = () => new Uint8Array(P);

function concat(pages: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(pages.length * P);
  pages.forEach((p, i) => out.set(p, i * P));
  return out;
}

/** The parent backup: files stored as backup-run stores them (chunker, recorder); its list's pieces. */
async function storeParent(repo: Repository, files: { path: string; bytes: Uint8Array; crc32c?: number }[]): Promise<string[]> {
  const writer = repo.writer();
  const list = new FileListRecorder(writer, 256); // small pieces: records straddle them
  for (const f of files) {
    list.record((l) => l.beginFile({ root: 0, path: f.path, mode: 0o600, mtime: 1_700_000_000, size: f.bytes.length }));
    const chunker = createChunker(chunkingFor(f.path, f.bytes.length));
    // Pushed in odd slices, as a tar stream cuts them.
    for (let at = 0; at < f.bytes.length; at += 5000) for (const c of chunker.push(f.bytes.subarray(at, at + 5000))) list.store(c);
    for (const c of chunker.end()) list.store(c);
    list.record((l) => {
      if (f.crc32c !== undefined) l.fileChecksum(f.crc32c);
      l.endFile();
    });
  }
  await list.finish();
  await writer.flush();
  return list.pieces;
}

interface ChildFile {
  path: string;
  header: IncrementalHeader;
  pages: Uint8Array[];
}

/** The child backup through the builder; every chunk read from the repository is noted. */
async function storeChild(repo: Repository, parentPieces: string[], files: ChildFile[]) {
  const read: string[] = [];
  const parent = new ParentFileList(chunkIds(parentPieces), (id) => {
    read.push(chunkIdHex(id));
    return repo.readChunk(id);
  });
  const writer = repo.writer();
  const list = new FileListRecorder(writer, 256);
  const stats: SyntheticFileStats[] = [];
  for (const f of files) {
    stats.push(await recordSyntheticFile(list, {
      head: { root: 0, path: f.path, mode: 0o600, mtime: 1_700_000_500 }, header: f.header, pages: (async function* () {
        yield* f.pages;
      })(), parent: await parent.layoutOf(0, f.path), parentId: "20260101T000000Z",
    }));
  }
  const entries = await list.finish();
  await writer.flush();
  return { pieces: list.pieces, entries, stats, read, written: writer.stats };
}

async function events(repo: Repository, pieces: string[]): Promise<FileListEvent[]> {
  const out: FileListEvent[] = [];
  for await (const ev of readFileList(readChunks(repo, pieces))) out.push(ev);
  return out;
}

async function restore(repo: Repository, pieces: string[], entries: number): Promise<string> {
  const dest = path.join(tempDir(), "data");
  mkdirSync(dest);
  const snapshot = { id: "20260102T000000Z", fileList: { pieces, entries } } as Snapshot;
  await materialize({ repo, snapshot, dest, tablespaceDirs: new Map(), concurrency: 4, signal: new AbortController().signal });
  return dest;
}

/** What pg_combinebackup rebuilds: the parent's pages, cut or zero-extended to `length`, with the sent pages in place. */
function combined(parent: Uint8Array, header: IncrementalHeader, pages: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(header.truncationBlockLength * P);
  out.set(parent.subarray(0, Math.min(parent.length, out.length)));
  Array.from(header.blockNumbers).forEach((b, i) => out.set(pages[i]!, b * P));
  return out;
}

const parentFile = (tag: string, blocks: number, zeroAt: number[] = []) =>
  concat(Array.from({ length: blocks }, (_, b) => (zeroAt.includes(b) ? zeroPage() : page(`${tag} v1 ${b}`))));

describe("synthetic full", () => {
  it("restores every kind of file alone, byte for byte as pg_combinebackup rebuilds it, without reading or storing the parent's pages", async () => {
    const repo = await newRepo();
    const parents = {
      truncated: parentFile("t", 10),
      extended: parentFile("x", 4, [2]),
      zeros: parentFile("z", 6, [1, 2, 4]),
      same: parentFile("s", 5),
      grown: parentFile("g", 3),
      other: parentFile("o", 2),
    };
    const parentPieces = await storeParent(repo, [
      { path: "base/5/100", bytes: parents.truncated },
      { path: "base/5/101", bytes: parents.extended },
      { path: "postgresql.conf", bytes: new TextEncoder().encode("shared_buffers = 1GB\n") },
      { path: "base/5/102", bytes: parents.zeros },
      { path: "base/5/103", bytes: parents.same, crc32c: 0xcafef00d },
      { path: "base/5/104", bytes: parents.grown, crc32c: 0x11111111 },
      { path: "base/5/105", bytes: parents.other },
    ]);
    const files: ChildFile[] = [
      // Cut from 10 pages to 6; pages 2 and 5 changed.
      { path: "base/5/100", header: { truncationBlockLength: 6, blockNumbers: [2, 5] }, pages: [page("t v2 2"), page("t v2 5")] },
      // Grown from 4 pages to 9: 6 sent, 4, 5, 7, 8 never written (zeros); the parent's zero page 2 kept.
      { path: "base/5/101", header: { truncationBlockLength: 9, blockNumbers: [1, 6] }, pages: [page("x v2 1"), page("x v2 6")] },
      // A sent page that is all zeros, beside the parent's zero pages.
      { path: "base/5/102", header: { truncationBlockLength: 6, blockNumbers: [0, 3] }, pages: [page("z v2 0"), zeroPage()] },
      // Nothing sent, same length: the parent's bytes, and its checksum, carry over.
      { path: "base/5/103", header: { truncationBlockLength: 5, blockNumbers: [] }, pages: [] },
      // Nothing sent, longer: the checksum is not known.
      { path: "base/5/104", header: { truncationBlockLength: 4, blockNumbers: [] }, pages: [] },
      // Every page sent.
      { path: "base/5/105", header: { truncationBlockLength: 2, blockNumbers: [0, 1] }, pages: [page("o v2 0"), page("o v2 1")] },
    ];
    const child = await storeChild(repo, parentPieces, files);

    // Only the parent's list was read; only the sent pages that are not zeros (and the list) were stored.
    expect(new Set(child.read)).toEqual(new Set(parentPieces));
    expect(child.written.chunks).toBe(2 + 2 + 1 + 2 + child.pieces.length);
    expect(child.stats.map((s) => [s.size / P, s.sent, s.fromParent, s.zeroFilled])).toEqual([
      [6, 2, 4, 0], [9, 2, 3, 4], [6, 2, 4, 0], [5, 0, 5, 0], [4, 0, 3, 1], [2, 2, 0, 0],
    ]);

    const dest = await restore(repo, child.pieces, child.entries);
    const want = [parents.truncated, parents.extended, parents.zeros, parents.same, parents.grown, parents.other];
    files.forEach((f, i) => {
      const got = readFileSync(path.join(dest, f.path));
      expect(got.length, f.path).toBe(f.header.truncationBlockLength * P);
      expect(Buffer.compare(got, combined(want[i]!, f.header, f.pages)), f.path).toBe(0);
    });

    const evs = await events(repo, child.pieces);
    const of = (p: string) => {
      const at = evs.findIndex((e) => e.kind === "file" && e.path === p);
      return evs.slice(at, evs.findIndex((e, i) => i > at && e.kind === "end-file") + 1);
    };
    const shape = (p: string) => of(p).map((e) => (e.kind === "chunk" ? "C" : e.kind === "zeros" ? `Z${e.length / P}` : e.kind[0]!.toUpperCase()));
    // F, I, then pages: consecutive zeros in one run, whatever they come from.
    expect(shape("base/5/101")).toEqual(["F", "I", "C", "C", "Z1", "C", "Z2", "C", "Z2", "E"]);
    expect(shape("base/5/102")).toEqual(["F", "I", "C", "Z4", "C", "E"]); // blocks 1, 2, 4 the parent's zeros, 3 sent as zeros
    expect(of("base/5/100")[1]).toEqual({ kind: "incremental", truncationBlockLength: 6, blockNumbers: Uint32Array.from([2, 5]) });
    expect(of("base/5/103").at(-2)).toEqual({ kind: "file-checksum", crc32c: 0xcafef00d });
    expect(of("base/5/104").some((e) => e.kind === "file-checksum")).toBe(false);
    // The parent's chunks are named as they are: the child's unchanged pages are the parent's.
    const parentIds = new Set((await events(repo, parentPieces)).flatMap((e) => (e.kind === "chunk" ? [chunkIdHex(e.id)] : [])));
    const ids100 = of("base/5/100").flatMap((e) => (e.kind === "chunk" ? [chunkIdHex(e.id)] : []));
    expect(ids100.map((id) => parentIds.has(id))).toEqual([true, true, false, true, true, false]);
  });

  it("refuses a bad header, a missing or unaligned parent file, before recording anything", async () => {
    const repo = await newRepo();
    const parentPieces = await storeParent(repo, [
      { path: "base/5/1", bytes: parentFile("a", 4) },
      { path: "base/5/2", bytes: new Uint8Array(P + 100).fill(1) },
    ]);
    const parent = new ParentFileList(chunkIds(parentPieces), (id) => repo.readChunk(id));
    const writer = repo.writer();
    const list = new FileListRecorder(writer);
    const attempt = async (p: string, header: IncrementalHeader, pages: Uint8Array[] = []) =>
      recordSyntheticFile(list, {
        head: { root: 0, path: p, mode: 0o600, mtime: 0 }, header, pages: (async function* () {
          yield* pages;
        })(), parent: await parent.layoutOf(0, p), parentId: "20260101T000000Z",
      }).then(() => null, (e: unknown) => e);
    const refusals: [Promise<unknown>, string, RegExp][] = [
      [attempt("base/5/1", { truncationBlockLength: 4, blockNumbers: [2, 1] }), "damaged-incremental", /base\/5\/INCREMENTAL\.1: its block numbers do not ascend \(1 after 2\)/],
      [attempt("base/5/1", { truncationBlockLength: 4, blockNumbers: [1, 1] }), "damaged-incremental", /do not ascend/],
      [attempt("base/5/1", { truncationBlockLength: 4, blockNumbers: [4] }), "damaged-incremental", /reach 4, not below the truncation length 4/],
      [attempt("base/5/1", { truncationBlockLength: -1, blockNumbers: [] }), "damaged-incremental", /truncation block length -1 is not a block count/],
      [attempt("base/5/1", { truncationBlockLength: 2.5, blockNumbers: [] }), "damaged-incremental", /not a block count/],
      [attempt("base/5/9", { truncationBlockLength: 1, blockNumbers: [] }), "incremental-parent", /the parent backup 20260101T000000Z has no base\/5\/9/],
      [attempt("base/5/2", { truncationBlockLength: 1, blockNumbers: [] }), "incremental-parent", /does not hold it one page per chunk \(its size 8292/],
    ];
    for (const [p, code, message] of refusals) {
      const e = await p;
      expect(e).toBeInstanceOf(KlioError);
      expect((e as KlioError).code).toBe(code);
      expect((e as KlioError).message).toMatch(message);
    }
    // Nothing was recorded: the list takes a whole file and ends.
    await recordSyntheticFile(list, {
      head: { root: 0, path: "base/5/1", mode: 0o600, mtime: 0 }, header: { truncationBlockLength: 1, blockNumbers: [] },
      pages: (async function* () {})(), parent: await parent.layoutOf(0, "base/5/1"), parentId: "p",
    });
    expect(await list.finish()).toBe(1);
    await writer.flush();
  });

  it("refuses pages of the wrong size or number, and closes the page stream", async () => {
    const repo = await newRepo();
    const parentPieces = await storeParent(repo, [{ path: "base/5/1", bytes: parentFile("a", 4) }]);
    const parent = new ParentFileList(chunkIds(parentPieces), (id) => repo.readChunk(id));
    const cases: [number[], Uint8Array[], RegExp][] = [
      [[1], [new Uint8Array(100)], /the page of block 1 has 100 bytes, not 8192/],
      [[1, 2], [page("p")], /base\/5\/INCREMENTAL\.1 ends after 1 of the 2 pages its header lists/],
      [[1], [page("p"), page("q")], /holds more pages than the 1 its header lists/],
    ];
    for (const [blockNumbers, pages, message] of cases) {
      const writer = repo.writer();
      let closed = false;
      const stream = (async function* () {
        try {
          yield* pages;
        } finally {
          closed = true;
        }
      })();
      const e = await recordSyntheticFile(new FileListRecorder(writer), {
        head: { root: 0, path: "base/5/1", mode: 0o600, mtime: 0 }, header: { truncationBlockLength: 4, blockNumbers },
        pages: stream, parent: await parent.layoutOf(0, "base/5/1"), parentId: "p",
      }).then(() => null, (x: unknown) => x);
      expect((e as KlioError).code).toBe("damaged-incremental");
      expect((e as KlioError).message).toMatch(message);
      expect(closed).toBe(true);
      await writer.abandon();
    }
  });
});
