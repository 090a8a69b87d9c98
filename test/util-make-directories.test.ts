import { describe, expect, it } from "vitest";
import { mkdtempSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { makeDirectories } from "../src/util/make-directories.ts";

describe("makeDirectories (mkdir -p)", () => {
  it("makes the missing parents with the mode, says which it made first, and accepts a directory that exists", async () => {
    const root = mkdtempSync(path.join(tmpdir(), "klio-mkdirs-"));
    const deep = path.join(root, "a", "b", "c");
    expect(await makeDirectories(deep, 0o750)).toBe(path.join(root, "a"));
    for (const d of ["a", "a/b", "a/b/c"]) expect(statSync(path.join(root, d)).mode & 0o777).toBe(0o750 & ~process.umask());
    expect(await makeDirectories(deep)).toBeUndefined();
    expect(await makeDirectories(path.join(root, "a", "b", "d"))).toBe(path.join(root, "a", "b", "d"));
    await Promise.all([1, 2, 3, 4].map(() => makeDirectories(path.join(root, "x", "y", "z"))));
    expect(statSync(path.join(root, "x", "y", "z")).isDirectory()).toBe(true);
  });

  it("fails at once where mkdir is refused: under a file, and under /proc (where Node's recursive mkdir spins)", async () => {
    const root = mkdtempSync(path.join(tmpdir(), "klio-mkdirs-"));
    writeFileSync(path.join(root, "file"), "");
    await expect(makeDirectories(path.join(root, "file", "sub"))).rejects.toMatchObject({ code: "EEXIST", path: path.join(root, "file") });
    await expect(makeDirectories(path.join(root, "file"))).rejects.toMatchObject({ code: "EEXIST" });
    const t = Date.now();
    await expect(makeDirectories("/proc/klio-test/sub")).rejects.toMatchObject({ code: "ENOENT" });
    expect(Date.now() - t).toBeLessThan(5000);
  });
});
