// The file list of a snapshot: every directory, symlink and file of a backup, and for each
// file the chunks it is made of, as one binary stream. The stream is cut into pieces that
// are stored as ordinary chunks, so a list is written and read with memory that does not
// grow with the number of files or chunks (a 1 TB database has ~130 million 8 KB chunks).
//
// Format (version 1, big-endian; documented in docs/FORMAT.md):
//   magic "KLIOFL01"
//   record*: one tag byte, then
//     'D' dir      root u32, path str16, mode u32, mtime f64
//     'L' symlink  root u32, path str16, mode u32, mtime f64, target str16
//     'F' file     root u32, path str16, mode u32, mtime f64, size f64
//     'C' chunk    length u32, id 32 bytes          (the next bytes of the open file)
//     'Z' zeros    length f64                        (bytes of zeros, not stored)
//     'E' end of the open file
//     'X' end of list: entries f64                   (a truncated list is detected)
//   str16 = length u16 + UTF-8 bytes. `root` names the tree an entry belongs to (0: the
//   main one; the user of the list gives other numbers meaning, e.g. tablespace oids).
import { KlioError } from "../util/errors.ts";
import { concatBytes } from "../util/bytes.ts";
import type { ChunkId } from "./chunk-id.ts";

const MAGIC = new TextEncoder().encode("KLIOFL01");
const ID_BYTES = 32;
const MAX_STR = 0xffff;

export interface EntryHead {
  root: number;
  path: string;
  mode: number;
  /** Seconds since the Unix epoch. */
  mtime: number;
}

