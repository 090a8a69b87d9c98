// `npm run bench:backup`: klio's base backups and restores against PostgreSQL's own tools and
// restic, in one run on the same database, with ratios against the targets of issue 3, then
// klio's incremental backups on PostgreSQL 18 against its full ones (issue 14, below):
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
// Incremental section (`--only incremental` runs it alone; `--incremental-gb`, default 1):
//
//   sent          bytes the server sent for the second backup ≤ 1.3× the bytes of the 8 KB
//                 pages that changed, plus the files PostgreSQL sends whole in every backup;
//                 ≤ 0.2× what it sent for a full backup of the same data
//   backup time   the incremental backup's time ≤ 0.25× the full backup's before the change
//                 (the sequence of the issue: a full, the change, the second backup); a
//                 --full backup of the changed data is timed too, without a target
//   restore time  `klio restore` of the incremental ≤ 1.1× that of the full (a synthetic
//                 full restores like a full)
//
// Method: a PostgreSQL 18 server (the npm embedded binaries; data checksums on, initdb's
// default; summarize_wal = on; otherwise as above) and the same workload, whose VACUUM
// (FREEZE, ANALYZE) and CHECKPOINT matter more here: with data checksums, the first read of a
// freshly loaded row sets hint bits, which is WAL-logged and would mark its page changed.
// --rounds repositories, each with its receiver and a full backup (`--full`). The relation
// files under base/ and global/ are copied then (the server idle since the CHECKPOINT: the
// files are the pages). The change of section 4, then in each repository `backup run
// --incremental` and `backup run --full`, after quietDisk each. Changed pages = the copy
// against the data directory afterwards, page by page, free-space maps aside: PostgreSQL sends
// those whole, like the non-relation files; both are counted in the data directory, less what
// BASE_BACKUP leaves out (checked against what the --full backups sent). Sent bytes are klio's
// stats.sentBytes (the files' bytes in BASE_BACKUP's tar streams). Restores of each round's
// two backups, in alternating order (the page cache cannot be dropped); the first round's two
// restores are compared page by page. Times and sent bytes are medians over the rounds.
//
// klio is dist/klio (rebuilt first if stale), the sources with --klio src, or an executable
// given by path (e.g. one built with scripts/build.mjs --out). Exits 0 when a target is missed
// (it is a measurement; MISSED is printed), 1 when a run fails. Usage:
//   npm run bench:backup -- [--only base|incremental] [--gb 1] [--incremental-gb 1] [--rounds 3]
//                           [--klio auto|dist|src|PATH] [--json] [--keep]
// The environment can set the same: KLIO_BENCH_ONLY, KLIO_BENCH_GB, KLIO_BENCH_INCREMENTAL_GB,
// KLIO_BENCH_ROUNDS, KLIO_BENCH_KLIO.
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, lstatSync, openSync, readSync, closeSync } from "node:fs";
import path from "node:path";
import os from "node:os";
import process from "node:process";
import { parseArgs } from "node:util";
import { startPostgres, binDir, pgTempDir, type PgServer, type StartOptions } from "../test/harness/postgres.ts";
import { MB, say, killChildren, cleanUpOnInterrupt, launch, runToEnd, stopChild, tail, resolveKlio, sqlOf, sqlValue, pgArgs, loadAverage, median, f0, f1, f2, type Exit, type KlioCommand, type Running } from "./bench-common.ts";

const PAGE = 8192;
const PG_BIN = binDir(15);
const TIME_BIN = "/usr/bin/time";
const TARGET_BACKUP = 0.8;
const TARGET_DEDUP_COMPRESSED = 1.5;
const TARGET_DEDUP_RAW = 1.2;
const TARGET_RSS_MB = 200;
const TARGET_INC_SENT_PER_CHANGED_PAGE = 1.3;
const TARGET_INC_SENT_PER_FULL = 0.2;
const TARGET_INC_TIME = 0.25;
const TARGET_INC_RESTORE = 1.1;
const CLUSTER = "bench";
const RESTIC_PASSWORD = "klio-bench";

// ---------------------------------------------------------------- options

type Section = "base" | "incremental";

