// The repository on real files: chunks round-trip through packs and index files, identical
// data is stored once (within a writer, across writers, across processes' index files),
// objects are written once, headers that are damaged or of an unknown version are refused,
// and an encrypted repository keeps everything but its header unreadable without the key.
import { describe, it, expect, afterEach } from "vitest";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chunkIdHex, parseChunkId } from "../src/repo/chunk-id.ts";
import { changePassphrase, initRepository, isRepository, openRepository, type Repository } from "../src/repo/repository.ts";
import { KlioError } from "../src/util/errors.ts";

const CHEAP_SCRYPT = { N: 1024, r: 8, p: 1 };
const dirs: string[] = [];
const repos: Repository[] = [];
afterEach(async () => {
  for (const r of repos.splice(0)) await r.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), "klio-repo-test-"));
  dirs.push(d);
  return d;
}

async function open(dir: string, passphrase?: string): Promise<Repository> {
  const r = await openRepository(dir, { passphrase });
  repos.push(r);
  return r;
}

/** A page-like chunk: compressible text, 2 KB of noise, zeros; the same for the same i. */
function chunk(i: number, size = 8192): Uint8Array {
  const b = new Uint8Array(size);
  const text = new TextEncoder().encode(`row ${i} `.repeat(Math.ceil(size / 8)));
  b.set(text.subarray(0, size / 2), 0);
  for (let k = 0; k < 32; k++) b.set(createHash("sha512").update(`noise ${i} ${k}`).digest(), size / 2 + k * 64);
  new DataView(b.buffer).setUint32(size - 4, i);
  return b;
}

function files(dir: string, under: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(p);
    }
  };
  try {
    walk(path.join(dir, under));
  } catch {
    // absent
  }
  return out;
}

async function expectKlioError(p: Promise<unknown>, code: string, message?: RegExp): Promise<KlioError> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(KlioError);
  expect((e as KlioError).code).toBe(code);
  if (message) expect((e as KlioError).message).toMatch(message);
  return e as KlioError;
}

