// Reads the WAL archive: finds a cluster's archive, serves one file with its original bytes
// (get-wal), and summarises what is there (wal status). Small imports only: PostgreSQL runs
// get-wal once per segment during recovery.
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { isKlioError, KlioError } from "../util/errors.ts";
import { noteDamage } from "./archive-damage.ts";
import { isSegmentName, parseSegmentName } from "../pg/lsn.ts";
import { clusterWalDir, PARTIAL_SUFFIX, STORED_SUFFIX, validateClusterName, walRoot } from "./archive-layout.ts";
import { IDENTITY_FILE, readIdentity, type ClusterIdentity } from "./archive-meta.ts";
import { writeFully } from "../util/durable-fs.ts";
import { parseTimelineHistory } from "../pg/timeline-history.ts";
import { decodeStoredSegment } from "./stored-segment.ts";
import { decodeStoredSegmentFile } from "./stored-segment-file.ts";
import { CHECKSUM_SUFFIX, type SegmentChecksum } from "./segment-checksum.ts";
import type { ClusterOfSegment } from "./segment-page-header.ts";
import { checkSegmentStart, copyPlainSegment, openRestoredFile, readChecksumFile, verifyPlainSegment, type SegmentIdentity } from "./segment-verify.ts";

export interface ClusterArchive {
  cluster: string;
  dir: string;
  identity: ClusterIdentity;
}

/** The archive of `cluster`, or of the only cluster in the repository when none is named. */
export async function openClusterArchive(repo: string, cluster: string | undefined): Promise<ClusterArchive> {
  let name = cluster === undefined ? undefined : validateClusterName(cluster);
  if (name === undefined) {
    let entries: string[] = [];
    try {
      entries = await readdir(walRoot(repo));
    } catch (e) {
      if (!["ENOENT", "ENOTDIR"].includes((e as NodeJS.ErrnoException).code ?? "")) throw e;
    }
    const clusters: string[] = [];
    for (const e of entries.sort()) {
      if ((await readdir(path.join(walRoot(repo), e)).catch(() => [] as string[])).includes(IDENTITY_FILE)) clusters.push(e);
    }
    if (clusters.length === 0) throw await noArchive(repo, undefined);
    if (clusters.length > 1) throw new KlioError("usage", `${repo} holds WAL of several clusters (${clusters.join(", ")}): name one with --cluster`);
    name = clusters[0]!;
  }
  const dir = clusterWalDir(repo, name);
  const identity = await readIdentity(dir).catch(async (e) => {
    // --repo itself not a directory: said as such; anything else in the way, as it is.
    if ((e as NodeJS.ErrnoException).code === "ENOTDIR" && !(await stat(repo).then((s) => s.isDirectory(), () => false))) throw await noArchive(repo, name);
    throw e;
  });
  if (!identity) throw await noArchive(repo, name);
  return { cluster: name, dir, identity };
}

/** Why `repo` has no archive (of `cluster`): loaded only then, get-wal pays nothing for it. */
async function noArchive(repo: string, cluster: string | undefined): Promise<KlioError> {
  const { noArchiveError } = await import("./archive-absence.ts");
  return noArchiveError(repo, cluster);
}

export type WalRequest =
  | { kind: "segment"; name: string; partial: boolean }
  | { kind: "history"; name: string }
  /** Backup history files (…​.backup) and the like: PostgreSQL may ask; klio keeps none. */
  | { kind: "other"; name: string };

/**
 * Validates a file name PostgreSQL (or an operator) asks for, by its form alone (get-wal does
 * so before it looks at anything). Anything that is not a WAL file name is refused, so that no
 * name can reach outside the archive directory.
 */
