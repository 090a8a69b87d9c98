// A repository read over the appliance's HTTP API (GET /v1/repository/objects/…), so that a
// new database host restores straight from the backup VM. Read-only: writes belong to the
// appliance. Ranged reads are plain HTTP Range requests; the restore's parallel chunk reads
// become parallel requests on kept-alive connections. Every request names this reader
// (X-Klio-Reader), so that the appliance holds a lease for it and its maintenance removes no
// pack this reader may still need (src/api/read-leases.ts).
import { randomBytes } from "node:crypto";
import { KlioError } from "../util/errors.ts";
import { apiFailure, apiFetch, READER_HEADER } from "../util/api-client.ts";
import type { ObjectWriter, PutData, Storage, StorageEntry } from "./storage.ts";

export class HttpStorage implements Storage {
  readonly description: string;
  private readonly base: string;
  private readonly reader = randomBytes(12).toString("hex");

  constructor(url: string, private readonly token: string | undefined) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw new KlioError("bad-repository", `${url} is not a URL`);
    }
    if (u.search || u.hash || u.username || u.password) throw new KlioError("bad-repository", `${url}: give the appliance's address only (https://host:port), no query, fragment or credentials (use --token-file)`);
    this.base = u.toString().replace(/\/+$/, "");
    this.description = this.base;
  }

  private fetch(pathAndQuery: string, init: { method?: string; headers?: Record<string, string> } = {}): Promise<Response> {
    return apiFetch(this.base, pathAndQuery, this.token, { ...init, headers: { ...init.headers, [READER_HEADER]: this.reader } });
  }

  private objectPath(key: string): string {
    return `/v1/repository/objects/${key.split("/").map(encodeURIComponent).join("/")}`;
  }

  async get(key: string): Promise<Uint8Array> {
    const r = await this.fetch(this.objectPath(key));
    if (r.status === 404) {
      await r.body?.cancel();
      throw new KlioError("not-found", `${key} does not exist in ${this.base}`);
    }
    if (r.status !== 200) throw await apiFailure(r, `reading ${key} from ${this.base}`);
    return new Uint8Array(await r.arrayBuffer());
  }

  async getRange(key: string, offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    if (length === 0) return new Uint8Array(0);
    const r = await this.fetch(this.objectPath(key), { headers: { range: `bytes=${offset}-${offset + length - 1}` } });
    if (r.status === 404) {
      await r.body?.cancel();
      throw new KlioError("not-found", `${key} does not exist in ${this.base}`);
    }
    if (r.status === 416) {
      await r.body?.cancel();
      throw new KlioError("short-object", `${key} in ${this.base} ends before ${offset + length}`);
    }
    if (r.status !== 206) throw await apiFailure(r, `reading ${key} from ${this.base}`);
    const bytes = new Uint8Array(await r.arrayBuffer());
    if (bytes.length !== length) throw new KlioError("short-object", `${key} in ${this.base} ends before ${offset + length} (got ${bytes.length} of ${length} bytes at ${offset})`);
    if (!into) return bytes;
    into.set(bytes);
    return into.subarray(0, length);
  }

  async list(prefix: string): Promise<StorageEntry[]> {
    const r = await this.fetch(`/v1/repository/objects?prefix=${encodeURIComponent(prefix)}`);
    if (r.status !== 200) throw await apiFailure(r, `listing ${prefix} in ${this.base}`);
    const body = (await r.json()) as { objects?: unknown };
    if (!Array.isArray(body.objects) || !body.objects.every((e) => typeof e?.key === "string" && Number.isSafeInteger(e?.size))) {
      throw new KlioError("bad-repository", `${this.base} answered a listing klio cannot read`);
    }
    return body.objects as StorageEntry[];
  }

  async exists(key: string): Promise<boolean> {
    const r = await this.fetch(this.objectPath(key), { method: "HEAD" });
    await r.body?.cancel();
    if (r.status === 200) return true;
    if (r.status === 404) return false;
    throw await apiFailure(r, `looking for ${key} in ${this.base}`);
  }

  put(key: string, _data: PutData): Promise<void> {
    return Promise.reject(readOnly(this.base, key));
  }

  putNew(key: string, _data: PutData): Promise<void> {
    return Promise.reject(readOnly(this.base, key));
  }

  create(key: string): Promise<ObjectWriter> {
    return Promise.reject(readOnly(this.base, key));
  }

  remove(key: string): Promise<void> {
    return Promise.reject(readOnly(this.base, key));
  }

  async close(): Promise<void> {}
}

function readOnly(base: string, key: string): KlioError {
  return new KlioError("read-only", `cannot write ${key}: a repository read over HTTP (${base}) is read-only; run this on the appliance`);
}
