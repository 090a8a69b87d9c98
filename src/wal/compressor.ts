// Turns completed raw segments into their stored (compressed, checksummed) form, away from
// the receive path: the receiver only renames a finished segment and wakes this worker.
import { readFile, unlink, readdir } from "node:fs/promises";
import path from "node:path";
import { fsyncDir, writeFileDurable } from "../util/durable-fs.ts";
import { encodeStoredSegment } from "./stored-segment.ts";
import { isSegmentName } from "../pg/lsn.ts";
import { STORED_SUFFIX } from "./archive-layout.ts";
import type { Logger } from "../util/log.ts";

export interface Compressor {
  /** Something new may be waiting. */
  wake(): void;
  /** Finishes the segment in hand and the queue, then resolves. */
  drain(): Promise<void>;
}

export async function compressSegmentFile(dir: string, name: string): Promise<void> {
  const rawPath = path.join(dir, name);
  await writeFileDurable(rawPath + STORED_SUFFIX, await encodeStoredSegment(await readFile(rawPath)));
  // Only now is the raw copy redundant; a crash before this unlink leaves both, and the
  // next pass removes the raw one again.
  await unlink(rawPath);
  await fsyncDir(dir);
}

/**
 * `deferWhile()`: while it answers true (the receiver is catching up on a backlog), the
 * compressor waits: CPU goes to making WAL durable first; raw segments are servable meanwhile.
 */
export function startCompressor(dir: string, log: Logger, deferWhile: () => boolean = () => false): Compressor {
  let running: Promise<void> | undefined;
  let again = false;

  async function pass(): Promise<void> {
    do {
      again = false;
      const names = new Set(await readdir(dir));
      for (const name of [...names].sort()) {
        if (!isSegmentName(name)) continue;
        if (names.has(name + STORED_SUFFIX)) {
          await unlink(path.join(dir, name));
          continue;
        }
        while (deferWhile()) await new Promise((r) => setTimeout(r, 250));
        try {
          await compressSegmentFile(dir, name);
        } catch (e) {
          log.error("wal.compress_failed", { segment: name, error: String(e) });
          return; // retried on the next wake; the raw segment is still complete and servable
        }
      }
    } while (again);
  }

  function wake(): void {
    if (running) {
      again = true;
      return;
    }
    running = pass().finally(() => {
      running = undefined;
    });
  }

  return {
    wake,
    async drain() {
      while (running) await running;
    },
  };
}
