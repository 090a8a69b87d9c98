// target_session_attrs, as libpq judges a server: from the in_hot_standby and
// default_transaction_read_only values the server reports at startup (PostgreSQL 14 and
// newer report both, on replication connections too, which cannot run SQL), else from SHOW.
import { KlioError } from "../util/errors.ts";
import type { TargetSessionAttrs } from "./conninfo.ts";
import type { ReplicationConnection } from "./replication-connection.ts";

export interface SessionState {
  /** The server is in recovery: a standby (in_hot_standby). */
  inHotStandby: boolean;
  /** New transactions are read-only (default_transaction_read_only). */
  readOnly: boolean;
}

/** What a connection's server is, from its reported parameters or SHOW. */
export async function readSessionState(conn: ReplicationConnection): Promise<SessionState> {
  const setting = async (name: string): Promise<boolean> => {
    let value = conn.parameters.get(name);
    if (value === undefined) {
      const [r] = await conn.query(`SHOW ${name}`);
      value = String(r?.rows[0]?.[0] ?? "");
    }
    if (value !== "on" && value !== "off") throw new KlioError("pg-protocol", `cannot tell whether ${conn.server} is a standby: ${name} is "${value}"`);
    return value === "on";
  };
  return { inHotStandby: await setting("in_hot_standby"), readOnly: await setting("default_transaction_read_only") };
}

/**
 * Why a server in `state` does not fit `want` (libpq's words), or null when it does.
 * prefer-standby is two passes, standby then any: the caller asks for each.
 */
export function sessionMismatch(state: SessionState, want: Exclude<TargetSessionAttrs, "prefer-standby">): string | null {
  const readOnly = state.readOnly || state.inHotStandby;
  switch (want) {
    case "any":
      return null;
    case "read-write":
      return readOnly ? "session is read-only" : null;
    case "read-only":
      return readOnly ? null : "session is not read-only";
    case "primary":
      return state.inHotStandby ? "server is in hot standby mode" : null;
    case "standby":
      return state.inHotStandby ? null : "server is not in hot standby mode";
  }
}
