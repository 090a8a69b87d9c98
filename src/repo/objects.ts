// Small immutable objects beside the chunks (the snapshot manifests of backups): compressed
// like chunks, sealed in an encrypted repository with the object's key as associated data.
//
// Version 1 (documented in docs/FORMAT.md, "Objects"):
//   "KLIOOBJT" | version u32 (1) | body
//   body, plain repository:     codec u8 | plain length u32 | data | SHA-256 of the plain bytes
//   body, encrypted repository: sealed(codec u8 | plain length u32 | data)
import { createHash } from "node:crypto";
import { KlioError } from "../util/errors.ts";
import { Compressor, decompress, type Compression } from "./codec.ts";
import { seal, unseal } from "./crypto.ts";

const MAGIC = new TextEncoder().encode("KLIOOBJT");
const VERSION = 1;
const PREAMBLE = 12;
const HASH = 32;

/** Object keys live under these top-level names; packs, index and wal belong to others. */
const OBJECT_ROOTS = ["snapshots"];

export function validateObjectKey(key: string): string {
  const parts = key.split("/");
  if (parts.length < 2 || !OBJECT_ROOTS.includes(parts[0]!) || parts.some((p) => !/^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$/.test(p)))
    throw new KlioError("bad-key", `"${key.slice(0, 100)}" is not a valid object key (${OBJECT_ROOTS.map((r) => r + "/…").join(", ")}; letters, digits, "_", ".", "-")`);
  return key;
}

function aad(key: string): Uint8Array {
  return new TextEncoder().encode(`klio object ${key}`);
}

export function encodeObject(key: string, data: Uint8Array, compression: Compression, dataKey: Uint8Array | null): Uint8Array {
  const c = new Compressor(compression).compress(data);
  const inner = new Uint8Array(5 + c.bytes.length + (dataKey ? 0 : HASH));
  inner[0] = c.codec;
  new DataView(inner.buffer).setUint32(1, data.length);
  inner.set(c.bytes, 5);
  if (!dataKey) inner.set(createHash("sha256").update(data).digest(), 5 + c.bytes.length);
  const body = dataKey ? seal(dataKey, inner, aad(key)) : inner;
  const out = new Uint8Array(PREAMBLE + body.length);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(8, VERSION);
  out.set(body, PREAMBLE);
  return out;
}

export function decodeObject(key: string, stored: Uint8Array, dataKey: Uint8Array | null): Uint8Array {
  const bad = (why: string) => new KlioError("corrupt-object", `object ${key} is damaged: ${why}`);
  if (stored.length < PREAMBLE + 5) throw bad("too short");
  for (let i = 0; i < MAGIC.length; i++) if (stored[i] !== MAGIC[i]) throw bad("no object magic");
  const version = new DataView(stored.buffer, stored.byteOffset).getUint32(8);
  if (version !== VERSION) throw new KlioError("corrupt-object", `object ${key} has format version ${version}; this klio reads version ${VERSION}`);
  let inner = stored.subarray(PREAMBLE);
  if (dataKey) {
    const plain = unseal(dataKey, inner, aad(key));
    if (plain === null) throw bad("it does not decrypt");
    inner = plain;
  } else if (inner.length < 5 + HASH) throw bad("too short");
  const length = new DataView(inner.buffer, inner.byteOffset).getUint32(1);
  let data: Uint8Array;
  try {
    data = decompress(inner[0]!, inner.subarray(5, dataKey ? inner.length : inner.length - HASH), length);
  } catch (e) {
    throw bad((e as Error).message);
  }
  if (!dataKey) {
    const h = createHash("sha256").update(data).digest();
    const want = inner.subarray(inner.length - HASH);
    for (let i = 0; i < HASH; i++) if (h[i] !== want[i]) throw bad("checksum mismatch");
  }
  return data;
}
