import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { createServer, type Server, type Socket } from "node:net";
import { TLSSocket } from "node:tls";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Buffer } from "node:buffer";
import { startPostgres, startStandby, PG_VERSIONS, type PgServer } from "./harness/postgres.ts";
import { connect, type ReplicationConnection, type ResultSet } from "../src/pg/replication-connection.ts";
import { parseConnInfo, type ConnInfo, type ServerConnInfo } from "../src/pg/conninfo.ts";
import { PgServerError } from "../src/pg/server-error.ts";
import { KlioError } from "../src/util/errors.ts";

const lsn = (text: string): bigint => {
  const [hi, lo] = text.split("/");
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
};
const lsnText = (v: bigint): string => `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`;

/** Standby status update ('r'): write, flush and apply position, clock, reply-requested flag. */
function statusUpdate(pos: bigint, replyRequested: boolean): Uint8Array {
  const b = new Uint8Array(34);
  const v = new DataView(b.buffer);
  b[0] = 0x72;
  v.setBigUint64(1, pos);
  v.setBigUint64(9, pos);
  v.setBigUint64(17, pos);
  v.setBigInt64(25, (BigInt(Date.now()) - 946_684_800_000n) * 1000n);
  b[33] = replyRequested ? 1 : 0;
  return b;
}

const only = (sets: ResultSet[]) => {
  expect(sets.filter((s) => s.columns.length > 0)).toHaveLength(1);
  return sets.find((s) => s.columns.length > 0)!;
};

