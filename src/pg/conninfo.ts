// Connection strings as libpq reads them: `key=value` lists and postgresql:// URIs, then the
// PG* environment variables, then libpq's defaults, then the password file. Parsed once,
// here, into a ConnInfo the rest of the program trusts. Errors never quote the password.
import { readFileSync, statSync } from "node:fs";
import { homedir, platform, userInfo } from "node:os";
import path from "node:path";
import { isIP } from "node:net";
import { KlioError } from "../util/errors.ts";

export type SslMode = "disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full";

/** One server of a connection string: libpq's host, hostaddr and port lists give one each. */
export interface ServerAddress {
  /** Host name, IP address, or a directory (starts with "/") holding the server's Unix socket. */
  host: string;
  /** The numeric address to connect to instead of looking `host` up (libpq's hostaddr); `host` still names it for TLS and the password file. */
  hostaddr?: string;
  port: number;
  /** Given, from PGPASSWORD, or found in the password file for this host and port. */
  password?: string;
}

/** Which server of the list a connection may stay on (libpq's target_session_attrs). */
export type TargetSessionAttrs = "any" | "read-write" | "read-only" | "primary" | "standby" | "prefer-standby";
export const TARGET_SESSION_ATTRS: readonly TargetSessionAttrs[] = ["any", "read-write", "read-only", "primary", "standby", "prefer-standby"];

/** What a connection string says: the servers to try, in order, and what every connection to them shares. */
export interface ConnInfo {
  servers: ServerAddress[];
  target_session_attrs: TargetSessionAttrs;
  /** "random": the servers are tried in an order shuffled for each connection. */
  load_balance_hosts: "disable" | "random";
  user: string;
  dbname: string;
  sslmode: SslMode;
  sslrootcert?: string;
  sslcert?: string;
  sslkey?: string;
  application_name: string;
  /** Seconds, for each server tried; 0 or absent waits as long as the operating system does. */
  connect_timeout?: number;
}

/** One server of a ConnInfo with what every connection shares: what one connection attempt uses. */
export type ServerConnInfo = Omit<ConnInfo, "servers" | "target_session_attrs" | "load_balance_hosts"> & ServerAddress;

const SSL_MODES: readonly SslMode[] = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

/** Keywords that become ConnInfo fields. */
const SUPPORTED = new Set([
  "host", "hostaddr", "port", "user", "password", "dbname", "sslmode", "sslrootcert", "sslcert", "sslkey",
  "application_name", "fallback_application_name", "connect_timeout", "passfile", "target_session_attrs", "load_balance_hosts",
]);

/**
 * libpq keywords accepted and ignored because they cannot change what we do, with the values
 * for which that is true (undefined: any value).
 */
const IGNORED: Record<string, readonly string[] | undefined> = {
  keepalives: undefined,
  keepalives_idle: undefined,
  keepalives_interval: undefined,
  keepalives_count: undefined,
  tcp_user_timeout: undefined,
  sslcompression: undefined,
  sslsni: undefined,
  krbsrvname: undefined,
  gsslib: undefined,
  gssencmode: ["disable", "prefer", "allow"],
  channel_binding: ["disable", "prefer"],
  client_encoding: ["UTF8", "utf8", "UTF-8", "utf-8"],
};

/** libpq keywords we know but do not implement: naming them is clearer than "invalid option". */
const UNSUPPORTED = new Set([
  "options", "replication", "service", "requirepeer", "sslcrl", "sslcrldir", "sslpassword", "sslkeylogfile",
  "ssl_min_protocol_version", "ssl_max_protocol_version", "sslnegotiation", "sslcertmode", "require_auth",
  "max_protocol_version", "min_protocol_version", "gssdelegation", "requiressl", "scram_client_key", "scram_server_key",
  "oauth_issuer", "oauth_client_id", "oauth_client_secret", "oauth_scope",
]);

const ENV: Record<string, string> = {
  host: "PGHOST",
  hostaddr: "PGHOSTADDR",
  port: "PGPORT",
  user: "PGUSER",
  password: "PGPASSWORD",
  dbname: "PGDATABASE",
  sslmode: "PGSSLMODE",
  sslrootcert: "PGSSLROOTCERT",
  sslcert: "PGSSLCERT",
  sslkey: "PGSSLKEY",
  application_name: "PGAPPNAME",
  connect_timeout: "PGCONNECT_TIMEOUT",
  passfile: "PGPASSFILE",
  target_session_attrs: "PGTARGETSESSIONATTRS",
  load_balance_hosts: "PGLOADBALANCEHOSTS",
};

