// How to run this same klio again from another process: PostgreSQL's restore_command
// (written by restore) and the background WAL prefetcher both call back into the binary
// that is running now — the single executable, Node on the sources, or Deno.
import { createRequire } from "node:module";
import path from "node:path";
import process from "node:process";

interface DenoLike {
  execPath(): string;
  mainModule?: string;
}

/** argv (absolute paths) that starts this klio; append the command and its flags. */
export function selfCommand(): string[] {
  const deno = (globalThis as { Deno?: DenoLike }).Deno;
  if (deno !== undefined) {
    const main = deno.mainModule?.startsWith("file://") ? new URL(deno.mainModule).pathname : process.argv[1]!;
    return [deno.execPath(), "run", "-A", main];
  }
  if (isSingleExecutable()) return [process.execPath];
  const script = path.resolve(process.argv[1]!);
  return [process.execPath, ...absoluteExecArgv(process.execArgv, script), script];
}

function isSingleExecutable(): boolean {
  try {
    return createRequire(path.join(process.cwd(), "x.js"))("node:sea").isSea() === true;
  } catch {
    return false;
  }
}

/**
 * Node's own flags, with `--import NAME` (e.g. tsx, when running the sources) resolved to a
 * file: the other process starts in another directory (a data directory, for PostgreSQL).
 */
function absoluteExecArgv(argv: string[], script: string): string[] {
  const out: string[] = [];
  const req = createRequire(script);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const joined = /^--(import|require)=(.*)$/.exec(a);
    const flag = joined ? `--${joined[1]}` : a === "--import" || a === "--require" ? a : undefined;
    if (flag === undefined) {
      out.push(a);
      continue;
    }
    const spec = joined ? joined[2]! : argv[++i]!;
    out.push(flag, isBare(spec) ? resolveFrom(req, spec) : spec);
  }
  return out;
}

function isBare(spec: string): boolean {
  return !spec.startsWith(".") && !spec.startsWith("/") && !/^[a-z]+:/.test(spec);
}

function resolveFrom(req: NodeRequire, spec: string): string {
  try {
    return req.resolve(spec);
  } catch {
    return spec;
  }
}

/** One argv as a POSIX shell word list (restore_command runs through sh -c). */
export function shellQuote(argv: string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(" ");
}
