// `npm start`: the whole job of the appliance in about a minute, on embedded defaults.
//
//   1. an embedded PostgreSQL 18 (the npm binaries) in DIR/pg, the primary;
//   2. a config file DIR/klio.json (tokens in files) and `klio server start` on it: the daemon
//      streams the primary's WAL into DIR/repo and answers the HTTP API on a free port;
//   3. rows, a base backup through the API, more rows, a restore point, more rows;
//   4. `klio restore` to the restore point into DIR/restored/data, that cluster started, and the
//      row counts compared: the restored cluster must have exactly the rows before the point;
//   5. curl lines for the running API, then a few rows every five seconds until Ctrl-C/SIGTERM
//      (or --seconds N). Everything it started is stopped on the way out.
//
// DIR/demo.json says what a running demo started; a demo that finds one (it was killed with
// kill -9, or still runs elsewhere) stops whatever that run left running before it starts afresh.
//
// Usage: npm start -- [--seconds N] [--dir DIR] [--pause SECONDS]
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import process from "node:process";
import type postgres from "postgres";
import { freePort, startDataDir, startPostgres, stopPrefetchers, type PgServer } from "../test/harness/postgres.ts";
import { KLIO_BIN, ROOT, klioArgv, runKlioAsync } from "../test/harness/klio.ts";
import { shareRepo } from "../test/harness/backup.ts";
import { formatLsn, parseLsn, parseSegmentName, parseSegmentSize, segmentNumber, type Lsn } from "../src/pg/lsn.ts";

interface Options {
  /** Seconds of the last phase (rows every five seconds); Infinity: until Ctrl-C or SIGTERM. */
  seconds: number;
  dir: string;
  /** Seconds between the steps, for a person to read them. */
  pause: number;
}

const USAGE = "usage: npm start -- [--seconds N] [--dir DIR] [--pause SECONDS]";
const HELP = `${USAGE}

Runs the appliance on a PostgreSQL 18 of its own: klio server start with a generated config,
WAL streaming, a backup through the API, rows, a restore point, more rows, and a point-in-time
restore to that restore point with the row counts side by side; then rows every five seconds.

  --seconds N        stop after N seconds of the last phase (default: until Ctrl-C)
  --dir DIR          where everything goes (default klio-demo; a previous demo there is replaced,
                     any other non-empty directory refused)
  --pause SECONDS    pause between the steps, to read along (default 2; 0: none)`;
const RESTORE_POINT = "before_the_last_rows";
const ROWS = { first: 1000, beforePoint: 500, afterPoint: 700, everyTick: 100 } as const;
const TICK_MS = 5000;
/** What a demo directory holds; any other entry means the directory is someone else's. */
const DEMO_ENTRIES = new Set(["pg", "repo", "state", "restored", "klio.json", "admin.token", "read.token", "server.log", "demo.json"]);

