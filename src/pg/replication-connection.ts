// A PostgreSQL connection for the replication protocol (and plain SQL sessions), over
// node:net / node:tls, in the manner of postgres.js's connection.js: the bytes are cut into
// messages once (protocol.ts), and each message goes to the handler its type byte names.
//
// What it gives that a general client does not: every result set, including those around a
// COPY (BASE_BACKUP's positions, START_REPLICATION's next timeline); CopyData payloads exactly
// as the server framed them, handed over in batches of whatever has arrived; an ErrorResponse
// instead of COPY that rejects the call and leaves the connection usable; and no way for a
// socket error to escape as an uncaught exception.
//
// In steady state a WAL stream allocates nothing per message: a plain socket reads into one
// reused buffer (onread), and CopyData payloads are copied once into a per-connection arena,
// which is why a batch is only valid until the next read().
import net from "node:net";
import tls from "node:tls";
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";
import { createHash } from "node:crypto";
import type { Buffer } from "node:buffer";
import { KlioError } from "../util/errors.ts";
import { describeConnInfo, describeServer, serverConnInfo, type ConnInfo, type ServerConnInfo } from "./conninfo.ts";
import { readSessionState, sessionMismatch } from "./session-attrs.ts";
import {
  Auth,
  Backend,
  copyData,
  copyDataHeader,
  copyDone,
  copyFail,
  createArena,
  createFramer,
  parseCString,
  parseDataRow,
  parseFields,
  parseNegotiateProtocolVersion,
  parseParameterStatus,
  parseRowDescription,
  parseStringList,
  passwordMessage,
  queryMessage,
  readInt32,
  saslInitialResponse,
  saslResponse,
  sslRequest,
  startupMessage,
  terminate,
  type Arena,
} from "./protocol.ts";
import { scramSha256, type ScramExchange } from "./scram.ts";
import { PgServerError } from "./server-error.ts";

export interface Column {
  name: string;
  typeOid: number;
}

export interface ResultSet {
  /** CommandComplete tag, "" if the server sent none (replication commands often do not). */
  command: string;
  columns: Column[];
  /** Text format. */
  rows: (string | null)[][];
}

export interface CopyStream {
  readonly mode: "out" | "both" | "in";
  /** Result sets the server sent before the Copy*Response (BASE_BACKUP sends two). */
  readonly preceding: ResultSet[];
  /**
   * Resolves with every CopyData payload already received (at least one; each one CopyData
   * message, never merged), or "end" once the server sent CopyDone (or finish() was called),
   * or "timeout" when nothing arrived within timeoutMs (omit: wait forever). Rejects with
   * PgServerError if the server sent ErrorResponse, or KlioError("pg-closed") if the
   * connection closed. Payloads that arrived before an error or the end are delivered first.
   *
   * Lifetime: the payloads of a batch are valid until the next read() or finish() call on
   * this stream, which hands their memory back to the connection (it reuses one arena for
   * CopyData rather than allocating per message). Use or write out a batch before reading
   * again; copy (slice()) whatever must outlive it.
   */
  read(timeoutMs?: number): Promise<Uint8Array[] | "end" | "timeout">;
  /** Sends one CopyData message (CopyBoth/CopyIn); resolves once the socket took it (waits for 'drain' when full). */
  write(payload: Uint8Array): Promise<void>;
  /**
   * Sends CopyDone if we have not yet (both/in), discards CopyData until the server's
   * CopyDone, then resolves with the result sets that follow, up to ReadyForQuery.
   * Rejects with PgServerError on ErrorResponse. Calling it again returns the same promise.
   */
  finish(): Promise<ResultSet[]>;
}

export interface ReplicationConnection {
  /** The server connected to, "user@host:port" (of a connection string's list, the one that fitted). */
  readonly server: string;
  /** What connected to it: a later connection with it reaches the same server. */
  readonly connInfo: ServerConnInfo;
  /** server_version_num worked out from ParameterStatus server_version (e.g. 150018, 180004). */
  readonly serverVersionNum: number;
  readonly parameters: ReadonlyMap<string, string>;
  /** Simple query; every result set. ErrorResponse rejects with PgServerError; the connection stays usable. */
  query(sql: string): Promise<ResultSet[]>;
  /**
   * Simple query that enters COPY. ErrorResponse instead rejects with PgServerError (the
   * connection stays usable). If the server answers without entering COPY at all
   * (START_REPLICATION at the very end of an old timeline), the stream is already at its
   * end and finish() returns the result sets the server sent.
   */
  copy(sql: string): Promise<CopyStream>;
  /** Terminate, then close the socket. */
  close(): Promise<void>;
  /** Hard close without Terminate. */
  destroy(): void;
  readonly closed: boolean;
}

export interface ConnectOptions {
  /** The startup parameter `replication`: "true" (physical, default), "database" (logical), false (a normal SQL session). */
  replication?: "true" | "database" | false;
  /** Aborts the connection attempt, and later closes the connection (pending calls reject with the reason). */
  signal?: AbortSignal;
  onNotice?: (n: { severity: string; message: string }) => void;
  /**
   * Unread CopyData above which the socket is paused until read() takes it (default 8 MB:
   * a WAL receiver rides out a slow fsync without stalling the server). The connection's
   * CopyData arena is four times this.
   */
  copyHighWater?: number;
}

const DEFAULT_HIGH_WATER = 8 * 1024 * 1024;
/**
 * The CopyData arena of a connection (allocated on the first COPY) is this many times the
 * high water. What it must hold at once: the unread queue (up to the high water plus one
 * read), the batch the caller holds (as much again) and the message being gathered; twice
 * that leaves room for the ring's wrap. Whatever does not fit is allocated one-off.
 */
