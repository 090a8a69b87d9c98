#!/usr/bin/env node
// Builds dist/klio, the one executable we ship: a Node Single Executable Application.
//
//   1. esbuild bundles src/cli/main.ts and every dependency into one CommonJS script
//      (a SEA's main script must be CommonJS and may `require` only Node builtins).
//      Lazily imported commands stay lazy: esbuild wraps each in an init function that
//      runs on first import, so `klio get-wal` evaluates only what get-wal uses.
//   2. `node --experimental-sea-config` turns the script into a blob, with V8's code
//      cache so start-up skips compiling the bundle (useSnapshot is off: it breaks node:http).
//   3. A copy of this Node binary is stripped (before injection: strip would drop the blob)
//      and the blob is injected with postject.
//
// A Node 20 SEA still reads NODE_OPTIONS: V8 flags there (e.g. --max-old-space-size) make
// V8 reject the code cache, with a "Code cache data rejected" warning on stderr; klio still
// works, just starts a little slower.
//
// Usage: node scripts/build.mjs [--if-stale] [--no-code-cache] [--out PATH]
//   --if-stale       do nothing when dist/klio was built from the same inputs (sources,
//                    lockfile, this script, this Node binary); tests call this.
//   --no-code-cache  build without V8's code cache (to measure what it buys).
//   --out PATH       write the executable elsewhere than dist/klio.
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { builtinModules } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const ENTRY = path.join(ROOT, "src", "cli", "main.ts");
const WORKER_ENTRY = path.join(ROOT, "src", "repo", "chunk-worker.ts");
const VERSION_FILE = path.join(ROOT, "src", "util", "version.ts");
const SEA_FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";

function parseFlags(argv) {
  const opts = { ifStale: false, codeCache: true, out: path.join(ROOT, "dist", "klio") };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--if-stale") opts.ifStale = true;
    else if (a === "--no-code-cache") opts.codeCache = false;
    else if (a === "--out" && i + 1 < argv.length) opts.out = path.resolve(argv[++i]);
    else {
      process.stderr.write(`build: unknown argument ${a} (usage: node scripts/build.mjs [--if-stale] [--no-code-cache] [--out PATH])\n`);
      process.exit(2);
    }
  }
  return opts;
}

/** Every file under dir, sorted, as paths relative to ROOT. */
function listFiles(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(path.relative(ROOT, p));
    }
  };
  walk(dir);
  return out.sort();
}

/** A hash of everything the executable is made from. */
function inputsHash(opts) {
  const h = createHash("sha256");
  const files = [...listFiles(path.join(ROOT, "src")), "package.json", "package-lock.json", "scripts/build.mjs"];
  for (const f of files) {
    const full = path.join(ROOT, f);
    if (!fs.existsSync(full)) continue;
    h.update(f + "\0");
    h.update(fs.readFileSync(full));
    h.update("\0");
  }
  const node = fs.statSync(process.execPath);
  h.update(`node ${process.version} ${process.execPath} ${node.size} ${node.mtimeMs}\0codeCache=${opts.codeCache}`);
  return h.digest("hex");
}

