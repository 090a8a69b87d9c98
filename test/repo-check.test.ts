// check(): the structure (index files, packs, entries inside packs, packs no index names)
// and, with readData, every chunk read back and hashed. Damage is reported as problems
// naming the pack and chunk, never thrown; readChunk refuses the same damage.
import { describe, it, expect, afterEach } from "vitest";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, truncateSync, statSync, unlinkSync, mkdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chunkIdHex } from "../src/repo/chunk-id.ts";
import { initRepository, openRepository, type Repository } from "../src/repo/repository.ts";

const dirs: string[] = [];
const repos: Repository[] = [];
afterEach(async () => {
  for (const r of repos.splice(0)) await r.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function chunk(i: number): Uint8Array {
  const b = new Uint8Array(8192);
  for (let k = 0; k < 32; k++) b.set(createHash("sha512").update(`${i}/${k}`).digest(), k * 64);
  b.set(new TextEncoder().encode(`chunk ${i} `.repeat(500)).subarray(0, 4096), 4096);
  return b;
}
function walk(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
}

/** A repository of 120 chunks in several packs; returns it with the chunks' ids. */
async function filled(passphrase?: string): Promise<{ dir: string; ids: Uint8Array[] }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "klio-check-"));
  dirs.push(dir);
  await initRepository(dir, { packTargetBytes: 128 * 1024, passphrase, scrypt: { N: 1024, r: 8, p: 1 } });
  const repo = await openRepository(dir, { passphrase });
  const w = repo.writer();
  const ids = [];
  for (let i = 0; i < 120; i++) ids.push((await w.put(chunk(i))).id);
  await w.flush();
  await repo.close();
  return { dir, ids };
}
async function open(dir: string, passphrase?: string): Promise<Repository> {
  const r = await openRepository(dir, { passphrase });
  repos.push(r);
  return r;
}
const packs = (dir: string) => walk(path.join(dir, "packs")).sort((a, b) => statSync(b).size - statSync(a).size);

for (const passphrase of [undefined, "secret"]) {
  describe(passphrase ? "an encrypted repository" : "a plain repository", () => {
    it("a flipped byte in a pack: found by check with readData and by readChunk, not by the structure check", async () => {
      const { dir, ids } = await filled(passphrase);
      const pack = packs(dir)[0]!;
      const bytes = readFileSync(pack);
      // Inside the first chunk's noise (a flip in DEFLATE's back-references to periodic
      // text can decode to the same bytes: no damage to find).
      bytes[16 + 100] ^= 0x01;
      writeFileSync(pack, bytes);

      const repo = await open(dir, passphrase);
      expect(await repo.check({ readData: false })).toEqual([]);
      const progress: number[] = [];
      const problems = await repo.check({ readData: true, onProgress: (done, total) => progress.push(done / total) });
      expect(progress.at(-1)).toBe(1);
      // Chunks are stored in frames of several: every chunk of the damaged frame is named.
      expect(problems.length).toBeGreaterThanOrEqual(1);
      expect(problems.length).toBeLessThan(ids.length);
      for (const p of problems) expect(p).toMatchObject({ kind: "corrupt-chunk", pack: path.relative(dir, pack) });
      const bad = new Set(problems.map((p) => p.chunkId));
      expect(ids.filter((id) => bad.has(chunkIdHex(id))).length).toBe(problems.length);
      for (const id of ids) {
        if (bad.has(chunkIdHex(id))) await expect(repo.readChunk(id)).rejects.toMatchObject({ code: "corrupt-chunk" });
        else await repo.readChunk(id); // every other chunk still reads
      }
    });
  });
}