function parseOptions(argv: string[]): Options {
  const opts: Options = { seconds: Infinity, dir: "klio-demo", pause: 2 };
  const number = (flag: string, v: string | undefined): number => {
    const n = v === undefined || v.trim() === "" ? NaN : Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`${flag} needs a number of seconds (0 or more), found ${v === undefined ? "nothing" : JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.startsWith("--") && a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = () => inline ?? argv[++i];
    if (flag === "--seconds") opts.seconds = number(flag, value());
    else if (flag === "--pause") opts.pause = number(flag, value());
    else if (flag === "--dir") {
      const v = value();
      if (v === undefined || v === "") throw new Error("--dir needs a directory");
      opts.dir = v;
    } else if (flag === "--help" || flag === "-h") {
      console.log(HELP);
      process.exit(0);
    } else throw new Error(`unknown flag ${JSON.stringify(a)}`);
  }
  return opts;
}

/** False once stdout is gone (the terminal closed, `| head` done): the demo then stops quietly. */
let stdoutOpen = true;
const say = (text: string) => {
  if (stdoutOpen) console.log(`[demo] ${text}`);
};
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A path as the person typed it would: relative to the working directory when inside it. */
function shown(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel !== "" && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel : p;
}

// ---------------------------------------------------------------------------------------
// Processes: what a previous run left behind, found by its marker, its postmaster.pid files
// and the command lines that name the demo directory.

function commandLine(pid: number): string[] | null {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((a) => a !== "");
  } catch {
    return null;
  }
}

/** State letter and parent of a process, or null when there is none (or only its zombie). */
function procStat(pid: number): { state: string; ppid: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return state === "Z" || state === "X" ? null : { state: state!, ppid: Number(ppid) };
  } catch {
    return null;
  }
}

const isRunning = (pid: number) => procStat(pid) !== null;

function ancestors(): Set<number> {
  const out = new Set<number>();
  for (let pid = process.pid; pid > 1 && !out.has(pid);) {
    out.add(pid);
    pid = procStat(pid)?.ppid ?? 0;
  }
  return out;
}

/** The spellings of a directory a command line may use. */
function dirForms(dir: string): string[] {
  const forms = [path.resolve(dir)];
  try {
    forms.push(realpathSync(dir));
  } catch {
    // not there (any more)
  }
  return [...new Set(forms)];
}

const mentions = (args: string[], forms: string[]) => args.some((a) => forms.some((d) => a === d || a.includes(d + "/") || a.endsWith("=" + d)));

/** Processes of the kinds a demo starts (node, klio, postgres, pg_ctl) naming the directory; never this one or its parents. */
function processesIn(dir: string): { pid: number; args: string[] }[] {
  const forms = dirForms(dir);
  const mine = ancestors();
  const kinds = new Set(["node", "klio", "postgres", "pg_ctl", path.basename(process.execPath)]);
  const out: { pid: number; args: string[] }[] = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid <= 1 || mine.has(pid)) continue;
    const args = commandLine(pid);
    if (args && args.length > 0 && (kinds.has(path.basename(args[0]!)) || args[0] === KLIO_BIN) && mentions(args, forms) && isRunning(pid)) out.push({ pid, args });
  }
  return out;
}

/** Sends `signal`, waits up to graceMs, then SIGKILL to what is left; resolves when all are gone. */
async function terminate(pids: number[], signal: NodeJS.Signals, graceMs: number): Promise<void> {
  const send = (pid: number, s: NodeJS.Signals) => {
    try {
      process.kill(pid, s);
    } catch {
      // gone already
    }
  };
  pids.forEach((pid) => send(pid, signal));
  for (const deadline = Date.now() + graceMs; pids.some(isRunning) && Date.now() < deadline;) await sleep(100);
  pids.filter(isRunning).forEach((pid) => send(pid, "SIGKILL"));
  for (const deadline = Date.now() + 10_000; pids.some(isRunning) && Date.now() < deadline;) await sleep(100);
  const stuck = pids.filter(isRunning);
  if (stuck.length > 0) throw new Error(`processes ${stuck.join(", ")} do not exit even on SIGKILL`);
}

/**
 * Stops the processes of a demo in DIR (and `extra`, when they name it): klio first (a daemon
 * flushes its receiver on SIGTERM, a restore removes what it wrote), then the PostgreSQL
 * servers (SIGINT: fast shutdown). Returns what it stopped, for a person to read.
 */
async function stopLeftovers(dir: string, extra: number[] = []): Promise<string[]> {
  const found = processesIn(dir);
  for (const pid of extra) {
    const args = commandLine(pid);
    if (args && isRunning(pid) && !found.some((p) => p.pid === pid) && !ancestors().has(pid) && mentions(args, dirForms(dir))) found.push({ pid, args });
  }
  const isPostgres = (p: { args: string[] }) => path.basename(p.args[0]!) === "postgres";
  const klio = found.filter((p) => !isPostgres(p)).map((p) => p.pid);
  const servers = found.filter(isPostgres).map((p) => p.pid);
  const out: string[] = [];
  if (klio.length > 0) {
    await terminate(klio, "SIGTERM", 20_000);
    out.push(`klio (pid ${klio.join(", ")})`);
  }
  if (servers.length > 0) {
    await terminate(servers, "SIGINT", 30_000);
    out.push(`PostgreSQL (pid ${servers.join(", ")})`);
  }
  return out;
}

interface Marker {
  pid: number;
  startedAt: string;
  daemon: { pid: number } | null;
  servers: { role: "primary" | "restored"; dataDir: string; port: number }[];
}

function postmasterOf(dataDir: string): number | null {
  try {
    const pid = Number(readFileSync(path.join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
    const args = Number.isInteger(pid) && pid > 1 ? commandLine(pid) : null;
    return args && mentions(args, dirForms(dataDir)) && isRunning(pid) ? pid : null;
  } catch {
    return null;
  }
}

/**
 * Makes DIR ready for a fresh demo: a previous run still running is stopped (it stops what it
 * started), then whatever a killed run left behind (its daemon, its PostgreSQL servers, a
 * get-wal prefetcher, a restore), then the directory is removed. Refuses a directory that is
 * not a demo's.
 */
async function replacePrevious(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  if (!statSync(dir).isDirectory()) throw new UsageError(`${shown(dir)} is not a directory: give another --dir`);
  const entries = readdirSync(dir);
  if (entries.length === 0) return;
  if (!entries.includes("demo.json") && !entries.every((e) => DEMO_ENTRIES.has(e))) {
    throw new UsageError(`${shown(dir)} is not empty and holds no klio demo: give another --dir`);
  }
  say(`replacing the previous demo in ${shown(dir)}`);
  let marker: Partial<Marker> = {};
  try {
    marker = JSON.parse(readFileSync(path.join(dir, "demo.json"), "utf8")) as Partial<Marker>;
  } catch {
    // no marker (an older demo, or it was killed before writing one): the directory says enough
  }
  const stopped: string[] = [];
  // A demo still running stops what it started itself (its stop() takes a few seconds).
  const previous = marker.pid;
  if (typeof previous === "number" && previous !== process.pid && isRunning(previous) && (commandLine(previous) ?? []).some((a) => a.endsWith("demo.ts"))) {
    say(`  the demo of pid ${previous} is still running: stopping it`);
    await terminate([previous], "SIGTERM", 60_000);
    stopped.push(`the demo (pid ${previous})`);
  }
  const dataDirs = [...(marker.servers ?? []).map((s) => s.dataDir), path.join(dir, "pg", "data"), path.join(dir, "restored", "data")];
  const extra = [...dataDirs.map(postmasterOf), marker.daemon?.pid ?? null].filter((pid): pid is number => pid !== null);
  const left = await stopLeftovers(dir, extra);
  if (left.length > 0) stopped.push(left.join("; "));
  if (stopped.length > 0) say(`  stopped what it left running: ${stopped.join("; ")}`);
  rmSync(dir, { recursive: true, force: true });
}

class UsageError extends Error {}

/** PostgreSQL runs as the postgres user when we are root: it must be able to reach DIR. */
function checkReachable(dir: string): void {
  if (process.getuid?.() !== 0) return;
  for (let d = path.dirname(path.resolve(dir)); ; d = path.dirname(d)) {
    if (existsSync(d) && (statSync(d).mode & 0o001) === 0) {
      throw new UsageError(`${d} is not searchable by others, so PostgreSQL (run as the postgres user) cannot reach ${shown(dir)}: give a --dir elsewhere`);
    }
    if (d === path.dirname(d)) return;
  }
}

// ---------------------------------------------------------------------------------------
// The API, as a user's script would talk to it.

interface Api {
  url: string;
  get<T>(route: string): Promise<T>;
  post<T>(route: string, body: unknown): Promise<T>;
}

function apiClient(url: string, token: string): Api {
  const call = async <T>(method: string, route: string, body?: unknown): Promise<T> => {
    const r = await fetch(url + route, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${route}: ${r.status} ${text.trim()}`);
    return JSON.parse(text) as T;
  };
  return { url, get: (route) => call("GET", route), post: (route, body) => call("POST", route, body) };
}