export type FileListEvent =
  | ({ kind: "dir" } & EntryHead)
  | ({ kind: "symlink"; target: string } & EntryHead)
  | ({ kind: "file"; size: number } & EntryHead)
  | { kind: "chunk"; length: number; id: ChunkId }
  | { kind: "zeros"; length: number }
  | { kind: "end-file" };

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Writes a file list, handing each full piece to `emit` (which stores it, or copies it: the
 * piece's memory is reused). Synchronous: one record per chunk of a backup must cost next to
 * nothing; the caller paces the whole (ChunkWriter.ready()).
 */
export class FileListWriter {
  private buf: Uint8Array;
  private view: DataView;
  private at = 0;
  private entries = 0;
  private openFile: { path: string; size: number; written: number } | null = null;
  private finished = false;

  constructor(private readonly emit: (piece: Uint8Array) => void, pieceBytes = 1024 * 1024) {
    this.buf = new Uint8Array(pieceBytes);
    this.view = new DataView(this.buf.buffer);
    this.buf.set(MAGIC, 0);
    this.at = MAGIC.length;
  }

  dir(e: EntryHead): void {
    this.noOpenFile("a directory");
    const path = encodeStr(e.path, "path");
    this.room(1 + 4 + 2 + path.length + 4 + 8);
    this.u8(0x44);
    this.head(e.root, path, e.mode, e.mtime);
    this.entries++;
  }

  symlink(e: EntryHead & { target: string }): void {
    this.noOpenFile("a symlink");
    const path = encodeStr(e.path, "path");
    const target = encodeStr(e.target, "symlink target");
    this.room(1 + 4 + 2 + path.length + 4 + 8 + 2 + target.length);
    this.u8(0x4c);
    this.head(e.root, path, e.mode, e.mtime);
    this.str(target);
    this.entries++;
  }

  beginFile(e: EntryHead & { size: number }): void {
    this.noOpenFile("another file");
    const path = encodeStr(e.path, "path");
    this.room(1 + 4 + 2 + path.length + 4 + 8 + 8);
    this.u8(0x46);
    this.head(e.root, path, e.mode, e.mtime);
    this.f64(e.size);
    this.openFile = { path: e.path, size: e.size, written: 0 };
    this.entries++;
  }

  chunk(length: number, id: ChunkId): void {
    this.advance(length);
    this.room(1 + 4 + ID_BYTES);
    this.u8(0x43);
    this.view.setUint32(this.at, length);
    this.at += 4;
    this.buf.set(id.subarray(0, ID_BYTES), this.at);
    this.at += ID_BYTES;
  }

  zeros(length: number): void {
    this.advance(length);
    this.room(1 + 8);
    this.u8(0x5a);
    this.f64(length);
  }

  endFile(): void {
    const f = this.openFile;
    if (!f) throw new Error("file list: endFile() without beginFile()");
    if (f.written !== f.size) throw new Error(`file list: ${f.path} has ${f.written} bytes of chunks, not its size ${f.size}`);
    this.openFile = null;
    this.room(1);
    this.u8(0x45);
  }

  /** Ends the list and emits the last piece; returns the number of entries. */
  finish(): number {
    this.noOpenFile("the end");
    this.room(1 + 8);
    this.u8(0x58);
    this.f64(this.entries);
    this.flushPiece();
    this.finished = true;
    return this.entries;
  }

  private advance(length: number): void {
    const f = this.openFile;
    if (!f) throw new Error("file list: chunk outside a file");
    f.written += length;
    if (f.written > f.size) throw new Error(`file list: chunks of ${f.path} exceed its size ${f.size}`);
  }

  private noOpenFile(what: string): void {
    if (this.finished) throw new Error("file list: already finished");
    if (this.openFile) throw new Error(`file list: ${what} while ${this.openFile.path} is open`);
  }

  private room(n: number): void {
    if (this.at + n > this.buf.length) this.flushPiece();
  }

  private flushPiece(): void {
    if (this.at === 0) return;
    const piece = this.buf.subarray(0, this.at);
    this.at = 0;
    this.emit(piece);
  }

  private head(root: number, path: Uint8Array, mode: number, mtime: number): void {
    this.view.setUint32(this.at, root);
    this.at += 4;
    this.str(path);
    this.view.setUint32(this.at, mode);
    this.at += 4;
    this.f64(mtime);
  }

  private str(bytes: Uint8Array): void {
    this.view.setUint16(this.at, bytes.length);
    this.at += 2;
    this.buf.set(bytes, this.at);
    this.at += bytes.length;
  }

  private u8(v: number): void {
    this.buf[this.at++] = v;
  }

  private f64(v: number): void {
    this.view.setFloat64(this.at, v);
    this.at += 8;
  }
}

function encodeStr(s: string, what: string): Uint8Array {
  const b = utf8.encode(s);
  if (b.length > MAX_STR) throw new KlioError("bad-file-list", `${what} is longer than ${MAX_STR} bytes: ${s.slice(0, 80)}…`);
  return b;
}

function corrupt(message: string): KlioError {
  return new KlioError("corrupt-file-list", `snapshot file list is damaged: ${message}`);
}

/**
 * Reads a file list from its pieces, in order. Checks the structure as it goes (a file's
 * chunks add up to its size, the list ends with its end record) and throws
 * KlioError("corrupt-file-list") otherwise. Chunk ids are fresh copies.
 */
export async function* readFileList(pieces: AsyncIterable<Uint8Array>): AsyncGenerator<FileListEvent> {
  let pending = new Uint8Array(0);
  let sawMagic = false;
  let ended = false;
  let entries = 0;
  let open: { path: string; size: number; seen: number } | null = null;

  for await (const piece of pieces) {
    if (ended) throw corrupt("data after the end record");
    const buf = pending.length ? concatBytes([pending, piece]) : piece;
    let at = 0;
    if (!sawMagic) {
      if (buf.length < MAGIC.length) {
        pending = buf.slice();
        continue;
      }
      if (!MAGIC.every((b, i) => buf[i] === b)) throw corrupt("not a klio file list (bad magic)");
      sawMagic = true;
      at = MAGIC.length;
    }
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    for (;;) {
      const rec = parseRecord(buf, view, at);
      if (rec === null) break;
      at = rec.next;
      const ev = rec.event;
      if (ev === "end") {
        if (open) throw corrupt(`the list ends inside ${open.path}`);
        if (rec.count !== entries) throw corrupt(`end record counts ${rec.count} entries, the list has ${entries}`);
        ended = true;
        if (at !== buf.length) throw corrupt("data after the end record");
        break;
      }
      switch (ev.kind) {
        case "dir":
        case "symlink":
        case "file":
          if (open) throw corrupt(`${ev.path} starts before ${open.path} ends`);
          entries++;
          if (ev.kind === "file") open = { path: ev.path, size: ev.size, seen: 0 };
          break;
        case "chunk":
        case "zeros":
          if (!open) throw corrupt("chunk outside a file");
          open.seen += ev.length;
          if (open.seen > open.size) throw corrupt(`chunks of ${open.path} exceed its size ${open.size}`);
          break;
        case "end-file":
          if (!open) throw corrupt("end of a file that was not begun");
          if (open.seen !== open.size) throw corrupt(`${open.path} has ${open.seen} bytes of chunks, not its size ${open.size}`);
          open = null;
          break;
      }
      yield ev;
    }
    // Leftover bytes of a record that continues in the next piece.
    pending = at < buf.length ? buf.slice(at) : new Uint8Array(0);
  }
  if (!sawMagic) throw corrupt("empty");
  if (!ended) throw corrupt("truncated (no end record)");
}

type Parsed = { event: FileListEvent | "end"; next: number; count?: number };

function parseRecord(buf: Uint8Array, view: DataView, at: number): Parsed | null {
  if (at >= buf.length) return null;
  const tag = buf[at]!;
  let p = at + 1;
  const need = (n: number) => p + n <= buf.length;
  const readHead = (): EntryHead | null => {
    if (!need(6)) return null;
    const root = view.getUint32(p);
    const len = view.getUint16(p + 4);
    if (!need(6 + len + 12)) return null;
    let path: string;
    try {
      path = fromUtf8.decode(buf.subarray(p + 6, p + 6 + len));
    } catch {
      throw corrupt("a path is not valid UTF-8");
    }
    p += 6 + len;
    const mode = view.getUint32(p);
    const mtime = view.getFloat64(p + 4);
    p += 12;
    return { root, path, mode, mtime };
  };
  switch (tag) {
    case 0x44: {
      const h = readHead();
      return h ? { event: { kind: "dir", ...h }, next: p } : null;
    }
    case 0x4c: {
      const h = readHead();
      if (!h || !need(2)) return null;
      const len = view.getUint16(p);
      if (!need(2 + len)) return null;
      let target: string;
      try {
        target = fromUtf8.decode(buf.subarray(p + 2, p + 2 + len));
      } catch {
        throw corrupt("a symlink target is not valid UTF-8");
      }
      p += 2 + len;
      return { event: { kind: "symlink", ...h, target }, next: p };
    }
    case 0x46: {
      const h = readHead();
      if (!h || !need(8)) return null;
      const size = view.getFloat64(p);
      if (!Number.isSafeInteger(size) || size < 0) throw corrupt(`file ${h.path} has an impossible size`);
      p += 8;
      return { event: { kind: "file", ...h, size }, next: p };
    }
    case 0x43: {
      if (!need(4 + ID_BYTES)) return null;
      const length = view.getUint32(p);
      const id = buf.slice(p + 4, p + 4 + ID_BYTES);
      return { event: { kind: "chunk", length, id }, next: p + 4 + ID_BYTES };
    }
    case 0x5a: {
      if (!need(8)) return null;
      const length = view.getFloat64(p);
      if (!Number.isSafeInteger(length) || length <= 0) throw corrupt("a zero run has an impossible length");
      return { event: { kind: "zeros", length }, next: p + 8 };
    }
    case 0x45:
      return { event: { kind: "end-file" }, next: p };
    case 0x58: {
      if (!need(8)) return null;
      const count = view.getFloat64(p);
      return { event: "end", next: p + 8, count };
    }
    default:
      throw corrupt(`unknown record type 0x${tag.toString(16)}`);
  }
}
