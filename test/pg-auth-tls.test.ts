import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, copyFileSync, chownSync, chmodSync, statSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { startPostgres, PG_VERSIONS, type PgServer } from "./harness/postgres.ts";
import { connect, type ConnectOptions } from "../src/pg/replication-connection.ts";
import type { ServerConnInfo } from "../src/pg/conninfo.ts";
import { scramSha256 } from "../src/pg/scram.ts";
import { PgServerError } from "../src/pg/server-error.ts";
import { KlioError } from "../src/util/errors.ts";

// ------------------------------------------------------------------ certificates

interface Pki {
  dir: string;
  ca: string;
  otherCa: string;
  serverCert: string;
  serverKey: string;
}

/** A CA, a server certificate for localhost / 127.0.0.1 signed by it, and an unrelated CA. */
function makePki(): Pki {
  const dir = mkdtempSync(path.join(tmpdir(), "klio-pki-"));
  const f = (n: string) => path.join(dir, n);
  const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  const ecKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  for (const name of ["ca", "other-ca"]) {
    ssl("req", "-x509", ...ecKey, "-keyout", f(`${name}.key`), "-out", f(`${name}.crt`), "-days", "2", "-subj", `/CN=klio test ${name}`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  }
  ssl("req", ...ecKey, "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=localhost");
  writeFileSync(f("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  ssl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f("server.crt"), "-days", "2", "-extfile", f("server.ext"));
  return { dir, ca: f("ca.crt"), otherCa: f("other-ca.crt"), serverCert: f("server.crt"), serverKey: f("server.key") };
}

/** Puts the server certificate into the data directory, owned by the server's user, and turns ssl on. */
async function enableSsl(pg: PgServer, pki: Pki): Promise<void> {
  const { uid, gid } = statSync(pg.dataDir);
  for (const [from, to] of [[pki.serverCert, "server.crt"], [pki.serverKey, "server.key"]] as const) {
    const dest = path.join(pg.dataDir, to);
    copyFileSync(from, dest);
    chownSync(dest, uid, gid);
    chmodSync(dest, 0o600);
  }
  pg.appendConf({ ssl: "on", ssl_cert_file: "'server.crt'", ssl_key_file: "'server.key'" });
  await pg.reload();
}

// ------------------------------------------------------------------ real servers

const PASSWORDS = { pw_user: "clear-secret", md5_user: "md5-secret", scram_user: "scräm-sécret ½" };

describe.each(PG_VERSIONS)("authentication and TLS against PostgreSQL %i", (version) => {
  let pg: PgServer;
  let pki: Pki;
  let setupNotices: string[];

  const ci = (over: Partial<ServerConnInfo>): ServerConnInfo => ({
    host: "127.0.0.1", port: pg.port, user: "postgres", dbname: "postgres", sslmode: "disable", application_name: "klio-test", ...over,
  });

  /** Connects, runs `sql` (a normal session unless replication is asked for), closes. */
  async function run(c: ServerConnInfo, sql = "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()", opts: ConnectOptions = { replication: false }) {
    const conn = await connect(c, opts);
    try {
      return (await conn.query(sql))[0]!.rows[0]!;
    } finally {
      await conn.close();
    }
  }

  beforeAll(async () => {
    pki = makePki();
    pg = await startPostgres({
      version,
      conf: { listen_addresses: "'127.0.0.1,127.0.0.2'" },
      hbaOnly: [
        "local all all trust",
        "local replication all trust",
        "host all pw_user 127.0.0.0/8 password",
        "host all md5_user 127.0.0.0/8 md5",
        "host replication md5_user 127.0.0.0/8 md5",
        "host all scram_user 127.0.0.0/8 scram-sha-256",
        "host replication scram_user 127.0.0.0/8 scram-sha-256",
        "hostssl all ssl_only 127.0.0.0/8 trust",
        "hostnossl all nossl_only 127.0.0.0/8 trust",
        "host all postgres 127.0.0.0/8 trust",
        "host replication postgres 127.0.0.0/8 trust",
      ],
    });
    setupNotices = [];
    const admin = await connect(
      { host: pg.socketDir, port: pg.port, user: "postgres", dbname: "postgres", sslmode: "prefer", application_name: "setup" },
      { replication: false, onNotice: (n) => setupNotices.push(`${n.severity}: ${n.message}`) },
    );
    const q = (s: string) => `'${s.replace(/'/g, "''")}'`;
    await admin.query(`
      CREATE ROLE pw_user LOGIN PASSWORD ${q(PASSWORDS.pw_user)};
      SET password_encryption = 'md5';
      CREATE ROLE md5_user LOGIN REPLICATION PASSWORD ${q(PASSWORDS.md5_user)};
      SET password_encryption = 'scram-sha-256';
      CREATE ROLE scram_user LOGIN REPLICATION PASSWORD ${q(PASSWORDS.scram_user)};
      CREATE ROLE ssl_only LOGIN;
      CREATE ROLE nossl_only LOGIN;`);
    await admin.close();
    await enableSsl(pg, pki);
  });
  afterAll(async () => {
    await pg?.destroy();
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
  });

  it("stores an MD5 password (PostgreSQL 18 warns that MD5 is deprecated)", () => {
    if (version >= 18) expect(setupNotices.join("\n")).toMatch(/MD5/i);
    else expect(setupNotices).toEqual([]);
  });

  it.each([
    ["cleartext password", "pw_user"],
    ["MD5", "md5_user"],
    ["SCRAM-SHA-256 (non-ASCII password)", "scram_user"],
  ] as const)("authenticates with %s, and rejects a wrong password with 28P01", async (_method, user) => {
    const opts: ConnectOptions = user === "pw_user" ? { replication: false } : {};
    const sql = user === "pw_user" ? "SELECT current_user" : "IDENTIFY_SYSTEM";
    expect((await run(ci({ user, password: PASSWORDS[user] }), sql, opts))[0]).toMatch(user === "pw_user" ? /pw_user/ : /^\d+$/);

    const wrong = await connect(ci({ user, password: "not-the-password" }), opts).catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(PgServerError);
    expect(wrong).toMatchObject({ code: "pg-error", sqlstate: "28P01", severity: "FATAL" });
    expect((wrong as Error).message).toBe(`cannot connect to ${user}@127.0.0.1:${pg.port}: password authentication failed for user "${user}"`);
    expect((wrong as Error).message).not.toContain("not-the-password");
  });

  it("says so when the server wants a password and none was given", async () => {
    await expect(connect(ci({ user: "scram_user" }))).rejects.toMatchObject({ code: "pg-auth", message: expect.stringMatching(/asks for a password and none was given/) });
  });

  it("uses TLS with sslmode=require, and checks the chain and the name with verify-ca / verify-full", async () => {
    expect(await run(ci({ sslmode: "require" }))).toEqual(["true"]);
    expect(await run(ci({ sslmode: "disable" }))).toEqual(["false"]);
    expect(await run(ci({ sslmode: "verify-ca", sslrootcert: pki.ca }))).toEqual(["true"]);
    expect(await run(ci({ sslmode: "verify-full", sslrootcert: pki.ca }))).toEqual(["true"]);
    // TLS on a replication connection too, with SCRAM over it (the server offers -PLUS; we take plain SCRAM-SHA-256)
    expect((await run(ci({ sslmode: "verify-full", sslrootcert: pki.ca }), "IDENTIFY_SYSTEM", {}))[0]).toMatch(/^\d+$/);
    expect((await run(ci({ user: "scram_user", password: PASSWORDS.scram_user, sslmode: "require" }), "IDENTIFY_SYSTEM", {}))[0]).toMatch(/^\d+$/);
    // the certificate names 127.0.0.1 and localhost, not 127.0.0.2: the chain is fine, the name is not
    expect(await run(ci({ host: "127.0.0.2", sslmode: "verify-ca", sslrootcert: pki.ca }))).toEqual(["true"]);
    const name = await connect(ci({ host: "127.0.0.2", sslmode: "verify-full", sslrootcert: pki.ca })).catch((e: unknown) => e);
    expect(name).toMatchObject({ code: "pg-tls", message: expect.stringMatching(/does not match the host name/) });
  });

  it.each(["verify-full", "verify-ca", "require"] as const)("refuses a server signed by another CA with sslmode=%s and that CA as sslrootcert", async (sslmode) => {
    const err = await connect(ci({ sslmode, sslrootcert: pki.otherCa })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KlioError);
    expect(err).toMatchObject({ code: "pg-tls" });
    expect((err as Error).message).toMatch(new RegExp(`^cannot connect to postgres@127\\.0\\.0\\.1:${pg.port}: TLS \\(sslmode=${sslmode}\\): the server certificate is not signed by a CA in sslrootcert`));
  });

  it("reports a missing sslrootcert file clearly", async () => {
    await expect(connect(ci({ sslmode: "verify-full", sslrootcert: "/nonexistent/root.crt" }))).rejects.toMatchObject({
      code: "pg-tls",
      message: expect.stringMatching(/cannot read root certificate file \(sslrootcert\) "\/nonexistent\/root.crt": no such file/),
    });
  });

  it("follows pg_hba.conf's hostssl / hostnossl with libpq's retries for allow and prefer", async () => {
    const noEntry = await connect(ci({ user: "ssl_only", sslmode: "disable" })).catch((e: unknown) => e);
    expect(noEntry).toBeInstanceOf(PgServerError);
    expect(noEntry).toMatchObject({ sqlstate: "28000", message: expect.stringMatching(/no pg_hba\.conf entry/) });
    expect(await run(ci({ user: "ssl_only", sslmode: "allow" }))).toEqual(["true"]); // plain refused, then TLS
    expect(await run(ci({ user: "nossl_only", sslmode: "prefer" }))).toEqual(["false"]); // TLS refused, then plain
    await expect(connect(ci({ user: "nossl_only", sslmode: "require" }))).rejects.toMatchObject({ sqlstate: "28000" });
  });

  it("falls back to plain with sslmode=prefer when the server has ssl=off, and refuses with require", async () => {
    pg.appendConf({ ssl: "off" });
    await pg.reload();
    expect(await run(ci({ sslmode: "prefer" }))).toEqual(["false"]);
    await expect(connect(ci({ sslmode: "require" }))).rejects.toMatchObject({
      code: "pg-tls",
      message: `cannot connect to postgres@127.0.0.1:${pg.port}: the server does not support SSL, but sslmode=require requires it`,
    });
  });
});

// ------------------------------------------------------------------ without a server

describe("connection failures", () => {
  let silent: Server;
  let silentPort: number;
  const held: Socket[] = [];
  beforeAll(async () => {
    silent = createServer((s) => {
      held.push(s);
      s.on("error", () => {});
    });
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    silentPort = (silent.address() as { port: number }).port;
  });
  afterAll(() => {
    for (const s of held) s.destroy();
    silent.close();
  });
  const base: ServerConnInfo = { host: "127.0.0.1", port: 1, user: "rep", dbname: "rep", sslmode: "disable", application_name: "klio" };

  it("says the connection was refused, naming user, host and port", async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const port = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    await expect(connect({ ...base, port })).rejects.toMatchObject({
      code: "pg-connect",
      message: expect.stringMatching(new RegExp(`^cannot connect to rep@127\\.0\\.0\\.1:${port}: connection refused`)),
    });
  });

  it("says there is no socket file for a Unix socket directory without a server", async () => {
    await expect(connect({ ...base, host: "/nonexistent-dir", port: 5432 })).rejects.toMatchObject({
      code: "pg-connect",
      message: expect.stringMatching(/^cannot connect to rep@\/nonexistent-dir\/\.s\.PGSQL\.5432: no such socket file/),
    });
  });

  it("gives up after connect_timeout when the server never answers", async () => {
    const t0 = Date.now();
    await expect(connect({ ...base, port: silentPort, connect_timeout: 1 })).rejects.toMatchObject({
      code: "pg-connect",
      message: `cannot connect to rep@127.0.0.1:${silentPort}: timeout expired after 2 s`,
    });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1900);
  });

  it("stops connecting when the signal aborts, with the signal's reason", async () => {
    const ac = new AbortController();
    const pending = connect({ ...base, port: silentPort, sslmode: "prefer" }, { signal: ac.signal });
    setTimeout(() => ac.abort(new KlioError("stopping", "receiver stopping")), 100);
    await expect(pending).rejects.toMatchObject({ code: "stopping" });
  });
});

// ------------------------------------------------------------------ SCRAM

describe("SCRAM-SHA-256", () => {
  it("produces RFC 7677's client proof and accepts its server signature", async () => {
    const s = scramSha256("pencil", { nonce: "rOprNGfwEbeRWgbNEkqO", user: "user" });
    expect(new TextDecoder().decode(s.clientFirst)).toBe("n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
    const serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const final = new TextDecoder().decode(await s.clientFinal(new TextEncoder().encode(serverFirst)));
    expect(final).toBe("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    expect(() => s.verifyServerFinal(new TextEncoder().encode("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="))).toThrow(/signature is wrong/);
    s.verifyServerFinal(new TextEncoder().encode("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="));
    expect(s.verified).toBe(true);
  });

  it("refuses a server nonce that does not extend ours", async () => {
    const s = scramSha256("pencil", { nonce: "abc" });
    await expect(s.clientFinal(new TextEncoder().encode("r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"))).rejects.toMatchObject({ code: "pg-auth" });
  });

  // A server that asks for SCRAM and then either lies about the final signature or skips it.
  async function impostor(final: "bad-signature" | "skip"): Promise<{ server: Server; port: number }> {
    const enc = new TextEncoder();
    const msg = (type: string, code: number, data: Uint8Array) => {
      const out = new Uint8Array(9 + data.length);
      out[0] = type.charCodeAt(0);
      new DataView(out.buffer).setInt32(1, 8 + data.length);
      new DataView(out.buffer).setInt32(5, code);
      out.set(data, 9);
      return out;
    };
    const server = createServer((s) => {
      let step = 0;
      s.on("error", () => {});
      s.on("data", (chunk: Uint8Array) => {
        const text = new TextDecoder().decode(chunk);
        if (step === 0) s.write(msg("R", 10, enc.encode("SCRAM-SHA-256\0\0")));
        if (step === 1) {
          const nonce = /r=([^,]+)/.exec(text)![1];
          s.write(msg("R", 11, enc.encode(`r=${nonce}server,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096`)));
        }
        if (step === 2) {
          if (final === "bad-signature") s.write(msg("R", 12, enc.encode("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")));
          s.write(msg("R", 0, new Uint8Array(0)));
        }
        step++;
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return { server, port: (server.address() as { port: number }).port };
  }

  it.each(["bad-signature", "skip"] as const)("refuses a server that cannot prove it knows the password (%s)", async (kind) => {
    const { server, port } = await impostor(kind);
    try {
      const err = await connect({ host: "127.0.0.1", port, user: "u", dbname: "u", password: "pencil", sslmode: "disable", application_name: "klio" }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "pg-auth", message: expect.stringMatching(/^cannot connect to u@127\.0\.0\.1:\d+: /) });
    } finally {
      server.close();
    }
  });
});
