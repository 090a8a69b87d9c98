// The offsite copy: makes an S3 bucket hold the same repository as the local directory.
// Every repository object is immutable, so a pass uploads what the remote lacks, in an order
// that keeps the remote a consistent repository at every instant: the header, then packs,
// then the indexes that name them, then the WAL, and only then the snapshots that need all of
// those. The local listing goes the other way (snapshots, index, packs, WAL), so whatever a
// listed snapshot or index needs was there before it and is listed too.
//
// Removals come last, for what the local repository no longer has: snapshots deleted, index
// files replaced, packs and WAL maintenance and retention removed, a raw or partial segment
// once its compressed form is up. A removal locally may follow the writing of what replaces
// it by moments (maintenance writes its new index, then removes packs), and a listing of a
// directory is no snapshot in time, so an object goes only when an earlier listing (the last
// pass's, or one taken just before this pass's) already lacked it: what replaced it was there
// before that listing ended, so this pass's listing, all of it later, has it, and it went up
// before the removals. A pass that stops at any point (kill -9, network cut) leaves the
// remote consistent; the next pass finishes it.
import { readFile } from "node:fs/promises";
import { writeFileDurable } from "../util/durable-fs.ts";
import type { RateLimit } from "../util/rate-limit.ts";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { FsStorage } from "../repo/fs-storage.ts";
import { HEADER_KEY, parseHeader } from "../repo/header.ts";
import type { S3Storage } from "../repo/s3-storage.ts";
import type { StorageEntry } from "../repo/storage.ts";
import { IDENTITY_FILE, GAPS_FILE, FORKS_FILE } from "../wal/archive-meta.ts";
import { PARTIAL_SUFFIX, STORED_SUFFIX } from "../wal/archive-layout.ts";
import { CHECKSUM_SUFFIX } from "../wal/segment-checksum.ts";

/** What of the local repository goes offsite. */
type Kind = "header" | "pack" | "index" | "wal" | "partial" | "snapshot";
/**
 * Upload stages: a stage starts when the one before it is up. Indexes name packs, snapshots
 * need everything; WAL needs nothing and goes up with the packs.
 */
const STAGES: Kind[][] = [["header"], ["wal", "partial", "pack"], ["index"], ["snapshot"]];
const ORDER: Kind[] = STAGES.flat();

const SEGMENT_NAME = /^[0-9A-F]{24}$/;

/** The file in a repository naming its offsite copy. */
export const OFFSITE_MARKER = "offsite.json";