describe.each(PG_VERSIONS)("replication connection to PostgreSQL %i", (version) => {
  let pg: PgServer;
  let ci: ConnInfo;
  let sql: ReplicationConnection; // a normal session, for what replication connections cannot do

  beforeAll(async () => {
    pg = await startPostgres({ version });
    ci = parseConnInfo(pg.connString(), { HOME: pg.baseDir });
    sql = await connect(ci, { replication: false });
  });
  afterAll(async () => {
    sql?.destroy();
    await pg?.destroy();
  });

  it("identifies the system and reads settings", async () => {
    const conn = await connect(ci);
    try {
      expect(Math.floor(conn.serverVersionNum / 10000)).toBe(version);
      expect(conn.parameters.get("application_name")).toBe("klio");
      const id = only(await conn.query("IDENTIFY_SYSTEM"));
      expect(id.command).toBe("IDENTIFY_SYSTEM");
      expect(id.columns.map((c) => c.name)).toEqual(["systemid", "timeline", "xlogpos", "dbname"]);
      // timeline is int4 on 15 and int8 on 18; as text it is the same
      expect(id.columns[1]!.typeOid).toBe(version >= 16 ? 20 : 23);
      const [systemid, timeline, xlogpos, dbname] = id.rows[0]!;
      expect(systemid).toMatch(/^\d+$/);
      expect(Number(timeline)).toBe(1);
      expect(xlogpos).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
      expect(dbname).toBeNull();
      expect(only(await conn.query("SHOW wal_segment_size")).rows).toEqual([["16MB"]]);
    } finally {
      await conn.close();
    }
    expect(conn.closed).toBe(true);
    await expect(conn.query("IDENTIFY_SYSTEM")).rejects.toMatchObject({ code: "pg-closed" });
  });

  it("connects over the Unix socket, where TLS is never attempted", async () => {
    const conn = await connect({ ...ci, servers: [{ host: pg.socketDir, port: pg.port }], sslmode: "require" });
    try {
      expect(only(await conn.query("IDENTIFY_SYSTEM")).rows).toHaveLength(1);
    } finally {
      await conn.close();
    }
  });

  it("rejects START_REPLICATION at a removed or future position and stays usable", async () => {
    // Push the server past its first segments so that 0/1000000 is gone.
    await sql.query("SELECT pg_switch_wal(); CREATE TABLE churn AS SELECT 1 AS x; SELECT pg_switch_wal(); CHECKPOINT");
    const conn = await connect(ci);
    try {
      const removed = await conn.copy("START_REPLICATION PHYSICAL 0/1000000 TIMELINE 1").catch((e: unknown) => e);
      expect(removed).toBeInstanceOf(PgServerError);
      expect(removed).toMatchObject({ code: "pg-error", sqlstate: "58P01", severity: "ERROR" });
      expect((removed as Error).message).toMatch(/requested WAL segment .* has already been removed/);

      const future = await conn.copy("START_REPLICATION PHYSICAL 7F/0 TIMELINE 1").catch((e: unknown) => e);
      expect(future).toBeInstanceOf(PgServerError);
      expect((future as PgServerError).sqlstate).toMatch(/^[0-9A-Z]{5}$/);
      expect((future as Error).message).toMatch(/ahead of the WAL flush position/);

      expect(only(await conn.query("IDENTIFY_SYSTEM")).rows).toHaveLength(1);
    } finally {
      await conn.close();
    }
  });

  it("creates and reads a physical slot; a missing timeline history is a server error", async () => {
    const conn = await connect(ci);
    try {
      const created = only(await conn.query("CREATE_REPLICATION_SLOT klio_t PHYSICAL RESERVE_WAL"));
      expect(created.rows[0]![0]).toBe("klio_t");
      const slot = only(await conn.query("READ_REPLICATION_SLOT klio_t"));
      expect(slot.columns.map((c) => c.name)).toEqual(["slot_type", "restart_lsn", "restart_tli"]);
      expect(slot.rows[0]![0]).toBe("physical");
      expect(slot.rows[0]![1]).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
      expect(only(await conn.query("READ_REPLICATION_SLOT no_such_slot")).rows).toEqual([[null, null, null]]);
      const history = await conn.query("TIMELINE_HISTORY 1").catch((e: unknown) => e);
      expect(history).toBeInstanceOf(PgServerError);
      expect((history as PgServerError).sqlstate).toBe("58P01");
      expect(only(await conn.query("SHOW wal_segment_size")).rows).toEqual([["16MB"]]);
    } finally {
      await conn.close();
    }
  });

  it("streams WAL from the slot as single, contiguous CopyData messages and takes status updates", async () => {
    const conn = await connect(ci);
    try {
      const start = lsn(only(await conn.query("READ_REPLICATION_SLOT klio_t")).rows[0]![1]!);
      await sql.query("CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g");
      const stream = await conn.copy(`START_REPLICATION SLOT klio_t PHYSICAL ${lsnText(start)} TIMELINE 1`);
      expect(stream.mode).toBe("both");
      expect(stream.preceding).toEqual([]);

      let next = start;
      let batches = 0;
      let sawKeepalive = false;
      let askedForReply = false;
      const deadline = Date.now() + 15_000;
      while ((!sawKeepalive || batches < 2) && Date.now() < deadline) {
        const batch = await stream.read(1000);
        if (batch === "timeout") {
          // Ask for a reply: the server answers a status update that requests one with a keepalive.
          await stream.write(statusUpdate(next, true));
          askedForReply = true;
          continue;
        }
        expect(batch).not.toBe("end");
        if (batch === "end") break;
        batches++;
        for (const p of batch) {
          expect([0x77, 0x6b]).toContain(p[0]); // 'w' XLogData or 'k' keepalive
          const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
          if (p[0] === 0x6b) {
            expect(p.length).toBe(18);
            sawKeepalive = true;
            continue;
          }
          expect(v.getBigUint64(1)).toBe(next); // each message starts where the last ended: none merged or lost
          next += BigInt(p.length - 25);
        }
        await stream.write(statusUpdate(next, !askedForReply));
        askedForReply = true;
      }
      expect(batches).toBeGreaterThanOrEqual(2);
      expect(sawKeepalive).toBe(true);
      expect(next).toBeGreaterThan(start);

      // The server took our flush position.
      let flushed: string | null = null;
      for (let i = 0; i < 40 && flushed !== lsnText(next); i++) {
        flushed = only(await sql.query("SELECT flush_lsn::text FROM pg_stat_replication WHERE application_name = 'klio'")).rows[0]?.[0] ?? null;
        if (flushed !== lsnText(next)) await new Promise((r) => setTimeout(r, 100));
      }
      expect(flushed).toBe(lsnText(next));

      const after = await stream.finish();
      expect(after.map((s) => s.command)).toContain("START_REPLICATION");
      expect(await stream.read()).toBe("end");
      expect(await stream.finish()).toBe(after);
      expect(only(await conn.query("IDENTIFY_SYSTEM")).rows).toHaveLength(1);
      await conn.query("DROP_REPLICATION_SLOT klio_t");
    } finally {
      await conn.close();
    }
  });

  it("takes a base backup: start position and tablespaces before the stream, end position after", async () => {
    const conn = await connect(ci);
    try {
      const stream = await conn.copy("BASE_BACKUP (LABEL 'klio-test', CHECKPOINT 'fast', MANIFEST 'yes')");
      expect(stream.mode).toBe("out");
      expect(stream.preceding).toHaveLength(2);
      const [startSet, tablespaces] = stream.preceding;
      expect(startSet!.columns.map((c) => c.name)).toEqual(["recptr", "tli"]);
      expect(startSet!.rows[0]![0]).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
      expect(tablespaces!.columns.map((c) => c.name)).toEqual(["spcoid", "spclocation", "size"]);

      // Unread data is held to about 8 MB: the socket is paused, not the memory grown.
      await new Promise((r) => setTimeout(r, 800));
      const first = await stream.read();
      if (first === "end" || first === "timeout") throw new Error(`unexpected ${first}`);
      const held = first.reduce((n, p) => n + p.length, 0);
      expect(held).toBeGreaterThan(0);
      expect(held).toBeLessThan(9 * 1024 * 1024);

      const types = new Set<string>(first.map((p) => String.fromCharCode(p[0]!)));
      expect(first[0]![0]).toBe(0x6e); // 'n': a new archive
      let total = held;
      for (;;) {
        const batch = await stream.read();
        if (batch === "end") break;
        if (batch === "timeout") continue;
        for (const p of batch) {
          types.add(String.fromCharCode(p[0]!));
          total += p.length;
        }
      }
      expect([...types].sort()).toEqual(expect.arrayContaining(["d", "m", "n"]));
      expect(total).toBeGreaterThan(9 * 1024 * 1024);
      const after = await stream.finish();
      expect(after[0]!.columns.map((c) => c.name)).toEqual(["recptr", "tli"]);
      expect(lsn(after[0]!.rows[0]![0]!)).toBeGreaterThan(lsn(startSet!.rows[0]![0]!));
      expect(after.at(-1)!.command).toBe("BASE_BACKUP");
      expect(only(await conn.query("IDENTIFY_SYSTEM")).rows).toHaveLength(1);
    } finally {
      await conn.close();
    }
  });

  it("abandons a base backup half-way with finish() and stays usable", async () => {
    const conn = await connect(ci);
    try {
      const stream = await conn.copy("BASE_BACKUP (LABEL 'abandoned', CHECKPOINT 'fast')");
      expect(await stream.read()).toBeInstanceOf(Array);
      const after = await stream.finish();
      expect(after.at(-1)!.command).toBe("BASE_BACKUP");
      expect(only(await conn.query("IDENTIFY_SYSTEM")).rows).toHaveLength(1);
    } finally {
      await conn.close();
    }
  });

  it("runs SQL in a normal session: several result sets, errors that leave it usable, COPY in", async () => {
    const sets = await sql.query("SELECT 1 AS a, 'x' AS b; SELECT NULL::text AS c FROM generate_series(1, 3)");
    expect(sets).toHaveLength(2);
    expect(sets[0]).toEqual({ command: "SELECT 1", columns: [{ name: "a", typeOid: 23 }, { name: "b", typeOid: 25 }], rows: [["1", "x"]] });
    expect(sets[1]!.rows).toEqual([[null], [null], [null]]);
    expect(await sql.query("")).toEqual([]);

    const syntax = await sql.query("SELEC 1").catch((e: unknown) => e);
    expect(syntax).toBeInstanceOf(PgServerError);
    expect(syntax).toMatchObject({ sqlstate: "42601", severity: "ERROR" });
    const mid = await sql.query("SELECT 1; SELECT 1/0; SELECT 2").catch((e: unknown) => e);
    expect(mid).toMatchObject({ sqlstate: "22012" });
    expect(only(await sql.query("SELECT 'still here' AS s")).rows).toEqual([["still here"]]);

    await sql.query("CREATE TABLE copied (a int, b text)");
    const inStream = await sql.copy("COPY copied FROM STDIN");
    expect(inStream.mode).toBe("in");
    await inStream.write(new TextEncoder().encode("1\tone\n2\ttwo\n"));
    await inStream.write(new TextEncoder().encode(`3\t${"x".repeat(100_000)}\n`));
    expect((await inStream.finish()).map((s) => s.command)).toEqual(["COPY 3"]);
    expect(only(await sql.query("SELECT count(*) FROM copied")).rows).toEqual([["3"]]);

    await expect(sql.query("COPY copied TO STDOUT")).rejects.toMatchObject({ code: "pg-usage" });
    const out = await sql.copy("COPY (SELECT 7) TO STDOUT");
    expect(await out.read()).toEqual([new TextEncoder().encode("7\n")]); // plain Uint8Array, not Buffer
    expect(await out.read()).toBe("end");
    expect((await out.finish()).map((s) => s.command)).toEqual(["COPY 1"]);

    const notices: string[] = [];
    const withNotices = await connect(ci, { replication: false, onNotice: (n) => notices.push(`${n.severity}: ${n.message}`) });
    await withNotices.query("DO $$ BEGIN RAISE NOTICE 'hello'; END $$");
    await withNotices.close();
    expect(notices).toEqual(["NOTICE: hello"]);
  });

  it("says why when the server ends an idle connection (pg_terminate_backend)", async () => {
    const conn = await connect({ ...ci, application_name: "terminate-me" });
    await sql.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'terminate-me'");
    for (let i = 0; i < 50 && !conn.closed; i++) await new Promise((r) => setTimeout(r, 20));
    expect(conn.closed).toBe(true);
    const err = await conn.query("IDENTIFY_SYSTEM").catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "pg-closed" });
    expect((err as Error).message).toMatch(/^the server closed the connection to postgres@127\.0\.0\.1:\d+: terminating connection due to administrator command$/);
    expect((err as Error).cause).toMatchObject({ sqlstate: "57P01", severity: "FATAL" });
  });

  it("refuses a second command while COPY is running, and reads with a timeout", async () => {
    const conn = await connect(ci);
    try {
      const id = only(await conn.query("IDENTIFY_SYSTEM")).rows[0]!;
      const stream = await conn.copy(`START_REPLICATION PHYSICAL ${id[2]} TIMELINE 1`);
      await expect(conn.query("IDENTIFY_SYSTEM")).rejects.toMatchObject({ code: "pg-busy" });
      const t0 = Date.now();
      expect(await stream.read(200)).toBe("timeout");
      expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
      const pending = stream.read();
      const finished = stream.finish();
      expect(await pending).toBe("end");
      await finished;
      expect(only(await conn.query("IDENTIFY_SYSTEM")).rows).toHaveLength(1);
    } finally {
      await conn.close();
    }
  });

  it("rejects read() with pg-closed when the server dies mid-copy, and every later call too", async () => {
    const conn = await connect(ci);
    const id = only(await conn.query("IDENTIFY_SYSTEM")).rows[0]!;
    const stream = await conn.copy(`START_REPLICATION PHYSICAL ${id[2]} TIMELINE 1`);
    const pending = stream.read().then(
      (v) => v,
      (e: unknown) => e,
    );
    sql.destroy();
    await pg.kill9();
    const err = await pending;
    expect(err).toBeInstanceOf(KlioError);
    expect(err).toMatchObject({ code: "pg-closed" });
    expect((err as Error).message).toContain(`127.0.0.1:${pg.port}`);
    expect(conn.closed).toBe(true);
    await expect(stream.read()).rejects.toMatchObject({ code: "pg-closed" });
    await expect(stream.write(statusUpdate(0n, false))).rejects.toMatchObject({ code: "pg-closed" });
    await expect(stream.finish()).rejects.toMatchObject({ code: "pg-closed" });
    await expect(conn.query("IDENTIFY_SYSTEM")).rejects.toMatchObject({ code: "pg-closed" });
    await conn.close();
  });
});

