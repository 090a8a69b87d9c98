// The appliance's one config file (JSON), its schema, and turning it into what the daemon
// runs: secrets read from their files or environment variables, connection strings parsed,
// schedules parsed. Every error names the place in the file ("/clusters/1/backup/schedule"),
// what was expected and what was found, and the daemon starts only from a config that is
// whole — a bad file changes nothing.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { Type, type Static, type TSchema } from "@sinclair/typebox";
import { TypeCompiler, type ValueError } from "@sinclair/typebox/compiler";
import { KlioError } from "../util/errors.ts";
import type { LogLevel } from "../util/log.ts";
import { parseConnInfo, type ConnInfo } from "../pg/conninfo.ts";
import { validateSlotName } from "../pg/replication-commands.ts";
import { validateClusterName } from "../wal/archive-layout.ts";
import { parseSchedule, type Schedule } from "./schedule.ts";
import { validatePolicy, type RetentionPolicy } from "../backup/retention.ts";
import { parseRate } from "../util/rate-limit.ts";
import { parseS3Url, type S3Location, type S3Options } from "../repo/s3-storage.ts";
import { DEFAULT_FULL_EVERY_MS, parseFullEvery } from "../backup/backup-kind.ts";

const Name = Type.String({ minLength: 1, maxLength: 63, pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]*$" });
const FilePath = Type.String({ minLength: 1, maxLength: 4096 });
const EnvName = Type.String({ minLength: 1, maxLength: 255, pattern: "^[A-Za-z_][A-Za-z0-9_]*$" });

const TokenSchema = Type.Object({
  name: Name,
  scope: Type.Union([Type.Literal("admin"), Type.Literal("read")]),
  token_file: Type.Optional(FilePath),
  token_env: Type.Optional(EnvName),
}, { additionalProperties: false });

const ClusterSchema = Type.Object({
  name: Name,
  /** libpq connection string or URI, without the password. */
  connection: Type.String({ minLength: 1, maxLength: 4096 }),
  password_file: Type.Optional(FilePath),
  password_env: Type.Optional(EnvName),
  slot: Type.Optional(Type.String({ minLength: 1, maxLength: 63 })),
  create_slot: Type.Optional(Type.Boolean()),
  synchronous: Type.Optional(Type.Boolean()),
  backup: Type.Optional(Type.Object({
    /** A cron expression ("0 3 * * *", local time) or an interval ("every 6h"). */
    schedule: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    wal_timeout_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 })),
    /** A full backup at least this often ("7d", "off"); the others are incremental where the server can. */
    full_every: Type.Optional(Type.String({ minLength: 2, maxLength: 20 })),
  }, { additionalProperties: false })),
  /** Applied after every backup; a policy set in the repository (klio retention set, the API) takes precedence. */
  retention: Type.Optional(Type.Object({
    recovery_window: Type.Optional(Type.String({ minLength: 2, maxLength: 20 })),
    full: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
    keep_latest: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
    keep_daily: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
    keep_weekly: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
    keep_monthly: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
    min_backups: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
  }, { additionalProperties: false })),
}, { additionalProperties: false });

const OffsiteSchema = Type.Object({
  /** s3://bucket/prefix */
  url: Type.String({ minLength: 6, maxLength: 1024 }),
  endpoint: Type.String({ minLength: 8, maxLength: 1024 }),
  region: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  access_key_file: Type.Optional(FilePath),
  access_key_env: Type.Optional(EnvName),
  secret_key_file: Type.Optional(FilePath),
  secret_key_env: Type.Optional(EnvName),
  ca_file: Type.Optional(FilePath),
  virtual_hosted: Type.Optional(Type.Boolean()),
  concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
  interval_seconds: Type.Optional(Type.Number({ minimum: 0.5, maximum: 3600 })),
  /** At most this much for all uploads together, e.g. "20MB/s". */
  bandwidth: Type.Optional(Type.String({ minLength: 4, maxLength: 32 })),
}, { additionalProperties: false });

