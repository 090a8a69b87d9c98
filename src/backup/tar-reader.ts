// A streaming tar reader for BASE_BACKUP's archives (and any ustar/pax/GNU tar): headers
// are parsed as they arrive and file content is handed on as views of the source's own
// buffers, so memory stays flat whatever the file sizes and nothing is copied on the way.
//
// It reads what PostgreSQL and GNU tar write: ustar with its name prefix, pax extended
// headers ('x' for the next entry, 'g' for all that follow: path, linkpath, size, mtime),
// GNU long names and link names ('L', 'K'), sizes in octal or GNU's base-256, header
// checksums, and the end-of-archive marker of two zero blocks. Everything else is refused
// with one error that names the entry and the byte offset: absolute paths, `..`, NUL bytes,
// empty names, entries beneath a symbolic link of the same archive, hard links, devices,
// FIFOs, sparse files, bad checksums, numbers that do not parse, a stream cut short.
import { KlioError } from "../util/errors.ts";
import { ByteSource } from "./byte-source.ts";

export interface TarEntry {
  /** Normalised relative path (validateEntryPath): no leading "./", no trailing "/". */
  path: string;
  type: "file" | "directory" | "symlink";
  /** Permission bits (& 0o7777). */
  mode: number;
  /** Content bytes; 0 for directories and symbolic links. */
  size: number;
  /** Modification time, whole seconds since the epoch. */
  mtime: number;
  linkTarget?: string;
}

const BLOCK = 512;
/** Largest pax header or GNU long name/link we hold in memory. */
const META_MAX = 1024 * 1024;
/** Longest path accepted (Linux PATH_MAX). */
const PATH_MAX = 4096;

const UTF8 = new TextDecoder("utf-8", { fatal: true });

function badTar(message: string): KlioError {
  return new KlioError("bad-tar", `damaged tar stream: ${message}`);
}

function badEntry(message: string): KlioError {
  return new KlioError("bad-tar-entry", `refused tar entry: ${message}`);
}

/** JSON quoting shows hidden characters (NUL, newlines) in messages. */
function show(p: string): string {
  return JSON.stringify(p.length > 200 ? p.slice(0, 200) + "…" : p);
}

/**
 * The normalised form of a tar entry's path ("./a//b/" → "a/b"), or KlioError("bad-tar-entry")
 * when it could lead outside the directory it is extracted into or names nothing: empty,
 * absolute, a ".." component, a NUL byte, longer than PATH_MAX.
 */
export function validateEntryPath(p: string): string {
  if (p.length === 0) throw badEntry("empty path");
  if (p.includes("\0")) throw badEntry(`path ${show(p)} contains a NUL byte`);
  if (p.startsWith("/")) throw badEntry(`absolute path ${show(p)}`);
  const parts = p.split("/").filter((s) => s !== "" && s !== ".");
  if (parts.includes("..")) throw badEntry(`path ${show(p)} contains ".."`);
  if (parts.length === 0) throw badEntry(`path ${show(p)} names no file`);
  const clean = parts.join("/");
  if (clean.length > PATH_MAX) throw badEntry(`path ${show(p)} is longer than ${PATH_MAX} characters`);
  return clean;
}

/** One 512-byte block; null at the end of the source (a partial block throws). */
async function readBlock(src: ByteSource, into: Uint8Array): Promise<Uint8Array | null> {
  const at = src.offset;
  const { bytes, got } = await src.exact(BLOCK, into);
  if (bytes === null && got > 0) throw badTar(`the stream ends inside a header block at byte ${at}`);
  return bytes;
}

// ---------------------------------------------------------------- header fields

