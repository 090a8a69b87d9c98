// The file list of a snapshot: every directory, symlink and file of a backup, and for each
// file the chunks it is made of, as one binary stream. The stream is cut into pieces that
// are stored as ordinary chunks, so a list is written and read with memory that does not
// grow with the number of files or chunks (a 1 TB database has ~130 million 8 KB chunks).
//
// Format (big-endian; documented in docs/FORMAT.md, "File list"):
//   magic "KLIOFL02" (version 2; "KLIOFL01", version 1, is read as well: it lacks I and K)
//   record*: one tag byte, then
//     'D' dir      root u32, path str16, mode u32, mtime f64
//     'L' symlink  root u32, path str16, mode u32, mtime f64, target str16
//     'F' file     root u32, path str16, mode u32, mtime f64, size f64
//     'I' incremental  truncation length u32, count u32, count × block number u32
//                  (only right after F: the file was rebuilt from an incremental entry)
//     'C' chunk    length u32, id 32 bytes          (the next bytes of the open file)
//     'Z' zeros    length f64                        (bytes of zeros, not stored)
//     'K' checksum crc32c u32                        (only right before E: the whole file's)
//     'E' end of the open file
//     'X' end of list: entries f64                   (a truncated list is detected)
//   str16 = length u16 + UTF-8 bytes. `root` names the tree an entry belongs to (0: the
//   main one; the user of the list gives other numbers meaning, e.g. tablespace oids).
//   What I's numbers and K's checksum mean is the user's too (src/backup/synthetic-file.ts):
//   this module only keeps their places and checks that block numbers ascend below the
//   truncation length.
import { KlioError } from "../util/errors.ts";
import { concatBytes } from "../util/bytes.ts";
import type { ChunkId } from "./chunk-id.ts";

const MAGIC_V1 = new TextEncoder().encode("KLIOFL01");
const MAGIC_V2 = new TextEncoder().encode("KLIOFL02");
const MAGIC_BYTES = 8;
const ID_BYTES = 32;
const MAX_STR = 0xffff;
const U32_MAX = 0xffffffff;

export type FileListVersion = 1 | 2;

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
  /** The open file was rebuilt from an incremental entry: its truncation length and the numbers of the blocks sent. */
  | { kind: "incremental"; truncationBlockLength: number; blockNumbers: Uint32Array }
  | { kind: "chunk"; length: number; id: ChunkId }
  | { kind: "zeros"; length: number }
  /** The CRC-32C of the whole open file (all its chunks and zeros). */
  | { kind: "file-checksum"; crc32c: number }
  | { kind: "end-file" };

/** Where a record lies in a list: filled in by readFileList for each event it yields. */
export interface FileListPosition {
  version: FileListVersion;
  /** The piece (its index in the list) the record begins in, and its byte offset there. */
  piece: number;
  offset: number;
  /** The same, as a byte offset in the whole list. */
  listOffset: number;
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

/** A file of the list being written: what its records may still be. */
interface OpenFile {
  path: string;
  size: number;
  written: number;
  /** Zero bytes not yet recorded: consecutive runs become one Z record. */
  zeros: number;
  /** "begun": nothing recorded after F yet (I may come); "body": C and Z; "checksummed": K written, only E may come. */
  stage: "begun" | "body" | "checksummed";
}

/**
 * Writes a file list (version 2), handing each full piece to `emit` (which stores it, or
 * copies it: the piece's memory is reused). Synchronous: one record per chunk of a backup
 * must cost next to nothing; the caller paces the whole (ChunkWriter.ready()).
 */
export class FileListWriter {
  private buf: Uint8Array;
  private view: DataView;
  private at = 0;
  private entries = 0;
  private openFile: OpenFile | null = null;
  private finished = false;

  constructor(private readonly emit: (piece: Uint8Array) => void, pieceBytes = 1024 * 1024) {
    this.buf = new Uint8Array(pieceBytes);
    this.view = new DataView(this.buf.buffer);
    this.buf.set(MAGIC_V2, 0);
    this.at = MAGIC_V2.length;
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
    this.openFile = { path: e.path, size: e.size, written: 0, zeros: 0, stage: "begun" };
    this.entries++;
  }

