import type { Command } from "../command.ts";
import { KlioError } from "../../util/errors.ts";
import { createLogger, parseLogLevel } from "../../util/log.ts";
import path from "node:path";
import { parseConfig, parseConfigText, readConfigText } from "../../server/config.ts";
import { checkConfigFiles } from "../../server/config-files.ts";
import { startDaemon } from "../../server/daemon.ts";
import { createApp } from "../../api/app.ts";
import { listen } from "../../api/listen.ts";

export const command: Command = {
  spec: {
    name: "server start",
    summary: "Run the appliance daemon: WAL receivers, scheduled backups and the HTTP API, until SIGTERM/SIGINT.",
    usage: "klio server start --config FILE [--log-level LEVEL] [--log-format text|json] [--check]",
    flags: {
      config: { kind: "string", value: "FILE", help: "the config file (see appliance/klio.example.json)", default: "/etc/klio/klio.json" },
      "log-level": { kind: "string", value: "LEVEL", help: "debug, info, warn or error (overrides the config's log.level)" },
      "log-format": { kind: "string", value: "text|json", help: "log line format (default: the config's, else text on a terminal and json otherwise)" },
      check: { kind: "boolean", help: "only check the config (every file it names readable, secrets, schedules) and exit: 0 when good, 2 with one line per problem" },
    },
    details: [
      "The repository is created on first start if it does not exist. Each cluster gets a WAL receiver (restarted",
      "with backoff when it stops on an error) and, with backup.schedule, scheduled backups; one cluster's",
      "failure never stops another's. SIGTERM: receivers flush and report their last durable position, a",
      "running backup is abandoned (it leaves nothing visible), then the process exits 0.",
    ].join("\n"),
  },
  async run(args, ctx) {
    const f = args.flags;
    const file = path.resolve(String(f.config));
    const text = await readConfigText(String(f.config));
    let files = 0;
    if (f.check) {
      // Every missing or unreadable file at once, before the first one stops the full parse.
      const { problems, checked } = await checkConfigFiles(parseConfigText(text, file), file);
      for (const p of problems) ctx.stderr(`klio: ${file}: ${p}\n`);
      if (problems.length > 0) return 2;
      files = checked;
    }
    const config = await parseConfig(text, file, ctx.env);
    const levelText = (f["log-level"] as string | undefined) ?? config.log.level ?? "info";
    const level = parseLogLevel(levelText);
    if (!level) throw new KlioError("usage", `server start: --log-level must be debug, info, warn or error, got "${levelText}"`);
    const format = (f["log-format"] as string | undefined) ?? config.log.format ?? (ctx.isTTY ? "text" : "json");
    if (format !== "text" && format !== "json") throw new KlioError("usage", `server start: --log-format must be text or json, got "${format}"`);
    if (f.check) {
      ctx.stdout(`${config.file}: ok (${config.clusters.length} cluster${config.clusters.length === 1 ? "" : "s"}, API on ${config.api.host}:${config.api.port}${config.api.tls ? " with TLS" : ""}, ${files} file${files === 1 ? "" : "s"} readable)\n`);
      return 0;
    }
    const log = createLogger({ write: ctx.stderr, format, level });
    const daemon = await startDaemon(config, log);
    let listener;
    try {
      listener = await listen(createApp(daemon, { log }), { host: config.api.host, port: config.api.port, tls: config.api.tls });
    } catch (e) {
      await daemon.stop();
      throw e;
    }
    log.info("api.listening", { host: config.api.host, port: listener.port, tls: config.api.tls !== null });
    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) resolve();
      ctx.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    log.info("server.stopping", {});
    await listener.close();
    await daemon.stop();
    log.info("server.stopped", {});
    return 0;
  },
};
