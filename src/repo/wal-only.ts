// A directory that holds only a WAL archive (wal/…): what `klio wal stream` leaves in an empty
// directory. Not a repository yet, but `klio init` makes it one and keeps that WAL; every
// "not a klio repository" message says so for such a directory.
import { readdir } from "node:fs/promises";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import { HEADER_KEY } from "./header.ts";

/** The repository's WAL archive directory (docs/FORMAT.md, "WAL archive"). */
export const WAL_DIR = "wal";

/** Whether `dir` holds nothing but wal/ with a directory per cluster in it. */
export async function holdsOnlyWal(dir: string): Promise<boolean> {
  try {
    const top = await readdir(dir, { withFileTypes: true });
    if (top.length !== 1 || top[0]!.name !== WAL_DIR || !top[0]!.isDirectory()) return false;
    return (await readdir(path.join(dir, WAL_DIR), { withFileTypes: true })).every((e) => e.isDirectory());
  } catch {
    return false;
  }
}

/** The error for a local path that is no repository, with the way to make it one. */
export async function notARepository(dir: string): Promise<KlioError> {
  const where = JSON.stringify(dir);
  if (await holdsOnlyWal(dir))
    return new KlioError("bad-repository",
      `${where} is not a klio repository yet: it holds only a WAL archive (what \`klio wal stream\` writes); \`klio init --repo ${dir}\` turns it into one and keeps its WAL`);
  return new KlioError("bad-repository", `${where} is not a klio repository (it has no ${HEADER_KEY}): create one with \`klio init --repo ${dir}\``);
}
