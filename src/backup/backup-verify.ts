// `klio backup verify`: re-reads every file of a backup from the repository and checks it
// against PostgreSQL's own backup_manifest (sizes and checksums), the way pg_verifybackup
// checks a backup directory. Problems are reported as values; nothing here throws on bad data.
import { createHash } from "node:crypto";
import { concatBytes } from "../util/bytes.ts";
import { readFileList } from "../repo/file-list.ts";
import type { Repository } from "../repo/repository.ts";
import { chunkIdHex } from "../repo/chunk-id.ts";
import { crc32cFinal, crc32cInit, crc32cManifestHex, crc32cUpdate } from "./crc32c.ts";
import { readChunks, type Snapshot } from "./snapshot.ts";

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

export async function verifyBackup(repo: Repository, s: Snapshot, onProgress?: (bytes: number) => void): Promise<VerifyResult> {
  const problems: VerifyProblem[] = [];
  let manifest: Map<string, ManifestFile>;
  try {
    manifest = await readManifest(repo, s, problems);
  } catch (e) {
    return { files: 0, bytes: 0, problems: [{ message: `backup_manifest cannot be read: ${(e as Error).message}` }] };
  }
  const seen = new Set<string>();
  let files = 0;
  let bytes = 0;
  let current: { name: string; expect: ManifestFile | undefined; crc: number; sha: ReturnType<typeof createHash> | null; size: number; bad: boolean } | null = null;

  const feed = (data: Uint8Array) => {
    const c = current!;
    if (c.expect?.algorithm === "CRC32C") c.crc = crc32cUpdate(c.crc, data);
    else c.sha?.update(data);
    c.size += data.length;
    bytes += data.length;
  };

  try {
    for await (const ev of readFileList(readChunks(repo, s.fileList.pieces))) {
      switch (ev.kind) {
        case "file": {
          const name = ev.root === 0 ? ev.path : `pg_tblspc/${ev.root}/${ev.path}`;
          const expect = manifest.get(name);
          files++;
          current = { name, expect, crc: crc32cInit, sha: expect?.algorithm === "SHA256" ? createHash("sha256") : null, size: 0, bad: false };
          break;
        }
        case "chunk": {
          const c = current!;
          if (c.bad) break;
          try {
            feed(await repo.readChunk(ev.id));
          } catch (e) {
            c.bad = true;
            problems.push({ file: c.name, message: `chunk ${chunkIdHex(ev.id)} cannot be read: ${(e as Error).message}` });
          }
          break;
        }
        case "zeros":
          for (let left = ev.length; left > 0; left -= ZERO_BLOCK.length) feed(ZERO_BLOCK.subarray(0, Math.min(left, ZERO_BLOCK.length)));
          break;
        case "end-file": {
          const c = current!;
          current = null;
          onProgress?.(bytes);
          if (c.bad) break;
          if (!c.expect) {
            if (c.name !== "backup_manifest") problems.push({ file: c.name, message: "is in the backup but not in backup_manifest" });
            break;
          }
          seen.add(c.name);
          if (c.size !== c.expect.size) {
            problems.push({ file: c.name, message: `has ${c.size} bytes, backup_manifest says ${c.expect.size}` });
            break;
          }
          const got = c.expect.algorithm === "CRC32C" ? crc32cManifestHex(crc32cFinal(c.crc)) : c.sha ? c.sha.digest("hex") : undefined;
          if (c.expect.checksum !== undefined && got !== undefined && got !== c.expect.checksum.toLowerCase())
            problems.push({ file: c.name, message: `checksum ${c.expect.algorithm} ${got} does not match backup_manifest's ${c.expect.checksum}` });
          break;
        }
      }
    }
  } catch (e) {
    problems.push({ message: `the file list cannot be read: ${(e as Error).message}` });
  }
  for (const name of manifest.keys()) if (!seen.has(name) && !problems.some((p) => p.file === name)) problems.push({ file: name, message: "is in backup_manifest but not in the backup" });
  return { files, bytes, problems };
}

async function readManifest(repo: Repository, s: Snapshot, problems: VerifyProblem[]): Promise<Map<string, ManifestFile>> {
  const parts: Uint8Array[] = [];
  for await (const p of readChunks(repo, s.backupManifest.chunks)) parts.push(p);
  const bytes = concatBytes(parts);
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