interface ReceiverJson {
  state: string;
  flushedLsn: string | null;
  lagBytes: number | null;
  lastSegment: string | null;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(200);
  }
}

const megabytes = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;

// ---------------------------------------------------------------------------------------

interface Demo {
  opts: Options;
  dir: string;
  marker: Marker;
  primary: PgServer | null;
  restored: PgServer | null;
  daemon: ChildProcess | null;
  daemonExited: Promise<void> | null;
  stopping: boolean;
}

function saveMarker(demo: Demo): void {
  writeFileSync(path.join(demo.dir, "demo.json"), JSON.stringify(demo.marker, null, 2) + "\n");
}

/** Stops everything this run started, in the order that loses nothing, and exits. */
async function stop(demo: Demo, code: number): Promise<never> {
  if (demo.stopping) return await new Promise<never>(() => {});
  demo.stopping = true;
  const problems: string[] = [];
  const attempt = async (what: string, f: () => Promise<void>) => {
    try {
      await f();
    } catch (e) {
      problems.push(`${what}: ${(e as Error).message.split("\n")[0]}`);
    }
  };
  say("stopping the restored cluster, the klio daemon (it flushes and reports its last position) and the primary");
  if (demo.restored) {
    const restored = demo.restored;
    await attempt("the restored cluster", async () => {
      await restored.stop("fast");
      await stopPrefetchers(restored.dataDir);
    });
  }
  if (demo.daemon && demo.daemonExited) {
    const child = demo.daemon;
    const exited = demo.daemonExited;
    await attempt("the daemon", async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const done = await Promise.race([exited.then(() => true), sleep(30_000).then(() => false)]);
      if (!done) {
        child.kill("SIGKILL");
        await exited;
        throw new Error("did not exit within 30 s of SIGTERM: killed");
      }
    });
  }
  if (demo.primary) await attempt("the primary", () => demo.primary!.stop("fast"));
  // Anything started while stopping, or whose start was cut short (a restore, a prefetcher).
  await attempt("leftovers", async () => void (await stopLeftovers(demo.dir)));
  rmSync(path.join(demo.dir, "demo.json"), { force: true });
  for (const p of problems) say(`while stopping, ${p}`);
  say(`stopped. The repository stays in ${shown(path.join(demo.dir, "repo"))}, the daemon's log in ${shown(path.join(demo.dir, "server.log"))}`);
  process.exit(code);
}

