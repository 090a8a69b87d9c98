// The measurements behind the repository's compression choice (docs/FORMAT.md, "Chunk
// compression") and the cost of its put() path:
//
// 1. Codecs on a sample of real PostgreSQL 15 data files (pgbench -i -s 4, a 300 000-row
//    table of md5 text, a 200 000-row jsonb event table; VACUUM FREEZE; CHECKPOINT): every
//    non-zero 8 KB page of the relation files, and every file cut into 64 KB pieces (mixed
//    data). For each codec: MB/s, µs per block and stored/plain bytes, best of 3 rounds, on
//    one thread; decompression speed too.
// 2. ChunkWriter.put() on the same pages made unique (a counter in the page LSN field, as
//    every page of a real backup differs), 4 puts in flight as `backup run` issues them, then
//    flush: MB/s and CPU µs per chunk, for each compression, plain and encrypted.
//
//   node --import tsx scripts/bench-repo-codecs.ts [--pages 60000] [--json]
import { readdirSync, readFileSync, statSync, mkdtempSync, rmSync, cpSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import zlib from "node:zlib";
import * as fflate from "fflate";
import { startPostgres, binDir } from "../test/harness/postgres.ts";
import { Lz4Compressor, lz4Decompress } from "../src/repo/lz4.ts";
import { initRepository, openRepository } from "../src/repo/repository.ts";
import type { Compression } from "../src/repo/codec.ts";

const { values: args } = parseArgs({ options: { pages: { type: "string", default: "60000" }, json: { type: "boolean", default: false } } });
const PAGE = 8192;
const say = (s: string) => !args.json && process.stdout.write(s + "\n");

async function sampleData(into: string): Promise<string[]> {
  const pg = await startPostgres({ version: 15 });
  try {
    execFileSync(path.join(binDir(15), "pgbench"), ["-i", "-q", "-s", "4", "-h", pg.host, "-p", String(pg.port), "-U", "postgres", "postgres"], { stdio: "ignore" });
    const sql = pg.sql();
    await sql.unsafe("create table cold as select g as id, md5(g::text) || md5((g*7)::text) as t, now() as ts from generate_series(1,300000) g");
    await sql.unsafe("create table ev (id bigserial primary key, at timestamptz default now(), kind int, payload jsonb)");
    await sql.unsafe("insert into ev (kind, payload) select g % 17, jsonb_build_object('user', g % 1000, 'amount', (g * 37) % 10000, 'note', 'event ' || g) from generate_series(1,200000) g");
    await sql.unsafe("vacuum freeze");
    await sql.unsafe("checkpoint");
    await pg.stop("fast");
    cpSync(path.join(pg.dataDir, "base"), into, { recursive: true });
  } finally {
    await pg.destroy();
  }
  const files: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = path.join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else files.push(p);
    }
  };
  walk(into);
  return files;
}

interface CodecFigure {
  codec: string;
  mbPerS: number;
  usPerBlock: number;
  ratio: number;
}

function measure(codec: string, set: Uint8Array[], f: (p: Uint8Array) => number): CodecFigure {
  let best = Infinity;
  let out = 0;
  for (let r = 0; r < 3; r++) {
    out = 0;
    const t = performance.now();
    for (const p of set) out += f(p);
    best = Math.min(best, performance.now() - t);
  }
  const bytes = set.reduce((n, p) => n + p.length, 0);
  return { codec, mbPerS: bytes / 1e6 / (best / 1000), usPerBlock: (best * 1000) / set.length, ratio: out / bytes };
}

