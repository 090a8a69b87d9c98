// The lock file (src/util/lock-file.ts) between real processes: four contenders race for one
// lock at the same instant, round after round, against a stale lock of every kind (a dead pid,
// a live pid with another start time, the pid-only file of older klio naming a dead pid or
// written before the last boot), a free one, and a live one. Exactly one wins each stale or
// free round, none a live one, and nothing is left behind.
import { describe, it, expect, afterEach } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync, existsSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { ROOT } from "./harness/klio.ts";
import { describeHolder, tryLock, waitForLock } from "../src/util/lock-file.ts";
import { thisProcess } from "../src/util/process-liveness.ts";

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "klio-lock-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Contender {
  child: ChildProcess;
  ask(line: string): Promise<string>;
}

function contender(): Contender {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(ROOT, "test", "lock-contender-child.ts")], { cwd: ROOT, stdio: ["pipe", "pipe", "inherit"] });
  cleanups.push(() => void child.kill("SIGKILL"));
  const answers: string[] = [];
  const waiting: ((l: string) => void)[] = [];
  createInterface({ input: child.stdout! }).on("line", (l) => (waiting.length ? waiting.shift()!(l) : answers.push(l)));
  return {
    child,
    ask(line) {
      child.stdin!.write(line + "\n");
      return answers.length ? Promise.resolve(answers.shift()!) : new Promise((r) => waiting.push(r));
    },
  };
}

/** A pid that ran and is gone. */
function deadPid(): number {
  const r = spawnSync("true");
  return r.pid!;
}

function lockJson(process: { pid: number; host: string; start: string | null }): string {
  return JSON.stringify({ format: "klio-lock", version: 1, nonce: Math.random().toString(16).slice(2), purpose: "test", since: new Date().toISOString(), process }) + "\n";
}

describe("lock file", () => {
  it("gives a free or stale lock to exactly one of four processes racing for it, and a live one to none", async () => {
    const dir = tempDir();
    const file = path.join(dir, "x.lock");
    const contenders = [contender(), contender(), contender(), contender()];
    // Started (tsx compiled): each answers a release.
    for (const c of contenders) expect(await c.ask("release")).toBe("released");
    const me = thisProcess();
    const setups: { name: string; live: boolean; write: () => void }[] = [
      { name: "free", live: false, write: () => {} },
      { name: "dead pid", live: false, write: () => writeFileSync(file, lockJson({ pid: deadPid(), host: hostname(), start: "12345" })) },
      { name: "live pid, other start time", live: false, write: () => writeFileSync(file, lockJson({ ...me, start: String(Number(me.start) + 1) })) },
      { name: "older klio's pid file, dead pid", live: false, write: () => writeFileSync(file, `${deadPid()}\n`) },
      {
        name: "older klio's pid file, live pid, written before the boot", live: false,
        write: () => {
          writeFileSync(file, `${process.pid}\n`);
          utimesSync(file, new Date("2001-01-01"), new Date("2001-01-01"));
        },
      },
      { name: "live holder", live: true, write: () => writeFileSync(file, lockJson(me)) },
      { name: "older klio's pid file, live pid", live: true, write: () => writeFileSync(file, `${process.pid}\n`) },
    ];
    const rounds = 140;
    for (let round = 0; round < rounds; round++) {
      const setup = setups[round % setups.length]!;
      setup.write();
      const at = Date.now() + 40;
      const answers = await Promise.all(contenders.map((c) => c.ask(`try ${file} ${at}`)));
      const winners = contenders.filter((_, i) => answers[i] === "won");
      expect(winners.length, `round ${round} (${setup.name}): ${answers.join(", ")}`).toBe(setup.live ? 0 : 1);
      if (setup.live) {
        for (const a of answers) expect(a).toBe(`lost ${process.pid}`);
        rmSync(file);
      } else {
        const w = winners[0]!;
        expect(JSON.parse(readFileSync(file, "utf8")).process.pid).toBe(w.child.pid);
        for (const a of answers) if (a !== "won") expect(a, `round ${round}`).toBe(`lost ${w.child.pid}`);
        expect(await w.ask("release")).toBe("released");
        expect(existsSync(file)).toBe(false);
      }
      // No temporary file, no takeover guard left behind.
      expect(readdirSync(dir)).toEqual([]);
    }
  }, 120_000);

  it("waits for a live holder, and names it", async () => {
    const file = path.join(tempDir(), "y.lock");
    const first = await tryLock(file, "klio backup run");
    expect(first.held).toBeDefined();
    const second = await tryLock(file, "other");
    expect(second.held).toBeUndefined();
    expect(second.holder!.purpose).toBe("klio backup run");
    expect(describeHolder(second.holder!)).toMatch(new RegExp(`^pid ${process.pid}, since \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ$`));
    const signal = new AbortController().signal;
    const timedOut = await waitForLock(file, "other", { signal, timeoutMs: 300, pollMs: 50 });
    expect(timedOut.held).toBeUndefined();
    let busySaid = 0;
    const waiting = waitForLock(file, "other", { signal, pollMs: 50, onBusy: () => busySaid++ });
    await new Promise((r) => setTimeout(r, 200));
    await first.held!.release();
    const got = await waiting;
    expect(got.held).toBeDefined();
    expect(busySaid).toBe(1);
    await got.held!.release();
    expect(existsSync(file)).toBe(false);
  });
});