export const ConfigSchema = Type.Object({
  repository: Type.Object({
    path: FilePath,
    passphrase_file: Type.Optional(FilePath),
    passphrase_env: Type.Optional(EnvName),
    workers: Type.Optional(Type.Integer({ minimum: 0, maximum: 64 })),
  }, { additionalProperties: false }),
  /** The offsite copy of the repository (S3-compatible), kept up to date by the daemon. */
  offsite: Type.Optional(OffsiteSchema),
  /** Maintenance (freeing the space of deleted backups), run by the daemon on a schedule. */
  maintenance: Type.Optional(Type.Object({
    /** A cron expression or an interval (default "0 4 * * *"), or "off". */
    schedule: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    repack_share: Type.Optional(Type.Number({ minimum: 0.05, maximum: 1 })),
    max_wait_minutes: Type.Optional(Type.Integer({ minimum: 0, maximum: 7 * 24 * 60 })),
  }, { additionalProperties: false })),
  /** The repository's file system: below this much free space (percent of its size) the daemon warns. */
  disk: Type.Optional(Type.Object({
    low_space_percent: Type.Optional(Type.Number({ minimum: 0, maximum: 99 })),
  }, { additionalProperties: false })),
  /** Where the daemon keeps its own state (last runs, errors); default: "state" beside the config file. */
  state_dir: Type.Optional(FilePath),
  api: Type.Object({
    host: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    port: Type.Integer({ minimum: 0, maximum: 65_535 }),
    tls: Type.Optional(Type.Object({ cert_file: FilePath, key_file: FilePath }, { additionalProperties: false })),
    tokens: Type.Array(TokenSchema, { minItems: 1, maxItems: 100 }),
    max_body_bytes: Type.Optional(Type.Integer({ minimum: 1024, maximum: 16 * 1024 * 1024 })),
  }, { additionalProperties: false }),
  log: Type.Optional(Type.Object({
    level: Type.Optional(Type.Union([Type.Literal("debug"), Type.Literal("info"), Type.Literal("warn"), Type.Literal("error")])),
    format: Type.Optional(Type.Union([Type.Literal("json"), Type.Literal("text")])),
  }, { additionalProperties: false })),
  clusters: Type.Array(ClusterSchema, { maxItems: 100 }),
}, { additionalProperties: false });

export type ConfigFile = Static<typeof ConfigSchema>;

export interface ApiToken {
  name: string;
  scope: "admin" | "read";
  token: string;
}

export interface ClusterConfig {
  name: string;
  conninfo: ConnInfo;
  slot: string;
  createSlot: boolean;
  synchronous: boolean;
  /** null: backups only on request. */
  schedule: Schedule | null;
  walTimeoutMs: number;
  /** A full backup at least this often; null: no bound (backup-kind.ts). */
  fullEveryMs: number | null;
  /** From the config; a policy stored in the repository takes precedence. */
  retention: RetentionPolicy | null;
}

export interface MaintenanceConfig {
  /** null: only on request (POST /v1/maintenance). */
  schedule: Schedule | null;
  repackShare: number | undefined;
  maxWaitMs: number;
}

export interface OffsiteConfig {
  url: string;
  location: S3Location;
  s3: S3Options;
  concurrency: number;
  intervalMs: number;
  /** Bytes per second, or null for no limit. */
  bandwidth: number | null;
}

export interface DaemonConfig {
  file: string;
  offsite: OffsiteConfig | null;
  repository: { path: string; passphrase: string | undefined; workers: number | undefined };
  stateDir: string;
  api: { host: string; port: number; tls: { cert: string; key: string } | null; tokens: ApiToken[]; maxBodyBytes: number };
  log: { level: LogLevel | undefined; format: "json" | "text" | undefined };
  clusters: ClusterConfig[];
  maintenance: MaintenanceConfig;
  lowSpacePercent: number;
}

const checker = TypeCompiler.Compile(ConfigSchema);

/** "at /clusters/0/port: expected integer, found "5432"" — the first few schema errors. */
export function schemaErrors(errors: Iterable<ValueError>, limit = 5): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    const where = e.path === "" ? "/" : e.path;
    if (seen.has(where)) continue; // a union reports each branch: the first says enough
    seen.add(where);
    out.push(`at ${where}: ${expected(e)}, found ${found(e.value)}`);
    if (out.length >= limit) break;
  }
  return out;
}

function expected(e: ValueError): string {
  const s = e.schema as TSchema & { pattern?: string; const?: unknown; anyOf?: TSchema[] };
  if (e.message.startsWith("Unexpected property")) return "no such setting";
  if (e.message.startsWith("Expected required property")) return "a required setting";
  if (s.anyOf) return `one of ${s.anyOf.map((b) => JSON.stringify((b as { const?: unknown }).const ?? b.type)).join(", ")}`;
  return e.message.replace(/^Expected/, "expected");
}

