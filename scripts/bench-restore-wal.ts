// `npm run bench:restore-wal`: how much `klio get-wal` as restore_command slows recovery,
// against `cp` from a local directory of plain segments (the issue's target: replaying 1 GB
// of WAL takes ≤ 1.25× the time it takes with cp).
//
// Method (Debian's PostgreSQL 15 from test/harness/postgres.ts; fsync on; 16 MB segments):
//
// 1. A server with pgbench tables (-s --scale) archives its WAL twice: PostgreSQL's own
//    archive_command copies each segment into a plain directory, and `klio wal stream` (its
//    own slot, created first) stores each in a klio repository, compressed (we wait until every
//    segment of the run is a .kwal).
// 2. pg_basebackup -Fp -X none -c fast, then CHECKPOINT, then pgbench (4 clients,
//    synchronous_commit off, --pgbench-seconds), then updates of a quarter of
//    pgbench_accounts at a time until --gb GB of WAL are written, then pg_switch_wal().
// 3. The base backup is copied into a fresh directory and recovered to the end of the WAL
//    (no target: recovery ends where the archive ends, then the server promotes), once per
//    restore_command variant and round, the order rotated every round:
//      cp          cp PLAIN/%f %p
//      klio        klio get-wal %f %p --repo R --cluster C                    (no spool)
//      klio-spool  klio get-wal %f %p --repo R --cluster C --spool DATA/pg_wal/klio-spool
//      klio-mv     mv -f SPOOL/ID/%f %p 2>/dev/null || { { [ -e ARCHIVE/%f.kwal ] || …; } && klio get-wal … --spool …; }
//                  (restoreCommandWithSpool: a spooled segment costs a rename, a file the
//                  archive does not have costs a few `test`s; neither starts klio)
//    Time: from the server log's first line to its "redo done" line (the replay, which the
//    restore_command is part of); the time to "ready to accept connections" (after the
//    end-of-recovery checkpoint, the same work for every variant) is printed beside it. Every
//    run must end its redo at the same LSN, or the benchmark fails: a restore_command that
//    missed a segment would end recovery early and look fast.
// 4. Medians per variant; ratios against cp.
//
// klio is dist/klio (rebuilt first if stale), or --klio-bin PATH (an executable built with
// `node scripts/build.mjs --out PATH`), or the sources (--klio src; Node + tsx start-up per
// call is several times the executable's, so the ratios then say little). Usage:
//   npm run bench:restore-wal -- [--gb 1] [--rounds 2] [--scale 20] [--pgbench-seconds 30] [--prefetch 16]
//                                [--variants cp,klio-spool,klio-mv,klio] [--klio auto|dist|src]
//                                [--klio-bin PATH] [--json] [--keep]
// KLIO_BENCH_GB and KLIO_BENCH_ROUNDS set the same from the environment.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { appendFileSync, chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { binDir, freePort, pgTempDir, startPostgres, type PgServer } from "../test/harness/postgres.ts";
import { MB, say, median, rotate, f2 } from "./bench-common.ts";
import { ROOT } from "../test/harness/klio.ts";
import { openSpool, LOCK_FILE } from "../src/wal/wal-spool.ts";
import { restoreCommandWithSpool } from "../src/wal/wal-prefetch.ts";
import { shellQuote } from "../src/util/self-command.ts";

const SEGMENT = 16 * MB;
const PG_BIN = binDir(15);
const TARGET = 1.25;
const CLUSTER = "bench";
const VARIANTS = ["cp", "klio", "klio-spool", "klio-mv"] as const;
type Variant = (typeof VARIANTS)[number];

// ---------------------------------------------------------------- options

interface Options {
  gb: number;
  rounds: number;
  scale: number;
  tpcbSeconds: number;
  prefetch: number;
  variants: Variant[];
  klio: "auto" | "dist" | "src";
  klioBin: string | undefined;
  json: boolean;
  keep: boolean;
}