export function classifyWalName(name: string, allowPartial: boolean): WalRequest {
  if (/^[0-9A-F]{8}\.history$/.test(name)) return { kind: "history", name };
  if (/^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$/.test(name)) return { kind: "other", name };
  const base = name.endsWith(PARTIAL_SUFFIX) ? name.slice(0, -PARTIAL_SUFFIX.length) : name;
  if (isSegmentName(base)) return { kind: "segment", name: base, partial: allowPartial || base !== name };
  throw new KlioError("bad-wal-name", `"${name}" is not a WAL file name (expected e.g. 000000010000000000000003 or 00000002.history)`);
}

/** classifyWalName, and a segment's number checked against the archive's segment size. */
export function parseWalRequest(name: string, segSize: number, allowPartial: boolean): WalRequest {
  const req = classifyWalName(name, allowPartial);
  if (req.kind === "segment") parseSegmentName(req.name, segSize);
  return req;
}

/**
 * A segment moves partial → raw → stored while we look (the receiver renames, the compressor
 * writes the .kwal and then unlinks the raw file), and each move happens in the order we
 * probe backwards: a probe can miss a segment that exists. Probing again finds it in its
 * next form; three rounds cover two moves during one lookup.
 */
const PROBE_ROUNDS = 3;

export type WalSourceKind = "stored" | "raw" | "partial" | "history";

export interface Form {
  file: string;
  kind: WalSourceKind;
}

/** The forms a request may be held in, in the order to probe them. */
function formsOf(req: WalRequest): Form[] {
  if (req.kind === "history") return [{ file: req.name, kind: "history" }];
  const forms: Form[] = [{ file: req.name + STORED_SUFFIX, kind: "stored" }, { file: req.name, kind: "raw" }];
  if (req.kind === "segment" && req.partial) forms.push({ file: req.name + PARTIAL_SUFFIX, kind: "partial" });
  return forms;
}

/**
 * Tries `read` on each form of the request until one is there (read resolves undefined for a
 * form that does not exist, "empty" for a partial segment with no WAL yet, which ends the
 * search: the archive does not have the WAL). Damage throws.
 */
export async function readFirstForm<T>(req: WalRequest, read: (form: Form) => Promise<T | undefined | "empty">): Promise<{ value: T; form: Form } | undefined> {
  if (req.kind === "other") return undefined;
  const forms = formsOf(req);
  for (let round = 0; round < (req.kind === "history" ? 1 : PROBE_ROUNDS); round++) {
    for (const form of forms) {
      const value = await read(form).catch((e) => {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw e;
      });
      if (value === "empty") return undefined;
      if (value !== undefined) return { value, form };
    }
  }
  return undefined;
}

/** Damage a read meets is noted for `wal status` (archive-damage.ts) on its way to the caller. */
function notingDamage<T>(archive: ClusterArchive, read: (form: Form) => Promise<T>): (form: Form) => Promise<T> {
  return async (form) => {
    try {
      return await read(form);
    } catch (e) {
      if (isKlioError(e) && e.code === "corrupt-wal") await noteDamage(archive.dir, form.file, e.message);
      throw e;
    }
  };
}

export function segmentIdentity(archive: { cluster: string; identity: ClusterOfSegment }, name: string): SegmentIdentity {
  return { name, cluster: archive.identity, what: `WAL segment ${name} of cluster ${archive.cluster}` };
}

