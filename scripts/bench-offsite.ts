// `npm run bench:offsite`: how fast `klio offsite sync` copies a repository to S3, against
// a plain minio client upload of the same files (the target: ≥ 0.8× its throughput).
//
// Method: a PostgreSQL 15 database (pgbench -i -s --scale, then pgbench for a few seconds so
// there is WAL), `klio wal stream` and one `klio backup run` into a fresh repository; then the
// receiver stops so the repository holds still. An S3 server on loopback (the npm
// @20minutes/s3rver, started by test/harness/s3.ts; fsync-free, so both sides pay the same).
// In each round, in rotated order:
//   klio   klio offsite sync --repo R --to s3://bench/klio-N --once --concurrency C
//   minio  a Node process that loads the minio client and fPutObjects every file klio sends, C at
//          a time, to bench/minio-N (a process, as klio is: both pay their start-up)
// Ratio = minio's time / klio's (klio's pass also lists the bucket and the repository).
//   npm run bench:offsite -- [--scale 80] [--rounds 3] [--concurrency 4] [--json]
import { readdirSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { startPostgres } from "../test/harness/postgres.ts";
import { startS3 } from "../test/harness/s3.ts";
import type { Cleanup } from "../test/harness/backup.ts";
import { tempDir } from "../test/harness/backup.ts";
import { ROOT } from "../test/harness/klio.ts";
import { offsiteKind } from "../src/offsite/sync.ts";
import { MB, f1, f2, median, pgArgs, resolveKlio, rotate, runToEnd, say, launch, stopChild } from "./bench-common.ts";

const { values } = parseArgs({
  options: { scale: { type: "string", default: "80" }, rounds: { type: "string", default: "3" }, concurrency: { type: "string", default: "4" }, json: { type: "boolean", default: false } },
});
const scale = Number(values.scale);
const rounds = Number(values.rounds);
const concurrency = Number(values.concurrency);
const TARGET = 0.8;

function filesOf(repo: string): { key: string; file: string; size: number }[] {
  const out: { key: string; file: string; size: number }[] = [];
  const walk = (rel: string) => {
    for (const e of readdirSync(path.join(repo, rel), { withFileTypes: true })) {
      const key = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(key);
      else if (offsiteKind(key)) out.push({ key, file: path.join(repo, key), size: statSync(path.join(repo, key)).size });
    }
  };
  walk("");
  return out;
}

async function main(): Promise<number> {
  const cleanups: Cleanup[] = [];
  try {
    const klio = await resolveKlio("auto");
    const s3 = await startS3(cleanups, "bench");
    const pg = await startPostgres({ version: 15, conf: { max_wal_size: "'4GB'" } });
    cleanups.push(() => pg.destroy());
    say(`pgbench -i -s ${scale}`);
    await runToEnd("/usr/lib/postgresql/15/bin/pgbench", ["-i", "-q", "-s", String(scale), ...pgArgs(pg), "postgres"], "pgbench -i");
    const repo = tempDir(cleanups, "klio-bench-offsite-");
    await runToEnd(klio.cmd, [...klio.prefix, "init", "--repo", repo], "klio init");
    const receiver = launch(klio.cmd, [...klio.prefix, "wal", "stream", "--repo", repo, "--cluster", "bench", "--pg", pg.connString(), "--create-slot", "--log-format", "json"]);
    await new Promise((r) => setTimeout(r, 2000));
    await runToEnd("/usr/lib/postgresql/15/bin/pgbench", ["-T", "10", "-c", "2", ...pgArgs(pg), "postgres"], "pgbench");
    await runToEnd(klio.cmd, [...klio.prefix, "backup", "run", "--repo", repo, "--cluster", "bench", "--pg", pg.connString()], "klio backup run");
    await new Promise((r) => setTimeout(r, 3000)); // the compressor finishes its segments
    await stopChild(receiver, "SIGTERM");
    const files = filesOf(repo);
    const total = files.reduce((n, f) => n + f.size, 0);
    say(`repository: ${files.length} objects, ${f1(total / MB)} MB`);

    const port = Number(new URL(s3.endpoint).port);
    const work = tempDir(cleanups, "klio-bench-minio-");
    const listFile = path.join(work, "files.json");
    writeFileSync(listFile, JSON.stringify(files));
    const uploader = path.join(ROOT, "scripts", "minio-upload.mjs");
    const times: Record<"klio" | "minio", number[]> = { klio: [], minio: [] };
    for (let round = 1; round <= rounds; round++) {
      for (const tool of rotate(["klio", "minio"] as const, round - 1)) {
        const t0 = performance.now();
        if (tool === "klio") {
          const r = await runToEnd(klio.cmd, [...klio.prefix, "offsite", "sync", "--repo", repo, "--to", `s3://bench/klio-${round}`, ...s3.flags, "--once", "--concurrency", String(concurrency)], "klio offsite sync");
          if (r.code !== 0) throw new Error(`klio offsite sync failed:\n${r.output}`);
        } else {
          await runToEnd(process.execPath, [uploader, String(port), `minio-${round}`, String(concurrency), listFile], "minio client upload");
        }
        const s = (performance.now() - t0) / 1000;
        times[tool].push(s);
        say(`round ${round}: ${tool.padEnd(5)} ${f2(s)} s (${f1(total / MB / s)} MB/s)`);
      }
    }
    const k = median(times.klio);
    const m = median(times.minio);
    const ratio = m / k;
    const line = `offsite sync of ${files.length} objects, ${f1(total / MB)} MB (median of ${rounds}, concurrency ${concurrency})  minio client ${f2(m)} s (${f1(total / MB / m)} MB/s) | klio ${f2(k)} s (${f1(total / MB / k)} MB/s) | ratio ${f2(ratio)}× (target ≥ ${TARGET}×) ${ratio >= TARGET ? "met" : "MISSED"}`;
    if (values.json) process.stdout.write(JSON.stringify({ objects: files.length, bytes: total, klio: times.klio, minio: times.minio, ratio, met: ratio >= TARGET }) + "\n");
    else process.stdout.write(line + "\n");
    return 0;
  } finally {
    for (const c of cleanups.reverse()) await c();
  }
}

main().then((code) => process.exit(code), (e) => {
  say(`failed: ${e instanceof Error ? e.stack : String(e)}`);
  process.exit(1);
});
