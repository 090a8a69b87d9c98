// Damage for tests of damage detection. A single flipped byte inside compressed data can,
// rarely, decode to the same bytes (DEFLATE ignores the padding bits before a stored block):
// a test must not depend on luck, so 64 bytes are inverted.
import { closeSync, openSync, readSync, statSync, writeSync } from "node:fs";

const SPAN = 64;

/** A copy of `bytes` with 64 bytes in the middle inverted. */
export function damaged(bytes: Uint8Array): Uint8Array {
  const b = Uint8Array.from(bytes);
  const at = Math.max(0, (b.length >> 1) - SPAN / 2);
  for (let i = at; i < Math.min(b.length, at + SPAN); i++) b[i] = b[i]! ^ 0xff;
  return b;
}

/** Inverts 64 bytes in the middle of the file, in place. */
export function damageFile(file: string): void {
  const at = Math.max(0, Math.floor(statSync(file).size / 2) - SPAN / 2);
  const fd = openSync(file, "r+");
  try {
    const b = Buffer.alloc(SPAN);
    const n = readSync(fd, b, 0, SPAN, at);
    for (let i = 0; i < n; i++) b[i] = b[i]! ^ 0xff;
    writeSync(fd, b, 0, n, at);
  } finally {
    closeSync(fd);
  }
}
