// The receiver lock on real PostgreSQL 15 and 18: two `klio wal stream`s of one cluster
// started together against a stale lock (a receiver killed -9, or a lock file naming a dead
// pid) never both stream — one streams, the other exits 4 naming it — and a lock naming a
// live process that is not its writer (the postmaster's pid, after a reboot or with another
// start time) blocks nothing. Runs the single executable (node scripts/build.mjs --if-stale):
// it starts in a tenth of the time of the sources, so the two really start together.
import { describe, it, expect, afterEach } from "vitest";
import { readFileSync, utimesSync, writeFileSync, mkdirSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { hostname } from "node:os";
import path from "node:path";
import { PG_VERSIONS, startPostgres, type PgServer, type PgVersion } from "./harness/postgres.ts";
import { startKlio, waitFor, type KlioProcess } from "./harness/klio.ts";
import { klio, tempDir, type Cleanup } from "./harness/backup.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const ROUNDS: Record<PgVersion, number> = { 15: 20, 18: 20 };

async function server(version: PgVersion): Promise<PgServer> {
  // Every receiver of every round has a slot of its own, so that two receivers past the lock
  // would both stream (and be seen doing it); killed ones' senders go after 5 s.
  const pg = await startPostgres({ version, walSegmentMb: 1, conf: { max_wal_senders: 60, max_replication_slots: 60, wal_sender_timeout: "'5s'" } });
  cleanups.push(() => pg.destroy());
  return pg;
}

function receiver(pg: PgServer, repo: string, slot: string): KlioProcess {
  const k = startKlio(["wal", "stream", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--slot", slot, "--create-slot", "--log-format", "text"], {}, { bin: true });
  cleanups.push(async () => void (await k.kill9()));
  return k;
}

/** Streaming, or exited (with its code). */
async function settled(k: KlioProcess): Promise<"streaming" | number> {
  return await waitFor("the receiver to stream or exit", () => (k.child.exitCode !== null ? k.child.exitCode : /wal\.streaming/.test(k.log()) ? "streaming" : undefined), 60_000);
}

function deadPid(): number {
  return spawnSync("true").pid!;
}

function postmasterPid(pg: PgServer): number {
  return Number(readFileSync(path.join(pg.dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
}

/** The pid the lock file names (this klio's format, or the pid-only one of older klio). */
function holderPid(file: string): number {
  const text = readFileSync(file, "utf8");
  return /^\d+\n?$/.test(text) ? Number(text) : JSON.parse(text).process.pid;
}

function lockJson(p: { pid: number; host: string; start: string | null }): string {
  return JSON.stringify({ format: "klio-lock", version: 1, nonce: Math.random().toString(16).slice(2), purpose: "test", since: new Date().toISOString(), process: p }) + "\n";
}

describe.each(PG_VERSIONS)("receiver lock on PostgreSQL %i", (version) => {
  it("two receivers started together against a stale lock: one streams, the other exits 4 naming it", async () => {
    const pg = await server(version);
    const repo = tempDir(cleanups, "klio-repo-");
    await klio(["init", "--repo", repo]);
    const lockFile = path.join(repo, "wal", "db1", "receiver.lock");
    mkdirSync(path.dirname(lockFile), { recursive: true });
    let survivor: KlioProcess | null = null;
    const outcomes: string[] = [];
    for (let round = 0; round < ROUNDS[version]; round++) {
      // The stale lock: the last round's streaming receiver killed -9 (its lock stays), or a
      // file naming a dead pid, in this klio's format or in the pid-only one of older klio.
      if (survivor) await survivor.kill9();
      if (round % 3 === 1 || !survivor) writeFileSync(lockFile, lockJson({ pid: deadPid(), host: hostname(), start: "4242" }));
      else if (round % 3 === 2) writeFileSync(lockFile, `${deadPid()}\n`);
      const pair = [receiver(pg, repo, `r${round}a`), receiver(pg, repo, `r${round}b`)];
      const states = await Promise.all(pair.map(settled));
      outcomes.push(states.join("/"));
      const streaming = pair.filter((_, i) => states[i] === "streaming");
      expect(streaming, `round ${round}: ${states.join(", ")}\n${pair.map((k) => k.log()).join("\n---\n")}`).toHaveLength(1);
      const loser = pair.find((_, i) => states[i] !== "streaming")!;
      expect(loser.child.exitCode).toBe(4);
      const lines = loser.log().trim().split("\n");
      expect(lines).toHaveLength(1);
      survivor = streaming[0]!;
      expect(lines[0]).toMatch(new RegExp(`^klio: another klio receiver \\(pid ${survivor.child.pid}, since [0-9TZ:-]+\\) is already streaming cluster db1 into this repository$`));
      expect(holderPid(lockFile)).toBe(survivor.child.pid);
    }
    // The last one stops cleanly and takes its lock with it.
    expect(await survivor!.stop()).toBe(0);
    expect(() => readFileSync(lockFile)).toThrow();
  }, 240_000);

  it("a lock naming a live process that did not write it (the postmaster's pid) blocks nothing", async () => {
    const pg = await server(version);
    const repo = tempDir(cleanups, "klio-repo-");
    await klio(["init", "--repo", repo]);
    const lockFile = path.join(repo, "wal", "db1", "receiver.lock");
    mkdirSync(path.dirname(lockFile), { recursive: true });
    const pid = postmasterPid(pg);
    const cases: [string, () => void][] = [
      // A lock written by a process with that pid but another start time.
      ["another start time", () => writeFileSync(lockFile, lockJson({ pid, host: hostname(), start: "1" }))],
      // Older klio's pid-only file, written before the machine last booted: the pid was reused since.
      ["pid file from before the boot", () => {
        writeFileSync(lockFile, `${pid}\n`);
        utimesSync(lockFile, new Date("2001-01-01"), new Date("2001-01-01"));
      }],
      // The test's own pid, in a lock this process never wrote.
      ["the test's pid, another start time", () => writeFileSync(lockFile, lockJson({ pid: process.pid, host: hostname(), start: "1" }))],
    ];
    for (const [i, [name, write]] of cases.entries()) {
      write();
      const k = receiver(pg, repo, `live${i}`);
      expect(await settled(k), `${name}:\n${k.log()}`).toBe("streaming");
      expect(holderPid(lockFile)).toBe(k.child.pid);
      expect(await k.stop()).toBe(0);
    }
  }, 120_000);
});