describe("structure", () => {
  it("a missing pack, a truncated pack, a pack no index names, a damaged index, stray files", async () => {
    const { dir, ids } = await filled();
    const [first, second] = packs(dir);
    unlinkSync(first!);
    truncateSync(second!, statSync(second!).size - 100);
    mkdirSync(path.join(dir, "packs", "ee"), { recursive: true });
    writeFileSync(path.join(dir, "packs", "ee", `ee${"0".repeat(30)}.pack`), Buffer.concat([Buffer.from("KLIOPACK"), Buffer.from([0, 0, 0, 1, 0, 0, 0, 0])]));
    writeFileSync(path.join(dir, "packs", "ee", "junk"), "x");
    writeFileSync(path.join(dir, "packs", "ee", `ee${"1".repeat(30)}.pack.123-ab.klio-tmp`), "a put in progress: ignored");

    const repo = await open(dir);
    const problems = await repo.check({ readData: true });
    const kinds = new Set(problems.map((p) => p.kind));
    expect(kinds).toEqual(new Set(["missing-pack", "entry-outside-pack", "unindexed-pack", "stray-file"]));
    // One problem per missing or truncated pack, carrying its chunks: not one per chunk.
    const missingPack = problems.filter((p) => p.kind === "missing-pack");
    expect(missingPack).toHaveLength(1);
    expect(missingPack[0]!.pack).toBe(path.relative(dir, first!));
    expect(missingPack[0]!.message).toMatch(new RegExp(`names pack ${path.relative(dir, first!)}, which does not exist: ${missingPack[0]!.chunkIds!.length} chunks lost$`));
    expect(problems.filter((p) => p.kind === "entry-outside-pack")).toEqual([expect.objectContaining({ pack: path.relative(dir, second!), message: expect.stringMatching(/truncated, or the index is wrong.*chunks? unreadable$/) })]);
    expect(problems.find((p) => p.kind === "unindexed-pack")!.pack).toBe(`packs/ee/ee${"0".repeat(30)}.pack`);
    const missing = missingPack[0]!.chunkIds!;
    expect(missing.length).toBeGreaterThan(1);
    await expect(repo.readChunk(ids.find((id) => chunkIdHex(id) === missing[0])!)).rejects.toMatchObject({ code: "missing-chunk" });

    // A damaged index file: reported; the repository still opens, its chunks unknown.
    const idx = walk(path.join(dir, "index"))[0]!;
    const b = readFileSync(idx);
    b[b.length - 5] ^= 0xff;
    writeFileSync(idx, b);
    const again = await open(dir);
    expect((await again.check({ readData: false })).map((p) => p.kind)).toContain("bad-index");
  });

  it("a truncated index file: the cause of its packs' absence from the index, not a writer's leftover", async () => {
    const { dir, ids } = await filled();
    const idx = walk(path.join(dir, "index"))[0]!;
    truncateSync(idx, Math.floor(statSync(idx).size / 2));
    const repo = await open(dir);
    const problems = await repo.check({ readData: false });
    const key = path.relative(dir, idx);
    expect(problems.filter((p) => p.kind === "bad-index")).toEqual([expect.objectContaining({ message: expect.stringMatching(new RegExp(`index file ${key} is damaged: .* \\(truncated\\)`)) })]);
    const orphans = problems.filter((p) => p.kind !== "bad-index");
    expect(orphans.length).toBeGreaterThanOrEqual(1);
    for (const p of orphans) expect(p).toMatchObject({ kind: "pack-of-damaged-index", message: expect.stringContaining(`named only by the damaged index file ${key}`) });
    // A chunk it named: the damaged file is said to be the likely cause.
    const lost = ids.find((id) => !repo.has(id));
    expect(lost).toBeDefined();
    await expect(repo.readChunk(lost!)).rejects.toMatchObject({ code: "missing-chunk", message: expect.stringMatching(new RegExp(`is not in the repository .*; a damaged index file may be what names it: index file ${key} is damaged`)) });
  });

  it("a pack with a bad header", async () => {
    const { dir } = await filled();
    const pack = packs(dir)[0]!;
    const b = readFileSync(pack);
    b[0] = 0;
    writeFileSync(pack, b);
    const problems = await (await open(dir)).check({ readData: false });
    expect(problems).toEqual([expect.objectContaining({ kind: "bad-pack", pack: path.relative(dir, pack) })]);
  });
});
