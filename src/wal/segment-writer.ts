// Writes received WAL into segment files: `<segment>.partial` while it fills, renamed to
// `<segment>` once complete and fsync'd, after its checksum file `<segment>.crc32` is durable
// (segment-checksum.ts): a complete segment is verifiable from the moment it has its name. Like pg_receivewal, a new partial file is filled
// with zeros first, so later fdatasyncs need no metadata update and a partial file is a
// valid (zero-padded) segment that PostgreSQL can replay as it is.
//
// The calls are synchronous, as in pg_receivewal: every write and fdatasync sits on the
// path to the acknowledgement anyway, and a hand-off to the thread pool and back cost
// ~150 µs per commit in synchronous mode (measured with bench:wal) for nothing in return.
import { closeSync, fdatasyncSync, fstatSync, fsyncSync, openSync, readSync, renameSync, writeSync, writevSync } from "node:fs";
import path from "node:path";
import { fsyncDirSync } from "../util/durable-fs.ts";
import { walFileName, type Lsn, type SegmentSize, type Timeline } from "../pg/lsn.ts";
import { PARTIAL_SUFFIX } from "./archive-layout.ts";
import { CHECKSUM_SUFFIX, crc32Update, formatSegmentChecksum } from "./segment-checksum.ts";

const ZEROS = new Uint8Array(1024 * 1024);
/** What a file is called while it is made, before it gets its name (listings skip it). */
const NEW_SUFFIX = ".new";

interface OpenSegment {
  timeline: Timeline;
  segno: bigint;
  name: string;
  fd: number;
  /** Bytes written since the last fdatasync. */
  dirty: boolean;
  /**
   * CRC-32 of the segment's bytes [0, crcEnd), kept up as the stream writes them in order (it
   * always starts a segment at its first byte); undefined once a write went elsewhere, and
   * the checksum is then read back from the file when the segment completes.
   */
  crc: number | undefined;
  crcEnd: number;
}

export interface SegmentWriter {
  /** Writes `chunks`, which are contiguous WAL starting at `start` on `timeline`. */
  write(timeline: Timeline, start: Lsn, chunks: Uint8Array[]): void;
  /** fdatasync the open partial segment if anything was written since the last flush. */
  flush(): void;
  /** Whether write() left bytes that are not yet fsync'd. */
  readonly dirty: boolean;
  /** Flush and close the open partial segment, keeping its `.partial` name. */
  closePartial(): void;
}