async function run(demo: Demo): Promise<void> {
  const { dir, opts } = demo;
  // Once Ctrl-C stopped the demo, no further step starts anything.
  const pause = async () => {
    await sleep(opts.pause * 1000);
    if (demo.stopping) await new Promise<never>(() => {});
  };
  const repo = path.join(dir, "repo");
  const configFile = path.join(dir, "klio.json");
  const adminToken = path.join(dir, "admin.token");
  const readToken = path.join(dir, "read.token");
  const logFile = path.join(dir, "server.log");

  // 1. The primary.
  say(`starting an embedded PostgreSQL 18 in ${shown(path.join(dir, "pg"))}`);
  const primary = await startPostgres({ version: 18, baseDir: path.join(dir, "pg"), conf: { wal_keep_size: "'64MB'" } });
  demo.primary = primary;
  demo.marker.servers.push({ role: "primary", dataDir: primary.dataDir, port: primary.port });
  saveMarker(demo);
  say(`PostgreSQL 18 is up on 127.0.0.1:${primary.port}`);
  await pause();

  // 2. The appliance: a config file, tokens in files, the daemon.
  const token = randomBytes(24).toString("base64url");
  writeFileSync(adminToken, token + "\n", { mode: 0o600 });
  writeFileSync(readToken, randomBytes(24).toString("base64url") + "\n", { mode: 0o600 });
  const port = await freePort();
  const config = {
    repository: { path: repo },
    state_dir: path.join(dir, "state"),
    api: {
      host: "127.0.0.1", port,
      tokens: [
        { name: "demo-admin", scope: "admin", token_file: adminToken },
        { name: "demo-read", scope: "read", token_file: readToken },
      ],
    },
    log: { level: "info", format: "text" },
    maintenance: { schedule: "off" },
    clusters: [{ name: "demo", connection: `host=127.0.0.1 port=${primary.port} user=postgres dbname=postgres`, backup: { wal_timeout_seconds: 60 } }],
  };
  writeFileSync(configFile, JSON.stringify(config, null, 2) + "\n");
  say(`wrote ${shown(configFile)}: repository ${shown(repo)}, cluster "demo", the API on 127.0.0.1:${port}, tokens in ${shown(adminToken)} and ${shown(readToken)}`);
  say(`klio server start --config ${shown(configFile)}   (log: ${shown(logFile)})`);
  const log = openSync(logFile, "a");
  // Its own process group: Ctrl-C reaches the demo, which stops the daemon with SIGTERM.
  const daemon = spawn(process.execPath, klioArgv(["server", "start", "--config", configFile]), { cwd: ROOT, detached: true, stdio: ["ignore", log, log] });
  closeSync(log);
  demo.daemon = daemon;
  demo.daemonExited = new Promise((resolve) => daemon.once("exit", () => resolve()));
  demo.marker.daemon = { pid: daemon.pid! };
  saveMarker(demo);
  const url = `http://127.0.0.1:${port}`;
  const api = apiClient(url, token);
  const daemonAlive = () => {
    if (daemon.exitCode !== null || daemon.signalCode !== null) {
      throw new Error(`the daemon exited (${daemon.exitCode ?? daemon.signalCode}); its log ends:\n${readFileSync(logFile, "utf8").split("\n").slice(-15).join("\n")}`);
    }
  };
  await until("the API to answer", async () => {
    daemonAlive();
    return (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) || undefined;
  }, 60_000);
  const streaming = await until("the receiver of cluster demo to stream", async () => {
    daemonAlive();
    const c = await api.get<{ receiver: ReceiverJson }>("/v1/clusters/demo");
    return c.receiver.state === "streaming" ? c.receiver : undefined;
  }, 60_000);
  say(`the daemon answers on ${url}; its receiver streams the primary's WAL into ${shown(repo)}${streaming.flushedLsn ? ` (flushed to ${streaming.flushedLsn})` : ""}`);
  await pause();

  // 3. Rows, a backup through the API, rows, the restore point, rows.
  const sql = primary.sql();
  const insert = (n: number) => sql`insert into demo_orders (customer, amount)
    select 'customer ' || (i % 50), round((random() * 100)::numeric, 2) from generate_series(1, ${n}::int) as i`;
  await sql`create table demo_orders (id bigserial primary key, customer text not null, amount numeric(10, 2) not null, created_at timestamptz not null default now())`;
  await insert(ROWS.first);
  say(`created table demo_orders and inserted ${ROWS.first} rows`);
  await pause();

  const started = Date.now();
  const job = await api.post<{ id: string }>("/v1/clusters/demo/backups", { name: "demo" });
  say(`POST /v1/clusters/demo/backups: job ${job.id} takes a base backup`);
  const done = await until(`backup job ${job.id}`, async () => {
    daemonAlive();
    const j = await api.get<{ state: string; backupId: string | null; error: { message: string } | null }>(`/v1/jobs/${job.id}`);
    return j.state === "running" ? undefined : j;
  }, 180_000);
  if (done.state !== "succeeded") throw new Error(`backup job ${job.id} ${done.state}: ${done.error?.message ?? "no reason given"}`);
  const { backups } = await api.get<{ backups: { id: string; bytes: number; storedBytes: number }[] }>("/v1/clusters/demo/backups");
  const backup = backups.find((b) => b.id === done.backupId);
  say(`backup ${done.backupId} done in ${((Date.now() - started) / 1000).toFixed(1)} s${backup ? `: ${megabytes(backup.bytes)} of files, ${megabytes(backup.storedBytes)} stored` : ""}`);
  await pause();

  await insert(ROWS.beforePoint);
  const [{ lsn: pointLsn }] = await sql`select pg_create_restore_point(${RESTORE_POINT})::text as lsn`;
  say(`inserted ${ROWS.beforePoint} rows, then created the restore point ${RESTORE_POINT} at ${pointLsn}`);
  await insert(ROWS.afterPoint);
  const [{ lsn: switchText }] = await sql`select pg_switch_wal()::text as lsn`;
  const switched: Lsn = parseLsn(String(switchText));
  say(`inserted ${ROWS.afterPoint} more rows and switched WAL at ${formatLsn(switched)}`);
  // Flushed past the switch, the segment it ended complete, and compressed into its final file
  // (which PostgreSQL's user may read only once shareRepo below has run after it was written).
  const segSize = parseSegmentSize(String((await sql`show wal_segment_size`)[0]!.wal_segment_size));
  const lastNeeded = segmentNumber(switched - 1n, segSize);
  const flushed = await until(`the archive to flush past ${formatLsn(switched)}`, async () => {
    daemonAlive();
    const c = await api.get<{ receiver: ReceiverJson }>("/v1/clusters/demo");
    const f = c.receiver.flushedLsn === null ? null : parseLsn(c.receiver.flushedLsn);
    const archived = c.receiver.lastSegment === null ? null : parseSegmentName(c.receiver.lastSegment, segSize).segno;
    if (f === null || f < switched || archived === null || archived < lastNeeded) return undefined;
    const wal = await api.get<{ archive: { segments: { uncompressed: number } } | null }>("/v1/clusters/demo/wal");
    return wal.archive !== null && wal.archive.segments.uncompressed === 0 ? f : undefined;
  }, 60_000);
  say(`the archive has flushed to ${formatLsn(flushed)}: every row is in ${shown(repo)}`);
  await pause();

  // 4. Restore to the restore point, start it, compare.
  const restoredData = path.join(dir, "restored", "data");
  shareRepo(repo); // PostgreSQL (the postgres user) runs the restore_command: klio get-wal
  const restoreArgs = ["restore", restoredData, "--repo", repo, "--cluster", "demo", "--target-name", RESTORE_POINT];
  say(`klio ${restoreArgs.map((a) => (path.isAbsolute(a) ? shown(a) : a)).join(" ")}`);
  const restoredAt = Date.now();
  const r = await runKlioAsync(restoreArgs);
  if (r.code !== 0) throw new Error(`klio restore exited ${r.code}: ${r.stderr.trim()}`);
  const restored = await startDataDir(18, restoredData);
  demo.restored = restored;
  demo.marker.servers.push({ role: "restored", dataDir: restored.dataDir, port: restored.port });
  saveMarker(demo);
  const rsql = restored.sql();
  await until("the restored cluster to reach the restore point and promote", async () => {
    const [{ r: inRecovery }] = await rsql`select pg_is_in_recovery() as r`;
    return inRecovery === false ? true : undefined;
  }, 120_000);
  say(`the restored cluster replayed the archived WAL to ${RESTORE_POINT} and is up on 127.0.0.1:${restored.port} (${((Date.now() - restoredAt) / 1000).toFixed(1)} s)`);
  const count = async (s: postgres.Sql) => Number((await s`select count(*)::int as n from demo_orders`)[0]!.n);
  const onPrimary = await count(sql);
  const onRestored = await count(rsql);
  const expected = ROWS.first + ROWS.beforePoint;
  say(`rows in demo_orders:   primary ${onPrimary}   restored ${onRestored}   expected ${expected}`);
  if (onRestored !== expected || onPrimary !== expected + ROWS.afterPoint) {
    say(`restore check: FAILED: the restored cluster has ${onRestored} rows, expected ${expected} (the primary has ${onPrimary})`);
    await stop(demo, 1);
  }
  say(`restore check: OK (recovery stopped at ${RESTORE_POINT}: the ${ROWS.first + ROWS.beforePoint} rows before it, none of the ${ROWS.afterPoint} after)`);
  await pause();

  // 5. The running appliance, for the person at the terminal.
  const auth = `-H "Authorization: Bearer $(cat ${shown(adminToken)})"`;
  say(`talk to the running appliance (a GET needs only the token in ${shown(readToken)}):`);
  for (const route of ["/v1/status", "/v1/clusters", "/v1/clusters/demo/backups", "/metrics"]) say(`  curl -s ${auth} ${url}${route}`);
  await pause();

  // 6. Keep going until told to stop.
  say(`inserting ${ROWS.everyTick} rows every ${TICK_MS / 1000} s; ${Number.isFinite(opts.seconds) ? `stopping after ${opts.seconds} s` : "Ctrl-C stops everything"}`);
  const until_ = Date.now() + opts.seconds * 1000;
  while (!demo.stopping && Date.now() < until_) {
    const tick = Date.now();
    await insert(ROWS.everyTick);
    const [{ n }] = await sql`select count(*)::int as n from demo_orders`;
    const c = await api.get<{ receiver: ReceiverJson }>("/v1/clusters/demo");
    say(`+${ROWS.everyTick} rows: ${n} on the primary; archive flushed to ${c.receiver.flushedLsn ?? "?"} (lag ${c.receiver.lagBytes ?? "?"} bytes)`);
    await sleep(Math.max(0, Math.min(tick + TICK_MS, until_) - Date.now()));
  }
}

