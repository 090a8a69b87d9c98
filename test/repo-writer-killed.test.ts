// A writer killed with SIGKILL in the middle of a backup: the repository still opens, every
// chunk of every sealed (indexed) pack reads back intact, leftover temporary files are
// ignored, and the next writer stores again only what the killed one had not sealed.
import { describe, it, expect, afterEach } from "vitest";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT } from "./harness/klio.ts";
import { initRepository, openRepository, type Repository } from "../src/repo/repository.ts";
import { writerTestChunk } from "./repo-writer-chunks.ts";

const dirs: string[] = [];
const repos: Repository[] = [];
afterEach(async () => {
  for (const r of repos.splice(0)) await r.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function count(dir: string, ext: string): number {
  try {
    return readdirSync(dir, { recursive: true }).filter((n) => String(n).endsWith(ext)).length;
  } catch {
    return 0; // not created yet
  }
}

describe("a writer killed midway", () => {
  it("leaves a repository that opens, reads every sealed chunk, and is reused by the next writer", { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "klio-killed-"));
    dirs.push(dir);
    await initRepository(dir, { packTargetBytes: 256 * 1024 });

    const child = spawn(process.execPath, ["--import", "tsx", path.join(ROOT, "test", "repo-writer-child.ts"), dir], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d) => (stderr += d));
    let lastPut = 0;
    child.stdout!.on("data", (d: Buffer) => {
      const m = /put (\d+)\n$/.exec(d.toString());
      if (m) lastPut = Number(m[1]);
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
    // Let it seal several packs (and merge their index files), then kill it mid-stream.
    const deadline = Date.now() + 90_000;
    while (count(path.join(dir, "packs"), ".pack") < 6 || lastPut < 500) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`the writer did not get going: ${stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill("SIGKILL");
    expect(await exited).toBe("SIGKILL");
    const written = lastPut + 100; // it may have put up to 99 more since its last report

    // Leftovers of puts in progress (a kill during one leaves exactly these).
    mkdirSync(path.join(dir, "packs", "ab"), { recursive: true });
    writeFileSync(path.join(dir, "packs", "ab", `ab${"0".repeat(30)}.pack.99999-0a0b0c0d.klio-tmp`), "half a pack");
    writeFileSync(path.join(dir, "index", `${"cd".repeat(16)}.idx.99999-0a0b0c0d.klio-tmp`), "half an index");

    const repo = await openRepository(dir);
    repos.push(repo);
    let stored = 0;
    for (let i = 0; i <= written; i++) {
      const data = writerTestChunk(i);
      const id = repo.chunkId(data);
      if (!repo.has(id)) continue;
      stored++;
      expect(Buffer.from(await repo.readChunk(id)).equals(data), `chunk ${i}`).toBe(true);
    }
    expect(stored).toBeGreaterThan(100);
    expect(stored).toBeLessThanOrEqual(lastPut + 1);
    // Only a pack sealed but not yet indexed at the kill may show up: harmless, never damage.
    const problems = await repo.check({ readData: true });
    expect(problems.filter((p) => p.kind !== "unindexed-pack")).toEqual([]);
    expect(problems.length).toBeLessThanOrEqual(1);

    // The next backup reuses what was sealed and stores the rest.
    const w = repo.writer();
    let reused = 0;
    for (let i = 0; i <= written; i++) if (!(await w.put(writerTestChunk(i))).isNew) reused++;
    await w.flush();
    expect(reused).toBe(stored);
    const after = await openRepository(dir);
    repos.push(after);
    for (let i = 0; i <= written; i += 13) expect(Buffer.from(await after.readChunk(after.chunkId(writerTestChunk(i)))).equals(writerTestChunk(i))).toBe(true);
  });
});
