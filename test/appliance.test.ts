// What an operator installs: appliance/install.sh lays out the binary, directories with tight
// permissions, the unit, the example config and random tokens; and the single executable runs
// the daemon from an empty directory with that example config (paths moved into a staging
// root, the cluster pointed at a real PostgreSQL), here with TLS on.
import { describe, it, expect, afterEach } from "vitest";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import path from "node:path";
import { freePort, startPostgres } from "./harness/postgres.ts";
import { KLIO_BIN, ROOT, waitFor } from "./harness/klio.ts";
import { tempDir, type Cleanup } from "./harness/backup.ts";

const cleanups: Cleanup[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function httpsGet(url: string, ca: string, token: string | null): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode!, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("the appliance", () => {
  it("installs into a root and runs the daemon from the example config, over TLS", { timeout: 180_000 }, async () => {
    const stage = tempDir(cleanups, "klio-stage-");
    const script = path.join(ROOT, "appliance", "install.sh");
    const env: NodeJS.ProcessEnv = { ...process.env, KLIO_ROOT: stage };
    delete env.KLIO_BIN;
    expect(execFileSync("sh", [script, "--help"], { env, encoding: "utf8" })).toMatch(/usage: sudo sh install\.sh PATH\/TO\/klio/);
    // A binary that does not run here stops the install before anything is written.
    const wrong = path.join(tempDir(cleanups, "klio-wrong-"), "klio");
    writeFileSync(wrong, "#!/bin/sh\necho 'cannot execute binary file: Exec format error' >&2\nexit 126\n", { mode: 0o755 });
    expect(() => execFileSync("sh", [script, wrong], { env, encoding: "utf8", stdio: "pipe" })).toThrow(/does not run on this machine/);
    expect(readdirSync(stage)).toEqual([]);
    const install = () => execFileSync("sh", [script, KLIO_BIN], { env, encoding: "utf8" });
    expect(install()).toMatch(/made the admin token/);
    const mode = (p: string) => (statSync(path.join(stage, p)).mode & 0o777).toString(8);
    expect(mode("usr/local/bin/klio")).toBe("755");
    expect(mode("var/lib/klio")).toBe("750");
    expect(mode("etc/klio")).toBe("750");
    expect(mode("etc/klio/tokens/admin.token")).toBe("600");
    expect(mode("etc/klio/klio.json")).toBe("640");
    expect(readFileSync(path.join(stage, "etc/systemd/system/klio.service"), "utf8")).toMatch(/^User=klio$/m);
    const admin = readFileSync(path.join(stage, "etc/klio/tokens/admin.token"), "utf8").trim();
    expect(admin).toMatch(/^[0-9a-f]{64}$/);
    // The guide and every file its relative links name are installed (and tracked by git).
    const doc = path.join(stage, "usr/local/share/doc/klio");
    const installed = readdirSync(doc);
    expect(installed).toEqual(expect.arrayContaining(["README.md", "AIRGAP.md"]));
    for (const md of installed.filter((f) => f.endsWith(".md"))) {
      const text = readFileSync(path.join(doc, md), "utf8");
      for (const m of text.matchAll(/\]\(([^)\s]+)[^)]*\)|^\s*\[[^\]]+\]:\s*(\S+)/gm)) {
        const target = (m[1] ?? m[2]!).split("#")[0]!;
        if (target === "" || /^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
        expect(existsSync(path.join(doc, target)), `${md} links to ${target}`).toBe(true);
      }
    }
    const tracked = execFileSync("git", ["-C", ROOT, "ls-files", "appliance"], { encoding: "utf8" }).split("\n");
    for (const f of installed) expect(tracked, `appliance/${f} is not in git`).toContain(`appliance/${f}`);
    install(); // again: an upgrade keeps the tokens and the config
    expect(readFileSync(path.join(stage, "etc/klio/tokens/admin.token"), "utf8").trim()).toBe(admin);

    // The example config, with its paths moved into the staging root and a real cluster.
    const pg = await startPostgres({ version: 15 });
    cleanups.push(() => pg.destroy());
    const port = await freePort();
    const file = path.join(stage, "etc/klio/klio.json");
    const text = readFileSync(file, "utf8").replaceAll("/var/lib/klio", path.join(stage, "var/lib/klio")).replaceAll("/etc/klio", path.join(stage, "etc/klio"));
    const config = JSON.parse(text);
    config.api.port = port;
    config.clusters[0].connection = `host=${pg.host} port=${pg.port} user=postgres dbname=postgres`;
    writeFileSync(path.join(stage, "etc/klio/db1.password"), "unused-with-trust\n");
    const cert = path.join(stage, "etc/klio/tls/cert.pem");
    const key = path.join(stage, "etc/klio/tls/key.pem");
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
    config.api.tls = { cert_file: cert, key_file: key };
    writeFileSync(file, JSON.stringify(config, null, 2));

    const empty = tempDir(cleanups, "klio-empty-");
    const child = spawn(path.join(stage, "usr/local/bin/klio"), ["server", "start", "--config", file], { cwd: empty, stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    child.stderr!.on("data", (d) => (log += d));
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    cleanups.push(() => void (child.exitCode === null && child.kill("SIGKILL")));
    await waitFor("the API over TLS", () => (/"api.listening"/.test(log) ? true : child.exitCode !== null ? Promise.reject(new Error(log)) : undefined), 60_000);
    const ca = readFileSync(cert, "utf8");
    const url = `https://127.0.0.1:${port}`;
    expect((await httpsGet(`${url}/healthz`, ca, null)).status).toBe(200);
    expect((await httpsGet(`${url}/v1/status`, ca, null)).status).toBe(401);
    await waitFor("the receiver to stream", async () => JSON.parse((await httpsGet(`${url}/v1/clusters/db1`, ca, admin)).body).receiver.state === "streaming", 60_000);
    const status = JSON.parse((await httpsGet(`${url}/v1/status`, ca, admin)).body);
    expect(status.repository).toBe(path.join(stage, "var/lib/klio/repo"));
    expect(status.clusters[0].schedule).toBe("0 3 * * *");
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(log).toMatch(/"repository.created"/);
  });
});