const ARENA_PER_HIGH_WATER = 4;
/** The buffer a plain socket reads into, again and again (net.connect's onread). */
const READ_BUFFER_BYTES = 256 * 1024;
/** Deno runs node:net, but a TLS upgrade of a socket that reads with onread stalls there. */
const IS_DENO = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";
/** CopyData payloads up to this size are sent as one buffer; larger ones as header + payload. */
const SMALL_WRITE = 16 * 1024;
/**
 * After CopyBothResponse, how long copy() waits for the first message. The walsender sends
 * CopyBothResponse before it reads any WAL, so "requested WAL segment has already been
 * removed" arrives just behind it; waiting for the first CopyData or ErrorResponse lets
 * copy() reject with it as callers expect. A server that is caught up sends nothing, so the
 * wait is bounded; an error later than this still reaches read().
 */
const COPY_BOTH_GRACE_MS = 250;

// ---------------------------------------------------------------- errors

function socketErrorText(e: unknown): string {
  const err = e as { code?: string; message?: string } | undefined;
  switch (err?.code) {
    case "ECONNREFUSED":
      return "connection refused (is the server running and accepting TCP/IP connections on that address and port?)";
    case "ENOENT":
      return "no such socket file (is the server running locally and accepting connections on that socket?)";
    case "ECONNRESET":
      return "connection reset by the server";
    case "EPIPE":
      return "broken pipe";
    case "ETIMEDOUT":
      return "timed out";
    case "EHOSTUNREACH":
      return "no route to host";
    case "ENETUNREACH":
      return "network unreachable";
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return "could not resolve the host name";
    case "EACCES":
      return "permission denied";
    default:
      return err?.message ?? String(e);
  }
}

function tlsErrorText(e: unknown): string {
  const err = e as { code?: string; message?: string };
  const m = err.message ?? String(e);
  switch (err.code) {
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "UNABLE_TO_GET_ISSUER_CERT":
    case "CERT_UNTRUSTED":
      return `the server certificate is not signed by a CA in sslrootcert (${m})`;
    case "CERT_HAS_EXPIRED":
      return `the server certificate has expired (${m})`;
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return `the server certificate does not match the host name (${m})`;
    default:
      return m;
  }
}

function abortError(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  return r instanceof Error ? r : new KlioError("aborted", "the operation was aborted");
}

/** libpq's default root certificate file, used when verify-ca / verify-full name no sslrootcert. */
function defaultRootCert(): string {
  return path.join(homedir(), ".postgresql", "root.crt");
}

// ---------------------------------------------------------------- connect

/**
 * Opens a connection to the first server of `ci`'s list that answers and fits its
 * target_session_attrs, as libpq does: servers in order (shuffled with
 * load_balance_hosts=random), connect_timeout for each; prefer-standby takes any server
 * when no standby answers. The error when none fits names every server and why it was
 * passed over (with one server and no attrs: that server's own error). A ServerConnInfo is
 * that one server, as it is.
 */
export async function connect(ci: ConnInfo | ServerConnInfo, opts: ConnectOptions = {}): Promise<ReplicationConnection> {
  if (!("servers" in ci)) return connectServer(ci, opts);
  const servers = ci.load_balance_hosts === "random" ? shuffled(ci.servers) : ci.servers;
  const attrs = ci.target_session_attrs;
  if (servers.length === 1 && attrs === "any") return connectServer(serverConnInfo(ci, servers[0]!), opts);
  const passes = attrs === "prefer-standby" ? (["standby", "any"] as const) : ([attrs] as const);
  const passedOver = new Map<string, string>();
  let anyAnswered = false;
  for (const want of passes) {
    for (const server of servers) {
      const sci = serverConnInfo(ci, server);
      const where = describeServer(server);
      let conn: ReplicationConnection;
      try {
        conn = await connectServer(sci, opts);
      } catch (e) {
        if (opts.signal?.aborted) throw e;
        passedOver.set(where, e instanceof Error ? e.message.replace(`cannot connect to ${describeConnInfo(sci)}: `, "") : String(e));
        continue;
      }
      anyAnswered = true;
      try {
        const why = sessionMismatch(await readSessionState(conn), want);
        if (why === null) return conn;
        passedOver.set(where, why);
      } catch (e) {
        passedOver.set(where, e instanceof Error ? e.message : String(e));
      }
      await conn.close().catch(() => conn.destroy());
    }
  }
  const reasons = [...passedOver].map(([where, why]) => `${where}: ${why}`).join("; ");
  const what = anyAnswered ? `no server of ${describeConnInfo(ci)} fits target_session_attrs=${attrs}` : `cannot connect to any server of ${describeConnInfo(ci)}`;
  throw new KlioError("pg-connect", `${what}: ${reasons}`);
}

/** A copy of `items` in random order (Fisher–Yates). */
function shuffled<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/**
 * Opens a connection to one server: TCP or Unix socket, TLS per sslmode (with libpq's
 * retries for allow/prefer), startup, authentication, up to the first ReadyForQuery.
 */
async function connectServer(ci: ServerConnInfo, opts: ConnectOptions): Promise<ReplicationConnection> {
  const where = describeConnInfo(ci);
  const unix = ci.host.startsWith("/") && ci.hostaddr === undefined;
  // Which attempts to make, in order: true = over TLS. libpq: allow tries plain first, prefer TLS first.
  const plan: boolean[] =
    unix || ci.sslmode === "disable" ? [false] : ci.sslmode === "allow" ? [false, true] : ci.sslmode === "prefer" ? [true, false] : [true];

  if (opts.signal?.aborted) throw abortError(opts.signal);
  const interrupt = new AbortController();
  const onAbort = () => interrupt.abort(abortError(opts.signal!));
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  const timeout = ci.connect_timeout ? Math.max(2, ci.connect_timeout) : 0; // libpq: at least 2 s
  const timer =
    timeout > 0
      ? setTimeout(() => interrupt.abort(new KlioError("pg-connect", `cannot connect to ${where}: timeout expired after ${timeout} s`)), timeout * 1000)
      : undefined;

  try {
    for (let i = 0; ; i++) {
      const attempt = { tls: false };
      try {
        return await connectOnce(ci, opts, plan[i]!, attempt, interrupt.signal);
      } catch (e) {
        if (interrupt.signal.aborted) throw interrupt.signal.reason;
        if (i + 1 >= plan.length || !worthRetrying(e, plan[i]!, attempt.tls)) throw e;
      }
    }
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener("abort", onAbort);
  }
}