  /**
   * Marks the file just begun as rebuilt from an incremental entry (before any of its chunks):
   * the truncation length and the ascending numbers, below it, of the blocks that were sent.
   */
  incremental(truncationBlockLength: number, blockNumbers: ArrayLike<number>): void {
    const f = this.openFile;
    if (!f || f.stage !== "begun") throw new Error("file list: incremental() must follow beginFile() at once");
    if (!isU32(truncationBlockLength)) throw new Error(`file list: truncation length ${truncationBlockLength} of ${f.path} is not a u32`);
    const bad = blockNumbersProblem(truncationBlockLength, blockNumbers);
    if (bad !== null) throw new Error(`file list: block numbers of ${f.path} ${bad}`);
    f.stage = "body";
    this.room(1 + 4 + 4);
    this.u8(0x49);
    this.u32(truncationBlockLength);
    this.u32(blockNumbers.length);
    // A file of a million blocks has a record longer than a piece: it continues in the next.
    for (let i = 0; i < blockNumbers.length; i++) {
      this.room(4);
      this.u32(blockNumbers[i]!);
    }
  }

  chunk(length: number, id: ChunkId): void {
    this.advance(length, "a chunk");
    this.recordZeros();
    this.room(1 + 4 + ID_BYTES);
    this.u8(0x43);
    this.u32(length);
    this.buf.set(id.subarray(0, ID_BYTES), this.at);
    this.at += ID_BYTES;
  }

  /** Bytes of zeros, not stored; consecutive calls make one record. */
  zeros(length: number): void {
    this.advance(length, "zeros");
    this.openFile!.zeros += length;
  }

  /** The CRC-32C of the whole file, once all its bytes are recorded (right before endFile()). */
  fileChecksum(crc32c: number): void {
    const f = this.openFile;
    if (!f) throw new Error("file list: a checksum outside a file");
    if (f.stage === "checksummed") throw new Error(`file list: a second checksum of ${f.path}`);
    if (f.written !== f.size) throw new Error(`file list: checksum of ${f.path} before all its bytes (${f.written} of ${f.size})`);
    if (!isU32(crc32c)) throw new Error(`file list: checksum ${crc32c} of ${f.path} is not a u32`);
    this.recordZeros();
    f.stage = "checksummed";
    this.room(1 + 4);
    this.u8(0x4b);
    this.u32(crc32c);
  }

  endFile(): void {
    const f = this.openFile;
    if (!f) throw new Error("file list: endFile() without beginFile()");
    if (f.written !== f.size) throw new Error(`file list: ${f.path} has ${f.written} bytes of chunks, not its size ${f.size}`);
    this.recordZeros();
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

  private advance(length: number, what: string): void {
    const f = this.openFile;
    if (!f) throw new Error(`file list: ${what} outside a file`);
    if (f.stage === "checksummed") throw new Error(`file list: ${what} of ${f.path} after its checksum`);
    f.stage = "body";
    f.written += length;
    if (f.written > f.size) throw new Error(`file list: chunks of ${f.path} exceed its size ${f.size}`);
  }

  private recordZeros(): void {
    const f = this.openFile!;
    if (f.zeros === 0) return;
    this.room(1 + 8);
    this.u8(0x5a);
    this.f64(f.zeros);
    f.zeros = 0;
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
    this.u32(root);
    this.str(path);
    this.u32(mode);
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

  private u32(v: number): void {
    this.view.setUint32(this.at, v);
    this.at += 4;
  }

  private f64(v: number): void {
    this.view.setFloat64(this.at, v);
    this.at += 8;
  }
}

function isU32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= U32_MAX;
}

/** Why `blocks` are not strictly ascending numbers below `limit`, or null when they are. */
export function blockNumbersProblem(limit: number, blocks: ArrayLike<number>): string | null {
  let prev = -1;
  for (let i = 0; i < blocks.length; i++) {
    const b = blocks[i]!;
    if (!Number.isInteger(b) || b <= prev) return `do not ascend (${b} after ${prev})`;
    if (b >= limit) return `reach ${b}, not below the truncation length ${limit}`;
    prev = b;
  }
  return null;
}

function encodeStr(s: string, what: string): Uint8Array {
  const b = utf8.encode(s);
  if (b.length > MAX_STR) throw new KlioError("bad-file-list", `${what} is longer than ${MAX_STR} bytes: ${s.slice(0, 80)}…`);
  return b;
}

function corrupt(message: string): KlioError {
  return new KlioError("corrupt-file-list", `snapshot file list is damaged: ${message}`);
}

function versionOf(magic: Uint8Array): FileListVersion {
  const is = (m: Uint8Array) => m.every((b, i) => magic[i] === b);
  if (is(MAGIC_V2)) return 2;
  if (is(MAGIC_V1)) return 1;
  throw corrupt("not a klio file list (bad magic)");
}

/**
 * The order records must come in, checked one event at a time: entries outside files, a
 * file's I first, its chunks and zeros adding up to its size, its K last. Shared by the
 * reader of a whole list and of one file's records.
 */
class RecordOrder {
  entries = 0;
  private open: { path: string; size: number; seen: number; stage: OpenFile["stage"] } | null = null;

