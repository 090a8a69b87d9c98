// An ErrorResponse from the server, as a value: the SQLSTATE for code to match on, the
// server's own words for the operator.
import { KlioError } from "../util/errors.ts";

/** Fields of an ErrorResponse / NoticeResponse, keyed by their one-letter type (S, V, C, M, D, H, P, W, …). */
export type PgFields = Readonly<Record<string, string>>;

export class PgServerError extends KlioError {
  /** Five-character SQLSTATE, e.g. "42601" (syntax error), "28P01" (wrong password). */
  readonly sqlstate: string;
  /** Non-localized severity (V) when the server sends it (9.6+), else the localized one (S). */
  readonly severity: string;
  readonly detail?: string;
  readonly hint?: string;
  /** Every field the server sent, for whatever the named properties leave out (position, where, routine…). */
  readonly fields: PgFields;

  /** `context`, when given, is put in front of the server's message ("cannot connect to postgres@db1:5432"). */
  constructor(fields: PgFields, context?: string) {
    const text = fields.M ?? "unknown server error";
    super("pg-error", context ? `${context}: ${text}` : text);
    this.name = "PgServerError";
    this.sqlstate = fields.C ?? "XX000";
    this.severity = fields.V ?? fields.S ?? "ERROR";
    if (fields.D !== undefined) this.detail = fields.D;
    if (fields.H !== undefined) this.hint = fields.H;
    this.fields = fields;
  }
}
