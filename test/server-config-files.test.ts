// `klio server start --check` (klio.service's ExecStartPre): every file the config names — the
// password, token, TLS, S3 and passphrase files, and the sslrootcert/sslcert/sslkey/passfile of
// a connection string — must be there and readable. A missing one is one line that names the
// setting and the file, all of them at once, exit 2; with all of them present the check passes.
import { describe, it, expect, afterEach } from "vitest";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { TSchema } from "@sinclair/typebox";
import { ConfigSchema } from "../src/server/config.ts";
import { FILE_SETTINGS } from "../src/server/config-files.ts";
import { runKlioAsync } from "./harness/klio.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A config in a new directory whose every named file exists (relative paths beside it, absolute ones in the connection). */
function setup() {
  const dir = mkdtempSync(path.join(tmpdir(), "klio-config-files-"));
  dirs.push(dir);
  const files = {
    adminToken: path.join(dir, "tokens/admin.token"),
    readToken: path.join(dir, "tokens/read.token"),
    password: path.join(dir, "db1.password"),
    rootCert: path.join(dir, "db1-ca.pem"),
    clientCert: path.join(dir, "client.pem"),
    clientKey: path.join(dir, "client.key"),
    tlsCert: path.join(dir, "tls/cert.pem"),
    tlsKey: path.join(dir, "tls/key.pem"),
    passphrase: path.join(dir, "passphrase"),
  };
  mkdirSync(path.join(dir, "tokens"));
  mkdirSync(path.join(dir, "tls"));
  for (const f of Object.values(files)) writeFileSync(f, "secret-0123456789abcdef\n", { mode: 0o600 });
  const config = {
    repository: { path: "repo", passphrase_file: "passphrase" },
    api: {
      host: "127.0.0.1", port: 8432,
      tls: { cert_file: "tls/cert.pem", key_file: "tls/key.pem" },
      tokens: [{ name: "ops", scope: "admin", token_file: "tokens/admin.token" }, { name: "ro", scope: "read", token_file: "tokens/read.token" }],
    },
    clusters: [
      {
        name: "db1",
        connection: `host=127.0.0.1 user=klio sslmode=verify-full sslrootcert=${files.rootCert} sslcert=${files.clientCert} sslkey=${files.clientKey}`,
        password_file: "db1.password",
      },
      { name: "db2", connection: "postgresql://klio@127.0.0.1:5433/postgres?sslmode=require&sslrootcert=system" },
    ],
  };
  const file = path.join(dir, "klio.json");
  writeFileSync(file, JSON.stringify(config));
  return { dir, file, files };
}

const check = (file: string) => runKlioAsync(["server", "start", "--config", file, "--check"]);

/** Every property of the schema whose name ends in _file, as a pointer pattern ("*" for array items). */
function fileSettingsOf(schema: TSchema, at = ""): string[] {
  const s = schema as TSchema & { properties?: Record<string, TSchema>; items?: TSchema };
  if (s.items) return fileSettingsOf(s.items, `${at}/*`);
  return Object.entries(s.properties ?? {}).flatMap(([k, v]) => [...(k.endsWith("_file") ? [`${at}/${k}`] : []), ...fileSettingsOf(v, `${at}/${k}`)]);
}

describe("server start --check and the files the config names", () => {
  it("declares every *_file setting of the schema as a file", () => {
    expect(FILE_SETTINGS.map((s) => s.at).sort()).toEqual(fileSettingsOf(ConfigSchema).sort());
  });

  it("passes when every file is there", { timeout: 60_000 }, async () => {
    const { file } = setup();
    const r = await check(file);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    // 2 tokens, TLS cert and key, the passphrase, the password and the three files of db1's connection.
    expect(r.stdout).toMatch(/: ok \(2 clusters, API on 127\.0\.0\.1:8432 with TLS, 9 files readable\)/);
  });

  it.each<[string, (f: ReturnType<typeof setup>["files"]) => string, RegExp]>([
    ["the password file", (f) => f.password, /at \/clusters\/0\/password_file: cannot read the password file .*\/db1\.password: no such file$/],
    ["the sslrootcert", (f) => f.rootCert, /at \/clusters\/0\/connection: cannot read the root certificate file \(sslrootcert\) .*\/db1-ca\.pem: no such file$/],
    ["the TLS key", (f) => f.tlsKey, /at \/api\/tls\/key_file: cannot read the TLS key .*\/tls\/key\.pem: no such file$/],
    ["a token file", (f) => f.readToken, /at \/api\/tokens\/1\/token_file: cannot read the token file .*\/tokens\/read\.token: no such file$/],
    ["the client key (sslkey)", (f) => f.clientKey, /at \/clusters\/0\/connection: cannot read the client key \(sslkey\) .*\/client\.key: no such file$/],
  ])("names %s when it is missing, exit 2", { timeout: 60_000 }, async (_what, which, line) => {
    const { file, files } = setup();
    rmSync(which(files));
    const r = await check(file);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^klio: ${file.replaceAll(".", "\\.")}: `));
    expect(lines[0]).toMatch(line);
  });

  it("names every problem at once, one line each", { timeout: 60_000 }, async () => {
    const { file, files } = setup();
    rmSync(files.password);
    rmSync(files.rootCert);
    rmSync(files.tlsKey);
    rmSync(files.passphrase);
    mkdirSync(files.passphrase); // a directory where a file should be
    const r = await check(file);
    expect(r.code).toBe(2);
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines).toHaveLength(4);
    expect(lines.join("\n")).toMatch(/repository\/passphrase_file: cannot read the passphrase file .*: it is a directory/);
    for (const name of ["db1.password", "db1-ca.pem", "key.pem"]) expect(lines.filter((l) => l.includes(name))).toHaveLength(1);
  });
});