  constructor(private readonly version: FileListVersion) {}

  get openPath(): string | null {
    return this.open?.path ?? null;
  }

  check(ev: FileListEvent): void {
    const open = this.open;
    switch (ev.kind) {
      case "dir":
      case "symlink":
      case "file":
        if (open) throw corrupt(`${ev.path} starts before ${open.path} ends`);
        this.entries++;
        if (ev.kind === "file") this.open = { path: ev.path, size: ev.size, seen: 0, stage: "begun" };
        break;
      case "incremental":
        this.needVersion2("an incremental record");
        if (!open || open.stage !== "begun") throw corrupt(`an incremental record not right after its file's start${open ? ` (in ${open.path})` : ""}`);
        open.stage = "body";
        break;
      case "chunk":
      case "zeros":
        if (!open) throw corrupt("chunk outside a file");
        if (open.stage === "checksummed") throw corrupt(`chunks of ${open.path} after its checksum`);
        open.stage = "body";
        open.seen += ev.length;
        if (open.seen > open.size) throw corrupt(`chunks of ${open.path} exceed its size ${open.size}`);
        break;
      case "file-checksum":
        this.needVersion2("a checksum record");
        if (!open) throw corrupt("a checksum outside a file");
        if (open.stage === "checksummed") throw corrupt(`${open.path} has two checksums`);
        if (open.seen !== open.size) throw corrupt(`the checksum of ${open.path} comes before its last chunk`);
        open.stage = "checksummed";
        break;
      case "end-file":
        if (!open) throw corrupt("end of a file that was not begun");
        if (open.seen !== open.size) throw corrupt(`${open.path} has ${open.seen} bytes of chunks, not its size ${open.size}`);
        this.open = null;
        break;
    }
  }

  private needVersion2(what: string): void {
    if (this.version < 2) throw corrupt(`${what} in a version 1 list`);
  }
}

/**
 * Reads a file list from its pieces, in order. Checks the structure as it goes (a file's
 * chunks add up to its size, I and K in their places, the list ends with its end record) and
 * throws KlioError("corrupt-file-list") otherwise. Chunk ids are views of the pieces, not
 * copies (a list has a record per page: copying each id would cost more than the rest of
 * reading it); the pieces must not be written to. With `position`, each event's record is
 * located there before the event is yielded.
 */
export async function* readFileList(pieces: AsyncIterable<Uint8Array>, position?: FileListPosition): AsyncGenerator<FileListEvent> {
  const scanner = new FileListScanner(position);
  for await (const piece of pieces) for (const ev of scanner.feed(piece)) yield ev;
  scanner.end();
}

/**
 * readFileList without a promise per record: pieces are fed in order and each piece's
 * events come back synchronously. For a reader that passes a list's millions of records
 * (the parent of an incremental backup), where awaiting each would cost more than parsing
 * it. Every event of one feed() must be read before the next feed(); end() after the last.
 */
export class FileListScanner {
  /** The start of a record (or of the magic) that continues in the next piece. */
  private pending = new Uint8Array(0);
  /** Where pending[0] lies. */
  private pendingPiece = 0;
  private pendingOffset = 0;
  private order: RecordOrder | null = null;
  private ended = false;
  private feeding = false;
  private pieceIndex = -1;
  /** Of the current piece's first byte. */
  private listOffset = 0;

  constructor(private readonly position?: FileListPosition) {}

