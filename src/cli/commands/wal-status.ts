import type { Command } from "../command.ts";
import { openClusterArchive } from "../../wal/archive-reader.ts";
import { repoFlag } from "../repo-location.ts";
import { walStatus, type WalStatus } from "../../wal/archive-status.ts";

function human(s: WalStatus): string {
  const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;
  const lines = [
    `cluster            ${s.cluster} (system identifier ${s.systemIdentifier}, ${mb(s.walSegmentSize)} segments)`,
    `timeline           ${s.timeline ?? "-"}`,
    `received / flushed ${s.receivedLsn ?? "-"} / ${s.flushedLsn ?? "-"}   (server at ${s.serverWalEnd ?? "-"}, lag ${s.lagBytes === null ? "-" : mb(s.lagBytes)}, as of ${s.updatedAt ?? "never"})`,
    `segments           ${s.segments.stored} stored, ${s.segments.uncompressed} awaiting compression, ${s.segments.partial} partial`,
    `range              ${s.firstSegment ?? "-"} … ${s.lastSegment ?? "-"}   timelines ${s.timelines.join(", ") || "-"}`,
    `gaps               ${s.gaps.length === 0 ? "none" : s.gaps.length}`,
    ...s.gaps.map((g) => `  GAP timeline ${g.timeline}: ${g.from} … ${g.to}: ${g.reason}`),
    `timeline forks     ${s.forks.length === 0 ? "none" : s.forks.length}`,
    ...s.forks.map((f) =>
      `  FORK timeline ${f.timeline} at ${f.forkLsn} (timeline ${f.nextTimeline} follows, seen on ${f.server} ${f.detectedAt}): the archive keeps ${f.bytesPastFork} bytes of timeline ${f.timeline} past it, ` +
      `the old primary's WAL the new one never had; restore them with --target-timeline ${f.timeline}`),
    `damaged / foreign  ${s.problems.length === 0 ? "none" : `${s.problems.filter((p) => p.kind === "damaged").length} / ${s.problems.filter((p) => p.kind === "foreign").length}`}`,
    ...s.problems.map((p) => `  ${p.kind.toUpperCase()} ${p.file}: ${p.problem}`),
  ];
  return lines.join("\n") + "\n";
}

export const command: Command = {
  spec: {
    name: "wal status",
    summary: "Show a cluster's WAL archive: last received and flushed position, timeline, segments, gaps and timeline forks.",
    usage: "klio wal status --repo DIR [--cluster NAME] [--read-data] [--json]",
    flags: {
      repo: repoFlag("wal status", { why: "reads the WAL archive of a repository directory (get-wal reads the others)" }),
      cluster: { kind: "string", value: "NAME", help: "cluster name (needed when the repository holds several)" },
      "read-data": { kind: "boolean", help: "read and verify every segment and history file (by default: sizes, headers, checksum files, and damage readers met)" },
      json: { kind: "boolean", help: "print JSON for scripts" },
    },
    details:
      "Exit status 3 when there are gaps (recorded, or holes in the sequence of segments) or damaged or foreign\n" +
      "files (never served to PostgreSQL), so that a monitoring check can alert on it; 0 otherwise.",
  },
  async run(args, ctx) {
    const archive = await openClusterArchive(String(args.flags.repo), args.flags.cluster as string | undefined);
    const status = await walStatus(archive, { readData: Boolean(args.flags["read-data"]) });
    ctx.stdout(args.flags.json ? JSON.stringify(status, null, 2) + "\n" : human(status));
    return status.gaps.length || status.problems.length ? 3 : 0;
  },
};