async function main(): Promise<void> {
  const work = mkdtempSync(path.join(os.tmpdir(), "klio-bench-codecs-"));
  try {
    say("building the sample database (PostgreSQL 15)…");
    const files = await sampleData(path.join(work, "base"));
    const pages: Uint8Array[] = [];
    const pieces: Uint8Array[] = [];
    for (const f of files) {
      const b = new Uint8Array(readFileSync(f));
      if (/^\d+(_fsm|_vm)?(\.\d+)?$/.test(path.basename(f)))
        for (let o = 0; o + PAGE <= b.length; o += PAGE) {
          const p = b.subarray(o, o + PAGE);
          if (p.some((x) => x !== 0)) pages.push(p.slice());
        }
      for (let o = 0; o < b.length; o += 65536) pieces.push(b.slice(o, Math.min(b.length, o + 65536)));
    }
    const mb = (set: Uint8Array[]) => (set.reduce((n, p) => n + p.length, 0) / 1e6).toFixed(0);
    const lz4 = new Lz4Compressor();
    const codecs: Record<string, CodecFigure[]> = {};
    for (const [label, set] of [["8 KB pages", pages], ["64 KB mixed", pieces]] as const) {
      say(`\n${label}: ${set.length} blocks, ${mb(set)} MB`);
      const figures = [
        measure("sha256 (for scale)", set, (p) => (createHash("sha256").update(p).digest(), 0)),
        measure("lz4 (src/repo/lz4.ts)", set, (p) => lz4.compress(p)?.length ?? p.length),
        measure("node:zlib deflateRaw level 1", set, (p) => Math.min(p.length, zlib.deflateRawSync(p, { level: 1 }).length)),
        measure("  … window = chunk (klio)", set, (p) => Math.min(p.length, zlib.deflateRawSync(p, { level: 1, windowBits: Math.min(15, Math.max(9, Math.ceil(Math.log2(p.length)))) }).length)),
        measure("node:zlib deflateRaw level 6", set, (p) => Math.min(p.length, zlib.deflateRawSync(p, { level: 6 }).length)),
        measure("fflate deflate level 1", set, (p) => Math.min(p.length, fflate.deflateSync(p, { level: 1 }).length)),
        measure("fflate deflate level 6", set, (p) => Math.min(p.length, fflate.deflateSync(p, { level: 6 }).length)),
      ];
      const lzBlocks = set.map((p) => [lz4.compress(p)?.slice() ?? null, p.length] as const);
      const zBlocks = set.map((p) => zlib.deflateRawSync(p, { level: 1 }));
      const decode = (codec: string, f: () => void): CodecFigure => {
        const t = performance.now();
        f();
        const ms = performance.now() - t;
        return { codec, mbPerS: Number(mb(set)) / (ms / 1000), usPerBlock: (ms * 1000) / set.length, ratio: NaN };
      };
      figures.push(decode("lz4 decompress", () => lzBlocks.forEach(([z, n]) => z && lz4Decompress(z, n))));
      figures.push(decode("node:zlib inflateRaw", () => zBlocks.forEach((z) => zlib.inflateRawSync(z))));
      figures.push(decode("fflate inflate", () => zBlocks.forEach((z) => fflate.inflateSync(z))));
      for (const f of figures) say(`  ${f.codec.padEnd(30)} ${f.mbPerS.toFixed(0).padStart(5)} MB/s ${f.usPerBlock.toFixed(1).padStart(7)} µs/block  ${Number.isNaN(f.ratio) || f.codec.startsWith("sha") ? "" : `stored/plain ${f.ratio.toFixed(3)}`}`);
      codecs[label] = figures;
    }

    const n = Number(args.pages);
    say(`\nput() path: ${n} unique 8 KB pages (${((n * PAGE) / 1e6).toFixed(0)} MB), 4 puts in flight, then flush`);
    const puts: { compression: string; encrypted: boolean; mbPerS: number; cpuUsPerChunk: number; storedMb: number }[] = [];
    for (const compression of ["deflate", "lz4", "none"] as Compression[]) {
      for (const encrypted of [false, true]) {
        const dir = path.join(work, `repo-${compression}-${encrypted}`);
        await initRepository(dir, { compression, ...(encrypted ? { passphrase: "x", scrypt: { N: 1024, r: 8, p: 1 } } : {}) });
        const repo = await openRepository(dir, { passphrase: encrypted ? "x" : undefined });
        const w = repo.writer();
        const page = new Uint8Array(PAGE);
        const c0 = process.cpuUsage();
        const t = performance.now();
        const inflight: Promise<unknown>[] = [];
        for (let i = 0; i < n; i++) {
          page.set(pages[i % pages.length]!);
          new DataView(page.buffer).setUint32(8, i); // pd_lsn: every page differs
          inflight.push(w.put(page));
          if (inflight.length >= 4) await inflight.shift();
        }
        await Promise.all(inflight);
        await w.flush();
        const s = (performance.now() - t) / 1000;
        const cpu = process.cpuUsage(c0);
        await repo.close();
        rmSync(dir, { recursive: true, force: true });
        const r = { compression, encrypted, mbPerS: (n * PAGE) / 1e6 / s, cpuUsPerChunk: (cpu.user + cpu.system) / n, storedMb: w.stats.storedBytes / 1e6 };
        puts.push(r);
        say(`  ${`${compression}${encrypted ? " + encryption" : ""}`.padEnd(24)} ${r.mbPerS.toFixed(0).padStart(5)} MB/s  CPU ${r.cpuUsPerChunk.toFixed(0).padStart(4)} µs/chunk  stored ${r.storedMb.toFixed(0)} MB`);
      }
    }
    if (args.json) process.stdout.write(JSON.stringify({ codecs, puts }, null, 2) + "\n");
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