  *feed(piece: Uint8Array): Generator<FileListEvent> {
    if (this.ended) throw corrupt("data after the end record");
    if (this.feeding) throw new Error("file list: a piece fed before the events of the one before were read");
    this.feeding = true;
    this.pieceIndex++;
    const buf = this.pending.length ? concatBytes([this.pending, piece]) : piece;
    const carried = this.pending.length;
    const position = this.position;
    let at = 0;
    if (!this.order) {
      if (buf.length < MAGIC_BYTES) {
        this.pending = buf.slice();
        this.listOffset += piece.length;
        this.feeding = false;
        return;
      }
      const version = versionOf(buf.subarray(0, MAGIC_BYTES));
      this.order = new RecordOrder(version);
      if (position) position.version = version;
      at = MAGIC_BYTES;
    }
    const order = this.order;
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    for (;;) {
      const rec = parseRecord(buf, view, at);
      if (rec === null) break;
      if (position) {
        // A record that begins in the carried bytes begins at their start (they hold no whole record).
        if (at < carried) {
          position.piece = this.pendingPiece;
          position.offset = this.pendingOffset + at;
        } else {
          position.piece = this.pieceIndex;
          position.offset = at - carried;
        }
        position.listOffset = this.listOffset - carried + at;
      }
      at = rec.next;
      const ev = rec.event;
      if (ev === "end") {
        if (order.openPath !== null) throw corrupt(`the list ends inside ${order.openPath}`);
        if (rec.count !== order.entries) throw corrupt(`end record counts ${rec.count} entries, the list has ${order.entries}`);
        this.ended = true;
        if (at !== buf.length) throw corrupt("data after the end record");
        break;
      }
      order.check(ev);
      yield ev;
    }
    // Leftover bytes of a record that continues in the next piece.
    if (at < buf.length) {
      if (at >= carried) {
        this.pendingPiece = this.pieceIndex;
        this.pendingOffset = at - carried;
      }
      this.pending = buf.slice(at);
    } else this.pending = new Uint8Array(0);
    this.listOffset += piece.length;
    this.feeding = false;
  }

  /** After the last piece: throws unless the list ended with its end record. */
  end(): void {
    if (!this.order) throw corrupt("empty");
    if (!this.ended) throw corrupt("truncated (no end record)");
  }
}

/**
 * The events of one file's records, F to E: `span` holds exactly those bytes of a list of
 * `version` (located with readFileList's position). Checked as readFileList checks them.
 */
export function* readFileRecords(span: Uint8Array, version: FileListVersion): Generator<FileListEvent> {
  const order = new RecordOrder(version);
  const view = new DataView(span.buffer, span.byteOffset, span.byteLength);
  let at = 0;
  let first = true;
  while (at < span.length) {
    const rec = parseRecord(span, view, at);
    if (rec === null) throw corrupt("a file's records end inside a record");
    if (rec.event === "end" || (first && rec.event.kind !== "file")) throw corrupt("a file's records do not begin with the file");
    first = false;
    order.check(rec.event);
    at = rec.next;
    yield rec.event;
    if (rec.event.kind === "end-file") break;
  }
  if (order.openPath !== null || first) throw corrupt("a file's records end before the file does");
  if (at !== span.length) throw corrupt("a file's records go on after the file's end");
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
      const id = buf.subarray(p + 4, p + 4 + ID_BYTES);
      return { event: { kind: "chunk", length, id }, next: p + 4 + ID_BYTES };
    }
    case 0x5a: {
      if (!need(8)) return null;
      const length = view.getFloat64(p);
      if (!Number.isSafeInteger(length) || length <= 0) throw corrupt("a zero run has an impossible length");
      return { event: { kind: "zeros", length }, next: p + 8 };
    }
    case 0x49: {
      if (!need(8)) return null;
      const truncationBlockLength = view.getUint32(p);
      const count = view.getUint32(p + 4);
      if (count > truncationBlockLength) throw corrupt(`an incremental record lists ${count} blocks of a file of ${truncationBlockLength}`);
      if (!need(8 + 4 * count)) return null;
      const blockNumbers = new Uint32Array(count);
      for (let i = 0; i < count; i++) blockNumbers[i] = view.getUint32(p + 8 + 4 * i);
      const bad = blockNumbersProblem(truncationBlockLength, blockNumbers);
      if (bad !== null) throw corrupt(`the block numbers of an incremental record ${bad}`);
      return { event: { kind: "incremental", truncationBlockLength, blockNumbers }, next: p + 8 + 4 * count };
    }
    case 0x4b:
      if (!need(4)) return null;
      return { event: { kind: "file-checksum", crc32c: view.getUint32(p) }, next: p + 4 };
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
