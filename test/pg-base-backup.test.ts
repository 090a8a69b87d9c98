// BASE_BACKUP against real PostgreSQL 15 and 18, with a tablespace: the archives parse with
// the tar reader and hold every file of PostgreSQL's own backup_manifest with its size and
// CRC-32C; positions are sane; server errors are PgServerError; stopping early is clean.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { createHash } from "node:crypto";
import { Buffer } from "node:buffer";
import { rmSync } from "node:fs";
import { startPostgres, startStandby, pgTempDir, PG_VERSIONS, type PgServer } from "./harness/postgres.ts";
import { connect, type ReplicationConnection } from "../src/pg/replication-connection.ts";
import { parseConnInfo, type ConnInfo } from "../src/pg/conninfo.ts";
import { PgServerError } from "../src/pg/server-error.ts";
import { formatLsn, parseLsn } from "../src/pg/lsn.ts";
import { runBaseBackup, baseBackupCommand, type BaseBackupEvent, type BaseBackupOptions } from "../src/pg/base-backup.ts";
import { readTar, type TarEntry } from "../src/backup/tar-reader.ts";

// CRC-32C (Castagnoli), as PostgreSQL's backup_manifest uses it.
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();
function crc32cUpdate(crc: number, b: Uint8Array): number {
  for (let i = 0; i < b.length; i++) crc = CRC_TABLE[(crc ^ b[i]!) & 0xff]! ^ (crc >>> 8);
  return crc;
}
/** The manifest's hex: the uint32 as the server has it in memory (little-endian here). */
function crcHex(crc: number): string {
  const v = (crc ^ 0xffffffff) >>> 0;
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24].map((x) => x.toString(16).padStart(2, "0")).join("");
}

interface FileSeen {
  entry: TarEntry;
  crc: string;
}

interface Backup {
  events: BaseBackupEvent["kind"][];
  start: Extract<BaseBackupEvent, { kind: "start" }>;
  archives: Extract<BaseBackupEvent, { kind: "archive" }>[];
  /** Data directory relative path → what the tar said; tablespace files under pg_tblspc/<oid>/. */
  files: Map<string, FileSeen>;
  texts: Map<string, string>;
  dataBytes: number;
  progress: number[];
  manifest: Uint8Array;
  end: Extract<BaseBackupEvent, { kind: "end" }>;
}

/** Runs a backup and reads every archive with readTar, as `klio backup run` does. */
async function takeBackup(conn: ReplicationConnection, opts: BaseBackupOptions = { label: "test" }): Promise<Backup> {
  const it = runBaseBackup(conn, opts)[Symbol.asyncIterator]();
  let ahead: BaseBackupEvent | undefined;
  const b: Partial<Backup> & { events: BaseBackupEvent["kind"][]; archives: Backup["archives"]; files: Backup["files"]; texts: Backup["texts"]; progress: number[] } = {
    events: [], archives: [], files: new Map(), texts: new Map(), progress: [], dataBytes: 0,
  };
  const next = async (): Promise<BaseBackupEvent | undefined> => {
    if (ahead !== undefined) {
      const e = ahead;
      ahead = undefined;
      return e;
    }
    const r = await it.next();
    if (r.done) return undefined;
    if (b.events.at(-1) !== r.value.kind) b.events.push(r.value.kind);
    return r.value;
  };
  async function* data(): AsyncGenerator<Uint8Array> {
    for (;;) {
      const ev = await next();
      if (ev === undefined) return;
      if (ev.kind === "data") {
        b.dataBytes! += ev.bytes.length;
        yield ev.bytes;
      } else if (ev.kind === "progress") {
        b.progress.push(ev.doneBytes);
      } else {
        ahead = ev;
        return;
      }
    }
  }
  for (;;) {
    const ev = await next();
    if (ev === undefined) break;
    switch (ev.kind) {
      case "start":
        b.start = ev;
        break;
      case "progress":
        b.progress.push(ev.doneBytes);
        break;
      case "archive":
        b.archives.push(ev);
        for await (const { entry, content } of readTar(data())) {
          const key = ev.tablespaceOid === null ? entry.path : `pg_tblspc/${ev.tablespaceOid}/${entry.path}`;
          let crc = 0xffffffff;
          const text: Uint8Array[] = [];
          for await (const bytes of content) {
            crc = crc32cUpdate(crc, bytes);
            if (key === "backup_label" || key === "tablespace_map") text.push(bytes.slice());
          }
          if (text.length) b.texts.set(key, Buffer.concat(text).toString("utf8"));
          expect(b.files.has(key), `${key} appears twice`).toBe(false);
          b.files.set(key, { entry, crc: crcHex(crc) });
        }
        break;
      case "manifest":
        b.manifest = ev.bytes;
        break;
      case "end":
        b.end = ev;
        break;
      case "data":
        throw new Error("data outside an archive");
    }
  }
  return b as Backup;
}

