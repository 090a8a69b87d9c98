// Maintenance on a real repository of real files, with "backups" that are plain objects
// listing chunk ids (the ReferenceSource is the seam; real snapshots are covered by
// maintenance-concurrent.test.ts and maintenance-killed.test.ts): space of deleted backups is
// freed, mostly-garbage packs are rewritten, what is kept reads back, and a writer that
// started before maintenance keeps every chunk it deduplicated against.
import { describe, it, expect, afterEach } from "vitest";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chunkIdHex, parseChunkId, type ChunkId } from "../src/repo/chunk-id.ts";
import { initRepository, openRepository, type Repository } from "../src/repo/repository.ts";
import type { ReferenceSource } from "../src/repo/maintenance.ts";
import { acquireMaintenance, releaseMaintenance } from "../src/repo/maintenance-state.ts";
import type { RepoSession } from "../src/repo/sessions.ts";
import { createLogger, type Logger } from "../src/util/log.ts";
import { waitFor } from "./harness/klio.ts";

const dirs: string[] = [];
const repos: Repository[] = [];
afterEach(async () => {
  for (const r of repos.splice(0)) await r.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const log = createLogger({ write: () => {}, format: "json", level: "error" });

/** A logger that remembers the events maintenance logs, to wait for one (not for a guessed time). */
function watchedLog(): { log: Logger; logged(event: string): Promise<void> } {
  const events: string[] = [];
  const log = createLogger({ write: (line) => void events.push(JSON.parse(line).event), format: "json", level: "info" });
  return { log, logged: async (event) => void (await waitFor(`maintenance to log ${event}`, () => events.includes(event))) };
}

async function newRepo(packTargetBytes = 256 * 1024, passphrase?: string): Promise<Repository> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "klio-maint-"));
  dirs.push(dir);
  await initRepository(dir, { packTargetBytes, passphrase, scrypt: { N: 1024, r: 8, p: 1 } });
  const r = await openRepository(dir, { workers: 0, passphrase });
  repos.push(r);
  return r;
}

/** An 8 KB chunk, different for every i, compressible like a page. */
function chunk(i: number): Uint8Array {
  const b = new Uint8Array(8192);
  b.set(new TextEncoder().encode(`row ${i} `.repeat(512)).subarray(0, 4096));
  for (let k = 0; k < 64; k++) b.set(createHash("sha512").update(`noise ${i} ${k}`).digest(), 4096 + k * 64);
  return b;
}

/** "Backups" for these tests: objects under snapshots/t/ listing the hex ids they use. */
const refs = (repo: Repository): ReferenceSource => ({
  list: async () => repo.listObjects("snapshots/t/"),
  async chunksOf(key, visit, afterDirect) {
    for (const hex of new TextDecoder().decode(await repo.getObject(key)).split("\n").filter(Boolean)) visit(parseChunkId(hex));
    await afterDirect?.();
  },
});

/** Stores chunks `ids` in one writer session and records them as backup `name`. */
async function backup(repo: Repository, name: string, ids: number[]): Promise<void> {
  const { session, writer } = await repo.beginWrite(`test ${name}`);
  const hex: string[] = [];
  for (const i of ids) hex.push(chunkIdHex((await writer.put(chunk(i))).id));
  await writer.flush();
  await commit(repo, session, name, hex);
  await session.end();
}

/** Records a backup the way a real one is: through its session. */
async function commit(repo: Repository, session: RepoSession, name: string, hex: string[]): Promise<void> {
  await repo.commitObject(session, `snapshots/t/${name}`, new TextEncoder().encode(hex.join("\n")), async (visit, afterDirect) => {
    for (const h of hex) visit(parseChunkId(h));
    await afterDirect();
  });
}

function packBytes(repo: Repository): number {
  let n = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else n += statSync(p).size;
    }
  };
  walk(path.join(repo.root, "packs"));
  return n;
}

const idOf = (repo: Repository, i: number): ChunkId => repo.chunkId(chunk(i));

async function readsBack(repo: Repository, ids: number[]): Promise<void> {
  for (const i of ids) expect(Buffer.from(await repo.readChunk(idOf(repo, i))).equals(Buffer.from(chunk(i)))).toBe(true);
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => from + k);

