// The messages inside a physical replication stream's CopyData (protocol-replication):
// XLogData ('w') and primary keepalive ('k') from the server, standby status update ('r')
// to it. Payloads are sliced, never copied.
import { KlioError } from "../util/errors.ts";
import type { Lsn } from "./lsn.ts";

export type ReplicationMessage =
  | { kind: "xlogdata"; start: Lsn; serverWalEnd: Lsn; data: Uint8Array }
  | { kind: "keepalive"; serverWalEnd: Lsn; replyRequested: boolean };

/** Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01). */
const PG_EPOCH_US = 946_684_800_000_000n;

export function parseReplicationMessage(payload: Uint8Array): ReplicationMessage {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const type = payload[0];
  if (type === 0x77 /* w */ && payload.length >= 25) {
    return { kind: "xlogdata", start: view.getBigUint64(1), serverWalEnd: view.getBigUint64(9), data: payload.subarray(25) };
  }
  if (type === 0x6b /* k */ && payload.length >= 18) {
    return { kind: "keepalive", serverWalEnd: view.getBigUint64(1), replyRequested: payload[17] === 1 };
  }
  throw new KlioError("pg-protocol", `unexpected replication message of type ${JSON.stringify(String.fromCharCode(type ?? 0))} and ${payload.length} bytes`);
}

/** Standby status update: positions written and durably flushed; apply is not ours to report. */
export function standbyStatusUpdate(write: Lsn, flush: Lsn, nowMs: number, replyRequested = false): Uint8Array {
  const msg = new Uint8Array(34);
  const view = new DataView(msg.buffer);
  msg[0] = 0x72; // r
  view.setBigUint64(1, write);
  view.setBigUint64(9, flush);
  view.setBigUint64(17, 0n);
  view.setBigInt64(25, BigInt(Math.floor(nowMs)) * 1000n - PG_EPOCH_US);
  msg[33] = replyRequested ? 1 : 0;
  return msg;
}
