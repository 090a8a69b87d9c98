// The file list of an incremental backup's parent, read alongside the backup so that a
// synthetic full can name the parent's pages (synthetic-file.ts) without reading or storing
// them again.
//
// The parent's list may name a hundred million pages: it is never loaded. It is read once,
// front to back, as far as the files asked for need: the server sends files in nearly the
// order of the parent's list, so the file asked for is usually the next one. Passing a paged
// file (file-kind.ts) notes where its records lie — piece, offset, length: memory grows with
// the number of files, not of pages — and a file's layout is read from those records. The
// pieces read last are kept decoded (a gigabyte segment's records are about 5 MB), so a file
// just passed, or asked for out of order soon after, is not read again.
import { KlioError } from "../util/errors.ts";
import { CHUNK_ID_BYTES, type ChunkId } from "../repo/chunk-id.ts";
import { FileListScanner, readFileRecords, type FileListEvent, type FileListPosition } from "../repo/file-list.ts";
import { isPagedFile, PAGE_CHUNK } from "./file-kind.ts";
import { manifestPath } from "./backup-manifest.ts";

/** Pieces of the list kept decoded (1 MB each as backups write them): a gigabyte segment's records fit. */
const PIECES_KEPT = 8;

/** A paged file of the parent, page by page. */
export class ParentFileLayout {
  /** Its pages: size / 8192 (0 when unaligned). */
  readonly blocks: number;

  /**
   * @param ids the chunk id of each stored page, 32 bytes per block
   * @param stored 1 for a page that is a chunk, 0 for a page of zeros
   * @param unaligned why the file is not one page per chunk, or null
   * @param crc32c the whole file's CRC-32C as the parent's list gave it, or null
   */
  constructor(
    readonly size: number,
    private readonly ids: Uint8Array,
    private readonly stored: Uint8Array,
    readonly unaligned: string | null,
    readonly crc32c: number | null,
  ) {
    this.blocks = stored.length;
  }

  /** A file of no pages: what a synthetic file built on it does not take from the parent it takes as zeros. */
  static none(): ParentFileLayout {
    return new ParentFileLayout(0, new Uint8Array(0), new Uint8Array(0), null, null);
  }

  /** The chunk id of block `b`, or "zero" for a page of zeros. */
  pageAt(b: number): ChunkId | "zero" {
    return this.isZeroPage(b) ? "zero" : this.chunkIdAt(b);
  }

  isZeroPage(b: number): boolean {
    if (!(b >= 0 && b < this.blocks)) throw new RangeError(`block ${b} of a file of ${this.blocks}`);
    return this.stored[b] === 0;
  }

  /** The chunk id of block `b`, a page that is not zeros (a view, valid as long as the layout). */
  chunkIdAt(b: number): ChunkId {
    if (this.isZeroPage(b)) throw new RangeError(`block ${b} is a page of zeros`);
    return this.ids.subarray(b * CHUNK_ID_BYTES, (b + 1) * CHUNK_ID_BYTES);
  }
}

export class ParentFileList {
  /** Decoded pieces, most recently used last. */
  private readonly kept: { index: number; bytes: Uint8Array }[] = [];
  /** "root:path" → the file's slot in `spans`. */
  private readonly slots = new Map<string, number>();
  /** Per slot: the piece its records begin in, the offset there, their length in bytes. */
  private readonly spans: number[] = [];
  /** Where the list has been read to, and the paged file being passed. */
  private readonly at: FileListPosition = { version: 1, piece: 0, offset: 0, listOffset: 0 };
  private passing: { key: string; piece: number; offset: number; listOffset: number } | null = null;
  private readonly scanner = new FileListScanner(this.at);
  /** The events of the piece being passed (synchronous: a promise per page's record would cost more than the rest), and the next piece to read. */
  private events: Generator<FileListEvent> | null = null;
  private nextPiece = 0;
  private readToEnd = false;
  /** The reading under way: callers at once share it (`at` describes one event at a time). */
  private reading: Promise<void> | null = null;

  /**
   * The list of `pieces` (in order), each read through `readPiece` — in real use the
   * repository's readChunk — when first needed. `checksums` (by backup_manifest path) give a
   * file's CRC-32C where its records carry none: a full parent's files, whose checksums are
   * in its manifest.
   */
  constructor(
    private readonly pieces: readonly ChunkId[],
    private readonly readPiece: (id: ChunkId) => Promise<Uint8Array>,
    private readonly checksums: ReadonlyMap<string, number> = new Map(),
  ) {}

  /** Paged files passed so far (all of them once a file the list lacks was asked for). */
  get files(): number {
    return this.slots.size;
  }

