// The offsite copy on a real S3 server (s3rver on loopback): `klio offsite sync` copies the
// repository, backups and WAL, the partial segment included; a second pass copies nothing
// twice; and with the local repository deleted, a restore from the bucket alone reaches a
// target time, its restore_command reading WAL from the bucket too.
import { describe, it, expect, afterEach } from "vitest";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as Minio from "minio";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { runKlioAsync, waitFor } from "./harness/klio.ts";
import { klio, pgbench, restoreAndStart, streamingServer, streamWal, tempDir, type Cleanup } from "./harness/backup.ts";
import { currentLsn, waitForFlush } from "./harness/wal.ts";
import { startFaultProxy } from "./harness/http-fault-proxy.ts";
import { startS3 } from "./harness/s3.ts";
import { startSwift } from "./harness/swift.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

// s3rver's ETag of a multipart upload is the MD5 of the whole object; Swift's is AWS's ("…-N").
describe.each([["s3rver", startS3, false], ["OpenStack Swift (s3api)", startSwift, true]] as const)("offsite sync to S3 on %s", (_name, startServer, awsEtags) => {
  it("copies backups and WAL, and a restore from the bucket alone reaches a target time", { timeout: 300_000 }, async () => {
    const s3 = await startServer(cleanups);
    const { pg, repo, receiver } = await streamingServer(cleanups);
    const sql = pg.sql();
    await sql`create table t (id int, at timestamptz default clock_timestamp())`;
    await sql`insert into t (id) select generate_series(1, 1000)`;
    await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString()]);
    // The passes below compare what is behind: the receiver stops, so that nothing changes
    // locally between a pass and the comparison (its partial segment grows while it runs).
    await waitForFlush(repo, await currentLsn(sql));
    expect(await receiver.stop()).toBe(0);
    const to = `s3://${s3.bucket}/prod/site1`;
    const sync = (...more: string[]) => runKlioAsync(["offsite", "sync", "--repo", repo, "--to", to, ...s3.flags, "--once", "--json", ...more]);

    const first = await sync();
    expect(first.code, first.stderr).toBe(0);
    const pass1 = JSON.parse(first.stdout.trim());
    expect(pass1.uploaded).toBeGreaterThan(5);
    expect(pass1.behind).toEqual({ objects: 0, bytes: 0 });
    // Nothing changed: nothing is sent again.
    const again = JSON.parse((await sync()).stdout.trim());
    expect(again.uploaded).toBe(0);
    const streaming = streamWal(cleanups, pg, repo);
    await streaming.waitForLog(/wal.streaming/);

    // Rows before and after a target time; the last one only in the partial segment.
    await sql`insert into t (id) values (2000)`;
    await new Promise((r) => setTimeout(r, 1100));
    const [{ target }] = await sql`select now()::text as target`;
    await new Promise((r) => setTimeout(r, 1100));
    await sql`insert into t (id) values (3000)`;
    await sql`select pg_switch_wal()`;
    await sql`insert into t (id) values (4000)`;
    const [{ lsn }] = await sql`select pg_current_wal_lsn()::text as lsn`;
    await waitForFlush(repo, lsn);
    expect(await streaming.stop()).toBe(0); // nothing moves locally from here on
    const pass2 = await sync();
    expect(pass2.code, pass2.stderr).toBe(0);
    const status = JSON.parse((await runKlioAsync(["offsite", "status", "--repo", repo, "--to", to, ...s3.flags, "--json"])).stdout);
    expect(status.behind.objects).toBe(0);

    // Byte for byte: every object's size and ETag (MD5) in the bucket match the local files.
    const verified = await runKlioAsync(["offsite", "verify", "--repo", repo, "--to", to, ...s3.flags]);
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);

    // The backup VM is gone: only the bucket is left.
    rmSync(repo, { recursive: true, force: true });
    const listed = await runKlioAsync(["backup", "list", "--repo", to, ...s3.flags, "--json"]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout).backups).toHaveLength(1);

    const atTarget = await restoreAndStart(cleanups, 15, to, [...s3.flags, "--target-time", target]);
    const rows = await atTarget.sql()`select array_agg(id order by id) filter (where id >= 2000) as ids, count(*) as n from t`;
    expect(rows[0]!.ids).toEqual([2000]);
    expect(Number(rows[0]!.n)).toBe(1001);
    // With no target, the newest row, which is only in the partial segment, is there too.
    const atEnd = await restoreAndStart(cleanups, 15, to, [...s3.flags]);
    const end = await atEnd.sql()`select array_agg(id order by id) filter (where id >= 2000) as ids from t`;
    expect(end[0]!.ids).toEqual([2000, 3000, 4000]);
  });

  it("sends a large object in parts, and offsite verify checks its multipart ETag", { timeout: 120_000 }, async () => {
    const s3 = await startServer(cleanups);
    const repo = tempDir(cleanups, "klio-repo-");
    await klio(["init", "--repo", repo]);
    // Larger than the client's 64 MiB part: goes up as a multipart upload.
    mkdirSync(path.join(repo, "packs", "ab"), { recursive: true });
    const big = Buffer.alloc(70 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
    writeFileSync(path.join(repo, "packs", "ab", "ab0123456789abcdef0123456789abcd.pack"), big);
    const to = `s3://${s3.bucket}/big`;
    const synced = await runKlioAsync(["offsite", "sync", "--repo", repo, "--to", to, ...s3.flags, "--once"]);
    expect(synced.code, synced.stderr).toBe(0);
    const verified = await runKlioAsync(["offsite", "verify", "--repo", repo, "--to", to, ...s3.flags, "--json"]);
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    expect(JSON.parse(verified.stdout).bytes).toBeGreaterThan(big.length);
    const u = new URL(s3.endpoint);
    const access = readFileSync(s3.accessKeyFile, "utf8").trim();
    const client = new Minio.Client({ endPoint: u.hostname, port: Number(u.port), useSSL: false, accessKey: access, secretKey: readFileSync(s3.secretKeyFile, "utf8").trim(), pathStyle: true, region: "us-east-1" });
    const etag = (await client.statObject(s3.bucket, "big/packs/ab/ab0123456789abcdef0123456789abcd.pack")).etag;
    if (awsEtags) expect(etag).toMatch(/^[0-9a-f]{32}-2$/);
  });

  it("refuses wrong keys and a missing bucket with one clear error, and changes nothing locally", { timeout: 120_000 }, async () => {
    const s3 = await startServer(cleanups);
    const repo = tempDir(cleanups, "klio-repo-");
    await klio(["init", "--repo", repo]);
    const keys = tempDir(cleanups, "klio-keys-");
    const wrong = `${keys}/wrong`;
    writeFileSync(wrong, "WRONG\n");
    const badKey = await runKlioAsync(["offsite", "sync", "--repo", repo, "--to", `s3://${s3.bucket}/x`, ...s3.flags.slice(0, 4), "--s3-secret-key-file", wrong, "--once"]);
    expect(badKey.code).toBe(1);
    expect(badKey.stderr).toMatch(/refused \((SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied)\)/);
    const noBucket = await runKlioAsync(["offsite", "sync", "--repo", repo, "--to", "s3://no-such-bucket/x", ...s3.flags, "--once"]);
    expect(noBucket.code).toBe(1);
    expect(noBucket.stderr).toMatch(/the bucket no-such-bucket does not exist/);
    const badUrl = await runKlioAsync(["offsite", "sync", "--repo", repo, "--to", "s3://Bad_Bucket/../x", ...s3.flags, "--once"]);
    expect(badUrl.code).toBe(2);
    expect(badUrl.stderr.trim().split("\n")).toHaveLength(1);
  });
});

