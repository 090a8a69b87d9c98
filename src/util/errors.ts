/**
 * An error meant for the operator: a stable code scripts can match on, and a message a DBA
 * understands without reading the source. Raised at the edge (flags, config, connection
 * strings, WAL names, server replies) and printed as one line by the CLI.
 */
export class KlioError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "KlioError";
    this.code = code;
  }
}

export function isKlioError(e: unknown): e is KlioError {
  return e instanceof KlioError;
}

/** The file system is full (or the user's quota is): ENOSPC, EDQUOT, or our "disk-full". */
export function isDiskFull(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === "ENOSPC" || code === "EDQUOT" || code === "disk-full";
}
