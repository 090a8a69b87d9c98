// The HTTP control API: hono routes over the daemon. Each route is declared once in ROUTES
// (method, path, schemas, handler); the same table registers it and describes it in
// /openapi.json. Without a valid token only /healthz answers; a read token may GET (and HEAD),
// an admin token may do everything. Every error is JSON {error, detail}, and a refused
// request changes nothing.
import { crc32 } from "node:zlib";
import { Hono, type Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { Type, type TSchema } from "@sinclair/typebox";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { KlioError, isKlioError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { VERSION } from "../util/version.ts";
import { listSnapshots, loadSnapshot, snapshotKey, snapshotSummary } from "../backup/snapshot.ts";
import { hasRules, validatePolicy } from "../backup/retention.ts";
import { readPins, setPin, writeStoredPolicy } from "../backup/retention-store.ts";
import { openClusterArchive, parseWalRequest, readWalFile } from "../wal/archive-reader.ts";
import { WAL_CRC_HEADER } from "../wal/wal-source.ts";
import { walStatus } from "../wal/archive-status.ts";
import { archiveEndJson, localArchiveEnd } from "../wal/archive-end.ts";
import { formatLsn } from "../pg/lsn.ts";
import { HEADER_KEY } from "../repo/header.ts";
import { validateKey } from "../repo/fs-storage.ts";
import type { Daemon } from "../server/daemon.ts";
import type { OffsiteRunner } from "../server/offsite-runner.ts";
import { OffsiteSync } from "../offsite/sync.ts";
import { S3Storage } from "../repo/s3-storage.ts";
import { lagSeconds, type ClusterSupervisor } from "../server/supervisor.ts";
import { allows, scopeFor, TokenChecker } from "./auth.ts";
import { ReadLeases } from "./read-leases.ts";
import { READER_HEADER } from "../util/api-client.ts";
import { daemonMetrics, DiskFacts } from "./metrics.ts";
import * as S from "./schemas.ts";
import { openApiDocument } from "./openapi.ts";

export interface RouteSpec {
  method: "get" | "post" | "put" | "delete";
  /** hono path syntax (":name"). */
  path: string;
  summary: string;
  params?: Record<string, TSchema>;
  body?: TSchema;
  /** 200 (or the status given) JSON body; omitted for non-JSON answers. */
  response?: { status: number; schema: TSchema } | { status: number; contentType: string };
  handler: (a: RouteArgs) => Promise<Response>;
}

interface RouteArgs {
  c: Context;
  d: Daemon;
  params: Record<string, string>;
  body: unknown;
}

const STATUS_OF: Record<string, number> = {
  "not-found": 404, "no-backup": 404, "no-archive": 404, "no-policy": 404, busy: 409, "object-exists": 409, "maintenance-running": 409, stopping: 503,
};

function statusOf(e: KlioError): number {
  if (STATUS_OF[e.code]) return STATUS_OF[e.code]!;
  if (e.code === "usage" || e.code.startsWith("bad-")) return 400;
  return 500;
}

function errorResponse(status: number, error: string, detail: string): Response {
  return new Response(JSON.stringify({ error, detail }), { status, headers: { "content-type": "application/json; charset=utf-8" } });
}

function json(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? v.toString() : v)), { status, headers: { "content-type": "application/json; charset=utf-8" } });
}

function offsiteOf(d: Daemon): OffsiteRunner {
  if (!d.offsite) throw new KlioError("not-found", "no offsite copy is configured (the config's offsite section)");
  return d.offsite;
}

/** Status computations log nothing. */
const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} };

function supervisorOf(d: Daemon, name: string): ClusterSupervisor {
  const s = d.supervisors.get(name);
  if (!s) throw new KlioError("not-found", `no cluster named ${name} in the configuration`);
  return s;
}

function receiverJson(s: ClusterSupervisor) {
  const r = s.receiver;
  const last = r.last;
  return {
    state: r.state, server: r.server, streamingFrom: r.streamingFrom, slot: r.slot, synchronous: r.synchronous,
    timeline: last ? Number(last.timeline) : null,
    flushedLsn: last ? formatLsn(last.flushedLsn) : null,
    serverWalEnd: last ? formatLsn(last.serverWalEnd) : null,
    lagBytes: last ? Number(last.serverWalEnd > last.flushedLsn ? last.serverWalEnd - last.flushedLsn : 0n) : null,
    lagSeconds: lagSeconds(r, Date.now()),
    updatedAt: last ? last.updatedAt : null,
    lastSegment: r.lastSegment, lastError: r.lastError, restarts: r.restarts,
  };
}