/** A history file's text, checked: what PostgreSQL would read must parse, and name only earlier timelines. */
export function checkHistoryFile(bytes: Uint8Array, name: string, what: string): void {
  const timeline = Number.parseInt(name.slice(0, 8), 16);
  let entries;
  try {
    entries = parseTimelineHistory(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new KlioError("corrupt-wal", `${what} is damaged: ${(e as Error).message}`);
  }
  if (entries.length === 0 || entries.some((e) => e.timeline >= timeline)) throw new KlioError("corrupt-wal", `${what} is damaged: it does not list the timelines before ${timeline}`);
}

/**
 * Verifies the bytes of one form of a request, read whole (from S3, or for the API): the
 * original bytes, or "empty" for a partial segment with no WAL yet. `checksum` is the raw
 * segment's checksum file, when there is one.
 */
export function verifyWalBytes(form: Form, bytes: Uint8Array, name: string, archive: { cluster: string; identity: ClusterOfSegment }, checksum?: SegmentChecksum): Uint8Array | "empty" {
  if (form.kind === "history") {
    checkHistoryFile(bytes, name, `history file ${name} of cluster ${archive.cluster}`);
    return bytes;
  }
  const id = segmentIdentity(archive, name);
  if (form.kind === "stored") {
    const original = decodeStoredSegment(bytes, id.what);
    checkSegmentStart(original, id, false);
    return original;
  }
  return verifyPlainSegment(bytes, id, { checksum, partial: form.kind === "partial" }) === "empty" ? "empty" : bytes;
}

/** The file's original bytes, verified, or undefined when the archive does not have it. */
export async function readWalFile(archive: ClusterArchive, req: WalRequest): Promise<{ bytes: Uint8Array; from: string; kind: WalSourceKind } | undefined> {
  const found = await readFirstForm(req, notingDamage(archive, async (form) => {
    const at = path.join(archive.dir, form.file);
    const checksum = form.kind === "raw" ? await readChecksumFile(at + CHECKSUM_SUFFIX, segmentIdentity(archive, req.name).what) : undefined;
    return verifyWalBytes(form, await readFile(at), req.name, archive, checksum);
  }));
  return found && { bytes: found.value, from: found.form.file, kind: found.form.kind };
}

/** Whether the archive has `name` as a complete segment (stored or raw), not only partial. */
export async function hasCompleteSegment(archive: ClusterArchive, name: string): Promise<boolean> {
  for (const file of [name + STORED_SUFFIX, name, name + STORED_SUFFIX]) {
    if (await stat(path.join(archive.dir, file)).then(() => true, () => false)) return true;
  }
  return false;
}

export interface CopyOptions {
  /** fsync `dest` before resolving. */
  sync?: boolean;
}

/**
 * Writes the file's original bytes, verified, to `dest` (created or truncated with mode 0600,
 * as PostgreSQL wants; a temporary name that the caller renames into place) without holding
 * the segment in memory, and says which archive file they came from; undefined when the
 * archive does not have it. A damaged or foreign file throws KlioError("corrupt-wal") and
 * leaves garbage in `dest` for the caller to remove.
 */
export async function copyWalFile(archive: ClusterArchive, req: WalRequest, dest: string, opts: CopyOptions = {}): Promise<{ from: string; kind: WalSourceKind } | undefined> {
  if (req.kind === "other") return undefined;
  // Below, ENOENT means "not in the archive": make sure it cannot come from dest's side.
  const destDir = path.dirname(dest);
  if (!(await stat(destDir).catch(() => undefined))?.isDirectory()) throw new KlioError("bad-target", `cannot write into ${destDir}: it does not exist or is not a directory`);
  const found = await readFirstForm(req, notingDamage(archive, async (form): Promise<true | "empty"> => {
    const at = path.join(archive.dir, form.file);
    if (form.kind === "history") {
      const bytes = await readFile(at);
      checkHistoryFile(bytes, req.name, `history file ${req.name} of cluster ${archive.cluster}`);
      const fh = await openRestoredFile(dest);
      try {
        await writeFully(fh, bytes, 0);
        if (opts.sync) await fh.sync();
      } finally {
        await fh.close();
      }
      return true;
    }
    const id = segmentIdentity(archive, req.name);
    if (form.kind === "stored") {
      await decodeStoredSegmentFile(at, dest, id.what, { sync: opts.sync, checkStart: (first) => checkSegmentStart(first, id, false) });
      return true;
    }
    const checksum = form.kind === "raw" ? await readChecksumFile(at + CHECKSUM_SUFFIX, id.what) : undefined;
    return (await copyPlainSegment(at, dest, id, { checksum, partial: form.kind === "partial" }, opts)) === "empty" ? "empty" : true;
  }));
  return found && { from: found.form.file, kind: found.form.kind };
}