describe("chunks", () => {
  it("round-trip through many packs, and survive reopening", async () => {
    const dir = tempDir();
    await initRepository(dir, { packTargetBytes: 64 * 1024 });
    const repo = await open(dir);
    const w = repo.writer();
    const data = Array.from({ length: 600 }, (_, i) => chunk(i, i % 7 === 0 ? 30_000 : 8192));
    const ids = [];
    for (const d of data) {
      const r = await w.put(d);
      expect(r.isNew).toBe(true);
      expect(chunkIdHex(r.id)).toBe(createHash("sha256").update(d).digest("hex"));
      ids.push(r.id);
    }
    await w.flush();
    expect(w.stats.chunks).toBe(600);
    expect(w.stats.newChunks).toBe(600);
    expect(w.stats.storedBytes).toBeLessThan(w.stats.plainBytes / 2); // compressed
    expect(files(dir, "packs").length).toBeGreaterThan(10);
    for (let i = 0; i < data.length; i++) expect(await repo.readChunk(ids[i]!)).toEqual(data[i]);

    const again = await open(dir);
    for (let i = 0; i < data.length; i += 37) {
      expect(again.has(ids[i]!)).toBe(true);
      expect(await again.readChunk(ids[i]!)).toEqual(data[i]);
    }
    expect(await again.check({ readData: true })).toEqual([]);
  });

  it("are stored once: within a writer, across writers and across processes' views", async () => {
    const dir = tempDir();
    await initRepository(dir, { packTargetBytes: 64 * 1024 });
    const a = await open(dir);
    const w1 = a.writer();
    const first = await w1.put(chunk(1));
    const dup = await w1.put(chunk(1)); // still in the open pack
    expect(first.isNew).toBe(true);
    expect(dup).toMatchObject({ isNew: false });
    // Several puts of the same data in flight at once store it once.
    const parallel = await Promise.all([w1.put(chunk(2)), w1.put(chunk(2)), w1.put(chunk(2))]);
    expect(parallel.filter((r) => r.isNew).length).toBe(1);
    await w1.flush();
    expect(w1.stats).toMatchObject({ chunks: 5, newChunks: 2 });

    const w2 = a.writer(); // same process: sees w1's sealed packs
    expect((await w2.put(chunk(1))).isNew).toBe(false);

    const b = await open(dir); // "another process": sees what was flushed before it opened
    expect(b.has(first.id)).toBe(true);
    const w3 = b.writer();
    expect((await w3.put(chunk(2))).isNew).toBe(false);
    expect((await w3.put(chunk(3))).isNew).toBe(true);
    await w3.flush();

    // a learns of b's chunk by refresh (and readChunk refreshes on a miss by itself)
    const id3 = a.chunkId(chunk(3));
    expect(a.has(id3)).toBe(false);
    expect(await a.readChunk(id3)).toEqual(chunk(3));
    expect(a.has(id3)).toBe(true);
    const packBytes = files(dir, "packs").reduce((n, f) => n + statSync(f).size, 0);
    expect(packBytes).toBeLessThan(3 * 8192); // three distinct chunks, compressed
  });

  it("takes a caller's id, rejects a malformed one, and reports a missing chunk", async () => {
    const dir = tempDir();
    await initRepository(dir);
    const repo = await open(dir);
    const w = repo.writer();
    const data = chunk(9);
    const id = repo.chunkId(data);
    expect((await w.put(data, id)).id).toEqual(id);
    await expect(w.put(data, new Uint8Array(31))).rejects.toMatchObject({ code: "bad-chunk-id" });
    await w.flush();
    await expectKlioError(repo.readChunk(parseChunkId("00".repeat(32))), "missing-chunk");
    expect(() => parseChunkId("xyz")).toThrow(KlioError);
    expect(() => parseChunkId("AB".repeat(32))).toThrow(/not a chunk id/);
  });

  it("stores chunks that do not compress as they are, and empty chunks", async () => {
    const dir = tempDir();
    await initRepository(dir);
    const repo = await open(dir);
    const w = repo.writer();
    const noise = new Uint8Array(randomBytes(50_000));
    const r = await w.put(noise);
    const empty = await w.put(new Uint8Array(0));
    await w.flush();
    expect(w.stats.storedBytes).toBe(noise.length);
    expect(await repo.readChunk(r.id)).toEqual(noise);
    expect(await repo.readChunk(empty.id)).toEqual(new Uint8Array(0));
  });

  for (const compression of ["deflate", "lz4", "none"] as const) {
    it(`round-trip with compression ${compression}`, async () => {
      const dir = tempDir();
      await initRepository(dir, { compression, packTargetBytes: 64 * 1024 });
      const repo = await open(dir);
      const w = repo.writer();
      const data = Array.from({ length: 50 }, (_, i) => chunk(i));
      const ids = [];
      for (const d of data) ids.push((await w.put(d)).id);
      await w.flush();
      if (compression === "none") expect(w.stats.storedBytes).toBe(w.stats.plainBytes);
      else expect(w.stats.storedBytes).toBeLessThan(w.stats.plainBytes / 2);
      for (let i = 0; i < data.length; i++) expect(await repo.readChunk(ids[i]!)).toEqual(data[i]);
      expect(await repo.check({ readData: true })).toEqual([]);
    });
  }
});

