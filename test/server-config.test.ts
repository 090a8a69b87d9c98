// The daemon's config file: a good one becomes what the daemon runs (secrets read from files
// and the environment, paths anchored on the config's directory); a bad one is one error that
// names the place in the file, what was expected and what was found.
import { describe, it, expect, afterEach } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseConfig } from "../src/server/config.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function setup() {
  const dir = mkdtempSync(path.join(tmpdir(), "klio-config-"));
  dirs.push(dir);
  writeFileSync(path.join(dir, "admin.token"), "admin-token-0123456789abcdef\n");
  writeFileSync(path.join(dir, "db1.password"), "s3cret\n");
  const file = path.join(dir, "klio.json");
  const good = {
    repository: { path: "repo" },
    api: { port: 8432, tokens: [{ name: "ops", scope: "admin", token_file: "admin.token" }, { name: "ro", scope: "read", token_env: "KLIO_TEST_READ_TOKEN" }] },
    clusters: [
      { name: "db1", connection: "host=10.0.0.5 user=klio", password_file: "db1.password", backup: { schedule: "0 3 * * *" } },
      { name: "db2", connection: "postgresql://klio@10.0.0.6:5433/postgres", synchronous: true, slot: "backup_slot" },
    ],
  };
  return { dir, file, good };
}

const env = { KLIO_TEST_READ_TOKEN: "read-token-0123456789abcdef", KLIO_TEST_S3_ACCESS: "minio-access", KLIO_TEST_S3_SECRET: "minio-secret" };
const OFFSITE = { url: "s3://klio-backups/site1", endpoint: "https://minio.example.net:9000", access_key_env: "KLIO_TEST_S3_ACCESS", secret_key_env: "KLIO_TEST_S3_SECRET" };
const parse = (file: string, value: unknown, e: Record<string, string> = env) => parseConfig(typeof value === "string" ? value : JSON.stringify(value), file, e);