describe("repo maintenance", () => {
  it("frees the packs only deleted backups used, keeps every chunk of the others, and a second run frees nothing", { timeout: 60_000 }, async () => {
    const repo = await newRepo();
    await backup(repo, "b1", range(0, 200));
    await backup(repo, "b2", range(100, 300));
    await backup(repo, "b3", range(300, 400));
    const before = packBytes(repo);
    await repo.deleteObject("snapshots/t/b1");
    await repo.deleteObject("snapshots/t/b3");

    const dry = await repo.maintain(refs(repo), { dryRun: true, log });
    expect(dry.packs.removed).toBeGreaterThan(0);
    expect(packBytes(repo)).toBe(before);

    const r = await repo.maintain(refs(repo), { log });
    expect(r.snapshots).toBe(1);
    expect(r.bytes.freed).toBeGreaterThan(0);
    expect(r.indexFiles.after).toBe(1);
    expect(packBytes(repo)).toBeLessThan(before * 0.75);
    await readsBack(repo, range(100, 300));
    for (const i of [0, 50, 99, 300, 399]) expect(repo.has(idOf(repo, i))).toBe(false);
    expect(await repo.check({ readData: true })).toEqual([]);

    const again = await repo.maintain(refs(repo), { log });
    expect(again.bytes.freed).toBe(0);
    expect(again.packs.removed + again.packs.rewritten).toBe(0);
    await readsBack(repo, range(100, 300));
  });

  it.each([["plain", undefined], ["encrypted", "correct horse"]])("rewrites packs that are mostly garbage with only their live chunks, once (%s)", { timeout: 60_000 }, async (_kind, passphrase) => {
    const repo = await newRepo(128 * 1024, passphrase);
    // Two backups interleaved in one writer: every pack holds both.
    const { session, writer } = await repo.beginWrite("test interleaved");
    const even: string[] = [];
    const odd: string[] = [];
    for (const i of range(0, 400)) (i % 2 ? odd : even).push(chunkIdHex((await writer.put(chunk(i))).id));
    await writer.flush();
    await commit(repo, session, "even", even);
    await commit(repo, session, "odd", odd);
    await session.end();
    const before = packBytes(repo);
    await repo.deleteObject("snapshots/t/odd");

    const r = await repo.maintain(refs(repo), { log, repackShare: 0.3 });
    expect(r.packs.rewritten).toBeGreaterThan(0);
    expect(r.packs.written).toBeGreaterThan(0);
    // Every frame held both even and odd chunks: only chunk by chunk does the space come back.
    expect(packBytes(repo)).toBeLessThan(before * 0.6);
    await readsBack(repo, range(0, 400).filter((i) => i % 2 === 0));
    expect(await repo.check({ readData: true })).toEqual([]);
    const again = await repo.maintain(refs(repo), { log, repackShare: 0.3 });
    expect(again.packs.rewritten + again.packs.removed).toBe(0);
  });

  it.each([["plain", undefined], ["encrypted", "correct horse"]])("keeps what a backup that started before maintenance deduplicated against, waiting for it or leaving the freeing to the next run (%s)", { timeout: 60_000 }, async (_kind, passphrase) => {
    const repo = await newRepo(256 * 1024, passphrase);
    await backup(repo, "old", range(0, 100));
    await repo.deleteObject("snapshots/t/old");
    // A backup starts and finds chunks 5 and 60 in the repository (garbage, but indexed).
    const { session, writer } = await repo.beginWrite("test running");
    expect((await writer.put(chunk(5))).isNew).toBe(false);
    expect((await writer.put(chunk(60))).isNew).toBe(false);

    const first = await repo.maintain(refs(repo), { log, maxWaitMs: 300, pollMs: 50 });
    expect(first.deferred?.sessions.join()).toMatch(/test running/);
    // The new index left them out; their packs wait for the running backup.
    expect(existsSync(path.join(repo.root, "maintenance", "state.json"))).toBe(true);

    // The backup commits: it brings back what it used, and is restorable at once.
    const hex = [chunkIdHex(idOf(repo, 5)), chunkIdHex((await writer.put(chunk(1000))).id), chunkIdHex(idOf(repo, 60))];
    await writer.flush();
    await commit(repo, session, "new", hex);
    await readsBack(repo, [5, 60, 1000]);
    await session.end();

    const second = await repo.maintain(refs(repo), { log });
    expect(second.resumed).not.toBeNull();
    expect(second.deferred).toBeNull();
    expect(second.bytes.freed).toBeGreaterThan(0);
    await readsBack(repo, [5, 60, 1000]);
    expect(repo.has(idOf(repo, 30))).toBe(false);
    expect(await repo.check({ readData: true })).toEqual([]);
    // Nothing is left to wait for: a third run finds only the garbage beside 5 and 60.
    const third = await repo.maintain(refs(repo), { log });
    expect(third.deferred).toBeNull();
    await readsBack(repo, [5, 60, 1000]);
    expect(await repo.check({ readData: true })).toEqual([]);
  });

  it("waits for a backup that ends while it waits, then keeps what that backup named", { timeout: 120_000 }, async () => {
    const repo = await newRepo();
    await backup(repo, "old", range(0, 50));
    await repo.deleteObject("snapshots/t/old");
    const { session, writer } = await repo.beginWrite("test running");
    expect((await writer.put(chunk(7))).isNew).toBe(false);
    const watched = watchedLog();
    const running = repo.maintain(refs(repo), { log: watched.log, pollMs: 50 });
    await watched.logged("maintenance.waiting");
    await writer.flush();
    await commit(repo, session, "new", [chunkIdHex(idOf(repo, 7))]);
    await readsBack(repo, [7]);
    await session.end();
    const r = await running;
    expect(r.deferred).toBeNull();
    await readsBack(repo, [7]);
    expect(repo.has(idOf(repo, 8))).toBe(false);
    // A backup that starts now stores chunk 8 again: the index no longer offers it.
    const later = await repo.beginWrite("test later");
    expect((await later.writer.put(chunk(8))).isNew).toBe(true);
    await later.writer.flush();
    await later.session.end();
  });

  it("keeps its plan for the next run when it fails after the swap, and removes no pack before then", { timeout: 120_000 }, async () => {
    const repo = await newRepo();
    await backup(repo, "old", range(0, 50));
    await repo.deleteObject("snapshots/t/old");
    const before = packBytes(repo);
    const { session, writer } = await repo.beginWrite("test running");
    expect((await writer.put(chunk(9))).isNew).toBe(false);
    const watched = watchedLog();
    const running = repo.maintain(refs(repo), { log: watched.log, pollMs: 50 });
    // While it waits for that backup, a snapshot it cannot read appears; the backup ends without one.
    await watched.logged("maintenance.waiting");
    await repo.putObject("snapshots/t/bad", new TextEncoder().encode("not a chunk id"));
    await writer.flush();
    await session.end();
    await expect(running).rejects.toThrow();
    const state = JSON.parse(readFileSync(path.join(repo.root, "maintenance", "state.json"), "utf8"));
    expect(state).toMatchObject({ phase: "freeing", process: null, plan: { free: expect.any(Array) } });
    expect(packBytes(repo)).toBe(before);

    await repo.deleteObject("snapshots/t/bad");
    const again = await repo.maintain(refs(repo), { log });
    expect(again.resumed).toBe(state.id);
    expect(again.bytes.freed).toBeGreaterThanOrEqual(before);
    expect(existsSync(path.join(repo.root, "maintenance", "state.json"))).toBe(false);
    expect(readdirSync(path.join(repo.root, "maintenance"))).toEqual(["last.json"]);
  });

  it("refuses a second maintenance while one runs, and takes over the lock of a dead one", async () => {
    const repo = await newRepo();
    const first = await acquireMaintenance(repo.root);
    await expect(repo.maintain(refs(repo), { log })).rejects.toThrow(/maintenance is already running on this repository \(pid \d+/);
    expect(first.previous).toBeNull();
    await releaseMaintenance(repo.root);
    await expect(repo.maintain(refs(repo), { log })).resolves.toMatchObject({ resumed: null });
  });
});
