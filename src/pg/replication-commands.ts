// The replication commands klio sends (protocol-replication), typed: results are parsed
// into Lsn/Timeline here so that callers never handle the server's text.
import { KlioError } from "../util/errors.ts";
import { formatLsn, parseLsn, parseSegmentSize, type Lsn, type SegmentSize, type Timeline } from "./lsn.ts";
import { PgServerError } from "./server-error.ts";
import type { CopyStream, ReplicationConnection, ResultSet } from "./replication-connection.ts";

export interface SystemIdentity {
  systemIdentifier: string;
  timeline: Timeline;
  /** Current WAL flush position of the server. */
  xlogpos: Lsn;
}

function onlyRow(sets: ResultSet[], what: string): (string | null)[] {
  const row = sets.find((s) => s.columns.length > 0)?.rows[0];
  if (!row) throw new KlioError("pg-protocol", `the server answered ${what} without a row`);
  return row;
}

function text(v: string | null | undefined, what: string): string {
  if (v === null || v === undefined) throw new KlioError("pg-protocol", `the server answered ${what} with a null`);
  return v;
}

export async function identifySystem(conn: ReplicationConnection): Promise<SystemIdentity> {
  const row = onlyRow(await conn.query("IDENTIFY_SYSTEM"), "IDENTIFY_SYSTEM");
  // The timeline is int4 on PostgreSQL 15 and int8 on 18; both arrive as decimal text.
  return { systemIdentifier: text(row[0], "IDENTIFY_SYSTEM"), timeline: Number(text(row[1], "IDENTIFY_SYSTEM")), xlogpos: parseLsn(text(row[2], "IDENTIFY_SYSTEM")) };
}

export async function walSegmentSize(conn: ReplicationConnection): Promise<SegmentSize> {
  return parseSegmentSize(text(onlyRow(await conn.query("SHOW wal_segment_size"), "SHOW wal_segment_size")[0], "SHOW wal_segment_size"));
}

/** Slot names as PostgreSQL allows them; also keeps them safe to splice into commands. */
export function validateSlotName(name: string): string {
  if (!/^[a-z0-9_]{1,63}$/.test(name))
    throw new KlioError("usage", `"${name}" is not a valid replication slot name (lower-case letters, digits and "_", at most 63)`);
  return name;
}

export interface SlotPosition {
  restartLsn: Lsn | undefined;
  restartTimeline: Timeline | undefined;
}

/** undefined when the slot does not exist. PostgreSQL 15+. */
export async function readReplicationSlot(conn: ReplicationConnection, slot: string): Promise<SlotPosition | undefined> {
  const row = onlyRow(await conn.query(`READ_REPLICATION_SLOT ${validateSlotName(slot)}`), "READ_REPLICATION_SLOT");
  if (row[0] === null) return undefined;
  if (row[0] !== "physical") throw new KlioError("slot-wrong-type", `replication slot ${slot} is a ${row[0]} slot; klio needs a physical slot`);
  return { restartLsn: row[1] === null ? undefined : parseLsn(row[1]!), restartTimeline: row[2] === null ? undefined : Number(row[2]) };
}

/** Creates a physical slot that reserves WAL at once; false when it already existed. */
export async function createPhysicalSlot(conn: ReplicationConnection, slot: string): Promise<boolean> {
  try {
    await conn.query(`CREATE_REPLICATION_SLOT ${validateSlotName(slot)} PHYSICAL RESERVE_WAL`);
    return true;
  } catch (e) {
    if (e instanceof PgServerError && e.sqlstate === "42710") return false; // duplicate_object
    throw e;
  }
}

export async function timelineHistory(conn: ReplicationConnection, tli: Timeline): Promise<{ filename: string; content: Uint8Array }> {
  const row = onlyRow(await conn.query(`TIMELINE_HISTORY ${tli}`), "TIMELINE_HISTORY");
  // The content column is bytea-typed but sent as the file's text in text format.
  return { filename: text(row[0], "TIMELINE_HISTORY"), content: new TextEncoder().encode(text(row[1], "TIMELINE_HISTORY")) };
}

export async function startReplication(conn: ReplicationConnection, opts: { slot?: string; start: Lsn; timeline: Timeline }): Promise<CopyStream> {
  const slot = opts.slot ? `SLOT ${validateSlotName(opts.slot)} ` : "";
  return await conn.copy(`START_REPLICATION ${slot}PHYSICAL ${formatLsn(opts.start)} TIMELINE ${opts.timeline}`);
}

/** After the server ends a timeline's stream: the next timeline and where it starts. */
export function nextTimeline(results: ResultSet[]): { timeline: Timeline; start: Lsn } | undefined {
  const row = results.find((s) => s.columns.length >= 2)?.rows[0];
  if (!row || row[0] === null || row[1] === null) return undefined;
  return { timeline: Number(row[0]), start: parseLsn(row[1]!) };
}
