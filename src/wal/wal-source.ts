// Where get-wal and its prefetcher take WAL from: the archive in a local repository, or the
// appliance's API (GET /v1/clusters/{name}/wal/{file}) when --repo is https://…, so that a
// server restored on another host replays straight from the backup VM.
import { open, unlink } from "node:fs/promises";
import { KlioError } from "../util/errors.ts";
import { apiFailure, apiFetch, isApiLocation } from "../util/api-client.ts";
import { writeFully } from "../util/durable-fs.ts";
import { copyWalFile, hasCompleteSegment, openClusterArchive, type ClusterArchive, type CopyOptions, type WalRequest, type WalSourceKind } from "./archive-reader.ts";
import { PARTIAL_SUFFIX } from "./archive-layout.ts";

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

/** The location (spool identity) of a cluster's WAL served by the appliance at `url`. */
export function apiWalLocation(url: string, cluster: string): string {
  return `${url.replace(/\/+$/, "")}/v1/clusters/${cluster}/wal`;
}

export async function openWalSource(repo: string, cluster: string | undefined, token: string | undefined): Promise<WalSource> {
  if (isApiLocation(repo)) return await HttpWalSource.open(repo, cluster, token);
  return fsWalSource(await openClusterArchive(repo, cluster));
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
    return new HttpWalSource(name, apiWalLocation(base, name), { systemIdentifier: archive.systemIdentifier, walSegmentSize: archive.walSegmentSize }, base, token);
  }

  private file(name: string): string {
    return `/v1/clusters/${encodeURIComponent(this.cluster)}/wal/${name}`;
  }

  async copy(req: WalRequest, dest: string, opts: CopyOptions = {}): Promise<{ from: string; kind: WalSourceKind } | undefined> {
    if (req.kind === "other") return undefined;
    // NAME.partial asks the appliance for the whole segment, else its newest partial form.
    const asked = req.kind === "segment" && req.partial ? req.name + PARTIAL_SUFFIX : req.name;
    const r = await apiFetch(this.base, this.file(asked), this.token);
    if (r.status === 404) {
      await r.body?.cancel();
      return undefined;
    }
    if (r.status !== 200) throw await apiFailure(r, `fetching ${asked} from ${this.base}`);
    const bytes = new Uint8Array(await r.arrayBuffer());
    const from = r.headers.get("x-klio-source") ?? req.name;
    const kind: WalSourceKind = req.kind === "history" ? "history" : from.endsWith(PARTIAL_SUFFIX) ? "partial" : "stored";
    if (req.kind === "segment" && bytes.length !== this.identity.walSegmentSize) {
      throw new KlioError("corrupt-wal", `${this.base} sent ${bytes.length} bytes for WAL segment ${req.name}, not ${this.identity.walSegmentSize}`);
    }
    const fh = await open(dest, "w", 0o600);
    try {
      await writeFully(fh, bytes, 0);
      if (opts.sync) await fh.sync();
    } catch (e) {
      await fh.close();
      await unlink(dest).catch(() => {});
      throw e;
    }
    await fh.close();
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
