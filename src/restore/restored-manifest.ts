// The backup_manifest that a restore of an incremental backup writes.
//
// PostgreSQL's manifest of an incremental backup lists `INCREMENTAL.<file>` entries: the size
// and checksum of the changed blocks it sent, not of the file. The restored directory holds
// the whole file (the synthetic full), so — as pg_combinebackup does — each such entry becomes
// the whole file's: its own path, its size and the CRC-32C of the bytes the restore wrote, and
// the manifest's own checksum is computed anew. Every other byte stays as PostgreSQL wrote
// it, so pg_verifybackup checks the restored directory as it would a full backup's.
//
// Its backup_label too says "INCREMENTAL FROM LSN/TLI", and PostgreSQL refuses to recover
// from such a label ("this is an incremental backup, not a data directory"): the restore
// drops those lines, as pg_combinebackup does, and the manifest describes the label written.
import { createHash } from "node:crypto";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import { crc32cManifestHex } from "../backup/crc32c.ts";

const INCREMENTAL_PREFIX = "INCREMENTAL.";
// One file of "Files", as PostgreSQL writes it (src/backend/backup/backup_manifest.c).
const FILE_LINE = /^\{ "Path": ("(?:[^"\\]|\\.)*"), "Size": \d+, "Last-Modified": ("[^"]*")(?:, "Checksum-Algorithm": "[A-Z0-9]+", "Checksum": "[0-9a-f]*")? \}(,?)$/;
const CHECKSUM_LINE = /^"Manifest-Checksum": "[0-9a-f]{64}"\}$/;

/** The whole file an `INCREMENTAL.` entry stands for ("base/5/INCREMENTAL.16384" → "base/5/16384"); null for other paths. */
export function wholeFileOf(manifestPath: string): string | null {
  const base = path.posix.basename(manifestPath);
  if (!base.startsWith(INCREMENTAL_PREFIX) || base.length === INCREMENTAL_PREFIX.length) return null;
  const dir = path.posix.dirname(manifestPath);
  return `${dir === "." ? "" : `${dir}/`}${base.slice(INCREMENTAL_PREFIX.length)}`;
}

function lines(manifest: Uint8Array): string[] {
  return new TextDecoder("utf-8", { fatal: true }).decode(manifest).split("\n");
}

/** The files (manifest paths, without the INCREMENTAL. prefix) whose entries a restore must rewrite. */
export function incrementalFiles(manifest: Uint8Array): Set<string> {
  const out = new Set<string>();
  for (const line of lines(manifest)) {
    const m = FILE_LINE.exec(line);
    const whole = m ? wholeFileOf(JSON.parse(m[1]!) as string) : null;
    if (whole !== null) out.add(whole);
  }
  return out;
}

/** backup_label without the lines that mark an incremental backup. */
export function fullBackupLabel(label: string): string {
  return label.split("\n").filter((l) => !/^INCREMENTAL FROM (LSN|TLI): /.test(l)).join("\n");
}

/**
 * The manifest with every `INCREMENTAL.` entry, and every other entry `restored` names,
 * replaced by the restored file's size and CRC-32C (keyed by the manifest path of the whole
 * file), and a new Manifest-Checksum.
 */
export function rewriteIncrementalManifest(manifest: Uint8Array, restored: Map<string, { size: number; crc32c: number }>): Uint8Array {
  const all = lines(manifest);
  const out: string[] = [];
  let checksumAt = -1;
  for (let i = 0; i < all.length; i++) {
    const line = all[i]!;
    if (CHECKSUM_LINE.test(line)) {
      checksumAt = i;
      break;
    }
    const m = FILE_LINE.exec(line);
    const listed = m ? (JSON.parse(m[1]!) as string) : null;
    const whole = listed === null ? null : wholeFileOf(listed) ?? (restored.has(listed) ? listed : null);
    if (whole === null) {
      out.push(line);
      continue;
    }
    const file = restored.get(whole);
    if (!file) throw new KlioError("bad-snapshot", `backup_manifest lists ${INCREMENTAL_PREFIX}${path.posix.basename(whole)} for ${whole}, which the restore did not write`);
    out.push(`{ "Path": ${JSON.stringify(whole)}, "Size": ${file.size}, "Last-Modified": ${m![2]}, "Checksum-Algorithm": "CRC32C", "Checksum": "${crc32cManifestHex(file.crc32c)}" }${m![3]}`);
  }
  if (checksumAt < 0) throw new KlioError("bad-snapshot", "backup_manifest has no Manifest-Checksum line");
  const body = new TextEncoder().encode(out.join("\n") + "\n");
  const sum = createHash("sha256").update(body).digest("hex");
  const tail = new TextEncoder().encode(`"Manifest-Checksum": "${sum}"}\n`);
  const result = new Uint8Array(body.length + tail.length);
  result.set(body);
  result.set(tail, body.length);
  return result;
}
