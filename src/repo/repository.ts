// The repository: a content-addressed, deduplicating, optionally encrypted store of chunks
// in packs, with small objects (snapshot manifests) beside them. It knows nothing of
// PostgreSQL. Layout and formats: docs/FORMAT.md, "Repository".
//
//   klio-repository.json          header (header.ts)
//   packs/<2 hex>/<32 hex>.pack   chunks (pack-writer.ts)
//   index/<32 hex>.idx            where each chunk is (index-file.ts)
//   snapshots/…                   objects (objects.ts)
//   wal/<cluster>/                the WAL archive (src/wal)
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { fsyncDir, writeDurableWith, writeFileDurable } from "../util/durable-fs.ts";
import { KlioError, isKlioError } from "../util/errors.ts";
import { chunkIdFunction, type ChunkId } from "./chunk-id.ts";
import { ChunkIndex } from "./chunk-index.ts";
import { checkRepository, type CheckOptions, type RepoProblem } from "./check.ts";
import { chunkOfFrame, decodeFrame, readStoredFrame, type BlobContext } from "./blob.ts";
import type { Compression } from "./codec.ts";
import { DEFAULT_SCRYPT, deriveKek, deriveKeys, newMasterKey, seal, unseal, MASTER_KEY_BYTES } from "./crypto.ts";
import { encodeHeader, fromBase64, HEADER_KEY, parseHeader, REPO_FORMAT, REPO_VERSION, toBase64, type RepoHeader } from "./header.ts";
import { hexOf, packKey, readIndexHead, type IndexEntry } from "./index-file.ts";
import { decodeObject, encodeObject, validateObjectKey } from "./objects.ts";
import { PackChunkWriter, type ChunkWriter } from "./pack-writer.ts";
import { ChunkWorkerPool, defaultWorkerCount } from "./chunk-workers.ts";
import { ChunkReader } from "./chunk-reader.ts";
import { FsStorage } from "./fs-storage.ts";
import { HttpStorage } from "./http-storage.ts";
import { isS3Location, parseS3Url, S3Storage, type S3Options } from "./s3-storage.ts";
import { isApiLocation } from "../util/api-client.ts";
import type { Storage } from "./storage.ts";
import { holdsOnlyWal, notARepository } from "./wal-only.ts";
import { guardedMerge, MAINTENANCE_DIR, RepoSession } from "./sessions.ts";
import { maintainRepository, type MaintenanceContext, type MaintenanceOptions, type MaintenanceReport, type ReferenceSource } from "./maintenance.ts";
import { commitInSession } from "./maintenance-commit.ts";
import { makeDirectories } from "../util/make-directories.ts";

export type { ChunkWriter } from "./pack-writer.ts";
export type { ChunkReader } from "./chunk-reader.ts";
export type { RepoProblem } from "./check.ts";

export const DEFAULT_PACK_TARGET = 32 << 20;
export const DEFAULT_COMPRESSION: Compression = "brotli";
/** Frames kept decoded for readChunk (each FRAME_TARGET plain bytes at most, about 4 MB in all). */
const FRAME_CACHE = 32;

