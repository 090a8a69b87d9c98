// Given the sources, when they are run by Deno 2 (`deno run -A src/cli/main.ts`, the Deno
// from our dev dependencies), then klio answers exactly as the single executable does.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { describe } from "vitest";
import { ROOT, cleanEnv, runner, smokeTests, streamingTest } from "./cli-smoke.ts";

/** The deno binary itself: npm puts it beside its wrapper only when install scripts ran. */
function denoBinary(): string {
  const beside = path.join(ROOT, "node_modules", "deno", "deno");
  if (existsSync(beside)) return beside;
  const require = createRequire(path.join(ROOT, "node_modules", "deno", "package.json"));
  for (const target of ["linux-x64-glibc", "linux-arm64-glibc", "darwin-arm64", "darwin-x64"]) {
    try {
      const exe = path.join(path.dirname(require.resolve(`@deno/${target}/package.json`)), "deno");
      if (existsSync(exe)) return exe;
    } catch {
      // not this platform's package
    }
  }
  return path.join(ROOT, "node_modules", ".bin", "deno");
}

describe("the sources under Deno 2", () => {
  const env = cleanEnv({ NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", DENO_NO_PROMPT: "1" });
  const prefix = ["run", "-A", path.join(ROOT, "src", "cli", "main.ts")];
  smokeTests(() => runner(denoBinary(), prefix, { cwd: ROOT, env }));
  streamingTest(() => ({ file: denoBinary(), prefix, cwd: ROOT, env }));
});
