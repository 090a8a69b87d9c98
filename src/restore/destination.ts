// The directories a restore writes into (the data directory and each tablespace's), checked
// before anything is written, made, and — when the restore fails — put back as they were.
//
// A destination is an empty directory, or a path whose missing part klio creates. It must
// not be a symbolic link (klio would write wherever it points, and a dangling one would be
// created through), must lie on a real file system (not /proc, /sys, /dev or another kernel
// pseudo file system: writing there fails in strange ways or does harm), and its nearest
// existing directory must be writable. Parent directories may be symbolic links: they are
// resolved, and the place they lead to is what is checked.
import { constants } from "node:fs";
import { access, chmod, lstat, readdir, readFile, readlink, realpath, rm, stat } from "node:fs/promises";
import path from "node:path";
import { KlioError } from "../util/errors.ts";
import { makeDirectories } from "../util/make-directories.ts";

export interface Destination {
  /** What it is, for messages: "the restore destination", "the directory of tablespace ts1". */
  what: string;
  dir: string;
  /** The first directory of the path that does not exist yet (klio creates it and all below); null when `dir` exists. */
  createFrom: string | null;
  /** The mode of the existing empty directory, put back after a failure. */
  modeBefore: number | null;
}

/** Kernel file systems that hold no data of their own: never a place to restore into. */
const PSEUDO_FILE_SYSTEMS = new Set([
  "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "pstore", "bpf",
  "configfs", "fusectl", "mqueue", "efivarfs", "binfmt_misc", "selinuxfs", "hugetlbfs", "rpc_pipefs", "nsfs", "autofs",
]);

const errnoOf = (e: unknown) => (e as NodeJS.ErrnoException | null)?.code;

function refuse(message: string): KlioError {
  return new KlioError("bad-destination", `restore: ${message}; nothing was written`);
}

const REASONS: Record<string, string> = {
  EACCES: "permission denied", EPERM: "operation not permitted", EROFS: "it is on a read-only file system",
  ENOTDIR: "a part of the path is not a directory", ELOOP: "too many levels of symbolic links", ENAMETOOLONG: "the name is too long",
};
const reason = (e: unknown) => REASONS[errnoOf(e) ?? ""] ?? (e instanceof Error ? e.message : String(e));

/** Checks `dir` as a place to restore into; writes nothing. */
export async function checkDestination(dir: string, what: string): Promise<Destination> {
  if (!path.isAbsolute(dir)) throw refuse(`${what} ${dir} must be an absolute path`);
  dir = path.resolve(dir);
  const own = await lstat(dir).catch((e) => e as NodeJS.ErrnoException);
  if (!(own instanceof Error)) {
    if (own.isSymbolicLink()) {
      const to = await readlink(dir).catch(() => "?");
      throw refuse(`${what} ${dir} is a symbolic link (to ${to}): give the directory itself`);
    }
    if (!own.isDirectory()) throw refuse(`${what} ${dir} exists and is not a directory`);
    await mustBeRealAndWritable(dir, what, dir);
    const entries = await readdir(dir).catch((e) => {
      throw refuse(`cannot read ${what} ${dir}: ${reason(e)}`);
    });
    if (entries.length > 0) throw refuse(`${what} ${dir} is not empty: restore writes only into an empty or new directory`);
    return { what, dir, createFrom: null, modeBefore: own.mode & 0o7777 };
  }
  // ENOTDIR: a file stands where a parent directory should be; found below, and named.
  if (errnoOf(own) !== "ENOENT" && errnoOf(own) !== "ENOTDIR") throw refuse(`cannot use ${what} ${dir}: ${reason(own)}`);

  // Up to the nearest existing directory: everything below it is created by the restore.
  let missing = dir;
  for (;;) {
    const parent = path.dirname(missing);
    const st = await lstat(parent).catch((e) => e as NodeJS.ErrnoException);
    if (st instanceof Error) {
      if ((errnoOf(st) === "ENOENT" || errnoOf(st) === "ENOTDIR") && parent !== missing) {
        missing = parent;
        continue;
      }
      throw refuse(`cannot create ${what} ${dir}: ${parent}: ${reason(st)}`);
    }
    if (st.isSymbolicLink()) {
      const target = await stat(parent).catch((e) => e as NodeJS.ErrnoException);
      const to = await readlink(parent).catch(() => "?");
      if (target instanceof Error) throw refuse(`cannot create ${what} ${dir}: ${parent} is a symbolic link to ${to}, which ${errnoOf(target) === "ENOENT" ? "does not exist" : `cannot be used (${reason(target)})`}`);
      if (!target.isDirectory()) throw refuse(`cannot create ${what} ${dir}: ${parent} is a symbolic link to ${to}, which is not a directory`);
    } else if (!st.isDirectory()) {
      throw refuse(`cannot create ${what} ${dir}: ${parent} is not a directory`);
    }
    await mustBeRealAndWritable(parent, what, dir);
    return { what, dir, createFrom: missing, modeBefore: null };
  }
}