export function createSegmentWriter(dir: string, segSize: SegmentSize, onCompleted: (name: string) => void): SegmentWriter {
  let current: OpenSegment | undefined;
  const size = BigInt(segSize);

  function openSegment(timeline: Timeline, segno: bigint): OpenSegment {
    const name = walFileName(timeline, segno, segSize);
    const file = path.join(dir, name + PARTIAL_SUFFIX);
    let fd: number;
    try {
      fd = openSync(file, "r+");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      fd = newPartial(file);
    }
    // A partial left short (by a klio that made it in place) is filled up now.
    const have = fstatSync(fd).size;
    if (have < segSize) {
      fillWithZeros(fd, have);
      fsyncDirSync(dir);
    }
    return { timeline, segno, name, fd, dirty: false, crc: 0, crcEnd: 0 };
  }

  /**
   * A new partial segment, already zero-filled to its full size when it gets its name: made
   * under a temporary name (which archive listings skip) and renamed, so that no reader
   * (get-wal --partial, the prefetcher, wal status) ever sees it short and calls it damaged.
   */
  function newPartial(file: string): number {
    const temporary = `${file}${NEW_SUFFIX}`;
    const fd = openSync(temporary, "w+", 0o640);
    fillWithZeros(fd, 0);
    renameSync(temporary, file);
    fsyncDirSync(dir);
    return fd;
  }

  /** Zeros from `from` to the segment's size, fsync'd (the size too: later fdatasyncs need no metadata). */
  function fillWithZeros(fd: number, from: number): void {
    for (let off = from; off < segSize; off += ZEROS.length) writeSync(fd, ZEROS, 0, Math.min(ZEROS.length, segSize - off), off);
    fsyncSync(fd);
  }

  function close(seg: OpenSegment): void {
    fdatasyncSync(seg.fd);
    closeSync(seg.fd);
  }

  function complete(seg: OpenSegment): void {
    const crc = seg.crc !== undefined && seg.crcEnd === segSize ? seg.crc : crcOfFile(seg.fd);
    close(seg);
    writeChecksumFile(seg.name, crc);
    // The checksum file's name is durable before the segment's, so no crash leaves a complete
    // segment without it.
    fsyncDirSync(dir);
    renameSync(path.join(dir, seg.name + PARTIAL_SUFFIX), path.join(dir, seg.name));
    fsyncDirSync(dir);
    onCompleted(seg.name);
  }

  /**
   * The checksum file, whole or not at all: written under a temporary name (which listings
   * skip) and renamed. A reader of the segment — get-wal, the prefetcher, wal status — reads
   * it first, and one written in place could be caught empty and reported as damage.
   */
  function writeChecksumFile(name: string, crc: number): void {
    const file = path.join(dir, name + CHECKSUM_SUFFIX);
    const temporary = `${file}${NEW_SUFFIX}`;
    const fd = openSync(temporary, "w", 0o640);
    try {
      writeSync(fd, formatSegmentChecksum({ crc32: crc, length: segSize }));
      fdatasyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, file);
  }

  function crcOfFile(fd: number): number {
    const buf = new Uint8Array(1024 * 1024);
    let crc = 0;
    for (let off = 0; off < segSize; ) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, segSize - off), off);
      if (n === 0) break;
      crc = crc32Update(crc, buf.subarray(0, n));
      off += n;
    }
    return crc;
  }

  function writeRun(seg: OpenSegment, offset: number, bufs: Uint8Array[]): void {
    if (seg.crc !== undefined && offset === seg.crcEnd) {
      for (const b of bufs) seg.crc = crc32Update(seg.crc, b);
      seg.crcEnd += bufs.reduce((n, b) => n + b.length, 0);
    } else seg.crc = undefined;
    let pos = offset;
    while (bufs.length) {
      const written = writevSync(seg.fd, bufs, pos);
      pos += written;
      // Short writes are rare but legal: drop what was written and go on.
      let left = written;
      while (bufs.length && left >= bufs[0]!.length) left -= bufs.shift()!.length;
      if (left > 0) bufs[0] = bufs[0]!.subarray(left);
    }
    seg.dirty = true;
  }

  return {
    get dirty() {
      return current?.dirty ?? false;
    },
    write(timeline, start, chunks) {
      let lsn = start;
      let run: Uint8Array[] = [];
      let runOffset = 0;
      for (let chunk of chunks) {
        while (chunk.length > 0) {
          const segno = lsn / size;
          if (!current || current.segno !== segno || current.timeline !== timeline) {
            if (run.length) writeRun(current!, runOffset, run);
            run = [];
            // Only a new stream position (resume, new timeline) leaves a segment unfinished.
            if (current) close(current);
            current = openSegment(timeline, segno);
          }
          const offset = Number(lsn % size);
          if (run.length === 0) runOffset = offset;
          const take = Math.min(chunk.length, segSize - offset);
          run.push(take === chunk.length ? chunk : chunk.subarray(0, take));
          chunk = chunk.subarray(take);
          lsn += BigInt(take);
          if (offset + take === segSize) {
            writeRun(current, runOffset, run);
            run = [];
            const done = current;
            current = undefined;
            complete(done);
          }
        }
      }
      if (run.length) writeRun(current!, runOffset, run);
    },
    flush() {
      if (current?.dirty) {
        fdatasyncSync(current.fd);
        current.dirty = false;
      }
    },
    closePartial() {
      if (!current) return;
      const seg = current;
      current = undefined;
      close(seg);
    },
  };
}
