// The API's request and response shapes, as typebox schemas: the same objects validate
// requests (compiled) and describe the API in /openapi.json.
import { Type, type Static } from "@sinclair/typebox";

export const ErrorBody = Type.Object({
  error: Type.String({ description: "a stable code, e.g. not-found, busy, bad-request" }),
  detail: Type.String({ description: "what went wrong, for a person" }),
});

export const ClusterName = Type.String({ pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$" });
export const BackupId = Type.String({ pattern: "^\\d{8}T\\d{6}Z(-\\d+)?$" });
export const JobId = Type.String({ pattern: "^\\d{8}T\\d{6}-[0-9a-f]{8}$" });
export const WalName = Type.String({ pattern: "^([0-9A-F]{24}(\\.partial)?|[0-9A-F]{8}\\.history)$" });

export const StartBackupBody = Type.Object({
  name: Type.Optional(Type.String({ maxLength: 200, pattern: "^[^\\x00-\\x1f]*$", description: "a label kept with the backup" })),
  kind: Type.Optional(Type.Union([Type.Literal("full"), Type.Literal("incremental")], {
    description: "full: a full backup whatever the defaults; incremental: fail unless one can be taken. Left out: incremental where the server (PostgreSQL 17+, summarize_wal) and the repository allow it, else full",
  })),
}, { additionalProperties: false });
export type StartBackupBody = Static<typeof StartBackupBody>;

const ErrorRecord = Type.Object({ at: Type.String(), code: Type.String(), message: Type.String() });
const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);

export const Job = Type.Object({
  id: JobId,
  kind: Type.Union([Type.Literal("backup"), Type.Literal("maintenance")]),
  cluster: Nullable(ClusterName),
  trigger: Type.Union([Type.Literal("schedule"), Type.Literal("api")]),
  state: Type.Union([Type.Literal("running"), Type.Literal("succeeded"), Type.Literal("failed")]),
  startedAt: Type.String(),
  finishedAt: Nullable(Type.String()),
  progress: Nullable(Type.Object({ phase: Type.String(), doneBytes: Type.Number(), totalBytes: Nullable(Type.Number()) })),
  backupId: Nullable(BackupId),
  result: Type.Unknown({ description: "what maintenance reported (bytes freed, packs removed and rewritten, …)" }),
  error: Nullable(Type.Object({ code: Type.String(), message: Type.String() })),
});

export const Backup = Type.Object({
  id: BackupId, cluster: ClusterName, name: Nullable(Type.String()), startTime: Type.String(), endTime: Type.String(),
  startLsn: Type.String(), endLsn: Type.String(), timeline: Type.Integer(), pgVersion: Type.Integer(), fromStandby: Type.Boolean(),
  kind: Type.Union([Type.Literal("full"), Type.Literal("incremental")], { description: "incremental: PostgreSQL sent only the blocks changed since `parent`; the backup restores alone all the same" }),
  parent: Nullable(BackupId),
  files: Type.Integer(),
  bytes: Type.Number({ description: "bytes of all files of the backup (what a restore writes)" }),
  sentBytes: Type.Number({ description: "bytes PostgreSQL sent for it" }),
  newBytes: Type.Number({ description: "bytes of data the repository did not hold before" }),
  storedBytes: Type.Number({ description: "what that new data takes in the repository (compressed, encrypted)" }),
});

export const Receiver = Type.Object({
  state: Type.Union(["starting", "streaming", "reconnecting", "restarting", "disk-full", "stopped"].map((s) => Type.Literal(s))),
  server: Type.String({ description: "the connection string's servers, user@host:port,…" }),
  streamingFrom: Nullable(Type.String({ description: "of those, the one the receiver streams from (null while it does not)" })),
  slot: Type.String(),
  synchronous: Type.Boolean(),
  timeline: Nullable(Type.Integer()),
  flushedLsn: Nullable(Type.String()),
  serverWalEnd: Nullable(Type.String()),
  lagBytes: Nullable(Type.Number()),
  lagSeconds: Nullable(Type.Number()),
  updatedAt: Nullable(Type.String()),
  lastSegment: Nullable(Type.String()),
  lastError: Nullable(ErrorRecord),
  restarts: Type.Integer(),
});

export const Cluster = Type.Object({
  name: ClusterName,
  receiver: Receiver,
  schedule: Nullable(Type.String()),
  nextBackupAt: Nullable(Type.String()),
  runningJob: Nullable(JobId),
  lastBackup: Nullable(Type.Object({ id: Nullable(BackupId), jobId: Type.String(), startedAt: Type.String(), finishedAt: Type.String(), ok: Type.Boolean(), error: Type.Optional(ErrorRecord) })),
  backupFailures: Type.Integer(),
});

export const Status = Type.Object({
  version: Type.String(),
  startedAt: Type.String(),
  uptimeSeconds: Type.Number(),
  repository: Type.String(),
  clusters: Type.Array(Cluster),
});

export const WalArchive = Type.Object({
  cluster: ClusterName,
  receiver: Receiver,
  archive: Nullable(Type.Object({
    systemIdentifier: Type.String(),
    walSegmentSize: Type.Integer(),
    segments: Type.Object({ stored: Type.Integer(), uncompressed: Type.Integer(), partial: Type.Integer() }),
    firstSegment: Nullable(Type.String()),
    lastSegment: Nullable(Type.String()),
    timelines: Type.Array(Type.Integer()),
    gaps: Type.Array(Type.Object({ timeline: Type.Integer(), from: Type.String(), to: Type.String(), reason: Type.String() })),
    forks: Type.Array(Type.Object({
      timeline: Type.Integer(), forkLsn: Type.String(), nextTimeline: Type.Integer(), archivedEnd: Type.String(), bytesPastFork: Type.Number(), detectedAt: Type.String(), server: Type.String(),
    }, { description: "the archive holds WAL of `timeline` past where the new primary left it (a failover to a standby that was behind): the old primary's, restorable with --target-timeline" })),
    problems: Type.Array(Type.Object({ file: Type.String(), kind: Type.Union([Type.Literal("damaged"), Type.Literal("foreign"), Type.Literal("missing")]), problem: Type.String() })),
    end: Nullable(Type.Object({
      lsn: Type.String(), time: Nullable(Type.String()), basis: Type.String(),
    }, { description: "where the archive ends: a restore refuses a target time or LSN past it" })),
  })),
});

const Count = Type.Integer({ minimum: 1, maximum: 100_000 });
export const RetentionPolicyBody = Type.Object({
  recoveryWindow: Type.Optional(Type.String({ pattern: "^\\d{1,9}[smhdw]$", description: "keep what recovery to any moment of this window needs, e.g. 7d" })),
  full: Type.Optional({ ...Count, description: "the newest N full backups" }),
  keepLatest: Type.Optional({ ...Count, description: "the newest N backups" }),
  keepDaily: Type.Optional({ ...Count, description: "the newest backup of each of the last N days that have one (UTC)" }),
  keepWeekly: Type.Optional(Count),
  keepMonthly: Type.Optional(Count),
  minBackups: Type.Optional({ ...Count, description: "never fewer backups (default 1)" }),
}, { additionalProperties: false });

export const DryRunBody = Type.Object({
  dryRun: Type.Optional(Type.Boolean({ description: "only report what would be done" })),
}, { additionalProperties: false });
export type DryRunBody = Static<typeof DryRunBody>;