function found(v: unknown): string {
  if (v === undefined) return "nothing";
  const text = JSON.stringify(v);
  return text.length > 80 ? text.slice(0, 77) + "…" : text;
}

function bad(file: string, where: string, message: string): KlioError {
  return new KlioError("bad-config", `${file}: at ${where}: ${message}`);
}

async function readSecret(file: string, where: string, what: string, fromFile: string | undefined, fromEnv: string | undefined, env: Record<string, string | undefined>): Promise<string | undefined> {
  if (fromFile !== undefined && fromEnv !== undefined) throw bad(file, where, `give the ${what} in a file or an environment variable, not both`);
  if (fromEnv !== undefined) {
    const v = env[fromEnv];
    if (v === undefined || v === "") throw bad(file, where, `the environment variable ${fromEnv} (the ${what}) is not set`);
    return v;
  }
  if (fromFile === undefined) return undefined;
  let text: string;
  try {
    text = await readFile(path.resolve(path.dirname(file), fromFile), "utf8");
  } catch (e) {
    throw bad(file, where, `cannot read the ${what} file ${fromFile}: ${(e as Error).message}`);
  }
  const v = text.replace(/\r?\n$/, "");
  if (v === "") throw bad(file, where, `the ${what} file ${fromFile} is empty`);
  return v;
}