function parseOptions(): Options {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        gb: { type: "string" }, rounds: { type: "string" }, scale: { type: "string" }, "pgbench-seconds": { type: "string" }, prefetch: { type: "string" },
        variants: { type: "string" }, klio: { type: "string" }, "klio-bin": { type: "string" },
        json: { type: "boolean" }, keep: { type: "boolean" }, help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    fail((e as Error).message);
  }
  if (values.help) {
    process.stdout.write(
      "usage: npm run bench:restore-wal -- [--gb 1] [--rounds 2] [--scale 20] [--pgbench-seconds 30] [--prefetch 16]\n" +
        "                                    [--variants cp,klio-spool,klio-mv,klio] [--klio auto|dist|src]\n" +
        "                                    [--klio-bin PATH] [--json] [--keep]\n",
    );
    process.exit(0);
  }
  const num = (name: string, text: string | undefined, dflt: number, min: number): number => {
    if (text === undefined || text === "") return dflt;
    const n = Number(text);
    if (!Number.isFinite(n) || n < min) fail(`--${name} must be a number ≥ ${min}, got "${text}"`);
    return n;
  };
  const klio = values.klio ?? "auto";
  if (klio !== "auto" && klio !== "dist" && klio !== "src") fail(`--klio must be auto, dist or src, got "${klio}"`);
  const variants = (values.variants ?? "cp,klio-spool,klio-mv,klio").split(",").map((v) => v.trim()).filter(Boolean);
  for (const v of variants) if (!(VARIANTS as readonly string[]).includes(v)) fail(`--variants: unknown variant "${v}" (${VARIANTS.join(", ")})`);
  if (!variants.includes("cp")) fail("--variants must include cp (the reference)");
  if (values["klio-bin"] !== undefined && !existsSync(values["klio-bin"])) fail(`--klio-bin ${values["klio-bin"]} does not exist`);
  return {
    gb: num("gb", values.gb ?? process.env.KLIO_BENCH_GB, 1, 0.05),
    rounds: Math.round(num("rounds", values.rounds ?? process.env.KLIO_BENCH_ROUNDS, 2, 1)),
    scale: Math.round(num("scale", values.scale, 20, 1)),
    tpcbSeconds: Math.round(num("pgbench-seconds", values["pgbench-seconds"], 30, 0)),
    prefetch: Math.round(num("prefetch", values.prefetch, 16, 1)),
    variants: variants as Variant[],
    klio,
    klioBin: values["klio-bin"] && path.resolve(values["klio-bin"]),
    json: Boolean(values.json),
    keep: Boolean(values.keep),
  };
}

