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

  it("prints the way backup_manifest does (little-endian bytes)", () => {
    expect(crc32cManifestHex(0xe3069283)).toBe("839206e3");
  });
});
