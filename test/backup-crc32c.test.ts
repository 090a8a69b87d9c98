import { describe, expect, it } from "vitest";
import { crc32c, crc32cFinal, crc32cInit, crc32cManifestHex, crc32cUpdate } from "../src/backup/crc32c.ts";

describe("CRC-32C", () => {
  it("matches the standard check value and is the same in pieces", () => {
    const data = new TextEncoder().encode("123456789");
    expect(crc32c(data)).toBe(0xe3069283);
    let c = crc32cInit;
    for (const part of [data.subarray(0, 2), data.subarray(2, 7), data.subarray(7)]) c = crc32cUpdate(c, part);
    expect(crc32cFinal(c)).toBe(0xe3069283);
    const big = Uint8Array.from({ length: 100_003 }, (_, i) => (i * 7) & 0xff);
    expect(crc32cFinal(crc32cUpdate(crc32cUpdate(crc32cInit, big.subarray(0, 50_001)), big.subarray(50_001)))).toBe(crc32c(big));
  });

  it("gives RFC 3720's check values, and a bit-by-bit CRC's at every alignment and length", () => {
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
    const bitwise = (data: Uint8Array): number => {
      let c = 0xffffffff;
      for (const byte of data) {
        c ^= byte;
        for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
      }
      return (c ^ 0xffffffff) >>> 0;
    };
    const bytes = Uint8Array.from({ length: 8192 + 64 }, (_, i) => (i * 2654435761) >>> 24);
    for (let offset = 0; offset < 8; offset++)
      for (const length of [0, 1, 3, 4, 15, 16, 17, 31, 33, 64, 100, 8192])
        expect(crc32c(bytes.subarray(offset, offset + length)), `offset ${offset}, length ${length}`).toBe(bitwise(bytes.subarray(offset, offset + length)));
  });

  it("prints the way backup_manifest does (little-endian bytes)", () => {
    expect(crc32cManifestHex(0xe3069283)).toBe("839206e3");
  });
});
