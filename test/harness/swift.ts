// OpenStack Swift with its s3api middleware (Debian's python3-swift) on loopback, as a second,
// stricter S3 server for tests: it checks SigV4 signatures, multipart ETags and key encoding
// the way AWS and MinIO do. One replica, one device in a temporary directory, tempauth
// (account test, user tester, key testing) with memcached beside it, as Swift's all-in-one
// development setup has it. Needs the packages python3-swift swift-proxy swift-account
// swift-container swift-object memcached (.ci/run installs them).
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import * as Minio from "minio";
import type { Cleanup } from "./backup.ts";
import { freePort } from "./postgres.ts";
import { waitFor } from "./klio.ts";
import { keyFiles, s3Flags, type TestS3 } from "./s3.ts";

const SERVERS = ["account", "container", "object"] as const;

export async function startSwift(cleanups: Cleanup[], bucket = "klio"): Promise<TestS3> {
  const dir = mkdtempSync(path.join(tmpdir(), "klio-swift-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const etc = path.join(dir, "etc");
  mkdirSync(path.join(dir, "node", "sdb1"), { recursive: true });
  mkdirSync(etc);
  const ports = { proxy: await freePort(), memcache: await freePort(), account: await freePort(), container: await freePort(), object: await freePort() };
  writeFileSync(path.join(etc, "swift.conf"), "[swift-hash]\nswift_hash_path_suffix = klio-test\nswift_hash_path_prefix = klio-test\n[storage-policy:0]\nname = gold\ndefault = yes\n");
  const common = (port: number) => `[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = ${port}\nswift_dir = ${etc}\nworkers = 0\nuser = ${process.getuid?.() === 0 ? "root" : process.env.USER}\nlog_level = WARNING\n`;
  for (const s of SERVERS) {
    const builder = path.join(etc, `${s}.builder`);
    execFileSync("swift-ring-builder", [builder, "create", "10", "1", "1"], { stdio: "ignore" });
    execFileSync("swift-ring-builder", [builder, "add", `r1z1-127.0.0.1:${ports[s]}/sdb1`, "100"], { stdio: "ignore" });
    execFileSync("swift-ring-builder", [builder, "rebalance"], { stdio: "ignore" });
    writeFileSync(path.join(etc, `${s}-server.conf`), `${common(ports[s])}devices = ${path.join(dir, "node")}\nmount_check = false\n[pipeline:main]\npipeline = ${s}-server\n[app:${s}-server]\nuse = egg:swift#${s}\n`);
  }
  // Pipeline name → Swift's entry point.
  const filters = Object.entries({ catch_errors: "catch_errors", gatekeeper: "gatekeeper", "proxy-logging": "proxy_logging", listing_formats: "listing_formats", copy: "copy", slo: "slo", dlo: "dlo" })
    .map(([name, egg]) => `[filter:${name}]\nuse = egg:swift#${egg}\n`).join("");
  writeFileSync(path.join(etc, "proxy-server.conf"), [
    common(ports.proxy),
    "[pipeline:main]\npipeline = catch_errors gatekeeper proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server\n",
    "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n",
    "[filter:tempauth]\nuse = egg:swift#tempauth\nuser_test_tester = testing .admin\n",
    "[filter:s3api]\nuse = egg:swift#s3api\n",
    `[filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:${ports.memcache}\n`,
    filters,
  ].join(""));

  let children: ChildProcess[] = [];
  let log = "";
  const start = async () => {
    const run = (cmd: string, args: string[]) => {
      const c = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
      c.stdout!.on("data", (d) => (log += d));
      c.stderr!.on("data", (d) => (log += d));
      return c;
    };
    children = [
      run("memcached", ["-l", "127.0.0.1", "-p", String(ports.memcache), "-U", "0", ...(process.getuid?.() === 0 ? ["-u", "root"] : [])]),
      ...[...SERVERS, "proxy" as const].map((s) => run("/usr/bin/python3", [`/usr/bin/swift-${s}-server`, path.join(etc, `${s}-server.conf`), "-v"])),
    ];
    await waitFor("Swift's proxy to answer", async () => {
      for (const c of children) if (c.exitCode !== null) throw new Error(`a Swift process exited (${c.exitCode}):\n${log}`);
      return await fetch(`http://127.0.0.1:${ports.proxy}/info`).then((r) => r.ok, () => false);
    }, 60_000);
  };
  const kill9 = async () => {
    await Promise.all(children.filter((c) => c.exitCode === null).map((c) => new Promise((r) => (c.on("exit", r), c.kill("SIGKILL")))));
  };
  await start();
  cleanups.push(kill9);
  const keys = keyFiles(cleanups, "test:tester", "testing");
  const client = new Minio.Client({ endPoint: "127.0.0.1", port: ports.proxy, useSSL: false, accessKey: "test:tester", secretKey: "testing", pathStyle: true, region: "us-east-1" });
  // The proxy answers /info before the account and container servers listen: until they do,
  // creating the bucket gets 503.
  let lastError: unknown = null;
  await waitFor("Swift to create the bucket", async () => {
    try {
      await client.makeBucket(bucket, "us-east-1");
      return true;
    } catch (e) {
      if (!/503/.test((e as Error).message)) throw e;
      lastError = e;
      return false;
    }
  }, 60_000).catch((e) => {
    throw new Error(`${((lastError ?? e) as Error).message}\nSwift's log:\n${log.slice(-4000)}`);
  });
  const endpoint = `http://127.0.0.1:${ports.proxy}`;
  return { endpoint, bucket, dir, ...keys, flags: s3Flags(endpoint, keys), kill9, start };
}
