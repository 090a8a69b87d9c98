// BASE_BACKUP over a replication connection, as a stream of typed events.
//
// PostgreSQL 15 and later answer BASE_BACKUP with: a result set with the start position, a
// result set of tablespaces, then one CopyOut in which every CopyData starts with a type
// byte — 'n' a new archive (name, tablespace location), 'd' bytes of the current archive
// (or of the manifest once 'm' came), 'p' progress (bytes done), 'm' the manifest follows —
// and after the CopyDone a result set with the end position. WAL is not asked for: klio's
// receiver archives it. WAIT false, because the backup is complete once the receiver has the
// WAL up to the end position, which the caller checks; waiting for archive_command would
// wait for something klio does not use.
//
// Archive data is handed on as views of the connection's buffers, without copying: the
// backup's bytes go straight to the tar reader.
//
// An incremental backup (PostgreSQL 17+, summarize_wal = on) is two commands on one
// connection: UPLOAD_MANIFEST hands the server the backup_manifest of the backup it is
// relative to, then BASE_BACKUP with INCREMENTAL streams as above, with `INCREMENTAL.<file>`
// entries (backup/incremental-file.ts) for relation files that changed little. The server
// keeps the uploaded manifest for the rest of the session.
import { KlioError } from "../util/errors.ts";
import { concatBytes } from "../util/bytes.ts";
import { parseLsn, type Lsn, type Timeline } from "./lsn.ts";
import type { CopyStream, ReplicationConnection, ResultSet } from "./replication-connection.ts";
import { PgServerError } from "./server-error.ts";

export interface BaseBackupOptions {
  label: string;
  /** CHECKPOINT 'fast' (default) rather than 'spread'. */
  fastCheckpoint?: boolean;
  /** Checksums in PostgreSQL's backup_manifest (default CRC32C, as pg_basebackup). */
  manifestChecksums?: "CRC32C" | "SHA256" | "NONE";
  /** MAX_RATE in kB/s; PostgreSQL accepts 32 to 1048576. */
  maxRateKbps?: number;
  /** INCREMENTAL: relative to the manifest uploadManifest() sent on this connection. */
  incremental?: boolean;
}

export type BaseBackupEvent =
  | { kind: "start"; startLsn: Lsn; timeline: Timeline; tablespaces: { oid: number; location: string; sizeBytes: number | null }[]; totalBytes: number | null }
  /** base.tar has oid null. */
  | { kind: "archive"; name: string; tablespaceOid: number | null; tablespaceLocation: string | null }
  /** Bytes of the current archive; valid until the next event is requested. */
  | { kind: "data"; bytes: Uint8Array }
  | { kind: "progress"; doneBytes: number }
  /** The complete backup_manifest (an owned copy). */
  | { kind: "manifest"; bytes: Uint8Array }
  | { kind: "end"; endLsn: Lsn; timeline: Timeline };

/** The BASE_BACKUP command for `opts`; exported for tests and messages. */
export function baseBackupCommand(opts: BaseBackupOptions): string {
  if (/[\0-\x1f\x7f]/.test(opts.label)) throw new KlioError("bad-label", `backup label ${JSON.stringify(opts.label)} contains a control character`);
  const parts = [
    `LABEL '${opts.label.replace(/'/g, "''")}'`,
    "PROGRESS",
    `CHECKPOINT '${opts.fastCheckpoint === false ? "spread" : "fast"}'`,
    "WAIT false",
    "MANIFEST 'yes'",
    `MANIFEST_CHECKSUMS '${opts.manifestChecksums ?? "CRC32C"}'`,
    "TABLESPACE_MAP",
  ];
  if (opts.maxRateKbps !== undefined) {
    // The server checks the range and says so; it only has to be a number here.
    if (!Number.isSafeInteger(opts.maxRateKbps)) throw new KlioError("bad-max-rate", `maximum rate ${opts.maxRateKbps} kB/s is not a whole number`);
    parts.push(`MAX_RATE ${opts.maxRateKbps}`);
  }
  if (opts.incremental) parts.push("INCREMENTAL");
  return `BASE_BACKUP (${parts.join(", ")})`;
}