function fail(message: string): never {
  process.stderr.write(`bench-restore-wal: ${message}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------- processes

const children = new Set<ChildProcess>();

/** PostgreSQL refuses root: its tools run as `postgres` when we are root. */
function pgUser(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {};
  return { uid: Number(execFileSync("id", ["-u", "postgres"]).toString()), gid: Number(execFileSync("id", ["-g", "postgres"]).toString()) };
}

function run(cmd: string, args: string[], opts: { asPg?: boolean; what?: string; onLine?: (line: string) => void } = {}): { child: ChildProcess; done: Promise<string> } {
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], ...(opts.asPg ? pgUser() : {}) });
  children.add(child);
  let out = "";
  for (const s of [child.stdout!, child.stderr!]) {
    createInterface({ input: s }).on("line", (line) => {
      if (out.length < 4 * MB) out += line + "\n";
      opts.onLine?.(line);
    });
  }
  const done = new Promise<string>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => {
      children.delete(child);
      if (code === 0) resolve(out);
      else reject(new Error(`${opts.what ?? cmd} exited ${code ?? signal}:\n${out.trimEnd().split("\n").slice(-20).join("\n")}`));
    });
  });
  return { child, done };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------- klio

/** argv prefix of the klio to measure, and what it is. */
async function resolveKlio(o: Options): Promise<{ argv: string[]; label: string; fromSources: boolean }> {
  if (o.klioBin) return { argv: [o.klioBin], label: `${o.klioBin} (given with --klio-bin)`, fromSources: false };
  const require = createRequire(path.join(ROOT, "package.json"));
  const sources = { argv: [process.execPath, "--import", require.resolve("tsx"), path.join(ROOT, "src", "cli", "main.ts")], label: "the sources via node --import tsx", fromSources: true };
  if (o.klio === "src") return sources;
  const dist = path.join(ROOT, "dist", "klio");
  if (o.klio === "auto") {
    try {
      await run(process.execPath, [path.join(ROOT, "scripts", "build.mjs"), "--if-stale"], { what: "scripts/build.mjs --if-stale" }).done;
    } catch (e) {
      say(`building dist/klio failed, measuring the sources instead (their start-up is slower):\n${(e as Error).message}`);
      return { ...sources, label: sources.label + " (the build of dist/klio failed)" };
    }
  }
  if (!existsSync(dist)) fail("dist/klio does not exist: run npm run build, or pass --klio-bin");
  return { argv: [dist], label: o.klio === "auto" ? "dist/klio (built from these sources)" : "dist/klio (not rebuilt)", fromSources: false };
}

// ---------------------------------------------------------------- the WAL to replay

interface Prepared {
  base: string;
  plain: string;
  repo: string;
  systemIdentifier: string;
  startSegment: string;
  lastSegment: string;
  segments: number;
  walBytes: number;
  /** WAL written by pgbench's transactions; the rest by quarter-table updates. */
  tpcbBytes: number;
  updates: number;
  generateSeconds: number;
  storedBytes: number;
}

const segmentNo = (name: string) => BigInt("0x" + name.slice(8, 16)) * 256n + BigInt("0x" + name.slice(16, 24));

async function prepare(o: Options, klio: { argv: string[] }, work: string, servers: PgServer[]): Promise<Prepared> {
  const plain = path.join(work, "plain");
  const repo = path.join(work, "repo");
  const base = path.join(work, "base");
  mkdirSync(plain);
  const { uid, gid } = pgUser();
  if (uid !== undefined) execFileSync("chown", [`${uid}:${gid}`, plain]);
  say("starting PostgreSQL 15");
  const pg = await startPostgres({
    version: 15, walSegmentMb: 16, baseDir: path.join(work, "primary"),
    conf: {
      archive_mode: "on", archive_command: `'cp %p ${plain}/%f'`, max_wal_size: "'16GB'", checkpoint_timeout: "'1h'",
      shared_buffers: "'128MB'", synchronous_commit: "off", autovacuum: "off", wal_keep_size: 0,
    },
  });
  servers.push(pg);
  const sql = pg.sql();
  const pgArgs = ["-h", pg.host, "-p", String(pg.port), "-U", "postgres"];
  say(`pgbench -i -s ${o.scale}`);
  await run(path.join(PG_BIN, "pgbench"), ["-i", "-q", "-s", String(o.scale), ...pgArgs, "postgres"], { what: "pgbench -i" }).done;

  // The slot exists (RESERVE_WAL) before the base backup starts: the archive has its WAL.
  say("klio wal stream into the repository");
  let streaming = false;
  const receiver = run(klio.argv[0]!, [...klio.argv.slice(1), "wal", "stream", "--repo", repo, "--cluster", CLUSTER, "--pg", pg.connString(), "--create-slot", "--log-format", "json"], {
    what: "klio wal stream",
    onLine: (line) => void (line.includes('"wal.streaming"') && (streaming = true)),
  });
  receiver.done.catch(() => {});
  await waitFor("klio to stream", () => (streaming ? true : receiver.child.exitCode !== null ? Promise.reject(new Error("klio wal stream exited")) : undefined), 60_000);

  say("pg_basebackup -Fp -X none -c fast");
  await run(path.join(PG_BIN, "pg_basebackup"), ["-D", base, "-Fp", "-X", "none", "-c", "fast", ...pgArgs], { what: "pg_basebackup" }).done;
  const label = readFileSync(path.join(base, "backup_label"), "utf8");
  const startSegment = /START WAL LOCATION: .* \(file ([0-9A-F]{24})\)/.exec(label)?.[1];
  if (!startSegment) throw new Error(`cannot read the start segment from backup_label:\n${label}`);
  const [{ id }] = await sql`select system_identifier::text as id from pg_control_system()`;

  await sql`checkpoint`;
  const [{ lsn: from }] = await sql`select pg_current_wal_lsn()::text as lsn`;
  const t0 = performance.now();
  const target = o.gb * 1024 * MB;
  const written = async () => Number((await sql`select pg_wal_lsn_diff(pg_current_wal_lsn(), ${from}::pg_lsn)::bigint::text as b`)[0]!.b);
  // pgbench's transactions write only a few MB/s of WAL here: a share of them (random
  // single-row updates, slow to replay), then updates of a quarter of pgbench_accounts
  // at a time (full-page images and sequential heap changes, fast to replay) up to --gb.
  say(`pgbench (4 clients, ${o.tpcbSeconds} s), then updates of pgbench_accounts until ${o.gb} GB of WAL are written`);
  if (o.tpcbSeconds > 0) await run(path.join(PG_BIN, "pgbench"), ["-n", "-c", "4", "-j", "2", "-T", String(o.tpcbSeconds), ...pgArgs, "postgres"], { what: "pgbench" }).done;
  const tpcbBytes = await written();
  let updates = 0;
  while ((await written()) < target) await sql.unsafe(`update pgbench_accounts set abalance = abalance + 1 where aid % 4 = ${updates++ % 4}`);
  const generateSeconds = (performance.now() - t0) / 1000;
  const [{ name: lastSegment }] = await sql`select pg_walfile_name(pg_switch_wal()) as name`;
  const segments = Number(segmentNo(lastSegment) - segmentNo(startSegment)) + 1;
  say(`WAL from ${startSegment} to ${lastSegment}: ${segments} segments (${segments * 16} MB; pgbench ${(tpcbBytes / MB).toFixed(0)} MB, then ${updates} quarter-table updates) in ${generateSeconds.toFixed(0)} s; waiting for both archives`);

  const walDir = path.join(repo, "wal", CLUSTER);
  await waitFor("PostgreSQL's archive_command", () => (existsSync(path.join(plain, lastSegment)) ? true : undefined), 600_000);
  const storedBytes = await waitFor("klio to store every segment compressed", () => {
    let stored = 0;
    let bytes = 0;
    for (const f of readdirSync(walDir)) {
      if (/^[0-9A-F]{24}$/.test(f) && f >= startSegment && f <= lastSegment) return undefined; // not yet compressed
      if (/^[0-9A-F]{24}\.kwal$/.test(f) && f.slice(0, 24) >= startSegment && f.slice(0, 24) <= lastSegment) {
        stored++;
        bytes += statSync(path.join(walDir, f), { throwIfNoEntry: false })?.size ?? 0;
      }
    }
    return stored === segments ? bytes : undefined;
  }, 600_000);
  receiver.child.kill("SIGTERM");
  await receiver.done.catch((e) => say(`klio wal stream: ${(e as Error).message}`));
  await pg.destroy();
  servers.splice(servers.indexOf(pg), 1);
  // PostgreSQL runs restore_command as its own user: let it read the repository.
  execFileSync("chmod", ["-R", "a+rX", repo]);
  return { base, plain, repo, systemIdentifier: String(id), startSegment, lastSegment, segments, walBytes: segments * SEGMENT, tpcbBytes, updates, generateSeconds, storedBytes };
}

// ---------------------------------------------------------------- one recovery

interface RecoveryRun {
  variant: Variant;
  round: number;
  /** First log line → "redo done". */
  redoSeconds: number;
  /** First log line → "database system is ready to accept connections". */
  readySeconds: number;
  redoDoneAt: string;
  restored: number;
  prefetch?: { fetched: number; taken: number; starts: number };
}

function restoreCommand(variant: Variant, p: Prepared, klio: { argv: string[] }, data: string, o: Options): string {
  if (variant === "cp") return `cp ${shellQuote([p.plain])}/%f %p`;
  const spool = path.join(data, "pg_wal", "klio-spool");
  const flags = ["--repo", p.repo, "--cluster", CLUSTER, ...(variant === "klio" ? [] : ["--spool", spool, "--prefetch", String(o.prefetch)])];
  const getWal = `${shellQuote([...klio.argv, "get-wal"])} %f %p ${shellQuote(flags)}`;
  if (variant !== "klio-mv") return getWal;
  const archiveDir = path.join(p.repo, "wal", CLUSTER);
  return restoreCommandWithSpool(getWal, openSpool(spool, archiveDir, p.systemIdentifier).dir, { archiveDir, partial: false });
}

function logTime(line: string): number {
  const m = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC/.exec(line);
  if (!m) throw new Error(`no timestamp in log line: ${line}`);
  return Date.parse(m[1]!.replace(" ", "T") + "Z");
}

async function recover(variant: Variant, round: number, p: Prepared, klio: { argv: string[] }, work: string, o: Options): Promise<RecoveryRun> {
  const dir = path.join(work, `run-${round}-${variant}`);
  const data = path.join(dir, "data");
  const logFile = path.join(dir, "server.log");
  mkdirSync(dir);
  execFileSync("cp", ["-a", p.base, data]);
  const port = await freePort();
  appendFileSync(path.join(data, "postgresql.auto.conf"), [
    `restore_command = '${restoreCommand(variant, p, klio, data, o).replace(/'/g, "''")}'`,
    `port = ${port}`, `unix_socket_directories = '${dir}'`, "archive_mode = off", "log_line_prefix = '%m [%p] '", "",
  ].join("\n"));
  writeFileSync(path.join(data, "recovery.signal"), "");
  const { uid, gid } = pgUser();
  if (uid !== undefined) execFileSync("chown", ["-R", `${uid}:${gid}`, dir]);
  chmodSync(data, 0o700);
  const pgCtl = (args: string[]) => run(path.join(PG_BIN, "pg_ctl"), ["-D", data, ...args], { asPg: true, what: `pg_ctl ${args.at(-1)}` }).done;
  try {
    await pgCtl(["-l", logFile, "-W", "start"]);
    let result: RecoveryRun;
    try {
      const text = await waitFor(`recovery (${variant}) to finish`, () => {
        const t = existsSync(logFile) ? readFileSync(logFile, "utf8") : "";
        if (/FATAL|PANIC/.test(t) && !/database system is ready to accept connections/.test(t)) throw new Error(`the server failed (${logFile}):\n${t.slice(-3000)}`);
        return /database system is ready to accept connections/.test(t) ? t : undefined;
      }, 3_600_000);
      const lines = text.split("\n");
      const first = logTime(lines[0]!);
      const redo = lines.find((l) => l.includes("redo done at"));
      const ready = lines.find((l) => l.includes("database system is ready to accept connections"));
      if (!redo || !ready) throw new Error(`no "redo done" in ${logFile}`);
      result = {
        variant, round, redoSeconds: (logTime(redo) - first) / 1000, readySeconds: (logTime(ready) - first) / 1000,
        redoDoneAt: /redo done at ([0-9A-F]+\/[0-9A-F]+)/.exec(redo)![1]!, restored: lines.filter((l) => l.includes("restored log file")).length,
      };
    } finally {
      await pgCtl(["-m", "fast", "-w", "stop"]).catch(() => {});
      await stopPrefetcher(p, data);
    }
    // Read once the prefetcher has logged its stop: its counts are in that line.
    const spoolLog = path.join(data, "pg_wal", "klio-spool", "prefetch.log");
    if (existsSync(spoolLog)) {
      const events = readFileSync(spoolLog, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as { event: string; fetched?: number; taken?: number });
      const stops = events.filter((e) => e.event === "prefetch.stop");
      result.prefetch = {
        starts: events.filter((e) => e.event === "prefetch.start").length,
        fetched: stops.reduce((s, e) => s + (e.fetched ?? 0), 0), taken: stops.reduce((s, e) => s + (e.taken ?? 0), 0),
      };
    }
    return result;
  } finally {
    if (!o.keep) rmSync(dir, { recursive: true, force: true });
  }
}