function clusterJson(s: ClusterSupervisor) {
  return {
    name: s.cluster.name, receiver: receiverJson(s), schedule: s.cluster.schedule?.text ?? null,
    nextBackupAt: s.nextBackupAt === null ? null : new Date(s.nextBackupAt).toISOString(),
    runningJob: s.running?.id ?? null, lastBackup: s.state.lastBackup, backupFailures: s.state.backupFailures,
  };
}

const P = { name: S.ClusterName, id: S.BackupId, job: S.JobId, walname: S.WalName };

export const ROUTES: RouteSpec[] = [
  {
    method: "get", path: "/v1/status", summary: "The daemon: version, uptime, every cluster's receiver and last backup",
    response: { status: 200, schema: S.Status },
    handler: async ({ d }) => json({
      version: VERSION, startedAt: d.startedAt.toISOString(), uptimeSeconds: Math.round((Date.now() - d.startedAt.getTime()) / 1000),
      repository: d.config.repository.path, clusters: [...d.supervisors.values()].map(clusterJson),
    }),
  },
  {
    method: "get", path: "/v1/clusters", summary: "Every configured cluster",
    response: { status: 200, schema: Type.Object({ clusters: Type.Array(S.Cluster) }) },
    handler: async ({ d }) => json({ clusters: [...d.supervisors.values()].map(clusterJson) }),
  },
  {
    method: "get", path: "/v1/clusters/:name", summary: "One cluster", params: { name: P.name },
    response: { status: 200, schema: S.Cluster },
    handler: async ({ d, params }) => json(clusterJson(supervisorOf(d, params.name!))),
  },
  {
    method: "get", path: "/v1/clusters/:name/backups", summary: "The cluster's backups, oldest first", params: { name: P.name },
    response: { status: 200, schema: Type.Object({ backups: Type.Array(S.Backup), unreadable: Type.Array(Type.Object({ id: Type.String(), error: Type.String() })) }) },
    handler: async ({ d, params }) => {
      const s = supervisorOf(d, params.name!);
      const { snapshots, unreadable } = await listSnapshots(d.repo, s.cluster.name);
      return json({ backups: snapshots.map(snapshotSummary), unreadable });
    },
  },
  {
    method: "post", path: "/v1/clusters/:name/backups", summary: "Start a backup now; follow it at /v1/jobs/{id}",
    params: { name: P.name }, body: S.StartBackupBody, response: { status: 202, schema: S.Job },
    handler: async ({ d, params, body }) => json(await supervisorOf(d, params.name!).startBackup("api", body as S.StartBackupBody), 202),
  },
  {
    method: "get", path: "/v1/clusters/:name/backups/:id", summary: "One backup, whole (its manifest)", params: { name: P.name, id: P.id },
    response: { status: 200, schema: Type.Object({}, { additionalProperties: true, description: "the backup's manifest (see docs/FORMAT.md)" }) },
    handler: async ({ d, params }) => json(await loadSnapshot(d.repo, supervisorOf(d, params.name!).cluster.name, params.id!)),
  },
  {
    method: "delete", path: "/v1/clusters/:name/backups/:id", summary: "Delete a backup (maintenance frees its data later)",
    params: { name: P.name, id: P.id },
    handler: async ({ d, params }) => {
      const cluster = supervisorOf(d, params.name!).cluster.name;
      const s = await loadSnapshot(d.repo, cluster, params.id!);
      await d.repo.deleteObject(snapshotKey(cluster, s.id));
      return json({ deleted: s.id, cluster });
    },
  },
  {
    method: "get", path: "/v1/clusters/:name/jobs", summary: "The cluster's recent jobs, newest first", params: { name: P.name },
    response: { status: 200, schema: Type.Object({ jobs: Type.Array(S.Job) }) },
    handler: async ({ d, params }) => json({ jobs: d.jobs.list(supervisorOf(d, params.name!).cluster.name) }),
  },
  {
    method: "get", path: "/v1/jobs/:job", summary: "One job: state, progress, outcome", params: { job: P.job },
    response: { status: 200, schema: S.Job },
    handler: async ({ d, params }) => {
      const job = d.jobs.get(params.job!);
      if (!job) throw new KlioError("not-found", `no job ${params.job} (jobs are kept in memory: a restart forgets them)`);
      return json(job);
    },
  },
  {
    method: "get", path: "/v1/clusters/:name/wal", summary: "The WAL receiver and archive: position, lag, segments, gaps", params: { name: P.name },
    response: { status: 200, schema: S.WalArchive },
    handler: async ({ d, params }) => {
      const s = supervisorOf(d, params.name!);
      let archive = null;
      try {
        const a = await openClusterArchive(d.config.repository.path, s.cluster.name);
        const w = await walStatus(a);
        archive = {
          systemIdentifier: w.systemIdentifier, walSegmentSize: w.walSegmentSize, segments: w.segments, firstSegment: w.firstSegment, lastSegment: w.lastSegment,
          timelines: w.timelines.map(Number), gaps: w.gaps, forks: w.forks, problems: w.problems, end: archiveEndJson(await localArchiveEnd(a)),
        };
      } catch (e) {
        if (!(isKlioError(e) && e.code === "no-archive")) throw e;
      }
      return json({ cluster: s.cluster.name, receiver: receiverJson(s), archive });
    },
  },
  {
    method: "get", path: "/v1/clusters/:name/wal/:walname",
    summary: "A WAL segment's original bytes (NAME.partial: the newest partial segment if the whole one is not archived), or a history file",
    params: { name: P.name, walname: P.walname }, response: { status: 200, contentType: "application/octet-stream" },
    handler: async ({ d, params }) => {
      const archive = await openClusterArchive(d.config.repository.path, supervisorOf(d, params.name!).cluster.name);
      const req = parseWalRequest(params.walname!, archive.identity.walSegmentSize, false);
      // Verified before it is sent (a damaged file answers 500 "corrupt-wal"); the CRC-32 lets
      // the restoring side check what arrived.
      const found = await readWalFile(archive, req);
      if (!found) throw new KlioError("not-found", `the archive of ${archive.cluster} has no ${params.walname}`);
      return binary(found.bytes, 200, { "x-klio-source": found.from, [WAL_CRC_HEADER]: crc32(found.bytes).toString(16).padStart(8, "0") });
    },
  },
  {
    method: "get", path: "/v1/offsite", summary: "The offsite copy: state, the last pass, failures, what went up since the start",
    response: { status: 200, schema: Type.Object({}, { additionalProperties: true }) },
    handler: async ({ d }) => json(offsiteOf(d).view),
  },
  {
    method: "get", path: "/v1/offsite/status", summary: "What the bucket lacks now (lists both sides: objects and bytes behind, the oldest)",
    response: { status: 200, schema: Type.Object({}, { additionalProperties: true }) },
    handler: async ({ d }) => {
      const o = offsiteOf(d);
      const sync = new OffsiteSync({ repoDir: d.config.repository.path, remote: await S3Storage.open(d.config.offsite!.location, d.config.offsite!.s3), log: silent, signal: new AbortController().signal });
      try {
        return json({ ...(await sync.status()), state: o.view.state });
      } finally {
        await sync.close();
      }
    },
  },
  {
    method: "post", path: "/v1/maintenance", summary: "Start maintenance (free the space of data no backup uses); follow it at /v1/jobs/{id}",
    body: S.DryRunBody, response: { status: 202, schema: S.Job },
    handler: async ({ d, body }) => json(d.keeper.startMaintenance("api", (body as S.DryRunBody).dryRun ?? false), 202),
  },
  {
    method: "get", path: "/v1/maintenance", summary: "Maintenance: the running job, the last report, the next scheduled run, free space",
    response: { status: 200, schema: Type.Object({}, { additionalProperties: true }) },
    handler: async ({ d }) => {
      const k = d.keeper;
      return json({
        running: k.running, last: k.lastMaintenance, lastError: k.lastMaintenanceError,
        nextAt: k.nextMaintenanceAt === null ? null : new Date(k.nextMaintenanceAt).toISOString(), disk: k.disk,
      });
    },
  },
  {
    method: "get", path: "/v1/clusters/:name/retention", summary: "The cluster's retention policy (and where it comes from), pinned backups, the last run",
    params: { name: P.name }, response: { status: 200, schema: Type.Object({}, { additionalProperties: true }) },
    handler: async ({ d, params }) => {
      const cluster = supervisorOf(d, params.name!).cluster.name;
      const { policy, source } = await d.keeper.policyOf(cluster);
      const pinned = [...(await readPins(d.config.repository.path, cluster))].sort();
      return json({ cluster, policy, source, pinned, lastRun: d.keeper.retention.get(cluster) ?? null });
    },
  },
  {
    method: "put", path: "/v1/clusters/:name/retention", summary: "Set the cluster's retention policy in the repository (it takes precedence over the config's)",
    params: { name: P.name }, body: S.RetentionPolicyBody, response: { status: 200, schema: Type.Object({}, { additionalProperties: true }) },
    handler: async ({ d, params, body }) => {
      const cluster = supervisorOf(d, params.name!).cluster.name;
      const policy = validatePolicy(body, "the body");
      if (!hasRules(policy)) throw new KlioError("bad-request", "the policy names no rule (recoveryWindow, full, keepLatest, keepDaily, keepWeekly, keepMonthly)");
      await writeStoredPolicy(d.config.repository.path, cluster, policy);
      return json({ cluster, policy, source: "repository" });
    },
  },
  {
    method: "delete", path: "/v1/clusters/:name/retention", summary: "Remove the policy set in the repository (the config's applies again)",
    params: { name: P.name }, response: { status: 200, schema: Type.Object({}, { additionalProperties: true }) },
    handler: async ({ d, params }) => {
      const cluster = supervisorOf(d, params.name!).cluster.name;
      await writeStoredPolicy(d.config.repository.path, cluster, null);
      return json({ cluster, ...(await d.keeper.policyOf(cluster)) });
    },
  },
  {
    method: "post", path: "/v1/clusters/:name/retention/apply", summary: "Apply the retention policy now (dryRun: only say what would go, and why each backup stays)",
    params: { name: P.name }, body: S.DryRunBody, response: { status: 200, schema: Type.Object({}, { additionalProperties: true }) },
    handler: async ({ d, params, body }) => {
      const cluster = supervisorOf(d, params.name!).cluster.name;
      const result = await d.keeper.applyRetention(cluster, (body as S.DryRunBody).dryRun ?? false);
      if (!result) throw new KlioError("no-policy", `cluster ${cluster} has no retention policy (PUT /v1/clusters/${cluster}/retention, or the config's retention)`);
      return json(result);
    },
  },
  {
    method: "put", path: "/v1/clusters/:name/backups/:id/pin", summary: "Pin a backup: retention keeps it whatever the policy says",
    params: { name: P.name, id: P.id }, response: { status: 200, schema: Type.Object({}, { additionalProperties: true }) },
    handler: async ({ d, params }) => pin(d, params, true),
  },
  {
    method: "delete", path: "/v1/clusters/:name/backups/:id/pin", summary: "Unpin a backup",
    params: { name: P.name, id: P.id }, response: { status: 200, schema: Type.Object({}, { additionalProperties: true }) },
    handler: async ({ d, params }) => pin(d, params, false),
  },
  {
    method: "get", path: "/v1/repository/objects",
    summary: "Repository objects (header, indexes, packs, snapshots) under ?prefix=, with sizes: what `--repo https://…` reads",
    response: { status: 200, schema: Type.Object({ objects: Type.Array(Type.Object({ key: Type.String(), size: Type.Integer() })) }) },
    handler: async ({ c, d }) => {
      const prefix = c.req.query("prefix") ?? "";
      // A whole cluster name in the prefix is answered for; a part of one only filters.
      if (/^(?:snapshots|wal)\/[^/]+\//.test(prefix)) mustBeConfiguredCluster(d, prefix);
      if (prefix !== "" && !servedKey(prefix.replace(/\/$/, "/x"))) throw new KlioError("bad-request", `prefix ${JSON.stringify(prefix.slice(0, 100))} is not one the API serves (index/, packs/, snapshots/)`);
      const roots = prefix === "" ? [HEADER_KEY, ...SERVED_ROOTS] : [prefix];
      const objects = [];
      for (const r of roots) objects.push(...(await d.storage.list(r)).filter((e) => servedKey(e.key) && configuredOrNone(d, e.key)));
      return json({ objects });
    },
  },
  {
    method: "get", path: "/v1/repository/objects/:key{.+}",
    summary: "One repository object's bytes; a Range header (bytes=a-b, bytes=a- or bytes=-n) reads part of it",
    params: { key: Type.String({ minLength: 1, maxLength: 1024 }) }, response: { status: 200, contentType: "application/octet-stream" },
    handler: async ({ c, d, params }) => {
      const key = params.key!;
      mustBeConfiguredCluster(d, key);
      if (!servedKey(key)) throw new KlioError("bad-request", `${JSON.stringify(key.slice(0, 100))} is not an object the API serves (klio-repository.json, index/…, packs/…, snapshots/…)`);
      const size = await objectSize(d, key);
      const range = c.req.header("range");
      if (range === undefined) return binary(await d.storage.get(key), 200);
      const r = byteRange(range, size);
      if (r === "unsatisfiable") return new Response(JSON.stringify({ error: "range-not-satisfiable", detail: `${key} has ${size} bytes` }), { status: 416, headers: { "content-type": "application/json; charset=utf-8", "content-range": `bytes */${size}` } });
      if (r.last - r.first + 1 > MAX_RANGE) throw new KlioError("bad-request", `Range ${range} asks for more than ${MAX_RANGE} bytes at once`);
      return binary(await d.storage.getRange(key, r.first, r.last - r.first + 1), 206, { "content-range": `bytes ${r.first}-${r.last}/${size}` });
    },
  },
];

async function pin(d: Daemon, params: Record<string, string>, pinned: boolean): Promise<Response> {
  const cluster = supervisorOf(d, params.name!).cluster.name;
  const s = await loadSnapshot(d.repo, cluster, params.id!);
  await setPin(d.config.repository.path, cluster, s.id, pinned);
  return json({ cluster, backup: s.id, pinned });
}

/** What the API hands out of the repository: never the WAL (its own routes) nor unfinished files. */
const SERVED_ROOTS = ["index/", "packs/", "snapshots/"];
const MAX_RANGE = 64 * 1024 * 1024;

function servedKey(key: string): boolean {
  if (key === HEADER_KEY) return true;
  if (!SERVED_ROOTS.some((r) => key.startsWith(r))) return false;
  try {
    validateKey(key);
    return true;
  } catch {
    return false;
  }
}

/**
 * One byte range of RFC 9110 (section 14.1.2) against an object of `size` bytes: first-last
 * (a last past the end means the rest), first- (the rest), -n (the last n bytes).
 * "unsatisfiable" (416) when it starts at or past the end; several ranges are not served.
 */
function byteRange(header: string, size: number): { first: number; last: number } | "unsatisfiable" {
  const m = /^bytes=(?:(\d{1,15})-(\d{1,15})?|-(\d{1,15}))$/.exec(header.trim());
  if (!m) throw new KlioError("bad-request", `Range ${JSON.stringify(header.slice(0, 100))} is not one range bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX`);
  if (m[3] !== undefined) {
    const n = Number(m[3]);
    if (n === 0 || size === 0) return "unsatisfiable";
    return { first: Math.max(0, size - n), last: size - 1 };
  }
  const first = Number(m[1]);
  const last = m[2] === undefined ? size - 1 : Number(m[2]);
  if (first > last && m[2] !== undefined) throw new KlioError("bad-request", `Range ${header} runs backwards`);
  if (first >= size) return "unsatisfiable";
  return { first, last: Math.min(last, size - 1) };
}

/** The cluster a key is of (snapshots/CLUSTER/…, wal/CLUSTER/…), or null. */
function clusterOfKey(key: string): string | null {
  const m = /^(?:snapshots|wal)\/([^/]+)/.exec(key);
  return m ? m[1]! : null;
}

function configuredOrNone(d: Daemon, key: string): boolean {
  const cluster = clusterOfKey(key);
  return cluster === null || d.supervisors.has(cluster);
}

/** What belongs to a cluster the daemon does not serve is answered as /v1/clusters/{name} answers it: 404. */
function mustBeConfiguredCluster(d: Daemon, key: string): void {
  if (!configuredOrNone(d, key)) throw new KlioError("not-found", `no cluster named ${clusterOfKey(key)} in the configuration`);
}

async function objectSize(d: Daemon, key: string): Promise<number> {
  const found = (await d.storage.list(key)).find((e) => e.key === key);
  if (!found) throw new KlioError("not-found", `the repository has no ${key}`);
  return found.size;
}

function binary(bytes: Uint8Array, status: number, headers: Record<string, string> = {}): Response {
  return new Response(bytes as Uint8Array<ArrayBuffer>, { status, headers: { "content-type": "application/octet-stream", ...headers } });
}

export interface ApiOptions {
  log: Logger;
}

export function createApp(d: Daemon, opts: ApiOptions): Hono {
  const app = new Hono();
  const tokens = new TokenChecker(d.config.api.tokens);
  const diskFacts = new DiskFacts(d.config.repository.path);

  app.onError((e, c) => {
    if (isKlioError(e)) return errorResponse(statusOf(e), e.code, e.message);
    opts.log.error("api.error", { method: c.req.method, path: c.req.path, error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
    return errorResponse(500, "internal", "the request failed inside the daemon; see its log");
  });
  app.notFound((c) => errorResponse(404, "not-found", `no route ${c.req.method} ${c.req.path}`));

  app.get("/healthz", () => new Response("ok\n", { headers: { "content-type": "text/plain" } }));

  // Everything else needs a token: who may do what is decided before any route runs.
  app.use("*", async (c, next) => {
    const token = tokens.check(c.req.header("authorization"));
    if (!token) return errorResponse(401, "unauthorized", "a valid bearer token is required (Authorization: Bearer …)");
    const needs = scopeFor(c.req.method);
    if (!allows(token.scope, needs)) return errorResponse(403, "forbidden", `token ${token.name} has scope ${token.scope}; this needs ${needs}`);
    await next();
  });
  // A restore reading the repository over the API holds a lease: maintenance waits for it.
  const leases = new ReadLeases(d.config.repository.path);
  app.use("/v1/repository/*", async (c, next) => {
    const reader = c.req.header(READER_HEADER);
    if (reader !== undefined) await leases.note(reader, tokens.check(c.req.header("authorization"))!.name);
    await next();
  });
  app.use("*", bodyLimit({
    maxSize: d.config.api.maxBodyBytes,
    onError: () => errorResponse(413, "too-large", `request bodies are limited to ${d.config.api.maxBodyBytes} bytes`),
  }));

  app.get("/metrics", async () => new Response(await daemonMetrics(d, diskFacts), { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } }));
  app.get("/openapi.json", () => json(openApiDocument(ROUTES)));

  for (const r of ROUTES) {
    const params = r.params ? Object.entries(r.params).map(([k, s]) => [k, TypeCompiler.Compile(s)] as const) : [];
    const body = r.body ? TypeCompiler.Compile(r.body) : null;
    app[r.method](r.path, async (c) => {
      const values: Record<string, string> = {};
      for (const [k, check] of params) {
        const v = c.req.param(k);
        if (v === undefined || !check.Check(v)) return errorResponse(400, "bad-request", `${k} ${JSON.stringify(v ?? "").slice(0, 100)} is not valid here`);
        values[k] = v;
      }
      let parsed: unknown = undefined;
      if (body) {
        const text = await c.req.text();
        if (text.trim() === "") parsed = {};
        else {
          const type = c.req.header("content-type") ?? "";
          if (!/^application\/json\b/i.test(type)) return errorResponse(415, "unsupported-media-type", "send the body as application/json");
          try {
            parsed = JSON.parse(text);
          } catch (e) {
            return errorResponse(400, "bad-request", `the body is not JSON: ${(e as Error).message}`);
          }
        }
        if (!body.Check(parsed)) {
          const first = body.Errors(parsed).First();
          return errorResponse(400, "bad-request", `the body ${first ? `at ${first.path || "/"}: ${first.message}` : "is not valid"}`);
        }
      }
      return r.handler({ c, d, params: values, body: parsed });
    });
  }
  return app;
}
