// A relation file an incremental BASE_BACKUP sent as INCREMENTAL.<file>, stored as the whole
// file: a synthetic full. Its file-list entry names every page — the pages the server sent,
// stored as new chunks; the others, the parent backup's chunks of them, named again without
// being read or stored — so the backup restores alone with the ordinary restore, and deleting
// the parent never breaks it (the chunks stay while a backup names them).
//
// The file is what pg_combinebackup would rebuild from the parent and the incremental entry
// (src/bin/pg_combinebackup/reconstruct.c): truncationBlockLength pages; page b is the page
// sent for b, else the parent's page b, else (past the parent's end) zeros. The I record keeps
// the header, so that `backup verify` can rebuild the bytes the server sent and check them
// against its backup_manifest.
import { KlioError } from "../util/errors.ts";
import { blockNumbersProblem, type EntryHead } from "../repo/file-list.ts";
import { PAGE_CHUNK } from "./file-kind.ts";
import type { FileListRecorder } from "./file-list-recorder.ts";
import type { ParentFileLayout } from "./parent-file-list.ts";
import { manifestPath } from "./backup-manifest.ts";
import { incrementalName } from "./incremental-file.ts";

/** What an INCREMENTAL.<file> header says: the file's length in pages, and the pages sent (ascending). */
export interface IncrementalHeader {
  truncationBlockLength: number;
  blockNumbers: ArrayLike<number>;
}

export interface SyntheticFile {
  /** The relation file (its name without INCREMENTAL.), its mode and mtime. */
  head: EntryHead;
  header: IncrementalHeader;
  /** The pages sent, in the order of header.blockNumbers, 8192 bytes each. */
  pages: AsyncIterable<Uint8Array>;
  /** The file in the parent backup (ParentFileList.layoutOf); undefined when the parent has none. */
  parent: ParentFileLayout | undefined;
  /** The parent backup's id, for messages. */
  parentId: string;
}

export interface SyntheticFileStats {
  size: number;
  /** Pages the server sent (stored as chunks, or as zeros when all zero). */
  sent: number;
  /** Pages named from the parent (its chunks or its zeros). */
  fromParent: number;
  /** Pages past the parent's end that the server did not send: zeros. */
  zeroFilled: number;
}

/** Largest truncation length a header may give (a block number is a u32). */
const MAX_BLOCKS = 0xffffffff;

/**
 * Records the file into the backup's list through `list`, in order with its chunks: F, I,
 * every page, K when known, E. Refuses (KlioError, before recording anything) a header that
 * is not ascending page numbers below its length, and a parent that lacks the file or does
 * not hold it one page per chunk; refuses pages of the wrong length or number as they come.
 */
export async function recordSyntheticFile(list: FileListRecorder, f: SyntheticFile): Promise<SyntheticFileStats> {
  const name = displayName(f.head);
  const sentAs = incrementalName(name);
  const { truncationBlockLength: length } = f.header;
  if (!Number.isInteger(length) || length < 0 || length > MAX_BLOCKS)
    throw new KlioError("damaged-incremental", `${sentAs}: truncation block length ${length} is not a block count`);
  const problem = blockNumbersProblem(length, f.header.blockNumbers);
  if (problem !== null) throw new KlioError("damaged-incremental", `${sentAs}: its block numbers ${problem}`);
  const parent = f.parent;
  if (parent === undefined)
    throw new KlioError("incremental-parent", `the server sent ${name} as an incremental file, but the parent backup ${f.parentId} has no ${name}: it cannot be rebuilt (take a full backup)`);
  if (parent.unaligned !== null)
    throw new KlioError("incremental-parent", `the server sent ${name} as an incremental file, but the parent backup ${f.parentId} does not hold it one page per chunk (${parent.unaligned}): take a full backup`);

  // A copy: the records are written later (as the writer catches up) and must not see changes.
  const sent = Uint32Array.from(f.header.blockNumbers);
  const stats: SyntheticFileStats = { size: length * PAGE_CHUNK, sent: 0, fromParent: 0, zeroFilled: 0 };
  list.record((l) => {
    l.beginFile({ ...f.head, size: stats.size });
    l.incremental(length, sent);
  });

  /** Pages [from, to), which the server did not send: the parent's, or zeros past its end. */
  const unsent = (from: number, to: number): void => {
    const inParent = Math.min(to, parent.blocks);
    for (let b = from; b < inParent; ) {
      const zero = parent.isZeroPage(b);
      let end = b + 1;
      while (end < inParent && parent.isZeroPage(end) === zero) end++;
      if (zero) list.zeros((end - b) * PAGE_CHUNK);
      else {
        const start = b;
        list.record((l) => {
          for (let p = start; p < end; p++) l.chunk(PAGE_CHUNK, parent.chunkIdAt(p));
        });
      }
      stats.fromParent += end - b;
      b = end;
    }
    const past = Math.max(from, inParent);
    if (past < to) {
      list.zeros((to - past) * PAGE_CHUNK);
      stats.zeroFilled += to - past;
    }
  };

  const pages = f.pages[Symbol.asyncIterator]();
  let finished = false;
  try {
    let next = 0;
    for (const b of sent) {
      unsent(next, b);
      const page = await pages.next();
      if (page.done) throw new KlioError("damaged-incremental", `${sentAs} ends after ${stats.sent} of the ${sent.length} pages its header lists`);
      if (page.value.length !== PAGE_CHUNK)
        throw new KlioError("damaged-incremental", `${sentAs}: the page of block ${b} has ${page.value.length} bytes, not ${PAGE_CHUNK}`);
      list.storePage(page.value);
      stats.sent++;
      await list.ready();
      next = b + 1;
    }
    unsent(next, length);
    const more = await pages.next();
    finished = more.done === true;
    if (!finished) throw new KlioError("damaged-incremental", `${sentAs} holds more pages than the ${sent.length} its header lists`);
  } finally {
    if (!finished) await pages.return?.();
  }

  // Unchanged and as long as in the parent: the same bytes, so the parent's checksum holds.
  const crc32c = sent.length === 0 && length === parent.blocks ? parent.crc32c : null;
  list.record((l) => {
    if (crc32c !== null) l.fileChecksum(crc32c);
    l.endFile();
  });
  return stats;
}

function displayName(h: EntryHead): string {
  return manifestPath(h.root, h.path);
}
