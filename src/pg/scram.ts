// SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, on WebCrypto so it runs
// unchanged on Node and Deno. No channel binding: the GS2 header is "n,," (we neither
// support nor claim to support it). The user name in the exchange is empty; PostgreSQL
// takes it from the startup message.
import { KlioError } from "../util/errors.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

export interface ScramExchange {
  readonly mechanism: "SCRAM-SHA-256";
  /** client-first-message, the data of SASLInitialResponse. */
  readonly clientFirst: Uint8Array;
  /** Takes server-first-message (AuthenticationSASLContinue), returns client-final-message. */
  clientFinal(serverFirst: Uint8Array): Promise<Uint8Array>;
  /** Checks server-final-message (AuthenticationSASLFinal); throws unless the server proved it knows the password. */
  verifyServerFinal(serverFinal: Uint8Array): void;
  /** True once verifyServerFinal succeeded. */
  readonly verified: boolean;
}

function authError(message: string): KlioError {
  return new KlioError("pg-auth", `SCRAM authentication failed: ${message}`);
}

function toBase64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
  return btoa(s);
}

function fromBase64(s: string, what: string): Uint8Array {
  let bin: string;
  try {
    bin = atob(s);
  } catch {
    throw authError(`server sent invalid base64 in ${what}`);
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** "k=v,k=v" → Map; values may contain "=" (base64 padding). */
function attributes(message: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of message.split(",")) {
    const eq = part.indexOf("=");
    if (eq !== 1) throw authError(`malformed server message "${message}"`);
    m.set(part[0]!, part.slice(2));
  }
  return m;
}

async function hmac(key: Uint8Array, data: Uint8Array | string): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey("raw", key as BufferSource, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, (typeof data === "string" ? enc.encode(data) : data) as BufferSource));
}

async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data as BufferSource));
}

async function pbkdf2(password: Uint8Array, salt: Uint8Array, iterations: number): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey("raw", password as BufferSource, "PBKDF2", false, ["deriveBits"]);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: salt as BufferSource, iterations }, k, 256));
}

/** Compares in time independent of where the first difference is. */
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

// SASLprep (RFC 4013) as PostgreSQL applies it: if the password is not a valid SASLprep
// string, it is used as it is — the server does the same when it hashes, so both agree.
const MAP_TO_SPACE = /[\u00A0\u1680\u2000-\u200B\u202F\u205F\u3000]/g;
const MAP_TO_NOTHING = /[\u00AD\u034F\u1806\u180B-\u180D\u200C\u200D\u2060\uFE00-\uFE0F\uFEFF]/g;
// Prohibited output (RFC 3454 C.2–C.9) and, approximately, code points unassigned in Unicode 3.2.
const PROHIBITED = /[\p{Cc}\p{Co}\p{Cs}\p{Cn}\u0340\u0341\u200E\u200F\u202A-\u202E\u206A-\u206F\u2FF0-\u2FFB\uFFF9-\uFFFD\u{E0001}\u{E0020}-\u{E007F}]/u;

export function saslprep(password: string): string {
  // eslint-disable-next-line no-control-regex
  if (/^[\x20-\x7e]*$/.test(password)) return password; // printable ASCII maps to itself
  const mapped = password.replace(MAP_TO_SPACE, " ").replace(MAP_TO_NOTHING, "").normalize("NFKC");
  if (mapped.length === 0 || PROHIBITED.test(mapped)) return password;
  return mapped;
}

/**
 * One SCRAM-SHA-256 exchange. `nonce` and `user` exist for tests against the RFC 7677 vector;
 * PostgreSQL clients leave the user name empty (the server ignores it).
 */
export function scramSha256(password: string, opts: { nonce?: string; user?: string } = {}): ScramExchange {
  const clientNonce = opts.nonce ?? toBase64(crypto.getRandomValues(new Uint8Array(18)));
  const user = (opts.user ?? "").replace(/=/g, "=3D").replace(/,/g, "=2C");
  const clientFirstBare = `n=${user},r=${clientNonce}`;
  let expectedServerSignature: Uint8Array | null = null;
  let verified = false;

  async function clientFinal(serverFirstBytes: Uint8Array): Promise<Uint8Array> {
    const serverFirst = dec.decode(serverFirstBytes);
    const a = attributes(serverFirst);
    if (a.has("m")) throw authError("server requires an unsupported SCRAM extension");
    const serverNonce = a.get("r");
    const saltText = a.get("s");
    const iterText = a.get("i");
    if (serverNonce === undefined || saltText === undefined || iterText === undefined) {
      throw authError(`server-first-message lacks nonce, salt or iteration count: "${serverFirst}"`);
    }
    if (!serverNonce.startsWith(clientNonce) || serverNonce.length <= clientNonce.length) {
      throw authError("server nonce does not extend the client nonce");
    }
    if (!/^[1-9][0-9]{0,9}$/.test(iterText)) throw authError(`invalid iteration count "${iterText}"`);
    const salt = fromBase64(saltText, "salt");
    if (salt.length === 0) throw authError("server sent an empty salt");

    const salted = await pbkdf2(enc.encode(saslprep(password)), salt, Number(iterText));
    const clientKey = await hmac(salted, "Client Key");
    const storedKey = await sha256(clientKey);
    const clientFinalWithoutProof = `c=biws,r=${serverNonce}`; // biws = base64("n,,")
    const authMessage = `${clientFirstBare},${serverFirst},${clientFinalWithoutProof}`;
    const clientSignature = await hmac(storedKey, authMessage);
    const proof = new Uint8Array(clientKey.length);
    for (let i = 0; i < proof.length; i++) proof[i] = clientKey[i]! ^ clientSignature[i]!;
    const serverKey = await hmac(salted, "Server Key");
    expectedServerSignature = await hmac(serverKey, authMessage);
    return enc.encode(`${clientFinalWithoutProof},p=${toBase64(proof)}`);
  }

  function verifyServerFinal(serverFinalBytes: Uint8Array): void {
    if (expectedServerSignature === null) throw authError("server sent its final message before ours");
    const a = attributes(dec.decode(serverFinalBytes));
    const e = a.get("e");
    if (e !== undefined) throw authError(`server reported "${e}"`);
    const v = a.get("v");
    if (v === undefined) throw authError("server-final-message has no signature");
    if (!equalBytes(fromBase64(v, "server signature"), expectedServerSignature)) {
      throw authError("the server's signature is wrong: it does not know the password (possible impostor)");
    }
    verified = true;
  }

  return {
    mechanism: "SCRAM-SHA-256",
    clientFirst: enc.encode(`n,,${clientFirstBare}`),
    clientFinal,
    verifyServerFinal,
    get verified() {
      return verified;
    },
  };
}
