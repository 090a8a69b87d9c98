// Index files: what is written reads back (plain and sealed), and every kind of damage —
// a flipped byte anywhere, truncation, another version, entries out of order, a block
// sealed for another file — is reported as a damaged index, never returned.
import { describe, it, expect, afterEach } from "vitest";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { FsStorage } from "../src/repo/fs-storage.ts";
import { ENTRY_BYTES, decodeEntry, encodeEntry, encodeIndexFile, hexOf, indexKey, readIndexBlock, readIndexBlocks, readIndexHead, readIndexKeys, verifyIndexFile, type IndexHead } from "../src/repo/index-file.ts";
import { RunBuilder } from "../src/repo/index-run.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function sortedEntries(n: number, packs: number): Uint8Array {
  const ids = Array.from({ length: n }, (_, i) => createHash("sha256").update(`chunk ${i}`).digest()).sort(Buffer.compare);
  const out = new Uint8Array(n * ENTRY_BYTES);
  ids.forEach((id, i) => encodeEntry(out, i * ENTRY_BYTES, { id, pack: i % packs, offset: 16 + i * 100, length: 90 + (i % 7), flags: i % 3, plainLength: 8192 + i }));
  return out;
}

async function write(s: FsStorage, key: Uint8Array | null, n: number, opts: { packs?: number; superseded?: string[] } = {}): Promise<{ head: IndexHead; entries: Uint8Array; file: string }> {
  const fileId = hexOf(randomBytes(16));
  const packs = Array.from({ length: opts.packs ?? 3 }, () => hexOf(randomBytes(16)));
  const entries = sortedEntries(n, packs.length);
  const parts: Uint8Array[] = [];
  // hand the entries over in uneven pieces
  const pieces: Uint8Array[] = [];
  for (let at = 0; at < entries.length; ) {
    const len = Math.min(entries.length - at, ENTRY_BYTES * (1 + ((at / ENTRY_BYTES) % 300)));
    pieces.push(entries.subarray(at, at + len));
    at += len;
  }
  for await (const p of encodeIndexFile({ fileId, key, packs, superseded: opts.superseded ?? [], count: n }, pieces, new RunBuilder(n))) parts.push(p);
  await s.put(indexKey(fileId), parts);
  const size = parts.reduce((a, p) => a + p.length, 0);
  const head = await readIndexHead(s, indexKey(fileId), key, size);
  expect(head.packs).toEqual(packs);
  return { head, entries, file: path.join(s.root, "index", `${fileId}.idx`) };
}

async function readAll(s: FsStorage, head: IndexHead, key: Uint8Array | null): Promise<Uint8Array> {
  const out: Uint8Array[] = [];
  for await (const b of readIndexBlocks(s, head, key)) out.push(b);
  return Buffer.concat(out);
}

function store(): FsStorage {
  const d = mkdtempSync(path.join(os.tmpdir(), "klio-index-file-"));
  dirs.push(d);
  return new FsStorage(d);
}