function isZeroBlock(b: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

/** A NUL-terminated (or field-filling) text field. */
function textField(h: Uint8Array, at: number, len: number, what: string): string {
  let end = at;
  while (end < at + len && h[end] !== 0) end++;
  try {
    return UTF8.decode(h.subarray(at, end));
  } catch {
    throw badEntry(`the ${what} field is not UTF-8`);
  }
}

/**
 * A numeric field: octal digits (leading spaces, trailing space or NUL), or GNU's base-256
 * form for numbers that do not fit (first byte 0x80 for positive, 0xff for negative).
 * null when it does not parse.
 */
function numericField(h: Uint8Array, at: number, len: number): number | null {
  const first = h[at]!;
  if (first & 0x80) {
    const negative = first === 0xff;
    if (!negative && first !== 0x80) return null;
    let v = 0;
    for (let i = at + 1; i < at + len; i++) {
      const b = negative ? 0xff - h[i]! : h[i]!;
      v = v * 256 + b;
      if (v > Number.MAX_SAFE_INTEGER) return null;
    }
    return negative ? -(v + 1) : v;
  }
  let i = at;
  const end = at + len;
  while (i < end && h[i] === 0x20) i++;
  const digitsAt = i;
  let v = 0;
  while (i < end && h[i]! >= 0x30 && h[i]! <= 0x37) v = v * 8 + (h[i++]! - 0x30);
  if (i === digitsAt) return null;
  for (; i < end; i++) if (h[i] !== 0 && h[i] !== 0x20) return null;
  return v;
}

function checksumOk(h: Uint8Array): boolean {
  const stored = numericField(h, 148, 8);
  if (stored === null) return false;
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += b;
    signed += b >= 128 ? b - 256 : b;
  }
  // Some old tars summed signed chars; both are accepted, as GNU tar does.
  return stored === unsigned || stored === signed;
}

