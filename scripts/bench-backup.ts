// `npm run bench:backup`: klio's base backups and restores against PostgreSQL's own tools and
// restic, in one run on the same database, with ratios against the targets of issue 3:
//
//   backup time   pg_basebackup -Ft time / klio backup run time ≥ 0.8
//   restore time  klio restore vs. extracting pg_basebackup's tar (recorded, no target)
//   dedup         growth of a second backup after 1 % of pgbench_accounts rows are updated at
//                 random and 1 % appended: with compression ≤ 1.5× restic's (repo v2, default
//                 compression); without compression ≤ 1.2× the bytes of the changed 8 KB pages
//   memory        peak RSS of backup run and restore < 200 MB (stated for a 5 GB database:
//                 `--gb 5`)
//
// Method (one PostgreSQL 15 server from test/harness/postgres.ts; fsync on; autovacuum off so
// that nothing but the workload changes pages between the two backups):
//
// 1. Workload of about --gb GB: a large table of random md5 text that is never touched again
//    (~40 %), `pgbench -i -s 20×gb` (~30 %), an append-only event table with a primary key
//    (~30 %). VACUUM FREEZE (a cold table has its hint bits set and is frozen; without it the
//    first reader after the first backup would rewrite every page), CHECKPOINT.
// 2. Backup time, --rounds times (order rotated): `pg_basebackup -Ft -X none -c fast -D DIR`
//    (local disk, no compression, fsync'd as it does by default) and `klio backup run` into a
//    fresh repository (`klio init`, with `klio wal stream --create-slot` running for it: the
//    backup waits for its WAL). Wall clock from spawn to exit; medians. The first round also
//    backs up into a repository made with `klio init --compression none`.
// 3. Restore time, --rounds times: `klio restore DEST` of round 1's backup vs. `tar xf` of
//    round 1's base.tar (and tablespace tars). klio fsyncs what it writes and tar does not:
//    fsyncing the extracted files afterwards (`sync FILE…`) is timed on its own, beside.
// 4. Dedup. Plain copy A (`pg_basebackup -Fp -X none`), backed up by restic into a repository
//    with default compression and one with `--compression off`. Then the change: 1 % of
//    pgbench_accounts rows updated at random, 1 % rows appended to it and to the event table;
//    CHECKPOINT. Second `klio backup run` into both klio repositories; plain copy B, backed up
//    by restic into both of its repositories. Growth = apparent bytes of the repository after
//    − before (klio's without wal/). Changed pages = every relation file of B compared with
//    A 8 KB page by page: pages that differ or are new.
// 5. Memory: peak RSS (/usr/bin/time's maximum resident set size, or VmHWM polled from
//    /proc/PID/status where /usr/bin/time is missing) of every backup run and restore.
//
// klio is dist/klio (rebuilt first if stale), the sources with --klio src, or an executable
// given by path (e.g. one built with scripts/build.mjs --out). Exits 0 when a target is missed
// (it is a measurement; MISSED is printed), 1 when a run fails. Usage:
//   npm run bench:backup -- [--gb 1] [--rounds 3] [--klio auto|dist|src|PATH] [--json] [--keep]
// The environment can set the same: KLIO_BENCH_GB, KLIO_BENCH_ROUNDS, KLIO_BENCH_KLIO.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, lstatSync, openSync, readSync, closeSync } from "node:fs";
import path from "node:path";
import os from "node:os";
import process from "node:process";
import { parseArgs } from "node:util";
import { startPostgres, binDir, pgTempDir, type PgServer } from "../test/harness/postgres.ts";
import { MB, say, killChildren, cleanUpOnInterrupt, launch, runToEnd, stopChild, tail, resolveKlio, sqlOf, sqlValue, pgArgs, loadAverage, median, f0, f1, f2, type Exit, type KlioCommand, type Running } from "./bench-common.ts";

const PAGE = 8192;
const PG_BIN = binDir(15);
const TIME_BIN = "/usr/bin/time";
const TARGET_BACKUP = 0.8;
const TARGET_DEDUP_COMPRESSED = 1.5;
const TARGET_DEDUP_RAW = 1.2;
const TARGET_RSS_MB = 200;
const CLUSTER = "bench";
const RESTIC_PASSWORD = "klio-bench";

// ---------------------------------------------------------------- options

interface Options {
  gb: number;
  rounds: number;
  klio: string;
  json: boolean;
  keep: boolean;
}

function parseOptions(): Options {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        gb: { type: "string" },
        rounds: { type: "string" },
        klio: { type: "string" },
        json: { type: "boolean" },
        keep: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    fail(`${(e as Error).message} (a value that starts with "-" needs --flag=value)`);
  }
  const { values } = parsed;
  if (values.help) {
    process.stdout.write("usage: npm run bench:backup -- [--gb 1] [--rounds 3] [--klio auto|dist|src|PATH] [--json] [--keep]\n");
    process.exit(0);
  }
  const env = process.env;
  const num = (name: string, flag: string | undefined, envName: string, dflt: number, min: number, max: number): number => {
    const text = flag ?? env[envName];
    if (text === undefined || text === "") return dflt;
    const n = Number(text);
    if (!Number.isFinite(n) || n < min || n > max) fail(`--${name} must be a number from ${min} to ${max}, got "${text}"`);
    return n;
  };
  const klio = values.klio ?? env.KLIO_BENCH_KLIO ?? "auto";
  if (!["auto", "dist", "src"].includes(klio) && !existsSync(klio)) fail(`--klio must be auto, dist, src or the path of a klio executable, got "${klio}"`);
  return {
    gb: num("gb", values.gb, "KLIO_BENCH_GB", 1, 0.05, 100),
    rounds: Math.round(num("rounds", values.rounds, "KLIO_BENCH_ROUNDS", 3, 1, 20)),
    klio,
    json: Boolean(values.json),
    keep: Boolean(values.keep),
  };
}