/** `existing` (a directory) lies on a real file system and this user may create entries in it. */
async function mustBeRealAndWritable(existing: string, what: string, dir: string): Promise<void> {
  const real = await realpath(existing).catch((e) => {
    throw refuse(`cannot use ${what} ${dir}: ${existing}: ${reason(e)}`);
  });
  const fs = await fileSystemOf(real);
  if (fs && PSEUDO_FILE_SYSTEMS.has(fs.type))
    throw refuse(`${what} ${dir} is on ${fs.mountPoint}, a ${fs.type} file system of the kernel, not storage: restore to a disk`);
  await access(existing, constants.W_OK | constants.X_OK).catch((e) => {
    const how = existing === dir ? "" : ` (in ${existing})`;
    throw refuse(`cannot write ${what} ${dir}${how}: ${reason(e)}`);
  });
}

/** The mount holding `real` (a resolved path), from the mount table; null where there is none to read. */
async function fileSystemOf(real: string): Promise<{ mountPoint: string; type: string } | null> {
  let table: string;
  try {
    table = await readFile("/proc/self/mountinfo", "utf8");
  } catch {
    return null; // not Linux, or no /proc: no pseudo file system of Linux to fear either
  }
  let best: { mountPoint: string; type: string } | null = null;
  for (const line of table.split("\n")) {
    // id parent major:minor root mount-point options [optional…] - type source super-options
    const fields = line.split(" ");
    const dash = fields.indexOf("-");
    if (fields.length < 5 || dash < 0) continue;
    const mountPoint = fields[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    const inside = mountPoint === "/" || real === mountPoint || real.startsWith(mountPoint + "/");
    // Later lines mount over earlier ones at the same point.
    if (inside && (!best || mountPoint.length >= best.mountPoint.length)) best = { mountPoint, type: fields[dash + 1] ?? "" };
  }
  return best;
}

/** Makes the directory (private: PostgreSQL starts only on a directory no one else may read). */
export async function prepareDestination(d: Destination): Promise<void> {
  await makeDirectories(d.dir, 0o700);
  await chmod(d.dir, 0o700);
}

/**
 * Puts the destination back as it was before the restore: a directory the restore created is
 * removed (from the first level it created), an existing empty one emptied and its mode put
 * back. Symbolic links inside (pg_tblspc/<oid>) are removed, never followed.
 */
export async function undoDestination(d: Destination): Promise<void> {
  if (d.createFrom !== null) {
    await rm(d.createFrom, { recursive: true, force: true });
    return;
  }
  const entries = await readdir(d.dir).catch((e) => {
    if (errnoOf(e) === "ENOENT") return [] as string[];
    throw e;
  });
  for (const name of entries) await rm(path.join(d.dir, name), { recursive: true, force: true });
  if (d.modeBefore !== null) await chmod(d.dir, d.modeBefore);
}