function protocolError(message: string): KlioError {
  return new KlioError("pg-protocol", `BASE_BACKUP: ${message}`);
}

/** The one row of a result set of a position and a timeline (start and end of the backup). */
function position(set: ResultSet | undefined, what: string): { lsn: Lsn; timeline: Timeline } {
  const row = set?.rows[0];
  if (!set || set.columns.length < 2 || !row || row[0] === null || row[1] === null) throw protocolError(`the server sent no ${what} position`);
  const timeline = Number(row[1]);
  if (!Number.isInteger(timeline) || timeline < 1) throw protocolError(`${what} timeline ${JSON.stringify(row[1])} is not a timeline`);
  return { lsn: parseLsn(row[0]!), timeline };
}

function startEvent(preceding: ResultSet[]): Extract<BaseBackupEvent, { kind: "start" }> {
  const sets = preceding.filter((s) => s.columns.length > 0);
  const start = position(sets[0], "start");
  const list = sets[1];
  if (!list || list.columns.length < 3) throw protocolError("the server sent no tablespace list");
  const tablespaces: { oid: number; location: string; sizeBytes: number | null }[] = [];
  let total: number | null = 0;
  for (const [oid, location, sizeKb] of list.rows) {
    // Sizes come in kB, only with PROGRESS; the data directory's row has no oid.
    const sizeBytes = sizeKb === null || sizeKb === undefined ? null : Number(sizeKb) * 1024;
    if (sizeBytes === null || !Number.isFinite(sizeBytes)) total = null;
    else if (total !== null) total += sizeBytes;
    if (oid === null || oid === undefined) continue;
    if (!/^\d+$/.test(oid) || location === null || location === undefined) throw protocolError(`bad tablespace row ${JSON.stringify([oid, location])}`);
    tablespaces.push({ oid: Number(oid), location, sizeBytes });
  }
  return { kind: "start", startLsn: start.lsn, timeline: start.timeline, tablespaces, totalBytes: total };
}

/** 'n': archive name and tablespace location, each NUL-terminated. */
function archiveEvent(msg: Uint8Array): Extract<BaseBackupEvent, { kind: "archive" }> {
  const nameEnd = msg.indexOf(0, 1);
  const locEnd = nameEnd < 0 ? -1 : msg.indexOf(0, nameEnd + 1);
  if (locEnd < 0) throw protocolError("malformed new-archive message");
  const decoder = new TextDecoder();
  const name = decoder.decode(msg.subarray(1, nameEnd));
  const location = decoder.decode(msg.subarray(nameEnd + 1, locEnd));
  let tablespaceOid: number | null = null;
  if (name !== "base.tar") {
    const m = /^(\d+)\.tar$/.exec(name);
    if (!m) throw protocolError(`unexpected archive name ${JSON.stringify(name)} (compressed or server-side targets are not used by klio)`);
    tablespaceOid = Number(m[1]);
  }
  return { kind: "archive", name, tablespaceOid, tablespaceLocation: location === "" ? null : location };
}

/**
 * Runs BASE_BACKUP on `conn` (a physical replication connection) and yields its events in
 * order: start, then per archive: archive, data…, progress…; then manifest, end.
 *
 * Server errors (a bad option, a standby promoted during the backup, a full disk on the
 * server) reject as PgServerError; the connection stays usable. Stopping the iteration early
 * while the server is still sending archives closes the connection — COPY OUT cannot be
 * ended from the client, and reading the rest of a large backup to get back to a usable
 * connection would cost more than a new connection; the server aborts the backup when it
 * sees the connection gone.
 */
