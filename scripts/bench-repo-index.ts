// `npm run bench:repo-index`: what opening a repository with 10 million chunks costs, against
// the targets of issue 3 (open < 3 s, RSS < 300 MB), and what a has() lookup costs.
//
// Method: a fresh repository (plain, then encrypted) whose index files are written directly
// — synthetic, uniformly random chunk ids over --packs packs, split over --files index files
// the way size-tiered consolidation leaves them (one large file and a few smaller ones). No
// packs are written: opening reads only the index. Then a new process opens the repository
// (openRepository: header, key derivation when encrypted, every index file read, checked and
// its keys loaded) and reports the wall time of the open, its RSS afterwards and its peak RSS
// (VmHWM), and the time of 1 million has() lookups of present ids and 1 million of absent ones.
//
//   npm run bench:repo-index -- [--chunks 10000000] [--files 4] [--packs 2500] [--json] [--keep]
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { initRepository, openRepository } from "../src/repo/repository.ts";
import { deriveKeys, deriveKek, unseal } from "../src/repo/crypto.ts";
import { fromBase64, parseHeader } from "../src/repo/header.ts";
import { FsStorage } from "../src/repo/fs-storage.ts";
import { ENTRY_BYTES, encodeIndexFile, hexOf, indexKey } from "../src/repo/index-file.ts";
import { RunBuilder } from "../src/repo/index-run.ts";

const TARGET_OPEN_S = 3;
const TARGET_RSS_MB = 300;
const LOOKUPS = 1_000_000;
const PASSPHRASE = "bench passphrase";
const SELF = fileURLToPath(import.meta.url);

/** A 32-bit integer hash (murmur3's finaliser): ids derived from (i, word) without storing them. */
function mix(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/**
 * The i-th of n ids, in ascending order: the first word falls in the i-th of n equal slices
 * of the 32-bit range (so ids are sorted by construction and uniform), the rest is hash.
 */
function writeId(out: Uint8Array, at: number, i: number, n: number): void {
  const width = 2 ** 32 / n;
  const v = new DataView(out.buffer, out.byteOffset + at, 32);
  v.setUint32(0, Math.floor(i * width) + (mix(i * 8 + 1) % Math.max(1, Math.floor(width) - 1)));
  for (let w = 1; w < 8; w++) v.setUint32(w * 4, mix(i * 8 + w + 1 + 0x9e3779b9 * w));
}

/** An id that is not in the set: same first word as id i, a different second word. */
function writeAbsentId(out: Uint8Array, at: number, i: number, n: number): void {
  writeId(out, at, i, n);
  const v = new DataView(out.buffer, out.byteOffset + at, 32);
  v.setUint32(4, (v.getUint32(4) ^ 0x5a5a5a5a) >>> 0);
}

/** Which index file id i goes to: each file gets a quarter of the share of the one before. */
function fileOf(i: number, files: number): number {
  const total = (1 - 0.25 ** files) / 0.75;
  let r = (mix(i ^ 0x3c6ef372) / 2 ** 32) * total;
  for (let f = 0; f < files - 1; f++) {
    r -= 0.25 ** f;
    if (r < 0) return f;
  }
  return files - 1;
}

async function writeIndex(dir: string, n: number, files: number, nPacks: number, dataKey: Uint8Array | null): Promise<number[]> {
  const storage = new FsStorage(dir);
  const packs = Array.from({ length: nPacks }, (_, p) => hexOf(new Uint8Array(new Uint32Array([mix(p), mix(p + 1), mix(p + 2), mix(p + 3)]).buffer)));
  const counts = new Array<number>(files).fill(0);
  for (let i = 0; i < n; i++) counts[fileOf(i, files)]!++;
  for (let f = 0; f < files; f++) {
    async function* entries(): AsyncGenerator<Uint8Array> {
      const batch = new Uint8Array(4096 * ENTRY_BYTES);
      let fill = 0;
      for (let i = 0; i < n; i++) {
        if (fileOf(i, files) !== f) continue;
        writeId(batch, fill, i, n);
        const v = new DataView(batch.buffer, fill + 32, 16);
        v.setUint32(0, i % nPacks);
        v.setUint32(4, 16 + (i % 4000) * 2500);
        v.setUint32(8, 2000 + (i % 500));
        v.setUint32(12, (1 << 28) + 8192);
        fill += ENTRY_BYTES;
        if (fill === batch.length) {
          yield batch;
          fill = 0;
        }
      }
      if (fill) yield batch.subarray(0, fill);
    }
    const fileId = hexOf(new Uint8Array(new Uint32Array([mix(f + 11), mix(f + 12), mix(f + 13), mix(f + 14)]).buffer));
    await storage.put(indexKey(fileId), encodeIndexFile({ fileId, key: dataKey, packs, superseded: [], count: counts[f]! }, entries(), new RunBuilder(counts[f]!)));
  }
  await storage.close();
  return counts;
}

function vmHwmMb(): number | null {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

interface Measured {
  openSeconds: number;
  rssMb: number;
  peakRssMb: number | null;
  baselineRssMb: number;
  hasPresentNs: number;
  hasAbsentNs: number;
}

/** Runs in a fresh process: open, then lookups. */
async function measure(dir: string, n: number, encrypted: boolean): Promise<void> {
  const baselineRssMb = process.memoryUsage().rss / 2 ** 20;
  const t0 = performance.now();
  const repo = await openRepository(dir, { passphrase: encrypted ? PASSPHRASE : undefined });
  const openSeconds = (performance.now() - t0) / 1000;
  const rssMb = process.memoryUsage().rss / 2 ** 20;
  const peakRssMb = vmHwmMb();
  const id = new Uint8Array(32);
  let found = 0;
  let t = performance.now();
  for (let k = 0; k < LOOKUPS; k++) {
    writeId(id, 0, mix(k) % n, n);
    if (repo.has(id)) found++;
  }
  const hasPresentNs = ((performance.now() - t) * 1e6) / LOOKUPS;
  if (found !== LOOKUPS) throw new Error(`has() found ${found} of ${LOOKUPS} present ids`);
  let wrong = 0;
  t = performance.now();
  for (let k = 0; k < LOOKUPS; k++) {
    writeAbsentId(id, 0, mix(k + 7) % n, n);
    if (repo.has(id)) wrong++;
  }
  const hasAbsentNs = ((performance.now() - t) * 1e6) / LOOKUPS;
  if (wrong !== 0) throw new Error(`has() found ${wrong} absent ids`);
  await repo.close();
  const out: Measured = { openSeconds, rssMb, peakRssMb, baselineRssMb, hasPresentNs, hasAbsentNs };
  process.stdout.write(JSON.stringify(out) + "\n");
}

function runChild(dir: string, n: number, encrypted: boolean): Promise<Measured> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", SELF, "--measure", dir, "--chunks", String(n), ...(encrypted ? ["--encrypted"] : [])], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (d) => (out += d));
    child.on("close", (code) => (code === 0 ? resolve(JSON.parse(out.trim().split("\n").at(-1)!)) : reject(new Error(`the measuring process exited ${code}: ${out}`))));
  });
}

