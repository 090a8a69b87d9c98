// `npm run bench:compress`: how fast and how well each compression level packs real WAL,
// fflate (what klio uses) beside node:zlib, on segments a pgbench load wrote. Chooses
// WAL_COMPRESSION_LEVEL in src/wal/stored-segment.ts.
import { readdirSync, readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { deflateRawSync } from "node:zlib";
import { deflateSync } from "fflate";
import { startPostgres, binDir } from "../test/harness/postgres.ts";

const pg = await startPostgres({ version: 15, conf: { wal_keep_size: "'1GB'" } });
try {
  const pgbench = path.join(binDir(15), "pgbench");
  const conn = ["-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "postgres"];
  execFileSync(pgbench, ["-i", "-q", "-s", "10", ...conn], { stdio: "ignore" });
  execFileSync(pgbench, ["-n", "-c", "2", "-T", "8", ...conn], { stdio: "ignore" });
  const sql = pg.sql();
  await sql`select pg_switch_wal()`;
  const [{ current }] = await sql`select pg_walfile_name(pg_current_wal_lsn()) as current`;
  const walDir = path.join(pg.dataDir, "pg_wal");
  const names = readdirSync(walDir).filter((n) => /^[0-9A-F]{24}$/.test(n) && n < current).sort().slice(-12);
  const segments = names.map((n) => readFileSync(path.join(walDir, n)));
  const total = segments.reduce((a, s) => a + s.length, 0);
  console.log(`${segments.length} segments of real WAL (pgbench -s 10 load and 8 s of transactions), ${(total / 2 ** 20).toFixed(0)} MB\n`);
  console.log("codec          level   MB/s   stored size");
  const measure = (label: string, level: number, fn: (b: Uint8Array) => Uint8Array) => {
    fn(segments[0]!); // warm up
    const t = performance.now();
    let out = 0;
    for (const s of segments) out += fn(s).length;
    const secs = (performance.now() - t) / 1000;
    console.log(`${label.padEnd(14)} ${String(level).padStart(5)} ${(total / 2 ** 20 / secs).toFixed(0).padStart(6)}   ${((100 * out) / total).toFixed(1)}%`);
  };
  for (const level of [1, 3, 6, 9] as const) measure("fflate", level, (b) => deflateSync(b, { level }));
  for (const level of [1, 6]) measure("node:zlib", level, (b) => deflateRawSync(b, { level }));
} finally {
  await pg.destroy();
}
