// --pg, the server a command connects to. Optional everywhere it appears: like psql, what the
// connection string leaves out comes from the PG* environment variables, then libpq's defaults
// (src/pg/conninfo.ts). The daemon (klio server start) takes its connections from its config.
import type { FlagSpec } from "./args.ts";

export function pgFlag(server: string): FlagSpec {
  return {
    kind: "string", value: "CONNSTR",
    help: `libpq connection string or URI of ${server}. Optional: what it leaves out comes from PGHOST, PGPORT, PGUSER, ` +
      "PGPASSWORD, PGDATABASE, PGSSLMODE and the other PG* variables and ~/.pgpass, else libpq's defaults (the local socket " +
      "in /var/run/postgresql or /tmp, port 5432, the operating system user). Several servers as libpq takes them: " +
      "host=db1,db2 (or postgresql://db1,db2/postgres) with target_session_attrs=primary (or standby, read-write, " +
      "read-only, prefer-standby, any)",
  };
}
