// Writes received WAL into segment files: `<segment>.partial` while it fills, renamed to
// `<segment>` once complete and fsync'd. Like pg_receivewal, a new partial file is filled
// with zeros first, so later fdatasyncs need no metadata update and a partial file is a
// valid (zero-padded) segment that PostgreSQL can replay as it is.
import { open, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { renameDurable, fsyncDir } from "../util/durable-fs.ts";
import { walFileName, type Lsn, type SegmentSize, type Timeline } from "../pg/lsn.ts";
import { PARTIAL_SUFFIX } from "./archive-layout.ts";

const ZEROS = new Uint8Array(1024 * 1024);

interface OpenSegment {
  timeline: Timeline;
  segno: bigint;
  name: string;
  fh: FileHandle;
  /** Bytes written since the last fdatasync. */
  dirty: boolean;
}

export interface SegmentWriter {
  /** Writes `chunks`, which are contiguous WAL starting at `start` on `timeline`. */
  write(timeline: Timeline, start: Lsn, chunks: Uint8Array[]): Promise<void>;
  /** fdatasync the open partial segment if anything was written since the last flush. */
  flush(): Promise<void>;
  /** Whether write() left bytes that are not yet fsync'd. */
  readonly dirty: boolean;
  /** Flush and close the open partial segment, keeping its `.partial` name. */
  closePartial(): Promise<void>;
}

export function createSegmentWriter(dir: string, segSize: SegmentSize, onCompleted: (name: string) => void): SegmentWriter {
  let current: OpenSegment | undefined;
  const size = BigInt(segSize);

  async function openSegment(timeline: Timeline, segno: bigint): Promise<OpenSegment> {
    const name = walFileName(timeline, segno, segSize);
    const file = path.join(dir, name + PARTIAL_SUFFIX);
    let fh: FileHandle;
    let have = 0;
    try {
      fh = await open(file, "r+");
      have = (await fh.stat()).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      fh = await open(file, "w+", 0o640);
    }
    if (have < segSize) {
      for (let off = have; off < segSize; off += ZEROS.length) {
        await fh.write(ZEROS, 0, Math.min(ZEROS.length, segSize - off), off);
      }
      await fh.sync();
      await fsyncDir(dir);
    }
    return { timeline, segno, name, fh, dirty: false };
  }

  async function complete(seg: OpenSegment): Promise<void> {
    await seg.fh.datasync();
    await seg.fh.close();
    await renameDurable(path.join(dir, seg.name + PARTIAL_SUFFIX), path.join(dir, seg.name));
    onCompleted(seg.name);
  }

  async function writeRun(seg: OpenSegment, offset: number, bufs: Uint8Array[]): Promise<void> {
    let pos = offset;
    while (bufs.length) {
      const { bytesWritten } = await seg.fh.writev(bufs, pos);
      pos += bytesWritten;
      // Short writes are rare but legal: drop what was written and go on.
      let left = bytesWritten;
      while (bufs.length && left >= bufs[0]!.length) left -= bufs.shift()!.length;
      if (left > 0) bufs[0] = bufs[0]!.subarray(left);
    }
    seg.dirty = true;
  }

  return {
    get dirty() {
      return current?.dirty ?? false;
    },
    async write(timeline, start, chunks) {
      let lsn = start;
      let run: Uint8Array[] = [];
      let runOffset = 0;
      for (let chunk of chunks) {
        while (chunk.length > 0) {
          const segno = lsn / size;
          if (!current || current.segno !== segno || current.timeline !== timeline) {
            if (run.length) await writeRun(current!, runOffset, run);
            run = [];
            if (current) {
              // Only a new stream position (resume, new timeline) leaves a segment unfinished.
              await current.fh.datasync();
              await current.fh.close();
            }
            current = await openSegment(timeline, segno);
          }
          const offset = Number(lsn % size);
          if (run.length === 0) runOffset = offset;
          const take = Math.min(chunk.length, segSize - offset);
          run.push(take === chunk.length ? chunk : chunk.subarray(0, take));
          chunk = chunk.subarray(take);
          lsn += BigInt(take);
          if (offset + take === segSize) {
            await writeRun(current, runOffset, run);
            run = [];
            const done = current;
            current = undefined;
            await complete(done);
          }
        }
      }
      if (run.length) await writeRun(current!, runOffset, run);
    },
    async flush() {
      if (current?.dirty) {
        await current.fh.datasync();
        current.dirty = false;
      }
    },
    async closePartial() {
      if (!current) return;
      const seg = current;
      current = undefined;
      await seg.fh.datasync();
      await seg.fh.close();
    },
  };
}