/** The prefetcher (started by get-wal, detached) outlives the server by its idle time: stop it. */
async function stopPrefetcher(p: Prepared, data: string): Promise<void> {
  const spool = openSpool(path.join(data, "pg_wal", "klio-spool"), path.join(p.repo, "wal", CLUSTER), p.systemIdentifier);
  const lock = path.join(spool.dir, LOCK_FILE);
  if (!existsSync(lock)) return;
  const pid = Number(readFileSync(lock, "utf8").trim());
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await sleep(50);
  }
}

// ---------------------------------------------------------------- report


async function main(): Promise<number> {
  const o = parseOptions();
  const klio = await resolveKlio(o);
  const work = pgTempDir("klio-bench-restore-wal-");
  const servers: PgServer[] = [];
  const cleanup = async () => {
    for (const c of children) c.kill("SIGKILL");
    for (const s of servers.splice(0)) await s.destroy().catch(() => {});
    if (!o.keep) rmSync(work, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void cleanup().finally(() => process.exit(130)));
  const loadBefore = os.loadavg()[0]!.toFixed(2);
  const started = performance.now();
  say(`klio: ${klio.label}; work directory ${work}${o.keep ? " (kept)" : ""}`);
  if (klio.fromSources) say("note: klio runs from the sources: each call pays Node + tsx start-up, unlike the executable");
  const runs: RecoveryRun[] = [];
  let prepared: Prepared;
  try {
    prepared = await prepare(o, klio, work, servers);
    say(`klio stored the ${prepared.segments} segments in ${(prepared.storedBytes / MB).toFixed(0)} MB`);
    for (let round = 1; round <= o.rounds; round++) {
      for (const variant of rotate(o.variants, round - 1)) {
        const r = await recover(variant, round, prepared, klio, work, o);
        runs.push(r);
        const pf = r.prefetch ? `; prefetcher: ${r.prefetch.starts} start(s), ${r.prefetch.fetched} spooled, ${r.prefetch.taken} taken from the spool` : "";
        say(`round ${round}: ${variant.padEnd(10)} redo ${f2(r.redoSeconds).padStart(7)} s, ready ${f2(r.readySeconds).padStart(7)} s (redo done at ${r.redoDoneAt}, ${r.restored} files restored${pf})`);
      }
    }
    const ends = new Set(runs.map((r) => r.redoDoneAt));
    if (ends.size !== 1) throw new Error(`recoveries ended at different LSNs: ${runs.map((r) => `${r.variant} ${r.redoDoneAt}`).join(", ")}`);
  } catch (e) {
    say(`FAILED: ${e instanceof Error ? e.message : String(e)}`);
    await cleanup();
    return 1;
  }
  await cleanup();
  const med = (v: Variant, pick: (r: RecoveryRun) => number) => median(runs.filter((r) => r.variant === v).map(pick));
  const cpRedo = med("cp", (r) => r.redoSeconds);
  // Other work on the machine moves whole rounds: the ratio within each round (same load,
  // minutes apart) is printed beside the ratio of the medians.
  const cpOf = (round: number) => runs.find((r) => r.variant === "cp" && r.round === round)!.redoSeconds;
  const summary = o.variants.map((v) => {
    const redo = med(v, (r) => r.redoSeconds);
    const perRound = runs.filter((r) => r.variant === v).map((r) => r.redoSeconds / cpOf(r.round));
    return { variant: v, redoSeconds: redo, readySeconds: med(v, (r) => r.readySeconds), ratio: redo / cpRedo, roundRatios: perRound, medianRoundRatio: median(perRound) };
  });
  const seconds = (performance.now() - started) / 1000;
  const header =
    `klio restore-WAL benchmark: klio = ${klio.label}; PostgreSQL 15; ${prepared.segments} segments (${(prepared.walBytes / MB).toFixed(0)} MB of WAL: pgbench ${(prepared.tpcbBytes / MB).toFixed(0)} MB, then ${prepared.updates} quarter-table updates; ` +
    `${(prepared.storedBytes / MB).toFixed(0)} MB stored); median of ${o.rounds} rotated round(s); ${seconds.toFixed(0)} s; load average ${loadBefore} before, ${os.loadavg()[0]!.toFixed(2)} after (${os.cpus().length} CPUs)`;
  const lines = summary.map((s) =>
    `  ${s.variant.padEnd(10)} redo ${f2(s.redoSeconds).padStart(7)} s  ready ${f2(s.readySeconds).padStart(7)} s` +
      (s.variant === "cp" ? "" : `  ratio ${f2(s.ratio)}× (target ≤ ${TARGET}×) ${s.ratio <= TARGET ? "met" : "MISSED"}; per round ${s.roundRatios.map(f2).join(", ")} (median ${f2(s.medianRoundRatio)}×)`),
  );
  const table = [header, ...lines].join("\n") + "\n";
  if (o.json) {
    process.stderr.write("\n" + table);
    process.stdout.write(JSON.stringify({ klio: klio.label, options: o, prepared: { ...prepared, base: undefined, plain: undefined, repo: undefined }, runs, summary, target: TARGET, seconds }, null, 2) + "\n");
  } else process.stdout.write("\n" + table);
  return 0;
}

process.exitCode = await main();
