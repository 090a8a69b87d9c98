// `klio backup verify`: re-reads every file of a backup from the repository and checks it
// against PostgreSQL's own backup_manifest (sizes and checksums), the way pg_verifybackup
// checks a backup directory. Problems are reported as values; nothing here throws on bad data.
//
// A file of an incremental backup (a synthetic full, see synthetic-file.ts) is checked twice:
// the bytes PostgreSQL sent — the INCREMENTAL.<file> rebuilt from the header kept in the
// file list and the stored pages at the blocks it lists — against the manifest's entry for
// INCREMENTAL.<file>; and the whole file against the CRC-32C its list carries when it is
// unchanged since the parent (the parent's own checksum). Every other page is a chunk named
// by the hash of bytes PostgreSQL sent to an earlier backup, which reading it checks.
import { createHash } from "node:crypto";
import { manifestPath, parseBackupManifest, type ManifestFile } from "./backup-manifest.ts";
import { readFileList } from "../repo/file-list.ts";
import type { Repository } from "../repo/repository.ts";
import { chunkIdHex } from "../repo/chunk-id.ts";
import { crc32cFinal, crc32cInit, crc32cManifestHex, crc32cUpdate } from "./crc32c.ts";
import { encodeIncrementalHeader, incrementalName } from "./incremental-file.ts";
import { PAGE_CHUNK } from "./file-kind.ts";
import { readBackupManifest, readChunks, type Snapshot } from "./snapshot.ts";

export interface VerifyProblem {
  file?: string;
  message: string;
}

export interface VerifyResult {
  files: number;
  bytes: number;
  problems: VerifyProblem[];
}

const ZERO_BLOCK = new Uint8Array(64 * 1024);

/** A file being checked: its running checksum and size against its manifest line. */
interface Checking {
  name: string;
  expect: ManifestFile | undefined;
  crc: number;
  sha: ReturnType<typeof createHash> | null;
  size: number;
  bad: boolean;
  /** For a file rebuilt from an INCREMENTAL. entry: the entry as the server sent it, being rebuilt. */
  sent: SentFile | null;
  /** The whole file's CRC-32C from its file list ('K'), checked at its end. */
  wholeCrc32c: number | null;
}

/** The INCREMENTAL.<file> of a synthetic file, rebuilt as the file's pages go by. */
interface SentFile {
  name: string;
  expect: ManifestFile | undefined;
  blocks: Uint32Array;
  /** Index in `blocks` of the next block sent. */
  next: number;
  crc: number;
  size: number;
}

/** The checks, fed the backup's files in file-list order; `done()` gives the result. */
class Checker {
  files = 0;
  bytes = 0;
  readonly problems: VerifyProblem[];
  private readonly seen = new Set<string>();
  private current: Checking | null = null;

  constructor(
    private readonly manifest: Map<string, ManifestFile>, problems: VerifyProblem[], private readonly onProgress?: (bytes: number) => void,
    private readonly littleEndian = true,
  ) {
    this.problems = [...problems];
  }

  startFile(root: number, path: string): void {
    const name = manifestPath(root, path);
    const expect = this.manifest.get(name);
    this.files++;
    this.current = { name, expect, crc: crc32cInit, sha: expect?.algorithm === "SHA256" ? createHash("sha256") : null, size: 0, bad: false, sent: null, wholeCrc32c: null };
  }

  /** The open file was rebuilt from INCREMENTAL.<file>: `blocks` of its `truncationBlockLength` pages were sent. */
  incremental(truncationBlockLength: number, blocks: Uint32Array): void {
    const c = this.current!;
    const name = incrementalName(c.name);
    const header = encodeIncrementalHeader(blocks, truncationBlockLength, this.littleEndian);
    // The whole file has no manifest entry of its own: it is checked by its pages and its 'K'.
    c.expect = undefined;
    c.sha = null;
    c.sent = { name, expect: this.manifest.get(name), blocks, next: 0, crc: crc32cUpdate(crc32cInit, header), size: header.length };
  }