/** Replaces the VERSION literal in src/util/version.ts with package.json's version. */
function versionPlugin(version) {
  return {
    name: "klio-version",
    setup(build) {
      build.onLoad({ filter: /[\\/]src[\\/]util[\\/]version\.ts$/ }, async (args) => {
        if (path.resolve(args.path) !== VERSION_FILE) return undefined;
        const src = await fs.promises.readFile(args.path, "utf8");
        const re = /(export\s+const\s+VERSION\s*(?::\s*string\s*)?=\s*)(["'`])[^"'`]*\2/;
        if (!re.test(src)) throw new Error(`${path.relative(ROOT, VERSION_FILE)} no longer has 'export const VERSION = "…"'; update scripts/build.mjs`);
        return { contents: src.replace(re, `$1${JSON.stringify(version)}`), loader: "ts" };
      });
    },
  };
}

// A CommonJS bundle has no import.meta. Dependencies that use import.meta.url (usually for
// createRequire or to find files beside themselves) get the executable's own path instead.
const IMPORT_META_SHIM = [
  "var __klio_filename = typeof __filename === \"string\" && __filename ? __filename : process.execPath;",
  "var __klio_import_meta = { url: require(\"node:url\").pathToFileURL(__klio_filename).href, filename: __klio_filename, dirname: require(\"node:path\").dirname(__klio_filename) };",
].join("\n");

/** One CommonJS script for Node 20. Whitespace and syntax only: identifiers keep their names, so an internal error's stack trace still names our functions. */
const BUNDLE_OPTIONS = {
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: false,
  legalComments: "none",
  logLevel: "warning",
};

/**
 * chunk-worker.ts as one script for `new Worker(code, { eval: true })`: a single executable
 * has no module file a worker could load (src/repo/chunk-workers.ts).
 */
async function workerSource() {
  const result = await esbuild.build({ ...BUNDLE_OPTIONS, entryPoints: [WORKER_ENTRY], write: false });
  const code = result.outputFiles[0].text;
  checkRequires(code, "the chunk worker");
  return code;
}

/** A SEA's require() loads only builtins: any other require() would fail where the executable is copied to. */
function checkRequires(code, what) {
  const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
  const stray = new Set();
  for (const m of code.matchAll(/\brequire\(\s*["'`]([^"'`]+)["'`]\s*\)/g)) if (!builtins.has(m[1])) stray.add(m[1]);
  if (stray.size) {
    throw new Error(`${what} requires modules that are not Node builtins, which a single executable cannot load: ${[...stray].join(", ")}`);
  }
}

async function bundle(outfile, version) {
  const worker = await workerSource();
  const result = await esbuild.build({
    ...BUNDLE_OPTIONS,
    entryPoints: [ENTRY],
    outfile,
    define: { "import.meta": "__klio_import_meta", KLIO_CHUNK_WORKER_SOURCE: JSON.stringify(worker) },
    banner: { js: IMPORT_META_SHIM },
    plugins: [versionPlugin(version)],
    metafile: true,
  });
  const code = fs.readFileSync(outfile, "utf8");
  if (/\bimport\.meta\b/.test(code)) throw new Error("the bundle still contains import.meta");
  checkRequires(code, "the bundle");
  return { bytes: Buffer.byteLength(code), inputs: Object.keys(result.metafile.inputs).length };
}

function run(cmd, args, opts = {}) {
  try {
    return execFileSync(cmd, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], ...opts }).toString();
  } catch (e) {
    const out = [e.stdout, e.stderr].filter(Boolean).map(String).join("").trim();
    throw new Error(`${path.basename(cmd)} ${args.join(" ")} failed${e.code ? ` (${e.code})` : ""}${out ? `:\n${out}` : ""}`);
  }
}

function mib(n) {
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

async function main() {
  const opts = parseFlags(process.argv.slice(2));
  const t0 = performance.now();
  const stampFile = `${opts.out}.stamp`;
  const hash = inputsHash(opts);
  if (opts.ifStale && fs.existsSync(opts.out) && fs.existsSync(stampFile) && fs.readFileSync(stampFile, "utf8").trim() === hash) {
    process.stdout.write(`build: ${path.relative(ROOT, opts.out) || opts.out} is up to date\n`);
    return;
  }

  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8"));
  const outDir = path.dirname(opts.out);
  fs.mkdirSync(outDir, { recursive: true });
  // Everything is built in a private directory and renamed into place at the end, so a
  // concurrent build or a test that is running the old executable never sees half a file.
  const work = fs.mkdtempSync(path.join(outDir, ".build-"));
  try {
    const script = path.join(work, "klio.cjs");
    const b = await bundle(script, pkg.version);
    const tBundle = performance.now();

    const blob = path.join(work, "klio.blob");
    const seaConfig = path.join(work, "sea-config.json");
    fs.writeFileSync(seaConfig, JSON.stringify({ main: script, output: blob, disableExperimentalSEAWarning: true, useCodeCache: opts.codeCache }, null, 2));
    run(process.execPath, ["--experimental-sea-config", seaConfig]);
    const tBlob = performance.now();

    const exe = path.join(work, "klio");
    fs.copyFileSync(process.execPath, exe);
    fs.chmodSync(exe, 0o755);
    run("strip", [exe]);
    const tStrip = performance.now();

    const postject = path.join(ROOT, "node_modules", ".bin", "postject");
    run(postject, [exe, "NODE_SEA_BLOB", blob, "--sentinel-fuse", SEA_FUSE]);
    const tInject = performance.now();

    // The executable must answer before it is put in place.
    const said = run(exe, ["--version"], { cwd: work, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } }).trim();
    if (said !== `klio ${pkg.version}`) throw new Error(`the new executable printed "${said}" for --version, expected "klio ${pkg.version}"`);

    fs.renameSync(exe, opts.out);
    fs.writeFileSync(stampFile, hash + "\n");
    const total = performance.now() - t0;
    const s = (ms) => `${(ms / 1000).toFixed(1)}s`;
    process.stdout.write(
      `build: ${path.relative(ROOT, opts.out) || opts.out} klio ${pkg.version}, ${mib(fs.statSync(opts.out).size)} ` +
        `(bundle ${mib(b.bytes)} from ${b.inputs} files, blob ${mib(fs.statSync(blob).size)}${opts.codeCache ? " with code cache" : ""}) ` +
        `in ${s(total)}: bundle ${s(tBundle - t0)}, blob ${s(tBlob - tBundle)}, strip ${s(tStrip - tBlob)}, inject ${s(tInject - tStrip)}\n`,
    );
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`build: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
