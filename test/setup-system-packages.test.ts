// `npm test` on a machine that lacks what the suite needs from Debian: as a non-root user the
// set-up stops at once with one line that names the packages and the apt-get command. The
// missing packages are simulated in a private mount namespace (unshare) that hides PostgreSQL
// 15 and Swift's tools, so this machine's packages stay installed.
import { describe, it, expect } from "vitest";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { ROOT } from "./harness/klio.ts";
import { missingPackages, testRequirements } from "../scripts/system-packages.mjs";

const isRoot = process.getuid?.() === 0;

/** Runs `node scripts/setup.mjs PURPOSE` as the postgres user with PostgreSQL 15 and Swift hidden. */
function setupWithoutPackages(purpose: string) {
  const hide = [
    "mount -t tmpfs none /usr/lib/postgresql",
    "mount --bind /dev/null /usr/bin/swift-ring-builder",
    `exec runuser -u postgres -- ${JSON.stringify(process.execPath)} scripts/setup.mjs ${purpose}`,
  ].join(" && ");
  return spawnSync("unshare", ["--mount", "--propagation", "private", "sh", "-c", hide], { cwd: ROOT, encoding: "utf8" });
}

describe("the test suite's set-up", () => {
  it("finds this machine complete (npm test installed what was missing)", () => {
    expect(missingPackages(testRequirements)).toEqual([]);
  });

  it.runIf(isRoot)("as a non-root user, stops with one line naming the missing packages and the command", () => {
    const run = setupWithoutPackages("test");
    expect(run.status).toBe(1);
    expect(run.stdout).toBe("");
    const lines = run.stderr.trimEnd().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^setup: npm test needs Debian packages that are not installed: postgresql-15, python3-swift, swift-proxy, swift-account, swift-container, swift-object; install them as root/);
    expect(lines[0]).toContain("`apt-get install -y --no-install-recommends postgresql-15 python3-swift swift-proxy swift-account swift-container swift-object`");
    expect(lines[0]).toMatch(/or run this as root, which installs them$/);
  });

  it.runIf(isRoot)("needs nothing from Debian for npm start", () => {
    const run = setupWithoutPackages("start");
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
  });

  it("refuses an unknown purpose with one line", () => {
    const run = spawnSync(process.execPath, [path.join("scripts", "setup.mjs"), "tests"], { cwd: ROOT, encoding: "utf8" });
    expect(run.status).toBe(1);
    expect(run.stderr).toBe('setup: unknown purpose "tests": use start, test or bench\n');
  });
});
