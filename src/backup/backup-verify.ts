// `klio backup verify`: re-reads every file of a backup from the repository and checks it
// against PostgreSQL's own backup_manifest (sizes and checksums), the way pg_verifybackup
// checks a backup directory. Problems are reported as values; nothing here throws on bad data.
import { createHash } from "node:crypto";
import { readFileList } from "../repo/file-list.ts";
import type { Repository } from "../repo/repository.ts";
import { chunkIdHex } from "../repo/chunk-id.ts";
import { crc32cFinal, crc32cInit, crc32cManifestHex, crc32cUpdate } from "./crc32c.ts";
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

interface ManifestFile {
  size: number;
  algorithm: string;
  checksum: string | undefined;
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
}

/** The checks, fed the backup's files in file-list order; `done()` gives the result. */
class Checker {
  files = 0;
  bytes = 0;
  readonly problems: VerifyProblem[];
  private readonly seen = new Set<string>();
  private current: Checking | null = null;

  constructor(private readonly manifest: Map<string, ManifestFile>, problems: VerifyProblem[], private readonly onProgress?: (bytes: number) => void) {
    this.problems = [...problems];
  }

  startFile(root: number, path: string): void {
    const name = root === 0 ? path : `pg_tblspc/${root}/${path}`;
    const expect = this.manifest.get(name);
    this.files++;
    this.current = { name, expect, crc: crc32cInit, sha: expect?.algorithm === "SHA256" ? createHash("sha256") : null, size: 0, bad: false };
  }

  get fileIsBad(): boolean {
    return this.current!.bad;
  }

  feed(data: Uint8Array): void {
    const c = this.current!;
    if (c.bad) return;
    if (c.expect?.algorithm === "CRC32C") c.crc = crc32cUpdate(c.crc, data);
    else c.sha?.update(data);
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

  done(): VerifyResult {
    for (const name of this.manifest.keys()) if (!this.seen.has(name) && !this.problems.some((p) => p.file === name)) this.problems.push({ file: name, message: "is in backup_manifest but not in the backup" });
    return { files: this.files, bytes: this.bytes, problems: this.problems };
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
  const fast = new Checker(manifest, problems, onProgress);
  const reader = repo.reader();
  try {
    for await (const ev of readFileList(readChunks(repo, s.fileList.pieces))) {
      if (ev.kind === "file") reader.after(() => fast.startFile(ev.root, ev.path));
      else if (ev.kind === "chunk") {
        await reader.read(ev.id, ev.length, (data) => fast.feed(data));
        await reader.ready();
      } else if (ev.kind === "zeros") reader.after(() => fast.zeros(ev.length));
      else if (ev.kind === "end-file") reader.after(() => fast.endFile());
    }
    await reader.drain();
    return fast.done();
  } catch {
    // Damage somewhere: the careful pass below says where.
  } finally {
    await reader.close().catch(() => {});
  }
  return await verifyChunkByChunk(repo, s, new Checker(manifest, problems, onProgress));
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
      else if (ev.kind === "end-file") check.endFile();
    }
  } catch (e) {
    check.problems.push({ message: `the file list cannot be read: ${(e as Error).message}` });
  }
  return check.done();
}

async function readManifest(repo: Repository, s: Snapshot, problems: VerifyProblem[]): Promise<Map<string, ManifestFile>> {
  const bytes = await readBackupManifest(repo, s);
  const text = new TextDecoder().decode(bytes);
  // The manifest's own checksum covers everything before its "Manifest-Checksum" line.
  const at = text.lastIndexOf('"Manifest-Checksum"');
  const m = /"Manifest-Checksum":\s*"([0-9a-f]{64})"/.exec(text.slice(at));
  if (at < 0 || !m) problems.push({ file: "backup_manifest", message: "has no Manifest-Checksum" });
  else if (createHash("sha256").update(bytes.subarray(0, new TextEncoder().encode(text.slice(0, at)).length)).digest("hex") !== m[1])
    problems.push({ file: "backup_manifest", message: "its Manifest-Checksum does not match its content" });
  const json = JSON.parse(text) as { Files?: { Path?: string; "Encoded-Path"?: string; Size: number; "Checksum-Algorithm"?: string; Checksum?: string }[] };
  const files = new Map<string, ManifestFile>();
  for (const f of json.Files ?? []) {
    const name = f.Path ?? new TextDecoder().decode(hexBytes(f["Encoded-Path"] ?? ""));
    files.set(name, { size: f.Size, algorithm: f["Checksum-Algorithm"] ?? "NONE", checksum: f.Checksum });
  }
  return files;
}

function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