/** The config text as JSON that fits the schema; nothing else is read or checked. */
export function parseConfigText(text: string, file: string): ConfigFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new KlioError("bad-config", `${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (!checker.Check(raw)) throw new KlioError("bad-config", `${file}: ${schemaErrors(checker.Errors(raw)).join("; ")}`);
  return raw;
}

/** Parses and checks the config text; `file` names it in errors and anchors relative paths. */
export async function parseConfig(text: string, file: string, env: Record<string, string | undefined>): Promise<DaemonConfig> {
  const c = parseConfigText(text, file);
  const rel = (p: string) => path.resolve(path.dirname(file), p);

  const tokens: ApiToken[] = [];
  for (const [i, t] of c.api.tokens.entries()) {
    const where = `/api/tokens/${i}`;
    const token = await readSecret(file, where, "token", t.token_file, t.token_env, env);
    if (token === undefined) throw bad(file, where, "expected token_file or token_env (tokens are never written in the config itself)");
    if (token.length < 16) throw bad(file, where, `the token must be at least 16 characters, found ${token.length}`);
    if (tokens.some((o) => o.name === t.name)) throw bad(file, `${where}/name`, `expected a name no other token has, found ${JSON.stringify(t.name)} again`);
    tokens.push({ name: t.name, scope: t.scope, token });
  }

  let tls: { cert: string; key: string } | null = null;
  if (c.api.tls) {
    const read = async (p: string, what: string) => {
      try {
        return await readFile(rel(p), "utf8");
      } catch (e) {
        throw bad(file, `/api/tls/${what}`, `cannot read ${p}: ${(e as Error).message}`);
      }
    };
    tls = { cert: await read(c.api.tls.cert_file, "cert_file"), key: await read(c.api.tls.key_file, "key_file") };
  }

  const clusters: ClusterConfig[] = [];
  for (const [i, k] of c.clusters.entries()) {
    const where = `/clusters/${i}`;
    const edge = <T>(sub: string, f: () => T): T => {
      try {
        return f();
      } catch (e) {
        if (e instanceof KlioError) throw bad(file, `${where}/${sub}`, e.message);
        throw e;
      }
    };
    const name = edge("name", () => validateClusterName(k.name));
    if (clusters.some((o) => o.name === name)) throw bad(file, `${where}/name`, `expected a name no other cluster has, found ${JSON.stringify(name)} again`);
    const conninfo = edge("connection", () => parseConnInfo(k.connection, {}, { application_name: "klio" }));
    if (conninfo.servers.some((s) => s.password !== undefined)) throw bad(file, `${where}/connection`, "the connection string holds a password: put it in password_file or password_env instead");
    const password = await readSecret(file, where, "password", k.password_file, k.password_env, env);
    if (password !== undefined) for (const server of conninfo.servers) server.password = password;
    const slot = edge("slot", () => validateSlotName(k.slot ?? `klio_${name.replace(/[^a-z0-9_]/gi, "_").toLowerCase()}`));
    const schedule = k.backup?.schedule === undefined ? null : edge("backup/schedule", () => parseSchedule(k.backup!.schedule!));
    const fullEveryMs = k.backup?.full_every === undefined ? DEFAULT_FULL_EVERY_MS : edge("backup/full_every", () => parseFullEvery(k.backup!.full_every!, "full_every"));
    const r = k.retention;
    const retention = r === undefined ? null : edge("retention", () => validatePolicy(Object.fromEntries(Object.entries({
      recoveryWindow: r.recovery_window, full: r.full, keepLatest: r.keep_latest, keepDaily: r.keep_daily, keepWeekly: r.keep_weekly, keepMonthly: r.keep_monthly, minBackups: r.min_backups,
    }).filter(([, v]) => v !== undefined)), "the retention"));
    clusters.push({
      name, conninfo, slot, createSlot: k.create_slot ?? true, synchronous: k.synchronous ?? false, schedule,
      walTimeoutMs: (k.backup?.wal_timeout_seconds ?? 300) * 1000, fullEveryMs, retention,
    });
  }

  let offsite: OffsiteConfig | null = null;
  if (c.offsite) {
    const o = c.offsite;
    const location = (() => {
      try {
        return parseS3Url(o.url);
      } catch (e) {
        throw bad(file, "/offsite/url", (e as Error).message);
      }
    })();
    const accessKey = await readSecret(file, "/offsite", "S3 access key", o.access_key_file, o.access_key_env, env);
    const secretKey = await readSecret(file, "/offsite", "S3 secret key", o.secret_key_file, o.secret_key_env, env);
    if (accessKey === undefined || secretKey === undefined) throw bad(file, "/offsite", "expected access_key_file or access_key_env, and secret_key_file or secret_key_env");
    if (!/^https?:\/\/[^/]+\/?$/.test(o.endpoint)) throw bad(file, "/offsite/endpoint", `expected http(s)://host[:port], found ${JSON.stringify(o.endpoint)}`);
    offsite = {
      url: o.url, location,
      s3: { endpoint: o.endpoint.replace(/\/$/, ""), region: o.region ?? "us-east-1", accessKey, secretKey, caFile: o.ca_file === undefined ? undefined : rel(o.ca_file), pathStyle: !o.virtual_hosted },
      concurrency: o.concurrency ?? 4, intervalMs: (o.interval_seconds ?? 2) * 1000,
      bandwidth: o.bandwidth === undefined ? null : (() => {
        try {
          return parseRate(o.bandwidth!);
        } catch (e) {
          throw bad(file, "/offsite/bandwidth", (e as Error).message);
        }
      })(),
    };
  }

  const m = c.maintenance ?? {};
  let maintenanceSchedule: Schedule | null = null;
  if (m.schedule !== "off") {
    try {
      maintenanceSchedule = parseSchedule(m.schedule ?? "0 4 * * *");
    } catch (e) {
      throw bad(file, "/maintenance/schedule", `${(e as Error).message}, or "off"`);
    }
  }

  return {
    file,
    offsite,
    maintenance: { schedule: maintenanceSchedule, repackShare: m.repack_share, maxWaitMs: (m.max_wait_minutes ?? 60) * 60_000 },
    lowSpacePercent: c.disk?.low_space_percent ?? 10,
    repository: {
      path: rel(c.repository.path),
      passphrase: await readSecret(file, "/repository", "passphrase", c.repository.passphrase_file, c.repository.passphrase_env, env),
      workers: c.repository.workers,
    },
    stateDir: rel(c.state_dir ?? "state"),
    api: { host: c.api.host ?? "127.0.0.1", port: c.api.port, tls, tokens, maxBodyBytes: c.api.max_body_bytes ?? 64 * 1024 },
    log: { level: c.log?.level, format: c.log?.format },
    clusters,
  };
}

export async function readConfigText(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (e) {
    throw new KlioError("bad-config", `cannot read the config file ${file}: ${(e as Error).message}`);
  }
}

export async function loadConfig(file: string, env: Record<string, string | undefined>): Promise<DaemonConfig> {
  return parseConfig(await readConfigText(file), path.resolve(file), env);
}
