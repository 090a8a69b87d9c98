// Two backups writing into one repository at once, from two processes, with overlapping data:
// both finish, every chunk reads back, the index files they consolidated concurrently hold
// every chunk (a chunk both stored twice is fine), and check finds nothing wrong.
import { describe, it, expect, afterEach } from "vitest";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT } from "./harness/klio.ts";
import { initRepository, openRepository } from "../src/repo/repository.ts";
import { writerTestChunk } from "./repo-writer-chunks.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function writer(dir: string, count: number, from: number): Promise<{ newChunks: number }> {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(ROOT, "test", "repo-writer-child.ts"), dir, String(count), String(from)], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (err += d));
  return new Promise((resolve, reject) =>
    child.on("close", (code) => {
      const m = /done (.*)\n$/.exec(out);
      if (code === 0 && m) resolve(JSON.parse(m[1]!));
      else reject(new Error(`writer exited ${code}: ${err}`));
    }),
  );
}

describe("two writer processes at once", () => {
  it("store everything, consolidate concurrently, and leave a clean repository", { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "klio-concurrent-"));
    dirs.push(dir);
    // Small packs: many seals, so consolidations of both writers overlap.
    await initRepository(dir, { packTargetBytes: 64 * 1024 });
    const [a, b] = await Promise.all([writer(dir, 1200, 0), writer(dir, 1200, 600)]);
    // 1800 distinct chunks; the 600 both wrote are stored once or twice.
    expect(a.newChunks + b.newChunks).toBeGreaterThanOrEqual(1800);
    expect(a.newChunks + b.newChunks).toBeLessThanOrEqual(2400);

    const repo = await openRepository(dir);
    try {
      for (let i = 0; i < 1800; i++) {
        const data = writerTestChunk(i);
        const id = repo.chunkId(data);
        expect(repo.has(id), `chunk ${i}`).toBe(true);
        if (i % 7 === 0) expect(Buffer.from(await repo.readChunk(id)).equals(data)).toBe(true);
      }
      expect(await repo.check({ readData: true })).toEqual([]);
      expect(readdirSync(path.join(dir, "index")).length).toBeLessThan(30);
      // A third writer stores nothing new.
      const w = repo.writer();
      for (let i = 0; i < 1800; i += 3) expect((await w.put(writerTestChunk(i))).isNew).toBe(false);
      await w.flush();
    } finally {
      await repo.close();
    }
  });
});
