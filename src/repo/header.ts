// The repository's one mutable file, klio-repository.json: what the repository is (format,
// version, id) and how it is written (pack size, chunk ids, compression, encryption). It is
// rewritten only by a passphrase change, atomically. Documented in docs/FORMAT.md.
import { KlioError } from "../util/errors.ts";
import { isCompression, type Compression } from "./codec.ts";
import { MASTER_KEY_BYTES, SEAL_OVERHEAD } from "./crypto.ts";

export const HEADER_KEY = "klio-repository.json";
export const REPO_FORMAT = "klio-repository";
export const REPO_VERSION = 1;

export interface RepoParameters {
  /** A pack is sealed when adding the next chunk would take it past this size. */
  packTargetBytes: number;
  chunkId: "sha256" | "hmac-sha256";
  /** Codec for new chunks and objects. */
  compression: Compression;
}

export interface RepoEncryption {
  algorithm: "aes-256-gcm";
  kdf: { name: "scrypt"; N: number; r: number; p: number; salt: string };
  /** base64 of nonce ‖ AES-256-GCM(master key) ‖ tag, key from the KDF. */
  wrappedKey: string;
}

export interface RepoHeader {
  format: typeof REPO_FORMAT;
  version: typeof REPO_VERSION;
  /** 32 lower-case hex digits, random. */
  id: string;
  createdAt: string;
  parameters: RepoParameters;
  encryption: RepoEncryption | null;
}

export function encodeHeader(h: RepoHeader): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(h, null, 2) + "\n");
}

/** The header, validated; KlioError "bad-repository" naming what is wrong. */
export function parseHeader(bytes: Uint8Array, where: string): RepoHeader {
  const bad = (why: string) => new KlioError("bad-repository", `${where}: ${why}`);
  let h: Record<string, unknown>;
  try {
    h = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw bad(`${HEADER_KEY} is damaged (not JSON)`);
  }
  if (typeof h !== "object" || h === null || h.format !== REPO_FORMAT) throw bad(`${HEADER_KEY} is not a klio repository header`);
  if (h.version !== REPO_VERSION)
    throw bad(`repository format version ${JSON.stringify(h.version)} is not supported by this klio (it reads version ${REPO_VERSION}); use a klio that does`);
  if (typeof h.id !== "string" || !/^[0-9a-f]{32}$/.test(h.id)) throw bad(`${HEADER_KEY}: bad id`);
  if (typeof h.createdAt !== "string" || Number.isNaN(Date.parse(h.createdAt))) throw bad(`${HEADER_KEY}: bad createdAt`);
  const p = h.parameters as Record<string, unknown> | undefined;
  if (typeof p !== "object" || p === null) throw bad(`${HEADER_KEY}: no parameters`);
  if (!Number.isSafeInteger(p.packTargetBytes) || (p.packTargetBytes as number) < 1 << 16 || (p.packTargetBytes as number) > 1 << 30)
    throw bad(`${HEADER_KEY}: packTargetBytes must be an integer from 64 KiB to 1 GiB`);
  if (!isCompression(p.compression)) throw bad(`${HEADER_KEY}: unknown compression ${JSON.stringify(p.compression)}`);
  const e = h.encryption as Record<string, unknown> | null | undefined;
  if (e === null || e === undefined) {
    if (p.chunkId !== "sha256") throw bad(`${HEADER_KEY}: an unencrypted repository has chunkId "sha256"`);
    return { ...(h as unknown as RepoHeader), encryption: null };
  }
  if (p.chunkId !== "hmac-sha256") throw bad(`${HEADER_KEY}: an encrypted repository has chunkId "hmac-sha256"`);
  if (typeof e !== "object" || e.algorithm !== "aes-256-gcm") throw bad(`${HEADER_KEY}: unknown encryption ${JSON.stringify(e.algorithm)}`);
  const k = e.kdf as Record<string, unknown> | undefined;
  if (typeof k !== "object" || k === null || k.name !== "scrypt") throw bad(`${HEADER_KEY}: unknown key derivation`);
  const N = k.N as number;
  if (!Number.isInteger(N) || N < 1024 || N > 1 << 22 || (N & (N - 1)) !== 0) throw bad(`${HEADER_KEY}: scrypt N must be a power of 2 from 1024 to 2^22`);
  if (!Number.isInteger(k.r) || (k.r as number) < 1 || (k.r as number) > 32) throw bad(`${HEADER_KEY}: scrypt r must be 1 to 32`);
  if (!Number.isInteger(k.p) || (k.p as number) < 1 || (k.p as number) > 16) throw bad(`${HEADER_KEY}: scrypt p must be 1 to 16`);
  const salt = fromBase64(k.salt);
  if (!salt || salt.length < 16) throw bad(`${HEADER_KEY}: bad scrypt salt`);
  const wrapped = fromBase64(e.wrappedKey);
  if (!wrapped || wrapped.length !== MASTER_KEY_BYTES + SEAL_OVERHEAD) throw bad(`${HEADER_KEY}: bad wrappedKey`);
  return h as unknown as RepoHeader;
}

export function toBase64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
  return btoa(s);
}

export function fromBase64(s: unknown): Uint8Array | null {
  if (typeof s !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return null;
  try {
    return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}
