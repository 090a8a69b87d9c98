// The repository in an S3-compatible bucket (MinIO on-prem first): the offsite copy, and a
// place a restore can read from alone (`--repo s3://bucket/prefix`). Keys are the repository's
// keys under the prefix. Every call retries transient failures (network errors, 5xx, 429)
// with backoff, which is safe because every object is written once under its final name.
import { Agent as HttpsAgent } from "node:https";
import { createReadStream, readFileSync } from "node:fs";
import { stat } from "node:fs/promises";
import type { Readable } from "node:stream";
import type { Client } from "minio";
import { KlioError } from "../util/errors.ts";
import { concatBytes } from "../util/bytes.ts";
import type { RateLimit } from "../util/rate-limit.ts";
import type { ObjectWriter, PutData, Storage, StorageEntry } from "./storage.ts";

export interface S3Location {
  bucket: string;
  /** "" or ending in "/". */
  prefix: string;
}

export interface S3Options {
  /** http(s)://host[:port] */
  endpoint: string;
  region: string;
  accessKey: string;
  secretKey: string;
  /** PEM bundle to trust for the endpoint's TLS certificate. */
  caFile?: string;
  /** Bucket in the path (MinIO, Swift) rather than in the host name. */
  pathStyle: boolean;
  /** Attempts per call for transient failures (default 8: about 30 s of backoff before giving up). */
  attempts?: number;
}

/** The part size the minio client uses for a multipart upload of `size` bytes (64 MiB, more for huge objects). */
export function multipartPartSize(size: number): number {
  let part = 64 * 1024 * 1024;
  while (part * 10000 <= size) part += 16 * 1024 * 1024;
  return part;
}

export function isS3Location(location: string): boolean {
  return /^s3:\/\//i.test(location);
}

/** s3://bucket[/prefix] → the bucket and a prefix ending in "/" (or ""). */
export function parseS3Url(url: string): S3Location {
  const m = /^s3:\/\/([^/?#]+)(\/[^?#]*)?$/i.exec(url);
  if (!m) throw new KlioError("bad-repository", `${url} is not an s3://bucket/prefix location`);
  const bucket = m[1]!;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket) || bucket.includes("..")) throw new KlioError("bad-repository", `"${bucket}" is not a valid bucket name (3-63 lower-case letters, digits, "." and "-")`);
  const parts = (m[2] ?? "").split("/").filter((p) => p !== "");
  if (parts.some((p) => p === "." || p === ".." || !/^[A-Za-z0-9_.-]{1,200}$/.test(p))) throw new KlioError("bad-repository", `the prefix of ${url} may hold letters, digits, "_", "." and "-" between slashes`);
  return { bucket, prefix: parts.length ? parts.join("/") + "/" : "" };
}

const TRANSIENT_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "ETIMEDOUT", "EPIPE", "EAI_AGAIN", "ENOTFOUND", "EHOSTUNREACH", "UND_ERR_SOCKET", "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed"]);

interface S3Error {
  code?: string;
  message?: string;
  $metadata?: unknown;
  amzRequestid?: string;
}

function statusOf(e: unknown): number | undefined {
  const s = (e as { statusCode?: number; $response?: { statusCode?: number } }).statusCode;
  return typeof s === "number" ? s : undefined;
}

function isTransient(e: unknown): boolean {
  const code = (e as S3Error).code;
  // The client's own retry is off (we retry, with jitter and more patience); what it throws for a 5xx is this.
  if (/Retryable HTTP status: (5\d\d|429)/.test((e as Error).message ?? "")) return true;
  const status = statusOf(e);
  if (status !== undefined && (status >= 500 || status === 429)) return true;
  return code !== undefined && TRANSIENT_CODES.has(code);
}

export class S3Storage implements Storage {
  readonly description: string;
  private readonly attempts: number;

  private constructor(private readonly client: Client, readonly location: S3Location, private readonly opts: S3Options) {
    this.description = `s3://${location.bucket}/${location.prefix}`;
    this.attempts = opts.attempts ?? 8;
  }

