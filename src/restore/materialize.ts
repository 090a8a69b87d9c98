// Writes a snapshot's files into a data directory and its tablespace directories.
//
// Nothing is ever written outside those directories: every path from the file list is
// checked again here (the repository may be a copy someone else handed over), files are
// created with O_EXCL | O_NOFOLLOW so that nothing already there can redirect a write, and
// the only symlinks made are pg_tblspc/<oid>, to the directory chosen for that tablespace.
import { constants } from "node:fs";
import { chmod, open, symlink, type FileHandle } from "node:fs/promises";
import { createReadStream } from "node:fs";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import { Waiters } from "../util/waiters.ts";
import { writeFully } from "../util/durable-fs.ts";
import { readFileList } from "../repo/file-list.ts";
import type { Repository } from "../repo/repository.ts";
import { readChunks, type Snapshot } from "../backup/snapshot.ts";
import { validateEntryPath } from "../backup/tar-reader.ts";
import { crc32cFinal, crc32cInit, crc32cUpdate } from "../backup/crc32c.ts";
import { manifestPath } from "../backup/backup-manifest.ts";
import { makeDirectories } from "../util/make-directories.ts";

const ZEROS = new Uint8Array(64 * 1024);

/** The CRC-32C of a file on disk (a restored file whose checksum its list does not carry). */
async function fileCrc32c(file: string): Promise<number> {
  const crc = new RunningCrc();
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) crc.update(chunk as Uint8Array);
  return crc.value();
}

/** The running CRC-32C of a restored file, holes included. */
class RunningCrc {
  private crc = crc32cInit;
  update(data: Uint8Array): void {
    this.crc = crc32cUpdate(this.crc, data);
  }
  zeros(n: number): void {
    for (let left = n; left > 0; left -= ZEROS.length) this.crc = crc32cUpdate(this.crc, ZEROS.subarray(0, Math.min(left, ZEROS.length)));
  }
  value(): number {
    return crc32cFinal(this.crc);
  }
}

export interface MaterializeOptions {
  repo: Repository;
  snapshot: Snapshot;
  /** The data directory: exists and is empty. */
  dest: string;
  /** Tablespace oid → the directory its files go to (exists and is empty). */
  tablespaceDirs: Map<number, string>;
  /** Frames (of up to 16 chunks) read and decoded at once. */
  concurrency: number;
  signal: AbortSignal;
  onProgress?: (bytes: number) => void;
  /**
   * Files (as backup_manifest names them: pg_tblspc/<oid>/… for a tablespace's) whose
   * CRC-32C of the restored bytes is wanted: an incremental backup's manifest has none of
   * theirs (restored-manifest.ts).
   */
  checksummed?: Set<string>;
}

export interface Materialized {
  files: number;
  bytes: number;
  /** Size and CRC-32C of each restored file of `checksummed`, by its manifest path. */
  checksums: Map<string, { size: number; crc32c: number }>;
}

const TABLESPACE_LINK = /^pg_tblspc\/(\d+)$/;

/** Writes of restored data in flight at most (1 MB each): the disk paces the reading. */
const WRITES_IN_FLIGHT = 8;
const WRITE_BYTES = 1024 * 1024;

/**
 * Buffers for the writes of restored files, and the count of writes in flight: chunks of a
 * file are gathered into 1 MB writes (one system call per megabyte, not per 8 KB page).
 */
class Writes {
  private readonly free: Uint8Array[] = [];
  private inFlight = 0;
  private readonly waiters = new Waiters();
  failure: unknown = null;

  take(): Uint8Array {
    return this.free.pop() ?? new Uint8Array(WRITE_BYTES);
  }

  /** Writes buf[0, n) at `at`; the buffer comes back to the pool after. */
  write(handle: FileHandle, buf: Uint8Array, n: number, at: number): Promise<void> {
    this.inFlight++;
    return writeFully(handle, buf.subarray(0, n), at).then(
      () => {
        if (buf.length === WRITE_BYTES) this.free.push(buf);
      },
      (e) => {
        this.failure ??= e;
      },
    ).finally(() => {
      this.inFlight--;
      this.waiters.wake();
    });
  }

