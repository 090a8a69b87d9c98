import type { Command } from "../command.ts";
import { KlioError } from "../../util/errors.ts";
import { createLogger, parseLogLevel } from "../../util/log.ts";
import { parseConnInfo } from "../../pg/conninfo.ts";
import { pgFlag } from "../pg-flag.ts";
import { parseLsn } from "../../pg/lsn.ts";
import { validateSlotName } from "../../pg/replication-commands.ts";
import { validateClusterName } from "../../wal/archive-layout.ts";
import { repoFlag } from "../repo-location.ts";
import { runReceiver } from "../../wal/receiver.ts";

export const command: Command = {
  spec: {
    name: "wal stream",
    summary: "Stream WAL from a PostgreSQL server into the repository over physical replication, until stopped (SIGINT/SIGTERM).",
    usage: "klio wal stream --repo DIR --cluster NAME [--pg CONNSTR] [--slot klio] [--create-slot] [--synchronous]",
    flags: {
      repo: repoFlag("wal stream", { help: "the repository directory (its WAL archive is created if missing)", why: "writes WAL into it, and an S3 copy or the appliance's API can only be read" }),
      cluster: { kind: "string", value: "NAME", help: "name of the cluster in the repository", required: true },
      pg: pgFlag("the primary (or a standby)"),
      slot: { kind: "string", value: "NAME", help: "physical replication slot", default: "klio" },
      "create-slot": { kind: "boolean", help: "create the slot (RESERVE_WAL) if it does not exist" },
      synchronous: { kind: "boolean", help: "fsync and report after every message batch (for synchronous_standby_names)" },
      "status-interval": { kind: "number", value: "SECONDS", help: "seconds between status updates when idle; no answer for 3 intervals = dead connection", default: 10 },
      endpos: { kind: "string", value: "LSN", help: "stop once WAL up to this position is archived and fsync'd (like pg_receivewal --endpos)" },
      "application-name": { kind: "string", value: "NAME", help: "application_name the server sees (default: the connection string's, else klio)" },
      "log-format": { kind: "string", value: "text|json", help: "log line format (default text on a terminal, json otherwise)" },
      "log-level": { kind: "string", value: "LEVEL", help: "debug, info, warn or error", default: "info" },
    },
    details: [
      "The flush position reported to the server is always one that is fsync'd in the archive.",
      "Asynchronous (default): WAL is fsync'd and reported at least once a second while it flows.",
      "Synchronous: set synchronous_standby_names = 'klio' (the application name) on the primary for zero RPO.",
      "Failover: give every server that may be primary, --pg 'host=db1,db2 target_session_attrs=primary': the receiver",
      "reconnects through the list (every 5 s at most) and follows the promoted one onto its timeline; WAL the archive holds",
      "past the new primary's fork point stays under the old timeline (wal status shows the fork; restore --target-timeline).",
    ].join("\n"),
  },
  async run(args, ctx) {
    const f = args.flags;
    const cluster = validateClusterName(String(f.cluster));
    const slot = validateSlotName(String(f.slot));
    const level = parseLogLevel(String(f["log-level"]));
    if (!level) throw new KlioError("usage", `wal stream: --log-level must be debug, info, warn or error, got "${f["log-level"]}"`);
    const format = f["log-format"] ?? (ctx.isTTY ? "text" : "json");
    if (format !== "text" && format !== "json") throw new KlioError("usage", `wal stream: --log-format must be text or json, got "${format}"`);
    const interval = Number(f["status-interval"]);
    if (!(interval >= 1 && interval <= 3600)) throw new KlioError("usage", `wal stream: --status-interval must be between 1 and 3600 seconds, got ${interval}`);
    const conninfo = parseConnInfo(String(f.pg ?? ""), ctx.env, { application_name: "klio" });
    if (f["application-name"] !== undefined) conninfo.application_name = String(f["application-name"]);
    const log = createLogger({ write: ctx.stderr, format, level, base: { cluster } });
    await runReceiver({
      repo: String(f.repo), cluster, conninfo, slot,
      createSlot: Boolean(f["create-slot"]), synchronous: Boolean(f.synchronous),
      statusIntervalMs: interval * 1000,
      endpos: f.endpos === undefined ? undefined : parseLsn(String(f.endpos)),
      log, signal: ctx.signal,
    });
    log.info("wal.stopped", {});
    return 0;
  },
};
