// The filesystem storage: keys are validated, puts are atomic and land whole, a put's
// temporary file is never listed, ranges are exact, and errors name what is missing.
import { describe, it, expect, afterEach } from "vitest";
import { mkdtempSync, readdirSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { FsStorage, validateKey } from "../src/repo/fs-storage.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function storage(): FsStorage {
  const d = mkdtempSync(path.join(os.tmpdir(), "klio-fs-storage-"));
  dirs.push(d);
  return new FsStorage(d);
}
const bytes = (s: string) => new TextEncoder().encode(s);

describe("FsStorage", () => {
  it("puts whole objects from a buffer, parts or a stream, and reads them and their ranges", async () => {
    const s = storage();
    await s.put("packs/ab/one", bytes("hello world"));
    await s.put("packs/ab/two", [bytes("hello "), bytes("parts")]);
    async function* stream() {
      for (let i = 0; i < 300; i++) yield new Uint8Array(10_000).fill(i & 255);
    }
    await s.put("index/three", stream());
    expect(new TextDecoder().decode(await s.get("packs/ab/one"))).toBe("hello world");
    expect(new TextDecoder().decode(await s.get("packs/ab/two"))).toBe("hello parts");
    expect((await s.get("index/three")).length).toBe(3_000_000);
    expect(new TextDecoder().decode(await s.getRange("packs/ab/one", 6, 5))).toBe("world");
    expect((await s.getRange("index/three", 2_990_000, 3))[0]).toBe(299 & 255);
    await expect(s.getRange("packs/ab/one", 6, 6)).rejects.toMatchObject({ code: "short-object" });
    await expect(s.get("packs/ab/none")).rejects.toMatchObject({ code: "not-found" });
    expect(await s.exists("packs/ab/one")).toBe(true);
    expect(await s.exists("packs/ab/none")).toBe(false);
    await s.close();
  });

  it("putNew never replaces: of writers racing for one key exactly one lands, whole, and the rest fail with object-exists", async () => {
    const s = storage();
    await s.putNew("snapshots/db1/20261124T071500Z", bytes("first"));
    await expect(s.putNew("snapshots/db1/20261124T071500Z", bytes("second"))).rejects.toMatchObject({ code: "object-exists" });
    expect(new TextDecoder().decode(await s.get("snapshots/db1/20261124T071500Z"))).toBe("first");
    for (let round = 0; round < 20; round++) {
      const key = `snapshots/db1/race${round}`;
      const results = await Promise.allSettled([0, 1, 2, 3].map((i) => s.putNew(key, bytes(`writer ${i}`.repeat(1000)))));
      const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
      expect(won).toHaveLength(1);
      for (const r of results) if (r.status === "rejected") expect(r.reason).toMatchObject({ code: "object-exists" });
      expect(new TextDecoder().decode(await s.get(key))).toBe(`writer ${won[0]}`.repeat(1000));
    }
    // No temporary file is left behind.
    expect(readdirSync(path.join(s.root, "snapshots", "db1")).filter((n) => n.endsWith(".klio-tmp"))).toEqual([]);
    await s.close();
  });

  it("lists by prefix at any depth, sorted, with sizes and modification times, and never a temporary file", async () => {
    const s = storage();
    const t0 = Date.now() - 1000;
    await s.put("snapshots/db1/b", bytes("12"));
    await s.put("snapshots/db1/a", bytes("1"));
    await s.put("snapshots/db2/a", bytes("123"));
    await s.put("snapshotsx", bytes("no"));
    writeFileSync(path.join(s.root, "snapshots", "db1", "c.1234-ab.klio-tmp"), "half");
    mkdirSync(path.join(s.root, "snapshots", "db1", "empty"));
    const listed = await s.list("snapshots/");
    expect(listed.map(({ key, size }) => ({ key, size }))).toEqual([
      { key: "snapshots/db1/a", size: 1 },
      { key: "snapshots/db1/b", size: 2 },
      { key: "snapshots/db2/a", size: 3 },
    ]);
    for (const e of listed) expect(e.modified).toBeGreaterThan(t0);
    expect((await s.list("snapshots/db1/")).map((e) => e.key)).toEqual(["snapshots/db1/a", "snapshots/db1/b"]);
    expect((await s.list("snapshots/db1/a")).map((e) => e.key)).toEqual(["snapshots/db1/a"]);
    expect(await s.list("nothing/")).toEqual([]);
  });

  it("replaces atomically, leaves no temporary file, and removes idempotently", async () => {
    const s = storage();
    await s.put("index/x", bytes("first"));
    await s.getRange("index/x", 0, 5); // a cached handle must not outlive a remove
    await s.remove("index/x");
    await s.remove("index/x");
    await expect(s.get("index/x")).rejects.toMatchObject({ code: "not-found" });
    await s.put("index/x", bytes("second"));
    expect(new TextDecoder().decode(await s.get("index/x"))).toBe("second");
    expect(readdirSync(path.join(s.root, "index"))).toEqual(["x"]);
    await s.close();
  });

  it("refuses keys that could leave the root or collide with temporary names", () => {
    for (const bad of ["", "/abs", "a/../b", "..", "a//b", "a/", ".hidden", "x.klio-tmp", "a b", "a\\b"]) expect(() => validateKey(bad), bad).toThrow(/not a valid repository key/);
    for (const good of ["a", "packs/3f/3fab.pack", "snapshots/db-1/20260101T000000Z-2", "wal/c_1.x"]) expect(validateKey(good)).toBe(good);
  });

  it("serves many ranges of many files at once (the handle cache under pressure)", async () => {
    const s = storage();
    for (let i = 0; i < 100; i++) await s.put(`packs/${String(i).padStart(3, "0")}`, new Uint8Array(100).fill(i));
    const reads = [];
    for (let r = 0; r < 5; r++) for (let i = 0; i < 100; i++) reads.push(s.getRange(`packs/${String(i).padStart(3, "0")}`, i % 50, 10).then((b) => b.every((x) => x === i)));
    expect((await Promise.all(reads)).every(Boolean)).toBe(true);
    await s.close();
  });
});