describe.each(PG_VERSIONS)("timeline switch on PostgreSQL %i", (version) => {
  let primary: PgServer;
  let standby: PgServer;
  afterAll(async () => {
    await standby?.destroy();
    await primary?.destroy();
  });

  it("ends the old timeline's stream with CopyDone and names the next timeline in the result that follows", async () => {
    primary = await startPostgres({ version });
    standby = await startStandby(primary);
    const ci = parseConnInfo(standby.connString(), { HOME: standby.baseDir });
    const admin = await connect(ci, { replication: false });
    expect(only(await admin.query("SELECT pg_promote()")).rows).toEqual([["t"]]);
    await admin.close();

    const conn = await connect(ci);
    try {
      expect(only(await conn.query("IDENTIFY_SYSTEM")).rows[0]![1]).toBe("2");
      const history = only(await conn.query("TIMELINE_HISTORY 2")).rows[0]!;
      expect(history[0]).toBe("00000002.history");
      const switchPoint = /^1\t([0-9A-F]+\/[0-9A-F]+)/m.exec(history[1]!)![1]!;
      const segmentStart = lsn(switchPoint) & ~0xffffffn;

      // From inside the old timeline: WAL up to the switch point, CopyDone, then the next timeline.
      const stream = await conn.copy(`START_REPLICATION PHYSICAL ${lsnText(segmentStart)} TIMELINE 1`);
      let next = segmentStart;
      for (;;) {
        const batch = await stream.read(10_000);
        expect(batch).not.toBe("timeout");
        if (batch === "end" || batch === "timeout") break;
        for (const p of batch) if (p[0] === 0x77) next = new DataView(p.buffer, p.byteOffset).getBigUint64(1) + BigInt(p.length - 25);
      }
      expect(next).toBe(lsn(switchPoint));
      const after = await stream.finish();
      const nextTimeline = after.find((s) => s.columns.length === 2)!;
      expect(nextTimeline.columns.map((c) => c.name)).toEqual(["next_tli", "next_tli_startpos"]);
      expect(nextTimeline.rows).toEqual([["2", switchPoint]]);

      // Exactly at the end of the old timeline the server skips COPY: an ended stream, the same answer.
      const skipped = await conn.copy(`START_REPLICATION PHYSICAL ${switchPoint} TIMELINE 1`);
      expect(skipped.preceding).toEqual([]);
      expect(await skipped.read()).toBe("end");
      expect((await skipped.finish()).find((s) => s.columns.length === 2)!.rows).toEqual([["2", switchPoint]]);
      expect(only(await conn.query("IDENTIFY_SYSTEM")).rows[0]![1]).toBe("2");
    } finally {
      await conn.close();
    }
  });
});