describe("offsite sync --bandwidth", () => {
  it("sends no faster than the limit for all uploads together, and refuses a rate it cannot read", { timeout: 120_000 }, async () => {
    const s3 = await startS3(cleanups);
    const repo = tempDir(cleanups, "klio-repo-");
    await klio(["init", "--repo", repo]);
    // Three packs of 2 MiB, sent four at a time: together they may take no less than 3 s at 2 MiB/s.
    for (const p of ["ab", "cd", "ef"]) {
      mkdirSync(path.join(repo, "packs", p), { recursive: true });
      writeFileSync(path.join(repo, "packs", p, `${p}0123456789abcdef0123456789abcd.pack`), randomBytes(2 * 1024 * 1024));
    }
    const to = `s3://${s3.bucket}/slow`;
    const bad = await runKlioAsync(["offsite", "sync", "--repo", repo, "--to", to, ...s3.flags, "--once", "--bandwidth", "fast"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/"fast" is not a bandwidth such as 20MB\/s/);
    const t0 = performance.now();
    const synced = await runKlioAsync(["offsite", "sync", "--repo", repo, "--to", to, ...s3.flags, "--once", "--bandwidth", "2MiB/s"]);
    const seconds = (performance.now() - t0) / 1000;
    expect(synced.code, synced.stderr).toBe(0);
    expect(seconds).toBeGreaterThan(2.5);
    const verified = await runKlioAsync(["offsite", "verify", "--repo", repo, "--to", to, ...s3.flags]);
    expect(verified.code, verified.stdout).toBe(0);
  });
});

describe("offsite sync to S3 on s3rver, faults", () => {
  it("survives the S3 server dying mid-sync and injected 5xx errors: the bucket stays consistent, the next pass finishes", { timeout: 300_000 }, async () => {
    const s3 = await startS3(cleanups);
    const { pg, repo, receiver } = await streamingServer(cleanups);
    await pgbench(pg, ["-i", "-q", "-s", "4"]);
    const backup = JSON.parse(await klio(["backup", "run", "--repo", repo, "--cluster", "db1", "--pg", pg.connString(), "--json"]));
    await pgbench(pg, ["-t", "300", "-c", "2"]);
    await pg.sql()`select pg_switch_wal()`;
    // The statuses below compare the bucket with the repository: the receiver stops first, so
    // that nothing moves locally from here on.
    await waitForFlush(repo, await currentLsn(pg.sql()));
    expect(await receiver.stop()).toBe(0);
    const to = `s3://${s3.bucket}/faults`;

    // 1. The S3 server is killed while the sync uploads, one object at a time.
    const objects = () => (readdirSync(s3.dir, { recursive: true }) as string[]).filter((n) => n.endsWith("._S3rver_object")).length;
    const running = runKlioAsync(["offsite", "sync", "--repo", repo, "--to", to, ...s3.flags, "--once", "--concurrency", "1"]);
    await waitFor("a few objects in the bucket", () => objects() >= 3, 60_000);
    await s3.kill9();
    const cut = await running;
    expect(cut.code).toBe(1);
    expect(cut.stderr.trim().split("\n").at(-1)).toMatch(/^klio: .*(unreachable|ECONNREFUSED|socket)/i);
    await s3.start();
    // What reached the bucket is a consistent repository already: no snapshot before its data.
    const early = await runKlioAsync(["repo", "check", "--repo", to, ...s3.flags]);
    expect(early.code, early.stdout + early.stderr).toBe(0);

    // 2. Through a proxy that fails a fifth of the requests with 503/500: retries finish the job.
    const proxy = await startFaultProxy(Number(new URL(s3.endpoint).port), 0.2);
    cleanups.push(() => proxy.close());
    const flaky = s3.flags.map((f) => (f === s3.endpoint ? proxy.endpoint : f));
    const resumed = await runKlioAsync(["offsite", "sync", "--repo", repo, "--to", to, ...flaky, "--once", "--json"]);
    expect(resumed.code, resumed.stderr).toBe(0);
    const status = JSON.parse((await runKlioAsync(["offsite", "status", "--repo", repo, "--to", to, ...s3.flags, "--json"])).stdout);
    expect(status.behind.objects).toBe(0);

    // Every chunk in the bucket reads back through the failing proxy and matches its id, and
    // the backup is listed there.
    const check = await runKlioAsync(["repo", "check", "--repo", to, ...flaky, "--read-data"]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect(JSON.parse(await klio(["backup", "list", "--repo", to, ...s3.flags, "--json"])).backups.map((b: any) => b.id)).toEqual([backup.id]);

    // offsite verify: sizes and ETags agree; an object lost in the bucket is named.
    const verified = await runKlioAsync(["offsite", "verify", "--repo", repo, "--to", to, ...s3.flags, "--json"]);
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    expect(JSON.parse(verified.stdout).checked).toBeGreaterThan(5);
    const pack = (readdirSync(s3.dir, { recursive: true }) as string[]).find((n) => n.includes("packs") && n.endsWith("._S3rver_object"))!;
    rmSync(path.join(s3.dir, pack));
    rmSync(path.join(s3.dir, pack.replace("._S3rver_object", "._S3rver_metadata.json")), { force: true });
    const lost = await runKlioAsync(["offsite", "verify", "--repo", repo, "--to", to, ...s3.flags]);
    expect(lost.code).toBe(1);
    expect(lost.stdout).toMatch(/^PROBLEM packs\/.*\.pack: missing: not in the bucket$/m);
    expect(proxy.counts.failed).toBeGreaterThan(10);
  });
});