async function main(): Promise<void> {
  let opts: Options;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    console.error(`[demo] ${(e as Error).message} (${USAGE})`);
    process.exit(2);
  }
  const dir = path.resolve(opts.dir);
  const begun = Date.now();
  try {
    checkReachable(dir);
    await replacePrevious(dir);
  } catch (e) {
    console.error(`[demo] ${(e as Error).message}`);
    process.exit(e instanceof UsageError ? 2 : 1);
  }
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const demo: Demo = {
    opts, dir, primary: null, restored: null, daemon: null, daemonExited: null, stopping: false,
    marker: { pid: process.pid, startedAt: new Date().toISOString(), daemon: null, servers: [] },
  };
  saveMarker(demo);
  const onSignal = () => void stop(demo, 0);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("SIGHUP", onSignal);
  process.stdout.on("error", () => {
    stdoutOpen = false;
    void stop(demo, 0);
  });
  // Whatever goes wrong, what was started is stopped.
  process.on("uncaughtException", (e) => {
    say(`failed: ${e.message}`);
    void stop(demo, 1);
  });  try {
    await run(demo);
  } catch (e) {
    if (demo.stopping) return; // a step cut short by Ctrl-C
    say(`failed: ${(e as Error).message}`);
    await stop(demo, 1);
  }
  say(`ran ${((Date.now() - begun) / 1000).toFixed(0)} s`);
  await stop(demo, 0);
}

await main();
