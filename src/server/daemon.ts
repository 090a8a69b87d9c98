// The appliance daemon: creates the repository on first start, runs one supervisor per
// cluster and the HTTP API, and stops them all cleanly. It owns nothing the API or the
// supervisors do not: this file wires them together.
import { KlioError } from "../util/errors.ts";
import { withFields, type Logger } from "../util/log.ts";
import { initRepository, isRepository, openRepository, type Repository } from "../repo/repository.ts";
import { FsStorage } from "../repo/fs-storage.ts";
import type { Storage } from "../repo/storage.ts";
import type { DaemonConfig } from "./config.ts";
import { JobTable } from "./jobs.ts";
import { StateStore } from "./state.ts";
import { ClusterSupervisor } from "./supervisor.ts";
import { OffsiteRunner } from "./offsite-runner.ts";
import { RepositoryKeeper } from "./keeper.ts";
import { readStoredPolicy } from "../backup/retention-store.ts";
import { makeDirectories } from "../util/make-directories.ts";

export interface Daemon {
  readonly config: DaemonConfig;
  readonly startedAt: Date;
  readonly supervisors: ReadonlyMap<string, ClusterSupervisor>;
  readonly jobs: JobTable;
  /** The offsite copy, when configured. */
  readonly offsite: OffsiteRunner | null;
  /** Retention, maintenance, free space. */
  readonly keeper: RepositoryKeeper;
  /** Opened once, for the API's reads and deletions of snapshots. */
  readonly repo: Repository;
  /** The repository's files as objects, for the API to serve to `--repo https://…` readers. */
  readonly storage: Storage;
  stop(): Promise<void>;
}

export async function startDaemon(config: DaemonConfig, log: Logger): Promise<Daemon> {
  const repoPath = config.repository.path;
  if (!(await isRepository(repoPath))) {
    await initRepository(repoPath, { passphrase: config.repository.passphrase });
    log.info("repository.created", { path: repoPath, encrypted: config.repository.passphrase !== undefined });
  }
  const repo = await openRepository(repoPath, { passphrase: config.repository.passphrase, workers: 0 });
  await makeDirectories(config.stateDir, 0o700).catch((e: Error) => {
    throw new KlioError("bad-config", `cannot create the state directory ${config.stateDir}: ${e.message}`);
  });
  const storage = new FsStorage(repoPath);
  const store = new StateStore(config.stateDir, log);
  const jobs = new JobTable();
  const offsite = config.offsite ? new OffsiteRunner(config.offsite, repoPath, withFields(log, { offsite: config.offsite.url })) : null;
  const keeper = new RepositoryKeeper(config, repo, jobs, offsite, log);
  for (const c of config.clusters) {
    const stored = await readStoredPolicy(repoPath, c.name).catch(() => null);
    if (stored && c.retention) log.warn("retention.config_overridden", { cluster: c.name, detail: "a policy set in the repository (klio retention set, the API) applies instead of the config's" });
  }
  const supervisors = new Map<string, ClusterSupervisor>();
  for (const c of config.clusters) supervisors.set(c.name, new ClusterSupervisor(c, { config, log, store, jobs, keeper }, await store.load(c.name)));
  for (const s of supervisors.values()) s.start();
  offsite?.start();
  await keeper.start();
  log.info("server.started", { repository: repoPath, clusters: config.clusters.map((c) => c.name) });
  let stopping: Promise<void> | null = null;
  return {
    config, startedAt: new Date(), supervisors, jobs, offsite, keeper, repo, storage,
    stop() {
      stopping ??= (async () => {
        await Promise.all([...[...supervisors.values()].map((s) => s.stop()), offsite?.stop(), keeper.stop()]);
        await repo.close();
        await storage.close();
      })();
      return stopping;
    },
  };
}
