// No stack trace reaches the operator: an error of the operating system is one line naming
// what could not be done to which path (exit 1), anything else one "internal error" line
// (exit 70); KLIO_DEBUG=1 adds the stack.
import { describe, it, expect, afterEach } from "vitest";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { runKlioAsync } from "./harness/klio.ts";
import { tempDir, type Cleanup } from "./harness/backup.ts";
import { failureLine } from "../src/cli/failure-line.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("a failed command says one line", () => {
  it("an error of the operating system: what, where, why; the stack only with KLIO_DEBUG=1", async () => {
    // A repository whose WAL directory of db1 is a file, not a directory.
    const repo = path.join(tempDir(cleanups, "klio-one-line-"), "repo");
    expect((await runKlioAsync(["init", "--repo", repo])).code).toBe(0);
    mkdirSync(path.join(repo, "wal"));
    writeFileSync(path.join(repo, "wal", "db1"), "x");
    const r = await runKlioAsync(["wal", "status", "--repo", repo, "--cluster", "db1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`klio: cannot open ${path.join(repo, "wal", "db1", "cluster.json")}: a part of the path is not a directory\n`);
    const debug = await runKlioAsync(["wal", "status", "--repo", repo, "--cluster", "db1"], { env: { KLIO_DEBUG: "1" } });
    expect(debug.code).toBe(1);
    expect(debug.stderr).toMatch(/^klio: cannot open .*\n.*ENOTDIR.*\n\s+at /);
  });

  it("maps errors to lines and exit codes", () => {
    const sys = (code: string, syscall: string, more: Record<string, unknown> = {}) => Object.assign(new Error(`${code}: boom, ${syscall}`), { code, syscall, ...more });
    expect(failureLine(sys("EACCES", "open", { path: "/x/y" }), false)).toEqual({ text: "klio: cannot open /x/y: permission denied\n", exitCode: 1 });
    expect(failureLine(sys("EROFS", "mkdir", { path: "/ro/d" }), false)).toEqual({ text: "klio: cannot create the directory /ro/d: read-only file system\n", exitCode: 1 });
    expect(failureLine(sys("ENOSPC", "write", { path: "/full/f" }), false).text).toBe("klio: cannot write /full/f: no space left on device\n");
    expect(failureLine(sys("EXDEV", "rename", { path: "/a", dest: "/b" }), false).text).toBe("klio: cannot rename /a to /b: not on the same file system\n");
    expect(failureLine(sys("ECONNREFUSED", "connect", { address: "127.0.0.1", port: 5 }), false).text).toBe("klio: cannot connect to 127.0.0.1:5: connection refused\n");
    // fetch wraps the system error in its cause.
    expect(failureLine(new TypeError("fetch failed", { cause: sys("ECONNRESET", "read") }), false).text).toBe("klio: ECONNRESET: boom, read (connection reset)\n");
    const bug = new Error("cannot read properties of undefined\n(reading 'x')");
    expect(failureLine(bug, false)).toEqual({ text: "klio: internal error: cannot read properties of undefined (reading 'x') (set KLIO_DEBUG=1 for the stack)\n", exitCode: 70 });
    const debug = failureLine(bug, true);
    expect(debug.exitCode).toBe(70);
    expect(debug.text).toMatch(/^klio: internal error: cannot read properties of undefined \(reading 'x'\)\nError: cannot read/);
    expect(failureLine("a string thrown", false)).toEqual({ text: "klio: internal error: a string thrown (set KLIO_DEBUG=1 for the stack)\n", exitCode: 70 });
  });
});
