// `npm start` (scripts/demo.ts): the whole job through the daemon — backup over the API,
// restore to a restore point, the row counts compared — and nothing left running afterwards,
// also when the previous run was killed with kill -9.
import { describe, it, expect, afterEach } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT, runKlio, waitFor } from "./harness/klio.ts";

interface DemoRun {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

function startDemo(args: string[]): DemoRun {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(ROOT, "scripts", "demo.ts"), ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return { child, output: () => out, exited };
}

/** Processes whose command line names the directory (the demo, its daemon, PostgreSQL, get-wal). */
function processesIn(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0").join(" ");
      if (args.includes(dir)) out.push(`${entry} ${args}`);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

let base = "";
afterEach(() => {
  for (const line of base ? processesIn(base) : []) {
    try {
      process.kill(Number(line.split(" ")[0]), "SIGKILL");
    } catch {
      // gone
    }
  }
  if (base) rmSync(base, { recursive: true, force: true });
  base = "";
});

/** A directory PostgreSQL's user can reach (the demo runs it as postgres when we are root). */
function demoDir(): string {
  base = mkdtempSync(path.join(tmpdir(), "klio-demo-test-"));
  chmodSync(base, 0o755);
  return path.join(base, "demo");
}

function expectTheWholeJob(output: string): void {
  expect(output).toMatch(/primary 2200\s+restored 1500\s+expected 1500/);
  expect(output).toMatch(/^\[demo\] restore check: OK/m);
  expect(output).toMatch(/POST \/v1\/clusters\/demo\/backups: job \S+/);
  expect(output).toMatch(/curl -s -H "Authorization: Bearer \$\(cat \S+admin\.token\)" http:\/\/127\.0\.0\.1:\d+\/v1\/status/);
  expect(output.split("\n").filter((l) => l !== "").every((l) => l.startsWith("[demo]"))).toBe(true);
}

describe("npm start: the demo", () => {
  it("backs up through the API, restores to the restore point with 1500 of 2200 rows, and stops everything", async () => {
    // Given a new directory, when the demo runs for 3 s past the restore check,
    const dir = demoDir();
    const demo = startDemo(["--seconds", "3", "--pause", "0", "--dir", dir]);
    const code = await demo.exited;
    // then it exits 0 having shown the whole job, and nothing it started runs any more.
    expect(code, demo.output()).toBe(0);
    expectTheWholeJob(demo.output());
    expect(demo.output()).toMatch(/\+100 rows: 2300 on the primary/);
    expect(processesIn(base)).toEqual([]);
    // The repository it leaves is one the CLI reads: its backup, and WAL with no gap.
    const list = runKlio(["backup", "list", "--repo", path.join(dir, "repo"), "--json"]);
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout).backups).toHaveLength(1);
    const wal = runKlio(["wal", "status", "--repo", path.join(dir, "repo")]);
    expect(wal.code, wal.stderr).toBe(0);
    expect(wal.stdout).toMatch(/^gaps +none$/m);
  }, 240_000);

  it("replaces a run that was killed with kill -9, leaving nothing of either", async () => {
    // Given a demo killed with kill -9 after its restore check (its daemon and servers live on),
    const dir = demoDir();
    const first = startDemo(["--pause", "0", "--dir", dir]);
    await waitFor("the first demo's restore check", () => /restore check: OK/.test(first.output()) || (first.child.exitCode !== null ? Promise.reject(new Error(first.output())) : false), 180_000);
    first.child.kill("SIGKILL");
    await first.exited;
    expect(processesIn(base).length).toBeGreaterThan(0);
    // when the demo runs again on the same directory,
    const second = startDemo(["--seconds", "3", "--pause", "0", "--dir", dir]);
    const code = await second.exited;
    // then it says so, replaces it, passes, and nothing of either run is left.
    expect(code, second.output()).toBe(0);
    expect(second.output()).toMatch(/^\[demo\] replacing the previous demo in /m);
    expect(second.output()).toMatch(/stopped what it left running: klio \(pid \d+(, \d+)*\); PostgreSQL \(pid \d+, \d+\)/);
    expectTheWholeJob(second.output());
    expect(processesIn(base)).toEqual([]);
  }, 240_000);

  it("refuses a bad flag with one line and exit 2", async () => {
    const demo = startDemo(["--seconds", "soon"]);
    expect(await demo.exited).toBe(2);
    expect(demo.output().trim().split("\n")).toHaveLength(1);
    expect(demo.output()).toMatch(/--seconds needs a number of seconds/);
  });

  it("--help says what it runs and every flag, and starts nothing", async () => {
    const demo = startDemo(["--help"]);
    expect(await demo.exited).toBe(0);
    expect(demo.output()).toMatch(/^usage: npm start -- \[--seconds N\] \[--dir DIR\] \[--pause SECONDS\]\n/);
    for (const flag of ["--seconds N", "--dir DIR", "--pause SECONDS"]) expect(demo.output()).toMatch(new RegExp(`^  ${flag} +\\S`, "m"));
    expect(demo.output()).not.toMatch(/^\[demo\]/m);
  });
});