/** Socket directories libpq builds are configured with; the first that exists is the default host. */
const DEFAULT_SOCKET_DIRS = ["/var/run/postgresql", "/tmp"];

function bad(message: string): KlioError {
  return new KlioError("bad-conninfo", `invalid connection string: ${message}`);
}

// ---------------------------------------------------------------- key=value

const isSpace = (c: string | undefined) => c === " " || c === "\t" || c === "\n" || c === "\r" || c === "\f" || c === "\v";

function parseKeyValue(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  let previous = ""; // keyword before the current token, to avoid quoting password fragments
  const n = text.length;
  while (i < n) {
    while (isSpace(text[i])) i++;
    if (i >= n) break;
    const start = i;
    while (i < n && text[i] !== "=" && !isSpace(text[i])) i++;
    const key = text.slice(start, i);
    while (isSpace(text[i])) i++;
    if (text[i] !== "=") {
      if (previous === "password") throw bad(`missing "=" after the password value; quote a value that contains spaces: password='…'`);
      throw bad(`missing "=" after "${key}"`);
    }
    i++;
    while (isSpace(text[i])) i++;
    let value = "";
    if (text[i] === "'") {
      i++;
      let closed = false;
      while (i < n) {
        const c = text[i]!;
        if (c === "\\" && i + 1 < n) {
          value += text[i + 1];
          i += 2;
        } else if (c === "'") {
          i++;
          closed = true;
          break;
        } else {
          value += c;
          i++;
        }
      }
      if (!closed) throw bad(`unterminated quoted string in the value of "${key}"`);
    } else {
      while (i < n && !isSpace(text[i])) {
        if (text[i] === "\\" && i + 1 < n) i++;
        value += text[i];
        i++;
      }
    }
    if (key === "") throw bad(`"=" without a keyword before it`);
    checkKeyword(key, previous, "connection option");
    out.set(key, value);
    previous = key;
  }
  return out;
}

function checkKeyword(key: string, previous: string, what: string): void {
  if (SUPPORTED.has(key) || key in IGNORED) return;
  if (UNSUPPORTED.has(key)) throw bad(`${what} "${key}" is not supported by klio`);
  if (previous === "password") throw bad(`unexpected text after the password value; quote a value that contains spaces: password='…'`);
  throw bad(`unknown ${what} "${key}"`);
}

// ---------------------------------------------------------------- URIs

const hexDigit = (c: number) => (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);

function percentDecode(s: string, what: string): string {
  if (!s.includes("%")) return s;
  const bytes: number[] = [];
  const raw = new TextEncoder().encode(s);
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] !== 37 /* % */) {
      bytes.push(raw[i]!);
      continue;
    }
    if (i + 2 >= raw.length) throw bad(`invalid percent-encoding in the ${what} of the URI`);
    if (!hexDigit(raw[i + 1]!) || !hexDigit(raw[i + 2]!)) throw bad(`invalid percent-encoding in the ${what} of the URI`);
    const b = parseInt(String.fromCharCode(raw[i + 1]!, raw[i + 2]!), 16);
    if (b === 0) throw bad(`forbidden %00 in the ${what} of the URI`);
    bytes.push(b);
    i += 2;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(bytes));
  } catch {
    throw bad(`the ${what} of the URI is not valid UTF-8 after percent-decoding`);
  }
}