for (const sealed of [false, true]) {
  describe(sealed ? "a sealed index file" : "a plain index file", () => {
    const key = sealed ? new Uint8Array(randomBytes(32)) : null;

    it("reads back what was written: entries whole and block by block, keys as the writer built them", async () => {
      const s = store();
      for (const n of [0, 1, 255, 256, 257, 1000, 70_000]) {
        const { head, entries } = await write(s, key, n, { superseded: n === 1 ? ["ab".repeat(16)] : [] });
        expect(head.entries).toBe(n);
        expect(Buffer.from(await readAll(s, head, key)).equals(entries)).toBe(true);
        if (n === 1) expect(head.superseded).toEqual(["ab".repeat(16)]);
        if (n > 256) {
          const b1 = await readIndexBlock(s, head, 1, key);
          expect(decodeEntry(b1, 0)).toEqual(decodeEntry(entries, 256 * ENTRY_BYTES));
        }
        const built = new RunBuilder(n);
        built.add(entries);
        const want = built.done();
        const got = await readIndexKeys(s, head, key);
        expect(Buffer.from(got.fan.buffer).equals(Buffer.from(want.fan.buffer))).toBe(true);
        expect(Buffer.from(got.keys.buffer).equals(Buffer.from(want.keys.buffer))).toBe(true);
        let seen = 0;
        await verifyIndexFile(s, head, key, async (b) => void (seen += b.length / ENTRY_BYTES));
        expect(seen).toBe(n);
      }
      await s.close();
    });

    it("reports every flipped byte and every truncation as damage", async () => {
      const s = store();
      const { head, file } = await write(s, key, 70_000);
      const good = readFileSync(file);
      // Positions across the preamble, head, entry blocks, fan, key blocks and trailer.
      const positions = [0, 9, 13, 16, 20, 40, head.blocksAt, head.blocksAt + 100, head.blocksAt + 13_000, head.fanAt + 3, head.fanAt + 200_000, head.keysAt + 1, head.keysAt + 800_000, good.length - 40, good.length - 1];
      for (const at of positions) {
        const bad = Buffer.from(good);
        bad[at] ^= 0x10;
        writeFileSync(file, bad);
        const s2 = new FsStorage(s.root);
        // The full check finds every one.
        const err = await (async () => {
          const h = await readIndexHead(s2, head.key, key, bad.length);
          await verifyIndexFile(s2, h, key, async () => {});
        })().then(() => null, (e: Error & { code?: string }) => e);
        expect(err, `byte ${at}`).not.toBeNull();
        expect(err!.code, `byte ${at}: ${err!.message}`).toBe("corrupt-index");
        // Opening (head and keys only) finds every one in what it reads when sealed.
        if (key && (at < head.blocksAt || at >= head.fanAt) && at < head.trailerAt)
          await expect((async () => readIndexKeys(s2, await readIndexHead(s2, head.key, key, bad.length), key))(), `byte ${at}`).rejects.toMatchObject({ code: "corrupt-index" });
        await s2.close();
      }
      writeFileSync(file, good.subarray(0, good.length - 1));
      await expect(readIndexHead(s, head.key, key, good.length - 1)).rejects.toMatchObject({ code: "corrupt-index" });
    });

    it("opening refuses keys out of order and a fan that does not add up", async () => {
      if (key) return; // sealed: any change fails decryption, tested above
      const s = store();
      const { head, file } = await write(s, null, 70_000);
      const good = readFileSync(file);
      // Two neighbours in one fan bucket (70 000 ids over 65 536 buckets: many hold two), swapped.
      let i = 0;
      for (let p = 0; p < 65536; p++) {
        const lo = good.readUInt32LE(head.fanAt + p * 4);
        if (good.readUInt32LE(head.fanAt + (p + 1) * 4) - lo >= 2) {
          i = lo;
          break;
        }
      }
      const swapped = Buffer.from(good);
      const a = head.keysAt + i * 12;
      swapped.set(good.subarray(a + 12, a + 24), a);
      swapped.set(good.subarray(a, a + 12), a + 12);
      const fanBad = Buffer.from(good);
      fanBad.writeUInt32LE(69_999, head.fanAt + 65536 * 4);
      for (const bad of [swapped, fanBad]) {
        writeFileSync(file, bad);
        const s2 = new FsStorage(s.root);
        const err = await readIndexKeys(s2, head, null).then(() => null, (e: Error & { code?: string }) => e);
        expect(err?.code).toBe("corrupt-index");
        await s2.close();
      }
    });

    it("refuses entries out of order and pack numbers outside the pack table", async () => {
      const s = store();
      const fileId = hexOf(randomBytes(16));
      const e = sortedEntries(10, 2);
      const swapped = Buffer.concat([e.subarray(ENTRY_BYTES, 2 * ENTRY_BYTES), e.subarray(0, ENTRY_BYTES), e.subarray(2 * ENTRY_BYTES)]);
      const parts: Uint8Array[] = [];
      for await (const p of encodeIndexFile({ fileId, key, packs: ["00".repeat(16), "11".repeat(16)], superseded: [], count: 10 }, [swapped], new RunBuilder(10))) parts.push(p);
      await s.put(indexKey(fileId), parts);
      const head = await readIndexHead(s, indexKey(fileId), key, parts.reduce((a, p) => a + p.length, 0));
      await expect(readAll(s, head, key)).rejects.toThrow(/out of order/);

      const id2 = hexOf(randomBytes(16));
      const parts2: Uint8Array[] = [];
      for await (const p of encodeIndexFile({ fileId: id2, key, packs: ["00".repeat(16)], superseded: [], count: 10 }, [e], new RunBuilder(10))) parts2.push(p);
      await s.put(indexKey(id2), parts2);
      const head2 = await readIndexHead(s, indexKey(id2), key, parts2.reduce((a, p) => a + p.length, 0));
      await expect(readAll(s, head2, key)).rejects.toThrow(/pack number 1 of 1/);
    });
  });
}

it("a sealed index file renamed to another file's name does not open", async () => {
  const s = store();
  const key = new Uint8Array(randomBytes(32));
  const { file, head } = await write(s, key, 10);
  const other = path.join(path.dirname(file), `${"cd".repeat(16)}.idx`);
  writeFileSync(other, readFileSync(file));
  await expect(readIndexHead(s, indexKey("cd".repeat(16)), key, head.size)).rejects.toThrow(/does not decrypt/);
});

it("another format version is named as such", async () => {
  const s = store();
  const { file, head } = await write(s, null, 10);
  const b = readFileSync(file);
  b.writeUInt32BE(1, 8);
  writeFileSync(file, b);
  await expect(readIndexHead(new FsStorage(s.root), head.key, null, head.size)).rejects.toThrow(/format version 1; this klio reads version 2/);
});
