// Damage that a reader of the archive met (get-wal, the compressor, repo check --read-data,
// backup verify) is noted in `damaged.jsonl` beside the cluster's WAL, so that `wal status`
// and the daemon's metrics report it without reading every segment themselves. A note is
// only a pointer: status checks the noted file again and reports it while it is still damaged
// (a file put back from another copy clears it). Best effort: a reader that may not write
// there (PostgreSQL's user, read-only media) notes nothing and reports the damage itself.
import { appendFile, readFile } from "node:fs/promises";
import path from "node:path";

export const DAMAGE_FILE = "damaged.jsonl";

export interface DamageNote {
  file: string;
  reason: string;
  detectedAt: string;
}

export async function readDamageNotes(dir: string): Promise<DamageNote[]> {
  let text: string;
  try {
    text = await readFile(path.join(dir, DAMAGE_FILE), "utf8");
  } catch {
    return [];
  }
  const notes = new Map<string, DamageNote>();
  for (const line of text.split("\n")) {
    try {
      const n = JSON.parse(line) as Partial<DamageNote>;
      if (typeof n.file === "string" && /^[0-9A-F.a-z]+$/.test(n.file) && typeof n.reason === "string") notes.set(n.file, { file: n.file, reason: n.reason, detectedAt: String(n.detectedAt) });
    } catch {
      // an empty line, or one torn by a crash while appending
    }
  }
  return [...notes.values()];
}

/** Notes that `file` of the archive in `dir` is damaged, unless it is noted already. Never throws. */
export async function noteDamage(dir: string, file: string, reason: string): Promise<void> {
  try {
    if ((await readDamageNotes(dir)).some((n) => n.file === file)) return;
    await appendFile(path.join(dir, DAMAGE_FILE), JSON.stringify({ file, reason, detectedAt: new Date().toISOString() }) + "\n", { mode: 0o640 });
  } catch {
    // not ours to write (see above)
  }
}