export async function* runBaseBackup(conn: ReplicationConnection, opts: BaseBackupOptions): AsyncGenerator<BaseBackupEvent> {
  const stream: CopyStream = await conn.copy(baseBackupCommand(opts));
  let over = false;
  try {
    if (stream.mode !== "out") throw protocolError(`expected COPY OUT, the server started COPY ${stream.mode.toUpperCase()}`);
    yield startEvent(stream.preceding);

    let inArchive = false;
    let manifest: Uint8Array[] | null = null;
    for (;;) {
      const batch = await stream.read();
      if (batch === "end") break;
      if (batch === "timeout") continue; // read() without a timeout never says so
      for (const msg of batch) {
        switch (msg[0]) {
          case 0x64: // 'd'
            if (manifest !== null) manifest.push(msg.slice(1)); // the batch's memory is reused: copy
            else if (inArchive) yield { kind: "data", bytes: msg.subarray(1) };
            else throw protocolError("archive data before the first archive");
            break;
          case 0x6e: // 'n'
            if (manifest !== null) throw protocolError("a new archive after the manifest");
            inArchive = true;
            yield archiveEvent(msg);
            break;
          case 0x70: {
            // 'p'
            if (msg.length < 9) throw protocolError("short progress message");
            const done = new DataView(msg.buffer, msg.byteOffset + 1, 8).getBigInt64(0);
            yield { kind: "progress", doneBytes: Number(done) };
            break;
          }
          case 0x6d: // 'm'
            if (manifest !== null) throw protocolError("a second manifest");
            manifest = [];
            inArchive = false;
            break;
          default:
            throw protocolError(`unknown message type ${JSON.stringify(String.fromCharCode(msg[0] ?? 0))} in the COPY stream`);
        }
      }
    }
    const after = await stream.finish();
    over = true;
    const end = position(after.find((s) => s.columns.length > 0), "end");
    if (manifest === null) throw protocolError("the server sent no backup_manifest");
    yield { kind: "manifest", bytes: concatBytes(manifest) };
    yield { kind: "end", endLsn: end.lsn, timeline: end.timeline };
  } catch (e) {
    if (e instanceof PgServerError) {
      // A server error ends the exchange; once its ReadyForQuery is in, the connection is usable.
      await stream.finish().catch(() => {});
      over = true;
    }
    throw e;
  } finally {
    if (!over && !conn.closed) conn.destroy();
  }
}

/**
 * CopyData messages of UPLOAD_MANIFEST carry this much of the manifest each: large enough that
 * a big manifest is few messages, small enough that write() keeps the socket's backpressure.
 */
const MANIFEST_CHUNK = 256 * 1024;

/**
 * UPLOAD_MANIFEST: sends `manifest` (a prior backup's backup_manifest, as the server sent it)
 * over COPY IN, for a BASE_BACKUP with `incremental` on the same connection. The server parses
 * it once the copy ends; what it refuses (a manifest of another system, version 1, a damaged
 * one) rejects as PgServerError and leaves the connection usable.
 */
export async function uploadManifest(conn: ReplicationConnection, manifest: Uint8Array): Promise<void> {
  // Older servers answer "cannot execute SQL commands in WAL sender for physical replication".
  if (conn.serverVersionNum < 170000) {
    throw new KlioError("pg-version", `incremental backups need PostgreSQL 17 or later; the server runs ${conn.parameters.get("server_version") ?? "an older version"}`);
  }
  const stream = await conn.copy("UPLOAD_MANIFEST");
  try {
    if (stream.mode !== "in") throw new KlioError("pg-protocol", `UPLOAD_MANIFEST: expected COPY IN, the server started COPY ${stream.mode.toUpperCase()}`);
    for (let at = 0; at < manifest.length; at += MANIFEST_CHUNK) await stream.write(manifest.subarray(at, at + MANIFEST_CHUNK));
  } catch (e) {
    // An error the server sent is also what finish() rejects with; ours ends the copy.
    await stream.finish().catch(() => {});
    throw e;
  }
  await stream.finish();
}
