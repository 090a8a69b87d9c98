// Sealing: what is sealed opens only with the same key and associated data, any changed byte
// is refused, every seal uses a fresh nonce; keys derived from the master key are distinct;
// the passphrase's key depends on passphrase and salt only.
import { describe, it, expect } from "vitest";
import { randomBytes } from "node:crypto";
import { deriveKek, deriveKeys, newMasterKey, seal, unseal, NONCE_BYTES, SEAL_OVERHEAD } from "../src/repo/crypto.ts";

const enc = (s: string) => new TextEncoder().encode(s);

describe("seal and unseal", () => {
  const key = new Uint8Array(randomBytes(32));
  const plain = enc("the contents of a page ".repeat(50));

  it("round-trip, with a fresh nonce each time", () => {
    const a = seal(key, plain, enc("chunk 1"));
    const b = seal(key, plain, enc("chunk 1"));
    expect(a.length).toBe(plain.length + SEAL_OVERHEAD);
    expect(Buffer.from(a.subarray(0, NONCE_BYTES)).equals(Buffer.from(b.subarray(0, NONCE_BYTES)))).toBe(false);
    expect(unseal(key, a, enc("chunk 1"))).toEqual(plain);
    expect(unseal(key, b, enc("chunk 1"))).toEqual(plain);
    expect(unseal(key, seal(key, new Uint8Array(0), enc("x")), enc("x"))).toEqual(new Uint8Array(0));
  });

  it("refuse another key, other associated data, any changed byte, and truncation", () => {
    const s = seal(key, plain, enc("chunk 1"));
    expect(unseal(new Uint8Array(randomBytes(32)), s, enc("chunk 1"))).toBeNull();
    expect(unseal(key, s, enc("chunk 2"))).toBeNull();
    for (const at of [0, NONCE_BYTES, NONCE_BYTES + 100, s.length - 1]) {
      const bad = s.slice();
      bad[at] ^= 1;
      expect(unseal(key, bad, enc("chunk 1")), `byte ${at}`).toBeNull();
    }
    expect(unseal(key, s.subarray(0, s.length - 1), enc("chunk 1"))).toBeNull();
    expect(unseal(key, s.subarray(0, 10), enc("chunk 1"))).toBeNull();
  });
});

describe("keys", () => {
  it("derived from one master key are distinct, and the same for the same master key", () => {
    const m = newMasterKey();
    const k = deriveKeys(m);
    expect(k.data.length).toBe(32);
    expect(Buffer.from(k.data).equals(Buffer.from(k.id))).toBe(false);
    expect(deriveKeys(m)).toEqual(k);
    expect(Buffer.from(deriveKeys(newMasterKey()).data).equals(Buffer.from(k.data))).toBe(false);
  });

  it("from a passphrase depend on it and on the salt", async () => {
    const cost = { N: 1024, r: 8, p: 1 };
    const salt = new Uint8Array(16).fill(7);
    const a = await deriveKek("correct horse", { ...cost, salt });
    expect(await deriveKek("correct horse", { ...cost, salt })).toEqual(a);
    expect(await deriveKek("correct horsE", { ...cost, salt })).not.toEqual(a);
    expect(await deriveKek("correct horse", { ...cost, salt: new Uint8Array(16).fill(8) })).not.toEqual(a);
    // Unicode normalisation: the same passphrase typed two ways is one passphrase.
    expect(await deriveKek("caf\u00e9", { ...cost, salt })).toEqual(await deriveKek("cafe\u0301", { ...cost, salt }));
  });
});
