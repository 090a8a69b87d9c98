// Multi-host connection strings against a real primary and its standby: klio picks the server
// libpq (psql) picks, by target_session_attrs, and says why when none fits.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import path from "node:path";
import { createServer, type AddressInfo, type Socket } from "node:net";
import { binDir, freePort, startPostgres, startStandby, PG_VERSIONS, type PgServer } from "./harness/postgres.ts";
import { connect } from "../src/pg/replication-connection.ts";
import { parseConnInfo } from "../src/pg/conninfo.ts";
import { KlioError } from "../src/util/errors.ts";

const PSQL = path.join(binDir(15), "psql");

describe.each(PG_VERSIONS)("multi-host connection strings on PostgreSQL %i", (version) => {
  let primary: PgServer;
  let standby: PgServer;
  let closed: number;

  beforeAll(async () => {
    primary = await startPostgres({ version });
    standby = await startStandby(primary);
    closed = await freePort();
  }, 120_000);
  afterAll(async () => {
    await standby?.destroy();
    await primary?.destroy();
  });

  /** A key=value string over 127.0.0.1 with `ports` in order. */
  const list = (ports: number[], extra = "") => `host=${ports.map(() => "127.0.0.1").join(",")} port=${ports.join(",")} user=postgres dbname=postgres sslmode=disable ${extra}`;

  /** The port klio's connection lands on (a normal session, or a physical replication one). */
  async function klioPort(text: string, replication: "true" | false = false): Promise<number> {
    const conn = await connect(parseConnInfo(text, { HOME: primary.baseDir }), { replication });
    try {
      const port = Number(/:(\d+)$/.exec(conn.server)![1]);
      if (replication === false) expect(Number((await conn.query("select inet_server_port()"))[0]!.rows[0]![0])).toBe(port);
      else expect((await conn.query("IDENTIFY_SYSTEM"))[0]!.rows).toHaveLength(1);
      return port;
    } finally {
      await conn.close();
    }
  }

  /** The port psql's connection lands on, or null when psql cannot connect. */
  function psqlPort(text: string): number | null {
    const r = spawnSync(PSQL, [text, "-XAtc", "select inet_server_port()"], { encoding: "utf8", env: { ...process.env, HOME: primary.baseDir, PGCONNECT_TIMEOUT: "5" } });
    return r.status === 0 ? Number(r.stdout.trim()) : null;
  }

  it("lands where psql lands for every target_session_attrs", async () => {
    const cases: [number[], string, () => number][] = [
      [[closed, standby.port, primary.port], "target_session_attrs=primary", () => primary.port],
      [[closed, standby.port, primary.port], "target_session_attrs=read-write", () => primary.port],
      [[closed, primary.port, standby.port], "target_session_attrs=standby", () => standby.port],
      [[closed, primary.port, standby.port], "target_session_attrs=read-only", () => standby.port],
      [[closed, primary.port, standby.port], "target_session_attrs=any", () => primary.port],
      [[closed, standby.port, primary.port], "", () => standby.port],
      [[primary.port, standby.port], "target_session_attrs=prefer-standby", () => standby.port],
      [[closed, primary.port], "target_session_attrs=prefer-standby", () => primary.port],
    ];
    for (const [ports, extra, expected] of cases) {
      const text = list(ports, extra);
      expect(psqlPort(text), text).toBe(expected());
      expect(await klioPort(text), text).toBe(expected());
    }
    // The URI form, and a physical replication connection (no SQL: the reported parameters decide).
    const uri = `postgresql://postgres@127.0.0.1:${standby.port},127.0.0.1:${primary.port}/postgres?sslmode=disable&target_session_attrs=primary`;
    expect(psqlPort(uri)).toBe(primary.port);
    expect(await klioPort(uri)).toBe(primary.port);
    expect(await klioPort(list([standby.port, primary.port], "target_session_attrs=primary"), "true")).toBe(primary.port);
    expect(await klioPort(list([primary.port, standby.port], "target_session_attrs=standby"), "true")).toBe(standby.port);
  });

  it("names every server and why it was passed over when none fits, as psql refuses it too", async () => {
    const text = list([closed, standby.port], "target_session_attrs=primary");
    expect(psqlPort(text)).toBeNull();
    const e = await connect(parseConnInfo(text, { HOME: primary.baseDir })).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(KlioError);
    expect((e as KlioError).code).toBe("pg-connect");
    expect((e as Error).message).toBe(
      `no server of postgres@127.0.0.1:${closed},127.0.0.1:${standby.port} fits target_session_attrs=primary: ` +
        `127.0.0.1:${closed}: connection refused (is the server running and accepting TCP/IP connections on that address and port?); ` +
        `127.0.0.1:${standby.port}: server is in hot standby mode`,
    );
    const none = await connect(parseConnInfo(list([closed, closed]), { HOME: primary.baseDir })).catch((x: unknown) => x);
    expect((none as Error).message).toMatch(new RegExp(`^cannot connect to any server of postgres@127\\.0\\.0\\.1:${closed},127\\.0\\.0\\.1:${closed}: 127\\.0\\.0\\.1:${closed}: connection refused`));
  });

  it("gives each server its own connect_timeout, and goes on to the next when one stays silent", async () => {
    const held: Socket[] = [];
    const silent = createServer((sock) => void held.push(sock));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const silentPort = (silent.address() as AddressInfo).port;
    try {
      const started = Date.now();
      expect(await klioPort(list([silentPort, primary.port], "connect_timeout=2"))).toBe(primary.port);
      const took = Date.now() - started;
      expect(took).toBeGreaterThanOrEqual(1900);
      expect(took).toBeLessThan(10_000);
      const e = await connect(parseConnInfo(list([silentPort, silentPort], "connect_timeout=2"), { HOME: primary.baseDir })).catch((x: unknown) => x);
      expect((e as Error).message).toMatch(new RegExp(`^cannot connect to any server of .*127\\.0\\.0\\.1:${silentPort}: timeout expired after 2 s`));
    } finally {
      for (const s of held) s.destroy();
      silent.close();
    }
  });

  it("spreads connections over the list with load_balance_hosts=random", async () => {
    const text = list([standby.port, primary.port], "load_balance_hosts=random");
    const seen = new Set<number>();
    for (let i = 0; i < 24 && seen.size < 2; i++) seen.add(await klioPort(text));
    expect([...seen].sort()).toEqual([primary.port, standby.port].sort());
    // without it, always the first
    for (let i = 0; i < 3; i++) expect(await klioPort(list([standby.port, primary.port]))).toBe(standby.port);
  });

  it("follows the primary role after a promotion", async () => {
    const text = list([primary.port, standby.port], "target_session_attrs=primary");
    expect(await klioPort(text)).toBe(primary.port);
    await primary.stop("immediate");
    execFileSync(path.join(standby.binDir, "pg_ctl"), ["promote", "-w", "-D", standby.dataDir], { uid: uidOfPostgres(), stdio: "ignore" });
    expect(await klioPort(text)).toBe(standby.port);
    expect(psqlPort(text)).toBe(standby.port);
  }, 60_000);
});

function uidOfPostgres(): number | undefined {
  return process.getuid?.() === 0 ? Number(execFileSync("id", ["-u", "postgres"]).toString().trim()) : undefined;
}
