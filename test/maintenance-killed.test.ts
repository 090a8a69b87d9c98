// kill -9 of maintenance at many points, each from the same repository: right after the kill
// the repository checks clean (every chunk read back) and the kept backup verifies; a second
// run finishes what the first left, and frees the space.
import { describe, it, expect, afterEach } from "vitest";
import { execFileSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import process from "node:process";
import { klioArgv, ROOT, runKlioAsync } from "./harness/klio.ts";
import { klio, pgbench, streamingServer, tempDir, type Cleanup } from "./harness/backup.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function packBytes(repo: string): number {
  let n = 0;
  for (const name of readdirSync(path.join(repo, "packs"), { recursive: true }) as string[]) if (name.endsWith(".pack")) n += statSync(path.join(repo, "packs", name)).size;
  return n;
}

/** Where to kill: the moment a step is logged, or after a delay from the start. */
type Point = { after: RegExp } | { ms: number };
const POINTS: Point[] = [
  { after: /maintenance\.start/ }, { after: /maintenance\.surveyed/ }, { after: /maintenance\.planned/ },
  { after: /maintenance\.swapping/ }, { after: /maintenance\.swapped/ },
  { ms: 350 }, { ms: 450 }, { ms: 550 }, { ms: 650 }, { ms: 800 }, { ms: 1000 },
];

/** Runs klio and sends SIGKILL at the point (from the output handler: within a millisecond of the line). */
async function killAt(args: string[], point: Point): Promise<{ killed: boolean; log: string }> {
  const child = spawn(process.execPath, klioArgv(args), { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  const kill = () => child.exitCode === null && child.kill("SIGKILL");
  const take = (d: Buffer) => {
    log += d;
    if ("after" in point && point.after.test(log)) kill();
  };
  child.stdout!.on("data", take);
  child.stderr!.on("data", take);
  const timer = "ms" in point ? setTimeout(kill, point.ms) : undefined;
  const signal = await new Promise<NodeJS.Signals | null>((r) => child.on("exit", (_code, sig) => r(sig)));
  clearTimeout(timer);
  return { killed: signal === "SIGKILL", log };
}

describe("maintenance killed with kill -9", () => {
  it("at any point leaves a consistent repository, and the next run finishes the job", { timeout: 900_000 }, async () => {
    const { pg, repo, receiver } = await streamingServer(cleanups, ["--pack-size", "512KiB"]);
    await pgbench(pg, ["-i", "-q", "-s", "3"]);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      ids.push(JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"])).id);
      await pgbench(pg, ["-t", "2000", "-c", "2"]);
    }
    await receiver.stop();
    for (const id of ids.slice(0, 2)) await klio(["backup", "delete", id, "--repo", repo]);
    const kept = ids[2]!;
    const before = packBytes(repo);

    const outcomes: string[] = [];
    for (const point of POINTS) {
      const copy = path.join(tempDir(cleanups, "klio-killed-"), "repo");
      execFileSync("cp", ["-a", repo, copy]);
      const run = await killAt(["repo", "maintenance", "--repo", copy], point);
      outcomes.push(`${"after" in point ? point.after.source : `${point.ms} ms`}: ${run.killed ? "killed" : "finished first"} (${run.log.trim().split("\n").at(-1)})`);

      // Straight after the crash: consistent, and the backup restores.
      const check = await runKlioAsync(["repo", "check", "--repo", copy, "--read-data"]);
      expect(check.code, `${outcomes.at(-1)}\n${check.stdout}${check.stderr}`).toBe(0);
      expect((await runKlioAsync(["backup", "verify", kept, "--repo", copy])).code, outcomes.at(-1)).toBe(0);

      const again = await runKlioAsync(["repo", "maintenance", "--repo", copy, "--json"]);
      expect(again.code, again.stderr).toBe(0);
      const clean = await runKlioAsync(["repo", "check", "--repo", copy, "--read-data"]);
      expect(clean.code, clean.stdout).toBe(0);
      expect(clean.stdout, outcomes.at(-1)).not.toMatch(/note:/);
      expect((await runKlioAsync(["backup", "verify", kept, "--repo", copy])).code).toBe(0);
      expect(packBytes(copy), outcomes.at(-1)).toBeLessThan(before * 0.8);
      expect(readdirSync(path.join(copy, "maintenance")).filter((n) => n !== "last.json")).toEqual([]);
    }
    // Most points must have caught it running, or the test proves little.
    expect(outcomes.filter((o) => o.includes(": killed")).length, outcomes.join("\n")).toBeGreaterThanOrEqual(8);
  });
});