  async ready(): Promise<void> {
    while (this.inFlight >= WRITES_IN_FLIGHT) await this.waiters.wait();
    if (this.failure) throw this.failure;
  }
}

/** A file being restored: its chunks arrive in order (put), with holes where it has zeros (skip). */
class RestoredFile {
  private out: Uint8Array | null = null;
  /** File offset of out[0], and bytes of out in use. */
  private outAt = 0;
  private used = 0;
  /** File offset of the next byte. */
  private offset = 0;
  private readonly pending: Promise<void>[] = [];

  /**
   * The whole file's CRC-32C as its list records it ('K'), which spares computing it; for a
   * file of an incremental backup the server sent no block of, the list's 'K' is expected
   * instead of a running checksum (`crc` is dropped), and the file is read back if none comes.
   */
  recordedCrc: number | null = null;
  readBackForCrc = false;

  constructor(
    readonly path: string, readonly fullPath: string, private readonly handle: FileHandle, readonly size: number, private readonly mtime: number,
    private readonly writes: Writes, public crc: RunningCrc | null,
  ) {}

  put(data: Uint8Array): void {
    if (this.offset + data.length > this.size) throw new KlioError("bad-snapshot", `${this.path}: its chunks run past its size ${this.size}`);
    this.crc?.update(data);
    if (data.length > WRITE_BYTES / 2) {
      this.flush();
      this.pending.push(this.writes.write(this.handle, data.slice(), data.length, this.offset));
    } else {
      if (this.out && this.used + data.length > this.out.length) this.flush();
      if (!this.out) {
        this.out = this.writes.take();
        this.outAt = this.offset;
      }
      this.out.set(data, this.used);
      this.used += data.length;
    }
    this.offset += data.length;
  }

  /** The CRC-32C of the whole file, once all its chunks are put (what the list leaves out at the end is zeros). */
  checksum(): number {
    this.crc!.zeros(this.size - this.offset);
    return this.crc!.value();
  }

  skip(n: number): void {
    this.flush();
    this.crc?.zeros(n);
    this.offset += n;
  }

  /** Writes what is left, then the size (trailing zeros are a hole), mtime; closes. */
  async finish(): Promise<void> {
    try {
      this.flush();
      await Promise.all(this.pending);
      if (this.writes.failure) throw this.writes.failure;
      await this.handle.truncate(this.size);
      await this.handle.utimes(this.mtime, this.mtime);
    } finally {
      await this.handle.close();
    }
  }

  private flush(): void {
    const out = this.out;
    if (!out) return;
    this.out = null;
    if (this.used > 0) this.pending.push(this.writes.write(this.handle, out, this.used, this.outAt));
    this.used = 0;
  }
}