function fail(message: string): never {
  process.stderr.write(`bench-backup: ${message}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------- server, workload

interface Workload {
  scale: number;
  accounts: number;
  coldRows: number;
  eventRows: number;
  /** Sizes with indexes (pg_total_relation_size), bytes. */
  coldBytes: number;
  pgbenchBytes: number;
  eventBytes: number;
  databaseBytes: number;
  seconds: number;
}

// About 196 bytes per row of the cold table (172 of heap, the rest its primary key) and 114
// per row of the event table; printed as measured afterwards.
const COLD_ROW_BYTES = 196;
const EVENT_ROW_BYTES = 114;

async function createWorkload(pg: PgServer, gb: number): Promise<Workload> {
  const t0 = performance.now();
  const total = gb * 1024 * MB;
  const scale = Math.max(1, Math.round(20 * gb));
  const coldRows = Math.round((0.4 * total) / COLD_ROW_BYTES);
  const eventRows = Math.round((0.3 * total) / EVENT_ROW_BYTES);
  const sql = sqlOf(pg);
  say(`workload: cold table of ${coldRows} random md5 rows, pgbench -i -s ${scale}, event table of ${eventRows} rows`);
  await sql.unsafe("create table cold_md5 (id bigint primary key, payload text not null)");
  await sql.unsafe(
    `insert into cold_md5 select g, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text)
       from generate_series(1, ${coldRows}) g`,
  );
  await runToEnd(path.join(PG_BIN, "pgbench"), ["-i", "-q", "-s", String(scale), ...pgArgs(pg), "postgres"], "pgbench -i");
  await sql.unsafe(
    "create table events (id bigint generated always as identity primary key, at timestamptz not null default now(), kind int not null, payload text not null)",
  );
  await appendEvents(pg, eventRows);
  say("VACUUM FREEZE ANALYZE, CHECKPOINT");
  await sql.unsafe("vacuum (freeze, analyze)");
  await sql.unsafe("checkpoint");
  const size = async (q: string) => Number(await sqlValue(pg, q));
  return {
    scale, accounts: scale * 100_000, coldRows, eventRows,
    coldBytes: await size("select pg_total_relation_size('cold_md5')"),
    pgbenchBytes: await size("select sum(pg_total_relation_size(c))::bigint from unnest(array['pgbench_accounts','pgbench_branches','pgbench_tellers','pgbench_history']::regclass[]) c"),
    eventBytes: await size("select pg_total_relation_size('events')"),
    databaseBytes: await size("select sum(pg_database_size(datname))::bigint from pg_database"),
    seconds: (performance.now() - t0) / 1000,
  };
}

async function appendEvents(pg: PgServer, rows: number): Promise<void> {
  // Log-like rows: a kind, a hash, a number; compressible about 2×.
  await sqlOf(pg).unsafe(
    `insert into events (kind, payload)
       select (g % 17), 'event ' || md5(g::text || clock_timestamp()::text) || ' value=' || (random() * 1e6)::int
       from generate_series(1, ${rows}) g`,
  );
}

/** 1 % of pgbench_accounts rows updated at random, 1 % appended to it and to the event table. */
async function changeWorkload(pg: PgServer, w: Workload): Promise<{ updated: number; appendedAccounts: number; appendedEvents: number }> {
  const sql = sqlOf(pg);
  const n = w.accounts;
  const k = Math.max(1, Math.floor(n / 100));
  const updated = Number((await sql.unsafe(
    `update pgbench_accounts set abalance = abalance + 1
       where aid in (select (random() * ${n - 1})::int + 1 from generate_series(1, ${k}))`,
  )).count);
  await sql.unsafe(
    `insert into pgbench_accounts (aid, bid, abalance, filler)
       select ${n} + g, (g % ${w.scale}) + 1, 0, '' from generate_series(1, ${k}) g`,
  );
  const events = Math.max(1, Math.floor(w.eventRows / 100));
  await appendEvents(pg, events);
  await sql.unsafe("checkpoint");
  return { updated, appendedAccounts: k, appendedEvents: events };
}

// ---------------------------------------------------------------- klio repositories

interface KlioRepo {
  dir: string;
  slot: string;
  compression: "default" | "none";
  receiver: Running;
}

async function klioRun(klio: KlioCommand, args: string[], what: string, rssFile?: string, onLine?: (line: string, seconds: number) => void): Promise<Exit> {
  return runToEnd(klio.cmd, [...klio.prefix, ...args], what, { measureRss: rssFile, onLine });
}

/** `klio init` (with --compression none for "none"), then a receiver streaming into it. */
async function openKlioRepo(pg: PgServer, klio: KlioCommand, dir: string, slot: string, compression: KlioRepo["compression"]): Promise<KlioRepo> {
  await klioRun(klio, ["init", "--repo", dir, ...(compression === "none" ? ["--compression", "none"] : [])], `klio init${compression === "none" ? " --compression none" : ""}`);
  let streaming = false;
  const receiver = launch(klio.cmd, [
    ...klio.prefix, "wal", "stream", "--repo", dir, "--cluster", CLUSTER, "--pg", pg.connString(), "--slot", slot, "--create-slot", "--log-format", "json",
  ], { onLine: (line) => void (line.includes('"wal.streaming"') && (streaming = true)) });
  const deadline = Date.now() + 60_000;
  while (!streaming) {
    if (receiver.child.exitCode !== null || receiver.child.signalCode !== null) throw new Error(`klio wal stream for ${dir} exited before streaming:\n${tail(receiver.output())}`);
    if (Date.now() > deadline) throw new Error(`klio wal stream for ${dir} did not log wal.streaming within 60 s:\n${tail(receiver.output())}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { dir, slot, compression, receiver };
}