export interface Repository {
  readonly root: string;
  readonly id: string;
  readonly encrypted: boolean;
  readonly header: RepoHeader;
  chunkId(data: Uint8Array): ChunkId;
  has(id: ChunkId): boolean;
  readChunk(id: ChunkId): Promise<Uint8Array>;
  /**
   * A writer for a repository no maintenance runs on at the same time (a fresh export target,
   * tests). Backups use beginWrite().
   */
  writer(): ChunkWriter;
  /**
   * Registers a writer session (sessions.ts), then reloads the index, and gives a writer that
   * deduplicates only against what maintenance keeps until the session ends. End the session
   * after the snapshot naming the chunks is written, or after abandoning the writer.
   */
  beginWrite(purpose: string): Promise<{ session: RepoSession; writer: ChunkWriter }>;
  /**
   * For a long read of a local repository (a restore, a verify): registers a session, so that
   * maintenance removes no pack this reader may still need until it ends, then reloads the
   * index. Elsewhere (S3, the API) nothing to hold: null.
   */
  holdForReading(purpose: string): Promise<RepoSession | null>;
  /** Reads many chunks in order, `inFlight` frames at once (a restore); close() it when done. */
  reader(opts?: { inFlight?: number }): ChunkReader;
  /** Writes a new object; never replaces one (KlioError "object-exists", the old one kept whole). */
  putObject(key: string, data: Uint8Array): Promise<void>;
  /**
   * Writes a session's object naming chunks (a snapshot), so that it is restorable the moment
   * it exists whatever maintenance is doing (maintenance-commit.ts); `names` visits what it names.
   */
  commitObject(session: RepoSession, key: string, data: Uint8Array, names: (visit: (id: ChunkId) => void, afterDirect: () => Promise<void>) => Promise<void>): Promise<{ broughtBack: number }>;
  getObject(key: string): Promise<Uint8Array>;
  listObjects(prefix: string): Promise<string[]>;
  deleteObject(key: string): Promise<void>;
  refresh(): Promise<void>;
  check(opts: CheckOptions): Promise<RepoProblem[]>;
  /** Frees the space of chunks `refs` does not name (maintenance.ts); a local repository only. */
  maintain(refs: ReferenceSource, opts: MaintenanceOptions): Promise<MaintenanceReport>;
  close(): Promise<void>;
}

export interface InitOptions {
  passphrase?: string;
  compression?: Compression;
  packTargetBytes?: number;
  /** scrypt cost; tests use a cheap one. */
  scrypt?: { N: number; r: number; p: number };
}

function masterAad(repoId: string): Uint8Array {
  return new TextEncoder().encode(`klio master key ${repoId}`);
}

async function wrapMaster(master: Uint8Array, repoId: string, passphrase: string, cost: { N: number; r: number; p: number }): Promise<RepoHeader["encryption"]> {
  const salt = new Uint8Array(randomBytes(16));
  const kek = await deriveKek(passphrase, { ...cost, salt });
  return {
    algorithm: "aes-256-gcm",
    kdf: { name: "scrypt", N: cost.N, r: cost.r, p: cost.p, salt: toBase64(salt) },
    wrappedKey: toBase64(seal(kek, master, masterAad(repoId))),
  };
}

async function unwrapMaster(h: RepoHeader, passphrase: string | undefined, where: string): Promise<Uint8Array> {
  const e = h.encryption!;
  if (passphrase === undefined || passphrase === "")
    throw new KlioError("bad-passphrase", `${where} is encrypted: give its passphrase (--encryption-passphrase-file FILE)`);
  const kek = await deriveKek(passphrase, { N: e.kdf.N, r: e.kdf.r, p: e.kdf.p, salt: fromBase64(e.kdf.salt)! });
  const master = unseal(kek, fromBase64(e.wrappedKey)!, masterAad(h.id));
  if (master === null || master.length !== MASTER_KEY_BYTES) throw new KlioError("bad-passphrase", `wrong passphrase for the encrypted repository ${where}`);
  return master;
}

async function readHeaderFile(dir: string): Promise<RepoHeader> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path.join(dir, HEADER_KEY));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw await notARepository(dir);
    throw new KlioError("bad-repository", `cannot read ${path.join(dir, HEADER_KEY)}: ${(e as Error).message}`);
  }
  return parseHeader(bytes, dir);
}

async function readHeaderFrom(storage: Storage, location: string): Promise<RepoHeader> {
  try {
    return parseHeader(await storage.get(HEADER_KEY), location);
  } catch (e) {
    if (isKlioError(e) && e.code === "not-found") throw new KlioError("bad-repository", `${location} holds no klio repository (no ${HEADER_KEY})`);
    throw e;
  }
}

function openS3(location: string, opts: S3Options | undefined): Promise<S3Storage> {
  if (!opts) throw new KlioError("usage", `${location}: an s3:// repository needs the S3 endpoint and keys (--s3-endpoint …)`);
  return S3Storage.open(parseS3Url(location), opts);
}

export async function isRepository(dir: string): Promise<boolean> {
  try {
    return (await stat(path.join(dir, HEADER_KEY))).isFile();
  } catch {
    return false;
  }
}

/**
 * Creates a repository in `dir` (created if missing). Refuses a directory that already
 * holds a repository or anything else, and changes nothing then.
 */
