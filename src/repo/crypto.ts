// Encryption at rest. A random 32-byte master key, wrapped (AES-256-GCM) with a key derived
// from the passphrase by scrypt, so the passphrase can change without re-encrypting anything.
// From the master key two keys are derived (HMAC-SHA-256 with distinct labels): one encrypts
// blobs (chunks, index blocks, objects), one keys the chunk-id HMAC. Every blob is
// AES-256-GCM with a fresh random 96-bit nonce, laid out nonce ‖ ciphertext ‖ tag, and with
// associated data that binds it to where it belongs (its chunk id, its object key, its index
// block), so a blob moved elsewhere does not decrypt.
import { createCipheriv, createDecipheriv, createHmac, randomBytes, scrypt } from "node:crypto";
import { KlioError } from "../util/errors.ts";

export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
export const SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES;
export const MASTER_KEY_BYTES = 32;

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
  salt: Uint8Array;
}

/** About 0.1 s and 32 MB on this class of machine: costly to guess, cheap to open. */
export const DEFAULT_SCRYPT = { N: 1 << 15, r: 8, p: 1 } as const;

export function deriveKek(passphrase: string, s: ScryptParams): Promise<Uint8Array> {
  return new Promise((resolve, reject) =>
    scrypt(passphrase.normalize("NFC"), s.salt, 32, { N: s.N, r: s.r, p: s.p, maxmem: 256 * s.N * s.r + 1024 * 1024 }, (err, key) =>
      err ? reject(new KlioError("bad-repository", `cannot derive the key from the passphrase: ${err.message}`)) : resolve(new Uint8Array(key)),
    ),
  );
}

export interface RepoKeys {
  /** Encrypts and authenticates blobs. */
  data: Uint8Array;
  /** Keys the chunk-id HMAC. */
  id: Uint8Array;
}

export function deriveKeys(master: Uint8Array): RepoKeys {
  const label = (l: string) => new Uint8Array(createHmac("sha256", master).update(`klio-repository-v1 ${l}`).digest());
  return { data: label("data encryption"), id: label("chunk id") };
}

export function newMasterKey(): Uint8Array {
  return new Uint8Array(randomBytes(MASTER_KEY_BYTES));
}

/** nonce ‖ AES-256-GCM(plain) ‖ tag, written into `out` at `at` when given. */
export function seal(key: Uint8Array, plain: Uint8Array, aad: Uint8Array): Uint8Array {
  const nonce = randomBytes(NONCE_BYTES);
  const c = createCipheriv("aes-256-gcm", key, nonce);
  c.setAAD(aad);
  const out = new Uint8Array(NONCE_BYTES + plain.length + TAG_BYTES);
  out.set(nonce, 0);
  const body = c.update(plain);
  out.set(body, NONCE_BYTES);
  const tail = c.final();
  out.set(tail, NONCE_BYTES + body.length);
  out.set(c.getAuthTag(), NONCE_BYTES + plain.length);
  return out;
}

/** The plain bytes, or null when the blob is damaged or belongs elsewhere (wrong key, wrong aad). */
export function unseal(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | null {
  if (sealed.length < SEAL_OVERHEAD) return null;
  try {
    const d = createDecipheriv("aes-256-gcm", key, sealed.subarray(0, NONCE_BYTES));
    d.setAAD(aad);
    d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    const body = d.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES));
    const tail = d.final();
    if (tail.length === 0) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
    const out = new Uint8Array(body.length + tail.length);
    out.set(body, 0);
    out.set(tail, body.length);
    return out;
  } catch {
    return null;
  }
}
