// PostgreSQL's backup_manifest (src/backend/backup/backup_manifest.c), as klio reads it: the
// files with their sizes and checksums, and whether the manifest's own checksum holds.
import { createHash } from "node:crypto";

export interface ManifestFile {
  size: number;
  algorithm: string;
  checksum: string | undefined;
}

export interface BackupManifest {
  /** By path (pg_tblspc/<oid>/… for a tablespace's files; Encoded-Path decoded). */
  files: Map<string, ManifestFile>;
  /** Why the manifest's own checksum does not hold, or null when it does. */
  checksumProblem: string | null;
}

/** How backup_manifest names a file of the backup: tablespace files (root ≠ 0) under pg_tblspc/<oid>/. */
export function manifestPath(root: number, path: string): string {
  return root === 0 ? path : `pg_tblspc/${root}/${path}`;
}

/** Parses the manifest; throws on text that is not one (JSON). */
export function parseBackupManifest(bytes: Uint8Array): BackupManifest {
  const text = new TextDecoder().decode(bytes);
  // The manifest's own checksum covers everything before its "Manifest-Checksum" line.
  const at = text.lastIndexOf('"Manifest-Checksum"');
  const m = /"Manifest-Checksum":\s*"([0-9a-f]{64})"/.exec(text.slice(at));
  let checksumProblem: string | null = null;
  if (at < 0 || !m) checksumProblem = "has no Manifest-Checksum";
  else if (createHash("sha256").update(bytes.subarray(0, new TextEncoder().encode(text.slice(0, at)).length)).digest("hex") !== m[1])
    checksumProblem = "its Manifest-Checksum does not match its content";
  const json = JSON.parse(text) as { Files?: { Path?: string; "Encoded-Path"?: string; Size: number; "Checksum-Algorithm"?: string; Checksum?: string }[] };
  const files = new Map<string, ManifestFile>();
  for (const f of json.Files ?? []) {
    const name = f.Path ?? new TextDecoder().decode(hexBytes(f["Encoded-Path"] ?? ""));
    files.set(name, { size: f.Size, algorithm: f["Checksum-Algorithm"] ?? "NONE", checksum: f.Checksum });
  }
  return { files, checksumProblem };
}

/** The CRC-32C values of the files the manifest gives one for, by path. */
export function manifestCrc32cs(m: BackupManifest): Map<string, number> {
  const out = new Map<string, number>();
  for (const [name, f] of m.files) {
    if (f.algorithm !== "CRC32C" || f.checksum === undefined || !/^[0-9a-f]{8}$/i.test(f.checksum)) continue;
    // backup_manifest writes the value's four bytes little-endian first (crc32cManifestHex).
    out.set(name, Buffer.from(f.checksum, "hex").readUInt32LE(0));
  }
  return out;
}

function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
