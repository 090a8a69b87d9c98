// Where get-wal and its prefetcher take WAL from: the archive in a local repository, or the
// appliance's API (GET /v1/clusters/{name}/wal/{file}) when --repo is https://…, so that a
// server restored on another host replays straight from the backup VM.
import { unlink } from "node:fs/promises";
import { KlioError } from "../util/errors.ts";
import { apiFailure, apiFetch, isApiLocation } from "../util/api-client.ts";
import { writeFully } from "../util/durable-fs.ts";
import { copyWalFile, hasCompleteSegment, openClusterArchive, readFirstForm, verifyWalBytes, type ClusterArchive, type CopyOptions, type WalRequest, type WalSourceKind } from "./archive-reader.ts";
import { PARTIAL_SUFFIX, STORED_SUFFIX, validateClusterName } from "./archive-layout.ts";
import { IDENTITY_FILE, parseIdentity } from "./archive-meta.ts";
import { CHECKSUM_SUFFIX, parseSegmentChecksum } from "./segment-checksum.ts";
import { openRestoredFile } from "./segment-verify.ts";

/** The header in which the appliance sends the CRC-32 (8 hex digits) of a WAL file's bytes. */
export const WAL_CRC_HEADER = "x-klio-crc32";
/** One request for one WAL file; get-wal retries within its own window after that. */
const WAL_REQUEST_TIMEOUT_MS = 60_000;
import type { Storage } from "../repo/storage.ts";

export interface WalSource {
  cluster: string;
  /** The archive directory or the API URL: names the source in messages and in the spool. */
  location: string;
  identity: { systemIdentifier: string; walSegmentSize: number };
  /** Writes the file's original bytes to `dest`; undefined when the source does not have it. */
  copy(req: WalRequest, dest: string, opts?: CopyOptions): Promise<{ from: string; kind: WalSourceKind } | undefined>;
  /** Whether the source has `name` as a complete segment. */
  hasComplete(name: string): Promise<boolean>;
}

/** The location (the spool's identity) of a cluster's WAL in a repository read over the API or from S3. */
export function remoteWalLocation(repo: string, cluster: string): string {
  const base = repo.replace(/\/+$/, "");
  return isApiLocation(repo) ? `${base}/v1/clusters/${cluster}/wal` : `${base}/wal/${cluster}`;
}

export async function openWalSource(repo: string, cluster: string | undefined, access: { token?: string; s3?: () => Promise<Storage> }): Promise<WalSource> {
  if (isApiLocation(repo)) return await HttpWalSource.open(repo, cluster, access.token);
  if (access.s3) return await storageWalSource(await access.s3(), repo, cluster);
  return fsWalSource(await openClusterArchive(repo, cluster));
}

/**
 * The archive as objects of a repository storage (an S3 copy): wal/CLUSTER/NAME.kwal, a raw
 * NAME not yet compressed when it was copied, NAME.partial, NAME.history.
 */
export async function storageWalSource(storage: Storage, location: string, cluster: string | undefined): Promise<WalSource> {
  let name = cluster;
  if (name === undefined) {
    const clusters = [...new Set((await storage.list("wal/")).map((e) => e.key.split("/")[1]!).filter((c) => c !== undefined))];
    if (clusters.length !== 1) throw new KlioError(clusters.length ? "usage" : "no-archive", clusters.length ? `${location} holds WAL of several clusters (${clusters.join(", ")}): name one with --cluster` : `${location} holds no WAL archive`);
    name = clusters[0]!;
  }
  const c = validateClusterName(name);
  const key = (file: string) => `wal/${c}/${file}`;
  let identity;
  try {
    identity = parseIdentity(new TextDecoder().decode(await storage.get(key(IDENTITY_FILE))), `${location} ${key(IDENTITY_FILE)}`);
  } catch (e) {
    if (e instanceof KlioError && e.code === "not-found") throw new KlioError("no-archive", `${location} holds no WAL archive for cluster ${c}`);
    throw e;
  }
  const fetch = async (file: string) => {
    try {
      return await storage.get(key(file));
    } catch (e) {
      if (e instanceof KlioError && e.code === "not-found") return undefined;
      throw e;
    }
  };
  const archive = { cluster: c, identity };
  return {
    cluster: c, location: remoteWalLocation(location, c), identity,
    async copy(req, dest, opts = {}) {
      const found = await readFirstForm(req, async (form) => {
        const bytes = await fetch(form.file);
        if (!bytes) return undefined;
        const checksumBytes = form.kind === "raw" ? await fetch(form.file + CHECKSUM_SUFFIX) : undefined;
        const what = `WAL segment ${req.name} of cluster ${c} in ${location}`;
        const checksum = checksumBytes && parseSegmentChecksum(new TextDecoder().decode(checksumBytes), what);
        return verifyWalBytes(form, bytes, req.name, archive, checksum);
      });
      if (!found) return undefined;
      await writeFileAt(dest, found.value, Boolean(opts.sync));
      return { from: found.form.file, kind: found.form.kind };
    },
    async hasComplete(n) {
      return (await storage.exists(key(n + STORED_SUFFIX))) || (await storage.exists(key(n)));
    },
  };
}

