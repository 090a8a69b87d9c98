// GET /metrics: Prometheus text exposition (version 0.0.4) of what an operator alerts on —
// receiver lag and state (a full disk included), the last archived segment, the age and size
// of the last backup, failures, retention and maintenance, the repository's size on disk and
// the free space of its file system.
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { listSnapshots } from "../backup/snapshot.ts";
import type { Daemon } from "../server/daemon.ts";
import { lagSeconds } from "../server/supervisor.ts";
import { isKlioError } from "../util/errors.ts";
import { openClusterArchive } from "../wal/archive-reader.ts";
import { inspectArchive } from "../wal/archive-verify.ts";
import { readForks } from "../wal/archive-meta.ts";
import { clusterWalDir } from "../wal/archive-layout.ts";

const DISK_FACTS_TTL_MS = 60_000;

interface Family {
  name: string;
  help: string;
  type: "gauge" | "counter";
  samples: { labels?: Record<string, string>; value: number }[];
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

export function renderMetrics(families: Family[]): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const labels = s.labels && Object.keys(s.labels).length ? `{${Object.entries(s.labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}` : "";
      out.push(`${f.name}${labels} ${Number.isFinite(s.value) ? String(s.value) : "NaN"}`);
    }
  }
  return out.join("\n") + "\n";
}

/** A value worked out from the disk at most once a minute (a scrape comes every few seconds). */
class Refreshed<K> {
  private readonly cached = new Map<K, { at: number; value: number }>();

  constructor(private readonly compute: (key: K) => Promise<number>) {}

  async value(key: K, now = Date.now()): Promise<number> {
    const c = this.cached.get(key);
    if (c && now - c.at < DISK_FACTS_TTL_MS) return c.value;
    const value = await this.compute(key);
    this.cached.set(key, { at: now, value });
    return value;
  }
}

/** What /metrics reads from the disk: the repository's size, and per cluster the WAL files that are damaged or foreign. */
export class DiskFacts {
  readonly repositoryBytes: Refreshed<"repo">;
  readonly walProblems: Refreshed<string>;

  constructor(dir: string) {
    this.repositoryBytes = new Refreshed(() => walk(dir));
    this.walProblems = new Refreshed(async (cluster) => {
      try {
        return (await inspectArchive(await openClusterArchive(dir, cluster))).length;
      } catch (e) {
        if (isKlioError(e) && e.code === "no-archive") return 0;
        throw e;
      }
    });
  }
}

async function walk(dir: string): Promise<number> {
  let total = 0;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0; // vanished while walking: a rename or a removal
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await walk(p);
    else if (e.isFile()) total += await stat(p).then((s) => s.size, () => 0);
  }
  return total;
}

