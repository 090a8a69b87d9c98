// Consolidation of index files: a writer sealing many packs leaves few index files, every
// chunk stays findable, a crash between writing a merged file and removing its inputs
// leaves a repository that opens with each chunk counted once (and the next writer tidies
// up), and a reader whose index files were consolidated under it keeps reading.
import { describe, it, expect, afterEach } from "vitest";
import { createHash } from "node:crypto";
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { initRepository, openRepository, type Repository } from "../src/repo/repository.ts";
import { ChunkIndex } from "../src/repo/chunk-index.ts";
import { FsStorage } from "../src/repo/fs-storage.ts";
import { chooseMerge } from "../src/repo/index-merge.ts";
import type { IndexRun } from "../src/repo/index-run.ts";

const dirs: string[] = [];
const repos: Repository[] = [];
afterEach(async () => {
  for (const r of repos.splice(0)) await r.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function newRepo(): Promise<string> {
  const d = mkdtempSync(path.join(os.tmpdir(), "klio-merge-"));
  dirs.push(d);
  await initRepository(d, { packTargetBytes: 64 * 1024, compression: "none" });
  return d;
}
async function open(dir: string): Promise<Repository> {
  const r = await openRepository(dir);
  repos.push(r);
  return r;
}
/** Incompressible 4 KB chunks: 15 to a 64 KB pack. */
function chunk(i: number): Uint8Array {
  const b = new Uint8Array(4096);
  for (let k = 0; k < 64; k++) b.set(createHash("sha512").update(`${i}/${k}`).digest(), k * 64);
  return b;
}
const indexFiles = (dir: string) => readdirSync(path.join(dir, "index")).filter((n) => n.endsWith(".idx")).sort();

async function loadedIndex(dir: string): Promise<ChunkIndex> {
  const idx = new ChunkIndex(new FsStorage(dir), null);
  await idx.refresh();
  return idx;
}

describe("consolidation", () => {
  it("keeps the number of index files small and every chunk findable", async () => {
    const dir = await newRepo();
    const repo = await open(dir);
    const w = repo.writer();
    const ids = [];
    for (let i = 0; i < 1500; i++) ids.push((await w.put(chunk(i))).id);
    await w.flush();
    const packs = readdirSync(path.join(dir, "packs"), { recursive: true }).filter((n) => String(n).endsWith(".pack")).length;
    expect(packs).toBeGreaterThan(90);
    // Size-tiered: at most MERGE_FAN-1 files per size class.
    expect(indexFiles(dir).length).toBeLessThan(12);
    const idx = await loadedIndex(dir);
    expect(idx.chunkCount).toBe(1500);
    for (let i = 0; i < 1500; i += 50) expect(Buffer.from(await repo.readChunk(ids[i]!)).equals(chunk(i))).toBe(true);
    const fresh = await open(dir);
    for (const id of ids) expect(fresh.has(id)).toBe(true);
    expect(await fresh.check({ readData: true })).toEqual([]);
  });

  it("a crash after the merged file is written and before its inputs are removed", async () => {
    const dir = await newRepo();
    const repo = await open(dir);
    const w = repo.writer();
    // Three packs of 15 chunks: three index files of one size class, not yet merged.
    for (let i = 0; i < 45; i++) await w.put(chunk(i));
    await w.flush();
    const inputs = indexFiles(dir);
    expect(inputs.length).toBe(3);
    const saved = mkdtempSync(path.join(os.tmpdir(), "klio-merge-saved-"));
    dirs.push(saved);
    for (const f of inputs) copyFileSync(path.join(dir, "index", f), path.join(saved, f));
    // The fourth fills the class: merged into one file, the inputs removed.
    for (let i = 45; i < 60; i++) await w.put(chunk(i));
    await w.flush();
    expect(indexFiles(dir).length).toBe(1);
    // Put the inputs back, as a crash before their removal would have left them.
    for (const f of inputs) copyFileSync(path.join(saved, f), path.join(dir, "index", f));
    expect(indexFiles(dir).length).toBe(4);

    const idx = await loadedIndex(dir);
    expect(idx.loadedRuns.length).toBe(1); // the superseded inputs are skipped
    expect(idx.chunkCount).toBe(60);
    const after = await open(dir);
    expect(await after.check({ readData: true })).toEqual([]);
    // The next writer that seals a pack removes the leftovers.
    const w2 = after.writer();
    await w2.put(chunk(1000));
    await w2.flush();
    expect(indexFiles(dir).length).toBe(2);
    expect((await loadedIndex(dir)).chunkCount).toBe(61);
  });

  it("a reader whose index files are consolidated by another process keeps reading, and refreshes", async () => {
    const dir = await newRepo();
    const writerSide = await open(dir);
    const w = writerSide.writer();
    const ids = [];
    for (let i = 0; i < 45; i++) ids.push((await w.put(chunk(i))).id);
    await w.flush();

    const reader = new ChunkIndex(new FsStorage(dir), null);
    await reader.refresh();
    expect(reader.loadedRuns.length).toBe(3);
    const readerRepo = await open(dir); // has read the three files too

    for (let i = 45; i < 60; i++) ids.push((await w.put(chunk(i))).id);
    await w.flush(); // consolidates: the three files the reader loaded are gone
    expect(indexFiles(dir).length).toBe(1);

    for (let i = 0; i < 60; i += 7) expect(Buffer.from(await readerRepo.readChunk(ids[i]!)).equals(chunk(i))).toBe(true);
    await reader.refresh();
    expect(reader.loadedRuns.length).toBe(1);
    expect(reader.chunkCount).toBe(60);
    for (const id of ids) expect(reader.has(id)).toBe(true);
  });
});

describe("chooseMerge", () => {
  const run = (n: number) => ({ count: n }) as IndexRun;
  it("merges a full size class with everything smaller, and nothing else", () => {
    expect(chooseMerge([run(1000), run(1000), run(1000)])).toBeNull();
    const big = run(5_000_000);
    const picked = chooseMerge([big, run(600), run(700), run(800), run(900), run(5)]); // 512 ≤ n < 1024: one class
    expect(picked).not.toBeNull();
    expect(picked).not.toContain(big);
    expect(picked!.length).toBe(5);
  });
});