/** pax extended header records: "<length> <key>=<value>\n". */
function parsePax(data: Uint8Array, into: Map<string, string>, where: string): void {
  let at = 0;
  while (at < data.length) {
    if (data[at] === 0) {
      // Some writers pad the header's content with NULs.
      for (; at < data.length; at++) if (data[at] !== 0) throw badTar(`pax header ${where}: garbage after the records`);
      break;
    }
    let len = 0;
    let i = at;
    while (i < data.length && data[i]! >= 0x30 && data[i]! <= 0x39 && i - at < 10) len = len * 10 + (data[i++]! - 0x30);
    if (i === at || data[i] !== 0x20 || len <= i - at + 1 || at + len > data.length || data[at + len - 1] !== 0x0a)
      throw badTar(`pax header ${where}: malformed record at byte ${at}`);
    const record = data.subarray(i + 1, at + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw badTar(`pax header ${where}: record without "key=value" at byte ${at}`);
    let key: string;
    let value: string;
    try {
      key = UTF8.decode(record.subarray(0, eq));
      value = UTF8.decode(record.subarray(eq + 1));
    } catch {
      throw badEntry(`pax header ${where}: a record is not UTF-8`);
    }
    into.set(key, value); // an empty value cancels the key (applied when the entry is built)
    at += len;
  }
}

function paxNumber(m: Map<string, string>, key: string, fraction: boolean, where: string): number | undefined {
  const v = m.get(key);
  if (v === undefined || v === "") return undefined;
  const ok = fraction ? /^-?[0-9]{1,16}(\.[0-9]*)?$/.test(v) : /^[0-9]{1,16}$/.test(v);
  const n = ok ? Number(v) : NaN;
  if (!Number.isFinite(n) || Math.abs(n) > Number.MAX_SAFE_INTEGER) throw badTar(`entry ${where}: pax ${key} ${JSON.stringify(v)} is not a number`);
  return Math.floor(n);
}

// ---------------------------------------------------------------- the reader

interface Pending {
  pax: Map<string, string>;
  longName?: string;
  longLink?: string;
}

/**
 * Reads a tar stream; for each entry yields the entry and an async iterable of its content
 * (consume it, or leave it: the reader skips what is left when asked for the next entry).
 * Content buffers are views of the source's buffers: valid only until the next pull.
 * A directory entry for the archive's root ("./") is skipped. The source is read to its end
 * (what follows the end-of-archive marker is ignored), or closed if reading stops early.
 */
export async function* readTar(source: AsyncIterable<Uint8Array>): AsyncGenerator<{ entry: TarEntry; content: AsyncIterable<Uint8Array> }> {
  const src = new ByteSource(source[Symbol.asyncIterator]());
  const block = new Uint8Array(BLOCK); // header blocks that straddle two buffers
  const global = new Map<string, string>();
  let pending: Pending = { pax: new Map() };
  const links = new Set<string>();
  let metaBuf = new Uint8Array(4096); // grown on demand for pax headers and long names
  let finished = false;
  let serial = 0;
  // The entry whose content is being read: what is left of it, and the padding after it.
  let open: { serial: number; remaining: number; padding: number; path: string } | null = null;

  const readMeta = async (size: number, what: string, at: number): Promise<Uint8Array> => {
    if (size > META_MAX) throw badTar(`${what} at byte ${at} is ${size} bytes (more than ${META_MAX})`);
    if (metaBuf.length < size) metaBuf = new Uint8Array(size);
    const data = metaBuf.subarray(0, size);
    if (size > 0) {
      const { bytes } = await src.exact(size, metaBuf);
      if (bytes === null) throw badTar(`the stream ends inside the ${what} at byte ${at}`);
      if (bytes.buffer !== metaBuf.buffer) data.set(bytes); // a view of the source's buffer: the skip below may pull the next one
    }
    if (!(await src.skip(padding(size)))) throw badTar(`the stream ends inside the ${what} at byte ${at}`);
    return data;
  };

  const contentOf = (entrySerial: number): AsyncIterable<Uint8Array> => ({
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (open === null || open.serial !== entrySerial) {
          if (serial !== entrySerial) throw new KlioError("tar-usage", "tar entry content read after moving on to the next entry");
          return;
        }
        if (open.remaining === 0) return;
        const v = await src.some(open.remaining);
        if (v === null) throw badTar(`the stream ends inside the content of ${show(open.path)}, ${open.remaining} bytes short`);
        open.remaining -= v.length;
        yield v;
      }
    },
  });

  try {
    for (;;) {
      // Whatever the consumer left of the last entry's content, and its padding.
      if (open !== null) {
        const o = open;
        open = null;
        if (!(await src.skip(o.remaining + o.padding))) throw badTar(`the stream ends inside the content of ${show(o.path)}`);
      }
      const at = src.offset;
      const h = await readBlock(src, block);
      if (h === null) throw badTar(`the stream ends at byte ${at} without the end-of-archive marker (truncated?)`);
      if (isZeroBlock(h)) {
        const second = await readBlock(src, block);
        if (second === null) throw badTar(`the stream ends at byte ${at + BLOCK} after one zero block (truncated?)`);
        if (!isZeroBlock(second)) throw badTar(`a zero block in the middle of the stream at byte ${at}`);
        if (pending.pax.size > 0 || pending.longName !== undefined || pending.longLink !== undefined)
          throw badTar(`the archive ends after an extended header, without the entry it describes`);
        finished = true;
        await src.drain();
        return;
      }
      if (!checksumOk(h)) throw badTar(`header checksum mismatch at byte ${at} (not a tar stream, or damaged)`);

      const ustar = h[257] === 0x75 && h[258] === 0x73 && h[259] === 0x74 && h[260] === 0x61 && h[261] === 0x72; // "ustar"
      const posix = ustar && h[262] === 0; // "ustar\0": POSIX; "ustar  \0": GNU, whose prefix field holds other things
      const typeflag = h[156]!;
      let name = textField(h, 0, 100, "name");
      if (posix) {
        const prefix = textField(h, 345, 155, "prefix");
        if (prefix !== "") name = `${prefix}/${name}`;
      }
      const where = `${show(pending.pax.get("path") ?? pending.longName ?? name)} at byte ${at}`;
      const headerSize = numericField(h, 124, 12);
      if (headerSize === null || headerSize < 0) throw badTar(`entry ${where}: the size field does not parse`);

      // Metadata for the entry that follows.
      const kind = String.fromCharCode(typeflag);
      if (kind === "x" || kind === "g") {
        const data = await readMeta(headerSize, "pax header", at);
        parsePax(data, kind === "x" ? pending.pax : global, `at byte ${at}`);
        continue;
      }
      if (kind === "L" || kind === "K") {
        const data = await readMeta(headerSize, kind === "L" ? "GNU long name" : "GNU long link name", at);
        let end = data.indexOf(0);
        if (end < 0) end = data.length;
        for (let i = end; i < data.length; i++) if (data[i] !== 0) throw badEntry(`GNU long name at byte ${at} contains a NUL byte`);
        let text: string;
        try {
          text = UTF8.decode(data.subarray(0, end));
        } catch {
          throw badEntry(`GNU long name at byte ${at} is not UTF-8`);
        }
        if (kind === "L") pending.longName = text;
        else pending.longLink = text;
        continue;
      }

      // An entry: pax values (this entry's over the global ones) over GNU long names over the header.
      const pax = new Map([...global, ...pending.pax]);
      const longName = pending.longName;
      const longLink = pending.longLink;
      pending = { pax: new Map() };
      const rawPath = pax.get("path") || longName || name;
      const size = paxNumber(pax, "size", false, where) ?? headerSize;
      const mtime = paxNumber(pax, "mtime", true, where) ?? numericField(h, 136, 12);
      if (mtime === null) throw badTar(`entry ${where}: the mtime field does not parse`);
      const mode = numericField(h, 100, 8);
      if (mode === null || mode < 0) throw badTar(`entry ${where}: the mode field does not parse`);
      if ([...pax.keys()].some((k) => k.startsWith("GNU.sparse."))) throw badEntry(`${where}: sparse files are not supported`);

      let type: TarEntry["type"];
      switch (kind) {
        case "0":
        case "\0":
        case "7": // contiguous file: a regular file everywhere that matters
          type = rawPath.endsWith("/") && kind === "\0" ? "directory" : "file"; // V7 tars mark directories with a trailing slash
          break;
        case "5":
          type = "directory";
          break;
        case "2":
          type = "symlink";
          break;
        case "1":
          throw badEntry(`${where} is a hard link, which klio does not accept`);
        case "3":
        case "4":
          throw badEntry(`${where} is a device file, which klio does not accept`);
        case "6":
          throw badEntry(`${where} is a FIFO, which klio does not accept`);
        case "S":
          throw badEntry(`${where}: sparse files are not supported`);
        default:
          throw badEntry(`${where} has the unsupported entry type ${JSON.stringify(kind)}`);
      }
      if (type !== "file" && size !== 0) throw badEntry(`${where}: a ${type} with content (${size} bytes)`);

      if (type === "directory" && /^\.(\/+\.?)*\/*$/.test(rawPath)) continue; // the archive's root, "./"
      const path = validateEntryPath(rawPath);
      for (let i = path.indexOf("/"); i > 0; i = path.indexOf("/", i + 1)) {
        if (links.has(path.slice(0, i))) throw badEntry(`${where} lies beneath the symbolic link ${show(path.slice(0, i))} of the same archive`);
      }
      const entry: TarEntry = { path, type, mode: mode & 0o7777, size, mtime };
      if (type === "symlink") {
        const target = pax.get("linkpath") || longLink || textField(h, 157, 100, "linkname");
        if (target === "") throw badEntry(`${where}: symbolic link without a target`);
        if (target.includes("\0")) throw badEntry(`${where}: symbolic link target contains a NUL byte`);
        entry.linkTarget = target;
        links.add(path);
      }
      serial++;
      open = { serial, remaining: type === "file" ? size : 0, padding: type === "file" ? padding(size) : 0, path };
      yield { entry, content: contentOf(serial) };
    }
  } finally {
    open = null;
    serial++; // content iterables of this reader end here
    if (!finished) await src.close();
  }
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}