function parseUri(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const scheme = /^postgres(?:ql)?:\/\//.exec(text)![0];
  let rest = text.slice(scheme.length);

  const authorityEnd = rest.search(/[/?]/);
  const authority = authorityEnd < 0 ? rest : rest.slice(0, authorityEnd);
  rest = authorityEnd < 0 ? "" : rest.slice(authorityEnd);

  let hostPart = authority;
  const at = authority.lastIndexOf("@");
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    hostPart = authority.slice(at + 1);
    const colon = userinfo.indexOf(":");
    const user = colon < 0 ? userinfo : userinfo.slice(0, colon);
    if (user !== "") out.set("user", percentDecode(user, "user name"));
    if (colon >= 0) out.set("password", percentDecode(userinfo.slice(colon + 1), "password"));
  }

  // host[:port] pairs, comma-separated, become host and port lists as libpq builds them: a
  // pair without a port leaves its place in the port list empty (the default port).
  if (hostPart !== "") {
    const hosts: string[] = [];
    const ports: string[] = [];
    for (const pair of hostPart.split(",")) {
      let host: string;
      let port = "";
      if (pair.startsWith("[")) {
        const close = pair.indexOf("]");
        if (close < 0) throw bad(`missing "]" after the IPv6 address in the URI`);
        host = pair.slice(1, close);
        const after = pair.slice(close + 1);
        if (after !== "" && !after.startsWith(":")) throw bad(`unexpected "${after}" after the IPv6 address in the URI`);
        port = after.slice(1);
      } else {
        const colon = pair.lastIndexOf(":");
        host = colon < 0 ? pair : pair.slice(0, colon);
        if (colon >= 0) port = pair.slice(colon + 1);
      }
      hosts.push(percentDecode(host, "host"));
      ports.push(percentDecode(port, "port"));
    }
    if (hosts.length > 1 || hosts[0] !== "") out.set("host", hosts.join(","));
    if (ports.some((p) => p !== "")) out.set("port", ports.join(","));
  }

  if (rest.startsWith("/")) {
    const q = rest.indexOf("?");
    const db = q < 0 ? rest.slice(1) : rest.slice(1, q);
    if (db !== "") out.set("dbname", percentDecode(db, "database name"));
    rest = q < 0 ? "" : rest.slice(q);
  }

  if (rest.startsWith("?")) {
    for (const pair of rest.slice(1).split("&")) {
      if (pair === "") continue;
      const eq = pair.indexOf("=");
      if (eq < 0) throw bad(`URI query parameter "${percentDecode(pair, "query")}" has no "="`);
      let key = percentDecode(pair.slice(0, eq), "query");
      let value = percentDecode(pair.slice(eq + 1), key === "password" ? "password" : "query");
      if (key === "ssl") {
        // JDBC spelling, which libpq accepts too.
        if (value !== "true") throw bad(`URI query parameter ssl only accepts "true"`);
        key = "sslmode";
        value = "require";
      }
      checkKeyword(key, "", "URI query parameter");
      out.set(key, value);
    }
  }
  return out;
}

// ---------------------------------------------------------------- values

function parsePort(value: string, source: string): number {
  if (!/^[0-9]{1,5}$/.test(value.trim())) throw bad(`invalid port number "${value}"${source}`);
  const port = Number(value.trim());
  if (port < 1 || port > 65535) throw bad(`invalid port number "${value}"${source}: must be between 1 and 65535`);
  return port;
}

function parseTimeout(value: string, source: string): number {
  if (!/^\s*[0-9]+\s*$/.test(value)) throw bad(`invalid connect_timeout "${value}"${source}: must be a whole number of seconds`);
  return Number(value);
}

function parseSslMode(value: string, source: string): SslMode {
  if (!(SSL_MODES as readonly string[]).includes(value)) {
    throw bad(`invalid sslmode "${value}"${source}: use one of ${SSL_MODES.join(", ")}`);
  }
  return value as SslMode;
}

function osUser(env: Record<string, string | undefined>): string {
  try {
    return userInfo().username;
  } catch {
    const u = env.USER ?? env.LOGNAME;
    if (u) return u;
    throw bad("no user name given and the operating system user is unknown: set user= or PGUSER");
  }
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function defaultHost(): string {
  return DEFAULT_SOCKET_DIRS.find(isDirectory) ?? "localhost";
}

// ---------------------------------------------------------------- password file

/** Splits a .pgpass line into host, port, database, user and the rest (the password), undoing \-escapes. */
function pgpassFields(line: string): string[] | null {
  const fields: string[] = [];
  let cur = "";
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "\\" && i + 1 < line.length) {
      cur += line[++i];
    } else if (c === ":" && fields.length < 4) {
      fields.push(cur);
      cur = "";
    } else {
      cur += c;
    }
  }
  fields.push(cur);
  return fields.length === 5 ? fields : null;
}