export async function readOffsiteMarker(repoDir: string): Promise<{ url: string; since: string } | null> {
  let text: string;
  try {
    text = await readFile(path.join(repoDir, OFFSITE_MARKER), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  const v = JSON.parse(text) as { url?: unknown; since?: unknown };
  if (typeof v.url !== "string") throw new KlioError("bad-repository", `${path.join(repoDir, OFFSITE_MARKER)} does not name the offsite copy`);
  return { url: v.url, since: String(v.since) };
}

/** The kind of a local key, or null for files that stay local (locks, receiver state). */
export function offsiteKind(key: string): Kind | null {
  if (key === HEADER_KEY) return "header";
  if (key.startsWith("packs/")) return key.endsWith(".pack") ? "pack" : null;
  if (key.startsWith("index/")) return key.endsWith(".idx") ? "index" : null;
  if (key.startsWith("snapshots/")) return "snapshot";
  const m = /^wal\/[^/]+\/([^/]+)$/.exec(key);
  if (!m) return null;
  const name = m[1]!;
  if (name.endsWith(PARTIAL_SUFFIX)) return SEGMENT_NAME.test(name.slice(0, -PARTIAL_SUFFIX.length)) ? "partial" : null;
  if (name === IDENTITY_FILE || name === GAPS_FILE || name === FORKS_FILE || /^[0-9A-F]{8}\.history$/.test(name) || SEGMENT_NAME.test(name)) return "wal";
  if (name.endsWith(STORED_SUFFIX) && SEGMENT_NAME.test(name.slice(0, -STORED_SUFFIX.length))) return "wal";
  if (name.endsWith(CHECKSUM_SUFFIX) && SEGMENT_NAME.test(name.slice(0, -CHECKSUM_SUFFIX.length))) return "wal";
  return null;
}

/** Objects whose content may change under the same key: compared by size and time, not only presence. */
function mutable(key: string): boolean {
  return key === HEADER_KEY || key.endsWith(`/${GAPS_FILE}`) || key.endsWith(`/${FORKS_FILE}`) || key.endsWith(PARTIAL_SUFFIX);
}

export interface SyncOptions {
  repoDir: string;
  remote: S3Storage;
  /** Uploads at once (default 4). */
  concurrency?: number;
  /** Bytes per second for all uploads together (none: as fast as they go). */
  limit?: RateLimit;
  log: Logger;
  signal: AbortSignal;
}

export interface SyncPass {
  uploaded: number;
  uploadedBytes: number;
  removed: number;
  /** Objects and bytes still to upload when the pass ended (0 unless it was interrupted). */
  behind: { objects: number; bytes: number };
  seconds: number;
}

export interface OffsiteStatus {
  remote: string;
  local: { objects: number; bytes: number };
  behind: { objects: number; bytes: number; oldest: { key: string; modified: string } | null };
  /** Remote objects the local repository no longer has (removed at the next pass). */
  extra: number;
}

interface RemoteObject {
  size: number;
  /** When it was written there (ms); a local change after that means it must go again. */
  modified: number;
}

/**
 * Keeps the remote listing between passes of one process: listed whole now and then, and
 * updated as objects are uploaded and removed.
 */
export class OffsiteSync {
  private remoteKeys: Map<string, RemoteObject> | null = null;
  /** The keys of the last pass's local listing. */
  private lastLocal: Set<string> | null = null;
  private listedAt = 0;
  private readonly local: FsStorage;

  constructor(private readonly o: SyncOptions, private readonly relistMs = 10 * 60_000) {
    this.local = new FsStorage(o.repoDir);
  }

  private async remoteListing(force: boolean): Promise<Map<string, RemoteObject>> {
    if (force || !this.remoteKeys || Date.now() - this.listedAt > this.relistMs) {
      const listed = new Map((await this.o.remote.list("")).map((e) => [e.key, { size: e.size, modified: e.modified ?? 0 }]));
      // Whenever we look at the bucket afresh: is it this repository's copy?
      await this.checkSameRepository(listed);
      this.remoteKeys = listed;
      this.listedAt = Date.now();
    }
    return this.remoteKeys;
  }

  private async localObjects(): Promise<(StorageEntry & { kind: Kind })[]> {
    const out: (StorageEntry & { kind: Kind })[] = [];
    // Later-written kinds first (see the top of this file).
    for (const prefix of ["snapshots/", "index/", "packs/", "wal/", HEADER_KEY]) {
      for (const e of await this.local.list(prefix)) {
        const kind = offsiteKind(e.key);
        if (kind) out.push({ ...e, kind });
      }
    }
    if (!out.some((e) => e.kind === "header")) throw new KlioError("bad-repository", `${this.o.repoDir} is not a klio repository (no ${HEADER_KEY}): nothing to copy`);
    return out;
  }

  /** Refuses a bucket that holds another repository: one copy must never be merged into another. */
  private async checkSameRepository(remote: Map<string, RemoteObject>): Promise<void> {
    if (!remote.has(HEADER_KEY)) return;
    const mine = parseHeader(await this.local.get(HEADER_KEY), this.o.repoDir);
    const theirs = parseHeader(await this.o.remote.get(HEADER_KEY), this.o.remote.description);
    if (mine.id !== theirs.id) throw new KlioError("offsite-mismatch", `${this.o.remote.description} holds another repository (id ${theirs.id}, this one is ${mine.id}): give an empty prefix`);
  }


  /** One pass: upload what is missing or changed, then remove what was replaced. */
  async pass(opts: { fullListing?: boolean } = {}): Promise<SyncPass> {
    const t0 = performance.now();
    await this.recordTarget();
    const remote = await this.remoteListing(Boolean(opts.fullListing));
    const earlier = this.lastLocal ?? new Set((await this.localObjects()).map((e) => e.key));
    const local = await this.localObjects();
    this.lastLocal = new Set(local.map((e) => e.key));
    const todo: (StorageEntry & { kind: Kind })[] = [];
    for (const e of local) {
      const there = remote.get(e.key);
      if (there === undefined || there.size !== e.size) todo.push(e);
      else if (mutable(e.key) && (e.modified ?? 0) > there.modified) todo.push(e);
    }
    todo.sort((a, b) => ORDER.indexOf(a.kind) - ORDER.indexOf(b.kind) || (a.key < b.key ? -1 : 1));
    const result: SyncPass = { uploaded: 0, uploadedBytes: 0, removed: 0, behind: { objects: 0, bytes: 0 }, seconds: 0 };
    // Stages go up one after another; within a stage, in parallel (WAL first: it is the newest data).
    for (const stage of STAGES) {
      const batch = todo.filter((e) => stage.includes(e.kind));
      await this.parallel(batch, async (e) => {
        const startedAt = Date.now();
        try {
          await this.o.remote.putFile(e.key, path.join(this.o.repoDir, ...e.key.split("/")), this.o.limit);
        } catch (err) {
          // Gone locally meanwhile (a partial segment completed, a raw one compressed): the next pass sees why.
          if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
          throw err;
        }
        // A change made while it went up is newer than this: it goes again next pass.
        remote.set(e.key, { size: e.size, modified: startedAt });
        result.uploaded++;
        result.uploadedBytes += e.size;
      });
      if (this.o.signal.aborted) break;
    }
    if (!this.o.signal.aborted) result.removed = await this.removeGone(remote, earlier, this.lastLocal);
    const left = todo.filter((e) => remote.get(e.key)?.size !== e.size);
    result.behind = { objects: left.length, bytes: left.reduce((n, e) => n + e.size, 0) };
    result.seconds = (performance.now() - t0) / 1000;
    return result;
  }

  /** Removes from the remote what neither local listing has (see the top of this file). */
  private async removeGone(remote: Map<string, RemoteObject>, earlier: Set<string>, local: Set<string>): Promise<number> {
    const candidates = [...remote.keys()].filter((k) => !earlier.has(k) && !local.has(k) && offsiteKind(k) !== null);
    const gone: string[] = [];
    for (const key of candidates) {
      const kind = offsiteKind(key)!;
      const name = key.slice(key.lastIndexOf("/") + 1);
      if (kind === "snapshot" || kind === "index" || kind === "pack") gone.push(key);
      else if (kind === "partial") {
        if (remote.has(key.slice(0, -PARTIAL_SUFFIX.length) + STORED_SUFFIX)) gone.push(key);
      } else if (kind === "wal") {
        // A raw segment (and its checksum file) goes once its stored form is up.
        const segment = name.endsWith(CHECKSUM_SUFFIX) ? key.slice(0, -CHECKSUM_SUFFIX.length) : key;
        if (SEGMENT_NAME.test(segment.slice(segment.lastIndexOf("/") + 1)) ? remote.has(segment + STORED_SUFFIX) : name.endsWith(STORED_SUFFIX)) gone.push(key);
      }
    }
    // Snapshots first, then indexes: nothing remote may name what goes after them.
    const rank = (k: string) => ["snapshot", "index", "pack", "wal", "partial"].indexOf(offsiteKind(k)!);
    gone.sort((a, b) => rank(a) - rank(b));
    for (const key of gone) {
      await this.o.remote.remove(key);
      remote.delete(key);
      this.o.log.info("offsite.removed", { key });
    }
    return gone.length;
  }

  private async parallel<T>(items: T[], work: (item: T) => Promise<void>): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < items.length && !this.o.signal.aborted) await work(items[next++]!);
    };
    await Promise.all(Array.from({ length: Math.min(this.o.concurrency ?? 4, items.length) }, worker));
  }

  /**
   * Notes in the repository where its copy lives (offsite.json), so that retention run from
   * the command line knows to ask the copy before deleting anything.
   */
  async recordTarget(): Promise<void> {
    const url = this.o.remote.description;
    const current = await readOffsiteMarker(this.o.repoDir).catch(() => null);
    if (current?.url === url) return;
    await writeFileDurable(path.join(this.o.repoDir, OFFSITE_MARKER), JSON.stringify({ format: "klio-offsite", version: 1, url, since: new Date().toISOString() }) + "\n");
  }

  /** What the remote lacks, from a fresh listing of both sides. */
  async status(): Promise<OffsiteStatus> {
    const remote = await this.remoteListing(true);
    const local = await this.localObjects();
    const behind = local.filter((e) => remote.get(e.key)?.size !== e.size);
    let oldest: { key: string; modified: number } | null = null;
    // The local listing carries each file's modification time.
    for (const e of behind) {
      const m = e.modified;
      if (m !== undefined && (oldest === null || m < oldest.modified)) oldest = { key: e.key, modified: m };
    }
    const localKeys = new Set(local.map((e) => e.key));
    return {
      remote: this.o.remote.description,
      local: { objects: local.length, bytes: local.reduce((n, e) => n + e.size, 0) },
      behind: { objects: behind.length, bytes: behind.reduce((n, e) => n + e.size, 0), oldest: oldest && { key: oldest.key, modified: new Date(oldest.modified).toISOString() } },
      extra: [...remote.keys()].filter((k) => !localKeys.has(k) && offsiteKind(k) !== null).length,
    };
  }

  async close(): Promise<void> {
    await this.local.close();
  }
}