// ------------------------------------------------------------------ a scripted server

const enc = new TextEncoder();
function backend(type: string, ...parts: (string | number | Uint8Array)[]): Uint8Array {
  const bytes = parts.map((p) => (typeof p === "string" ? enc.encode(p + "\0") : typeof p === "number" ? new Uint8Array([p >>> 24, p >>> 16, p >>> 8, p]) : p));
  const len = bytes.reduce((n, b) => n + b.length, 4);
  const out = new Uint8Array(len + 1);
  out[0] = type.charCodeAt(0);
  new DataView(out.buffer).setInt32(1, len);
  let at = 5;
  for (const b of bytes) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}
const int16 = (n: number) => new Uint8Array([n >> 8, n]);
const READY = backend("Z", new Uint8Array([0x49]));
const HELLO = [backend("R", 0), backend("S", "server_version", "16.2"), backend("K", 42, 7), READY];
const rowDescription = (...names: string[]) =>
  backend("T", int16(names.length), ...names.flatMap((n) => [n, 0, int16(0), 25, int16(-1), -1, int16(0)]));
const dataRow = (...values: string[]) => backend("D", int16(values.length), ...values.flatMap((v) => [enc.encode(v).length, enc.encode(v)]));
const copyBoth = backend("W", new Uint8Array([0]), int16(0));
const copyData = (payload: Uint8Array) => backend("d", payload);
const errorResponse = (code: string, message: string) => backend("E", "SERROR", "VERROR", `C${code}`, `M${message}`, new Uint8Array([0]));