/** libpq's second attempt: prefer retries without TLS, allow with it, when the first was refused by pg_hba or TLS failed. */
function worthRetrying(e: unknown, triedTls: boolean, tlsInUse: boolean): boolean {
  if (e instanceof PgServerError) return e.sqlstate === "28000" && triedTls === tlsInUse;
  return triedTls && e instanceof KlioError && e.code === "pg-tls";
}

async function connectOnce(ci: ServerConnInfo, opts: ConnectOptions, wantTls: boolean, attempt: { tls: boolean }, interrupt: AbortSignal): Promise<ReplicationConnection> {
  const where = describeConnInfo(ci);
  // Read a plain socket into one reused buffer. When TLS is asked for, the plain socket is
  // only used on if the server refuses it (sslmode=prefer); Node upgrades an onread socket
  // to TLS fine, Deno does not, so there the socket keeps 'data' events.
  const onread = !wantTls || (!IS_DENO && ci.sslmode === "prefer");
  let { socket, input } = await openSocket(ci, where, interrupt, onread);
  try {
    if (wantTls) {
      const accepted = await requestTls(socket, input, where, interrupt);
      if (accepted) {
        socket = await startTls(socket, ci, where, interrupt);
        input = dataEvents(socket);
        attempt.tls = true;
      } else if (ci.sslmode !== "prefer" && ci.sslmode !== "allow") {
        throw new KlioError("pg-tls", `cannot connect to ${where}: the server does not support SSL, but sslmode=${ci.sslmode} requires it`);
      }
    }
  } catch (e) {
    socket.destroy();
    throw e;
  }
  return await wire(socket, input, ci, opts, interrupt);
}

type Sink = (chunk: Uint8Array) => void;

/**
 * How a socket's bytes reach us: as 'data' events, each chunk a Buffer of its own, or (onread)
 * read into one buffer that is filled again as soon as the sink returns (`reused`: the sink
 * copies what it keeps).
 */
interface Input {
  readonly reused: boolean;
  /** Sends the socket's bytes to `sink` from now on; null: nowhere (none are expected). */
  listen(sink: Sink | null): void;
}

function dataEvents(socket: net.Socket): Input {
  let current: Sink | null = null;
  return {
    reused: false,
    listen(sink) {
      if (current !== null) socket.off("data", current);
      current = sink;
      if (sink !== null) socket.on("data", sink);
    },
  };
}

/** Resolves when `socket` connected; rejects (and destroys it) on error or interrupt. */
function openSocket(ci: ServerConnInfo, where: string, interrupt: AbortSignal, reuse: boolean): Promise<{ socket: net.Socket; input: Input }> {
  return new Promise((resolve, reject) => {
    let socket: net.Socket;
    let input: Input;
    try {
      let sink: Sink | null = null;
      const onread: net.OnReadOpts | undefined = reuse
        ? {
            buffer: new Uint8Array(READ_BUFFER_BYTES),
            callback(n: number, buffer: Uint8Array) {
              sink?.(buffer.subarray(0, n));
              return true;
            },
          }
        : undefined;
      const common = onread ? { onread } : {};
      socket = ci.hostaddr !== undefined
        ? net.createConnection({ host: ci.hostaddr, port: ci.port, ...common })
        : ci.host.startsWith("/")
          ? net.createConnection({ path: path.posix.join(ci.host, `.s.PGSQL.${ci.port}`), ...common })
          : net.createConnection({ host: ci.host, port: ci.port, ...common });
      input = reuse
        ? {
            reused: true,
            listen(s) {
              sink = s;
            },
          }
        : dataEvents(socket);
    } catch (e) {
      return reject(new KlioError("pg-connect", `cannot connect to ${where}: ${socketErrorText(e)}`, { cause: e }));
    }
    const done = (e?: Error) => {
      socket.off("connect", onConnect);
      socket.off("error", onError);
      interrupt.removeEventListener("abort", onInterrupt);
      if (e) {
        socket.destroy();
        reject(e);
      } else {
        resolve({ socket, input });
      }
    };
    const onConnect = () => {
      socket.setNoDelay(true);
      if (ci.hostaddr !== undefined || !ci.host.startsWith("/")) socket.setKeepAlive(true, 60_000);
      done();
    };
    const onError = (e: Error) => done(new KlioError("pg-connect", `cannot connect to ${where}: ${socketErrorText(e)}`, { cause: e }));
    const onInterrupt = () => done(interrupt.reason as Error);
    socket.once("connect", onConnect);
    socket.once("error", onError);
    interrupt.addEventListener("abort", onInterrupt, { once: true });
  });
}

