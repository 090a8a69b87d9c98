// The appliance daemon for tests: a real config file with token files, `klio server start`
// as a separate process, and a small client that speaks to it only over HTTP.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { freePort, type PgServer } from "./postgres.ts";
import { startKlio, waitFor, type KlioProcess } from "./klio.ts";
import { tempDir, type Cleanup } from "./backup.ts";

export const ADMIN_TOKEN = "admin-token-for-tests-0123456789";
export const READ_TOKEN = "read-token-for-tests-0123456789";

export interface DaemonCluster {
  name: string;
  pg: PgServer;
  schedule?: string;
  /** The config's retention section (snake_case, as in the file). */
  retention?: Record<string, unknown>;
  /** The connection string (default: `pg`'s host and port). */
  connection?: string;
}

export interface TestDaemon {
  dir: string;
  configFile: string;
  repo: string;
  url: string;
  process: KlioProcess;
  /** fetch with the admin token (or `token`, or none with token: null). */
  call(method: string, p: string, opts?: { token?: string | null; body?: string; headers?: Record<string, string> }): Promise<Response>;
  /** GET as JSON with the admin token; throws unless 2xx. */
  get<T = any>(p: string): Promise<T>;
}

export interface DaemonOffsite {
  endpoint: string;
  url: string;
  accessKeyFile: string;
  secretKeyFile: string;
}

export async function startTestDaemon(
  cleanups: Cleanup[], clusters: DaemonCluster[],
  extra: { offsite?: DaemonOffsite; repository?: string; maintenance?: Record<string, unknown>; disk?: Record<string, unknown> } = {},
): Promise<TestDaemon> {
  const dir = tempDir(cleanups, "klio-daemon-");
  writeFileSync(path.join(dir, "admin.token"), ADMIN_TOKEN + "\n", { mode: 0o600 });
  writeFileSync(path.join(dir, "read.token"), READ_TOKEN + "\n", { mode: 0o600 });
  const port = await freePort();
  const config = {
    repository: { path: extra.repository ?? "repo", workers: 1 },
    // Tests start maintenance themselves.
    maintenance: extra.maintenance ?? { schedule: "off" },
    ...(extra.disk ? { disk: extra.disk } : {}),
    api: {
      host: "127.0.0.1", port,
      tokens: [{ name: "ops", scope: "admin", token_file: "admin.token" }, { name: "grafana", scope: "read", token_file: "read.token" }],
      max_body_bytes: 4096,
    },
    log: { format: "json" },
    ...(extra.offsite ? { offsite: { url: extra.offsite.url, endpoint: extra.offsite.endpoint, access_key_file: extra.offsite.accessKeyFile, secret_key_file: extra.offsite.secretKeyFile, interval_seconds: 1 } } : {}),
    clusters: clusters.map((c) => ({
      name: c.name, connection: c.connection ?? `host=${c.pg.host} port=${c.pg.port} user=postgres dbname=postgres`,
      ...(c.schedule ? { backup: { schedule: c.schedule, wal_timeout_seconds: 60 } } : { backup: { wal_timeout_seconds: 60 } }),
      ...(c.retention ? { retention: c.retention } : {}),
    })),
  };
  const configFile = path.join(dir, "klio.json");
  writeFileSync(configFile, JSON.stringify(config, null, 2));
  return await launch(cleanups, dir, configFile, port);
}

/** The same daemon (config, repository, state) started again, after the first one stopped. */
export function restartTestDaemon(cleanups: Cleanup[], d: TestDaemon): Promise<TestDaemon> {
  return launch(cleanups, d.dir, d.configFile, Number(new URL(d.url).port));
}

async function launch(cleanups: Cleanup[], dir: string, configFile: string, port: number): Promise<TestDaemon> {
  const proc = startKlio(["server", "start", "--config", configFile]);
  cleanups.push(async () => void (await proc.kill9()));
  await proc.waitForLog(/"api.listening"/, 60_000);
  const url = `http://127.0.0.1:${port}`;
  const call: TestDaemon["call"] = (method, p, opts = {}) => {
    const token = opts.token === undefined ? ADMIN_TOKEN : opts.token;
    return fetch(url + p, {
      method, body: opts.body,
      headers: { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...(opts.body !== undefined ? { "content-type": "application/json" } : {}), ...opts.headers },
    });
  };
  const repoPath = (JSON.parse(readFileSync(configFile, "utf8")) as { repository: { path: string } }).repository.path;
  return {
    dir, configFile, repo: path.resolve(dir, repoPath), url, process: proc, call,
    async get(p) {
      const r = await call("GET", p);
      if (!r.ok) throw new Error(`GET ${p}: ${r.status} ${await r.text()}`);
      return await r.json();
    },
  };
}

/**
 * POSTs to start a job and returns it (202). A 409 "busy" is a job the daemon runs by itself
 * (a scheduled backup, say) that the test did not ask for: the request is made again once it
 * ends, until `timeoutMs`.
 */
async function startJob(d: TestDaemon, p: string, body: string, timeoutMs: number): Promise<any> {
  return await waitFor(`POST ${p} accepted`, async () => {
    const r = await d.call("POST", p, { body });
    const text = await r.text();
    if (r.status === 202) return JSON.parse(text);
    if (r.status === 409 && JSON.parse(text).error === "busy") return undefined;
    throw new Error(`POST ${p}: ${r.status} ${text}`);
  }, timeoutMs);
}

async function jobEnd(d: TestDaemon, what: string, id: string, timeoutMs: number): Promise<any> {
  return await waitFor(`${what} job ${id}`, async () => {
    const j = await d.get(`/v1/jobs/${id}`);
    return j.state === "running" ? undefined : j;
  }, timeoutMs);
}

/** Starts a backup through the API (once a running one ends) and waits for its job to end; returns the job. */
export async function backupThroughApi(d: TestDaemon, cluster: string, timeoutMs = 180_000, body = "{}"): Promise<any> {
  const job = await startJob(d, `/v1/clusters/${cluster}/backups`, body, timeoutMs);
  return await jobEnd(d, `backup of ${cluster}`, job.id, timeoutMs);
}

/** Starts maintenance through the API (once a running one ends) and waits for its job to end; returns the job. */
export async function maintenanceThroughApi(d: TestDaemon, body = "{}", timeoutMs = 180_000): Promise<any> {
  const job = await startJob(d, "/v1/maintenance", body, timeoutMs);
  return await jobEnd(d, "maintenance", job.id, timeoutMs);
}
