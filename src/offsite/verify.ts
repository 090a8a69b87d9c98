// `klio offsite verify`: is the bucket's copy the local repository, byte for byte? Every
// object that goes offsite is compared by size and by checksum (S3's ETag: the MD5 of the
// object, or of its parts' MD5s for a multipart upload, recomputed here from the local file).
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import path from "node:path";
import { FsStorage } from "../repo/fs-storage.ts";
import { multipartPartSize, type S3Storage } from "../repo/s3-storage.ts";
import { offsiteKind } from "./sync.ts";

export interface VerifyProblem {
  key: string;
  problem: "missing" | "size" | "checksum";
  detail: string;
}

export interface OffsiteVerifyResult {
  remote: string;
  checked: number;
  bytes: number;
  problems: VerifyProblem[];
  /** In the bucket, not here (the next sync removes those it may). */
  extra: string[];
}

const READ = 4 * 1024 * 1024;

/** The ETag S3 gives a file uploaded whole (parts null), or in `parts` parts of the client's part size. */
async function etagOf(file: string, size: number, parts: number | null): Promise<string> {
  const fh = await open(file, "r");
  try {
    const buf = new Uint8Array(READ);
    const partSize = parts === null || parts === 1 ? Math.max(size, 1) : multipartPartSize(size);
    const partHashes: Buffer[] = [];
    let part = createHash("md5");
    let inPart = 0;
    for (let at = 0; at < size; ) {
      const want = Math.min(READ, size - at, partSize - inPart);
      const { bytesRead } = await fh.read(buf, 0, want, at);
      if (bytesRead === 0) break;
      part.update(buf.subarray(0, bytesRead));
      at += bytesRead;
      inPart += bytesRead;
      if (inPart === partSize) {
        partHashes.push(part.digest());
        part = createHash("md5");
        inPart = 0;
      }
    }
    if (inPart > 0 || partHashes.length === 0) partHashes.push(part.digest());
    if (parts === null) return partHashes[0]!.toString("hex");
    return `${createHash("md5").update(Buffer.concat(partHashes)).digest("hex")}-${partHashes.length}`;
  } finally {
    await fh.close();
  }
}

export async function verifyOffsite(repoDir: string, remote: S3Storage, onProgress?: (checked: number) => void): Promise<OffsiteVerifyResult> {
  const localStorage = new FsStorage(repoDir);
  try {
    const local = (await localStorage.list("")).filter((e) => offsiteKind(e.key) !== null);
    const there = new Map((await remote.list("")).map((e) => [e.key, e]));
    const result: OffsiteVerifyResult = { remote: remote.description, checked: 0, bytes: 0, problems: [], extra: [] };
    for (const e of local) {
      const r = there.get(e.key);
      if (!r) result.problems.push({ key: e.key, problem: "missing", detail: "not in the bucket" });
      else if (r.size !== e.size) result.problems.push({ key: e.key, problem: "size", detail: `${r.size} bytes in the bucket, ${e.size} here` });
      else if (r.etag !== undefined) {
        const parts = /-(\d+)$/.exec(r.etag);
        const mine = await etagOf(path.join(repoDir, ...e.key.split("/")), e.size, parts ? Number(parts[1]) : null).catch(() => null);
        // A file that changed or went meanwhile (a partial segment) is the next sync's business.
        if (mine !== null && mine !== r.etag && !e.key.endsWith(".partial")) result.problems.push({ key: e.key, problem: "checksum", detail: `ETag ${r.etag} in the bucket, ${mine} here` });
      }
      result.checked++;
      result.bytes += e.size;
      if (result.checked % 100 === 0) onProgress?.(result.checked);
    }
    const localKeys = new Set(local.map((e) => e.key));
    result.extra = [...there.keys()].filter((k) => !localKeys.has(k));
    return result;
  } finally {
    await localStorage.close();
  }
}
