// Given the shipped executable dist/klio, copied alone into an empty directory (no
// node_modules, no sources next to it), when it is run, then it answers like the sources
// do and prints no Node warning. The build is redone first when any input changed.
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe } from "vitest";
import { ROOT, cleanEnv, runner, smokeTests, streamingTest, type Runner } from "./cli-smoke.ts";

describe("the single executable dist/klio, alone in an empty directory", () => {
  let dir = "";
  let klio: Runner;

  beforeAll(() => {
    // A no-op when dist/klio was built from the current sources (scripts/build.mjs --if-stale).
    execFileSync(process.execPath, [path.join(ROOT, "scripts", "build.mjs"), "--if-stale"], { cwd: ROOT, stdio: "pipe", timeout: 300_000 });
    dir = mkdtempSync(path.join(tmpdir(), "klio-sea-"));
    const exe = path.join(dir, "klio");
    copyFileSync(path.join(ROOT, "dist", "klio"), exe);
    chmodSync(exe, 0o755);
    klio = runner(exe, [], { cwd: dir, env: cleanEnv() });
  }, 300_000);

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  smokeTests(() => klio);

  streamingTest(() => ({ file: path.join(dir, "klio"), prefix: [], cwd: dir, env: cleanEnv() }));
});