async function main(): Promise<void> {
  const { values: a } = parseArgs({
    options: {
      chunks: { type: "string", default: "10000000" },
      files: { type: "string", default: "4" },
      packs: { type: "string", default: "2500" },
      measure: { type: "string" },
      encrypted: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      keep: { type: "boolean", default: false },
    },
  });
  const n = Number(a.chunks);
  const files = Number(a.files);
  const nPacks = Number(a.packs);
  if (!Number.isInteger(n) || n < 1000 || n > 2 ** 31) throw new Error("--chunks must be an integer from 1000 to 2^31");
  if (!Number.isInteger(files) || files < 1 || files > 32) throw new Error("--files must be 1 to 32");
  if (!Number.isInteger(nPacks) || nPacks < 1 || nPacks > 1_000_000) throw new Error("--packs must be 1 to 1000000");
  if (a.measure) return measure(a.measure, n, a.encrypted);

  const say = (s: string) => !a.json && process.stdout.write(s + "\n");
  const results: Record<string, Measured & { indexBytes: number; files: number[] }> = {};
  for (const encrypted of [false, true]) {
    const label = encrypted ? "encrypted" : "plain";
    const dir = mkdtempSync(path.join(os.tmpdir(), `klio-bench-index-${label}-`));
    try {
      await initRepository(dir, encrypted ? { passphrase: PASSPHRASE } : {});
      let dataKey: Uint8Array | null = null;
      if (encrypted) {
        const h = parseHeader(readFileSync(path.join(dir, "klio-repository.json")), dir);
        const e = h.encryption!;
        const kek = await deriveKek(PASSPHRASE, { N: e.kdf.N, r: e.kdf.r, p: e.kdf.p, salt: fromBase64(e.kdf.salt)! });
        const master = unseal(kek, fromBase64(e.wrappedKey)!, new TextEncoder().encode(`klio master key ${h.id}`))!;
        dataKey = deriveKeys(master).data;
      }
      say(`${label}: writing ${n.toLocaleString("en")} synthetic index entries over ${files} index files…`);
      const t = performance.now();
      const counts = await writeIndex(dir, n, files, nPacks, dataKey);
      const storage = new FsStorage(dir);
      const indexBytes = (await storage.list("index/")).reduce((s, e) => s + e.size, 0);
      await storage.close();
      say(`  written in ${((performance.now() - t) / 1000).toFixed(1)} s: ${(indexBytes / 2 ** 20).toFixed(0)} MB, files of ${counts.map((c) => c.toLocaleString("en")).join(" / ")} entries`);
      const m = await runChild(dir, n, encrypted);
      results[label] = { ...m, indexBytes, files: counts };
      const ok = m.openSeconds < TARGET_OPEN_S && (m.peakRssMb ?? m.rssMb) < TARGET_RSS_MB;
      say(
        `  open ${m.openSeconds.toFixed(2)} s (target < ${TARGET_OPEN_S} s), RSS after open ${m.rssMb.toFixed(0)} MB, peak ${m.peakRssMb?.toFixed(0) ?? "n/a"} MB ` +
          `(target < ${TARGET_RSS_MB} MB; ${m.baselineRssMb.toFixed(0)} MB before open)  ${ok ? "OK" : "MISSED"}`,
      );
      say(`  has(): ${m.hasPresentNs.toFixed(0)} ns per present id, ${m.hasAbsentNs.toFixed(0)} ns per absent id (${LOOKUPS.toLocaleString("en")} each)`);
    } finally {
      if (a.keep) say(`  kept ${dir}`);
      else rmSync(dir, { recursive: true, force: true });
    }
  }
  if (a.json) process.stdout.write(JSON.stringify({ chunks: n, targets: { openSeconds: TARGET_OPEN_S, rssMb: TARGET_RSS_MB }, results }, null, 2) + "\n");
}

await main();
