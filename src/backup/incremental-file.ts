// The `INCREMENTAL.<relfile>` files of an incremental BASE_BACKUP (PostgreSQL 17+), read as
// typed events with memory bounded by the segment size, whatever the file's size.
//
// The format, as basebackup.c's sendFile() writes it (integers in the server's byte order):
//
//   magic                    uint32  0xd3ae1f0d
//   block count              uint32  n ≤ RELSEG_SIZE
//   truncation block length  uint32  ≤ RELSEG_SIZE: the relation segment's length in blocks
//   block numbers            n × uint32, relative to the segment, ascending
//   padding                  zeros up to a multiple of BLCKSZ, only when n > 0
//   block images             n × BLCKSZ, in the order of the block numbers
//
// The segment it stands for is `truncation block length` blocks long: the blocks listed come
// from this file, the others from the prior backup (zeros past the prior backup's file).
//
// pg_combinebackup (reconstruct.c) checks the magic and that the count and the truncation
// length do not exceed RELSEG_SIZE. This reader checks those, and also what the server
// always writes and pg_combinebackup takes on trust: block numbers strictly ascending and
// below the truncation length (GetFileBackupMethod takes them from the file's current
// blocks and never sets the length below the file's size), zero padding, and exactly the
// bytes the header promises. Anything else is one KlioError naming the file.
import { KlioError } from "../util/errors.ts";
import { ByteSource } from "./byte-source.ts";
import { isNonTempRelationFile, PAGE_CHUNK as BLCKSZ } from "./file-kind.ts";

export const INCREMENTAL_MAGIC = 0xd3ae1f0d;
/** Blocks per relation segment (1 GB of 8 KB blocks), as every distribution builds PostgreSQL. */
export const RELSEG_SIZE = 131072;
const PREFIX = "INCREMENTAL.";
/** Magic, block count, truncation block length. */
const FIXED_HEADER = 12;

export type IncrementalFileEvent =
  | {
      kind: "header";
      /** The relation file this one stands for: the entry's path without "INCREMENTAL.". */
      relationPath: string;
      /** Segment-relative block numbers of the blocks that follow, ascending, each < truncationBlockLength. */
      blockNumbers: Uint32Array;
      /** Length of the segment in blocks; what is not listed comes from the prior backup. */
      truncationBlockLength: number;
      /** The server's byte order, in which the header is written. */
      littleEndian: boolean;
    }
  /** One block image (BLCKSZ bytes); valid until the next event is requested. */
  | { kind: "block"; blockNumber: number; page: Uint8Array };

/**
 * The relation file an `INCREMENTAL.` tar entry stands for ("base/5/INCREMENTAL.16384.1" →
 * "base/5/16384.1"), or null when `entryPath` is not one. PostgreSQL sends only relation files
 * of non-temporary relations incrementally (no t<backend>_ files: temporary relations are left
 * out of backups), in base.tar under base/<db>/ and global/, and in a tablespace's archive
 * under PG_<ver>_<catver>/<db>/ (pg_tblspc/<spc>/PG_…/<db>/ is taken too: the manifest's
 * form). A file a user named "INCREMENTAL.<something>" elsewhere is an ordinary file.
 */
export function incrementalRelationPath(entryPath: string): string | null {
  const slash = entryPath.lastIndexOf("/");
  if (!entryPath.startsWith(PREFIX, slash + 1)) return null;
  const relationPath = entryPath.slice(0, slash + 1) + entryPath.slice(slash + 1 + PREFIX.length);
  return isNonTempRelationFile(relationPath) ? relationPath : null;
}

/** The name the server sends a relation file under when it sends it incrementally ("base/5/16384" → "base/5/INCREMENTAL.16384"). */
export function incrementalName(relationPath: string): string {
  return relationPath.replace(/[^/]*$/, (base) => `${PREFIX}${base}`);
}