/**
 * A server that answers the startup with HELLO, each query with what `answer` writes, and the
 * client's CopyDone with its own (unless `sentCopyDone` has the socket). With `tls`, it accepts
 * SSLRequest and talks TLS from then on; without, it refuses it ('N').
 */
const sentCopyDone = new WeakSet<Socket>();
async function scripted(answer: (sql: string, socket: Socket) => void, tls?: { key: Buffer; cert: Buffer }): Promise<{ server: Server; ci: ServerConnInfo }> {
  const server = createServer((plain) => serve(plain));
  function serve(socket: Socket): void {
    let buf = new Uint8Array(0);
    let started = false;
    socket.on("error", () => {});
    socket.on("data", function onData(chunk: Uint8Array) {
      const joined = new Uint8Array(buf.length + chunk.length);
      joined.set(buf);
      joined.set(chunk, buf.length);
      buf = joined;
      for (;;) {
        const head = started ? 1 : 0;
        if (buf.length < head + 4) return;
        const len = new DataView(buf.buffer, buf.byteOffset).getInt32(head);
        if (buf.length < head + len) return;
        const type = started ? String.fromCharCode(buf[0]!) : "";
        const body = buf.subarray(head + 4, head + len);
        buf = buf.subarray(head + len);
        if (!started && len === 8 && new DataView(body.buffer, body.byteOffset).getInt32(0) === 80877103) {
          if (!tls) {
            socket.write("N");
            continue;
          }
          socket.off("data", onData);
          socket.write("S");
          serve(new TLSSocket(socket, { isServer: true, ...tls }));
          return;
        } else if (!started) {
          started = true;
          for (const m of HELLO) socket.write(m);
        } else if (type === "Q") {
          answer(new TextDecoder().decode(body.subarray(0, body.length - 1)), socket);
        } else if (type === "c") {
          if (!sentCopyDone.has(socket)) socket.write(backend("c"));
          socket.write(backend("C", "START_REPLICATION"));
          socket.write(READY);
        }
      }
    });
  }
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return { server, ci: { host: "127.0.0.1", port, user: "u", dbname: "u", sslmode: "disable", application_name: "klio" } };
}