async function writeFileAt(dest: string, bytes: Uint8Array, sync: boolean): Promise<void> {
  const fh = await openRestoredFile(dest);
  try {
    await writeFully(fh, bytes, 0);
    if (sync) await fh.sync();
  } catch (e) {
    await fh.close();
    await unlink(dest).catch(() => {});
    throw e;
  }
  await fh.close();
}

export function fsWalSource(archive: ClusterArchive): WalSource {
  return {
    cluster: archive.cluster, location: archive.dir, identity: archive.identity,
    copy: (req, dest, opts) => copyWalFile(archive, req, dest, opts),
    hasComplete: (name) => hasCompleteSegment(archive, name),
  };
}

class HttpWalSource implements WalSource {
  private constructor(
    readonly cluster: string,
    readonly location: string,
    readonly identity: { systemIdentifier: string; walSegmentSize: number },
    private readonly base: string,
    private readonly token: string | undefined,
  ) {}

  static async open(url: string, cluster: string | undefined, token: string | undefined): Promise<HttpWalSource> {
    const base = url.replace(/\/+$/, "");
    const get = (p: string) => apiFetch(base, p, token);
    let name = cluster;
    if (name === undefined) {
      const r = await get("/v1/clusters");
      if (r.status !== 200) throw await apiFailure(r, `listing the clusters of ${base}`);
      const names = ((await r.json()) as { clusters: { name: string }[] }).clusters.map((c) => c.name);
      if (names.length !== 1) throw new KlioError("usage", `${base} serves ${names.length === 0 ? "no clusters" : `several clusters (${names.join(", ")})`}: name one with --cluster`);
      name = names[0]!;
    }
    const r = await get(`/v1/clusters/${encodeURIComponent(name)}/wal`);
    if (r.status === 404) throw new KlioError("no-archive", `${base} has no cluster ${name}`);
    if (r.status !== 200) throw await apiFailure(r, `reading the WAL archive of ${name} at ${base}`);
    const archive = ((await r.json()) as { archive: { systemIdentifier: string; walSegmentSize: number } | null }).archive;
    if (!archive) throw new KlioError("no-archive", `${base} holds no WAL archive for cluster ${name} yet`);
    return new HttpWalSource(name, remoteWalLocation(base, name), { systemIdentifier: archive.systemIdentifier, walSegmentSize: archive.walSegmentSize }, base, token);
  }

  private file(name: string): string {
    return `/v1/clusters/${encodeURIComponent(this.cluster)}/wal/${name}`;
  }

  async copy(req: WalRequest, dest: string, opts: CopyOptions = {}): Promise<{ from: string; kind: WalSourceKind } | undefined> {
    if (req.kind === "other") return undefined;
    // NAME.partial asks the appliance for the whole segment, else its newest partial form.
    const asked = req.kind === "segment" && req.partial ? req.name + PARTIAL_SUFFIX : req.name;
    const r = await apiFetch(this.base, this.file(asked), this.token, { timeoutMs: WAL_REQUEST_TIMEOUT_MS });
    if (r.status === 404) {
      await r.body?.cancel();
      return undefined;
    }
    if (r.status !== 200) throw await apiFailure(r, `fetching ${asked} from ${this.base}`);
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(await r.arrayBuffer());
    } catch (e) {
      throw new KlioError("unreachable", `fetching ${asked} from ${this.base}: the transfer broke off (${(e as Error).message})`);
    }
    const from = r.headers.get("x-klio-source") ?? req.name;
    const kind: WalSourceKind = req.kind === "history" ? "history" : from.endsWith(PARTIAL_SUFFIX) ? "partial" : from.endsWith(STORED_SUFFIX) ? "stored" : "raw";
    // The appliance verified the file and sends the CRC-32 of what it sends (older appliances
    // do not): what arrives is checked against it, and a segment's first page against its name.
    const crc = r.headers.get(WAL_CRC_HEADER);
    const sent = crc === null || !/^[0-9a-f]{8}$/.test(crc) ? undefined : { crc32: Number.parseInt(crc, 16), length: bytes.length };
    const verdict = verifyWalBytes({ file: from, kind: kind === "stored" ? "raw" : kind }, bytes, req.name, this, sent);
    if (verdict === "empty") return undefined;
    await writeFileAt(dest, bytes, Boolean(opts.sync));
    return { from, kind };
  }

  async hasComplete(name: string): Promise<boolean> {
    const r = await apiFetch(this.base, this.file(name), this.token, { method: "HEAD" });
    await r.body?.cancel();
    if (r.status === 200) return true;
    if (r.status === 404) return false;
    throw await apiFailure(r, `looking for ${name} at ${this.base}`);
  }
}
