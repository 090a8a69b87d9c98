// The one list of what klio's test suite and benchmarks need from Debian, used by
// scripts/setup.mjs (which `npm test`, `npm run bench:*` and .ci/run go through).
// Each requirement names a check that is true when it is present, and the packages that
// provide it; a check looks at the files the tests actually run, not at dpkg's database.
import { accessSync, constants } from "node:fs";
import { spawnSync } from "node:child_process";

const executable = (file) => () => {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};
const onPath = (name) => () => spawnSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" }).status === 0;
const pythonModule = (name) => () => spawnSync("/usr/bin/python3", ["-c", `import ${name}`], { stdio: "ignore" }).status === 0;
const all = (...checks) => () => checks.every((check) => check());

/** @type {import("./system-packages.d.mts").Requirement[]} */
export const testRequirements = [
  { what: "PostgreSQL 15 (server, pg_basebackup, pg_receivewal, psql, pgbench)", packages: ["postgresql-15"], present: executable("/usr/lib/postgresql/15/bin/postgres") },
  { what: "strip, to build the single executable", packages: ["binutils"], present: onPath("strip") },
  { what: "openssl, for the TLS tests' certificates", packages: ["openssl"], present: onPath("openssl") },
  { what: "strace, for the durability-order tests", packages: ["strace"], present: onPath("strace") },
  { what: "pgrep and ps", packages: ["procps"], present: onPath("pgrep") },
  { what: "unshare and mount, for the read-only and pseudo file system tests", packages: ["util-linux"], present: onPath("unshare") },
  { what: "memcached, for OpenStack Swift", packages: ["memcached"], present: onPath("memcached") },
  {
    what: "OpenStack Swift with s3api, the second S3 server of the offsite tests",
    packages: ["python3-swift", "swift-proxy", "swift-account", "swift-container", "swift-object"],
    present: all(executable("/usr/bin/swift-proxy-server"), executable("/usr/bin/swift-object-server"), executable("/usr/bin/swift-ring-builder"), pythonModule("swift.common.middleware.s3api")),
  },
];

/** What `npm run bench:*` adds: the reference tools measured beside klio. */
export const benchRequirements = [
  ...testRequirements,
  { what: "restic, a reference of the deduplication benchmarks", packages: ["restic"], present: onPath("restic") },
  { what: "GNU time, for peak memory", packages: ["time"], present: executable("/usr/bin/time") },
];

/** The packages of the requirements that are not met, in list order, each once. */
export function missingPackages(requirements) {
  return [...new Set(requirements.filter((r) => !r.present()).flatMap((r) => r.packages))];
}
