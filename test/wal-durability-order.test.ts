// The receiver's central promise, checked where it is kept: in the system calls. klio runs
// under strace while a load writes WAL; every flush position it sends the server must cover
// only WAL that was written and fdatasync'd before the status update left the process.
import { describe, it, expect, afterEach } from "vitest";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { PG_VERSIONS, startPostgres, type PgServer } from "./harness/postgres.ts";
import { klioArgv, ROOT, waitFor } from "./harness/klio.ts";
import { generateWal, currentLsn } from "./harness/wal.ts";
import { checkDurabilityOrder } from "./harness/syscall-trace.ts";
import { parseLsn } from "../src/pg/lsn.ts";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe.each(PG_VERSIONS)("WAL durability order on PostgreSQL %i", (version) => {
  it.each([["asynchronous", []], ["synchronous", ["--synchronous"]]] as const)("%s mode reports only fdatasync'd WAL as flushed", async (_mode, flags) => {
    const pg: PgServer = await startPostgres({ version, walSegmentMb: 1, conf: { synchronous_standby_names: flags.length ? "'klio'" : "''" } });
    cleanups.push(() => pg.destroy());
    const work = mkdtempSync(path.join(tmpdir(), "klio-strace-"));
    cleanups.push(() => rmSync(work, { recursive: true, force: true }));
    const repo = path.join(work, "repo");
    const trace = path.join(work, "trace.txt");
    const strace = spawn("strace", [
      "-f", "-y", "-xx", "-s", "32", "-o", trace,
      "-e", "trace=pwrite64,pwritev,fdatasync,fsync,write,writev,sendto,rename,renameat,renameat2",
      process.execPath, ...klioArgv(["wal", "stream", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--create-slot", "--log-format", "json", ...flags]),
    ], { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    strace.stderr!.on("data", (d) => (log += d));
    const exited = new Promise((r) => strace.on("exit", r));
    cleanups.push(() => void strace.kill("SIGKILL"));

    const started = await waitFor("streaming", () => log.split("\n").map((l) => (l.startsWith("{") ? JSON.parse(l) : {})).find((e) => e.event === "wal.streaming"), 60_000);
    const sql = pg.sql();
    for (let i = 0; i < 12; i++) await generateWal(sql, 0.25); // 12 transactions, ~3 segments
    const end = await currentLsn(sql);
    await waitFor("klio to report the end as flushed", async () => {
      const [row] = await sql`select flush_lsn::text as f from pg_stat_replication where application_name = 'klio'`;
      return row && parseLsn(row.f) >= end;
    }, 60_000);
    const klioPid = execFileSync("pgrep", ["-P", String(strace.pid)]).toString().trim().split("\n")[0]!;
    process.kill(Number(klioPid), "SIGTERM");
    await exited;

    const report = checkDurabilityOrder(readFileSync(trace, "utf8"), path.join(repo, "wal", "db1"), parseLsn(started.from), 1024 * 1024);
    expect(report.violations).toEqual([]);
    expect(report.highestFlush).toBeGreaterThanOrEqual(end);
    expect(report.completedSegments).toBeGreaterThanOrEqual(2);
    expect(report.checksumFiles).toBe(report.completedSegments);
    expect(report.statusUpdates).toBeGreaterThanOrEqual(flags.length ? 12 : 2);
    expect(report.fdatasyncs).toBeGreaterThan(2);
  });
});