export async function daemonMetrics(d: Daemon, disk: DiskFacts, now = Date.now()): Promise<string> {
  const f = (name: string, type: Family["type"], help: string): Family => ({ name, help, type, samples: [] });
  const lagBytes = f("klio_receiver_lag_bytes", "gauge", "WAL the server had that the archive had not flushed, at the last status update");
  const lagSecs = f("klio_receiver_lag_seconds", "gauge", "0 while the archive holds all the server has; else seconds since it last did");
  const streaming = f("klio_receiver_streaming", "gauge", "1 while the receiver is connected and streaming");
  const serverInfo = f("klio_receiver_server_info", "gauge", "1 for the server the receiver streams from (label server: user@host:port), while it streams");
  const forks = f("klio_wal_timeline_forks", "gauge", "timeline forks the archive holds: WAL of an old primary past the point where the new one left its timeline (see klio wal status)");
  const restarts = f("klio_receiver_restarts_total", "counter", "times the receiver stopped on an error and was restarted");
  const archived = f("klio_wal_segments_archived_total", "counter", "WAL segments completed in the archive since the daemon started");
  const lastSegment = f("klio_wal_last_segment_info", "gauge", "the newest complete WAL segment in the archive (label segment)");
  const backups = f("klio_backups", "gauge", "backups in the repository");
  const lastAge = f("klio_backup_last_age_seconds", "gauge", "seconds since the newest backup ended");
  const lastSize = f("klio_backup_last_size_bytes", "gauge", "bytes of the files in the newest backup");
  const lastStored = f("klio_backup_last_stored_bytes", "gauge", "bytes the newest backup added to the repository");
  const lastSent = f("klio_backup_last_sent_bytes", "gauge", "bytes PostgreSQL sent for the newest backup (an incremental one: the changed blocks)");
  const lastIncremental = f("klio_backup_last_incremental", "gauge", "1 when the newest backup is incremental, 0 when it is full");
  const failures = f("klio_backup_failures_total", "counter", "backups that failed");
  const running = f("klio_backup_running", "gauge", "1 while a backup runs");
  const walProblems = f("klio_wal_damaged_files", "gauge", "WAL files that are damaged or were not written by the receiver (never served; see klio wal status; refreshed each minute)");
  const diskFull = f("klio_receiver_disk_full", "gauge", "1 while the receiver waits for space on the archive's file system (WAL is not acknowledged meanwhile)");
  const retentionDeleted = f("klio_retention_last_deleted_backups", "gauge", "backups the last retention run deleted");
  const retentionWaiting = f("klio_retention_waiting_for_offsite_backups", "gauge", "backups retention would delete but keeps until the offsite copy has them");
  const retentionFailing = f("klio_retention_failing", "gauge", "1 when the last retention run failed");
  for (const [name, s] of d.supervisors) {
    const labels = { cluster: name };
    const r = s.receiver;
    lagBytes.samples.push({ labels, value: r.last ? Number(r.last.serverWalEnd > r.last.flushedLsn ? r.last.serverWalEnd - r.last.flushedLsn : 0n) : NaN });
    lagSecs.samples.push({ labels, value: lagSeconds(r, now) ?? NaN });
    streaming.samples.push({ labels, value: r.state === "streaming" ? 1 : 0 });
    if (r.state === "streaming" && r.streamingFrom !== null) serverInfo.samples.push({ labels: { ...labels, server: r.streamingFrom }, value: 1 });
    forks.samples.push({ labels, value: (await readForks(clusterWalDir(d.config.repository.path, name))).length });
    restarts.samples.push({ labels, value: r.restarts });
    archived.samples.push({ labels, value: r.segmentsArchived });
    if (r.lastSegment) lastSegment.samples.push({ labels: { ...labels, segment: r.lastSegment }, value: 1 });
    const { snapshots } = await listSnapshots(d.repo, name);
    backups.samples.push({ labels, value: snapshots.length });
    const newest = snapshots.at(-1);
    if (newest) {
      lastAge.samples.push({ labels, value: Math.max(0, (now - Date.parse(newest.endTime)) / 1000) });
      lastSize.samples.push({ labels, value: newest.stats.bytes });
      lastStored.samples.push({ labels, value: newest.stats.storedBytes });
      lastSent.samples.push({ labels, value: newest.stats.sentBytes ?? newest.stats.bytes });
      lastIncremental.samples.push({ labels, value: newest.kind === "incremental" ? 1 : 0 });
    }
    failures.samples.push({ labels, value: s.state.backupFailures });
    running.samples.push({ labels, value: s.running ? 1 : 0 });
    diskFull.samples.push({ labels, value: r.state === "disk-full" ? 1 : 0 });
    walProblems.samples.push({ labels, value: await disk.walProblems.value(name, now) });
    const ret = d.keeper.retention.get(name);
    if (ret) {
      retentionDeleted.samples.push({ labels, value: ret.deleted.length });
      retentionWaiting.samples.push({ labels, value: ret.waitingForOffsite.length });
      retentionFailing.samples.push({ labels, value: ret.error ? 1 : 0 });
    }
  }
  const keeper: Family[] = [];
  const k = d.keeper;
  const g = (into: Family[], name: string, type: Family["type"], help: string, value: number | null | undefined) => {
    const fam = f(name, type, help);
    if (value !== null && value !== undefined) fam.samples.push({ value });
    into.push(fam);
  };
  const last = k.lastMaintenance;
  g(keeper, "klio_repository_garbage_bytes", "gauge", "bytes of chunks no backup uses that stay in packs mostly in use, as the last maintenance found (backups deleted since add to it)", last?.bytes.garbageLeft);
  g(keeper, "klio_maintenance_last_success_timestamp_seconds", "gauge", "when maintenance last finished (Unix time)", last ? Date.parse(last.finishedAt) / 1000 : null);
  g(keeper, "klio_maintenance_last_freed_bytes", "gauge", "bytes the last maintenance freed", last?.bytes.freed);
  g(keeper, "klio_maintenance_running", "gauge", "1 while maintenance runs", k.running ? 1 : 0);
  g(keeper, "klio_maintenance_failing", "gauge", "1 when the last maintenance failed", k.lastMaintenanceError ? 1 : 0);
  g(keeper, "klio_maintenance_waiting", "gauge", "1 when the last maintenance left space to free for a backup still running", last?.deferred ? 1 : 0);
  g(keeper, "klio_disk_free_bytes", "gauge", "free bytes on the repository's file system", k.disk?.freeBytes);
  g(keeper, "klio_disk_size_bytes", "gauge", "size of the repository's file system", k.disk?.sizeBytes);
  g(keeper, "klio_disk_low", "gauge", "1 while free space is below the config's low_space_percent", k.disk ? (k.disk.low ? 1 : 0) : null);
  const offsite: Family[] = [];
  if (d.offsite) {
    const v = d.offsite.view;
    g(offsite, "klio_offsite_behind_objects", "gauge", "objects the bucket still lacked when the last pass ended", v.lastPass ? v.lastPass.behind.objects : null);
    g(offsite, "klio_offsite_behind_bytes", "gauge", "bytes the bucket still lacked when the last pass ended", v.lastPass ? v.lastPass.behind.bytes : null);
    g(offsite, "klio_offsite_last_success_timestamp_seconds", "gauge", "when a pass last left the bucket with everything (Unix time)", v.lastSuccessAt ? Date.parse(v.lastSuccessAt) / 1000 : null);
    g(offsite, "klio_offsite_uploaded_bytes_total", "counter", "bytes uploaded since the daemon started", v.uploadedBytes);
    g(offsite, "klio_offsite_failures_total", "counter", "sync passes that failed", v.failures);
    g(offsite, "klio_offsite_failing", "gauge", "1 while the last pass failed", v.state === "failing" ? 1 : 0);
  }
  const size = f("klio_repository_size_bytes", "gauge", "bytes the repository takes on disk (refreshed each minute)");
  size.samples.push({ value: await disk.repositoryBytes.value("repo", now) });
  const up = f("klio_up", "gauge", "1 while the daemon answers");
  up.samples.push({ value: 1 });
  return renderMetrics([
    up, lagBytes, lagSecs, streaming, serverInfo, diskFull, forks, restarts, archived, lastSegment, walProblems, backups, lastAge, lastSize, lastStored, lastSent, lastIncremental, failures, running,
    retentionDeleted, retentionWaiting, retentionFailing, size, ...keeper, ...offsite,
  ]);
}