describe("the daemon's config", () => {
  it("reads a good config: secrets, defaults, paths beside the config file", async () => {
    const { dir, file, good } = setup();
    const c = await parse(file, good);
    expect(c.repository.path).toBe(path.join(dir, "repo"));
    expect(c.stateDir).toBe(path.join(dir, "state"));
    expect(c.api).toMatchObject({ host: "127.0.0.1", port: 8432, tls: null, maxBodyBytes: 65536 });
    expect(c.api.tokens).toEqual([{ name: "ops", scope: "admin", token: "admin-token-0123456789abcdef" }, { name: "ro", scope: "read", token: "read-token-0123456789abcdef" }]);
    expect(c.clusters[0]).toMatchObject({ name: "db1", slot: "klio_db1", createSlot: true, synchronous: false, walTimeoutMs: 300_000, fullEveryMs: 7 * 86_400_000 });
    const every = (full_every: string) => parse(file, { ...good, clusters: [{ ...good.clusters[0], backup: { full_every } }] }).then((x) => x.clusters[0]!.fullEveryMs);
    expect(await every("36h")).toBe(36 * 3_600_000);
    expect(await every("off")).toBeNull();
    expect(c.clusters[0]!.conninfo).toMatchObject({ servers: [{ host: "10.0.0.5", port: 5432, password: "s3cret" }], user: "klio" });
    expect(c.clusters[0]!.schedule).toMatchObject({ kind: "cron", text: "0 3 * * *" });
    expect(c.clusters[1]).toMatchObject({ name: "db2", slot: "backup_slot", synchronous: true, schedule: null });
    expect(c.clusters[1]!.conninfo).toMatchObject({ servers: [{ host: "10.0.0.6", port: 5433 }] });
    expect(c.offsite).toBeNull();
    const withOffsite = await parse(file, { ...good, offsite: { ...OFFSITE, interval_seconds: 5 } });
    expect(withOffsite.offsite).toMatchObject({
      url: "s3://klio-backups/site1", location: { bucket: "klio-backups", prefix: "site1/" }, concurrency: 4, intervalMs: 5000,
      s3: { endpoint: "https://minio.example.net:9000", region: "us-east-1", accessKey: "minio-access", secretKey: "minio-secret", pathStyle: true },
    });
  });

  it.each<[string, (g: any) => unknown, RegExp]>([
    ["not JSON", () => "{ repository: ", /is not valid JSON/],
    ["an unknown setting", (g) => ({ ...g, backups: {} }), /at \/backups: no such setting, found \{\}/],
    ["a missing setting", (g) => ({ ...g, api: { tokens: g.api.tokens } }), /at \/api\/port: a required setting, found nothing/],
    ["a port of the wrong type", (g) => ({ ...g, api: { ...g.api, port: "8432" } }), /at \/api\/port: expected integer, found "8432"/],
    ["a port out of range", (g) => ({ ...g, api: { ...g.api, port: 70000 } }), /at \/api\/port: .*65535.*found 70000/],
    ["a bad scope", (g) => ({ ...g, api: { ...g.api, tokens: [{ name: "x", scope: "root", token_file: "admin.token" }] } }), /at \/api\/tokens\/0\/scope: one of "admin", "read", found "root"/],
    ["a token written inline", (g) => ({ ...g, api: { ...g.api, tokens: [{ name: "x", scope: "admin", token: "abc" }] } }), /at \/api\/tokens\/0\/token: no such setting/],
    ["a token without a source", (g) => ({ ...g, api: { ...g.api, tokens: [{ name: "x", scope: "admin" }] } }), /at \/api\/tokens\/0: expected token_file or token_env/],
    ["a short token", (g) => ({ ...g, api: { ...g.api, tokens: [{ name: "x", scope: "admin", token_env: "SHORT" }] } }), /at \/api\/tokens\/0: the token must be at least 16 characters/],
    ["an unset environment variable", (g) => ({ ...g, api: { ...g.api, tokens: [{ name: "x", scope: "read", token_env: "KLIO_NOT_SET" }] } }), /the environment variable KLIO_NOT_SET \(the token\) is not set/],
    ["a missing password file", (g) => ({ ...g, clusters: [{ ...g.clusters[0], password_file: "nope" }] }), /at \/clusters\/0: cannot read the password file nope/],
    ["a password inline", (g) => ({ ...g, clusters: [{ ...g.clusters[0], connection: "host=x password=p" }] }), /at \/clusters\/0\/connection: the connection string holds a password/],
    ["a bad connection string", (g) => ({ ...g, clusters: [{ ...g.clusters[0], connection: "host=x sslmode=sometimes" }] }), /at \/clusters\/0\/connection: /],
    ["a bad host list", (g) => ({ ...g, clusters: [{ ...g.clusters[0], connection: "host=a,b port=1,2,3 target_session_attrs=primary" }] }), /at \/clusters\/0\/connection: .*could not match 3 port numbers to 2 hosts/],
    ["bad session attrs", (g) => ({ ...g, clusters: [{ ...g.clusters[0], connection: "postgresql://a,b/db?target_session_attrs=master" }] }), /at \/clusters\/0\/connection: .*invalid target_session_attrs "master"/],
    ["a bad schedule", (g) => ({ ...g, clusters: [{ ...g.clusters[0], backup: { schedule: "0 25 * * *" } }] }), /at \/clusters\/0\/backup\/schedule: .*hour field must be within 0-23, found 25/],
    ["a bad full_every", (g) => ({ ...g, clusters: [{ ...g.clusters[0], backup: { full_every: "weekly" } }] }), /at \/clusters\/0\/backup\/full_every: full_every must be a duration such as 7d, 36h or 2w, or off; got "weekly"/],
    ["two clusters of one name", (g) => ({ ...g, clusters: [g.clusters[0], g.clusters[0]] }), /at \/clusters\/1\/name: expected a name no other cluster has, found "db1" again/],
    ["a cluster name that leaves its directory", (g) => ({ ...g, clusters: [{ ...g.clusters[0], name: "../etc" }] }), /at \/clusters\/0\/name: /],
    ["a bad slot name", (g) => ({ ...g, clusters: [{ ...g.clusters[0], slot: "Bad-Slot" }] }), /at \/clusters\/0\/slot: /],
    ["an offsite URL that is not s3://", (g) => ({ ...g, offsite: { ...OFFSITE, url: "https://bucket/x" } }), /at \/offsite\/url: https:\/\/bucket\/x is not an s3:\/\/bucket\/prefix location/],
    ["offsite without keys", (g) => ({ ...g, offsite: { url: OFFSITE.url, endpoint: OFFSITE.endpoint } }), /at \/offsite: expected access_key_file or access_key_env/],
    ["an offsite endpoint with a path", (g) => ({ ...g, offsite: { ...OFFSITE, endpoint: "https://minio:9000/bucket" } }), /at \/offsite\/endpoint: expected http\(s\):\/\/host\[:port\]/],
  ])("refuses %s with one error that says where", async (_what, edit, message) => {
    const { file, good } = setup();
    const e = { ...env, SHORT: "short" };
    const err = await parse(file, edit(good), e).then(() => null, (x: Error) => x);
    expect(err).not.toBeNull();
    expect(err!.message).toMatch(message);
    expect(err!.message.startsWith(file)).toBe(true);
  });
});
