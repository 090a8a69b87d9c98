// The control API refuses what it must: no token, a wrong token, a read token on an admin
// route, oversized, malformed and unexpected bodies, names that try to leave their directory.
// Each refusal is a 4xx JSON {error, detail} and changes nothing; a few thousand random
// requests leave the daemon up and its repository as it was.
import { describe, it, expect, afterAll, beforeAll } from "vitest";
import { startPostgres } from "./harness/postgres.ts";
import { waitFor } from "./harness/klio.ts";
import { type Cleanup } from "./harness/backup.ts";
import { ADMIN_TOKEN, READ_TOKEN, backupThroughApi, startTestDaemon, type TestDaemon } from "./harness/daemon.ts";

const cleanups: Cleanup[] = [];
let d: TestDaemon;
let backupId: string;
let seg: string;

beforeAll(async () => {
  const pg = await startPostgres({ version: 15 });
  cleanups.push(() => pg.destroy());
  d = await startTestDaemon(cleanups, [{ name: "db1", pg }]);
  await waitFor("the receiver to stream", async () => (await d.get("/v1/clusters/db1")).receiver.state === "streaming", 60_000);
  backupId = (await backupThroughApi(d, "db1")).backupId;
  const sql = pg.sql();
  [{ seg }] = await sql`select pg_walfile_name(pg_current_wal_lsn()) as seg`;
  await sql`select pg_switch_wal()`;
  await waitFor("a segment in the archive", async () => (await d.call("GET", `/v1/clusters/db1/wal/${seg}`)).status === 200, 60_000);
}, 180_000);

afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** What must not change: the backups, and no job started. */
async function snapshotOfState(): Promise<string> {
  const backups = (await d.get("/v1/clusters/db1/backups")).backups.map((b: any) => b.id);
  const jobs = (await d.get("/v1/clusters/db1/jobs")).jobs.map((j: any) => j.id);
  return JSON.stringify({ backups, jobs });
}

async function expectJsonError(r: Response, status: number): Promise<void> {
  expect(r.status).toBe(status);
  expect(r.headers.get("content-type")).toMatch(/^application\/json/);
  const body = await r.json();
  expect(Object.keys(body).sort()).toEqual(["detail", "error"]);
  expect(typeof body.detail).toBe("string");
}