/** SSLRequest; true if the server answered 'S'. */
function requestTls(socket: net.Socket, input: Input, where: string, interrupt: AbortSignal): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const done = (e: Error | null, ok = false) => {
      input.listen(null);
      socket.off("error", onError);
      socket.off("close", onClose);
      interrupt.removeEventListener("abort", onInterrupt);
      if (e) reject(e);
      else resolve(ok);
    };
    const onData = (chunk: Uint8Array) => {
      // Bytes after the answer would have come unencrypted before the handshake (CVE-2021-23222).
      if (chunk.length !== 1) return done(new KlioError("pg-protocol", `cannot connect to ${where}: unexpected data after the server's answer to SSLRequest`));
      if (chunk[0] === 0x53) return done(null, true); // S
      if (chunk[0] === 0x4e) return done(null, false); // N
      done(new KlioError("pg-protocol", `cannot connect to ${where}: invalid answer to SSLRequest (is this a PostgreSQL server?)`));
    };
    const onError = (e: Error) => done(new KlioError("pg-connect", `cannot connect to ${where}: ${socketErrorText(e)}`, { cause: e }));
    const onClose = () => done(new KlioError("pg-connect", `cannot connect to ${where}: the server closed the connection during SSL negotiation`));
    const onInterrupt = () => done(interrupt.reason as Error);
    input.listen(onData);
    socket.once("error", onError);
    socket.once("close", onClose);
    interrupt.addEventListener("abort", onInterrupt, { once: true });
    socket.write(sslRequest());
  });
}

function readPem(file: string, what: string, where: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new KlioError("pg-tls", `cannot connect to ${where}: cannot read ${what} "${file}"${code === "ENOENT" ? ": no such file" : `: ${(e as Error).message}`}`);
  }
}

function tlsOptions(socket: net.Socket, ci: ServerConnInfo, where: string): tls.ConnectionOptions {
  const o: tls.ConnectionOptions = { socket };
  if (net.isIP(ci.host) === 0) o.servername = ci.host; // SNI takes names only
  // libpq: require with a root certificate given behaves like verify-ca.
  const verify = ci.sslmode === "verify-ca" || ci.sslmode === "verify-full" || (ci.sslmode === "require" && ci.sslrootcert !== undefined);
  if (verify) {
    const root = ci.sslrootcert ?? defaultRootCert();
    if (root !== "system") o.ca = readPem(root, "root certificate file (sslrootcert)", where);
    o.rejectUnauthorized = true;
    o.checkServerIdentity = ci.sslmode === "verify-full" ? (_name, cert) => tls.checkServerIdentity(ci.host, cert) : () => undefined;
  } else {
    o.rejectUnauthorized = false;
  }
  if (ci.sslcert !== undefined) o.cert = readPem(ci.sslcert, "client certificate (sslcert)", where);
  if (ci.sslkey !== undefined) o.key = readPem(ci.sslkey, "client key (sslkey)", where);
  return o;
}

function startTls(socket: net.Socket, ci: ServerConnInfo, where: string, interrupt: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    let secure: tls.TLSSocket;
    try {
      secure = tls.connect(tlsOptions(socket, ci, where));
    } catch (e) {
      reject(e instanceof KlioError ? e : new KlioError("pg-tls", `cannot connect to ${where}: TLS: ${tlsErrorText(e)}`, { cause: e }));
      return;
    }
    // Errors of the socket underneath belong to the TLS socket; unheard they would be uncaught.
    socket.on("error", (e) => secure.destroy(e));
    const done = (e?: Error) => {
      secure.off("secureConnect", onSecure);
      secure.off("error", onError);
      secure.off("close", onClose);
      interrupt.removeEventListener("abort", onInterrupt);
      if (e) {
        secure.destroy();
        reject(e);
      } else {
        resolve(secure);
      }
    };
    const onSecure = () => done();
    const onError = (e: Error) =>
      done(new KlioError("pg-tls", `cannot connect to ${where}: TLS (sslmode=${ci.sslmode}): ${tlsErrorText(e)}`, { cause: e }));
    const onClose = () => done(new KlioError("pg-tls", `cannot connect to ${where}: the server closed the connection during the TLS handshake`));
    const onInterrupt = () => done(interrupt.reason as Error);
    secure.once("secureConnect", onSecure);
    secure.once("error", onError);
    secure.once("close", onClose);
    interrupt.addEventListener("abort", onInterrupt, { once: true });
  });
}

