// The write-once discipline of the repository (DESIGN invariant 2): new files are written
// under a temporary name, fsync'd, renamed into place, and the directory fsync'd, so a crash
// at any instant leaves either the old state or the complete new file.
import { closeSync, fsyncSync, openSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { link, open, rename, unlink, type FileHandle } from "node:fs/promises";
import path from "node:path";
import process from "node:process";

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Temporary names share a suffix so that a crash's leftovers are recognisable and removable. */
export const TEMP_SUFFIX = ".klio-tmp";

/** A temporary name beside `file` that no other writer (process or call) uses. */
export function tempNameFor(file: string): string {
  return `${file}.${process.pid}-${randomBytes(4).toString("hex")}${TEMP_SUFFIX}`;
}

/** Writes all of `bytes` at `position` (null: where the file's offset is), however short each write. */
export async function writeFully(fh: FileHandle, bytes: Uint8Array, position: number | null = null): Promise<void> {
  for (let done = 0; done < bytes.length; ) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position === null ? null : position + done);
    done += bytesWritten;
  }
}

export async function writeFileDurable(file: string, data: Uint8Array | string): Promise<void> {
  await writeDurableWith(file, (fh) => fh.writeFile(data));
}

/**
 * Writes `file` through `fill` under a temporary name of its own (pid and random: two writers
 * of one name never share it), then fsync, rename and fsync of the directory; a failure
 * removes the temporary file and leaves `file` as it was. With `noReplace`, link() instead of
 * rename(): an existing `file` is never replaced, whatever runs at the same time — the call
 * fails with EEXIST and `file` stays as it was.
 */
export async function writeDurableWith(file: string, fill: (fh: FileHandle) => Promise<void>, opts: { noReplace?: boolean } = {}): Promise<void> {
  const tmp = tempNameFor(file);
  const fh = await open(tmp, "wx", 0o640);
  try {
    await fill(fh);
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw e;
  }
  await fh.close();
  if (opts.noReplace) {
    try {
      await link(tmp, file);
    } finally {
      await unlink(tmp).catch(() => {});
    }
  } else await rename(tmp, file);
  await fsyncDir(path.dirname(file));
}

/** The same, blocking: for the receive path, where every step waits for the previous anyway. */
export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
