// The repository's storage on a local (or mounted) filesystem. Every put is write-once in
// the sense of DESIGN invariant 2: a temporary name in the target directory, fsync, rename
// (link for putNew, which never replaces), fsync of the directory (and of the parents of any
// directory it had to create).
import { open, readdir, rename, stat, unlink, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { fsyncDir, TEMP_SUFFIX, tempNameFor, writeDurableWith } from "../util/durable-fs.ts";
import { KlioError } from "../util/errors.ts";
import type { ObjectWriter, PutData, Storage, StorageEntry } from "./storage.ts";
import { makeDirectories } from "../util/make-directories.ts";

const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
/** Reads keep this many files open: restore and check read many ranges of the same packs. */
const OPEN_FILES = 64;

export function validateKey(key: string): string {
  const parts = key.split("/");
  if (key.length === 0 || key.length > 1024 || parts.some((p) => !SEGMENT.test(p) || p === "..") || key.endsWith(TEMP_SUFFIX))
    throw new KlioError("bad-key", `"${key.slice(0, 100)}" is not a valid repository key`);
  return key;
}

interface Handle {
  fh: FileHandle;
  users: number;
  evicted: boolean;
}

export class FsStorage implements Storage {
  readonly description: string;
  private readonly handles = new Map<string, Promise<Handle>>();

  constructor(readonly root: string) {
    this.description = root;
  }

  private file(key: string): string {
    return path.join(this.root, ...validateKey(key).split("/"));
  }

  async get(key: string): Promise<Uint8Array> {
    const h = await this.acquire(key);
    try {
      const { size } = await h.fh.stat();
      return await readFully(h.fh, 0, size, key);
    } finally {
      this.release(h);
    }
  }

  async getRange(key: string, offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    const h = await this.acquire(key);
    try {
      return await readFully(h.fh, offset, length, key, into);
    } finally {
      this.release(h);
    }
  }

  put(key: string, data: PutData): Promise<void> {
    return this.write(key, data, false);
  }

  async putNew(key: string, data: PutData): Promise<void> {
    try {
      await this.write(key, data, true);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST") throw new KlioError("object-exists", `${key} already exists in ${this.root}; objects are written once (it was left as it was)`);
      throw e;
    }
  }

  private async write(key: string, data: PutData, noReplace: boolean): Promise<void> {
    const file = this.file(key);
    const dir = path.dirname(file);
    await this.makeDir(dir);
    await writeDurableWith(file, async (fh) => {
      if (data instanceof Uint8Array) await writeAll(fh, [data]);
      else if (Array.isArray(data)) await writeAll(fh, data);
      else {
        // Gather a stream's small parts into writes of about 1 MB.
        let batch: Uint8Array[] = [];
        let bytes = 0;
        for await (const part of data as AsyncIterable<Uint8Array>) {
          batch.push(part);
          bytes += part.length;
          if (bytes >= 1 << 20) {
            await writeAll(fh, batch);
            batch = [];
            bytes = 0;
          }
        }
        if (batch.length) await writeAll(fh, batch);
      }
    }, { noReplace });
  }

  async create(key: string): Promise<ObjectWriter> {
    const file = this.file(key);
    await this.makeDir(path.dirname(file));
    return FsObjectWriter.open(key, file);
  }

  async list(prefix: string): Promise<StorageEntry[]> {
    const cut = prefix.lastIndexOf("/");
    const base = cut === -1 ? "" : prefix.slice(0, cut);
    if (base !== "") validateKey(base);
    const out: StorageEntry[] = [];
    const walk = async (rel: string): Promise<void> => {
      let names;
      try {
        names = await readdir(path.join(this.root, ...rel.split("/").filter(Boolean)), { withFileTypes: true });
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "ENOENT" || code === "ENOTDIR") return;
        throw e;
      }
      for (const d of names) {
        const key = rel === "" ? d.name : `${rel}/${d.name}`;
        if (!SEGMENT.test(d.name) || d.name.endsWith(TEMP_SUFFIX)) continue;
        if (!key.startsWith(prefix) && !prefix.startsWith(key + "/")) continue;
        if (d.isDirectory()) await walk(key);
        else if (d.isFile() && key.startsWith(prefix)) {
          // A file removed between readdir and stat is simply not listed.
          const st = await stat(path.join(this.root, ...key.split("/"))).catch(() => null);
          if (st) out.push({ key, size: st.size, modified: st.mtimeMs });
        }
      }
    };
    await walk(base);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async exists(key: string): Promise<boolean> {
    try {
      return (await stat(this.file(key))).isFile();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw e;
    }
  }

  async remove(key: string): Promise<void> {
    const file = this.file(key);
    const cached = this.handles.get(key);
    if (cached) {
      this.handles.delete(key);
      cached.then((h) => this.evict(h), () => {});
    }
    try {
      await unlink(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      throw e;
    }
    await fsyncDir(path.dirname(file));
  }

  async close(): Promise<void> {
    const all = [...this.handles.values()];
    this.handles.clear();
    for (const p of all) await p.then((h) => this.evict(h), () => {});
  }

  private async acquire(key: string): Promise<Handle> {
    let p = this.handles.get(key);
    if (p) {
      // Most recently used last: eviction takes the oldest.
      this.handles.delete(key);
    } else {
      const file = this.file(key);
      p = open(file, "r").then(
        (fh) => ({ fh, users: 0, evicted: false }),
        (e) => {
          if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new KlioError("not-found", `${key} does not exist in ${this.root}`);
          throw e;
        },
      );
    }
    this.handles.set(key, p);
    let h: Handle;
    try {
      h = await p;
    } catch (e) {
      if (this.handles.get(key) === p) this.handles.delete(key);
      throw e;
    }
    h.users++;
    while (this.handles.size > OPEN_FILES) {
      const [oldKey, old] = this.handles.entries().next().value as [string, Promise<Handle>];
      this.handles.delete(oldKey);
      old.then((o) => this.evict(o), () => {});
    }
    return h;
  }

  private release(h: Handle): void {
    h.users--;
    if (h.evicted && h.users === 0) h.fh.close().catch(() => {});
  }

  private evict(h: Handle): void {
    if (h.evicted) return;
    h.evicted = true;
    if (h.users === 0) h.fh.close().catch(() => {});
  }

  /** mkdir -p, fsyncing the parent of every directory it creates so the new path is durable. */
  private async makeDir(dir: string): Promise<void> {
    const first = await makeDirectories(dir);
    if (first === undefined) return;
    for (let d = dir; ; d = path.dirname(d)) {
      await fsyncDir(path.dirname(d));
      if (d === first || d.length <= first.length) break;
    }
  }
}

async function readFully(fh: FileHandle, offset: number, length: number, key: string, into?: Uint8Array): Promise<Uint8Array> {
  const out = into && into.length >= length ? into.subarray(0, length) : new Uint8Array(length);
  let at = 0;
  while (at < length) {
    const { bytesRead } = await fh.read(out, at, length - at, offset + at);
    if (bytesRead === 0) throw new KlioError("short-object", `${key} ends at ${offset + at}, before ${offset + length}`);
    at += bytesRead;
  }
  return out;
}

async function writeAll(fh: FileHandle, parts: readonly Uint8Array[]): Promise<void> {
  const { bytesWritten } = await fh.writev(parts as Uint8Array[]);
  let skip = bytesWritten;
  for (const p of parts) {
    if (skip >= p.length) {
      skip -= p.length;
      continue;
    }
    await fh.writeFile(p.subarray(skip));
    skip = 0;
  }
}

/** An ObjectWriter on a file: a temporary name until commit() (fsync, rename, fsync of the directory). */
class FsObjectWriter implements ObjectWriter {
  size = 0;
  private fh: FileHandle | null;
  private closing: Promise<void> = Promise.resolve();

  private constructor(readonly key: string, private readonly file: string, private readonly tmp: string, fh: FileHandle) {
    this.fh = fh;
  }

  static async open(key: string, file: string): Promise<FsObjectWriter> {
    const tmp = tempNameFor(file);
    return new FsObjectWriter(key, file, tmp, await open(tmp, "wx", 0o640));
  }

  async write(bytes: Uint8Array | readonly Uint8Array[]): Promise<void> {
    if (!this.fh) throw new KlioError("closed", `${this.key} is closed for writing`);
    const parts = bytes instanceof Uint8Array ? [bytes] : bytes;
    await writeAll(this.fh, parts);
    for (const p of parts) this.size += p.length;
  }

  close(): Promise<void> {
    if (this.fh) {
      const fh = this.fh;
      this.fh = null;
      this.closing = fh.close();
    }
    return this.closing;
  }

  async commit(): Promise<void> {
    await this.close();
    // fsync through a new descriptor: it flushes the file's dirty pages whoever wrote them.
    const fh = await open(this.tmp, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(this.tmp, this.file);
    await fsyncDir(path.dirname(this.file));
  }

  async abandon(): Promise<void> {
    await this.close().catch(() => {});
    await unlink(this.tmp).catch(() => {});
  }
}