async function closeKlioRepo(pg: PgServer, repo: KlioRepo, remove: boolean): Promise<void> {
  const exit = await stopChild(repo.receiver, "SIGTERM");
  if (exit.code !== 0) say(`klio wal stream for ${repo.dir} exited ${exit.code ?? exit.signal}:\n${tail(exit.output, 10)}`);
  await sqlOf(pg).unsafe(`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = '${repo.slot}'`);
  if (remove) rmSync(repo.dir, { recursive: true, force: true });
}

interface BackupRun {
  seconds: number;
  rss: number | null;
  /** What klio says about the backup (--json), if it printed it. */
  stats: Record<string, unknown> | null;
  /** Seconds from spawn to its log lines backup.started (checkpoint done) and backup.copied (all data stored). */
  startedAt: number | null;
  copiedAt: number | null;
}

async function klioBackup(pg: PgServer, klio: KlioCommand, repo: KlioRepo, rssFile: string): Promise<BackupRun> {
  let startedAt: number | null = null;
  let copiedAt: number | null = null;
  const r = await klioRun(klio, ["backup", "run", "--repo", repo.dir, "--cluster", CLUSTER, "--pg", pg.connString(), "--json"], `klio backup run (${repo.dir})`, rssFile, (line, at) => {
    if (startedAt === null && line.includes("backup.started")) startedAt = at;
    if (copiedAt === null && line.includes("backup.copied")) copiedAt = at;
  });
  let stats: Record<string, unknown> | null = null;
  try {
    stats = (JSON.parse(r.stdout) as { stats?: Record<string, unknown> }).stats ?? null;
  } catch {
    // not JSON: the figures below are measured anyway
  }
  return { seconds: r.seconds, rss: r.rss, stats, startedAt, copiedAt };
}

/** Where a backup's time goes, from its log lines. */
interface Phases {
  /** Spawn until BASE_BACKUP has started: start-up, connection, the checkpoint. */
  start: number;
  /** Until every file is chunked and stored. */
  data: number;
  /** Until exit: waiting for the WAL up to the end LSN, recording the backup. */
  finish: number;
}

function phasesOf(b: BackupRun): Phases | null {
  if (b.startedAt === null || b.copiedAt === null) return null;
  return { start: b.startedAt, data: b.copiedAt - b.startedAt, finish: b.seconds - b.copiedAt };
}

function phasesText(p: Phases | null): string {
  return p === null ? "phases not logged" : `start ${f1(p.start)} s, data ${f1(p.data)} s, WAL wait and finish ${f1(p.finish)} s`;
}

/**
 * Before every timed run: `sync`, then wait (up to 60 s) until the kernel has written back
 * nearly all dirty pages. Otherwise the run pays for the writes of whatever came before it
 * (the workload, the other tool's output) — and the tool that writes the most pays the most:
 * in early runs of this bench pg_basebackup took 3.2–7.1 s for the same 1 GB.
 */
async function quietDisk(): Promise<void> {
  execFileSync("sync");
  const dirtyKb = () => {
    const m = /^Dirty:\s+(\d+) kB$/m.exec(readFileSync("/proc/meminfo", "utf8"));
    const w = /^Writeback:\s+(\d+) kB$/m.exec(readFileSync("/proc/meminfo", "utf8"));
    return Number(m?.[1] ?? 0) + Number(w?.[1] ?? 0);
  };
  for (const deadline = Date.now() + 60_000; dirtyKb() > 16 * 1024 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 200));
  await new Promise((r) => setTimeout(r, 1000));
}

async function pgBasebackupTar(pg: PgServer, dir: string): Promise<number> {
  const r = await runToEnd(path.join(PG_BIN, "pg_basebackup"), ["-Ft", "-X", "none", "-c", "fast", "-D", dir, ...pgArgs(pg)], "pg_basebackup -Ft");
  return r.seconds;
}

async function pgBasebackupPlain(pg: PgServer, dir: string): Promise<void> {
  await runToEnd(path.join(PG_BIN, "pg_basebackup"), ["-Fp", "-X", "none", "-c", "fast", "-D", dir, ...pgArgs(pg)], "pg_basebackup -Fp");
}

