// The daemon's offsite copy: one sync pass every few seconds, so completed WAL reaches the
// bucket within seconds and backups right after they finish. A failed pass (S3 down, 5xx
// beyond the retries, wrong keys) is logged and counted, and the next pass starts over;
// nothing local depends on it.
import type { Logger } from "../util/log.ts";
import { sleep } from "../util/sleep.ts";
import { isKlioError } from "../util/errors.ts";
import { OffsiteSync, type SyncPass } from "../offsite/sync.ts";
import { S3Storage } from "../repo/s3-storage.ts";
import type { ErrorRecord } from "./state.ts";
import type { OffsiteConfig } from "./config.ts";
import type { OffsiteHoldings } from "../backup/retention-apply.ts";
import { RateLimit } from "../util/rate-limit.ts";

export interface OffsiteView {
  remote: string;
  state: "starting" | "syncing" | "idle" | "failing" | "stopped";
  lastPass: (SyncPass & { at: string }) | null;
  lastSuccessAt: string | null;
  lastError: ErrorRecord | null;
  failures: number;
  uploadedObjects: number;
  uploadedBytes: number;
}

export class OffsiteRunner {
  readonly view: OffsiteView;
  private readonly stopper = new AbortController();
  private loop: Promise<void> | null = null;
  private readonly limit: RateLimit | undefined;

  constructor(private readonly config: OffsiteConfig, private readonly repoDir: string, private readonly log: Logger) {
    this.limit = config.bandwidth === null ? undefined : new RateLimit(config.bandwidth);
    this.view = { remote: config.url, state: "starting", lastPass: null, lastSuccessAt: null, lastError: null, failures: 0, uploadedObjects: 0, uploadedBytes: 0 };
  }

  start(): void {
    this.loop = this.run();
  }

  /** What the bucket holds now (one fresh listing), for retention: nothing goes before it is there. */
  async holdings(): Promise<OffsiteHoldings> {
    const remote = await S3Storage.open(this.config.location, this.config.s3);
    try {
      const keys = new Set((await remote.list("")).map((e) => e.key));
      return { description: remote.description, has: (k) => keys.has(k) };
    } finally {
      await remote.close();
    }
  }

  async stop(): Promise<void> {
    this.stopper.abort();
    await this.loop;
    this.view.state = "stopped";
  }

  private async run(): Promise<void> {
    const signal = this.stopper.signal;
    let sync: OffsiteSync | null = null;
    let full = true;
    while (!signal.aborted) {
      try {
        sync ??= new OffsiteSync({
          repoDir: this.repoDir, remote: await S3Storage.open(this.config.location, this.config.s3), concurrency: this.config.concurrency,
          limit: this.limit, log: this.log, signal,
        });
        this.view.state = "syncing";
        const p = await sync.pass({ fullListing: full });
        full = false;
        const at = new Date().toISOString();
        this.view.lastPass = { ...p, at };
        this.view.uploadedObjects += p.uploaded;
        this.view.uploadedBytes += p.uploadedBytes;
        if (p.behind.objects === 0) this.view.lastSuccessAt = at;
        this.view.state = "idle";
        if (p.uploaded || p.removed) this.log.info("offsite.pass", { uploaded: p.uploaded, bytes: p.uploadedBytes, removed: p.removed, seconds: Number(p.seconds.toFixed(2)) });
      } catch (e) {
        if (signal.aborted) break;
        this.view.failures++;
        this.view.state = "failing";
        this.view.lastError = { at: new Date().toISOString(), code: isKlioError(e) ? e.code : "error", message: (e as Error).message };
        this.log.error("offsite.failed", { code: this.view.lastError.code, error: this.view.lastError.message });
        full = true; // after a failure, trust nothing remembered of the remote
      }
      await sleep(this.view.state === "failing" ? Math.min(60_000, this.config.intervalMs * 5) : this.config.intervalMs, signal);
    }
    await sync?.close();
  }
}
