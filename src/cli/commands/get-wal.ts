// `klio get-wal WALNAME TARGET`: PostgreSQL's restore_command. The exit status is a contract
// with PostgreSQL, which reads 1 (any status up to 125) as "this file does not exist" and then
// ends recovery and promotes: 0 with the exact, verified original bytes in TARGET; 1 only when
// the archive definitely does not have the file; 2 for a name that is no WAL file name; and
// for anything else (damaged or foreign data, a network error, an HTTP error other than 404, a
// timeout, an unreadable repository), after retrying what may pass for --retry-for seconds,
// GET_WAL_FATAL (above 125): recovery stops with an error instead of promoting. With --spool, the
// segment comes from the spool when the background prefetcher has it ready (a rename), and
// the first call starts that prefetcher (`get-wal WALNAME --prefetcher`, detached).
// PostgreSQL runs this once per segment: everything not needed for one call is loaded lazily
// (our own modules only: the single executable cannot import() a node: builtin at run time).
import { appendFileSync } from "node:fs";
import { rename, unlink } from "node:fs/promises";
import path from "node:path";
import process from "node:process";
import type { Command, CliContext } from "../command.ts";
import type { ParsedArgs } from "../args.ts";
import { isKlioError, KlioError } from "../../util/errors.ts";
import { sleep } from "../../util/sleep.ts";
import { TEMP_SUFFIX } from "../../util/durable-fs.ts";
import { classifyWalName, parseWalRequest } from "../../wal/archive-reader.ts";
import { validateClusterName } from "../../wal/archive-layout.ts";
import { repoFlag } from "../repo-location.ts";
import { openWalSource, type WalSource } from "../../wal/wal-source.ts";

/** get-wal's status for every failure but "missing": above 125, which PostgreSQL treats as fatal. */
export const GET_WAL_FATAL = 200;
/** How long get-wal retries failures that may pass (network, HTTP 5xx/429, timeouts). */
export const DEFAULT_RETRY_SECONDS = 60;
import { isApiLocation } from "../../util/api-client.ts";
import { TOKEN_FILE_FLAG, tokenFromFlags } from "../secret-files.ts";
import { S3_FLAGS, s3FlagsToPass, s3OptionsFromFlags } from "../s3-flags.ts";
import { isS3Location, parseS3Url, S3Storage } from "../../repo/s3-storage.ts";
import {
  DEFAULT_IDLE_SECONDS, DEFAULT_PREFETCH, LOG_FILE, livePrefetcher, noteServed, openSpool, startPrefetcher, takeSpooled, type Spool,
} from "../../wal/wal-spool.ts";
import { makeDirectories } from "../../util/make-directories.ts";