describe("against a scripted server", () => {
  it("delivers everything that arrived together as one batch of separate payloads", async () => {
    const { server, ci } = await scripted((_sql, s) => {
      const all = [copyBoth, ...Array.from({ length: 50 }, (_, i) => copyData(new Uint8Array([0x77, i])))];
      s.write(Buffer.concat(all));
    });
    try {
      const conn = await connect(ci);
      expect(conn.serverVersionNum).toBe(160002);
      const stream = await conn.copy("START_REPLICATION PHYSICAL 0/0");
      await new Promise((r) => setTimeout(r, 50));
      const batch = await stream.read();
      expect(batch).toHaveLength(50);
      expect((batch as Uint8Array[]).map((p) => p[1])).toEqual(Array.from({ length: 50 }, (_, i) => i));
      expect((await stream.finish()).map((s) => s.command)).toEqual(["START_REPLICATION"]);
      await conn.close();
    } finally {
      server.close();
    }
  });

  it("holds back reading above 8 MB of unread data", async () => {
    const payload = new Uint8Array(128 * 1024).fill(0x77);
    let written = 0;
    let blocked = false;
    const { server, ci } = await scripted((_sql, s) => {
      s.write(copyBoth);
      const more = () => {
        while (written < 64 * 1024 * 1024) {
          written += payload.length;
          if (!s.write(copyData(payload))) {
            blocked = true;
            s.once("drain", more);
            return;
          }
        }
        s.write(backend("c"));
        sentCopyDone.add(s);
      };
      more();
    });
    try {
      const conn = await connect(ci);
      const stream = await conn.copy("START_REPLICATION PHYSICAL 0/0");
      // Wait for the steady state (the server blocked and writing nothing more), not for a
      // fixed time: on a loaded machine the client may need long to read its first 8 MB.
      const deadline = Date.now() + 20_000;
      for (;;) {
        const before = written;
        await new Promise((r) => setTimeout(r, 300));
        if (blocked && written === before) break;
        if (Date.now() > deadline) throw new Error(`the server never blocked (wrote ${written} bytes)`);
      }
      const first = (await stream.read()) as Uint8Array[];
      const held = first.reduce((n, p) => n + p.length, 0);
      expect(held).toBeGreaterThan(8 * 1024 * 1024);
      expect(held).toBeLessThan(10 * 1024 * 1024);
      expect(written).toBeLessThan(64 * 1024 * 1024);
      let total = held;
      for (;;) {
        const b = await stream.read();
        if (b === "end") break;
        if (b !== "timeout") for (const p of b) total += p.length;
      }
      expect(total).toBe(64 * 1024 * 1024);
      await stream.finish();
      await conn.close();
    } finally {
      server.close();
    }
  });

  it("hands over data that came before an ErrorResponse, then the error; the connection stays usable", async () => {
    const { server, ci } = await scripted((sql, s) => {
      if (sql.startsWith("START")) {
        s.write(copyBoth);
        s.write(copyData(new Uint8Array([0x77, 1])));
        s.write(errorResponse("XX000", "stream broke"));
        s.write(READY);
      } else {
        s.write(rowDescription("a"));
        s.write(dataRow("ok"));
        s.write(backend("C", "SELECT 1"));
        s.write(READY);
      }
    });
    try {
      const conn = await connect(ci);
      const stream = await conn.copy("START_REPLICATION PHYSICAL 0/0");
      await new Promise((r) => setTimeout(r, 50));
      expect(await stream.read()).toHaveLength(1);
      await expect(stream.read()).rejects.toMatchObject({ code: "pg-error", sqlstate: "XX000", message: "stream broke" });
      await expect(stream.finish()).rejects.toBeInstanceOf(PgServerError);
      expect((await conn.query("SELECT 'ok'"))[0]!.rows).toEqual([["ok"]]);
      await conn.close();
    } finally {
      server.close();
    }
  });

  it("gives an ended stream when the server answers START_REPLICATION without COPY (end of an old timeline)", async () => {
    const { server, ci } = await scripted((_sql, s) => {
      s.write(rowDescription("next_tli", "next_tli_startpos"));
      s.write(dataRow("2", "0/3000000"));
      s.write(backend("C", "SELECT"));
      s.write(backend("C", "START_REPLICATION"));
      s.write(READY);
    });
    try {
      const conn = await connect(ci);
      const stream = await conn.copy("START_REPLICATION PHYSICAL 0/3000000 TIMELINE 1");
      expect(await stream.read()).toBe("end");
      const after = await stream.finish();
      expect(after[0]!.rows).toEqual([["2", "0/3000000"]]);
      await conn.close();
    } finally {
      server.close();
    }
  });

  it("turns garbage from the server into pg-protocol and closes, without crashing", async () => {
    const { server, ci } = await scripted((_sql, s) => s.write(backend("?", "what")));
    try {
      const conn = await connect(ci);
      await expect(conn.query("SELECT 1")).rejects.toMatchObject({ code: "pg-protocol" });
      expect(conn.closed).toBe(true);
      await expect(conn.query("SELECT 1")).rejects.toMatchObject({ code: "pg-closed" });
    } finally {
      server.close();
    }
  });

  describe("CopyData lifetime: a batch is intact until the next read(), through more than the arena holds", () => {
    // The connection copies CopyData into one 32 MB arena; a batch's regions are reused only
    // after the next read(). A payload larger than the arena is allocated on its own.
    let certs: { key: Buffer; cert: Buffer };
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(path.join(tmpdir(), "klio-tls-"));
      execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "k.pem", "-out", "c.pem", "-days", "2", "-subj", "/CN=localhost"], { cwd: dir, stdio: "pipe" });
      certs = { key: readFileSync(path.join(dir, "k.pem")), cert: readFileSync(path.join(dir, "c.pem")) };
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    // Like XLogData: mostly 128 KiB + 25 bytes (they span reads), small ones between, and one
    // of 40 MB (more than the arena). Every payload starts with its index; its bytes follow from it.
    const MB = 1024 * 1024;
    const sizes: number[] = [];
    for (let i = 0, total = 0; total < 100 * MB; i++) {
      const size = i === 300 ? 40 * MB : i % 7 === 3 ? 18 + (i % 50) : i % 11 === 5 ? 70_000 + i : 128 * 1024 + 25;
      sizes.push(size);
      total += size;
    }
    const byteOf = (index: number, offset: number) => (index * 13 + offset * 31) & 0xff;
    function payload(index: number): Uint8Array {
      const p = new Uint8Array(sizes[index]!);
      for (let i = 4; i < p.length; i++) p[i] = byteOf(index, i);
      new DataView(p.buffer).setUint32(0, index);
      return p;
    }
    function check(p: Uint8Array, index: number): void {
      expect(new DataView(p.buffer, p.byteOffset).getUint32(0)).toBe(index);
      expect(p.length).toBe(sizes[index]);
      for (let i = 4; i < p.length; i++) if (p[i] !== byteOf(index, i)) expect.fail(`payload ${index} byte ${i} is ${p[i]}, not ${byteOf(index, i)}`);
    }

    it.each([
      ["plain TCP, read into one reused buffer", "disable", false],
      ["TLS (sslmode=require): 'data' events", "require", true],
      ["TLS on a socket that reads with onread (sslmode=prefer)", "prefer", true],
    ] as const)("%s", async (_name, sslmode, withTls) => {
      // Given a server that writes 100 MB of CopyData as fast as the client takes it,
      const { server, ci } = await scripted((_sql, s) => {
        s.write(copyBoth);
        let i = 0;
        const more = () => {
          while (i < sizes.length) {
            if (!s.write(copyData(payload(i++)))) return void s.once("drain", more);
          }
          s.write(backend("c"));
          sentCopyDone.add(s);
        };
        more();
      }, withTls ? certs : undefined);
      try {
        const conn = await connect({ ...ci, sslmode });
        const stream = await conn.copy("START_REPLICATION PHYSICAL 0/0");
        // when the client first lets it queue up to the backpressure limit, and then holds each
        // batch while more arrives before it checks it,
        await new Promise((r) => setTimeout(r, 300));
        let next = 0;
        let batches = 0;
        for (;;) {
          const batch = await stream.read();
          if (batch === "end") break;
          if (batch === "timeout") continue;
          batches++;
          await new Promise((r) => setTimeout(r, batches % 4 === 0 ? 20 : 0));
          // then every payload of the batch is whole and in order, with not a byte overwritten.
          for (const p of batch) check(p, next++);
        }
        expect(next).toBe(sizes.length);
        expect(batches).toBeGreaterThan(10);
        await stream.finish();
        await conn.close();
      } finally {
        server.close();
      }
    }, 60_000);
  });

  it("rejects a pending query with pg-closed when the server hangs up", async () => {
    const { server, ci } = await scripted((_sql, s) => s.destroy());
    try {
      const conn = await connect(ci);
      const err = await conn.query("SELECT 1").catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "pg-closed" });
      expect((err as Error).message).toMatch(/closed the connection|lost the connection/);
    } finally {
      server.close();
    }
  });
});