/** Bytes before the first block image: the header, padded to a block when there are blocks. */
function headerBytes(blockCount: number): number {
  const unpadded = FIXED_HEADER + 4 * blockCount;
  return blockCount === 0 ? unpadded : Math.ceil(unpadded / BLCKSZ) * BLCKSZ;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/**
 * The bytes before the block images, as the server writes them: what `backup verify` puts
 * before the stored pages to rebuild the file the server sent and check its manifest checksum.
 */
export function encodeIncrementalHeader(blockNumbers: ArrayLike<number>, truncationBlockLength: number, littleEndian: boolean): Uint8Array {
  const out = new Uint8Array(headerBytes(blockNumbers.length));
  const view = new DataView(out.buffer);
  view.setUint32(0, INCREMENTAL_MAGIC, littleEndian);
  view.setUint32(4, blockNumbers.length, littleEndian);
  view.setUint32(8, truncationBlockLength, littleEndian);
  for (let i = 0; i < blockNumbers.length; i++) view.setUint32(FIXED_HEADER + 4 * i, blockNumbers[i]!, littleEndian);
  return out;
}

/**
 * Reads the content of the tar entry `entryPath` (an `INCREMENTAL.` name, see
 * incrementalRelationPath) from `content`, split anyhow: yields the header, then each block.
 * A damaged file throws KlioError("damaged-incremental-file") before the event it would spoil;
 * nothing is yielded from a header that does not check out.
 */
export async function* readIncrementalFile(entryPath: string, content: AsyncIterable<Uint8Array>): AsyncGenerator<IncrementalFileEvent> {
  const relationPath = incrementalRelationPath(entryPath);
  if (relationPath === null) throw new KlioError("usage", `${JSON.stringify(entryPath)} is not the name of an INCREMENTAL file`);
  const damaged = (what: string) => new KlioError("damaged-incremental-file", `incremental file ${JSON.stringify(entryPath)} is damaged: ${what}`);
  const src = new ByteSource(content[Symbol.asyncIterator]());
  /** Bytes the file must have; known once the block count is. */
  let expected = FIXED_HEADER;
  const read = async (n: number, into: Uint8Array, what: string): Promise<Uint8Array> => {
    if (n === 0) return into; // an empty list or padding: nothing to wait for
    const at = src.offset;
    const { bytes, got } = await src.exact(n, into);
    if (bytes === null) throw damaged(`it ends inside ${what}, after ${at + got} of ${expected} bytes`);
    return bytes;
  };

  try {
    const fixed = await read(FIXED_HEADER, new Uint8Array(FIXED_HEADER), "the header");
    const view = new DataView(fixed.buffer, fixed.byteOffset, fixed.byteLength);
    // The server writes its own byte order; the magic says which.
    const magic = view.getUint32(0, true);
    const little = magic === INCREMENTAL_MAGIC;
    if (!little && view.getUint32(0, false) !== INCREMENTAL_MAGIC) throw damaged(`bad magic number ${hex(magic)} (expected ${hex(INCREMENTAL_MAGIC)})`);
    const blockCount = view.getUint32(4, little);
    const truncationBlockLength = view.getUint32(8, little);
    if (blockCount > RELSEG_SIZE) throw damaged(`block count ${blockCount} exceeds the segment size of ${RELSEG_SIZE} blocks`);
    if (truncationBlockLength > RELSEG_SIZE) throw damaged(`truncation block length ${truncationBlockLength} exceeds the segment size of ${RELSEG_SIZE} blocks`);
    const header = headerBytes(blockCount);
    expected = header + blockCount * BLCKSZ;

    const listBytes = await read(4 * blockCount, new Uint8Array(4 * blockCount), "the block numbers");
    const list = new DataView(listBytes.buffer, listBytes.byteOffset, listBytes.byteLength);
    const blockNumbers = new Uint32Array(blockCount);
    for (let i = 0; i < blockCount; i++) {
      const b = list.getUint32(4 * i, little);
      if (i > 0 && b <= blockNumbers[i - 1]!) throw damaged(`block number ${b} follows ${blockNumbers[i - 1]} (they must ascend, each once)`);
      if (b >= truncationBlockLength) throw damaged(`block number ${b} lies beyond the truncation block length ${truncationBlockLength}`);
      blockNumbers[i] = b;
    }

    const pad = header - FIXED_HEADER - 4 * blockCount;
    const padding = await read(pad, new Uint8Array(pad), "the padding");
    if (padding.some((x) => x !== 0)) throw damaged(`the padding after the block numbers is not zeros`);

    yield { kind: "header", relationPath, blockNumbers, truncationBlockLength, littleEndian: little };

    const gathered = new Uint8Array(BLCKSZ); // a page that straddles two buffers
    for (const blockNumber of blockNumbers) {
      yield { kind: "block", blockNumber, page: await read(BLCKSZ, gathered, `block ${blockNumber}`) };
    }
    if ((await src.some(1)) !== null) throw damaged(`it has bytes after its last block (it should be ${expected} bytes)`);
  } finally {
    await src.close();
  }
}