export const command: Command = {
  spec: {
    name: "get-wal",
    summary: "Fetch a WAL segment or timeline history file from the archive (a PostgreSQL restore_command).",
    usage: "klio get-wal WALNAME TARGET --repo DIR|URL [--cluster NAME] [--partial] [--retry-for SECONDS] [--spool DIR [--prefetch N] [--prefetch-idle SECONDS]]",
    positionals: [
      { name: "WALNAME", help: "file PostgreSQL asks for (%f), e.g. 000000010000000000000003 or 00000002.history" },
      { name: "TARGET", help: "where to write it (%p)", required: false },
    ],
    flags: {
      repo: repoFlag("get-wal", { remote: ["api", "s3"] }),
      ...TOKEN_FILE_FLAG,
      ...S3_FLAGS,
      cluster: { kind: "string", value: "NAME", help: "cluster name (needed when the repository holds several)" },
      partial: { kind: "boolean", help: "serve the newest .partial segment when the complete one is not archived" },
      "retry-for": { kind: "number", value: "SECONDS", help: "keep retrying network errors, HTTP 5xx/429 and timeouts this long before failing recovery", default: DEFAULT_RETRY_SECONDS },
      spool: { kind: "string", value: "DIR", help: "keep the next segments ready here (a background prefetcher); inside pg_wal, e.g. DATA/pg_wal/klio-spool" },
      prefetch: { kind: "number", value: "N", help: "segments the prefetcher keeps ready (0: use the spool, start no prefetcher)", default: DEFAULT_PREFETCH },
      "prefetch-idle": { kind: "number", value: "SECONDS", help: "the prefetcher leaves after this long without a request", default: DEFAULT_IDLE_SECONDS },
      prefetcher: { kind: "boolean", help: "run as the background prefetcher (get-wal starts it itself; no TARGET)" },
    },
    details:
      "Exit status: 0 the file is in TARGET (verified); 1 the archive does not have it (PostgreSQL then ends\n" +
      `recovery); 2 not a WAL file name; ${GET_WAL_FATAL} anything else (damaged data, network or HTTP errors after\n` +
      "--retry-for seconds of retries): PostgreSQL treats it as fatal and stops recovery instead of promoting.\n" +
      "Example restore_command:\n" +
      "  restore_command = '/usr/local/bin/klio get-wal %f %p --repo /var/lib/klio/repo --cluster db1 --partial --spool pg_wal/klio-spool'\n" +
      "With --spool the first call starts a prefetcher that keeps the next --prefetch segments of the same\n" +
      "timeline decompressed and verified in the spool (complete segments only, never past the archive's\n" +
      "end); later calls rename them into place. The prefetcher leaves when recovery stops asking, and\n" +
      "removes what it spooled. If it dies, get-wal reads the archive and starts a new one.",
  },
  async run(args, ctx) {
    const [walName, target] = args.positionals as [string, string | undefined];
    // A name that is no WAL file name is refused before anything else is looked at.
    classifyWalName(walName, false);
    const prefetch = intFlag(args, "prefetch", 0, 10_000);
    const idleSeconds = numFlag(args, "prefetch-idle", 0.1, 86_400);
    const retrySeconds = numFlag(args, "retry-for", 0, 86_400);
    const spoolFlag = args.flags.spool as string | undefined;
    if (args.flags.prefetcher) {
      if (target !== undefined) throw new KlioError("usage", "get-wal: --prefetcher takes no TARGET");
      if (spoolFlag === undefined) throw new KlioError("usage", "get-wal: --prefetcher needs --spool");
      return await runPrefetcherProcess(args, walName, spoolFlag, prefetch, idleSeconds, ctx);
    }
    if (target === undefined) throw new KlioError("usage", `get-wal: missing TARGET (usage: ${command.spec.usage})`);
    if (args.flags.cluster !== undefined) validateClusterName(String(args.flags.cluster));
    try {
      return await serve(args, ctx, walName, target, { spoolFlag, prefetch, idleSeconds, retryMs: retrySeconds * 1000 });
    } catch (e) {
      const why = isKlioError(e) ? e.message : e instanceof Error ? e.message : String(e);
      ctx.stderr(`klio: get-wal: cannot restore ${walName}: ${why}; recovery must stop here (exit ${GET_WAL_FATAL}), not promote\n`);
      return GET_WAL_FATAL;
    }
  },
};

interface ServeOptions {
  spoolFlag: string | undefined;
  prefetch: number;
  idleSeconds: number;
  retryMs: number;
}

async function serve(args: ParsedArgs, ctx: CliContext, walName: string, target: string, o: ServeOptions): Promise<number> {
  const repo = String(args.flags.repo);
  const tokenFile = (args.flags["token-file"] as string | undefined) ?? ctx.env.KLIO_TOKEN_FILE;
  const token = await tokenFromFlags(args.flags, ctx);
  const s3Options = isS3Location(repo) ? await s3OptionsFromFlags(args.flags, ctx) : undefined;
  const retrying = <T>(what: string, op: () => Promise<T>) => withRetries(what, o.retryMs, ctx, op);
  const archive = await retrying("open the archive", () =>
    openWalSource(repo, args.flags.cluster as string | undefined, { token, s3: s3Options && (async () => S3Storage.open(parseS3Url(repo), s3Options)) }));
  const req = parseWalRequest(walName, archive.identity.walSegmentSize, Boolean(args.flags.partial));
  const spool = o.spoolFlag === undefined ? undefined : openSpool(o.spoolFlag, archive.location, archive.identity.systemIdentifier);
  const useSpool = spool !== undefined && req.kind === "segment";
  const prefetcher = { repo, tokenFile, s3Flags: s3FlagsToPass(args.flags, ctx.env, (p) => path.resolve(p)), prefetch: o.prefetch, idleSeconds: o.idleSeconds };
  if (useSpool) {
    if (await spoolStep(ctx, "take a segment from", () => takeSpooled(spool, req.name, target))) {
      await spoolStep(ctx, "update", async () => {
        await noteServed(spool, req.name);
        await ensurePrefetcher(spool, archive, req.name, prefetcher);
      });
      return 0;
    }
    // Not ready (the first call, or the prefetcher is behind or gone): a new prefetcher starts
    // up while we read this segment ourselves. Not after a partial segment: nothing complete
    // follows it yet.
    await spoolStep(ctx, "start a prefetcher for", async () => {
      if (await archive.hasComplete(req.name)) await ensurePrefetcher(spool, archive, req.name, prefetcher);
    });
  }
  // Never leave a half-written file under the name PostgreSQL will read.
  const tmp = `${target}.${process.pid}${TEMP_SUFFIX}`;
  let found;
  try {
    found = await retrying(`fetch ${walName}`, () => archive.copy(req, tmp));
    if (found) await rename(tmp, target);
  } finally {
    if (!found) await unlink(tmp).catch(() => {});
  }
  if (!found) {
    ctx.stderr(`klio: get-wal: ${walName} is not in the archive of cluster ${archive.cluster}\n`);
    return 1;
  }
  if (useSpool) await spoolStep(ctx, "update", () => noteServed(spool, req.name));
  return 0;
}