describe("objects", () => {
  it("are written once, read back, listed and deleted", async () => {
    const dir = tempDir();
    await initRepository(dir);
    const repo = await open(dir);
    const body = new TextEncoder().encode(JSON.stringify({ hello: "world" }).repeat(100));
    await repo.putObject("snapshots/db1/20260101T000000Z", body);
    await repo.putObject("snapshots/db2/20260101T000000Z", new Uint8Array([1, 2, 3]));
    await expectKlioError(repo.putObject("snapshots/db1/20260101T000000Z", body), "object-exists");
    expect(await repo.getObject("snapshots/db1/20260101T000000Z")).toEqual(body);
    expect(await repo.listObjects("snapshots/")).toEqual(["snapshots/db1/20260101T000000Z", "snapshots/db2/20260101T000000Z"]);
    expect(await repo.listObjects("snapshots/db1/")).toEqual(["snapshots/db1/20260101T000000Z"]);
    expect(await repo.listObjects("snapshots/nothing/")).toEqual([]);
    await repo.deleteObject("snapshots/db1/20260101T000000Z");
    await repo.deleteObject("snapshots/db1/20260101T000000Z"); // idempotent
    await expectKlioError(repo.getObject("snapshots/db1/20260101T000000Z"), "missing-object");
    for (const bad of ["../x", "snapshots/../../etc/passwd", "packs/ab/x", "snapshots", "/snapshots/x", "snapshots/a b"])
      await expectKlioError(repo.putObject(bad, body), "bad-key");
  });

  it("report damage instead of returning it", async () => {
    const dir = tempDir();
    await initRepository(dir);
    const repo = await open(dir);
    await repo.putObject("snapshots/db1/x", new TextEncoder().encode("a manifest"));
    const file = path.join(dir, "snapshots", "db1", "x");
    const bytes = readFileSync(file);
    bytes[bytes.length - 40] ^= 1;
    writeFileSync(file, bytes);
    await expectKlioError((await open(dir)).getObject("snapshots/db1/x"), "corrupt-object");
  });
});

describe("the header", () => {
  it("is required, and one with an unknown version or damage is refused", async () => {
    const dir = tempDir();
    await expectKlioError(openRepository(dir), "bad-repository", /not a klio repository.*klio init/);
    expect(await isRepository(dir)).toBe(false);
    await initRepository(dir);
    expect(await isRepository(dir)).toBe(true);
    const file = path.join(dir, "klio-repository.json");
    const good = JSON.parse(readFileSync(file, "utf8"));

    const cases: [string, unknown, RegExp][] = [
      ["unknown version", { ...good, version: 2 }, /version 2 is not supported/],
      ["another format", { ...good, format: "kopia" }, /not a klio repository header/],
      ["bad id", { ...good, id: "x" }, /bad id/],
      ["unknown compression", { ...good, parameters: { ...good.parameters, compression: "zstd" } }, /unknown compression/],
      ["tiny packs", { ...good, parameters: { ...good.parameters, packTargetBytes: 10 } }, /packTargetBytes/],
      ["encryption without its chunk ids", { ...good, encryption: { algorithm: "aes-256-gcm" } }, /hmac-sha256/],
    ];
    for (const [, header, message] of cases) {
      writeFileSync(file, JSON.stringify(header));
      await expectKlioError(openRepository(dir), "bad-repository", message);
    }
    writeFileSync(file, "{ not json");
    await expectKlioError(openRepository(dir), "bad-repository", /damaged/);
    writeFileSync(file, JSON.stringify(good));
    await open(dir);
  });

  it("init refuses a repository or any non-empty directory, and changes nothing", async () => {
    const dir = tempDir();
    await initRepository(dir);
    const before = readFileSync(path.join(dir, "klio-repository.json"));
    await expectKlioError(initRepository(dir), "bad-repository", /already a klio repository/);
    expect(readFileSync(path.join(dir, "klio-repository.json"))).toEqual(before);

    const other = tempDir();
    writeFileSync(path.join(other, "data.txt"), "x");
    await expectKlioError(initRepository(other), "bad-repository", /not empty/);
    expect(readdirSync(other)).toEqual(["data.txt"]);

    const fresh = path.join(tempDir(), "a", "b");
    await initRepository(fresh); // created with its parents
    expect(await isRepository(fresh)).toBe(true);
  });

  it("two concurrent inits of one directory: one wins, the other fails", async () => {
    const dir = tempDir();
    const results = await Promise.allSettled([initRepository(dir), initRepository(dir), initRepository(dir)]);
    expect(results.filter((r) => r.status === "fulfilled").length).toBe(1);
    expect(readdirSync(dir)).toEqual(["klio-repository.json"]);
  });
});