// ---------------------------------------------------------------- restic

interface ResticRepo {
  dir: string;
  compression: "auto" | "off";
}

function resticVersion(): string | null {
  try {
    return execFileSync("restic", ["version"], { stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
  } catch {
    return null;
  }
}

async function restic(repo: ResticRepo, args: string[], cache: string): Promise<Exit> {
  return runToEnd("restic", ["-r", repo.dir, "--cache-dir", cache, ...args], `restic ${args[0]} (${repo.dir})`, { env: { RESTIC_PASSWORD } });
}

async function resticBackup(repo: ResticRepo, dir: string, cache: string): Promise<number> {
  const r = await restic(repo, ["backup", "--quiet", "--host", "bench", "--compression", repo.compression, dir], cache);
  return r.seconds;
}

// ---------------------------------------------------------------- measuring files

/** Apparent bytes of every file under dir (du -sb), skipping the top-level names in `skip`. */
function treeBytes(dir: string, skip: string[] = []): number {
  let total = 0;
  const walk = (d: string, top: boolean) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (top && skip.includes(e.name)) continue;
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p, false);
      else if (e.isFile()) total += lstatSync(p).size;
    }
  };
  walk(dir, true);
  return total;
}

/** Relation files (main fork segments, fsm, vm, init) — what PostgreSQL writes page by page. */
const RELATION_FILE = /^\d+(_(fsm|vm|init))?(\.\d+)?$/;

interface PageDiff {
  relationPages: number;
  changedPages: number;
  newPages: number;
  otherFiles: number;
  otherChangedFiles: number;
  otherChangedBytes: number;
}

/**
 * Compares plain copy `after` with `before`: relation files 8 KB page by page (a page that
 * differs or is past the old end counts), other files whole (bytes of those that differ).
 */
function comparePages(before: string, after: string): PageDiff {
  const d: PageDiff = { relationPages: 0, changedPages: 0, newPages: 0, otherFiles: 0, otherChangedFiles: 0, otherChangedBytes: 0 };
  const block = 128 * PAGE;
  const a = new Uint8Array(block);
  const b = new Uint8Array(block);
  const walk = (rel: string) => {
    for (const e of readdirSync(path.join(after, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) {
        walk(r);
        continue;
      }
      if (!e.isFile()) continue;
      const isRelation = RELATION_FILE.test(e.name) && /^(base|global|pg_tblspc)\//.test(r);
      const fb = openSync(path.join(after, r), "r");
      const beforeFile = path.join(before, r);
      const fa = existsSync(beforeFile) ? openSync(beforeFile, "r") : null;
      let differs = fa === null;
      let size = 0;
      try {
        for (let pos = 0; ; pos += block) {
          const nb = readSync(fb, b, 0, block, pos);
          if (nb === 0) break;
          size += nb;
          const na = fa === null ? 0 : readSync(fa, a, 0, block, pos);
          if (na !== nb) differs = true;
          if (!isRelation) {
            if (!differs && Buffer.compare(a.subarray(0, na), b.subarray(0, nb)) !== 0) differs = true;
            continue;
          }
          for (let off = 0; off < nb; off += PAGE) {
            const end = Math.min(off + PAGE, nb);
            d.relationPages++;
            if (off >= na) d.newPages++;
            else if (Buffer.compare(a.subarray(off, Math.min(end, na)), b.subarray(off, end)) !== 0) d.changedPages++;
          }
        }
        if (fa !== null && !differs && readSync(fa, a, 0, 1, size) !== 0) differs = true; // it shrank
      } finally {
        closeSync(fb);
        if (fa !== null) closeSync(fa);
      }
      if (!isRelation) {
        d.otherFiles++;
        if (differs) {
          d.otherChangedFiles++;
          d.otherChangedBytes += size;
        }
      }
    }
  };
  walk("");
  return d;
}

/** Files and bytes under base/ and global/: a check that a restore wrote what the tar holds. */
function relationSummary(dataDir: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  for (const top of ["base", "global"]) {
    const walk = (d: string) => {
      if (!existsSync(d)) return;
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.isFile() && RELATION_FILE.test(e.name)) {
          files++;
          bytes += lstatSync(p).size;
        }
      }
    };
    walk(path.join(dataDir, top));
  }
  return { files, bytes };
}

// ---------------------------------------------------------------- restore

async function extractTars(tarDir: string, dest: string): Promise<{ seconds: number; fsyncSeconds: number }> {
  const tars = readdirSync(tarDir).filter((n) => n.endsWith(".tar"));
  if (!tars.includes("base.tar")) throw new Error(`no base.tar in ${tarDir}`);
  let seconds = 0;
  const dirs: string[] = [];
  for (const t of tars) {
    const into = t === "base.tar" ? dest : `${dest}-tablespace-${t.replace(/\.tar$/, "")}`;
    mkdirSync(into, { recursive: true });
    dirs.push(into);
    seconds += (await runToEnd("tar", ["xf", path.join(tarDir, t), "-C", into], `tar xf ${t}`)).seconds;
  }
  // coreutils `sync FILE…` fsyncs each file; `find -exec … +` batches them.
  let fsyncSeconds = 0;
  for (const d of dirs) fsyncSeconds += (await runToEnd("find", [d, "-type", "f", "-exec", "sync", "{}", "+"], "sync of the extracted files")).seconds;
  return { seconds, fsyncSeconds };
}

