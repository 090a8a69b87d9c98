// Structured events: one line each, JSON for machines, short text for people on a TTY.
// Loggers are passed in a context, never global.
export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(event: string, fields?: LogFields): void;
  info(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  error(event: string, fields?: LogFields): void;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function parseLogLevel(text: string): LogLevel | undefined {
  return text in ORDER ? (text as LogLevel) : undefined;
}

function fieldText(v: unknown): string {
  const s = typeof v === "string" ? v : typeof v === "bigint" ? v.toString() : JSON.stringify(v);
  return /[\s"]/.test(s) ? JSON.stringify(s) : s;
}

export function createLogger(opts: { write: (line: string) => void; format: "json" | "text"; level: LogLevel; now?: () => Date; base?: LogFields }): Logger {
  const now = opts.now ?? (() => new Date());
  const emit = (level: LogLevel) => (event: string, fields: LogFields = {}) => {
    if (ORDER[level] < ORDER[opts.level]) return;
    const all = { ...opts.base, ...fields };
    if (opts.format === "json") {
      opts.write(JSON.stringify({ time: now().toISOString(), level, event, ...all }, (_k, v) => (typeof v === "bigint" ? v.toString() : v)) + "\n");
    } else {
      const kv = Object.entries(all).map(([k, v]) => `${k}=${fieldText(v)}`).join(" ");
      const tag = level === "info" ? "" : `${level.toUpperCase()} `;
      opts.write(`${now().toISOString().slice(11, 19)} ${tag}${event}${kv ? " " + kv : ""}\n`);
    }
  };
  return { debug: emit("debug"), info: emit("info"), warn: emit("warn"), error: emit("error") };
}

/** The same logger with `fields` added to every event (the caller's fields win). */
export function withFields(log: Logger, fields: LogFields): Logger {
  const wrap = (f: Logger["info"]) => (event: string, more: LogFields = {}) => f(event, { ...fields, ...more });
  return { debug: wrap(log.debug), info: wrap(log.info), warn: wrap(log.warn), error: wrap(log.error) };
}

/** The same logger, telling `observe` of every event first (whatever the level): a supervisor follows what a part does. */
export function observedLogger(log: Logger, observe: (level: LogLevel, event: string, fields: LogFields) => void): Logger {
  const wrap = (level: LogLevel) => (event: string, fields: LogFields = {}) => {
    observe(level, event, fields);
    log[level](event, fields);
  };
  return { debug: wrap("debug"), info: wrap("info"), warn: wrap("warn"), error: wrap("error") };
}