describe("an encrypted repository", () => {
  it("needs the passphrase, uses keyed ids, and stores nothing readable", async () => {
    const dir = tempDir();
    await initRepository(dir, { passphrase: "correct horse", scrypt: CHEAP_SCRYPT, packTargetBytes: 64 * 1024 });
    await expectKlioError(openRepository(dir), "bad-passphrase", /is encrypted/);
    await expectKlioError(openRepository(dir, { passphrase: "wrong horse" }), "bad-passphrase", /wrong passphrase/);

    const repo = await open(dir, "correct horse");
    expect(repo.encrypted).toBe(true);
    const secret = new TextEncoder().encode("TOP-SECRET-PLAINTEXT-".repeat(400));
    const w = repo.writer();
    const r = await w.put(secret);
    for (let i = 0; i < 40; i++) await w.put(chunk(i));
    await w.flush();
    await repo.putObject("snapshots/db1/x", new TextEncoder().encode("TOP-SECRET-PLAINTEXT- in a manifest"));
    // The id is keyed: not the SHA-256 an attacker could compute from guessed data.
    expect(chunkIdHex(r.id)).not.toBe(createHash("sha256").update(secret).digest("hex"));
    expect(await repo.readChunk(r.id)).toEqual(secret);
    expect(new TextDecoder().decode(await repo.getObject("snapshots/db1/x"))).toContain("in a manifest");

    // Nothing but the header holds the plaintext, nor the plain SHA-256 ids, nor the
    // compressed form: grep every file.
    const sha = createHash("sha256").update(secret).digest();
    const needles = [Buffer.from("TOP-SECRET"), Buffer.from("row 1 "), sha.subarray(0, 8), Buffer.from(r.id.subarray(0, 8))];
    const all = files(dir, "");
    expect(all.length).toBeGreaterThan(3);
    for (const f of all) {
      const bytes = readFileSync(f);
      for (const n of needles) expect(bytes.includes(n), `${f} contains ${n.toString("hex")}`).toBe(false);
    }

    const again = await open(dir, "correct horse");
    expect(await again.readChunk(r.id)).toEqual(secret);
    expect(await again.check({ readData: true })).toEqual([]);
  });

  it("changes its passphrase without touching the data", async () => {
    const dir = tempDir();
    await initRepository(dir, { passphrase: "old", scrypt: CHEAP_SCRYPT });
    const repo = await open(dir, "old");
    const w = repo.writer();
    const { id } = await w.put(chunk(5));
    await w.flush();
    const packs = files(dir, "packs").map((f) => readFileSync(f));
    await expectKlioError(changePassphrase(dir, "not it", "new"), "bad-passphrase");
    await changePassphrase(dir, "old", "new");
    await expectKlioError(openRepository(dir, { passphrase: "old" }), "bad-passphrase");
    const after = await open(dir, "new");
    expect(await after.readChunk(id)).toEqual(chunk(5));
    expect(files(dir, "packs").map((f) => readFileSync(f))).toEqual(packs);
  });

  it("a repository's blobs do not open with another repository's key", async () => {
    const a = tempDir();
    const b = tempDir();
    await initRepository(a, { passphrase: "same", scrypt: CHEAP_SCRYPT });
    await initRepository(b, { passphrase: "same", scrypt: CHEAP_SCRYPT });
    const ra = await open(a, "same");
    const w = ra.writer();
    await w.put(chunk(1));
    await w.flush();
    // Copy a's index and pack into b: b cannot read them (its master key differs).
    for (const f of [...files(a, "index"), ...files(a, "packs")]) {
      const rel = path.relative(a, f);
      const to = path.join(b, rel);
      rmSync(path.dirname(to), { recursive: true, force: true });
      await import("node:fs").then((fs) => {
        fs.mkdirSync(path.dirname(to), { recursive: true });
        fs.copyFileSync(f, to);
      });
    }
    const rb = await open(b, "same");
    expect(rb.has(ra.chunkId(chunk(1)))).toBe(false);
    const problems = await rb.check({ readData: true });
    expect(problems.map((p) => p.kind)).toContain("bad-index");
  });
});