interface Options {
  gb: number;
  incrementalGb: number;
  rounds: number;
  /** Run this section alone (both without it). */
  only: Section | null;
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
        "incremental-gb": { type: "string" },
        rounds: { type: "string" },
        only: { type: "string" },
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
    process.stdout.write("usage: npm run bench:backup -- [--only base|incremental] [--gb 1] [--incremental-gb 1] [--rounds 3] [--klio auto|dist|src|PATH] [--json] [--keep]\n");
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
  const only = values.only ?? env.KLIO_BENCH_ONLY ?? "";
  if (!["", "base", "incremental"].includes(only)) fail(`--only must be base or incremental, got "${only}"`);
  return {
    gb: num("gb", values.gb, "KLIO_BENCH_GB", 1, 0.05, 100),
    incrementalGb: num("incremental-gb", values["incremental-gb"], "KLIO_BENCH_INCREMENTAL_GB", 1, 0.05, 100),
    only: only === "" ? null : (only as Section),
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

/**
 * Settings of every server the bench starts: no checkpoint and no autovacuum of its own, so
 * that nothing but the workload changes pages between two backups; a slot and a sender for
 * each repository's receiver and the backups beside them.
 */
function benchServerConf(rounds: number): Record<string, string | number> {
  return {
    max_wal_size: "'8GB'", checkpoint_timeout: "'1h'", shared_buffers: "'128MB'", autovacuum: "off",
    max_replication_slots: rounds + 6, max_wal_senders: rounds + 8,
  };
}

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
  id: string | null;
  kind: string | null;
  /** Seconds from spawn to its log lines backup.started (checkpoint done) and backup.copied (all data stored). */
  startedAt: number | null;
  copiedAt: number | null;
}

/** `klio backup run --json` with `flags` (e.g. --full, --incremental). */
async function klioBackup(pg: PgServer, klio: KlioCommand, repo: KlioRepo, rssFile: string, flags: string[] = []): Promise<BackupRun> {
  let startedAt: number | null = null;
  let copiedAt: number | null = null;
  const args = ["backup", "run", "--repo", repo.dir, "--cluster", CLUSTER, "--pg", pg.connString(), "--json", ...flags];
  const r = await klioRun(klio, args, `klio backup run ${flags.join(" ")} (${repo.dir})`, rssFile, (line, at) => {
    if (startedAt === null && line.includes("backup.started")) startedAt = at;
    if (copiedAt === null && line.includes("backup.copied")) copiedAt = at;
  });
  let snapshot: { id?: string; kind?: string; stats?: Record<string, unknown> } = {};
  try {
    snapshot = JSON.parse(r.stdout) as typeof snapshot;
  } catch {
    // not JSON: the figures below are measured anyway
  }
  return { seconds: r.seconds, rss: r.rss, stats: snapshot.stats ?? null, id: snapshot.id ?? null, kind: snapshot.kind ?? null, startedAt, copiedAt };
}

/** `klio restore DEST` of the newest backup, or of `backupId`. */
async function klioRestore(klio: KlioCommand, repo: KlioRepo, dest: string, rssFile: string, backupId?: string): Promise<Exit> {
  const args = ["restore", dest, "--repo", repo.dir, "--cluster", CLUSTER, ...(backupId === undefined ? [] : ["--backup-id", backupId])];
  return klioRun(klio, args, `klio restore ${backupId ?? ""} (${repo.dir})`, rssFile);
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

/** The median of each phase, or null when none was logged. */
function medianPhases(ps: (Phases | null)[]): Phases | null {
  const logged = ps.filter((p): p is Phases => p !== null);
  if (logged.length === 0) return null;
  return { start: median(logged.map((p) => p.start)), data: median(logged.map((p) => p.data)), finish: median(logged.map((p) => p.finish)) };
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

/** The fork a relation file holds: main, fsm, vm or init. */
const forkOf = (relPath: string) => /_(fsm|vm|init)(\.\d+)?$/.exec(relPath)?.[1] ?? "main";

/** A relation file, by its path in a data directory. */
const isRelationPath = (relPath: string) => RELATION_FILE.test(path.basename(relPath)) && /^(base|global|pg_tblspc)\//.test(relPath);

interface PageDiff {
  relationPages: number;
  changedPages: number;
  newPages: number;
  /** Changed pages by fork (main, fsm, vm, init). */
  changedByFork: Record<string, number>;
  /** The first few relation files with a changed page, and their first changed page: where to look. */
  changedAt: string[];
  otherFiles: number;
  otherChangedFiles: number;
  otherChangedBytes: number;
}

interface PageScope {
  /** The top-level directories compared (default: all of `after`). */
  under?: string[];
  /** Which files are compared page by page (default: relation files); the others whole. */
  paged?: (relPath: string) => boolean;
}

/**
 * Compares plain copy `after` with `before`: relation files 8 KB page by page (a page that
 * differs or is past the old end counts), other files whole (bytes of those that differ).
 */
function comparePages(before: string, after: string, scope: PageScope = {}): PageDiff {
  const paged = scope.paged ?? isRelationPath;
  const d: PageDiff = { relationPages: 0, changedPages: 0, newPages: 0, changedByFork: {}, changedAt: [], otherFiles: 0, otherChangedFiles: 0, otherChangedBytes: 0 };
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
      const isRelation = paged(r);
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
            else if (Buffer.compare(a.subarray(off, Math.min(end, na)), b.subarray(off, end)) !== 0) {
              if (d.changedAt.length < 10 && !d.changedAt.some((at) => at.startsWith(`${r} `))) d.changedAt.push(`${r} page ${(pos + off) / PAGE}`);
              d.changedByFork[forkOf(r)] = (d.changedByFork[forkOf(r)] ?? 0) + 1;
              d.changedPages++;
            }
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
  for (const top of scope.under ?? [""]) walk(top);
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

// ---------------------------------------------------------------- sections

/** What every section shares: where it works, what it measures with, and what it reports. */
interface BenchRun {
  opts: Options;
  klio: KlioCommand;
  work: string;
  /** The scratch file of /usr/bin/time. */
  rssFile: string;
  /** Servers running, destroyed by the cleanup if a section fails. */
  servers: PgServer[];
  /** The servers and reference tools measured against, for the header. */
  tools: string[];
  lines: string[];
  notes: string[];
  targets: Record<string, boolean | null>;
  result: Record<string, unknown>;
}

async function startServer(run: BenchRun, options: StartOptions): Promise<PgServer> {
  const pg = await startPostgres(options);
  run.servers.push(pg);
  return pg;
}

async function destroyServer(run: BenchRun, pg: PgServer): Promise<void> {
  run.servers.splice(run.servers.indexOf(pg), 1);
  await pg.destroy();
}

/**
 * Sections 1–5 on PostgreSQL 15: backup and restore time against pg_basebackup and tar, the
 * second backup's growth against restic and the changed pages, memory.
 */
async function benchBase(run: BenchRun): Promise<void> {
  const { opts, klio, work, rssFile, lines, notes, targets, result } = run;
  const cache = path.join(work, "restic-cache");
  const pgVersion = execFileSync(path.join(PG_BIN, "pg_basebackup"), ["--version"]).toString().trim();
  const resticVer = resticVersion();
  say(`${pgVersion}; ${resticVer ?? "restic not installed (apt-get install restic): its comparison is skipped"}`);
  run.tools.push(pgVersion, resticVer ?? "restic not installed");
  Object.assign(result, { pgBasebackup: pgVersion, restic: resticVer });
  const rssOf: { what: string; rss: number | null }[] = [];

  say("starting PostgreSQL 15");
  const pg = await startServer(run, {
    version: 15, baseDir: path.join(work, "pg"), conf: benchServerConf(opts.rounds),
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
    `  klio's time      ${phasesText(medianPhases(backupRuns.filter((r) => r.tool === "klio").map((r) => r.phases ?? null)))} (medians)`,
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
        const r = await klioRestore(klio, repos.compressed!, klioDest, rssFile);
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
    rawRestore = await klioRestore(klio, repos.raw, dest, rssFile);
    rssOf.push({ what: "restore (no compression)", rss: rawRestore.rss });
    say(`klio restore (--compression none repository): ${f1(rawRestore.seconds)} s (peak RSS ${rssText(rawRestore.rss)})`);
    rmSync(path.dirname(dest), { recursive: true, force: true });
  }
  const rmed = (pick: (r: (typeof restoreRuns)[number]) => number, tool: string) => median(restoreRuns.filter((r) => r.tool === tool).map(pick));
  const tarSeconds = rmed((r) => r.seconds, "tar");
  const tarFsync = rmed((r) => r.fsyncSeconds ?? 0, "tar");
  const klioRestoreSeconds = rmed((r) => r.seconds, "klio");
  result.restore = {
    runs: restoreRuns, medianSeconds: { tar: tarSeconds, tarFsync, klio: klioRestoreSeconds }, klioNoCompressionSeconds: rawRestore?.seconds ?? null,
    ratio: tarSeconds / klioRestoreSeconds, ratioWithFsync: (tarSeconds + tarFsync) / klioRestoreSeconds, check,
  };
  lines.push(
    `restore time (median of ${opts.rounds})  tar xf ${f1(tarSeconds)} s (+ fsync of its files ${f1(tarFsync)} s) | klio restore ${f1(klioRestoreSeconds)} s` +
      (rawRestore ? ` (--compression none ${f1(rawRestore.seconds)} s)` : "") +
      ` | ratio tar/klio ${f2(tarSeconds / klioRestoreSeconds)}× (with tar's fsync ${f2((tarSeconds + tarFsync) / klioRestoreSeconds)}×)`,
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

  await destroyServer(run, pg);
}

// ---------------------------------------------------------------- incremental backups

/**
 * A relation file that an incremental BASE_BACKUP sends in part, only its changed blocks: all
 * but the free-space maps, which it sends whole (their changes are not WAL-logged).
 */
const isSentInPart = (relPath: string) => isRelationPath(relPath) && forkOf(relPath) !== "fsm";

// What BASE_BACKUP leaves out of every backup (PostgreSQL's basebackup.c, excludeDirContents
// and excludeFiles): top-level directories sent empty, files never sent.
const UNSENT_DIR_CONTENTS = new Set(["pg_wal", "pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_subtrans"]);
const UNSENT_FILES = new Set(["postgresql.auto.conf.tmp", "current_logfiles.tmp", "backup_label", "tablespace_map", "backup_manifest", "postmaster.pid", "postmaster.opts"]);
const isUnsentFile = (name: string) => UNSENT_FILES.has(name) || name.startsWith("pg_internal.init") || name.startsWith("pgsql_tmp");

/** The bytes BASE_BACKUP sends of a data directory, by how an incremental backup sends them. */
interface SentShares {
  /** Relation files: an incremental backup sends their changed blocks. */
  inPart: number;
  /** Free-space maps, sent whole. */
  freeSpaceMaps: number;
  /** The non-relation files (pg_xact, pg_multixact, pg_control, configuration…), sent whole. */
  nonRelation: number;
}

function sentShares(dataDir: string): SentShares {
  const s: SentShares = { inPart: 0, freeSpaceMaps: 0, nonRelation: 0 };
  const walk = (rel: string) => {
    for (const e of readdirSync(path.join(dataDir, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) {
        if (!(rel === "" && UNSENT_DIR_CONTENTS.has(e.name)) && !e.name.startsWith("pgsql_tmp")) walk(r);
        continue;
      }
      if (!e.isFile() || isUnsentFile(e.name)) continue;
      const size = lstatSync(path.join(dataDir, r)).size;
      if (isSentInPart(r)) s.inPart += size;
      else if (isRelationPath(r)) s.freeSpaceMaps += size;
      else s.nonRelation += size;
    }
  };
  walk("");
  return s;
}

/**
 * Copies the relation files under base/ and global/ of a server that is idle since its last
 * CHECKPOINT: the pages on disk are then the pages of the database.
 */
function copyRelationFiles(dataDir: string, dest: string): void {
  for (const top of ["base", "global"]) {
    cpSync(path.join(dataDir, top), path.join(dest, top), {
      recursive: true,
      filter: (src) => lstatSync(src).isDirectory() || RELATION_FILE.test(path.basename(src)),
    });
  }
}

/** One repository of the section: its full backup before the change, then an incremental and a --full one after it. */
interface IncrementalRound {
  repo: KlioRepo;
  firstFull: BackupRun;
  incremental?: BackupRun;
  full?: BackupRun;
  restoreSeconds?: { incremental: number; full: number };
}

const sentOf = (b: BackupRun | undefined): number => {
  const sent = b?.stats?.sentBytes;
  if (typeof sent !== "number") throw new Error("klio backup run --json printed no stats.sentBytes");
  return sent;
};

/** `klio backup run` that must be of `kind` (klio says which it took). */
async function backupOfKind(pg: PgServer, klio: KlioCommand, repo: KlioRepo, rssFile: string, kind: "full" | "incremental"): Promise<BackupRun> {
  await quietDisk();
  const b = await klioBackup(pg, klio, repo, rssFile, [`--${kind}`]);
  if (b.kind !== kind || b.id === null) throw new Error(`klio backup run --${kind} took a backup of kind ${b.kind ?? "(not printed)"}`);
  return b;
}

/**
 * The second backups, in every repository: the incremental one first (its parent is the full
 * backup before the change), then a --full one of the same data, the full it is measured against.
 */
async function secondBackups(pg: PgServer, klio: KlioCommand, rounds: IncrementalRound[], rssFile: string): Promise<void> {
  for (const [i, r] of rounds.entries()) {
    r.incremental = await backupOfKind(pg, klio, r.repo, rssFile, "incremental");
    say(`round ${i + 1}: incremental backup  ${f1(r.incremental.seconds).padStart(6)} s, ${mb(sentOf(r.incremental))} sent (${phasesText(phasesOf(r.incremental))})`);
    r.full = await backupOfKind(pg, klio, r.repo, rssFile, "full");
    say(`round ${i + 1}: --full backup       ${f1(r.full.seconds).padStart(6)} s, ${mb(sentOf(r.full))} sent (${phasesText(phasesOf(r.full))})`);
  }
}

/**
 * Restores each round's incremental and full backups into empty directories, the order
 * alternating (the page cache cannot be dropped: each restore reads what the one before it
 * left warm). The first round's two restores are compared page by page.
 */
async function restorePairs(klio: KlioCommand, rounds: IncrementalRound[], work: string, rssFile: string): Promise<RestoreCheck | null> {
  let check: RestoreCheck | null = null;
  for (const [i, r] of rounds.entries()) {
    const dest = { incremental: path.join(work, `restore-inc-${i + 1}`, "data"), full: path.join(work, `restore-full-${i + 1}`, "data") };
    const seconds = { incremental: 0, full: 0 };
    const order: ("incremental" | "full")[] = i % 2 === 0 ? ["incremental", "full"] : ["full", "incremental"];
    for (const kind of order) {
      await quietDisk();
      seconds[kind] = (await klioRestore(klio, r.repo, dest[kind], rssFile, r[kind]!.id!)).seconds;
      say(`round ${i + 1}: restore of the ${kind.padEnd(11)} ${f1(seconds[kind]).padStart(6)} s`);
    }
    r.restoreSeconds = seconds;
    if (i === 0) check = sameRelationPages(dest.full, dest.incremental);
    for (const d of Object.values(dest)) rmSync(path.dirname(d), { recursive: true, force: true });
  }
  return check;
}

/** Whether two restores of the same data hold the same relation files, page for page. */
interface RestoreCheck {
  same: boolean;
  /** The only difference is visibility-map pages: the incremental's map pages the server did not send are zeros (backup-run.ts). */
  onlyVisibilityMap: boolean;
  text: string;
}

function sameRelationPages(full: string, incremental: string): RestoreCheck {
  const diff = comparePages(full, incremental, { under: ["base", "global"] });
  const f = relationSummary(full);
  const i = relationSummary(incremental);
  const sameFiles = diff.newPages === 0 && f.files === i.files && f.bytes === i.bytes;
  if (sameFiles && diff.changedPages === 0) return { same: true, onlyVisibilityMap: false, text: `the two restores hold the same relation files, page for page (${i.files} files, ${diff.relationPages} pages)` };
  const forks = Object.entries(diff.changedByFork).map(([fork, n]) => `${n} ${fork}`).join(", ");
  const onlyVisibilityMap = sameFiles && diff.changedPages === (diff.changedByFork.vm ?? 0);
  const where = `${diff.changedPages} of ${diff.relationPages} pages differ (${forks}: ${diff.changedAt.join(", ")})`;
  return {
    same: false, onlyVisibilityMap,
    text: onlyVisibilityMap
      ? `the two restores differ only in visibility-map pages, ${where}: klio restores the map pages the server did not send as zeros (no page all-visible), because PostgreSQL's WAL summaries miss the map bits an UPDATE clears`
      : `the restores differ: the incremental's ${i.files} relation files (${mb(i.bytes)}), the full's ${f.files} (${mb(f.bytes)}); ${where}, ${diff.newPages} only in the incremental's`,
  };
}

/**
 * The incremental section on PostgreSQL 18 (summarize_wal = on; data checksums on, initdb's
 * default): in each of --rounds repositories a full backup, then the change, then an
 * incremental and a --full backup; the pages that changed counted without klio; each
 * round's two second backups restored.
 */
async function benchIncremental(run: BenchRun): Promise<void> {
  const { opts, klio, work, rssFile } = run;
  say("incremental: starting PostgreSQL 18 with summarize_wal = on");
  const pg = await startServer(run, { version: 18, baseDir: path.join(work, "pg18"), conf: { ...benchServerConf(opts.rounds), summarize_wal: "on" } });
  const server = `PostgreSQL ${await sqlValue(pg, "show server_version")} (data checksums ${await sqlValue(pg, "show data_checksums")}, summarize_wal = on)`;
  run.tools.push(server);
  // createWorkload ends with VACUUM (FREEZE, ANALYZE) and CHECKPOINT: with data checksums on,
  // the first read of a freshly loaded row sets its hint bits, which is WAL-logged and marks
  // its page changed; without it the second backup would measure hint bits, not the change.
  const w = await createWorkload(pg, opts.incrementalGb);
  say(`database ${mb(w.databaseBytes)}, made in ${f0(w.seconds)} s`);

  const rounds: IncrementalRound[] = [];
  for (let i = 1; i <= opts.rounds; i++) {
    const repo = await openKlioRepo(pg, klio, path.join(work, `klio-inc-${i}`), `klio_inc_${i}`, "default");
    const firstFull = await backupOfKind(pg, klio, repo, rssFile, "full");
    say(`round ${i}: full backup before the change ${f1(firstFull.seconds)} s`);
    rounds.push({ repo, firstFull });
  }
  const atFull = path.join(work, "relation-files-at-full");
  copyRelationFiles(pg.dataDir, atFull);
  say("changing the database: 1 % of pgbench_accounts updated at random, 1 % appended to it and to events; CHECKPOINT");
  const change = await changeWorkload(pg, w);
  await secondBackups(pg, klio, rounds, rssFile);
  // The server has been idle since the change's CHECKPOINT: its files are the second backups' pages.
  say("comparing the relation files at the full backups with those at the second backups, page by page");
  const pages = comparePages(atFull, pg.dataDir, { under: ["base", "global"], paged: isSentInPart });
  const shares = sentShares(pg.dataDir);
  rmSync(atFull, { recursive: true, force: true });
  for (const r of rounds) await closeKlioRepo(pg, r.repo, false);
  await destroyServer(run, pg);
  const check = await restorePairs(klio, rounds, work, rssFile);
  reportIncremental(run, { server, workload: w, change, pages, shares, rounds, check });
}

interface IncrementalMeasures {
  server: string;
  workload: Workload;
  change: Awaited<ReturnType<typeof changeWorkload>>;
  /** The relation files at the full backups against those at the second, free-space maps aside. */
  pages: PageDiff;
  shares: SentShares;
  rounds: IncrementalRound[];
  check: RestoreCheck | null;
}

/** The section's ratios against their targets: lines of the report, targets, and result.incremental. */
function reportIncremental(run: BenchRun, m: IncrementalMeasures): void {
  const { opts, lines, notes, targets, result } = run;
  const { workload: w, change, pages, shares, rounds, check } = m;
  const med = (pick: (r: IncrementalRound) => number) => median(rounds.map(pick));
  const changedBytes = (pages.changedPages + pages.newPages) * PAGE;
  const sentWhole = shares.nonRelation + shares.freeSpaceMaps;
  const sent = { incremental: med((r) => sentOf(r.incremental)), full: med((r) => sentOf(r.full)) };
  const seconds = { incremental: med((r) => r.incremental!.seconds), full: med((r) => r.full!.seconds), firstFull: med((r) => r.firstFull.seconds) };
  const restore = { incremental: med((r) => r.restoreSeconds!.incremental), full: med((r) => r.restoreSeconds!.full) };
  const ratios = {
    sentPerChangedPage: (sent.incremental - sentWhole) / changedBytes,
    sentPerFull: sent.incremental / sent.full,
    time: seconds.incremental / seconds.firstFull,
    timeAgainstSecondFull: seconds.incremental / seconds.full,
    restore: restore.incremental / restore.full,
  };
  targets.incrementalSent = ratios.sentPerChangedPage <= TARGET_INC_SENT_PER_CHANGED_PAGE;
  targets.incrementalSentPerFull = ratios.sentPerFull <= TARGET_INC_SENT_PER_FULL;
  targets.incrementalTime = ratios.time <= TARGET_INC_TIME;
  targets.incrementalRestore = ratios.restore <= TARGET_INC_RESTORE;
  // What the --full backups sent checks sentShares' exclusions: BASE_BACKUP sends every byte they count.
  const dataDirSent = shares.inPart + sentWhole;
  if (Math.abs(dataDirSent - sent.full) > 0.01 * sent.full) notes.push(`the --full backups sent ${mb(sent.full)}, the data directory holds ${mb(dataDirSent)} that BASE_BACKUP sends: the shares sent whole may be off`);
  const phases = { incremental: medianPhases(rounds.map((r) => phasesOf(r.incremental!))), full: medianPhases(rounds.map((r) => phasesOf(r.full!))) };
  result.incremental = {
    server: m.server, workload: w, change, pages, changedPageBytes: changedBytes, sentShares: shares, dataDirSent, sent, seconds, phases, restoreSeconds: restore, ratios, check,
    rounds: rounds.map((r) => ({
      firstFull: { seconds: r.firstFull.seconds, stats: r.firstFull.stats },
      incremental: { id: r.incremental!.id, seconds: r.incremental!.seconds, rss: r.incremental!.rss, phases: phasesOf(r.incremental!), stats: r.incremental!.stats },
      full: { id: r.full!.id, seconds: r.full!.seconds, rss: r.full!.rss, phases: phasesOf(r.full!), stats: r.full!.stats },
      restoreSeconds: r.restoreSeconds,
    })),
    targets: { sentPerChangedPage: TARGET_INC_SENT_PER_CHANGED_PAGE, sentPerFull: TARGET_INC_SENT_PER_FULL, time: TARGET_INC_TIME, restore: TARGET_INC_RESTORE },
  };
  const n = opts.rounds;
  const changedShare = (100 * (pages.changedPages + pages.newPages)) / pages.relationPages;
  lines.push(
    `incremental backups on ${m.server}; VACUUM (FREEZE, ANALYZE) and CHECKPOINT after loading, so that the second backup measures the change, not hint bits set by first reads`,
    `database          ${mb(w.databaseBytes)}: cold md5 table ${mb(w.coldBytes)}, pgbench -s ${w.scale} ${mb(w.pgbenchBytes)}, append-only events ${mb(w.eventBytes)}`,
    `change            ${change.updated} of ${w.accounts} accounts updated, ${change.appendedAccounts} appended; ${change.appendedEvents} events appended`,
    `  changed pages    ${mb(changedBytes)} (${pages.changedPages} changed + ${pages.newPages} new of ${pages.relationPages} pages, ${f1(changedShare)} %; relation files at the full backups against the second's, free-space maps aside)`,
    `  sent whole       ${mb(sentWhole)}: non-relation files ${mb(shares.nonRelation)}, free-space maps ${mb(shares.freeSpaceMaps)} (PostgreSQL sends them in every backup, incremental or not)`,
    `second backup sent (median of ${n})  incremental ${mb(sent.incremental)} = ${mb(sent.incremental - sentWhole)} + sent whole ${mb(sentWhole)}` +
      ` | ratio ${f2(ratios.sentPerChangedPage)}× the changed pages (target ≤ ${TARGET_INC_SENT_PER_CHANGED_PAGE}× plus what is sent whole) ${verdict(targets.incrementalSent)}`,
    `  against a full   incremental ${mb(sent.incremental)} | --full ${mb(sent.full)} | ratio ${f2(ratios.sentPerFull)}× (target ≤ ${TARGET_INC_SENT_PER_FULL}×) ${verdict(targets.incrementalSentPerFull)}`,
    `second backup time (median of ${n})  incremental ${f1(seconds.incremental)} s | the full before the change ${f1(seconds.firstFull)} s` +
      ` | ratio ${f2(ratios.time)}× (target ≤ ${TARGET_INC_TIME}×) ${verdict(targets.incrementalTime)}`,
    `  a --full instead  ${f1(seconds.full)} s, ratio ${f2(ratios.timeAgainstSecondFull)}× (no target): the same data in the same repository, where the incremental has just stored the changed pages, so it only reads and hashes`,
    `  phases (medians)  incremental ${phasesText(phases.incremental)} | --full ${phasesText(phases.full)}`,
    `restore time (median of ${n})  incremental ${f1(restore.incremental)} s | --full ${f1(restore.full)} s | ratio ${f2(ratios.restore)}× (target ≤ ${TARGET_INC_RESTORE}×) ${verdict(targets.incrementalRestore)}`,
    `  check            ${check?.text ?? "not made"}`,
  );
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const opts = parseOptions();
  const klio = await resolveKlio(opts.klio);
  const work = pgTempDir("klio-bench-backup-");
  const rssMethod = existsSync(TIME_BIN) ? "/usr/bin/time maximum resident set size" : "VmHWM polled every 50 ms";
  const run: BenchRun = {
    opts, klio, work, rssFile: path.join(work, "rss.txt"), servers: [], tools: [], lines: [], notes: [], targets: {},
    result: {
      klio: klio.label, node: process.version,
      options: { only: opts.only, gb: opts.gb, incrementalGb: opts.incrementalGb, rounds: opts.rounds }, rssMethod, units: "MB = 1048576 bytes",
    },
  };
  const cleanup = async () => {
    killChildren();
    for (const pg of run.servers.splice(0)) await pg.destroy().catch(() => {});
    if (!opts.keep) rmSync(work, { recursive: true, force: true });
  };
  cleanUpOnInterrupt("stopping the servers and removing " + work, cleanup);

  const started = performance.now();
  const loadBefore = loadAverage();
  say(`klio: ${klio.label}`);
  say(`work directory ${work}${opts.keep ? " (kept)" : ""}`);
  try {
    if (opts.only !== "incremental") await benchBase(run);
    if (opts.only !== "base") await benchIncremental(run);
  } catch (e) {
    say(`FAILED: ${e instanceof Error ? e.message : String(e)}`);
    if (opts.keep) say(`kept ${work}`);
    await cleanup();
    return 1;
  }
  await cleanup();
  const { result, targets, notes } = run;
  result.seconds = (performance.now() - started) / 1000;
  result.loadAverage = { before: loadBefore, after: loadAverage() };
  result.targets = targets;
  result.notes = notes;
  result.met = Object.values(targets).every((t) => t !== false);
  const header = `klio backup benchmark: klio = ${klio.label}; ${run.tools.join("; ")}; fsync on; page cache warm; ` +
    `peak RSS by ${rssMethod}; ${f0(result.seconds as number)} s; load average ${loadBefore} before, ${loadAverage()} after (${os.cpus().length} CPUs)`;
  const table = [header, ...run.lines, ...notes.map((n) => `note: ${n}`)].join("\n") + "\n";
  if (opts.json) {
    process.stderr.write("\n" + table);
    process.stdout.write(JSON.stringify(result, null, 2) + "\n");
  } else process.stdout.write("\n" + table);
  return 0;
}

process.exitCode = await main();