  /**
   * The parent's layout of the paged file `path` of `root`; undefined when the parent has no
   * such file (found out by reading the list to its end). A damaged list throws
   * KlioError("corrupt-file-list"), or the reader's error, when the damage is reached.
   */
  async layoutOf(root: number, path: string): Promise<ParentFileLayout | undefined> {
    const key = keyOf(root, path);
    let slot = this.slots.get(key);
    while (slot === undefined && !this.readToEnd) {
      await (this.reading ??= this.passNextFile().finally(() => (this.reading = null)));
      slot = this.slots.get(key);
    }
    if (slot === undefined) return undefined;
    const span = await this.gather(this.spans[3 * slot]!, this.spans[3 * slot + 1]!, this.spans[3 * slot + 2]!);
    return layoutFromRecords(readFileRecords(span, this.at.version), this.checksums.get(manifestPath(root, path)) ?? null);
  }

  /** Reads the list on to the end of the next paged file, noting where its records are, or to the list's end. */
  private async passNextFile(): Promise<void> {
    for (;;) {
      if (this.events === null) {
        if (this.nextPiece === this.pieces.length) {
          this.scanner.end();
          this.readToEnd = true;
          return;
        }
        this.events = this.scanner.feed(await this.piece(this.nextPiece++));
      }
      const r = this.events.next();
      if (r.done) {
        this.events = null;
        continue;
      }
      const ev = r.value;
      if (ev.kind === "file") {
        this.passing = isPagedFile(ev.path) ? { key: keyOf(ev.root, ev.path), piece: this.at.piece, offset: this.at.offset, listOffset: this.at.listOffset } : null;
      } else if (ev.kind === "end-file" && this.passing) {
        const f = this.passing;
        this.passing = null;
        if (this.slots.has(f.key)) throw new KlioError("corrupt-file-list", `snapshot file list is damaged: it lists ${f.key.replace(/^0:/, "")} twice`);
        this.slots.set(f.key, this.spans.length / 3);
        // The end record is one byte: the file's records end right after it.
        this.spans.push(f.piece, f.offset, this.at.listOffset + 1 - f.listOffset);
        return;
      }
    }
  }

  /** `length` bytes of the list from `offset` of piece `index` on. */
  private async gather(index: number, offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    let filled = 0;
    for (let i = index, from = offset; filled < length; i++, from = 0) {
      if (i >= this.pieces.length) throw new KlioError("corrupt-file-list", "snapshot file list is damaged: a file's records run past its last piece");
      const piece = await this.piece(i);
      const take = Math.min(length - filled, piece.length - from);
      out.set(piece.subarray(from, from + take), filled);
      filled += take;
    }
    return out;
  }

  private async piece(index: number): Promise<Uint8Array> {
    const k = this.kept.findIndex((p) => p.index === index);
    const hit = k >= 0 ? this.kept.splice(k, 1)[0]! : { index, bytes: await this.readPiece(this.pieces[index]!) };
    this.kept.push(hit);
    if (this.kept.length > PIECES_KEPT) this.kept.shift();
    return hit.bytes;
  }
}

function keyOf(root: number, path: string): string {
  return `${root}:${path}`;
}

/**
 * A file's layout from its records. A page is a chunk when one chunk of exactly 8192 bytes
 * starts on it, and zeros otherwise: chunks cover whole pages or the file is unaligned, so a
 * page no chunk covers lies wholly in zero runs (which may span pages or start mid-page).
 */
function layoutFromRecords(events: Iterable<FileListEvent>, knownCrc32c: number | null): ParentFileLayout {
  let size = 0;
  let ids = new Uint8Array(0);
  let stored = new Uint8Array(0);
  let crc32c = knownCrc32c;
  let offset = 0;
  const unaligned = (why: string) => new ParentFileLayout(size, new Uint8Array(0), new Uint8Array(0), why, null);
  for (const ev of events) {
    switch (ev.kind) {
      case "file":
        size = ev.size;
        if (size % PAGE_CHUNK !== 0) return unaligned(`its size ${size} is not a whole number of ${PAGE_CHUNK}-byte pages`);
        ids = new Uint8Array((size / PAGE_CHUNK) * CHUNK_ID_BYTES);
        stored = new Uint8Array(size / PAGE_CHUNK);
        break;
      case "chunk": {
        if (offset % PAGE_CHUNK !== 0 || ev.length !== PAGE_CHUNK)
          return unaligned(`a chunk of ${ev.length} bytes at offset ${offset} is not one ${PAGE_CHUNK}-byte page`);
        const b = offset / PAGE_CHUNK;
        ids.set(ev.id, b * CHUNK_ID_BYTES);
        stored[b] = 1;
        offset += ev.length;
        break;
      }
      case "zeros":
        offset += ev.length;
        break;
      case "file-checksum":
        crc32c = ev.crc32c;
        break;
      // The parent's own "incremental" record says how it was made, not what it holds.
    }
  }
  return new ParentFileLayout(size, ids, stored, null, crc32c);
}
