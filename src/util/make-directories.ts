// mkdir -p. Node's own recursive mkdir never returns where mkdir fails with ENOENT below a
// directory that exists — /proc and /sys refuse new entries that way — so `klio init --repo
// /proc/x` spun at 100 % CPU. Here each missing directory is made once, top down, and the
// first refusal is the error.
import { mkdir, stat } from "node:fs/promises";
import path from "node:path";

/**
 * Makes `dir` and whatever parents it lacks (each with `mode`), as `mkdir(dir, { recursive:
 * true, mode })` does; returns the first directory it made, or undefined when `dir` existed.
 */
export async function makeDirectories(dir: string, mode?: number): Promise<string | undefined> {
  const missing: string[] = [];
  // In the form it is given (relative stays relative), so that the first one made compares with it.
  for (let d = dir; ; d = path.dirname(d)) {
    if (await isDirectory(d)) break;
    missing.push(d);
    if (path.dirname(d) === d) break;
  }
  let first: string | undefined;
  for (const d of missing.reverse()) {
    try {
      await mkdir(d, { mode });
      first ??= d;
    } catch (e) {
      // Made meanwhile by another process: as good as made here.
      if (!((e as NodeJS.ErrnoException).code === "EEXIST" && (await isDirectory(d)))) throw e;
    }
  }
  return first;
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}