// ---------------------------------------------------------------- report

const mb = (bytes: number) => `${f1(bytes / MB)} MB`;
const rssText = (bytes: number | null) => (bytes === null ? "not measured" : `${f0(bytes / MB)} MB`);
const verdict = (met: boolean) => (met ? "met" : "MISSED");

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const opts = parseOptions();
  const klio = await resolveKlio(opts.klio);
  const work = pgTempDir("klio-bench-backup-");
  const cache = path.join(work, "restic-cache");
  let pg: PgServer | undefined;
  const cleanup = async () => {
    killChildren();
    await pg?.destroy().catch(() => {});
    pg = undefined;
    if (!opts.keep) rmSync(work, { recursive: true, force: true });
  };
  cleanUpOnInterrupt("stopping the server and removing " + work, cleanup);

  const started = performance.now();
  const loadBefore = loadAverage();
  const pgVersion = execFileSync(path.join(PG_BIN, "pg_basebackup"), ["--version"]).toString().trim();
  const resticVer = resticVersion();
  const rssMethod = existsSync(TIME_BIN) ? "/usr/bin/time maximum resident set size" : "VmHWM polled every 50 ms";
  say(`klio: ${klio.label}`);
  say(`${pgVersion}; ${resticVer ?? "restic not installed (apt-get install restic): its comparison is skipped"}; work directory ${work}${opts.keep ? " (kept)" : ""}`);
  const result: Record<string, unknown> = {
    klio: klio.label, pgBasebackup: pgVersion, restic: resticVer, node: process.version,
    options: { gb: opts.gb, rounds: opts.rounds }, rssMethod, units: "MB = 1048576 bytes",
  };
  const lines: string[] = [];
  const notes: string[] = [];
  const targets: Record<string, boolean | null> = {};
  const rssOf: { what: string; rss: number | null }[] = [];
  const rssFile = path.join(work, "rss.txt");

  try {
    say("starting PostgreSQL 15");
    pg = await startPostgres({
      version: 15, baseDir: path.join(work, "pg"),
      conf: {
        max_wal_size: "'8GB'", checkpoint_timeout: "'1h'", shared_buffers: "'128MB'", autovacuum: "off",
        max_replication_slots: opts.rounds + 6, max_wal_senders: opts.rounds + 8,
      },
    });
    const w = await createWorkload(pg, opts.gb);
    say(`database ${mb(w.databaseBytes)} (cold table ${mb(w.coldBytes)}, pgbench ${mb(w.pgbenchBytes)}, events ${mb(w.eventBytes)}), made in ${f0(w.seconds)} s`);
    result.workload = w;
    lines.push(
      `database          ${mb(w.databaseBytes)}: cold md5 table ${mb(w.coldBytes)}, pgbench -s ${w.scale} ${mb(w.pgbenchBytes)}, append-only events ${mb(w.eventBytes)}`,
    );

    // ---- 2. backup time
    const repos: { compressed?: KlioRepo; raw?: KlioRepo } = {};
    const tarDir1 = path.join(work, "tar-1");
    const backupRuns: { round: number; tool: string; seconds: number; rss: number | null; phases?: Phases | null }[] = [];
    let firstKlioStats: Record<string, unknown> | null = null;
    for (let round = 1; round <= opts.rounds; round++) {
      const repo = await openKlioRepo(pg, klio, path.join(work, round === 1 ? "klio-compressed" : `klio-round-${round}`), `klio_r${round}`, "default");
      const tarDir = path.join(work, `tar-${round}`);
      const order = round % 2 === 1 ? ["pg_basebackup", "klio"] : ["klio", "pg_basebackup"];
      for (const tool of order) {
        await quietDisk();
        if (tool === "klio") {
          const b = await klioBackup(pg, klio, repo, rssFile);
          backupRuns.push({ round, tool, seconds: b.seconds, rss: b.rss, phases: phasesOf(b) });
          rssOf.push({ what: `backup run (round ${round})`, rss: b.rss });
          if (round === 1) firstKlioStats = b.stats;
          say(`round ${round}: klio backup run       ${f1(b.seconds).padStart(6)} s  (${phasesText(phasesOf(b))}; peak RSS ${rssText(b.rss)})`);
        } else {
          const s = await pgBasebackupTar(pg, tarDir);
          backupRuns.push({ round, tool, seconds: s, rss: null });
          say(`round ${round}: pg_basebackup -Ft      ${f1(s).padStart(6)} s`);
        }
      }
      if (round === 1) repos.compressed = repo;
      else {
        await closeKlioRepo(pg, repo, true);
        rmSync(tarDir, { recursive: true, force: true });
      }
    }
    // The uncompressed repository's first backup, timed once for reference.
    let rawFirst: BackupRun | null = null;
    try {
      repos.raw = await openKlioRepo(pg, klio, path.join(work, "klio-none"), "klio_none", "none");
    } catch (e) {
      const msg = (e as Error).message;
      notes.push(`klio init --compression none failed, so there is no uncompressed klio repository: ${tail(msg, 3).replace(/\n/g, " | ")}`);
      say(`klio init --compression none failed; measuring without it:\n${tail(msg, 5)}`);
    }
    if (repos.raw) {
      await quietDisk();
      rawFirst = await klioBackup(pg, klio, repos.raw, rssFile);
      rssOf.push({ what: "backup run (no compression)", rss: rawFirst.rss });
      say(`klio backup run (--compression none repository): ${f1(rawFirst.seconds)} s (peak RSS ${rssText(rawFirst.rss)})`);
    }
    const med = (tool: string) => median(backupRuns.filter((r) => r.tool === tool).map((r) => r.seconds));
    const bbSeconds = med("pg_basebackup");
    const klioSeconds = med("klio");
    const backupRatio = bbSeconds / klioSeconds;
    targets.backupTime = backupRatio >= TARGET_BACKUP;
    const tarBytes = treeBytes(tarDir1);
    const klioPhases = backupRuns.map((r) => r.phases).filter((p): p is Phases => p !== undefined && p !== null);
    const firstStored = treeBytes(repos.compressed!.dir, ["wal"]);
    const firstStoredRaw = repos.raw ? treeBytes(repos.raw.dir, ["wal"]) : null;
    result.backup = {
      runs: backupRuns, medianSeconds: { pg_basebackup: bbSeconds, klio: klioSeconds }, klioNoCompressionSeconds: rawFirst?.seconds ?? null,
      ratio: backupRatio, target: TARGET_BACKUP, met: targets.backupTime,
      tarBytes, klioStoredBytes: firstStored, klioStoredBytesNoCompression: firstStoredRaw, klioStats: firstKlioStats,
    };
    lines.push(
      `backup time (median of ${opts.rounds})  pg_basebackup -Ft ${f1(bbSeconds)} s (${f0(tarBytes / MB / bbSeconds)} MB/s) | klio ${f1(klioSeconds)} s (${f0(tarBytes / MB / klioSeconds)} MB/s)` +
        ` | ratio ${f2(backupRatio)}× (target ≥ ${TARGET_BACKUP}×) ${verdict(targets.backupTime)}`,
      `  klio's time      ${klioPhases.length ? phasesText({ start: median(klioPhases.map((p) => p.start)), data: median(klioPhases.map((p) => p.data)), finish: median(klioPhases.map((p) => p.finish)) }) : "phases not logged"} (medians)`,
      `  first backup stored  tar ${mb(tarBytes)} | klio ${mb(firstStored)}` +
        (firstStoredRaw === null ? "" : ` | klio --compression none ${mb(firstStoredRaw)} in ${f1(rawFirst!.seconds)} s`),
    );

    // ---- 3. restore time
    const restoreRuns: { round: number; tool: string; seconds: number; fsyncSeconds?: number; rss?: number | null }[] = [];
    let check: string | null = null;
    for (let round = 1; round <= opts.rounds; round++) {
      const klioDest = path.join(work, `restore-klio-${round}`, "data");
      const tarDest = path.join(work, `restore-tar-${round}`, "data");
      const order = round % 2 === 1 ? ["tar", "klio"] : ["klio", "tar"];
      for (const tool of order) {
        await quietDisk();
        if (tool === "klio") {
          const r = await klioRun(klio, ["restore", klioDest, "--repo", repos.compressed!.dir, "--cluster", CLUSTER], "klio restore", rssFile);
          restoreRuns.push({ round, tool, seconds: r.seconds, rss: r.rss });
          rssOf.push({ what: `restore (round ${round})`, rss: r.rss });
          say(`round ${round}: klio restore           ${f1(r.seconds).padStart(6)} s  (peak RSS ${rssText(r.rss)})`);
        } else {
          const t = await extractTars(tarDir1, tarDest);
          restoreRuns.push({ round, tool, seconds: t.seconds, fsyncSeconds: t.fsyncSeconds });
          say(`round ${round}: tar xf                 ${f1(t.seconds).padStart(6)} s  (then fsync of its files ${f1(t.fsyncSeconds)} s)`);
        }
      }
      if (round === 1) {
        // Both backups were taken of the same unchanged database: the relation files match.
        const k = relationSummary(klioDest);
        const t = relationSummary(tarDest);
        check = k.files === t.files && k.bytes === t.bytes
          ? `klio's restore holds the same relation files as the tar (${t.files} files, ${mb(t.bytes)})`
          : `klio's restore holds ${k.files} relation files (${mb(k.bytes)}), the tar ${t.files} (${mb(t.bytes)})`;
        if (!(k.files === t.files && k.bytes === t.bytes)) notes.push(`restore check: ${check}`);
        say(check);
      }
      rmSync(path.dirname(klioDest), { recursive: true, force: true });
      rmSync(path.dirname(tarDest), { recursive: true, force: true });
    }
    let rawRestore: Exit | null = null;
    if (repos.raw) {
      const dest = path.join(work, "restore-klio-none", "data");
      rawRestore = await klioRun(klio, ["restore", dest, "--repo", repos.raw.dir, "--cluster", CLUSTER], "klio restore (no compression)", rssFile);
      rssOf.push({ what: "restore (no compression)", rss: rawRestore.rss });
      say(`klio restore (--compression none repository): ${f1(rawRestore.seconds)} s (peak RSS ${rssText(rawRestore.rss)})`);
      rmSync(path.dirname(dest), { recursive: true, force: true });
    }
    const rmed = (pick: (r: (typeof restoreRuns)[number]) => number, tool: string) => median(restoreRuns.filter((r) => r.tool === tool).map(pick));
    const tarSeconds = rmed((r) => r.seconds, "tar");
    const tarFsync = rmed((r) => r.fsyncSeconds ?? 0, "tar");
    const klioRestore = rmed((r) => r.seconds, "klio");
    result.restore = {
      runs: restoreRuns, medianSeconds: { tar: tarSeconds, tarFsync, klio: klioRestore }, klioNoCompressionSeconds: rawRestore?.seconds ?? null,
      ratio: tarSeconds / klioRestore, ratioWithFsync: (tarSeconds + tarFsync) / klioRestore, check,
    };
    lines.push(
      `restore time (median of ${opts.rounds})  tar xf ${f1(tarSeconds)} s (+ fsync of its files ${f1(tarFsync)} s) | klio restore ${f1(klioRestore)} s` +
        (rawRestore ? ` (--compression none ${f1(rawRestore.seconds)} s)` : "") +
        ` | ratio tar/klio ${f2(tarSeconds / klioRestore)}× (with tar's fsync ${f2((tarSeconds + tarFsync) / klioRestore)}×)`,
    );

    // ---- 4. dedup of a second backup
    const plain = path.join(work, "plain");
    const plainBefore = path.join(work, "plain-before");
    const resticRepos: ResticRepo[] = resticVer ? [{ dir: path.join(work, "restic-auto"), compression: "auto" }, { dir: path.join(work, "restic-off"), compression: "off" }] : [];
    say("plain copy A (pg_basebackup -Fp) and restic's first snapshots");
    await pgBasebackupPlain(pg, plain);
    const resticFirst: number[] = [];
    for (const r of resticRepos) {
      await restic(r, ["init", "--repository-version", "2"], cache);
      const s = await resticBackup(r, plain, cache);
      resticFirst.push(treeBytes(r.dir));
      say(`restic (compression ${r.compression}) first snapshot: ${mb(treeBytes(r.dir))} in ${f1(s)} s`);
    }
    renameSync(plain, plainBefore);
    const klioBefore = { compressed: treeBytes(repos.compressed!.dir, ["wal"]), raw: repos.raw ? treeBytes(repos.raw.dir, ["wal"]) : null };

    say("changing the database: 1 % of pgbench_accounts updated at random, 1 % appended to it and to events; CHECKPOINT");
    const change = await changeWorkload(pg, w);
    const second: { compressed: BackupRun; raw: BackupRun | null } = {
      compressed: await klioBackup(pg, klio, repos.compressed!, rssFile),
      raw: repos.raw ? await klioBackup(pg, klio, repos.raw, rssFile) : null,
    };
    rssOf.push({ what: "second backup run", rss: second.compressed.rss });
    if (second.raw) rssOf.push({ what: "second backup run (no compression)", rss: second.raw.rss });
    const klioGrowth = {
      compressed: treeBytes(repos.compressed!.dir, ["wal"]) - klioBefore.compressed,
      raw: repos.raw ? treeBytes(repos.raw.dir, ["wal"]) - klioBefore.raw! : null,
    };
    say(`klio second backup: growth ${mb(klioGrowth.compressed)} in ${f1(second.compressed.seconds)} s (${phasesText(phasesOf(second.compressed))}; peak RSS ${rssText(second.compressed.rss)})`);
    if (second.raw) say(`klio second backup, --compression none: growth ${mb(klioGrowth.raw!)} in ${f1(second.raw.seconds)} s (${phasesText(phasesOf(second.raw))}; peak RSS ${rssText(second.raw.rss)})`);

    say("plain copy B and restic's second snapshots");
    await pgBasebackupPlain(pg, plain);
    const resticGrowth: number[] = [];
    for (const [i, r] of resticRepos.entries()) {
      const s = await resticBackup(r, plain, cache);
      resticGrowth.push(treeBytes(r.dir) - resticFirst[i]!);
      say(`restic (compression ${r.compression}) second snapshot: growth ${mb(resticGrowth[i]!)} in ${f1(s)} s`);
    }
    say("comparing the plain copies page by page");
    const pages = comparePages(plainBefore, plain);
    const changedBytes = (pages.changedPages + pages.newPages) * PAGE;
    const resticAuto = resticGrowth[0] ?? null;
    const resticOff = resticGrowth[1] ?? null;
    const ratioCompressed = resticAuto === null ? null : klioGrowth.compressed / resticAuto;
    const ratioRaw = klioGrowth.raw === null ? null : klioGrowth.raw / changedBytes;
    targets.dedupCompressed = ratioCompressed === null ? null : ratioCompressed <= TARGET_DEDUP_COMPRESSED;
    targets.dedupRaw = ratioRaw === null ? null : ratioRaw <= TARGET_DEDUP_RAW;
    result.dedup = {
      change, pages, changedPageBytes: changedBytes,
      klio: { growth: klioGrowth, before: klioBefore, secondBackupSeconds: { compressed: second.compressed.seconds, raw: second.raw?.seconds ?? null }, stats: { compressed: second.compressed.stats, raw: second.raw?.stats ?? null } },
      restic: resticVer ? { growth: { auto: resticAuto, off: resticOff }, first: { auto: resticFirst[0], off: resticFirst[1] } } : null,
      ratioCompressed, ratioRaw, targetCompressed: TARGET_DEDUP_COMPRESSED, targetRaw: TARGET_DEDUP_RAW,
      met: { compressed: targets.dedupCompressed, raw: targets.dedupRaw },
    };
    const said = (b: BackupRun | null) => {
      const n = (k: string) => (typeof b?.stats?.[k] === "number" ? (b.stats[k] as number) : null);
      const fresh = n("newBytes");
      const stored = n("storedBytes");
      return fresh === null || stored === null ? "n/a" : `${mb(fresh)} new, ${mb(stored)} stored`;
    };
    const pct = (x: number) => `${f1((100 * x) / pages.relationPages)} %`;
    lines.push(
      `change            ${change.updated} of ${w.accounts} accounts updated, ${change.appendedAccounts} appended; ${change.appendedEvents} events appended`,
      `  changed pages    ${mb(changedBytes)} (${pages.changedPages} changed + ${pages.newPages} new of ${pages.relationPages} pages, ${pct(pages.changedPages + pages.newPages)})` +
        `; other files changed ${pages.otherChangedFiles} of ${pages.otherFiles}, ${mb(pages.otherChangedBytes)}`,
      `second backup growth with compression     klio ${mb(klioGrowth.compressed)} | restic ${resticAuto === null ? "n/a" : mb(resticAuto)}` +
        ` | ratio ${ratioCompressed === null ? "n/a" : `${f2(ratioCompressed)}×`} (target ≤ ${TARGET_DEDUP_COMPRESSED}× restic) ${targets.dedupCompressed === null ? "not measured" : verdict(targets.dedupCompressed)}`,
      `second backup growth without compression  klio ${klioGrowth.raw === null ? "n/a" : mb(klioGrowth.raw)} | restic ${resticOff === null ? "n/a" : `${mb(resticOff)} (${f2(resticOff / changedBytes)}× the changed pages)`}` +
        ` | ratio ${ratioRaw === null ? "n/a" : `${f2(ratioRaw)}×`} the changed pages (target ≤ ${TARGET_DEDUP_RAW}×) ${targets.dedupRaw === null ? "not measured" : verdict(targets.dedupRaw)}`,
      `  as klio counts it  second backup ${said(second.compressed)} in ${f1(second.compressed.seconds)} s` +
        (second.raw ? `; --compression none ${said(second.raw)} in ${f1(second.raw.seconds)} s` : ""),
    );

    // ---- 5. memory
    const measured = rssOf.filter((r) => r.rss !== null) as { what: string; rss: number }[];
    const peak = (prefix: string) => Math.max(0, ...measured.filter((r) => r.what.startsWith(prefix) || r.what.startsWith(`second ${prefix}`)).map((r) => r.rss));
    const backupPeak = peak("backup run");
    const restorePeak = peak("restore");
    targets.memory = measured.length === 0 ? null : Math.max(backupPeak, restorePeak) < TARGET_RSS_MB * MB;
    result.memory = { runs: rssOf, peakBackupRun: backupPeak || null, peakRestore: restorePeak || null, targetMb: TARGET_RSS_MB, met: targets.memory };
    lines.push(
      `peak RSS          backup run ${backupPeak ? `${f0(backupPeak / MB)} MB` : "n/a"} | restore ${restorePeak ? `${f0(restorePeak / MB)} MB` : "n/a"}` +
        ` (target < ${TARGET_RSS_MB} MB for a 5 GB database; this one ${mb(w.databaseBytes)}) ${targets.memory === null ? "not measured" : verdict(targets.memory)}`,
    );

    for (const r of [repos.compressed, repos.raw]) if (r) await closeKlioRepo(pg, r, false);
  } catch (e) {
    say(`FAILED: ${e instanceof Error ? e.message : String(e)}`);
    if (opts.keep) say(`kept ${work}`);
    await cleanup();
    return 1;
  }
  await cleanup();
  result.seconds = (performance.now() - started) / 1000;
  result.loadAverage = { before: loadBefore, after: loadAverage() };
  result.targets = targets;
  result.notes = notes;
  result.met = Object.values(targets).every((t) => t !== false);
  const header = `klio backup benchmark: klio = ${klio.label}; ${pgVersion}; ${resticVer ?? "restic not installed"}; fsync on; page cache warm; ` +
    `peak RSS by ${rssMethod}; ${f0(result.seconds as number)} s; load average ${loadBefore} before, ${loadAverage()} after (${os.cpus().length} CPUs)`;
  const table = [header, ...lines, ...notes.map((n) => `note: ${n}`)].join("\n") + "\n";
  if (opts.json) {
    process.stderr.write("\n" + table);
    process.stdout.write(JSON.stringify(result, null, 2) + "\n");
  } else process.stdout.write("\n" + table);
  return 0;
}

process.exitCode = await main();