  fileChecksum(crc32c: number): void {
    this.current!.wholeCrc32c = crc32c;
  }

  get fileIsBad(): boolean {
    return this.current!.bad;
  }

  feed(data: Uint8Array): void {
    const c = this.current!;
    if (c.bad) return;
    if (c.expect?.algorithm === "CRC32C" || c.sent) c.crc = crc32cUpdate(c.crc, data);
    else c.sha?.update(data);
    if (c.sent) feedSent(c.sent, data, c.size);
    c.size += data.length;
    this.bytes += data.length;
  }

  zeros(length: number): void {
    for (let left = length; left > 0; left -= ZERO_BLOCK.length) this.feed(ZERO_BLOCK.subarray(0, Math.min(left, ZERO_BLOCK.length)));
  }

  unreadable(id: Uint8Array, e: unknown): void {
    const c = this.current!;
    c.bad = true;
    this.problems.push({ file: c.name, message: `chunk ${chunkIdHex(id)} cannot be read: ${(e as Error).message}` });
  }

  endFile(): void {
    const c = this.current!;
    this.current = null;
    this.onProgress?.(this.bytes);
    if (c.bad) return;
    if (c.sent) {
      this.endSynthetic(c, c.sent);
      return;
    }
    if (!c.expect) {
      if (c.name !== "backup_manifest") this.problems.push({ file: c.name, message: "is in the backup but not in backup_manifest" });
      return;
    }
    this.seen.add(c.name);
    if (c.size !== c.expect.size) {
      this.problems.push({ file: c.name, message: `has ${c.size} bytes, backup_manifest says ${c.expect.size}` });
      return;
    }
    const got = c.expect.algorithm === "CRC32C" ? crc32cManifestHex(crc32cFinal(c.crc)) : c.sha ? c.sha.digest("hex") : undefined;
    if (c.expect.checksum !== undefined && got !== undefined && got !== c.expect.checksum.toLowerCase())
      this.problems.push({ file: c.name, message: `checksum ${c.expect.algorithm} ${got} does not match backup_manifest's ${c.expect.checksum}` });
  }

  private endSynthetic(c: Checking, sent: SentFile): void {
    if (c.wholeCrc32c !== null && crc32cFinal(c.crc) !== c.wholeCrc32c)
      this.problems.push({ file: c.name, message: `its CRC-32C ${crc32cManifestHex(crc32cFinal(c.crc))} does not match ${crc32cManifestHex(c.wholeCrc32c)}, the checksum of the unchanged file in the backup it was taken against` });
    if (!sent.expect) {
      this.problems.push({ file: sent.name, message: "was sent by the server (the file list says so) but is not in backup_manifest" });
      return;
    }
    this.seen.add(sent.name);
    if (sent.next !== sent.blocks.length || sent.size !== sent.expect.size) {
      this.problems.push({ file: sent.name, message: `rebuilt from the stored pages it has ${sent.size} bytes, backup_manifest says ${sent.expect.size}` });
      return;
    }
    const got = crc32cManifestHex(crc32cFinal(sent.crc));
    if (sent.expect.algorithm === "CRC32C" && sent.expect.checksum !== undefined && got !== sent.expect.checksum.toLowerCase())
      this.problems.push({ file: sent.name, message: `rebuilt from the stored pages its checksum CRC32C ${got} does not match backup_manifest's ${sent.expect.checksum}` });
  }

  done(): VerifyResult {
    for (const name of this.manifest.keys()) if (!this.seen.has(name) && !this.problems.some((p) => p.file === name)) this.problems.push({ file: name, message: "is in backup_manifest but not in the backup" });
    return { files: this.files, bytes: this.bytes, problems: this.problems };
  }
}

