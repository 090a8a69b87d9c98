// `npm run bench:wal`: klio's WAL receiver against pg_receivewal (Debian's PostgreSQL 15) on
// the same generated load, in one run, with ratios against the targets of the issue:
//
//   ingest    klio drains a WAL backlog at ≥ 0.9× pg_receivewal's rate
//   latency   as the only synchronous standby, klio's single-client commit latency is
//             ≤ 1.2× that with `pg_receivewal --synchronous`
//
// Method (real servers from test/harness/postgres.ts; fsync on; 16 MB segments):
//
// 1. Ingest. One PostgreSQL 15 server. One physical slot per (tool, round), created with
//    RESERVE_WAL *before* the load, so every run drains the same backlog from the same start.
//    The load writes about --gb GB of WAL: by default half `pgbench -i`, half rows of random
//    text (~5× compressible overall; --load pgbench|random for either alone). Then CHECKPOINT
//    (no checkpoint writes during the runs), pg_switch_wal(), endpos = pg_current_wal_lsn().
//    Runs never overlap; each round rotates the order of the tools; each run writes into a
//    fresh directory, deleted afterwards; medians of the rounds are reported.
//      pg_receivewal -D DIR -S SLOT --endpos=LSN-1 --no-loop -v   time: spawn → exit
//      pg_receivewal … --compress=gzip:1                          (reference only)
//      klio wal stream --repo DIR --slot SLOT --endpos LSN        time: spawn → its log line
//                      saying the segment that ends at endpos is fsync'd and renamed
//    The headline rate is wall clock from spawn; the rate after start-up (from "starting log
//    streaming" / wal.streaming) is printed beside it. klio compresses completed segments
//    into .kwal files in the background, in the same process, and finishes that before it
//    exits: reported separately (segments compressed at endpos, the newest .kwal's mtime and
//    the exit relative to endpos, raw segments left). The page cache is not dropped (every
//    run reads the backlog warm) unless --drop-caches is given (root only).
// 2. Commit latency. A fresh PostgreSQL 15 server; `pgbench -n -c 1 -j 1 -T SECONDS` with a
//    one-row INSERT, synchronous_commit on, with no synchronous standby, with
//    `pg_receivewal --synchronous`, with `klio wal stream --synchronous`, and with
//    scripts/wal-floor.mjs (the fewest steps a Node receiver can take: the runtime's floor,
//    as a reference for what klio's own code adds), each the only
//    synchronous standby (synchronous_standby_names = the application_name the server shows
//    for it, checked against the expected pg_receivewal / klio). pgbench starts once
//    pg_stat_replication says 'sync'. Short runs in several rotated rounds, medians: other
//    work on the machine moves fsync times a lot, and interleaving spreads that evenly.
//
// klio is dist/klio (rebuilt first if stale), or the sources with --klio src. Exits 0 when a
// target is missed (it is a measurement; MISSED is printed), 1 when a run fails. Usage:
//   npm run bench:wal -- [--gb 1] [--rounds 3] [--seconds 5] [--latency-rounds 4]
//                        [--klio auto|dist|src] [--load mixed|pgbench|random] [--no-gzip]
//                        [--only ingest|latency] [--drop-caches] [--json] [--keep]
//                        [--klio-main PATH/src/cli/main.ts] [--klio-node-args=ARGS]
// The environment can set the same: KLIO_BENCH_GB, KLIO_BENCH_ROUNDS, KLIO_BENCH_SECONDS,
// KLIO_BENCH_LATENCY_ROUNDS, KLIO_BENCH_KLIO, KLIO_BENCH_LOAD (e.g. KLIO_BENCH_GB=0.1 in CI).
// --klio-main runs klio from another tree's sources (a worktree with a change) for A/B;
// --klio-node-args="--cpu-prof --cpu-prof-dir=DIR" profiles it (runs klio from sources).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync, createWriteStream } from "node:fs";
import path from "node:path";
import os from "node:os";
import process from "node:process";
import { parseArgs } from "node:util";
import { startPostgres, binDir, pgTempDir, type PgServer } from "../test/harness/postgres.ts";
import { ROOT } from "../test/harness/klio.ts";
import { MB, say, killChildren, cleanUpOnInterrupt, launch, runToEnd, stopChild, tail, resolveKlio, sqlOf, sqlValue, pgArgs, loadAverage, median, rotate, f0, f1, f2, type KlioCommand, type Running } from "./bench-common.ts";

