// Air-gapped restore: `klio repo export` writes one chosen backup and its WAL into a new
// directory (removable media); that copy is a whole repository on its own, checks clean, and
// `klio restore` and `klio get-wal` work from it in a process with no network at all.
import { describe, it, expect, afterEach } from "vitest";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pgTempDir, startDataDir } from "./harness/postgres.ts";
import { KLIO_BIN, runKlioAsync, waitFor } from "./harness/klio.ts";
import { klio, shareRepo, streamingServer, tempDir, type Cleanup } from "./harness/backup.ts";
import { waitForFlush } from "./harness/wal.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The single executable in a new network namespace: not even loopback is up. */
function offline(args: string[]): { code: number; stdout: string; stderr: string } {
  try {
    const stdout = execFileSync("unshare", ["-n", KLIO_BIN, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    return { code: 0, stdout, stderr: "" };
  } catch (e) {
    const x = e as { status: number; stdout: string; stderr: string };
    return { code: x.status, stdout: x.stdout, stderr: x.stderr };
  }
}

describe("klio repo export", () => {
  it("writes a self-contained repository of one backup that restores with no network", { timeout: 300_000 }, async () => {
    const { pg, repo, receiver } = await streamingServer(cleanups);
    const sql = pg.sql();
    await sql`create table t (id int)`;
    await sql`create table old_only (x text)`;
    await sql`insert into old_only select repeat(md5(g::text), 20) from generate_series(1, 20000) g`;
    const first = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"]));
    await sql`drop table old_only`;
    await sql`insert into t select generate_series(1, 1000)`;
    await sql`checkpoint`;
    const second = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"]));
    await sql`insert into t values (5000)`;
    await sql`select pg_switch_wal()`;
    await sql`insert into t values (6000)`;
    const [{ lsn }] = await sql`select pg_current_wal_lsn()::text as lsn`;
    await waitForFlush(repo, lsn);

    const media = path.join(tempDir(cleanups, "klio-usb-"), "klio");
    const out = JSON.parse(await klio(["repo", "export", media, "--repo", repo, "--cluster", "db1", "--backup-id", second.id, "--json"]));
    expect(out.backups).toEqual([{ cluster: "db1", id: second.id }]);
    expect(out.walFiles).toBeGreaterThan(2);
    // Only the chosen backup: the first one, and the table only it had, stayed behind.
    expect(JSON.parse(await klio(["backup", "list", "--repo", media, "--json"])).backups.map((b: any) => b.id)).toEqual([second.id]);
    const size = (dir: string): number => readdirSync(dir, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? size(path.join(dir, e.name)) : readFileSync(path.join(dir, e.name)).length), 0);
    expect(size(path.join(media, "packs"))).toBeLessThan(size(path.join(repo, "packs")) - 500_000);
    expect(first.id).not.toBe(second.id);
    await klio(["repo", "check", "--repo", media, "--read-data"]);
    expect((await runKlioAsync(["repo", "export", media, "--repo", repo])).stderr).toMatch(/is not empty/);

    // The appliance is gone; on a machine with no network, the binary and the copy suffice.
    await receiver.kill9();
    rmSync(repo, { recursive: true, force: true });
    shareRepo(path.dirname(media)); // PostgreSQL's user runs restore_command, which reads the copy
    // The copy's files read-only, as evidence-preservation practice leaves them (get-wal must
    // still hand PostgreSQL files it can open read-write), on read-only media: a read-only bind mount.
    execFileSync("chmod", ["-R", "a-w", media]);
    execFileSync("mount", ["--bind", media, media]);
    cleanups.push(() => void execFileSync("umount", ["-l", media]));
    execFileSync("mount", ["-o", "remount,ro,bind", media]);
    expect(() => writeFileSync(path.join(media, "probe"), "x")).toThrow(/EROFS/);
    const base = pgTempDir("klio-airgap-");
    cleanups.push(() => rmSync(base, { recursive: true, force: true }));
    const dest = path.join(base, "data");
    const restored = offline(["restore", dest, "--repo", media, "--cluster", "db1"]);
    expect(restored.code, restored.stderr).toBe(0);
    const firstSegment = readdirSync(path.join(media, "wal", "db1")).filter((n) => n.endsWith(".kwal")).sort()[0]!.replace(".kwal", "");
    expect(firstSegment > "000000010000000000000001").toBe(true); // WAL from before the chosen backup stayed behind
    const seg = offline(["get-wal", firstSegment, path.join(base, "seg"), "--repo", media, "--cluster", "db1"]);
    expect(seg.code, seg.stderr).toBe(0);
    expect(readFileSync(path.join(base, "seg")).length).toBe(16 * 1024 * 1024);
    expect(statSync(path.join(base, "seg")).mode & 0o777).toBe(0o600);
    execFileSync("chown", ["-R", "postgres:postgres", base]);
    const server = await startDataDir(15, dest);
    cleanups.push(() => server.destroy());
    const ssql = server.sql();
    await waitFor("recovery to end", async () => (await ssql`select pg_is_in_recovery() as r`)[0]!.r === false, 120_000);
    const rows = await ssql`select count(*) as n, max(id) as top from t`;
    expect({ n: Number(rows[0]!.n), top: Number(rows[0]!.top) }).toEqual({ n: 1002, top: 6000 });
    expect(existsSync(path.join(dest, "recovery.signal"))).toBe(false);
  });
});
