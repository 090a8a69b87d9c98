// Writes a snapshot's files into a data directory and its tablespace directories.
//
// Nothing is ever written outside those directories: every path from the file list is
// checked again here (the repository may be a copy someone else handed over), files are
// created with O_EXCL | O_NOFOLLOW so that nothing already there can redirect a write, and
// the only symlinks made are pg_tblspc/<oid>, to the directory chosen for that tablespace.
import { constants } from "node:fs";
import { chmod, mkdir, open, symlink, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import { chunkIdHex } from "../repo/chunk-id.ts";
import { readFileList } from "../repo/file-list.ts";
import type { Repository } from "../repo/repository.ts";
import { readChunks, type Snapshot } from "../backup/snapshot.ts";
import { validateEntryPath } from "../backup/tar-reader.ts";

export interface MaterializeOptions {
  repo: Repository;
  snapshot: Snapshot;
  /** The data directory: exists and is empty. */
  dest: string;
  /** Tablespace oid → the directory its files go to (exists and is empty). */
  tablespaceDirs: Map<number, string>;
  /** Chunks read and written at once. */
  concurrency: number;
  signal: AbortSignal;
  onProgress?: (bytes: number) => void;
}

const TABLESPACE_LINK = /^pg_tblspc\/(\d+)$/;

interface OpenFile {
  path: string;
  handle: FileHandle;
  size: number;
  mtime: number;
  pending: number;
  ended: boolean;
  settled: boolean;
  done: Promise<void>;
  finish: () => void;
  fail: (e: unknown) => void;
}

export async function materialize(o: MaterializeOptions): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  const links = new Set<string>();
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  let file: OpenFile | null = null;
  let offset = 0;

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
    await mkdir(path.dirname(at), { recursive: true });
    await symlink(tablespaceOf(rel)!, at);
    links.add(rel);
  };

  const settle = async (f: OpenFile) => {
    if (!f.ended || f.pending > 0 || f.settled) return;
    f.settled = true;
    try {
      // Trailing all-zero chunks were not written: the size makes them.
      await f.handle.truncate(f.size);
      await f.handle.utimes(f.mtime, f.mtime);
      await f.handle.close();
      f.finish();
    } catch (e) {
      await f.handle.close().catch(() => {});
      f.fail(e);
    }
  };

  const pieces = readChunks(o.repo, o.snapshot.fileList.pieces);
  const closing: Promise<void>[] = [];
  try {
    for await (const ev of readFileList(pieces)) {
      if (failure !== undefined) throw failure;
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
          await mkdir(dir, { recursive: true });
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
          await mkdir(path.dirname(full), { recursive: true });
          const handle = await open(full, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, ev.mode & 0o7777);
          let finish!: () => void;
          let fail!: (e: unknown) => void;
          const done = new Promise<void>((res, rej) => ((finish = res), (fail = rej)));
          done.catch(() => {});
          file = { path: ev.path, handle, size: ev.size, mtime: ev.mtime, pending: 0, ended: false, settled: false, done, finish, fail };
          offset = 0;
          files++;
          break;
        }
        case "zeros":
          offset += ev.length;
          bytes += ev.length;
          break;
        case "chunk": {
          const f = file!;
          const at = offset;
          const length = ev.length;
          offset += length;
          f.pending++;
          const task = (async () => {
            const data = await o.repo.readChunk(ev.id);
            if (data.length !== length) throw new KlioError("corrupt-chunk", `chunk ${chunkIdHex(ev.id)} of ${f.path} has ${data.length} bytes, the file list says ${length}`);
            await f.handle.write(data, 0, data.length, at);
            bytes += length;
            o.onProgress?.(bytes);
          })().then(
            () => {
              f.pending--;
              return settle(f);
            },
            (e) => {
              failure ??= e;
              f.pending--;
              f.fail(e);
            },
          );
          inFlight.add(task);
          void task.finally(() => inFlight.delete(task));
          if (inFlight.size >= o.concurrency) await Promise.race(inFlight);
          break;
        }
        case "end-file": {
          const f = file!;
          f.ended = true;
          closing.push(f.done);
          await settle(f);
          file = null;
          break;
        }
      }
    }
    await Promise.all(inFlight);
    await Promise.all(closing);
    if (failure !== undefined) throw failure;
  } catch (e) {
    await Promise.allSettled(inFlight);
    const f = file as OpenFile | null;
    if (f) await f.handle.close().catch(() => {});
    throw e;
  }
  return { files, bytes };
}