const SEGMENT_MB = 16;
const PG_BIN = binDir(15);
const TARGET_INGEST = 0.9;
const TARGET_LATENCY = 1.2;

// ---------------------------------------------------------------- options

interface Options {
  gb: number;
  rounds: number;
  seconds: number;
  latencyRounds: number;
  klio: "auto" | "dist" | "src";
  klioMain: string | undefined;
  klioNodeArgs: string[];
  load: Load;
  gzip: boolean;
  ingest: boolean;
  latency: boolean;
  dropCaches: boolean;
  json: boolean;
  keep: boolean;
}

function parseCliArgs() {
  return parseArgs({
    options: {
      gb: { type: "string" },
      rounds: { type: "string" },
      seconds: { type: "string" },
      "latency-rounds": { type: "string" },
      klio: { type: "string" },
      "klio-main": { type: "string" },
      "klio-node-args": { type: "string" },
      load: { type: "string" },
      "no-gzip": { type: "boolean" },
      only: { type: "string" },
      "drop-caches": { type: "boolean" },
      json: { type: "boolean" },
      keep: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
}

function parseOptions(): Options {
  let parsed;
  try {
    parsed = parseCliArgs();
  } catch (e) {
    fail(`${(e as Error).message} (a value that starts with "-" needs --flag=value)`);
  }
  const { values } = parsed;
  if (values.help) {
    process.stdout.write(
      "usage: npm run bench:wal -- [--gb 1] [--rounds 3] [--seconds 5] [--latency-rounds 4]\n" +
        "                            [--klio auto|dist|src] [--load mixed|pgbench|random] [--no-gzip]\n" +
        "                            [--only ingest|latency] [--drop-caches] [--json] [--keep]\n" +
        "                            [--klio-main PATH/src/cli/main.ts] [--klio-node-args=ARGS]\n",
    );
    process.exit(0);
  }
  const env = process.env;
  const num = (name: string, flag: string | undefined, envName: string, dflt: number, min: number): number => {
    const text = flag ?? env[envName];
    if (text === undefined || text === "") return dflt;
    const n = Number(text);
    if (!Number.isFinite(n) || n < min) fail(`--${name} must be a number ≥ ${min}, got "${text}"`);
    return n;
  };
  const klio = values.klio ?? env.KLIO_BENCH_KLIO ?? "auto";
  if (klio !== "auto" && klio !== "dist" && klio !== "src") fail(`--klio must be auto, dist or src, got "${klio}"`);
  const load = values.load ?? env.KLIO_BENCH_LOAD ?? "mixed";
  if (load !== "mixed" && load !== "pgbench" && load !== "random") fail(`--load must be mixed, pgbench or random, got "${load}"`);
  const only = values.only;
  if (only !== undefined && only !== "ingest" && only !== "latency") fail(`--only must be ingest or latency, got "${only}"`);
  if (values["drop-caches"] && process.getuid?.() !== 0) fail("--drop-caches needs root");
  return {
    gb: num("gb", values.gb, "KLIO_BENCH_GB", 1, 0.05),
    rounds: Math.round(num("rounds", values.rounds, "KLIO_BENCH_ROUNDS", 3, 1)),
    seconds: Math.round(num("seconds", values.seconds, "KLIO_BENCH_SECONDS", 5, 1)),
    latencyRounds: Math.round(num("latency-rounds", values["latency-rounds"], "KLIO_BENCH_LATENCY_ROUNDS", 4, 1)),
    klio,
    klioMain: values["klio-main"] ?? env.KLIO_BENCH_MAIN,
    klioNodeArgs: (values["klio-node-args"] ?? env.KLIO_BENCH_NODE_ARGS ?? "").split(/\s+/).filter(Boolean),
    load,
    gzip: !values["no-gzip"],
    ingest: only !== "latency",
    latency: only !== "ingest",
    dropCaches: Boolean(values["drop-caches"]),
    json: Boolean(values.json),
    keep: Boolean(values.keep),
  };
}

function fail(message: string): never {
  process.stderr.write(`bench-wal: ${message}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------- server and load

function lsnToBigint(text: string): bigint {
  const [hi, lo] = text.split("/");
  return (BigInt("0x" + hi) << 32n) | BigInt("0x" + lo);
}

function lsnText(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

interface Backlog {
  startLsn: bigint;
  endpos: bigint;
  bytes: number;
  segments: number;
  lastSegment: string;
  generateSeconds: number;
  load: Load;
  pgbenchScale: number;
  randomRows: number;
}

type Load = "mixed" | "pgbench" | "random";

/**
 * Writes about `gb` GB of WAL. `pgbench -i` alone makes WAL that deflate shrinks ~15× (the
 * blank-padded filler columns), which flatters every compressor; rows of random hex text
 * shrink ~2.7×. "mixed" (the default) is half of each, ~5× overall.
 */
async function generateBacklog(pg: PgServer, gb: number, load: Load, slots: string[]): Promise<Backlog> {
  for (const slot of slots) await sqlOf(pg).unsafe(`select pg_create_physical_replication_slot('${slot}', true)`);
  const restart = await sqlValue(pg, `select min(restart_lsn)::text from pg_replication_slots`);
  const startLsn = (lsnToBigint(restart) / BigInt(SEGMENT_MB * MB)) * BigInt(SEGMENT_MB * MB);
  const target = gb * 1024 * MB;
  const pgbenchShare = load === "pgbench" ? 1 : load === "mixed" ? 0.5 : 0;
  // About 12.9 MB of WAL per pgbench scale unit, and 335 bytes per random row.
  const scale = pgbenchShare > 0 ? Math.max(1, Math.round((pgbenchShare * target) / MB / 12.9)) : 0;
  const rows = Math.round(((1 - pgbenchShare) * target) / 335);
  const t0 = performance.now();
  say(`generating the backlog (about ${gb} GB of WAL): ${[scale && `pgbench -i -s ${scale}`, rows && `${rows} rows of random text`].filter(Boolean).join(", then ")}`);
  if (scale) await runToEnd(path.join(PG_BIN, "pgbench"), ["-i", "-q", "-s", String(scale), ...pgArgs(pg), "postgres"], "pgbench -i");
  if (rows) {
    await sqlOf(pg).unsafe("create table bench_random (id bigint, payload text)");
    await sqlOf(pg).unsafe(
      `insert into bench_random select g, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) || repeat(md5(g::text), 4)
         from generate_series(1, ${rows}) g`,
    );
  }
  await sqlOf(pg).unsafe("checkpoint");
  await sqlOf(pg).unsafe("select pg_switch_wal()");
  const end = await sqlValue(pg, "select pg_current_wal_lsn()::text");
  const endpos = lsnToBigint(end);
  if (endpos % BigInt(SEGMENT_MB * MB) !== 0n) throw new Error(`pg_current_wal_lsn() ${end} after pg_switch_wal() is not a segment boundary`);
  const lastSegment = await sqlValue(pg, `select pg_walfile_name('${end}'::pg_lsn - 1)`);
  const bytes = Number(endpos - startLsn);
  execFileSync("sync");
  return {
    startLsn, endpos, bytes, segments: bytes / (SEGMENT_MB * MB), lastSegment,
    generateSeconds: (performance.now() - t0) / 1000, load, pgbenchScale: scale, randomRows: rows,
  };
}

function dropCaches(): void {
  execFileSync("sync");
  writeFileSync("/proc/sys/vm/drop_caches", "3\n");
}

// ---------------------------------------------------------------- ingest runs

interface FileCounts {
  kwal: number;
  raw: number;
  partial: number;
  gz: number;
  other: number;
  storedBytes: number;
}

function countFiles(dir: string): FileCounts & { newestKwalMtime: number } {
  const c = { kwal: 0, raw: 0, partial: 0, gz: 0, other: 0, storedBytes: 0, newestKwalMtime: 0 };
  if (!existsSync(dir)) return c;
  for (const name of readdirSync(dir)) {
    // klio renames files while we look (state.json.tmp, .partial → segment): skip the vanished.
    const st = statSync(path.join(dir, name), { throwIfNoEntry: false });
    if (!st?.isFile()) continue;
    if (/^[0-9A-F]{24}\.kwal$/.test(name)) {
      c.kwal++;
      c.storedBytes += st.size;
      c.newestKwalMtime = Math.max(c.newestKwalMtime, st.mtimeMs);
    } else if (/^[0-9A-F]{24}$/.test(name)) {
      c.raw++;
      c.storedBytes += st.size;
    } else if (/^[0-9A-F]{24}(\.gz)?\.partial$/.test(name)) c.partial++;
    else if (/^[0-9A-F]{24}\.gz$/.test(name)) {
      c.gz++;
      c.storedBytes += st.size;
    } else c.other++;
  }
  return c;
}

interface IngestRun {
  tool: Tool;
  round: number;
  /** Wall clock from spawn until WAL up to endpos is fsync'd and renamed. */
  seconds: number;
  mbps: number;
  /** From spawn until the tool says it starts streaming (connection, checks, slot). */
  startupSeconds: number;
  /** The rate from that moment on: the receive path alone. */
  streamingMbps: number;
  files: FileCounts;
  /** klio only: its background compression (in the same process). */
  klio?: {
    kwalAtEndpos: number;
    compressDoneAfterEndposSeconds: number | null;
    exitAfterEndposSeconds: number;
  };
}

type Tool = "pg_receivewal" | "pg_receivewal gzip:1" | "klio";

async function receivewalIngest(pg: PgServer, backlog: Backlog, slot: string, out: string, gzip: boolean, round: number): Promise<IngestRun> {
  mkdirSync(out, { recursive: true });
  // pg_receivewal stops only once it has received WAL *past* --endpos (receivelog.c:
  // `endpos < xlogpos`): given the segment boundary itself it waits for the server to write
  // more WAL (up to 15 s, the next running-xacts record). endpos - 1 makes it stop as soon as
  // the last segment is complete, fsync'd and renamed: the same bytes klio writes for endpos.
  // -v only adds a line per segment; "starting log streaming at" marks the end of start-up.
  const args = ["-D", out, "-S", slot, `--endpos=${lsnText(backlog.endpos - 1n)}`, "--no-loop", "-v", ...pgArgs(pg)];
  if (gzip) args.push("--compress=gzip:1");
  let streamingAt: number | undefined;
  const r = launch(path.join(PG_BIN, "pg_receivewal"), args, {
    onLine(line, seconds) {
      if (streamingAt === undefined && line.includes("starting log streaming at")) streamingAt = seconds;
    },
  });
  const exit = await r.exited;
  if (exit.code !== 0) throw new Error(`pg_receivewal exited ${exit.code ?? exit.signal}:\n${tail(exit.output)}`);
  if (streamingAt === undefined) throw new Error(`pg_receivewal -v did not say "starting log streaming at":\n${tail(exit.output)}`);
  const seconds = exit.seconds;
  const files = countFiles(out);
  const complete = gzip ? files.gz : files.raw;
  if (complete !== backlog.segments) throw new Error(`pg_receivewal left ${complete} complete segments in ${out}, expected ${backlog.segments}`);
  return {
    tool: gzip ? "pg_receivewal gzip:1" : "pg_receivewal", round, seconds, mbps: backlog.bytes / MB / seconds,
    startupSeconds: streamingAt, streamingMbps: backlog.bytes / MB / (exit.seconds - streamingAt), files,
  };
}

async function klioIngest(pg: PgServer, klio: KlioCommand, backlog: Backlog, slot: string, repo: string, round: number, logFile: string): Promise<IngestRun> {
  let streamingAt: number | undefined;
  let durableAt: number | undefined;
  let durableWall = 0;
  let kwalAtEndpos = 0;
  const walDir = path.join(repo, "wal", "bench");
  const log = createWriteStream(logFile, { flags: "a" });
  const args = [
    ...klio.prefix, "wal", "stream", "--repo", repo, "--cluster", "bench", "--pg", pg.connString(), "--slot", slot,
    "--endpos", lsnText(backlog.endpos), "--log-format", "json",
  ];
  const r = launch(klio.cmd, args, {
    onLine(line, seconds) {
      log.write(line + "\n");
      if (streamingAt === undefined && line.includes('"wal.streaming"')) streamingAt = seconds;
      // The segment that ends at endpos is fsync'd and renamed: klio's --endpos is reached.
      if (durableAt === undefined && line.includes('"wal.segment_archived"') && line.includes(`"${backlog.lastSegment}"`)) {
        durableAt = seconds;
        durableWall = Date.now();
        kwalAtEndpos = countFiles(walDir).kwal;
      }
    },
  });
  const exit = await r.exited;
  await new Promise((resolve) => log.end(resolve));
  if (exit.code !== 0) throw new Error(`klio wal stream exited ${exit.code ?? exit.signal} (log: ${logFile}):\n${tail(exit.output)}`);
  if (durableAt === undefined || streamingAt === undefined)
    throw new Error(`klio exited 0 without logging wal.streaming and wal.segment_archived for ${backlog.lastSegment} (log: ${logFile}):\n${tail(exit.output)}`);
  const files = countFiles(walDir);
  if (files.kwal + files.raw !== backlog.segments)
    throw new Error(`klio left ${files.kwal} .kwal + ${files.raw} raw segments, expected ${backlog.segments} (log: ${logFile})`);
  const seconds = durableAt;
  return {
    tool: "klio", round, seconds, mbps: backlog.bytes / MB / seconds,
    startupSeconds: streamingAt, streamingMbps: backlog.bytes / MB / (durableAt - streamingAt), files,
    klio: {
      kwalAtEndpos,
      compressDoneAfterEndposSeconds: files.newestKwalMtime ? Math.max(0, (files.newestKwalMtime - durableWall) / 1000) : null,
      exitAfterEndposSeconds: exit.seconds - durableAt,
    },
  };
}

// ---------------------------------------------------------------- latency runs

type LatencyMode = "none" | "pg_receivewal" | "klio" | "node_floor";

interface LatencyRun {
  mode: LatencyMode;
  round: number;
  latencyMs: number;
  tps: number;
  applicationName: string | null;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000, abort?: Promise<unknown>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let aborted: unknown;
  abort?.then((v) => (aborted = v ?? "exited"));
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (aborted !== undefined) throw new Error(`${what}: the process exited`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function setSyncNames(pg: PgServer, names: string): Promise<void> {
  await sqlOf(pg).unsafe(`alter system set synchronous_standby_names = '${names.replace(/'/g, "''")}'`);
  await sqlOf(pg).unsafe("select pg_reload_conf()");
}

async function pgbench(pg: PgServer, scriptFile: string, seconds: number): Promise<{ latencyMs: number; tps: number }> {
  const r = await runToEnd(path.join(PG_BIN, "pgbench"), ["-n", "-c", "1", "-j", "1", "-T", String(seconds), "-f", scriptFile, ...pgArgs(pg), "postgres"], "pgbench");
  const latency = /latency average = ([\d.]+) ms/.exec(r.output);
  const tps = /tps = ([\d.]+)/.exec(r.output);
  if (!latency || !tps) throw new Error(`cannot read pgbench's output:\n${tail(r.output)}`);
  return { latencyMs: Number(latency[1]), tps: Number(tps[1]) };
}

async function latencyRun(
  pg: PgServer, mode: LatencyMode, round: number, opts: Options, klio: KlioCommand, scriptFile: string, work: string,
): Promise<LatencyRun> {
  let tool: Running | undefined;
  const expectedName = mode === "none" ? "" : mode;
  try {
    if (mode !== "none") {
      const dir = path.join(work, `sync-${mode}-${round}`);
      mkdirSync(dir, { recursive: true });
      if (mode === "klio")
        tool = launch(klio.cmd, [...klio.prefix, "wal", "stream", "--repo", dir, "--cluster", "sync", "--pg", pg.connString(), "--slot", "klio_sync", "--synchronous", "--log-format", "json"]);
      else if (mode === "pg_receivewal")
        tool = launch(path.join(PG_BIN, "pg_receivewal"), ["-D", dir, "-S", "receivewal_sync", "--synchronous", "--no-loop", ...pgArgs(pg)]);
      else
        tool = launch(process.execPath, [path.join(ROOT, "scripts", "wal-floor.mjs"), pg.host, String(pg.port), "floor_sync", await sqlValue(pg, "select pg_current_wal_lsn()"), path.join(dir, "segment")]);
      // Only one walsender exists at a time: its application_name is the one to name.
      const name = await waitFor(`${mode} to stream`, async () => {
        const rows = await sqlOf(pg)`select application_name from pg_stat_replication where state = 'streaming'`;
        return rows.length === 1 ? String(rows[0]!.application_name) : undefined;
      }, 30_000, tool.exited);
      if (name !== expectedName) say(`note: ${mode} connects as application_name '${name}', not '${expectedName}'`);
      await setSyncNames(pg, name);
      await waitFor(`${mode} to be the synchronous standby`, async () => {
        const rows = await sqlOf(pg)`select sync_state from pg_stat_replication where application_name = ${name} and state = 'streaming'`;
        return rows[0]?.sync_state === "sync" ? true : undefined;
      }, 30_000, tool.exited);
      const { latencyMs, tps } = await pgbench(pg, scriptFile, opts.seconds);
      return { mode, round, latencyMs, tps, applicationName: name };
    }
    const { latencyMs, tps } = await pgbench(pg, scriptFile, opts.seconds);
    return { mode, round, latencyMs, tps, applicationName: null };
  } finally {
    if (mode !== "none") await setSyncNames(pg, "");
    if (tool) {
      const exit = await stopChild(tool, mode === "klio" ? "SIGTERM" : "SIGINT");
      if (mode === "klio" && exit.code !== 0) say(`klio (synchronous) exited ${exit.code ?? exit.signal}:\n${tail(exit.output, 10)}`);
    }
  }
}

// ---------------------------------------------------------------- report


// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const opts = parseOptions();
  const klio = await resolveKlio(opts.klio, { main: opts.klioMain, nodeArgs: opts.klioNodeArgs });
  const work = pgTempDir("klio-bench-wal-");
  const servers: PgServer[] = [];
  const cleanup = async () => {
    killChildren();
    for (const s of servers.splice(0)) await s.destroy().catch(() => {});
    if (!opts.keep) rmSync(work, { recursive: true, force: true });
  };
  cleanUpOnInterrupt("stopping servers and removing " + work, cleanup);

  const started = performance.now();
  const loadBefore = loadAverage();
  const pgVersion = execFileSync(path.join(PG_BIN, "pg_receivewal"), ["--version"]).toString().trim();
  say(`klio: ${klio.label}`);
  say(`pg_receivewal: ${pgVersion}; work directory ${work}${opts.keep ? " (kept)" : ""}`);
  const result: Record<string, unknown> = {
    klio: klio.label,
    pgReceivewal: pgVersion,
    node: process.version,
    options: { gb: opts.gb, load: opts.load, rounds: opts.rounds, seconds: opts.seconds, latencyRounds: opts.latencyRounds, gzip: opts.gzip, dropCaches: opts.dropCaches },
    units: "MB = 1048576 bytes",
  };
  const lines: string[] = [];
  let ingest: { receivewal: number; gzip: number | null; klio: number; ratio: number; met: boolean } | undefined;
  let latency: { none: number; receivewal: number; klio: number; ratio: number; met: boolean } | undefined;

  try {
    if (opts.ingest) {
      const tools: Tool[] = opts.gzip ? ["pg_receivewal", "klio", "pg_receivewal gzip:1"] : ["pg_receivewal", "klio"];
      const slotOf = (tool: Tool, round: number) => `${tool === "klio" ? "klio" : tool === "pg_receivewal" ? "receivewal" : "receivewal_gzip"}_bench_r${round}`;
      const slots = tools.flatMap((t) => Array.from({ length: opts.rounds }, (_, i) => slotOf(t, i + 1)));
      say(`starting PostgreSQL 15 for the ingest runs (${slots.length} slots)`);
      const pg = await startPostgres({
        version: 15, walSegmentMb: SEGMENT_MB, baseDir: path.join(work, "pg-ingest"),
        conf: {
          max_wal_size: "'16GB'", checkpoint_timeout: "'1h'", wal_keep_size: 0, shared_buffers: "'128MB'",
          max_replication_slots: slots.length + 4, max_wal_senders: 10, autovacuum: "off",
        },
      });
      servers.push(pg);
      const backlog = await generateBacklog(pg, opts.gb, opts.load, slots);
      say(`backlog: ${f0(backlog.bytes / MB)} MB (${backlog.segments} segments) from ${lsnText(backlog.startLsn)} to endpos ${lsnText(backlog.endpos)}, generated in ${f1(backlog.generateSeconds)} s`);
      const runs: IngestRun[] = [];
      for (let round = 1; round <= opts.rounds; round++) {
        for (const tool of rotate(tools, round - 1)) {
          if (opts.dropCaches) dropCaches();
          const out = path.join(work, `out-${round}-${tool.replace(/[^a-z0-9]+/g, "-")}`);
          const run = tool === "klio"
            ? await klioIngest(pg, klio, backlog, slotOf(tool, round), out, round, path.join(work, `klio-ingest-${round}.log`))
            : await receivewalIngest(pg, backlog, slotOf(tool, round), out, tool !== "pg_receivewal", round);
          runs.push(run);
          const extra = run.klio
            ? `; at endpos ${run.klio.kwalAtEndpos}/${backlog.segments} segments compressed, all ${run.klio.compressDoneAfterEndposSeconds === null ? "(none written)" : `${f1(run.klio.compressDoneAfterEndposSeconds)} s`} later, exit ${f1(run.klio.exitAfterEndposSeconds)} s later with ${run.files.raw} raw left`
            : "";
          say(`round ${round}: ${tool.padEnd(20)} ${f2(run.seconds).padStart(6)} s  ${f0(run.mbps).padStart(4)} MB/s  (start-up ${f2(run.startupSeconds)} s, then ${f0(run.streamingMbps)} MB/s${extra})`);
          rmSync(out, { recursive: true, force: true });
        }
      }
      const of = (tool: Tool) => runs.filter((r) => r.tool === tool);
      const med = (tool: Tool, pick: (r: IngestRun) => number) => median(of(tool).map(pick));
      const summary = (tool: Tool) => ({
        mbps: med(tool, (r) => r.mbps), streamingMbps: med(tool, (r) => r.streamingMbps), startupSeconds: med(tool, (r) => r.startupSeconds),
        storedBytes: of(tool)[0]!.files.storedBytes,
      });
      const rw = summary("pg_receivewal");
      const gz = opts.gzip ? summary("pg_receivewal gzip:1") : null;
      const kl = summary("klio");
      const klioRuns = of("klio");
      const ratio = kl.mbps / rw.mbps;
      const streamingRatio = kl.streamingMbps / rw.streamingMbps;
      ingest = { receivewal: rw.mbps, gzip: gz?.mbps ?? null, klio: kl.mbps, ratio, met: ratio >= TARGET_INGEST };
      const compressDone = klioRuns.map((r) => r.klio!.compressDoneAfterEndposSeconds).filter((x): x is number => x !== null);
      const compression = {
        medianKwalAtEndpos: median(klioRuns.map((r) => r.klio!.kwalAtEndpos)),
        medianCompressDoneAfterEndposSeconds: compressDone.length ? median(compressDone) : null,
        medianExitAfterEndposSeconds: median(klioRuns.map((r) => r.klio!.exitAfterEndposSeconds)),
        rawSegmentsLeftAtExit: klioRuns.map((r) => r.files.raw),
      };
      result.ingest = {
        backlog: {
          bytes: backlog.bytes, segments: backlog.segments, start: lsnText(backlog.startLsn), endpos: lsnText(backlog.endpos), load: backlog.load,
          pgbenchScale: backlog.pgbenchScale, randomRows: backlog.randomRows, generateSeconds: backlog.generateSeconds,
        },
        runs,
        median: { pg_receivewal: rw, "pg_receivewal gzip:1": gz, klio: kl },
        klioCompression: compression,
        ratio, streamingRatio, target: TARGET_INGEST, met: ingest.met,
      };
      lines.push(
        `ingest (${f0(backlog.bytes / MB)} MB ${backlog.load} backlog, median of ${opts.rounds})  pg_receivewal ${f0(rw.mbps)} MB/s` +
          (gz ? ` | pg_receivewal gzip:1 ${f0(gz.mbps)} MB/s` : "") +
          ` | klio ${f0(kl.mbps)} MB/s | ratio ${f2(ratio)}× (target ≥ ${TARGET_INGEST}×) ${ingest.met ? "met" : "MISSED"}`,
        `  without start-up  pg_receivewal ${f0(rw.streamingMbps)} MB/s (${f2(rw.startupSeconds)} s)` +
          (gz ? ` | gzip:1 ${f0(gz.streamingMbps)} MB/s (${f2(gz.startupSeconds)} s)` : "") +
          ` | klio ${f0(kl.streamingMbps)} MB/s (${f2(kl.startupSeconds)} s) | ratio ${f2(streamingRatio)}×`,
        `  klio compression  at endpos ${f0(compression.medianKwalAtEndpos)}/${backlog.segments} segments compressed; the rest ` +
          (compression.medianCompressDoneAfterEndposSeconds === null ? "(no .kwal written)" : `${f1(compression.medianCompressDoneAfterEndposSeconds)} s later`) +
          `; exit ${f1(compression.medianExitAfterEndposSeconds)} s after endpos; raw segments left at exit: ${compression.rawSegmentsLeftAtExit.join(", ")}` +
          `; stored ${f0(kl.storedBytes / MB)} MB` + (gz ? ` (gzip:1 ${f0(gz.storedBytes / MB)} MB)` : ""),
      );
      servers.splice(servers.indexOf(pg), 1);
      await pg.destroy();
    }

    if (opts.latency) {
      say("starting PostgreSQL 15 for the commit latency runs");
      const pg = await startPostgres({ version: 15, walSegmentMb: SEGMENT_MB, baseDir: path.join(work, "pg-latency"), conf: { shared_buffers: "'128MB'", synchronous_commit: "on" } });
      servers.push(pg);
      await sqlOf(pg).unsafe("create table bench_sync (id int, at timestamptz default now())");
      await sqlOf(pg).unsafe("select pg_create_physical_replication_slot('klio_sync', true)");
      await sqlOf(pg).unsafe("select pg_create_physical_replication_slot('receivewal_sync', true)");
      await sqlOf(pg).unsafe("select pg_create_physical_replication_slot('floor_sync', true)");
      const scriptFile = path.join(work, "insert.sql");
      writeFileSync(scriptFile, "INSERT INTO bench_sync (id) VALUES (1);\n");
      const modes: LatencyMode[] = ["none", "pg_receivewal", "klio", "node_floor"];
      const runs: LatencyRun[] = [];
      for (let round = 1; round <= opts.latencyRounds; round++) {
        for (const mode of rotate(modes, round - 1)) {
          const run = await latencyRun(pg, mode, round, opts, klio, scriptFile, work);
          runs.push(run);
          say(`round ${round}: synchronous standby ${mode.padEnd(14)} latency ${f2(run.latencyMs)} ms  (${f0(run.tps)} tps)`);
        }
      }
      const med = (mode: LatencyMode) => median(runs.filter((r) => r.mode === mode).map((r) => r.latencyMs));
      const ratio = med("klio") / med("pg_receivewal");
      latency = { none: med("none"), receivewal: med("pg_receivewal"), klio: med("klio"), ratio, met: ratio <= TARGET_LATENCY };
      const floor = med("node_floor");
      result.latency = {
        runs, medianMs: { none: latency.none, pg_receivewal: latency.receivewal, klio: latency.klio, node_floor: floor },
        nodeFloorRatio: floor / latency.receivewal,
        addedMs: { pg_receivewal: latency.receivewal - latency.none, klio: latency.klio - latency.none },
        ratio, target: TARGET_LATENCY, met: latency.met,
      };
      lines.push(
        `sync commit latency (1 client, ${opts.seconds} s × ${opts.latencyRounds})  none ${f2(latency.none)} ms | pg_receivewal ${f2(latency.receivewal)} ms | ` +
          `klio ${f2(latency.klio)} ms | ratio ${f2(ratio)}× (target ≤ ${TARGET_LATENCY}×) ${latency.met ? "met" : "MISSED"}`,
        `  Node floor (scripts/wal-floor.mjs: read, pwrite, fdatasync, reply; no klio code) ${f2(floor)} ms = ${f2(floor / latency.receivewal)}× pg_receivewal`,
      );
      servers.splice(servers.indexOf(pg), 1);
      await pg.destroy();
    }
  } catch (e) {
    say(`FAILED: ${e instanceof Error ? e.message : String(e)}`);
    if (opts.keep) say(`kept ${work}`);
    await cleanup();
    return 1;
  }
  await cleanup();
  result.seconds = (performance.now() - started) / 1000;
  // Other work on the machine (tests, builds) skews fsync and wake-up times: say how busy it was.
  result.loadAverage = { before: loadBefore, after: loadAverage() };
  result.met = (ingest?.met ?? true) && (latency?.met ?? true);
  const header = `klio WAL benchmark: klio = ${klio.label}; ${pgVersion}; fsync on; 16 MB segments; page cache ${opts.dropCaches ? "dropped before each run" : "warm (not dropped)"}; ${f0(result.seconds as number)} s; load average ${loadBefore} before, ${loadAverage()} after (${os.cpus().length} CPUs)`;
  const table = [header, ...lines].join("\n") + "\n";
  if (opts.json) {
    process.stderr.write("\n" + table);
    process.stdout.write(JSON.stringify(result, null, 2) + "\n");
  } else process.stdout.write("\n" + table);
  return 0;
}

process.exitCode = await main();
