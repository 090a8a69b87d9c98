// Requests to the appliance's HTTP API from the restore side (the http repository backend and
// get-wal's WAL source): the bearer token, one error for an unreachable appliance, and the
// API's JSON error bodies turned into one line.
import { KlioError } from "./errors.ts";

/** A repository location that is the appliance's API (https://host:port) rather than a directory. */
export function isApiLocation(location: string): boolean {
  return /^https?:\/\//i.test(location);
}

/** The header a reader of the repository over the API names itself in (src/api/read-leases.ts). */
export const READER_HEADER = "x-klio-reader";

export async function apiFetch(base: string, pathAndQuery: string, token: string | undefined, init: { method?: string; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<Response> {
  const headers: Record<string, string> = { ...init.headers };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  let r: Response;
  try {
    // The timeout covers the body too: reading it fails once the time is up.
    const signal = init.timeoutMs === undefined ? undefined : AbortSignal.timeout(init.timeoutMs);
    r = await fetch(base + pathAndQuery, { method: init.method ?? "GET", headers, signal });
  } catch (e) {
    const cause = (e as { cause?: { message?: string } }).cause?.message;
    throw new KlioError("unreachable", `cannot reach ${base}: ${cause ?? (e as Error).message}`);
  }
  if (r.status === 401 || r.status === 403) {
    throw new KlioError("unauthorized", `${base} refused the request (${r.status}): ${await apiErrorDetail(r)}${token === undefined ? " (give a token with --token-file)" : ""}`);
  }
  return r;
}

/** The `detail` of the API's JSON error, or the start of whatever else came back. */
async function apiErrorDetail(r: Response): Promise<string> {
  return errorDetailOf(await r.text().catch(() => ""), r);
}

/**
 * An answer the caller did not expect, as one error: "http-unavailable" for the answers worth
 * trying again later (5xx, 429: a restarting appliance, a proxy in between), "corrupt-wal" when
 * the appliance found the WAL file damaged, "http-error" for the rest.
 */
export async function apiFailure(r: Response, what: string): Promise<KlioError> {
  const text = await r.text().catch(() => "");
  const code = errorCodeOf(text);
  const message = `${what}: HTTP ${r.status}: ${errorDetailOf(text, r)}`;
  if (code === "corrupt-wal") return new KlioError("corrupt-wal", message);
  return new KlioError(r.status >= 500 || r.status === 429 ? "http-unavailable" : "http-error", message);
}

function errorCodeOf(text: string): string | undefined {
  try {
    const j = JSON.parse(text) as { error?: unknown };
    return typeof j.error === "string" ? j.error : undefined;
  } catch {
    return undefined;
  }
}

function errorDetailOf(text: string, r: Response): string {
  try {
    const j = JSON.parse(text) as { detail?: unknown };
    if (typeof j.detail === "string") return j.detail;
  } catch {
    // not the API's JSON error
  }
  return text.slice(0, 200) || r.statusText;
}