interface ManifestFile {
  Path?: string;
  "Encoded-Path"?: string;
  Size: number;
  "Checksum-Algorithm"?: string;
  Checksum?: string;
}

function parseManifest(bytes: Uint8Array): { Files: ManifestFile[]; "WAL-Ranges": { Timeline: number; "Start-LSN": string; "End-LSN": string }[]; "Manifest-Checksum": string } {
  return JSON.parse(new TextDecoder().decode(bytes));
}

describe.each(PG_VERSIONS)("BASE_BACKUP on PostgreSQL %i", (version) => {
  let pg: PgServer;
  let ci: ConnInfo;
  let tsDir: string;
  let tsOid: number;

  beforeAll(async () => {
    pg = await startPostgres({ version });
    ci = parseConnInfo(pg.connString(), { HOME: pg.baseDir });
    tsDir = pgTempDir("klio-ts-");
    const sql = pg.sql();
    await sql.unsafe(`CREATE TABLESPACE extra LOCATION '${tsDir}'`);
    await sql.unsafe("CREATE TABLE in_extra (id int primary key, v text) TABLESPACE extra");
    await sql.unsafe("INSERT INTO in_extra SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 20000) g");
    await sql.unsafe("CREATE TABLE in_base AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g");
    tsOid = Number((await sql.unsafe("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'"))[0]!.oid);
  });
  afterAll(async () => {
    await pg?.destroy();
    if (tsDir) rmSync(tsDir, { recursive: true, force: true });
  });

  it("streams a base backup whose archives hold every file of the backup_manifest", async () => {
    const sql = pg.sql();
    const before = parseLsn((await sql.unsafe("SELECT pg_current_wal_lsn() AS l"))[0]!.l);
    const conn = await connect(ci);
    let b: Backup;
    try {
      b = await takeBackup(conn, { label: "klio test 'quoted'", manifestChecksums: "CRC32C" });
      // The connection is usable after the backup.
      expect((await conn.query("IDENTIFY_SYSTEM"))[0]!.rows).toHaveLength(1);
    } finally {
      await conn.close();
    }
    const after = parseLsn((await sql.unsafe("SELECT pg_current_wal_lsn() AS l"))[0]!.l);

    // Events in order; the tablespace's archive named by its oid (the server sends it before base.tar).
    expect(b.events[0]).toBe("start");
    expect(b.events.slice(-2)).toEqual(["manifest", "end"]);
    expect(b.archives).toEqual([
      { kind: "archive", name: `${tsOid}.tar`, tablespaceOid: tsOid, tablespaceLocation: tsDir },
      { kind: "archive", name: "base.tar", tablespaceOid: null, tablespaceLocation: null },
    ]);
    expect(b.start.tablespaces).toEqual([{ oid: tsOid, location: tsDir, sizeBytes: expect.any(Number) }]);
    expect(b.start.tablespaces[0]!.sizeBytes).toBeGreaterThan(1024 * 1024);
    expect(b.start.totalBytes).toBeGreaterThan(20 * 1024 * 1024);

    // Positions: the backup starts at or after where the server was, ends at or after its
    // start and no later than where the server is now.
    expect(b.start.timeline).toBe(1);
    expect(b.end.timeline).toBe(1);
    expect(b.start.startLsn).toBeGreaterThanOrEqual(before);
    expect(b.end.endLsn).toBeGreaterThanOrEqual(b.start.startLsn);
    expect(b.end.endLsn).toBeLessThanOrEqual(after);
    expect(b.texts.get("backup_label")).toContain(`START WAL LOCATION: ${formatLsn(b.start.startLsn)} `);
    expect(b.texts.get("backup_label")).toContain("LABEL: klio test 'quoted'\n");
    expect(b.texts.get("tablespace_map")).toBe(`${tsOid} ${tsDir}\n`);

    // Progress: rising, and the last report is every archive byte sent.
    expect(b.progress.length).toBeGreaterThanOrEqual(2);
    expect([...b.progress].sort((x, y) => x - y)).toEqual(b.progress);
    expect(b.progress.at(-1)).toBe(b.dataBytes);

    // The manifest: intact (its own SHA-256), and every file in it is in the archives with
    // its size and CRC-32C; and no file of the archives is missing from it.
    const text = new TextDecoder().decode(b.manifest);
    const checksumAt = text.lastIndexOf('"Manifest-Checksum"');
    expect(createHash("sha256").update(b.manifest.subarray(0, checksumAt)).digest("hex")).toBe(parseManifest(b.manifest)["Manifest-Checksum"]);
    const manifest = parseManifest(b.manifest);
    expect(manifest["WAL-Ranges"]).toEqual([{ Timeline: 1, "Start-LSN": formatLsn(b.start.startLsn), "End-LSN": formatLsn(b.end.endLsn) }]);
    const listed = new Set<string>();
    for (const f of manifest.Files) {
      const p = f.Path ?? Buffer.from(f["Encoded-Path"]!, "hex").toString("utf8");
      listed.add(p);
      const seen = b.files.get(p);
      expect(seen, `${p} is in the manifest but not in the archives`).toBeDefined();
      expect(seen!.entry.type).toBe("file");
      expect(seen!.entry.size, p).toBe(f.Size);
      expect(f["Checksum-Algorithm"]).toBe("CRC32C");
      expect(seen!.crc, p).toBe(f.Checksum);
    }
    const tarFiles = [...b.files].filter(([, f]) => f.entry.type === "file").map(([p]) => p);
    expect(tarFiles.filter((p) => !listed.has(p))).toEqual([]);
    expect(manifest.Files.length).toBeGreaterThan(500);
    // The tablespace's files came in its own archive, the table's among them.
    expect(tarFiles.filter((p) => p.startsWith(`pg_tblspc/${tsOid}/PG_${version}_`)).length).toBeGreaterThan(2);
    // WAL is not in the backup (the receiver has it): pg_wal is there, empty.
    expect(b.files.get("pg_wal")?.entry.type).toBe("directory");
    expect(tarFiles.filter((p) => p.startsWith("pg_wal/"))).toEqual([]);
  });

  it("surfaces a bad option as PgServerError and leaves the connection usable", async () => {
    const conn = await connect(ci);
    try {
      const rate = takeBackup(conn, { label: "slow", maxRateKbps: 1 });
      await expect(rate).rejects.toBeInstanceOf(PgServerError);
      await expect(rate).rejects.toThrow(/MAX_RATE|out of range/i);
      const label = takeBackup(conn, { label: "x".repeat(2000) });
      await expect(label).rejects.toBeInstanceOf(PgServerError);
      await expect(label).rejects.toThrow(/label too long/);
      expect(conn.closed).toBe(false);
      expect((await conn.query("IDENTIFY_SYSTEM"))[0]!.rows).toHaveLength(1);
      // A label the backup_label file cannot hold is refused before anything is sent.
      expect(() => baseBackupCommand({ label: "two\nlines" })).toThrow(expect.objectContaining({ code: "bad-label" }));
    } finally {
      await conn.close();
    }
  });

  it("two backups at once both complete (PostgreSQL 15+ backups are non-exclusive)", async () => {
    const [c1, c2] = [await connect(ci), await connect(ci)];
    try {
      const [b1, b2] = await Promise.all([takeBackup(c1, { label: "one" }), takeBackup(c2, { label: "two" })]);
      expect(b1.end.endLsn).toBeGreaterThanOrEqual(b1.start.startLsn);
      expect(b2.end.endLsn).toBeGreaterThanOrEqual(b2.start.startLsn);
    } finally {
      await c1.close();
      await c2.close();
    }
  });

  it("stopping early closes the connection, and the server ends the backup", async () => {
    const sql = pg.sql();
    for (const stopAt of ["start", "data"] as const) {
      const conn = await connect(ci);
      let seen = 0;
      for await (const ev of runBaseBackup(conn, { label: `stopped at ${stopAt}` })) {
        seen++;
        if (ev.kind === stopAt) break;
      }
      expect(seen).toBeGreaterThan(0);
      expect(conn.closed).toBe(true);
      await expect(conn.query("IDENTIFY_SYSTEM")).rejects.toMatchObject({ code: "pg-closed" });
      // The server notices and aborts the backup: no base backup left running.
      for (let i = 0; ; i++) {
        const [{ n }] = await sql.unsafe("SELECT count(*)::int AS n FROM pg_stat_progress_basebackup");
        if (n === 0) break;
        expect(i, "a base backup is still running on the server").toBeLessThan(100);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    // And the next backup works.
    const conn = await connect(ci);
    try {
      const b = await takeBackup(conn);
      expect(b.end.endLsn).toBeGreaterThanOrEqual(b.start.startLsn);
    } finally {
      await conn.close();
    }
  });

  it("a standby promoted during the backup fails it with the server's error", async () => {
    const standby = await startStandby(pg);
    const sci = parseConnInfo(standby.connString(), { HOME: standby.baseDir });
    const conn = await connect(sci);
    try {
      const it = runBaseBackup(conn, { label: "on standby" })[Symbol.asyncIterator]();
      // Into the first archive, then promote while the server is still sending.
      for (;;) {
        const r = await it.next();
        if (r.done || r.value.kind === "data") break;
      }
      const admin = standby.sql();
      await admin.unsafe("SELECT pg_promote()");
      const rest = (async () => {
        for (;;) if ((await it.next()).done) return;
      })();
      await expect(rest).rejects.toBeInstanceOf(PgServerError);
      await expect(rest).rejects.toThrow(/promoted during online backup/);
      expect(conn.closed).toBe(false);
      expect((await conn.query("IDENTIFY_SYSTEM"))[0]!.rows).toHaveLength(1);
    } finally {
      await conn.close();
      await standby.destroy();
    }
  });
});
