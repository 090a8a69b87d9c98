import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { mkdtempSync, writeFileSync, rmSync, chmodSync, statSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import { parseConnInfo, describeConnInfo, serverConnInfo, type ServerConnInfo } from "../src/pg/conninfo.ts";
import { KlioError } from "../src/util/errors.ts";

// A HOME without a .pgpass, so the developer's own file never leaks into these tests.
let home: string;
beforeAll(() => {
  home = mkdtempSync(path.join(tmpdir(), "klio-conninfo-"));
});
afterAll(() => rmSync(home, { recursive: true, force: true }));

const env = (e: Record<string, string> = {}) => ({ HOME: home, ...e });
const parseList = (text: string, e: Record<string, string> = {}) => parseConnInfo(text, env(e));
/** A one-server string, flattened: its server with what every connection shares. */
const parse = (text: string, e: Record<string, string> = {}): ServerConnInfo => {
  const ci = parseList(text, e);
  expect(ci.servers).toHaveLength(1);
  return serverConnInfo(ci, ci.servers[0]!);
};

function defaultHost(): string {
  for (const d of ["/var/run/postgresql", "/tmp"]) {
    try {
      if (statSync(d).isDirectory()) return d;
    } catch {
      /* next */
    }
  }
  return "localhost";
}

describe("parseConnInfo: key=value strings", () => {
  const cases: [string, Partial<ServerConnInfo>][] = [
    ["host=db1 port=5433 user=rep dbname=app", { host: "db1", port: 5433, user: "rep", dbname: "app" }],
    ["host = db1  port= 5433\tuser =rep", { host: "db1", port: 5433, user: "rep", dbname: "rep" }],
    ["password='it\\'s a secret' host=db1", { password: "it's a secret", host: "db1" }],
    ["password='back\\\\slash' host=db1", { password: "back\\slash" }],
    ["password=unquoted\\ space host=db1", { password: "unquoted space" }],
    ["application_name='my app' host=h", { application_name: "my app" }],
    ["host=h password=''", {}], // empty counts as absent
    ["host=h sslmode=verify-full sslrootcert=/etc/ca.pem sslcert=/c sslkey=/k", { sslmode: "verify-full", sslrootcert: "/etc/ca.pem", sslcert: "/c", sslkey: "/k" }],
    ["host=h connect_timeout=10", { connect_timeout: 10 }],
    ["host=h fallback_application_name=fb", { application_name: "fb" }],
    ["host=h application_name=a fallback_application_name=fb", { application_name: "a" }],
    ["host=h keepalives=1 keepalives_idle=30 target_session_attrs=any", { host: "h" }],
    ["hostaddr=10.0.0.5", { host: "10.0.0.5" }],
    ["host=/run/pg port=6000", { host: "/run/pg", port: 6000 }],
  ];
  it.each(cases)("%s", (text, expected) => {
    expect(parse(text)).toMatchObject(expected);
  });

  it("leaves the password out when none is given anywhere", () => {
    expect(parse("host=h user=u").password).toBeUndefined();
  });
});

describe("parseConnInfo: URIs", () => {
  const cases: [string, Partial<ServerConnInfo>][] = [
    ["postgresql://rep:s3cr%40t@db1.example.com:6432/app", { user: "rep", password: "s3cr@t", host: "db1.example.com", port: 6432, dbname: "app" }],
    ["postgres://db1", { host: "db1", port: 5432 }],
    ["postgresql://[::1]:5433/x", { host: "::1", port: 5433, dbname: "x" }],
    ["postgresql://[2001:db8::7]/x", { host: "2001:db8::7", port: 5432 }],
    ["postgresql://%2Fvar%2Frun%2Fpg/app", { host: "/var/run/pg", dbname: "app" }],
    ["postgresql:///app?host=/tmp&port=5999", { host: "/tmp", port: 5999, dbname: "app" }],
    ["postgresql://u@h/d?sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem&application_name=a%20b", { sslmode: "verify-ca", sslrootcert: "/etc/ca.pem", application_name: "a b" }],
    ["postgresql://h/d?ssl=true", { sslmode: "require" }],
    ["postgresql://us%C3%A9r@h/d%C3%A9j%C3%A0", { user: "usér", dbname: "déjà" }],
    ["postgresql://u:@h", { user: "u" }],
    ["postgresql://h?connect_timeout=3", { connect_timeout: 3 }],
  ];
  it.each(cases)("%s", (text, expected) => {
    expect(parse(text)).toMatchObject(expected);
  });
});

describe("parseConnInfo: several hosts, as libpq takes them", () => {
  const servers = (text: string, e: Record<string, string> = {}) => parseList(text, e).servers.map(({ password: _, ...s }) => s);
  it("reads host, hostaddr and port lists: one port for all, or one each", () => {
    expect(servers("host=a,b port=5432,5433")).toEqual([{ host: "a", port: 5432 }, { host: "b", port: 5433 }]);
    expect(servers("host=a,b,c port=6000")).toEqual(["a", "b", "c"].map((host) => ({ host, port: 6000 })));
    expect(servers("host=a,b")).toEqual([{ host: "a", port: 5432 }, { host: "b", port: 5432 }]);
    expect(servers("host=a,b", { PGPORT: "7000" })).toEqual([{ host: "a", port: 7000 }, { host: "b", port: 7000 }]);
    expect(servers("host=a,b port=,5433")).toEqual([{ host: "a", port: 5432 }, { host: "b", port: 5433 }]);
    expect(servers("", { PGHOST: "a,/run/pg", PGPORT: "1,2" })).toEqual([{ host: "a", port: 1 }, { host: "/run/pg", port: 2 }]);
    expect(servers("host=db1,db2 hostaddr=10.0.0.1,::1")).toEqual([{ host: "db1", hostaddr: "10.0.0.1", port: 5432 }, { host: "db2", hostaddr: "::1", port: 5432 }]);
    expect(servers("hostaddr=10.0.0.1,10.0.0.2 port=1,2")).toEqual([{ host: "10.0.0.1", hostaddr: "10.0.0.1", port: 1 }, { host: "10.0.0.2", hostaddr: "10.0.0.2", port: 2 }]);
  });

  it("reads the URI form: host:port pairs, a missing port the default", () => {
    expect(servers("postgresql://h1:5433,h2/db")).toEqual([{ host: "h1", port: 5433 }, { host: "h2", port: 5432 }]);
    expect(servers("postgresql://h1,h2/db", { PGPORT: "6000" })).toEqual([{ host: "h1", port: 6000 }, { host: "h2", port: 6000 }]);
    expect(servers("postgresql://u@[::1]:5433,[2001:db8::7],h3:5435/db")).toEqual([
      { host: "::1", port: 5433 }, { host: "2001:db8::7", port: 5432 }, { host: "h3", port: 5435 },
    ]);
    expect(servers("postgresql://%2Frun%2Fpg:5433,h2:5434/db")).toEqual([{ host: "/run/pg", port: 5433 }, { host: "h2", port: 5434 }]);
    expect(servers("postgresql:///db?host=a,b&port=1,2")).toEqual([{ host: "a", port: 1 }, { host: "b", port: 2 }]);
  });

  it("reads target_session_attrs and load_balance_hosts, from the string or the environment", () => {
    expect(parseList("host=a,b")).toMatchObject({ target_session_attrs: "any", load_balance_hosts: "disable" });
    for (const attrs of ["any", "read-write", "read-only", "primary", "standby", "prefer-standby"])
      expect(parseList(`host=a,b target_session_attrs=${attrs}`).target_session_attrs).toBe(attrs);
    expect(parseList("postgresql://a,b/db?target_session_attrs=primary&load_balance_hosts=random")).toMatchObject({ target_session_attrs: "primary", load_balance_hosts: "random" });
    expect(parseList("host=a", { PGTARGETSESSIONATTRS: "standby", PGLOADBALANCEHOSTS: "random" })).toMatchObject({ target_session_attrs: "standby", load_balance_hosts: "random" });
  });

  it("looks each server's password up in the password file by its own host and port", () => {
    const file = path.join(home, "pgpass-multi");
    writeFileSync(file, "a:5432:*:rep:pa\nb:5433:*:rep:pb\n", { mode: 0o600 });
    const ci = parseList(`host=a,b,c port=5432,5433,5434 user=rep passfile=${file}`);
    expect(ci.servers.map((s) => s.password)).toEqual(["pa", "pb", undefined]);
    expect(parseList(`host=a,b user=rep password=given passfile=${file}`).servers.map((s) => s.password)).toEqual(["given", "given"]);
  });

  it("names every server in messages", () => {
    expect(describeConnInfo(parseList("host=a,b port=5432,5433 user=rep password=pw"))).toBe("rep@a:5432,b:5433");
  });
});

describe("parseConnInfo: environment and defaults", () => {
  it("takes what the string leaves out from PG* variables", () => {
    const ci = parse("dbname=app", {
      PGHOST: "envhost",
      PGPORT: "6543",
      PGUSER: "envuser",
      PGPASSWORD: "envpw",
      PGSSLMODE: "require",
      PGSSLROOTCERT: "/ca.pem",
      PGAPPNAME: "envapp",
      PGCONNECT_TIMEOUT: "7",
    });
    expect(ci).toEqual({
      host: "envhost",
      port: 6543,
      user: "envuser",
      password: "envpw",
      dbname: "app",
      sslmode: "require",
      sslrootcert: "/ca.pem",
      application_name: "envapp",
      connect_timeout: 7,
    });
  });

  it("prefers the string over the environment", () => {
    expect(parse("host=a port=1 user=b", { PGHOST: "x", PGPORT: "2", PGUSER: "y" })).toMatchObject({ host: "a", port: 1, user: "b" });
  });

  it("falls back to libpq's defaults", () => {
    const ci = parse("");
    const user = userInfo().username;
    expect(ci).toEqual({ host: defaultHost(), port: 5432, user, dbname: user, sslmode: "prefer", application_name: "klio" });
    expect(parseConnInfo("", env(), { application_name: "klio-wal" }).application_name).toBe("klio-wal");
    expect(parse("", { PGUSER: "bob" })).toMatchObject({ user: "bob", dbname: "bob" });
  });
});

describe("parseConnInfo: password file", () => {
  function passfile(lines: string[], mode = 0o600): string {
    const file = path.join(home, `pgpass-${Math.random().toString(36).slice(2)}`);
    writeFileSync(file, lines.join("\n") + "\n");
    chmodSync(file, mode);
    return file;
  }

  it("finds the first matching line, with wildcards and escapes", () => {
    const file = passfile([
      "# comment",
      "otherhost:5432:*:rep:wrong",
      "db1:5433:*:rep:right\\:pw\\\\x",
      "*:*:*:*:fallback",
    ]);
    expect(parse("host=db1 port=5433 user=rep", { PGPASSFILE: file }).password).toBe("right:pw\\x");
    expect(parse("host=db2 user=rep", { PGPASSFILE: file }).password).toBe("fallback");
    expect(parse(`host=db1 port=5433 user=rep passfile=${file}`).password).toBe("right:pw\\x");
  });

  it("reads ~/.pgpass by default and matches 'localhost' for the default socket directory", () => {
    writeFileSync(path.join(home, ".pgpass"), "localhost:5432:app:rep:frompgpass\n", { mode: 0o600 });
    try {
      expect(parse("host=/tmp dbname=app user=rep").password).toBe("frompgpass");
      expect(parse("host=localhost dbname=app user=rep").password).toBe("frompgpass");
      expect(parse("host=/elsewhere dbname=app user=rep").password).toBeUndefined();
    } finally {
      rmSync(path.join(home, ".pgpass"));
    }
  });

  it("never overrides a given password, and ignores a file others can read (as libpq does)", () => {
    const file = passfile(["*:*:*:*:filepw"]);
    expect(parse("host=h password=given", { PGPASSFILE: file }).password).toBe("given");
    expect(parse("host=h", { PGPASSFILE: file, PGPASSWORD: "env" }).password).toBe("env");
    const open = passfile(["*:*:*:*:filepw"], 0o644);
    expect(parse("host=h", { PGPASSFILE: open }).password).toBeUndefined();
  });
});

describe("parseConnInfo: errors", () => {
  const SECRET = "Tr0ub4dor&3";
  const cases: [string, Record<string, string>, RegExp][] = [
    ["host=h bogus=1", {}, /unknown connection option "bogus"/],
    ["host=h options='-c x=1'", {}, /"options" is not supported/],
    ["host=h port=abc", {}, /invalid port number "abc"/],
    ["host=h port=70000", {}, /between 1 and 65535/],
    ["host=h", { PGPORT: "x1" }, /invalid port number "x1" \(from PGPORT\)/],
    ["host=h sslmode=maybe", {}, /invalid sslmode "maybe"/],
    ["host=h", { PGSSLMODE: "on" }, /from PGSSLMODE/],
    ["host=h connect_timeout=soon", {}, /connect_timeout/],
    ["host=a,b port=1,2,3", {}, /could not match 3 port numbers to 2 hosts/],
    ["host=a,b,c", { PGPORT: "1,2" }, /could not match 2 port numbers to 3 hosts/],
    ["host=a,b hostaddr=10.0.0.1", {}, /could not match 2 host names to 1 hostaddr values/],
    ["host=a,,b", {}, /the host list "a,,b" has an empty entry \(entry 2 of 3\)/],
    ["host=a,", {}, /empty entry \(entry 2 of 2\)/],
    ["postgresql://a,/db", {}, /the host list "a," has an empty entry/],
    ["postgresql://,b:5433/db", {}, /empty entry \(entry 1 of 2\)/],
    ["hostaddr=10.0.0.1,db1", {}, /hostaddr "db1" is not a numeric IP address/],
    ["host=a,b port=5432,x", {}, /invalid port number "x"/],
    ["host=a target_session_attrs=master", {}, /invalid target_session_attrs "master": use one of any, read-write, read-only, primary, standby, prefer-standby/],
    ["host=a", { PGTARGETSESSIONATTRS: "primary " }, /invalid target_session_attrs "primary " \(from PGTARGETSESSIONATTRS\)/],
    ["postgresql://a,b/db?load_balance_hosts=yes", {}, /invalid load_balance_hosts "yes": use one of disable, random/],
    ["host=h user", {}, /missing "=" after "user"/],
    ["postgresql://h/db?bogus=1", {}, /unknown URI query parameter "bogus"/],
    ["postgresql://[::1/db", {}, /missing "\]"/],
    ["host=h channel_binding=require", {}, /channel_binding=require is not supported/],
    [`host=h password='${SECRET}`, {}, /unterminated quoted string in the value of "password"/],
    [`password=${SECRET} more words here`, {}, /quote a value that contains spaces/],
    [`password=${SECRET} bogus`, {}, /quote a value that contains spaces/],
    [`postgresql://u:${SECRET}%zz@h/db`, {}, /invalid percent-encoding in the password/],
    [`postgresql://u:${SECRET}@h:99999/db`, {}, /invalid port number/],
    [`postgresql://u:${SECRET}@h/db?sslmode=on`, {}, /invalid sslmode/],
  ];
  it.each(cases)("%s", (text, e, message) => {
    let caught: unknown;
    try {
      parse(text, e);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(KlioError);
    const k = caught as KlioError;
    expect(k.code).toBe("bad-conninfo");
    expect(k.message).toMatch(message);
    expect(k.message).not.toContain(SECRET);
    expect(k.message).not.toContain("\n");
  });
});

describe("describeConnInfo", () => {
  it("names user, host and port, never the password", () => {
    expect(describeConnInfo(parse("host=db1 port=5433 user=rep password=pw"))).toBe("rep@db1:5433");
    expect(describeConnInfo(parse("postgresql://rep:pw@[::1]:5433"))).toBe("rep@[::1]:5433");
    expect(describeConnInfo(parse("host=/run/pg port=5433 user=rep"))).toBe("rep@/run/pg/.s.PGSQL.5433");
  });
});
