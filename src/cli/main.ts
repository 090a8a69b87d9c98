// The klio executable's entry point. Commands are loaded lazily so that a short command
// such as `get-wal` (run by PostgreSQL once per WAL segment) pays only for what it uses.
import process from "node:process";
import { parseArgs } from "./args.ts";
import { helpText } from "./help-text.ts";
import type { CliContext, Command } from "./command.ts";
import { isKlioError } from "../util/errors.ts";
import { VERSION } from "../util/version.ts";
import { keepYoungGenerationSmall } from "../util/heap.ts";
import { failureLine } from "./failure-line.ts";

type Loader = () => Promise<{ command: Command }>;

const COMMANDS: Record<string, { summary: string; load: Loader }> = {
  init: { summary: "create a repository (optionally encrypted)", load: () => import("./commands/init.ts") },
  "wal stream": { summary: "stream WAL from a primary into the repository (foreground)", load: () => import("./commands/wal-stream.ts") },
  "wal status": { summary: "show the WAL archive's position, timelines, segments and gaps", load: () => import("./commands/wal-status.ts") },
  "get-wal": { summary: "fetch a WAL segment or history file (PostgreSQL restore_command)", load: () => import("./commands/get-wal.ts") },
  "backup run": { summary: "take a hot base backup into the repository", load: () => import("./commands/backup-run.ts") },
  "backup list": { summary: "list backups", load: () => import("./commands/backup-list.ts") },
  "backup show": { summary: "show one backup", load: () => import("./commands/backup-show.ts") },
  "backup verify": { summary: "check a backup against PostgreSQL's backup_manifest", load: () => import("./commands/backup-verify.ts") },
  "backup delete": { summary: "delete a backup", load: () => import("./commands/backup-delete.ts") },
  "backup pin": { summary: "keep a backup whatever the retention policy says", load: () => import("./commands/backup-pin.ts") },
  "backup unpin": { summary: "let the retention policy decide about a backup again", load: () => import("./commands/backup-unpin.ts") },
  "retention get": { summary: "show the clusters' retention policies and pinned backups", load: () => import("./commands/retention-get.ts") },
  "retention set": { summary: "set a cluster's retention policy", load: () => import("./commands/retention-set.ts") },
  "retention apply": { summary: "delete the backups and WAL the retention policy does not keep", load: () => import("./commands/retention-apply.ts") },
  "repo maintenance": { summary: "free the space of data no backup uses (safe while backups run)", load: () => import("./commands/repo-maintenance.ts") },
  "repo check": { summary: "check the repository (--read-data: every chunk)", load: () => import("./commands/repo-check.ts") },
  "offsite sync": { summary: "copy the repository to S3-compatible storage (once or continuously)", load: () => import("./commands/offsite-sync.ts") },
  "offsite status": { summary: "show what the S3 copy lacks", load: () => import("./commands/offsite-status.ts") },
  "offsite verify": { summary: "compare the S3 copy with the local repository (sizes and checksums)", load: () => import("./commands/offsite-verify.ts") },
  "server start": { summary: "run the appliance daemon (WAL receivers, scheduled backups, HTTP API)", load: () => import("./commands/server-start.ts") },
  "repo export": { summary: "write a self-contained copy of chosen backups and their WAL (air-gapped restore)", load: () => import("./commands/repo-export.ts") },
  restore: { summary: "restore a backup to a point in time into a new data directory", load: () => import("./commands/restore.ts") },
};

function topHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length)) + 2;
  const lines = [
    `klio ${VERSION}: a PostgreSQL backup appliance in one executable`,
    "",
    "Usage: klio COMMAND [flags]   (klio COMMAND --help for its flags)",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`),
    "",
    "  --version   print the version",
  ];
  return lines.join("\n") + "\n";
}

function findCommand(argv: string[]): { name: string; rest: string[] } | undefined {
  for (const words of [2, 1]) {
    const name = argv.slice(0, words).join(" ");
    if (COMMANDS[name]) return { name, rest: argv.slice(words) };
  }
  return undefined;
}

export async function main(argv: string[], ctx: CliContext): Promise<number> {
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    ctx.stdout(topHelp());
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] === "--version" || argv[0] === "version") {
    ctx.stdout(`klio ${VERSION}\n`);
    return 0;
  }
  const found = findCommand(argv);
  if (!found) {
    const group = Object.keys(COMMANDS).filter((n) => n.startsWith(argv[0] + " "));
    const hint = group.length ? ` (did you mean: ${group.map((g) => `klio ${g}`).join(", ")}?)` : " (see klio --help)";
    ctx.stderr(`klio: unknown command "${argv.slice(0, 2).join(" ")}"${hint}\n`);
    return 2;
  }
  try {
    const { command } = await COMMANDS[found.name]!.load();
    const args = parseArgs(command.spec, found.rest);
    if (args.help) {
      ctx.stdout(helpText(command.spec));
      return 0;
    }
    return await command.run(args, ctx);
  } catch (e) {
    if (isKlioError(e)) {
      ctx.stderr(`klio: ${e.message}\n`);
      // Another process holds the lock (a backup of the cluster, a receiver): busy.
      if (e.code === "busy") return 4;
      // Bad input (flags, connection strings, names, files) is exit 2, like a usage error.
      return e.code === "usage" || e.code.startsWith("bad-") ? 2 : 1;
    }
    const failure = failureLine(e, ctx.env.KLIO_DEBUG === "1");
    ctx.stderr(failure.text);
    return failure.exitCode;
  }
}

function cliContext(): CliContext {
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return {
    env: process.env,
    stdout: (t) => void process.stdout.write(t),
    stderr: (t) => void process.stderr.write(t),
    isTTY: Boolean(process.stderr.isTTY),
    signal: controller.signal,
  };
}

/** A failure outside the command's own promise (a stray callback or rejection): one line too. */
function exitOnStrayFailure(e: unknown): void {
  const failure = failureLine(e, process.env.KLIO_DEBUG === "1");
  process.stderr.write(failure.text);
  process.exit(failure.exitCode);
}

keepYoungGenerationSmall();
process.on("uncaughtException", exitOnStrayFailure);
process.on("unhandledRejection", exitOnStrayFailure);
main(process.argv.slice(2), cliContext()).then(
  (code) => {
    process.exitCode = code;
    // Long-running commands leave no handles; short ones must not wait for stray timers.
    setImmediate(() => process.exit(code));
  },
  exitOnStrayFailure,
);