/** Adds the bytes of `data` (at `offset` of the file) that lie in pages the server sent. */
function feedSent(sent: SentFile, data: Uint8Array, offset: number): void {
  for (let at = 0; at < data.length && sent.next < sent.blocks.length; ) {
    const pos = offset + at;
    const block = Math.floor(pos / PAGE_CHUNK);
    const pageEnd = Math.min(data.length, at + (block + 1) * PAGE_CHUNK - pos);
    while (sent.next < sent.blocks.length && sent.blocks[sent.next]! < block) sent.next++;
    if (sent.blocks[sent.next] === block) {
      const part = data.subarray(at, pageEnd);
      sent.crc = crc32cUpdate(sent.crc, part);
      sent.size += part.length;
      if ((pos + part.length) % PAGE_CHUNK === 0) sent.next++;
    }
    at = pageEnd;
  }
}

/**
 * Reads every file of the backup and checks it. The chunks are read a frame at a time,
 * several frames at once, decoded and verified on worker threads (the repository's reader,
 * as a restore reads them). A reader stops at the first chunk it cannot read, so when
 * anything fails the backup is read again chunk by chunk, which names every damaged file.
 */
export async function verifyBackup(repo: Repository, s: Snapshot, onProgress?: (bytes: number) => void): Promise<VerifyResult> {
  const problems: VerifyProblem[] = [];
  let manifest: Map<string, ManifestFile>;
  try {
    manifest = await readManifest(repo, s, problems);
  } catch (e) {
    return { files: 0, bytes: 0, problems: [{ message: `backup_manifest cannot be read: ${(e as Error).message}` }] };
  }
  const littleEndian = s.incrementalByteOrder !== "big";
  const fast = new Checker(manifest, problems, onProgress, littleEndian);
  const reader = repo.reader();
  try {
    for await (const ev of readFileList(readChunks(repo, s.fileList.pieces))) {
      if (ev.kind === "file") reader.after(() => fast.startFile(ev.root, ev.path));
      else if (ev.kind === "chunk") {
        await reader.read(ev.id, ev.length, (data) => fast.feed(data));
        await reader.ready();
      } else if (ev.kind === "zeros") reader.after(() => fast.zeros(ev.length));
      else if (ev.kind === "incremental") reader.after(() => fast.incremental(ev.truncationBlockLength, ev.blockNumbers));
      else if (ev.kind === "file-checksum") reader.after(() => fast.fileChecksum(ev.crc32c));
      else if (ev.kind === "end-file") reader.after(() => fast.endFile());
    }
    await reader.drain();
    return fast.done();
  } catch {
    // Damage somewhere: the careful pass below says where.
  } finally {
    await reader.close().catch(() => {});
  }
  return await verifyChunkByChunk(repo, s, new Checker(manifest, problems, onProgress, littleEndian));
}

async function verifyChunkByChunk(repo: Repository, s: Snapshot, check: Checker): Promise<VerifyResult> {
  try {
    for await (const ev of readFileList(readChunks(repo, s.fileList.pieces))) {
      if (ev.kind === "file") check.startFile(ev.root, ev.path);
      else if (ev.kind === "chunk") {
        if (check.fileIsBad) continue;
        try {
          check.feed(await repo.readChunk(ev.id));
        } catch (e) {
          check.unreadable(ev.id, e);
        }
      } else if (ev.kind === "zeros") check.zeros(ev.length);
      else if (ev.kind === "incremental") check.incremental(ev.truncationBlockLength, ev.blockNumbers);
      else if (ev.kind === "file-checksum") check.fileChecksum(ev.crc32c);
      else if (ev.kind === "end-file") check.endFile();
    }
  } catch (e) {
    check.problems.push({ message: `the file list cannot be read: ${(e as Error).message}` });
  }
  return check.done();
}

async function readManifest(repo: Repository, s: Snapshot, problems: VerifyProblem[]): Promise<Map<string, ManifestFile>> {
  const m = parseBackupManifest(await readBackupManifest(repo, s));
  if (m.checksumProblem !== null) problems.push({ file: "backup_manifest", message: m.checksumProblem });
  return m.files;
}