export async function materialize(o: MaterializeOptions): Promise<Materialized> {
  let files = 0;
  let bytes = 0;
  const checksums = new Map<string, { size: number; crc32c: number }>();
  const links = new Set<string>();

  const where = (root: number, rel: string): string => {
    const base = root === 0 ? o.dest : o.tablespaceDirs.get(root);
    if (base === undefined) throw new KlioError("bad-snapshot", `snapshot ${o.snapshot.id} has files of tablespace ${root}, which it does not list`);
    const clean = validateEntryPath(rel);
    // Nothing may be written through a tablespace link of the data directory.
    if (root === 0 && [...links].some((l) => clean.startsWith(l + "/")))
      throw new KlioError("bad-snapshot", `snapshot ${o.snapshot.id}: ${clean} lies beneath a tablespace link`);
    const full = path.join(base, clean);
    if (full !== base && !full.startsWith(base + path.sep)) throw new KlioError("bad-snapshot", `snapshot ${o.snapshot.id}: ${rel} escapes ${base}`);
    return full;
  };

  const tablespaceOf = (rel: string): string | undefined => {
    const m = TABLESPACE_LINK.exec(rel);
    return m ? o.tablespaceDirs.get(Number(m[1])) : undefined;
  };
  const linkTablespace = async (rel: string) => {
    const at = where(0, rel);
    await makeDirectories(path.dirname(at));
    await symlink(tablespaceOf(rel)!, at);
    links.add(rel);
  };

  // Chunks are read in file-list order and their bytes handed to the file they belong to in
  // that order (the reader's callbacks); directories and new files are made as the list
  // names them, ahead of the data.
  const reader = o.repo.reader({ inFlight: o.concurrency });
  const writes = new Writes();
  const opened = new Set<RestoredFile>();
  const finishing: Promise<void>[] = [];
  let file: RestoredFile | null = null;
  try {
    for await (const ev of readFileList(readChunks(o.repo, o.snapshot.fileList.pieces))) {
      if (o.signal.aborted) throw new KlioError("aborted", "restore interrupted");
      switch (ev.kind) {
        case "dir": {
          // With a tablespace_map, the server sends pg_tblspc/<oid> as a directory: it is
          // the tablespace's link all the same.
          if (ev.root === 0 && tablespaceOf(ev.path) !== undefined) {
            await linkTablespace(ev.path);
            break;
          }
          const dir = where(ev.root, ev.path);
          await makeDirectories(dir);
          await chmod(dir, ev.mode & 0o7777);
          break;
        }
        case "symlink":
          if (ev.root !== 0 || tablespaceOf(ev.path) === undefined)
            throw new KlioError("bad-snapshot", `snapshot ${o.snapshot.id} holds a symlink ${ev.path} → ${ev.target}; only pg_tblspc/<oid> links of listed tablespaces are restored`);
          await linkTablespace(ev.path);
          break;
        case "file": {
          const full = where(ev.root, ev.path);
          await makeDirectories(path.dirname(full));
          const handle = await open(full, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, ev.mode & 0o7777);
          const listed = manifestPath(ev.root, ev.path);
          const crc = o.checksummed?.has(listed) ? new RunningCrc() : null;
          file = new RestoredFile(listed, full, handle, ev.size, ev.mtime, writes, crc);
          opened.add(file);
          files++;
          break;
        }
        case "zeros": {
          const f = file!;
          const n = ev.length;
          bytes += n;
          reader.after(() => f.skip(n));
          break;
        }
        case "chunk": {
          const f = file!;
          const n = ev.length;
          await reader.read(ev.id, n, (data) => {
            f.put(data);
            bytes += n;
            o.onProgress?.(bytes);
          });
          await reader.ready();
          await writes.ready();
          break;
        }
        case "incremental":
          // Nothing of it changed since the parent: its checksum comes with the list (below).
          if (file!.crc && ev.blockNumbers.length === 0) {
            file!.crc = null;
            file!.readBackForCrc = true;
          }
          break;
        case "file-checksum":
          file!.recordedCrc = ev.crc32c;
          break;
        case "end-file": {
          const f = file!;
          file = null;
          reader.after(() => {
            opened.delete(f);
            if (f.crc) checksums.set(f.path, { size: f.size, crc32c: f.checksum() });
            else if (f.readBackForCrc && f.recordedCrc !== null) checksums.set(f.path, { size: f.size, crc32c: f.recordedCrc });
            const done = f.readBackForCrc && f.recordedCrc === null
              ? f.finish().then(async () => void checksums.set(f.path, { size: f.size, crc32c: await fileCrc32c(f.fullPath) }))
              : f.finish();
            done.catch(() => {});
            finishing.push(done);
          });
          break;
        }
      }
    }
    await reader.drain();
    await Promise.all(finishing);
    if (writes.failure) throw writes.failure;
  } catch (e) {
    await reader.close().catch(() => {});
    await Promise.allSettled(finishing);
    for (const f of opened) await f.finish().catch(() => {});
    throw e;
  }
  await reader.close();
  return { files, bytes, checksums };
}