describe("the control API's guard", () => {
  it("answers only /healthz without a valid token, and keeps admin routes from read tokens", { timeout: 60_000 }, async () => {
    const before = await snapshotOfState();
    expect((await d.call("GET", "/healthz", { token: null })).status).toBe(200);
    const routes: [string, string][] = [
      ["GET", "/v1/status"], ["GET", "/v1/clusters"], ["GET", "/v1/clusters/db1"], ["GET", "/v1/clusters/db1/backups"],
      ["GET", `/v1/clusters/db1/backups/${backupId}`], ["GET", "/v1/clusters/db1/wal"], ["GET", `/v1/clusters/db1/wal/${seg}`],
      ["GET", "/metrics"], ["GET", "/openapi.json"], ["GET", "/v1/jobs/20260101T000000-00000000"], ["GET", "/v1/no-such-route"],
      ["POST", "/v1/clusters/db1/backups"], ["DELETE", `/v1/clusters/db1/backups/${backupId}`],
    ];
    for (const [method, p] of routes) {
      for (const token of [null, "wrong-token-0123456789", ADMIN_TOKEN.slice(0, -1), ADMIN_TOKEN + "x", `${ADMIN_TOKEN} ${ADMIN_TOKEN}`]) {
        await expectJsonError(await d.call(method, p, { token, body: method === "POST" ? "{}" : undefined }), 401);
      }
    }
    // A read token reads, but may not start or delete anything.
    expect((await d.call("GET", "/v1/status", { token: READ_TOKEN })).status).toBe(200);
    await expectJsonError(await d.call("POST", "/v1/clusters/db1/backups", { token: READ_TOKEN, body: "{}" }), 403);
    await expectJsonError(await d.call("DELETE", `/v1/clusters/db1/backups/${backupId}`, { token: READ_TOKEN }), 403);
    // Basic auth, or the token in another header, is no token.
    await expectJsonError(await d.call("GET", "/v1/status", { token: null, headers: { authorization: `Basic ${btoa(`x:${ADMIN_TOKEN}`)}` } }), 401);
    await expectJsonError(await d.call("GET", "/v1/status", { token: null, headers: { "x-token": ADMIN_TOKEN } }), 401);
    expect(await snapshotOfState()).toBe(before);
  });

  it("refuses bad bodies and names with a 4xx JSON error and changes nothing", { timeout: 60_000 }, async () => {
    const before = await snapshotOfState();
    const post = (body: string, headers?: Record<string, string>) => d.call("POST", "/v1/clusters/db1/backups", { body, headers });
    await expectJsonError(await post("x".repeat(5000)), 413);
    await expectJsonError(await post(JSON.stringify({ name: "n".repeat(10_000) })), 413);
    await expectJsonError(await post("{not json"), 400);
    await expectJsonError(await post("[]"), 400);
    await expectJsonError(await post('"a string"'), 400);
    await expectJsonError(await post(JSON.stringify({ name: "ok", extra: 1 })), 400);
    await expectJsonError(await post(JSON.stringify({ name: 42 })), 400);
    await expectJsonError(await post(JSON.stringify({ name: "line\nbreak" })), 400);
    await expectJsonError(await post("{}", { "content-type": "text/plain" }), 415);
    for (const p of [
      "/v1/clusters/..%2F..%2Fetc/backups", "/v1/clusters/db1%00/backups", "/v1/clusters/.hidden", "/v1/clusters/db1/backups/..%2F..%2Fklio-repository.json",
      "/v1/clusters/db1/wal/..%2F..%2Fklio-repository.json", "/v1/clusters/db1/wal/000000010000000000000001%2F..", "/v1/clusters/db1/wal/00000001000000000000000G",
      `/v1/clusters/${"a".repeat(300)}`, "/v1/jobs/..%2F..", "/v1/clusters/db1/backups/20260101T000000Z%2F..",
    ]) {
      const r = await d.call("GET", p);
      expect([400, 404], `${p} answered ${r.status}`).toContain(r.status);
      await expectJsonError(r, r.status);
    }
    // HEAD (get-wal asks whether a whole segment is there) answers like GET, without the bytes.
    const head = await d.call("HEAD", `/v1/clusters/db1/wal/${seg}`);
    expect([head.status, (await head.arrayBuffer()).byteLength]).toEqual([200, 0]);
    expect((await d.call("HEAD", "/v1/clusters/db1/wal/0000000100000000000000FF")).status).toBe(404);
    await expectJsonError(await d.call("GET", "/v1/clusters/nosuch"), 404);
    await expectJsonError(await d.call("DELETE", "/v1/clusters/db1/backups/20200101T000000Z"), 404);
    await expectJsonError(await d.call("GET", "/v1/clusters/db1/wal/0000000100000000000000FF"), 404);
    expect(await snapshotOfState()).toBe(before);
  });

  it("stays up and consistent through a few thousand random requests", { timeout: 180_000 }, async () => {
    const before = await snapshotOfState();
    let seed = 20261201; // mulberry32: the same requests every run
    const rnd = (n: number) => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return (((t ^ (t >>> 14)) >>> 0) % n);
    };
    const pick = <T>(xs: T[]): T => xs[rnd(xs.length)]!;
    const junk = () => {
      const alphabet = ["a", "0", "..", "%2F", "/", "%00", "%", "é", "\u202e", "db1", backupId, seg, "%2e%2e", "~", " ", "?", "#", "*", "{}", "'", '"'];
      let s = "";
      for (let i = rnd(8); i >= 0; i--) s += pick(alphabet);
      return s;
    };
    const templates = ["/v1/status", "/v1/clusters", "/v1/clusters/{x}", "/v1/clusters/{x}/backups", "/v1/clusters/{x}/backups/{x}", "/v1/clusters/{x}/jobs",
      "/v1/jobs/{x}", "/v1/clusters/{x}/wal", "/v1/clusters/{x}/wal/{x}", "/metrics", "/openapi.json", "/{x}", "/v1/{x}/{x}/{x}", "/healthz"];
    const bodies = [undefined, "", "{}", "{", "null", "[1,2]", JSON.stringify({ name: junk() }), JSON.stringify({ x: 1 }), "\u0000\u0001", "x".repeat(rnd(6000))];
    const statuses = new Map<number, number>();
    for (let i = 0; i < 3000; i++) {
      const method = pick(["GET", "GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]);
      const p = pick(templates).replace(/\{x\}/g, () => encodeURI(junk()).replace(/#/g, "%23").replace(/\?/g, "%3F"));
      // Admin requests never carry a body that could start a real backup: the state must not change.
      const token = pick([null, "bogus", READ_TOKEN, READ_TOKEN, ADMIN_TOKEN]);
      let body = method === "GET" || method === "HEAD" ? undefined : pick(bodies);
      if (token === ADMIN_TOKEN && method === "POST" && (body === undefined || body === "" || body === "{}" || body?.startsWith('{"name"'))) body = "{";
      let r: Response;
      try {
        r = await d.call(method, p, { token, body, headers: rnd(4) === 0 ? { "content-type": pick(["text/plain", "application/json", "application/x-www-form-urlencoded"]) } : undefined });
      } catch (e) {
        // fetch itself may refuse a URL it cannot send; the daemon never saw it.
        if (e instanceof TypeError) continue;
        throw e;
      }
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      expect(r.status, `${method} ${p}`).toBeLessThan(500);
      await r.arrayBuffer();
    }
    expect((await d.call("GET", "/healthz", { token: null })).status).toBe(200);
    expect(await snapshotOfState()).toBe(before);
    expect((await d.get("/v1/clusters/db1")).receiver.state).toBe("streaming");
    // The requests reached the daemon's checks, not only its front door.
    expect([...statuses.keys()].sort()).toEqual(expect.arrayContaining([200, 400, 401, 403, 404]));
  });
});