/** Failures that may pass by themselves: the network, a restarting appliance, a proxy, S3. */
const TRANSIENT = new Set(["unreachable", "http-unavailable", "timeout"]);

/**
 * Runs `op`, retrying transient failures with a growing pause (0.5 s doubling to 10 s) until
 * `windowMs` has passed since the first try; then the last failure stands.
 */
async function withRetries<T>(what: string, windowMs: number, ctx: CliContext, op: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + windowMs;
  for (let pause = 500; ; pause = Math.min(pause * 2, 10_000)) {
    try {
      return await op();
    } catch (e) {
      if (!(isKlioError(e) && TRANSIENT.has(e.code)) || Date.now() + pause > deadline || ctx.signal.aborted) throw e;
      ctx.stderr(`klio: get-wal: could not ${what} (${e.message}); trying again in ${pause / 1000} s\n`);
      await sleep(pause, ctx.signal);
    }
  }
}

/** Starts a prefetcher that keeps the segments after `name` ready, unless one runs. */
async function ensurePrefetcher(spool: Spool, archive: WalSource, name: string, o: { repo: string; tokenFile: string | undefined; s3Flags: string[]; prefetch: number; idleSeconds: number }): Promise<void> {
  if (o.prefetch === 0 || (await livePrefetcher(spool)) !== undefined) return;
  const { selfCommand } = await import("../../util/self-command.ts");
  await startPrefetcher(spool, [
    ...selfCommand(), "get-wal", name, "--prefetcher", "--repo", isApiLocation(o.repo) || isS3Location(o.repo) ? o.repo : path.resolve(o.repo),
    ...(o.tokenFile === undefined ? [] : ["--token-file", path.resolve(o.tokenFile)]), ...o.s3Flags,
    "--cluster", archive.cluster, "--spool", spool.root, "--prefetch", String(o.prefetch), "--prefetch-idle", String(o.idleSeconds),
  ]);
}

/** The spool only ever saves time: trouble with it is reported, and the archive serves. */
async function spoolStep<T>(ctx: CliContext, what: string, step: () => Promise<T>): Promise<T | false> {
  try {
    return await step();
  } catch (e) {
    ctx.stderr(`klio: get-wal: warning: could not ${what} the spool (${(e as Error).message}); using the archive\n`);
    return false;
  }
}

async function runPrefetcherProcess(args: ParsedArgs, from: string, spoolDir: string, window: number, idleSeconds: number, ctx: CliContext): Promise<number> {
  const repo = String(args.flags.repo);
  const archive = await openWalSource(repo, args.flags.cluster as string | undefined, {
    token: await tokenFromFlags(args.flags, ctx),
    s3: isS3Location(repo) ? async () => S3Storage.open(parseS3Url(repo), await s3OptionsFromFlags(args.flags, ctx)) : undefined,
  });
  const req = parseWalRequest(from, archive.identity.walSegmentSize, false);
  if (req.kind !== "segment") throw new KlioError("usage", "get-wal: --prefetcher starts after a WAL segment, not a history file");
  const spool = openSpool(spoolDir, archive.location, archive.identity.systemIdentifier);
  const [{ createLogger }, { runPrefetcher }] = await Promise.all([import("../../util/log.ts"), import("../../wal/wal-prefetch.ts")]);
  await makeDirectories(spool.root, 0o700);
  const logFile = path.join(spool.root, LOG_FILE);
  const log = createLogger({ write: (line) => appendFileSync(logFile, line), format: "json", level: "info", base: { cluster: archive.cluster } });
  try {
    await runPrefetcher({ source: archive, spool, from: req.name, window, idleMs: idleSeconds * 1000, pid: process.pid, log, signal: ctx.signal });
    return 0;
  } catch (e) {
    log.error("prefetch.failed", { error: e instanceof Error ? e.message : String(e) });
    return 1;
  }
}

function numFlag(args: ParsedArgs, name: string, min: number, max: number): number {
  const v = args.flags[name] as number;
  if (!(v >= min && v <= max)) throw new KlioError("usage", `get-wal: --${name} must be between ${min} and ${max}, got ${v}`);
  return v;
}

function intFlag(args: ParsedArgs, name: string, min: number, max: number): number {
  const v = numFlag(args, name, min, max);
  if (!Number.isInteger(v)) throw new KlioError("usage", `get-wal: --${name} must be a whole number, got ${v}`);
  return v;
}