/** "15.18 (Debian …)" → 150018, "18.4" → 180004, "18beta1" → 180000, "9.6.24" → 90624. */
export function serverVersionNum(version: string): number {
  const m = /^(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(version);
  if (!m) return 0;
  const major = Number(m[1]);
  const minor = Number(m[2] ?? 0);
  return major >= 10 ? major * 10000 + minor : major * 10000 + minor * 100 + Number(m[3] ?? 0);
}

function md5Hex(data: string | Uint8Array): string {
  return createHash("md5").update(data).digest("hex");
}

// ---------------------------------------------------------------- the connection

/** One simple-query exchange, from sending the query to ReadyForQuery. */
interface Exchange {
  sql: string;
  wantCopy: boolean;
  results: ResultSet[];
  /** A result set whose CommandComplete has not come (yet). */
  open: ResultSet | null;
  error: Error | null;
  copy: CopyState | null;
  /** query() that the server took into COPY: we end the COPY and fail the call. */
  misuse: boolean;
  resolve: (v: ResultSet[]) => void;
  reject: (e: Error) => void;
  /** copy(): called when the Copy*Response arrives (or at ReadyForQuery when the server skipped COPY, with x = null). */
  begin?: (c: CopyState, x: Exchange | null) => void;
  /** CopyBoth: the grace timer before begin (see COPY_BOTH_GRACE_MS). */
  grace?: ReturnType<typeof setTimeout> | undefined;
}

interface CopyState {
  mode: "out" | "both" | "in";
  preceding: ResultSet[];
  queue: Uint8Array[];
  queued: number;
  /** The first arena region of the batch the caller holds (until its next read() or finish()). */
  held: Uint8Array | null;
  serverDone: boolean;
  clientDone: boolean;
  discarding: boolean;
  error: Error | null;
  reader: { resolve: (v: Uint8Array[] | "end" | "timeout") => void; reject: (e: Error) => void; timer?: ReturnType<typeof setTimeout> } | null;
  /** Set by finish(); the exchange settles it at ReadyForQuery. */
  finishing: Promise<ResultSet[]> | null;
  /** The exchange is over (ReadyForQuery or connection lost). */
  over: boolean;
}

/** Runs startup and authentication on a connected socket and returns the connection at its first ReadyForQuery. */
function wire(socket: net.Socket, input: Input, ci: ServerConnInfo, opts: ConnectOptions, interrupt: AbortSignal): Promise<ReplicationConnection> {
  const where = describeConnInfo(ci);
  const parameters = new Map<string, string>();
  const queue: Exchange[] = []; // waiting to be sent
  let current: Exchange | null = null; // sent, waiting for ReadyForQuery
  let phase: "startup" | "ready" | "closed" = "startup";
  let closedError: KlioError | null = null;
  let fatal: PgServerError | null = null; // a FATAL the server sent before closing
  let socketError: Error | null = null;
  let paused = false;
  let sasl: ScramExchange | null = null;
  let authenticated = false;

  let settleStartup!: { resolve: (c: ReplicationConnection) => void; reject: (e: Error) => void };
  const started = new Promise<ReplicationConnection>((resolve, reject) => (settleStartup = { resolve, reject }));

  const highWater = opts.copyHighWater ?? DEFAULT_HIGH_WATER;
  const arenaBytes = highWater * ARENA_PER_HIGH_WATER;
  // CopyData payloads live in the arena (see ARENA_PER_HIGH_WATER), of which the copy stream `arenaUser`
  // is the only user; `gathering` is the region a CopyData that spans reads is being gathered in.
  let arena: Arena | null = null;
  let arenaUser: CopyState | null = null;
  let gathering: Uint8Array | null = null;

  const framer = createFramer(
    (type, body, gathered) => {
      const handler = handlers[type];
      if (handler === undefined) throw protocolError(`unexpected message type '${String.fromCharCode(type)}' (${type})`);
      handler(body, gathered);
    },
    { gather },
  );

  function gather(type: number, size: number): Uint8Array {
    if (type !== Backend.CopyData) return new Uint8Array(size);
    gathering = (arena ??= createArena(arenaBytes)).alloc(size);
    return gathering ?? new Uint8Array(size);
  }

  /** A copy of a payload that is only a view of the read buffer. */
  function keep(b: Uint8Array): Uint8Array {
    const out = (arena ??= createArena(arenaBytes)).alloc(b.length) ?? new Uint8Array(b.length);
    out.set(b);
    return out;
  }

  function firstInArena(payloads: Uint8Array[]): Uint8Array | null {
    if (arena === null) return null;
    for (const p of payloads) if (arena.holds(p)) return p;
    return null;
  }

  /** The caller of read()/finish() is done with the batch it holds: its regions are free again. */
  function release(c: CopyState): void {
    c.held = null;
    if (arenaUser !== c || arena === null) return;
    arena.release(firstInArena(c.queue) ?? gathering);
  }

  function protocolError(message: string): KlioError {
    return new KlioError("pg-protocol", `protocol violation from ${where}: ${message}`);
  }

  function send(bytes: Uint8Array): boolean {
    if (socket.destroyed) return false;
    return socket.write(bytes);
  }

  // ------------------------------------------------------------ handlers, keyed by type byte

  const handlers: Record<number, (body: Uint8Array, gathered: boolean) => void> = {
    [Backend.Authentication]: Authentication,
    [Backend.ParameterStatus]: ParameterStatus,
    [Backend.BackendKeyData]: BackendKeyData,
    [Backend.ReadyForQuery]: ReadyForQuery,
    [Backend.RowDescription]: RowDescription,
    [Backend.DataRow]: DataRow,
    [Backend.CommandComplete]: CommandComplete,
    [Backend.EmptyQueryResponse]: EmptyQueryResponse,
    [Backend.ErrorResponse]: ErrorResponse,
    [Backend.NoticeResponse]: NoticeResponse,
    [Backend.NotificationResponse]: () => {},
    [Backend.CopyInResponse]: () => CopyResponse("in"),
    [Backend.CopyOutResponse]: () => CopyResponse("out"),
    [Backend.CopyBothResponse]: () => CopyResponse("both"),
    [Backend.CopyData]: CopyData,
    [Backend.CopyDone]: CopyDone,
    [Backend.NegotiateProtocolVersion]: NegotiateProtocolVersion,
  };

  function Authentication(b: Uint8Array): void {
    if (phase !== "startup" || authenticated) throw protocolError("authentication request after authentication");
    const code = readInt32(b, 0);
    switch (code) {
      case Auth.Ok:
        if (sasl !== null && !sasl.verified) throw new KlioError("pg-auth", `cannot connect to ${where}: the server ended SCRAM authentication without proving it knows the password`);
        authenticated = true;
        return;
      case Auth.CleartextPassword:
        send(passwordMessage(needPassword()));
        return;
      case Auth.MD5Password: {
        const salt = b.subarray(4, 8);
        const inner = md5Hex(needPassword() + ci.user);
        const outer = createHash("md5").update(inner).update(salt).digest("hex");
        send(passwordMessage(`md5${outer}`));
        return;
      }
      case Auth.SASL: {
        const mechanisms = parseStringList(b, 4, "AuthenticationSASL");
        if (!mechanisms.includes("SCRAM-SHA-256")) {
          throw new KlioError("pg-auth", `cannot connect to ${where}: the server offers SASL mechanisms ${mechanisms.join(", ")}; klio supports SCRAM-SHA-256 only`);
        }
        sasl = scramSha256(needPassword());
        send(saslInitialResponse(sasl.mechanism, sasl.clientFirst));
        return;
      }
      case Auth.SASLContinue: {
        if (sasl === null) throw protocolError("SASLContinue without SASL");
        const exchange = sasl;
        const serverFirst = b.slice(4); // kept past this chunk: copy
        exchange.clientFinal(serverFirst).then(
          (final) => phase === "startup" && send(saslResponse(final)),
          (e: unknown) => fail(e instanceof KlioError ? withWhere(e) : new KlioError("pg-auth", `cannot connect to ${where}: ${String(e)}`)),
        );
        return;
      }
      case Auth.SASLFinal:
        if (sasl === null) throw protocolError("SASLFinal without SASL");
        try {
          sasl.verifyServerFinal(b.subarray(4));
        } catch (e) {
          throw withWhere(e as KlioError);
        }
        return;
      case Auth.KerberosV5:
      case Auth.GSS:
      case Auth.SSPI:
        throw new KlioError(
          "pg-auth",
          `cannot connect to ${where}: the server asks for ${code === Auth.SSPI ? "SSPI" : code === Auth.GSS ? "GSSAPI" : "Kerberos V5"} authentication, which klio does not support; use scram-sha-256 in pg_hba.conf`,
        );
      default:
        throw new KlioError("pg-auth", `cannot connect to ${where}: the server asks for an unknown authentication method (${code})`);
    }
  }

  function withWhere(e: KlioError): KlioError {
    return new KlioError(e.code, `cannot connect to ${where}: ${e.message}`);
  }

  function needPassword(): string {
    if (ci.password === undefined) {
      throw new KlioError("pg-auth", `cannot connect to ${where}: the server asks for a password and none was given (password=, PGPASSWORD or ~/.pgpass)`);
    }
    return ci.password;
  }

  function ParameterStatus(b: Uint8Array): void {
    const [name, value] = parseParameterStatus(b);
    parameters.set(name, value);
  }

  function BackendKeyData(b: Uint8Array): void {
    if (b.length < 8) throw protocolError("short BackendKeyData");
  }

  function NegotiateProtocolVersion(b: Uint8Array): void {
    // We ask for 3.0 and no protocol extensions, so a server that sends this only tells us
    // which of our options it ignored; nothing we send depends on them.
    if (phase !== "startup") throw protocolError("NegotiateProtocolVersion after startup");
    parseNegotiateProtocolVersion(b);
  }

  function NoticeResponse(b: Uint8Array): void {
    const f = parseFields(b);
    opts.onNotice?.({ severity: f.V ?? f.S ?? "NOTICE", message: f.M ?? "" });
  }

  function ErrorResponse(b: Uint8Array): void {
    const fields = parseFields(b);
    if (phase === "startup") {
      // Errors during startup are FATAL; the server closes the connection after this.
      throw new PgServerError(fields, `cannot connect to ${where}`);
    }
    const e = new PgServerError(fields);
    if (e.severity === "FATAL" || e.severity === "PANIC") fatal = e;
    if (current === null) return; // e.g. "terminating connection due to administrator command" while idle
    current.error ??= e;
    if (current.grace !== undefined) {
      if (current.copy!.queue.length > 0) {
        beginNow(current); // data came first: the stream delivers it, then this error
      } else {
        clearTimeout(current.grace); // copy() rejects with this error at ReadyForQuery
        current.grace = undefined;
        current.begin = undefined;
      }
    }
    const c = current.copy;
    if (c !== null && !c.serverDone) {
      // The server left COPY mode; what it sends next belongs to no stream.
      c.error = e;
      c.serverDone = true;
    }
  }

  function ReadyForQuery(): void {
    if (phase === "startup") {
      if (!authenticated) throw protocolError("ReadyForQuery before authentication");
      phase = "ready";
      settleStartup.resolve(connection);
      return;
    }
    const x = current;
    if (x === null) throw protocolError("ReadyForQuery with no query running");
    current = null;
    closeOpen(x);
    settle(x);
    next();
  }

  function exchange(what: string): Exchange {
    if (current === null) throw protocolError(`${what} with no query running`);
    return current;
  }

  function closeOpen(x: Exchange): void {
    if (x.open !== null) {
      x.results.push(x.open);
      x.open = null;
    }
  }

  function RowDescription(b: Uint8Array): void {
    const x = exchange("RowDescription");
    closeOpen(x);
    x.open = { command: "", columns: parseRowDescription(b), rows: [] };
  }

  function DataRow(b: Uint8Array): void {
    const x = exchange("DataRow");
    if (x.open === null) throw protocolError("DataRow without RowDescription");
    x.open.rows.push(parseDataRow(b));
  }

  function CommandComplete(b: Uint8Array): void {
    const x = exchange("CommandComplete");
    const command = parseCString(b, "CommandComplete");
    if (x.copy !== null && !x.copy.serverDone && x.copy.mode !== "in") throw protocolError("CommandComplete during COPY");
    if (x.open !== null) {
      x.open.command = command;
      closeOpen(x);
    } else {
      x.results.push({ command, columns: [], rows: [] });
    }
  }

  function EmptyQueryResponse(): void {
    closeOpen(exchange("EmptyQueryResponse"));
  }

  function CopyResponse(mode: "out" | "both" | "in"): void {
    const x = exchange("Copy response");
    if (x.copy !== null) throw protocolError("second COPY in one query");
    closeOpen(x);
    const c: CopyState = {
      mode,
      preceding: x.results,
      queue: [],
      queued: 0,
      held: null,
      serverDone: mode === "in", // the server sends no CopyData in COPY IN
      clientDone: false,
      discarding: false,
      error: null,
      reader: null,
      finishing: null,
      over: false,
    };
    x.results = [];
    x.copy = c;
    if (arenaUser !== null && (arenaUser.held !== null || firstInArena(arenaUser.queue) !== null)) {
      arena = null; // the last stream's caller still has payloads in it: leave them be, start another
    } else {
      arena?.release(null);
    }
    arenaUser = c;
    if (!x.wantCopy) {
      // query() ran something that starts COPY: end it and fail the call.
      x.misuse = true;
      c.discarding = true;
      if (mode === "in") send(copyFail("klio: COPY IN is not accepted by query(); use copy()"));
      if (mode === "both") send(copyDone);
      c.clientDone = true;
      return;
    }
    if (mode === "both") {
      x.grace = setTimeout(() => beginNow(x), COPY_BOTH_GRACE_MS);
    } else {
      x.begin!(c, x);
    }
  }

  /** Ends the CopyBoth grace: hands the stream to copy()'s caller. */
  function beginNow(x: Exchange): void {
    if (x.grace === undefined) return;
    clearTimeout(x.grace);
    x.grace = undefined;
    x.begin!(x.copy!, x);
  }

  function CopyData(b: Uint8Array, gathered: boolean): void {
    gathering = null;
    const c = exchange("CopyData").copy;
    if (c === null) throw protocolError("CopyData outside COPY");
    // A walsender that has ended a timeline (CopyDone) still answers a status update that asks
    // for a reply with a keepalive until our CopyDone reaches it: dropped, as libpq drops it.
    if (c.serverDone) return;
    if (c.discarding) {
      if (arenaUser === c) arena?.release(null); // nothing of this stream is queued or held any more
      return;
    }
    const payload = gathered || !input.reused ? b : keep(b);
    c.queue.push(payload);
    c.queued += payload.length;
    if (c.queued > highWater && !paused) {
      paused = true;
      socket.pause();
    }
  }

  function CopyDone(): void {
    const c = exchange("CopyDone").copy;
    if (c === null || c.serverDone) throw protocolError("CopyDone outside COPY");
    c.serverDone = true;
  }

  // ------------------------------------------------------------ exchanges

  function settle(x: Exchange): void {
    if (x.grace !== undefined) beginNow(x); // the whole COPY came in one chunk
    const c = x.copy;
    if (c !== null) {
      c.over = true;
      c.serverDone = true;
    }
    if (x.misuse) {
      x.reject(new KlioError("pg-usage", `query() cannot run "${x.sql}": it starts COPY; use copy()`));
    } else if (x.error !== null) {
      if (c !== null) c.error ??= x.error;
      x.reject(x.error);
    } else if (x.wantCopy && c === null) {
      // The server answered without COPY: hand over a stream that is already at its end.
      const done: CopyState = {
        mode: /^\s*START_REPLICATION\b/i.test(x.sql) ? "both" : "out",
        preceding: [],
        queue: [],
        queued: 0,
        held: null,
        serverDone: true,
        clientDone: true,
        discarding: true,
        error: null,
        reader: null,
        finishing: Promise.resolve(x.results),
        over: true,
      };
      x.begin!(done, null);
    } else {
      x.resolve(x.results);
    }
    if (c !== null) wake(c);
  }

  function next(): void {
    if (current !== null || phase !== "ready") return;
    const x = queue.shift();
    if (x === undefined) return;
    current = x;
    send(queryMessage(x.sql));
  }

  function run(sql: string, wantCopy: boolean, begin?: Exchange["begin"]): Promise<ResultSet[]> {
    return new Promise<ResultSet[]>((resolve, reject) => {
      if (phase === "closed") return reject(closedError!);
      const busy = current?.copy ?? null;
      if (busy !== null && busy.finishing === null && !busy.over) {
        return reject(new KlioError("pg-busy", `the connection to ${where} is in COPY mode; finish() the copy before sending "${sql}"`));
      }
      const x: Exchange = { sql, wantCopy, results: [], open: null, error: null, copy: null, misuse: false, resolve, reject };
      if (begin) x.begin = begin;
      queue.push(x);
      next();
    });
  }

  // ------------------------------------------------------------ copy streams

  /** Settles a waiting read() if there is anything to tell it. */
  function wake(c: CopyState): void {
    const r = c.reader;
    if (r === null) return;
    if (c.queue.length > 0) {
      c.reader = null;
      clearTimeout(r.timer);
      r.resolve(take(c));
    } else if (c.error !== null) {
      c.reader = null;
      clearTimeout(r.timer);
      r.reject(c.error);
    } else if (c.serverDone || c.discarding) {
      c.reader = null;
      clearTimeout(r.timer);
      r.resolve("end");
    }
  }

  function take(c: CopyState): Uint8Array[] {
    const batch = c.queue;
    c.queue = [];
    c.queued = 0;
    c.held = arenaUser === c ? firstInArena(batch) : null;
    if (paused && phase !== "closed") {
      paused = false;
      socket.resume();
    }
    return batch;
  }

  function stream(c: CopyState, x: Exchange | null): CopyStream {
    const finishing = new Promise<ResultSet[]>((resolve, reject) => {
      if (x === null) return;
      x.resolve = resolve;
      x.reject = reject;
    });
    finishing.catch(() => {}); // rejections reach whoever calls finish(); unobserved ones are not errors
    return {
      mode: c.mode,
      preceding: c.preceding,
      read(timeoutMs?: number) {
        return new Promise((resolve, reject) => {
          if (c.reader !== null) return reject(new KlioError("pg-usage", "read() called while another read() is pending"));
          release(c);
          if (c.queue.length > 0) return resolve(take(c));
          if (c.error !== null) return reject(c.error);
          if (c.serverDone || c.discarding) return resolve("end");
          c.reader = { resolve, reject };
          if (timeoutMs !== undefined) {
            c.reader.timer = setTimeout(() => {
              c.reader = null;
              resolve("timeout");
            }, Math.max(0, timeoutMs));
          }
        });
      },
      async write(payload: Uint8Array) {
        if (c.mode === "out") throw new KlioError("pg-usage", "write() on a COPY OUT stream");
        if (c.clientDone) throw new KlioError("pg-usage", "write() after finish()");
        if (c.error !== null) throw c.error;
        if (phase === "closed") throw closedError!;
        let ok: boolean;
        if (payload.length <= SMALL_WRITE) {
          ok = send(copyData(payload));
        } else {
          socket.cork();
          send(copyDataHeader(payload.length));
          ok = send(payload);
          socket.uncork();
        }
        if (!ok) await drained();
      },
      finish() {
        if (c.finishing !== null) return c.finishing;
        c.finishing = finishing;
        if (!c.clientDone && !c.over && phase !== "closed" && c.mode !== "out" && c.error === null) {
          send(copyDone);
        }
        c.clientDone = true;
        c.discarding = true;
        c.queue = [];
        c.queued = 0;
        release(c);
        if (paused && phase !== "closed") {
          paused = false;
          socket.resume();
        }
        wake(c);
        return finishing;
      },
    };
  }

  function drained(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (phase === "closed") return reject(closedError!);
      const onDrain = () => {
        socket.off("close", onClose);
        resolve();
      };
      const onClose = () => {
        socket.off("drain", onDrain);
        reject(closedError ?? new KlioError("pg-closed", `connection to ${where} closed`));
      };
      socket.once("drain", onDrain);
      socket.once("close", onClose);
    });
  }

  // ------------------------------------------------------------ the socket

  /** Ends the connection: every pending and later call rejects. close() keeps the socket for its Terminate to flush. */
  function fail(e: Error, destroy = true): void {
    if (phase === "closed") return;
    const wasStartup = phase === "startup";
    phase = "closed";
    closedError = e instanceof KlioError && e.code === "pg-closed" ? e : new KlioError("pg-closed", `connection to ${where} is closed`, { cause: e });
    if (destroy) socket.destroy();
    interrupt.removeEventListener("abort", onInterrupt);
    opts.signal?.removeEventListener("abort", onAbort);
    if (wasStartup) settleStartup.reject(e);
    const x = current;
    current = null;
    if (x !== null) {
      clearTimeout(x.grace);
      // A server error that came before the close says more than the close.
      const reason = x.error ?? e;
      const c = x.copy;
      if (c !== null) {
        c.over = true;
        c.error ??= reason;
        wake(c);
      }
      x.reject(reason);
    }
    for (const q of queue.splice(0)) q.reject(closedError);
  }

  function lostConnection(): KlioError {
    if (fatal !== null) return new KlioError("pg-closed", `the server closed the connection to ${where}: ${fatal.message}`, { cause: fatal });
    if (socketError !== null) return new KlioError("pg-closed", `lost the connection to ${where}: ${socketErrorText(socketError)}`, { cause: socketError });
    return new KlioError("pg-closed", `the server closed the connection to ${where} unexpectedly`);
  }

  function onData(chunk: Uint8Array): void {
    if (phase === "closed") return; // after close(): what the server still sends is of no interest
    try {
      // A plain view of a Buffer, so payloads behave as Uint8Array (slice() copies) on every runtime.
      framer.push(input.reused ? chunk : new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    } catch (e) {
      fail(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    const x = current;
    const c = x?.copy;
    if (!x || !c) return;
    if (x.grace !== undefined && (c.queue.length > 0 || c.serverDone)) beginNow(x);
    wake(c);
  }

  function onClose(): void {
    if (phase === "startup") {
      const why = socketError !== null ? socketErrorText(socketError) : "the server closed the connection during startup";
      fail(new KlioError("pg-connect", `cannot connect to ${where}: ${why}`, socketError ? { cause: socketError } : undefined));
    } else {
      fail(lostConnection());
    }
  }

  function onInterrupt(): void {
    fail(interrupt.reason as Error);
  }

  function onAbort(): void {
    fail(abortError(opts.signal!));
  }

  const connection: ReplicationConnection = {
    server: where,
    connInfo: ci,
    get serverVersionNum() {
      return serverVersionNum(parameters.get("server_version") ?? "");
    },
    parameters,
    query(sql: string) {
      return run(sql, false);
    },
    copy(sql: string) {
      return new Promise<CopyStream>((resolve, reject) => {
        // Until the Copy*Response the exchange's resolve/reject settle this promise (with an
        // error); from then on stream() makes them settle finish().
        run(sql, true, (c, x) => resolve(stream(c, x))).catch(reject);
      });
    },
    close() {
      if (phase === "closed") {
        return socket.destroyed ? Promise.resolve() : new Promise<void>((resolve) => socket.once("close", () => resolve()));
      }
      return new Promise<void>((resolve) => {
        // Terminate, then wait for the server to close its side (at most 2 s).
        const timer = setTimeout(() => socket.destroy(), 2000);
        socket.once("close", () => {
          clearTimeout(timer);
          resolve();
        });
        socket.end(terminate);
        fail(new KlioError("pg-closed", `connection to ${where} is closed`), false);
        if (paused) socket.resume();
      });
    },
    destroy() {
      fail(new KlioError("pg-closed", `connection to ${where} is closed`));
    },
    get closed() {
      return phase === "closed";
    },
  };

  input.listen(onData);
  socket.on("error", (e: Error) => {
    socketError ??= e;
  });
  socket.on("close", onClose);
  interrupt.addEventListener("abort", onInterrupt, { once: true });
  opts.signal?.addEventListener("abort", onAbort, { once: true });

  send(
    startupMessage({
      user: ci.user,
      database: ci.dbname,
      application_name: ci.application_name,
      client_encoding: "UTF8",
      replication: opts.replication === false ? undefined : (opts.replication ?? "true"),
    }),
  );

  // After startup the interrupt signal (connect_timeout, or the caller's signal during connect) no longer applies.
  return started.then(
    (c) => {
      interrupt.removeEventListener("abort", onInterrupt);
      return c;
    },
    (e: unknown) => {
      throw e;
    },
  );
}