function passwordFromFile(file: string, server: ServerAddress, ci: Pick<ConnInfo, "user" | "dbname">): string | undefined {
  let text: string;
  try {
    const st = statSync(file);
    if (!st.isFile()) return undefined;
    // libpq ignores a password file others can read, and so do we.
    if (platform() !== "win32" && (st.mode & 0o077) !== 0) return undefined;
    text = readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
  const hosts = [server.host];
  if (server.host.startsWith("/") && DEFAULT_SOCKET_DIRS.includes(server.host.replace(/\/+$/, ""))) hosts.push("localhost");
  const match = (pattern: string, values: string[]) => pattern === "*" || values.includes(pattern);
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "");
    if (line === "" || line.startsWith("#")) continue;
    const f = pgpassFields(line);
    if (f === null) continue;
    if (match(f[0]!, hosts) && match(f[1]!, [String(server.port)]) && match(f[2]!, [ci.dbname]) && match(f[3]!, [ci.user])) {
      return f[4]!;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------- public

/**
 * Reads a libpq connection string (key=value list or postgresql:// URI); what it leaves out
 * comes from the PG* variables in `env`, then from libpq's defaults. The password, when none
 * is given, is looked up in the password file (passfile, PGPASSFILE or ~/.pgpass).
 */
export function parseConnInfo(
  text: string,
  env: Record<string, string | undefined>,
  defaults?: { application_name?: string },
): ConnInfo {
  const trimmed = text.trim();
  const given = /^postgres(?:ql)?:\/\//.test(trimmed) ? parseUri(trimmed) : parseKeyValue(trimmed);

  for (const [key, allowed] of Object.entries(IGNORED)) {
    const v = given.get(key);
    if (v !== undefined && allowed !== undefined && !allowed.includes(v)) {
      throw bad(`${key}=${v} is not supported by klio (accepted: ${allowed.join(", ")})`);
    }
  }

  /** The value of a keyword and where it came from (for messages); empty counts as absent, as in libpq. */
  const get = (key: string): [string, string] | undefined => {
    const v = given.get(key);
    if (v !== undefined && v !== "") return [v, ""];
    const name = ENV[key];
    const e = name !== undefined ? env[name] : undefined;
    if (e !== undefined && e !== "") return [e, ` (from ${name})`];
    return undefined;
  };

  const servers = parseServers(get("host"), get("hostaddr"), get("port"));
  const user = get("user")?.[0] ?? osUser(env);
  const dbname = get("dbname")?.[0] ?? user;
  const sslEntry = get("sslmode");
  const sslmode = sslEntry ? parseSslMode(sslEntry[0], sslEntry[1]) : "prefer";
  const timeoutEntry = get("connect_timeout");
  const attrsEntry = get("target_session_attrs");
  const balanceEntry = get("load_balance_hosts");

  const ci: ConnInfo = {
    servers,
    target_session_attrs: attrsEntry ? oneOf(attrsEntry, "target_session_attrs", TARGET_SESSION_ATTRS) : "any",
    load_balance_hosts: balanceEntry ? oneOf(balanceEntry, "load_balance_hosts", ["disable", "random"] as const) : "disable",
    user,
    dbname,
    sslmode,
    application_name:
      get("application_name")?.[0] ?? given.get("fallback_application_name") ?? defaults?.application_name ?? "klio",
  };
  const rootcert = get("sslrootcert")?.[0];
  if (rootcert !== undefined) ci.sslrootcert = rootcert;
  const cert = get("sslcert")?.[0];
  if (cert !== undefined) ci.sslcert = cert;
  const key = get("sslkey")?.[0];
  if (key !== undefined) ci.sslkey = key;
  if (timeoutEntry) ci.connect_timeout = parseTimeout(timeoutEntry[0], timeoutEntry[1]);

  // libpq looks a password up for each server: the file's lines name host and port.
  const password = get("password")?.[0];
  const file = get("passfile")?.[0] ?? path.join(env.HOME || homedir(), ".pgpass");
  for (const server of servers) {
    const found = password ?? passwordFromFile(file, server, ci);
    if (found !== undefined && found !== "") server.password = found;
  }
  return ci;
}

/** A keyword's value that must be one of `allowed`. */
function oneOf<T extends string>([value, source]: [string, string], key: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) throw bad(`invalid ${key} "${value}"${source}: use one of ${allowed.join(", ")}`);
  return value as T;
}

/**
 * The servers of the host, hostaddr and port values (comma-separated lists, as libpq reads
 * them): hostaddr, when given, says how many and must match host entry for entry; port is
 * one for all or one each (an empty one: 5432). An empty host or hostaddr in a list is a
 * mistake, not a default.
 */
function parseServers(hostEntry: [string, string] | undefined, addrEntry: [string, string] | undefined, portEntry: [string, string] | undefined): ServerAddress[] {
  const list = (entry: [string, string], what: string): string[] => {
    const items = entry[0].split(",").map((v) => v.trim());
    const empty = items.indexOf("");
    if (empty >= 0) throw bad(`the ${what} list "${entry[0]}"${entry[1]} has an empty entry (entry ${empty + 1} of ${items.length})`);
    return items;
  };
  const addrs = addrEntry ? list(addrEntry, "hostaddr") : null;
  for (const a of addrs ?? []) if (isIP(a) === 0) throw bad(`hostaddr "${a}"${addrEntry![1]} is not a numeric IP address`);
  let hosts = hostEntry ? list(hostEntry, "host") : null;
  if (addrs && hosts && hosts.length !== addrs.length) throw bad(`could not match ${hosts.length} host names to ${addrs.length} hostaddr values`);
  hosts ??= addrs ?? [defaultHost()];

  const portTexts = portEntry ? portEntry[0].split(",") : [""];
  if (portTexts.length !== 1 && portTexts.length !== hosts.length) throw bad(`could not match ${portTexts.length} port numbers to ${hosts.length} hosts`);
  const ports = portTexts.map((p) => (p.trim() === "" ? 5432 : parsePort(p, portEntry![1])));
  return hosts.map((host, i) => {
    const server: ServerAddress = { host, port: ports.length === 1 ? ports[0]! : ports[i]! };
    if (addrs) server.hostaddr = addrs[i]!;
    return server;
  });
}

/** One server of `ci` with what every connection to it shares. */
export function serverConnInfo(ci: ConnInfo, server: ServerAddress): ServerConnInfo {
  const { servers: _servers, target_session_attrs: _attrs, load_balance_hosts: _balance, ...shared } = ci;
  return { ...shared, ...server };
}

/** The keywords whose values name files the connection reads, and what each file is (for messages). */
export const FILE_KEYWORDS = {
  sslrootcert: "root certificate file (sslrootcert)",
  sslcert: "client certificate (sslcert)",
  sslkey: "client key (sslkey)",
  passfile: "password file (passfile)",
} as const;

export type FileKeyword = keyof typeof FILE_KEYWORDS;

/**
 * The files a connection string itself names (not the PG* variables, not libpq's defaults),
 * e.g. for a config check. `sslrootcert=system` names the system's store, not a file.
 */
export function connInfoFiles(text: string): { keyword: FileKeyword; file: string }[] {
  const trimmed = text.trim();
  const given = /^postgres(?:ql)?:\/\//.test(trimmed) ? parseUri(trimmed) : parseKeyValue(trimmed);
  const out: { keyword: FileKeyword; file: string }[] = [];
  for (const keyword of Object.keys(FILE_KEYWORDS) as FileKeyword[]) {
    const file = given.get(keyword);
    if (file === undefined || file === "" || (keyword === "sslrootcert" && file === "system")) continue;
    out.push({ keyword, file });
  }
  return out;
}

/** "user@host:port" (IPv6 in brackets, a Unix socket as its path; every server of a list, comma-separated) for messages; never the password. */
export function describeConnInfo(ci: ConnInfo | ServerConnInfo): string {
  const servers = "servers" in ci ? ci.servers : [ci];
  return `${ci.user}@${servers.map(describeServer).join(",")}`;
}

/** "host:port" (IPv6 in brackets, a Unix socket as its path). */
export function describeServer(s: ServerAddress): string {
  if (s.host.startsWith("/")) return path.posix.join(s.host, `.s.PGSQL.${s.port}`);
  const host = isIP(s.host) === 6 ? `[${s.host}]` : s.host;
  return `${host}:${s.port}`;
}
