// The appliance's repository objects over HTTP: nothing of a cluster the daemon is not
// configured for (its snapshots are 404, as /v1/clusters/{name} is), byte ranges as RFC 9110
// has them (open-ended and suffix ranges, 416 with the size for one that starts past the
// end); and where the WAL archive ends, which a restore reads over the API and from an S3
// copy to refuse a target time past it.
import { describe, it, expect, afterEach } from "vitest";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { startPostgres } from "./harness/postgres.ts";
import { runKlioAsync, waitFor } from "./harness/klio.ts";
import { tempDir, type Cleanup } from "./harness/backup.ts";
import { backupThroughApi, READ_TOKEN, startTestDaemon } from "./harness/daemon.ts";
import { startS3 } from "./harness/s3.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("repository objects over the API", () => {
  it("refuses other clusters' objects, serves open-ended ranges, and says where the archive ends", { timeout: 300_000 }, async () => {
    const pg = await startPostgres({ version: 15 });
    cleanups.push(() => pg.destroy());
    const d = await startTestDaemon(cleanups, [{ name: "db1", pg }]);
    await waitFor("the receiver to stream", async () => (await d.get("/v1/clusters/db1")).receiver.state === "streaming", 60_000);
    const job = await backupThroughApi(d, "db1");
    expect(job.state).toBe("succeeded");
    const id = (await d.get("/v1/clusters/db1/backups")).backups[0].id as string;

    // A cluster that is not in the config: its snapshot is in the repository, but not served.
    mkdirSync(path.join(d.repo, "snapshots", "other"));
    copyFileSync(path.join(d.repo, "snapshots", "db1", id), path.join(d.repo, "snapshots", "other", id));
    expect((await d.call("GET", "/v1/clusters/other")).status).toBe(404);
    const other = await d.call("GET", `/v1/repository/objects/snapshots/other/${id}`);
    expect(other.status).toBe(404);
    expect(await other.json()).toMatchObject({ error: "not-found", detail: "no cluster named other in the configuration" });
    expect((await d.call("HEAD", `/v1/repository/objects/snapshots/other/${id}`)).status).toBe(404);
    expect((await d.call("GET", "/v1/repository/objects?prefix=snapshots/other/")).status).toBe(404);
    const listed = (await d.get("/v1/repository/objects?prefix=snapshots/")).objects.map((o: { key: string }) => o.key);
    expect(listed).toEqual([`snapshots/db1/${id}`]);
    expect((await d.get("/v1/repository/objects")).objects.some((o: { key: string }) => o.key.startsWith("snapshots/other/"))).toBe(false);
    expect((await d.call("GET", `/v1/repository/objects/snapshots/db1/${id}`)).status).toBe(200);

    // Ranges of a pack, checked against the file.
    const packs = readdirSync(path.join(d.repo, "packs"), { recursive: true }).map(String).filter((p) => p.endsWith(".pack"));
    const key = `packs/${packs[0]}`;
    const bytes = readFileSync(path.join(d.repo, key));
    const size = statSync(path.join(d.repo, key)).size;
    const ranged = async (range: string) => d.call("GET", `/v1/repository/objects/${key}`, { headers: { range } });
    const open = await ranged("bytes=10-");
    expect(open.status).toBe(206);
    expect(open.headers.get("content-range")).toBe(`bytes 10-${size - 1}/${size}`);
    expect(Buffer.from(await open.arrayBuffer()).equals(bytes.subarray(10))).toBe(true);
    const suffix = await ranged("bytes=-100");
    expect(suffix.status).toBe(206);
    expect(suffix.headers.get("content-range")).toBe(`bytes ${size - 100}-${size - 1}/${size}`);
    expect(Buffer.from(await suffix.arrayBuffer()).equals(bytes.subarray(size - 100))).toBe(true);
    const past = await ranged(`bytes=0-${size + 1000}`);
    expect(past.status).toBe(206);
    expect(past.headers.get("content-range")).toBe(`bytes 0-${size - 1}/${size}`);
    expect((await past.arrayBuffer()).byteLength).toBe(size);
    const beyond = await ranged(`bytes=${size}-`);
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get("content-range")).toBe(`bytes */${size}`);
    expect((await ranged("bytes=-0")).status).toBe(416);
    expect((await ranged("bytes=5-2")).status).toBe(400);
    expect((await ranged("bytes=0-1,5-6")).status).toBe(400);

    // Where the archive ends, over the API, and a restore from another host that refuses a target past it.
    // (Its basis is the receiver's report, or the newest segment file when one completed after that report.)
    const end = (await d.get("/v1/clusters/db1/wal")).archive.end;
    expect(end).toMatchObject({ lsn: expect.stringMatching(/^[0-9A-F]+\/[0-9A-F]+$/), time: expect.any(String) });
    const host = tempDir(cleanups, "klio-other-host-");
    const tokenFile = path.join(host, "read.token");
    writeFileSync(tokenFile, READ_TOKEN + "\n");
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString();
    const overHttp = await runKlioAsync(["restore", path.join(host, "data"), "--repo", d.url, "--token-file", tokenFile, "--cluster", "db1", "--target-time", tomorrow]);
    expect(overHttp.code, overHttp.stderr).toBe(2);
    expect(overHttp.stderr.trim()).toMatch(new RegExp(`^klio: restore: --target-time .* is after the end of the WAL archive of db1 \\(last written at .*, per (the receiver's flushed position|the newest WAL file \\S+) in .* \\(at ${d.url}\\)\\): recovery could not reach it; give an earlier target, or --allow-future-target if the WAL up to it is still to come$`));
    expect(existsSync(path.join(host, "data"))).toBe(false);

    // The same from an S3 copy: its newest WAL object's upload time is where it ends.
    const s3 = await startS3(cleanups);
    const to = `s3://${s3.bucket}/site1`;
    const sync = await runKlioAsync(["offsite", "sync", "--repo", d.repo, "--to", to, ...s3.flags, "--once"]);
    expect(sync.code, sync.stderr).toBe(0);
    const fromS3 = await runKlioAsync(["restore", path.join(host, "data"), "--repo", to, ...s3.flags, "--cluster", "db1", "--target-time", tomorrow]);
    expect(fromS3.code, fromS3.stderr).toBe(2);
    expect(fromS3.stderr.trim()).toMatch(/^klio: restore: --target-time .* is after the end of the WAL archive of db1 \(last written at .*, per the newest WAL file 0000000100000000000000\w\w(\.partial|\.kwal)? in .*wal\/db1\/\): recovery could not reach it/);
    expect(existsSync(path.join(host, "data"))).toBe(false);
    expect(await d.process.stop()).toBe(0);
  });
});