  static async open(location: S3Location, opts: S3Options): Promise<S3Storage> {
    let u: URL;
    try {
      u = new URL(opts.endpoint);
    } catch {
      throw new KlioError("bad-s3", `the S3 endpoint "${opts.endpoint}" is not a URL (e.g. https://minio.example.net:9000)`);
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new KlioError("bad-s3", `the S3 endpoint ${opts.endpoint} must be http:// or https://`);
    if (u.pathname !== "/" || u.search || u.username) throw new KlioError("bad-s3", `the S3 endpoint ${opts.endpoint} must be only scheme, host and port`);
    let agent: HttpsAgent | undefined;
    if (opts.caFile !== undefined) {
      let ca: string;
      try {
        ca = readFileSync(opts.caFile, "utf8");
      } catch (e) {
        throw new KlioError("bad-s3", `cannot read the CA file ${opts.caFile}: ${(e as Error).message}`);
      }
      agent = new HttpsAgent({ ca, keepAlive: true });
    }
    const { Client } = await import("minio");
    const useSSL = u.protocol === "https:";
    const client = new Client({
      endPoint: u.hostname.replace(/^\[(.*)\]$/, "$1"), port: u.port ? Number(u.port) : useSSL ? 443 : 80, useSSL,
      accessKey: opts.accessKey, secretKey: opts.secretKey, region: opts.region, pathStyle: opts.pathStyle, retryOptions: { disableRetry: true },
      ...(agent ? { transportAgent: agent } : {}),
    });
    return new S3Storage(client, location, opts);
  }

  private key(k: string): string {
    return this.location.prefix + k;
  }

  /** Runs `op`, retrying transient failures; maps the rest to one clear KlioError. */
  private async call<T>(what: string, op: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await op();
      } catch (e) {
        if (e instanceof KlioError) throw e;
        // A local file that went away (putFile): the caller decides; it is no S3 failure.
        if ((e as NodeJS.ErrnoException).code === "ENOENT" && (e as NodeJS.ErrnoException).path !== undefined) throw e;
        if (isTransient(e) && attempt < this.attempts) {
          await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2)));
          continue;
        }
        throw this.mapError(e, what);
      }
    }
  }

  private mapError(e: unknown, what: string): KlioError {
    const err = e as S3Error;
    const where = `${what} (${this.description} at ${this.opts.endpoint})`;
    switch (err.code) {
      case "NoSuchKey":
      case "NotFound":
        return new KlioError("not-found", `${where}: no such object`);
      case "NoSuchBucket":
        return new KlioError("no-bucket", `${where}: the bucket ${this.location.bucket} does not exist (create it first, e.g. mc mb)`);
      case "AccessDenied":
      case "InvalidAccessKeyId":
      case "SignatureDoesNotMatch":
        return new KlioError("s3-auth", `${where}: refused (${err.code}): check the access key, the secret key and the bucket's policy`);
      case "InvalidRange":
        return new KlioError("short-object", `${where}: the object ends before the range asked for`);
    }
    const status = statusOf(e);
    return new KlioError(isTransient(e) ? "unreachable" : "s3-error", `${where}: ${err.code ?? (status ? `HTTP ${status}` : "error")}: ${err.message ?? String(e)}`);
  }

  async get(key: string): Promise<Uint8Array> {
    return this.call(`reading ${key}`, async () => readAll(await this.client.getObject(this.location.bucket, this.key(key))));
  }

  async getRange(key: string, offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    if (length === 0) return new Uint8Array(0);
    const bytes = await this.call(`reading ${key} at ${offset}`, async () => readAll(await this.client.getPartialObject(this.location.bucket, this.key(key), offset, length)));
    if (bytes.length !== length) throw new KlioError("short-object", `${key} in ${this.description} ends before ${offset + length} (got ${bytes.length} of ${length} bytes at ${offset})`);
    if (!into) return bytes;
    into.set(bytes);
    return into.subarray(0, length);
  }

  async put(key: string, data: PutData): Promise<void> {
    const body = await gather(data);
    await this.call(`writing ${key}`, () => this.client.putObject(this.location.bucket, this.key(key), Buffer.from(body.buffer, body.byteOffset, body.byteLength), body.length));
  }

  /** Not atomic (a check, then the put): objects reach a bucket only through offsite sync, one writer at a time. */
  async putNew(key: string, data: PutData): Promise<void> {
    if (await this.exists(key)) throw new KlioError("object-exists", `${key} already exists in ${this.description}; objects are written once`);
    await this.put(key, data);
  }

  /**
   * Uploads a local file under `key`, streamed (multipart above the client's part size), at
   * most as fast as `limit` lets it.
   */
  async putFile(key: string, file: string, limit?: RateLimit): Promise<void> {
    await this.call(`writing ${key}`, async () => {
      const { size } = await stat(file);
      const source = createReadStream(file);
      const body = limit ? source.pipe(limit.throttle()) : source;
      if (limit) source.on("error", (e) => body.destroy(e));
      return this.client.putObject(this.location.bucket, this.key(key), body, size, { "Content-Type": "application/octet-stream" });
    });
  }

  create(key: string): Promise<ObjectWriter> {
    return Promise.reject(new KlioError("not-supported", `cannot write ${key} piece by piece to ${this.description}: backups are written locally and copied with klio offsite sync`));
  }

  async list(prefix: string): Promise<StorageEntry[]> {
    return this.call(`listing ${prefix}`, async () => {
      const out: StorageEntry[] = [];
      for await (const o of this.client.listObjectsV2(this.location.bucket, this.key(prefix), true)) {
        const item = o as { name?: string; size?: number; lastModified?: Date; etag?: string };
        if (item.name === undefined) continue; // a common prefix, not an object
        out.push({ key: item.name.slice(this.location.prefix.length), size: item.size ?? 0, modified: item.lastModified?.getTime(), etag: item.etag?.replace(/"/g, "") });
      }
      return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    });
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.call(`looking for ${key}`, () => this.client.statObject(this.location.bucket, this.key(key)));
      return true;
    } catch (e) {
      if (e instanceof KlioError && e.code === "not-found") return false;
      throw e;
    }
  }

  async remove(key: string): Promise<void> {
    await this.call(`removing ${key}`, () => this.client.removeObject(this.location.bucket, this.key(key)));
  }

  async close(): Promise<void> {}
}

async function readAll(stream: Readable): Promise<Uint8Array> {
  const parts: Buffer[] = [];
  for await (const p of stream) parts.push(p as Buffer);
  const b = Buffer.concat(parts);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

async function gather(data: PutData): Promise<Uint8Array> {
  if (data instanceof Uint8Array) return data;
  const parts: Uint8Array[] = [];
  if (Symbol.asyncIterator in (data as object)) for await (const p of data as AsyncIterable<Uint8Array>) parts.push(p);
  else parts.push(...(data as readonly Uint8Array[]));
  return concatBytes(parts);
}