export async function initRepository(dir: string, opts: InitOptions = {}): Promise<void> {
  if (opts.passphrase === "") throw new KlioError("bad-passphrase", "the passphrase is empty");
  const packTargetBytes = opts.packTargetBytes ?? DEFAULT_PACK_TARGET;
  let names: string[] | null = null;
  try {
    names = await readdir(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOTDIR") throw new KlioError("bad-repository", `${dir} exists and is not a directory`);
    if (code !== "ENOENT") throw new KlioError("bad-repository", `cannot read ${dir}: ${(e as Error).message}`);
  }
  if (names !== null && names.includes(HEADER_KEY)) {
    let what = "a klio repository";
    try {
      what = `a klio repository (id ${(await readHeaderFile(dir)).id})`;
    } catch {
      // a damaged header is still a repository: refuse all the same
    }
    throw new KlioError("bad-repository", `${dir} is already ${what}; nothing was changed`);
  }
  if (names !== null && names.length > 0) {
    // What `klio wal stream` left in an empty directory becomes the repository's WAL archive.
    if (!(await holdsOnlyWal(dir)))
      throw new KlioError("bad-repository", `${dir} is not empty and is not a klio repository: give a new or empty directory (or one that holds only a WAL archive)`);
    if (opts.passphrase !== undefined)
      throw new KlioError("bad-repository",
        `${dir} holds a WAL archive, in plaintext (klio does not encrypt WAL): refusing to make it an encrypted repository; nothing was changed. ` +
        "Init it without --encryption-passphrase-file to keep that WAL, or give a new or empty directory");
  }

  const id = hexOf(randomBytes(16));
  const encrypted = opts.passphrase !== undefined;
  const header: RepoHeader = {
    format: REPO_FORMAT,
    version: REPO_VERSION,
    id,
    createdAt: new Date().toISOString(),
    parameters: { packTargetBytes, chunkId: encrypted ? "hmac-sha256" : "sha256", compression: opts.compression ?? DEFAULT_COMPRESSION },
    encryption: encrypted ? await wrapMaster(newMasterKey(), id, opts.passphrase!, opts.scrypt ?? DEFAULT_SCRYPT) : null,
  };
  const bytes = encodeHeader(header);
  parseHeader(bytes, dir); // what we write, we can read

  await makeDirectories(dir);
  await fsyncDir(path.dirname(path.resolve(dir)));
  // The header is linked into place from a temporary file of this call's own, not renamed:
  // of two concurrent inits (two processes, or two calls in one), one fails.
  try {
    await writeDurableWith(path.join(dir, HEADER_KEY), (fh) => fh.writeFile(bytes), { noReplace: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") throw new KlioError("bad-repository", `${dir} became a klio repository meanwhile; nothing was changed`);
    throw e;
  }
}

/** Rewraps the master key under a new passphrase; the data is not touched. */
export async function changePassphrase(dir: string, oldPassphrase: string, newPassphrase: string): Promise<void> {
  const h = await readHeaderFile(dir);
  if (!h.encryption) throw new KlioError("bad-repository", `${dir} is not encrypted: it has no passphrase to change`);
  if (newPassphrase === "") throw new KlioError("bad-passphrase", "the new passphrase is empty");
  const master = await unwrapMaster(h, oldPassphrase, dir);
  const { N, r, p } = h.encryption.kdf;
  const next: RepoHeader = { ...h, encryption: await wrapMaster(master, h.id, newPassphrase, { N, r, p }) };
  await writeFileDurable(path.join(dir, HEADER_KEY), encodeHeader(next));
}

export interface OpenOptions {
  passphrase?: string;
  /** Bearer token for a repository read over the appliance's API. */
  token?: string;
  /** How to reach an s3:// repository. */
  s3?: S3Options;
  /** Worker threads a writer hashes and compresses on (0: on the calling thread); default one per core, up to 4. */
  workers?: number;
}

/**
 * Opens the repository at `location`: a directory, or the appliance's API (https://host:port,
 * read-only, with `token`).
 */
export async function openRepository(location: string, opts: OpenOptions = {}): Promise<Repository> {
  let storage: Storage;
  let header: RepoHeader;
  if (isApiLocation(location) || isS3Location(location)) {
    storage = isS3Location(location) ? await openS3(location, opts.s3) : new HttpStorage(location, opts.token);
    header = await readHeaderFrom(storage, location);
  } else {
    header = await readHeaderFile(location);
    storage = new FsStorage(location);
  }
  let keys: { data: Uint8Array; id: Uint8Array } | null = null;
  if (header.encryption) keys = deriveKeys(await unwrapMaster(header, opts.passphrase, location));
  const repo = new Repo(location, header, storage, keys, opts.workers ?? defaultWorkerCount());
  try {
    await repo.refresh();
  } catch (e) {
    await storage.close();
    throw e;
  }
  return repo;
}

class Repo implements Repository {
  readonly id: string;
  readonly encrypted: boolean;
  private readonly index: ChunkIndex;
  private readonly ctx: BlobContext & { compression: Compression };
  /** Decoded frames of several chunks, most recently used last. */
  private readonly frames = new Map<string, Promise<Uint8Array>>();

  constructor(
    readonly root: string,
    readonly header: RepoHeader,
    private readonly storage: Storage,
    private readonly keys: { data: Uint8Array; id: Uint8Array } | null,
    private readonly workerCount: number,
  ) {
    this.id = header.id;
    this.encrypted = keys !== null;
    this.ctx = { compression: header.parameters.compression, dataKey: keys?.data ?? null, chunkId: chunkIdFunction(keys?.id ?? null) };
    this.index = new ChunkIndex(storage, this.ctx.dataKey, storage instanceof FsStorage ? (merge) => guardedMerge(root, merge) : undefined);
  }

  chunkId(data: Uint8Array): ChunkId {
    return this.ctx.chunkId(data);
  }

  has(id: ChunkId): boolean {
    return this.index.has(id);
  }

  async readChunk(id: ChunkId): Promise<Uint8Array> {
    // A miss, or an index file gone under us, may be another process's new or consolidated
    // index: look once more after a refresh.
    for (let attempt = 0; ; attempt++) {
      let loc;
      try {
        loc = await this.index.locate(id);
      } catch (e) {
        if (attempt === 0 && isKlioError(e) && e.code === "not-found") {
          await this.refresh();
          continue;
        }
        throw e;
      }
      if (loc === null) {
        if (attempt === 0) {
          await this.refresh();
          continue;
        }
        throw this.index.missingChunk(id, this.root);
      }
      const key = packKey(loc.packId);
      const e = loc.entry;
      // A frame of several chunks is kept for the reads of its other chunks, which usually
      // follow (restore reads files in the order they were backed up).
      let frame: Promise<Uint8Array>;
      if (e.frameLength === e.plainLength) frame = this.readFrame(key, e);
      else {
        const fk = `${loc.packId}:${e.offset}`;
        frame = this.frames.get(fk) ?? this.readFrame(key, e);
        this.frames.delete(fk);
        this.frames.set(fk, frame);
        if (this.frames.size > FRAME_CACHE) this.frames.delete(this.frames.keys().next().value!);
        frame.catch(() => this.frames.get(fk) === frame && this.frames.delete(fk));
      }
      return chunkOfFrame(this.ctx.chunkId, id, await frame, e, key);
    }
  }

  private async readFrame(key: string, e: IndexEntry): Promise<Uint8Array> {
    return decodeFrame(this.ctx.dataKey, await readStoredFrame(this.storage, key, e, this.root), e, key);
  }

  writer(): ChunkWriter {
    return new PackChunkWriter({
      dataKey: this.ctx.dataKey, storage: this.storage, index: this.index, packTargetBytes: this.header.parameters.packTargetBytes,
      workers: this.workers(),
    });
  }

  async beginWrite(purpose: string): Promise<{ session: RepoSession; writer: ChunkWriter }> {
    if (!(this.storage instanceof FsStorage)) throw new KlioError("not-supported", `cannot write to ${this.root}: backups are written to a local repository`);
    const session = await RepoSession.begin(this.root, purpose);
    try {
      await this.refresh();
    } catch (e) {
      await session.end();
      throw e;
    }
    return { session, writer: this.writer() };
  }

  async holdForReading(purpose: string): Promise<RepoSession | null> {
    if (!(this.storage instanceof FsStorage)) return null;
    let session: RepoSession;
    try {
      session = await RepoSession.begin(this.root, purpose);
    } catch (e) {
      // A copy this user may only read (an exported copy on read-only media, another user's
      // repository): read without holding maintenance off. On read-only media none runs; on
      // another user's repository a pack maintenance rewrites meanwhile fails the read, which
      // can then be run again.
      if (["EACCES", "EPERM", "EROFS"].includes((e as NodeJS.ErrnoException).code ?? "")) return null;
      throw e;
    }
    try {
      await this.refresh();
    } catch (e) {
      await session.end();
      throw e;
    }
    return session;
  }

  reader(opts: { inFlight?: number } = {}): ChunkReader {
    return new ChunkReader({ storage: this.storage, index: this.index, workers: this.workers(), root: this.root, refresh: () => this.refresh(), inFlight: opts.inFlight });
  }

  private workers(): ChunkWorkerPool {
    return new ChunkWorkerPool({ compression: this.ctx.compression, idKey: this.keys?.id ?? null, dataKey: this.ctx.dataKey }, this.workerCount);
  }

  async putObject(key: string, data: Uint8Array): Promise<void> {
    validateObjectKey(key);
    await this.storage.putNew(key, encodeObject(key, data, this.ctx.compression, this.ctx.dataKey));
  }

  async commitObject(session: RepoSession, key: string, data: Uint8Array, names: (visit: (id: ChunkId) => void, afterDirect: () => Promise<void>) => Promise<void>): Promise<{ broughtBack: number }> {
    validateObjectKey(key);
    return commitInSession(this.maintenanceContext(), session, names, () => this.putObject(key, data), { refresh: () => this.refresh(), present: (id) => this.index.has(id) });
  }

  private maintenanceContext(): MaintenanceContext {
    if (!(this.storage instanceof FsStorage))
      throw new KlioError("not-supported", `maintenance and backups run where the repository lives (a directory), not on ${this.root}: the offsite copy follows with \`klio offsite sync\``);
    return {
      root: this.root, storage: this.storage, dataKey: this.ctx.dataKey, packTargetBytes: this.header.parameters.packTargetBytes,
      compression: this.ctx.compression, chunkId: this.ctx.chunkId,
    };
  }

  async getObject(key: string): Promise<Uint8Array> {
    validateObjectKey(key);
    let stored: Uint8Array;
    try {
      stored = await this.storage.get(key);
    } catch (e) {
      if (isKlioError(e) && e.code === "not-found") throw new KlioError("missing-object", `object ${key} does not exist in ${this.root}`);
      throw e;
    }
    return decodeObject(key, stored, this.ctx.dataKey);
  }

  async listObjects(prefix: string): Promise<string[]> {
    validateObjectKey(prefix.endsWith("/") ? prefix + "x" : prefix);
    return (await this.storage.list(prefix)).map((e) => e.key);
  }

  async deleteObject(key: string): Promise<void> {
    validateObjectKey(key);
    await this.storage.remove(key);
  }

  refresh(): Promise<void> {
    return this.index.refresh();
  }

  async check(opts: CheckOptions): Promise<RepoProblem[]> {
    // A local repository may hold packs a maintenance run is about to free (their entries in
    // maintenance/<id>.idx); the copies elsewhere never do.
    const awaitingFree = new Set<string>();
    const problems: RepoProblem[] = [];
    if (this.storage instanceof FsStorage) {
      for (const f of await this.storage.list(`${MAINTENANCE_DIR}/`)) {
        if (!f.key.endsWith(".idx")) continue;
        try {
          for (const p of (await readIndexHead(this.storage, f.key, this.ctx.dataKey, f.size)).packs) awaitingFree.add(p);
        } catch (e) {
          problems.push({ kind: "bad-index", message: (e as Error).message });
        }
      }
    }
    return [...problems, ...(await checkRepository(this.storage, this.ctx, { ...opts, awaitingFree }))];
  }

  async maintain(refs: ReferenceSource, opts: MaintenanceOptions): Promise<MaintenanceReport> {
    const report = await maintainRepository(this.maintenanceContext(), refs, opts);
    await this.refresh();
    return report;
  }

  close(): Promise<void> {
    return this.storage.close();
  }
}
