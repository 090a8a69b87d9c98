// The writer's and the reader's ordered pipelines, with worker threads and without: ids and
// bytes reach the callbacks in the order asked, interleaved with after() callbacks, whatever
// order the workers finish in; duplicates inside a batch are stored once; damage and a
// missing chunk are reported, never handed on.
import { describe, it, expect, afterEach } from "vitest";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chunkIdHex, type ChunkId } from "../src/repo/chunk-id.ts";
import { initRepository, openRepository, type Repository } from "../src/repo/repository.ts";
import { damageFile } from "./harness/damage.ts";

const dirs: string[] = [];
const repos: Repository[] = [];
afterEach(async () => {
  for (const r of repos.splice(0)) await r.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function fresh(workers: number, passphrase?: string): Promise<{ dir: string; repo: Repository }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "klio-pipeline-"));
  dirs.push(dir);
  await initRepository(dir, { passphrase, scrypt: { N: 1024, r: 8, p: 1 } });
  const repo = await openRepository(dir, { passphrase, workers });
  repos.push(repo);
  return { dir, repo };
}

/** Deterministic, page-like, different for each i (sizes vary to cross batch and frame limits). */
function page(i: number, size = 8192): Uint8Array {
  const b = new Uint8Array(size);
  const half = Math.floor(size / 2);
  b.set(new TextEncoder().encode(`tuple ${i} `.repeat(Math.ceil(size / 8))).subarray(0, half));
  for (let at = half; at < half + size / 4; at += 32) b.set(createHash("sha256").update(`p${i}-${at}`).digest().subarray(0, size - at), at);
  b[size - 1] = i & 0xff;
  return b;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

for (const workers of [0, 2]) {
  describe(`with ${workers} worker threads`, () => {
    it("the writer hands out ids in order, between after() callbacks, and stores duplicates once", async () => {
      const { repo } = await fresh(workers);
      const w = repo.writer();
      const events: string[] = [];
      const expected: string[] = [];
      const sizes = [8192, 100, 300_000, 8192, 65_536, 1];
      for (let i = 0; i < 400; i++) {
        const data = page(i % 150, sizes[i % sizes.length]!); // every chunk comes back 2-3 times
        w.add(data, (id, length) => events.push(`${chunkIdHex(id)}:${length}`));
        expected.push(`${sha(data)}:${data.length}`);
        if (i % 7 === 0) {
          w.after(() => events.push(`op ${i}`));
          expected.push(`op ${i}`);
        }
        data.fill(0); // the writer copied it
        if (i % 50 === 0) await w.ready();
      }
      await w.flush();
      expect(events).toEqual(expected);
      expect(w.stats.chunks).toBe(400);
      const distinct = new Set(expected.filter((e) => !e.startsWith("op")));
      expect(w.stats.newChunks).toBe(distinct.size);
      expect(await repo.check({ readData: true })).toEqual([]);
    });

    it("the reader hands out bytes in the order asked (forwards, backwards, repeated), between after() callbacks", async () => {
      const { repo } = await fresh(workers);
      const w = repo.writer();
      const data = Array.from({ length: 120 }, (_, i) => page(i, i % 10 === 9 ? 40_000 : 8192));
      const ids: ChunkId[] = [];
      for (const d of data) w.add(d, (id) => ids.push(id.slice()));
      await w.flush();

      const r = repo.reader({ inFlight: 3 });
      const got: string[] = [];
      const want: string[] = [];
      // Forwards, then a few backwards and repeated: every order must come out as asked.
      const order = [...data.keys(), 5, 4, 3, 3, 119, 0];
      for (const [n, i] of order.entries()) {
        await r.read(ids[i]!, data[i]!.length, (bytes) => got.push(sha(bytes)));
        want.push(sha(data[i]!));
        if (n % 9 === 0) {
          r.after(() => got.push(`op ${n}`));
          want.push(`op ${n}`);
        }
        await r.ready();
      }
      await r.drain();
      await r.close();
      expect(got).toEqual(want);
    });

    it("the reader reports a damaged frame and a missing chunk, and hands on nothing damaged", async () => {
      const { dir, repo } = await fresh(workers, "secret words");
      const w = repo.writer();
      const data = Array.from({ length: 64 }, (_, i) => page(i));
      const ids: ChunkId[] = [];
      for (const d of data) w.add(d, (id) => ids.push(id.slice()));
      await w.flush();
      const pack = readdirSync(path.join(dir, "packs"), { recursive: true, withFileTypes: true }).find((e) => e.isFile())!;
      damageFile(path.join(pack.parentPath, pack.name));

      const r = repo.reader();
      const handed: string[] = [];
      const reading = (async () => {
        for (let i = 0; i < data.length; i++) {
          await r.read(ids[i]!, 8192, (bytes) => handed.push(sha(bytes)));
          await r.ready();
        }
        await r.drain();
      })();
      await expect(reading).rejects.toMatchObject({ code: "corrupt-chunk", message: expect.stringMatching(/damaged/) });
      await r.close();
      // Whatever was handed on before the damage was found is exactly right.
      expect(handed).toEqual(data.slice(0, handed.length).map(sha));
      expect(handed.length).toBeLessThan(data.length);

      const r2 = repo.reader();
      await expect(r2.read(new Uint8Array(32).fill(7), 8192, () => {})).rejects.toMatchObject({ code: "missing-chunk" });
      await expect(r2.read(ids[0]!, 4096, () => {})).rejects.toMatchObject({ code: "corrupt-chunk", message: expect.stringMatching(/8192 bytes in the repository, but 4096/) });
      await r2.close();
    });
  });
}
