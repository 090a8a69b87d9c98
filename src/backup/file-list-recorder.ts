// A backup's file list, written as the chunks' ids come back from the repository's writer.
// The writer hashes chunks on worker threads and hands each id back later, in order; every
// record of the list therefore goes through the writer too (after(), or a chunk's callback),
// so that a chunk's record lands between the records written before and after it. Both ways
// a file enters a backup use it: the tar loop of backup-run.ts (chunks of the file's bytes)
// and synthetic-file.ts (pages sent by an incremental backup, chunks of the parent's).
import { chunkIdHex, type ChunkId } from "../repo/chunk-id.ts";
import { isAllZero } from "../repo/chunker.ts";
import { FileListWriter } from "../repo/file-list.ts";
import type { ChunkWriter } from "../repo/repository.ts";

export class FileListRecorder {
  /** The list's pieces (chunk ids in hex), in order; complete once the writer is flushed after finish(). */
  readonly pieces: string[] = [];
  /** Bytes recorded as zeros (all-zero chunks, not stored). */
  zeroBytes = 0;
  private readonly list: FileListWriter;
  /** One callback for every chunk: nothing is allocated per chunk on the hot path. */
  private readonly chunkListed: (id: ChunkId, length: number) => void;

  constructor(private readonly writer: ChunkWriter, pieceBytes?: number) {
    this.list = new FileListWriter((piece) => writer.add(piece, (id) => void this.pieces.push(chunkIdHex(id))), pieceBytes);
    this.chunkListed = (id, length) => this.list.chunk(length, id);
  }

  /** Runs `f` on the list once every chunk stored before has its record. */
  record(f: (list: FileListWriter) => void): void {
    this.writer.after(() => f(this.list));
  }

  /** Stores the open file's next chunk; an all-zero one (data null, as the chunker gives it) is recorded as zeros. */
  store(c: { length: number; data: Uint8Array | null }): void {
    if (c.data === null) this.zeros(c.length);
    else this.writer.add(c.data, this.chunkListed);
  }

  /** Stores one page of the open file as the chunker would have cut it (all zeros: not stored). */
  storePage(page: Uint8Array): void {
    this.store({ length: page.length, data: isAllZero(page) ? null : page });
  }

  /** Records `length` bytes of zeros of the open file. */
  zeros(length: number): void {
    this.zeroBytes += length;
    this.record((l) => l.zeros(length));
  }

  /** Resolves once the writer can take more (call after each buffer of input). */
  ready(): Promise<void> {
    return this.writer.ready();
  }

  /** Ends the list once every record is in; returns its entries. Flush the writer after it for the last piece's id. */
  async finish(): Promise<number> {
    await this.writer.drain();
    return this.list.finish();
  }
}
