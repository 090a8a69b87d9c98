// Turns completed raw segments into their stored (compressed, checksummed) form, away from
// the receive path: the receiver only renames a finished segment and wakes this worker. A raw
// segment is verified first (its CRC-32 checksum file, or for one written before klio kept
// those, its first page): damage is never sealed into a stored segment with a fresh checksum.
import { readFile, unlink, readdir } from "node:fs/promises";
import path from "node:path";
import { crc32 } from "node:zlib";
import { fsyncDir, writeFileDurable } from "../util/durable-fs.ts";
import { corruptSegment, encodeStoredSegment } from "./stored-segment.ts";
import { isSegmentName } from "../pg/lsn.ts";
import { STORED_SUFFIX } from "./archive-layout.ts";
import { CHECKSUM_SUFFIX } from "./segment-checksum.ts";
import { checkSegmentStart, readChecksumFile, type SegmentIdentity } from "./segment-verify.ts";
import type { ClusterOfSegment } from "./segment-page-header.ts";
import { noteDamage } from "./archive-damage.ts";
import { readIdentity } from "./archive-meta.ts";
import { isKlioError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";

export interface Compressor {
  /** Something new may be waiting. */
  wake(): void;
  /** Finishes the segment in hand and the queue, then resolves. */
  drain(): Promise<void>;
}

export async function compressSegmentFile(dir: string, name: string, cluster: ClusterOfSegment): Promise<void> {
  const rawPath = path.join(dir, name);
  const id: SegmentIdentity = { name, cluster, what: `raw WAL segment ${name}` };
  const checksum = await readChecksumFile(rawPath + CHECKSUM_SUFFIX, id.what);
  const raw = await readFile(rawPath);
  if (raw.length !== cluster.walSegmentSize) throw corruptSegment(id.what, `it has ${raw.length} bytes, not ${cluster.walSegmentSize}`);
  checkSegmentStart(raw, id, false);
  if (checksum && crc32(raw) !== checksum.crc32) throw corruptSegment(id.what, "checksum mismatch (CRC-32)");
  await writeFileDurable(rawPath + STORED_SUFFIX, await encodeStoredSegment(raw));
  // Only now is the raw copy redundant; a crash before these unlinks leaves both, and the
  // next pass removes the raw one (then its checksum file) again.
  await unlink(rawPath);
  await unlink(rawPath + CHECKSUM_SUFFIX).catch(() => {});
  await fsyncDir(dir);
}

/**
 * `deferWhile()`: while it answers true (the receiver is catching up on a backlog), the
 * compressor waits: CPU goes to making WAL durable first; raw segments are servable meanwhile.
 */
export function startCompressor(dir: string, log: Logger, deferWhile: () => boolean = () => false): Compressor {
  let running: Promise<void> | undefined;
  let again = false;
  /** Raw segments found damaged: reported once, left as they are for an operator. */
  const damaged = new Set<string>();

  async function pass(): Promise<void> {
    do {
      again = false;
      // The cluster's identity is written when the receiver first connects: no segment before.
      const cluster = await readIdentity(dir);
      if (!cluster) return;
      const names = new Set(await readdir(dir));
      for (const name of [...names].sort()) {
        if (name.endsWith(CHECKSUM_SUFFIX)) {
          // Left by a crash after the segment was stored: only its raw form needed it.
          const segment = name.slice(0, -CHECKSUM_SUFFIX.length);
          if (names.has(segment + STORED_SUFFIX) && !names.has(segment)) await unlink(path.join(dir, name)).catch(() => {});
          continue;
        }
        if (!isSegmentName(name) || damaged.has(name)) continue;
        if (names.has(name + STORED_SUFFIX)) {
          await unlink(path.join(dir, name));
          await unlink(path.join(dir, name + CHECKSUM_SUFFIX)).catch(() => {});
          continue;
        }
        while (deferWhile()) await new Promise((r) => setTimeout(r, 250));
        try {
          await compressSegmentFile(dir, name, cluster);
        } catch (e) {
          if (isKlioError(e) && e.code === "corrupt-wal") {
            damaged.add(name);
            log.error("wal.damaged", { segment: name, error: e.message });
            await noteDamage(dir, name, e.message);
            continue;
          }
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
