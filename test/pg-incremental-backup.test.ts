// An incremental BASE_BACKUP on a real PostgreSQL 18, through klio's own protocol code: what
// the server refuses (summarize_wal off, summaries that do not reach back to the prior
// backup, no UPLOAD_MANIFEST, a manifest of another system or timeline) arrives as
// PgServerError with the server's words; once WAL is summarized, the backup holds
// INCREMENTAL files that parse, whose blocks are the relation files' blocks, in base.tar and in
// a tablespace's archive, each listed in the backup_manifest with its size and CRC-32C as sent.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { createHash } from "node:crypto";
import { Buffer } from "node:buffer";
import { readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { startPostgres, pgTempDir, type PgServer } from "./harness/postgres.ts";
import { connect, type ReplicationConnection } from "../src/pg/replication-connection.ts";
import { parseConnInfo, type ConnInfo } from "../src/pg/conninfo.ts";
import { PgServerError } from "../src/pg/server-error.ts";
import { formatLsn, type Lsn } from "../src/pg/lsn.ts";
import { runBaseBackup, uploadManifest, type BaseBackupEvent, type BaseBackupOptions } from "../src/pg/base-backup.ts";
import { readTar } from "../src/backup/tar-reader.ts";
import { incrementalRelationPath, readIncrementalFile } from "../src/backup/incremental-file.ts";
import { crc32cFinal, crc32cInit, crc32cManifestHex, crc32cUpdate } from "../src/backup/crc32c.ts";

const BLCKSZ = 8192;

interface SentFile {
  /** As the data directory (and the manifest) names it: tablespace files under pg_tblspc/<oid>/. */
  path: string;
  size: number;
  crc: string;
  /** INCREMENTAL files: what readIncrementalFile made of them. */
  incremental?: { relationPath: string; truncationBlockLength: number; blocks: Map<number, Uint8Array> };
  /** backup_label's text. */
  text?: string;
}

interface Backup {
  startLsn: Lsn;
  files: Map<string, SentFile>;
  manifest: Uint8Array;
}

/** Runs BASE_BACKUP on `conn`, reading every archive with readTar and every INCREMENTAL entry with readIncrementalFile. */
async function takeBackup(conn: ReplicationConnection, opts: BaseBackupOptions): Promise<Backup> {
  const it = runBaseBackup(conn, opts)[Symbol.asyncIterator]();
  let ahead: BaseBackupEvent | undefined;
  async function* archiveData(): AsyncGenerator<Uint8Array> {
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      if (r.value.kind === "data") yield r.value.bytes;
      else if (r.value.kind !== "progress") {
        ahead = r.value; // the next archive, or the manifest
        return;
      }
    }
  }
  const b: Partial<Backup> & { files: Map<string, SentFile> } = { files: new Map() };
  for (;;) {
    const ev = ahead ?? (await it.next()).value;
    ahead = undefined;
    if (ev === undefined) break;
    if (ev.kind === "start") b.startLsn = ev.startLsn;
    if (ev.kind === "manifest") b.manifest = ev.bytes;
    if (ev.kind !== "archive") continue;
    for await (const { entry, content } of readTar(archiveData())) {
      if (entry.type !== "file") continue;
      const file: SentFile = { path: ev.tablespaceOid === null ? entry.path : `pg_tblspc/${ev.tablespaceOid}/${entry.path}`, size: entry.size, crc: "" };
      let crc = crc32cInit;
      const text: Uint8Array[] = [];
      async function* counted(): AsyncGenerator<Uint8Array> {
        for await (const bytes of content) {
          crc = crc32cUpdate(crc, bytes);
          if (entry.path === "backup_label") text.push(bytes.slice());
          yield bytes;
        }
      }
      if (incrementalRelationPath(entry.path) !== null) {
        const blocks = new Map<number, Uint8Array>();
        for await (const e of readIncrementalFile(entry.path, counted())) {
          if (e.kind === "header") file.incremental = { relationPath: e.relationPath, truncationBlockLength: e.truncationBlockLength, blocks };
          else blocks.set(e.blockNumber, e.page.slice());
        }
      } else {
        for await (const _ of counted()) {
          // read for the checksum only
        }
      }
      file.crc = crc32cManifestHex(crc32cFinal(crc));
      if (text.length > 0) file.text = Buffer.concat(text).toString("utf8");
      b.files.set(file.path, file);
    }
  }
  return b as Backup;
}

interface Manifest {
  Files: { Path: string; Size: number; "Checksum-Algorithm": string; Checksum: string }[];
  "WAL-Ranges": { Timeline: number; "Start-LSN": string; "End-LSN": string }[];
}

function parseManifest(bytes: Uint8Array): Manifest {
  return JSON.parse(new TextDecoder().decode(bytes)) as Manifest;
}

/** `manifest` with `edit` applied to its text and its Manifest-Checksum (SHA-256 of what precedes it) made right again. */
function editedManifest(manifest: Uint8Array, edit: (text: string) => string): Uint8Array {
  const text = new TextDecoder().decode(manifest);
  const body = edit(text.slice(0, text.lastIndexOf('"Manifest-Checksum"')));
  return new TextEncoder().encode(`${body}"Manifest-Checksum": "${createHash("sha256").update(body).digest("hex")}"}\n`);
}

async function serverError(p: Promise<unknown>): Promise<PgServerError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(PgServerError);
  return e as PgServerError;
}

describe("incremental BASE_BACKUP on PostgreSQL 18", () => {
  let pg: PgServer;
  let ci: ConnInfo;
  let tsDir: string;
  let tsOid: number;
  /** A full backup taken while WAL was not summarized. */
  let unsummarized: Backup;

  beforeAll(async () => {
    // No autovacuum: nothing but the test writes to the tables, so files on disk stay as checkpointed.
    pg = await startPostgres({ version: 18, conf: { autovacuum: "off" } });
    ci = parseConnInfo(pg.connString(), { HOME: pg.baseDir });
    tsDir = pgTempDir("klio-ts-");
    const sql = pg.sql();
    await sql.unsafe(`CREATE TABLESPACE extra LOCATION '${tsDir}'`);
    tsOid = Number((await sql.unsafe("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'"))[0]!.oid);
    for (const table of ["updated", "appended", "truncated", "untouched"]) {
      await sql.unsafe(`CREATE TABLE ${table} AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g`);
    }
    await sql.unsafe("CREATE TABLE in_extra TABLESPACE extra AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g");
    // Set the tuples' hint bits now, so that reading the tables later changes no page.
    for (const table of ["updated", "appended", "truncated", "untouched", "in_extra"]) await sql.unsafe(`SELECT count(*) FROM ${table}`);
  });
  afterAll(async () => {
    await pg?.destroy();
    if (tsDir) rmSync(tsDir, { recursive: true, force: true });
  });

  it("refuses INCREMENTAL while summarize_wal is off, with the server's message", async () => {
    const conn = await connect(ci);
    try {
      unsummarized = await takeBackup(conn, { label: "full, unsummarized" });
      await uploadManifest(conn, unsummarized.manifest);
      const e = await serverError(takeBackup(conn, { label: "incremental", incremental: true }));
      expect(e.sqlstate).toBe("55000");
      expect(e.message).toBe("incremental backups cannot be taken unless WAL summarization is enabled");
      expect((await conn.query("IDENTIFY_SYSTEM"))[0]!.rows).toHaveLength(1); // still usable
    } finally {
      await conn.close();
    }
  });

  it("refuses a backup relative to one whose start the WAL summaries do not reach", async () => {
    // Summarizing starts at the latest checkpoint's redo, after the full backup began.
    const sql = pg.sql();
    await sql.unsafe("CHECKPOINT");
    await sql.unsafe("ALTER SYSTEM SET summarize_wal = on");
    await sql.unsafe("SELECT pg_reload_conf()");
    const conn = await connect(ci);
    try {
      await uploadManifest(conn, unsummarized.manifest);
      const e = await serverError(takeBackup(conn, { label: "incremental", incremental: true }));
      expect(e.sqlstate).toBe("55000");
      const from = formatLsn(unsummarized.startLsn);
      expect(e.message).toMatch(
        new RegExp(`^WAL summaries are required on timeline 1 from ${from} to [0-9A-F]+/[0-9A-F]+, but (the summaries for that timeline and LSN range are incomplete|no summaries for that timeline and LSN range exist)$`),
      );
    } finally {
      await conn.close();
    }
  });

  it("refuses INCREMENTAL without UPLOAD_MANIFEST, and manifests of another system or timeline", async () => {
    const conn = await connect(ci);
    try {
      const none = await serverError(takeBackup(conn, { label: "incremental", incremental: true }));
      expect(none.sqlstate).toBe("55000");
      expect(none.message).toBe("must UPLOAD_MANIFEST before performing an incremental BASE_BACKUP");

      // The identifier is above 2^53: edited as text, not as a number.
      const idText = /"System-Identifier": (\d+)/.exec(new TextDecoder().decode(unsummarized.manifest))![1]!;
      const otherId = idText.slice(0, -1) + String((Number(idText.at(-1)) + 1) % 10);
      const otherSystem = editedManifest(unsummarized.manifest, (t) => t.replace(`"System-Identifier": ${idText}`, `"System-Identifier": ${otherId}`));
      const system = await serverError(uploadManifest(conn, otherSystem));
      expect(system.message).toBe(`system identifier in backup manifest is ${otherId}, but database system identifier is ${idText}`);

      const damaged = new TextEncoder().encode(new TextDecoder().decode(unsummarized.manifest).replace('"Timeline": 1', '"Timeline": 2'));
      expect((await serverError(uploadManifest(conn, damaged))).message).toBe("manifest checksum mismatch");

      await uploadManifest(conn, editedManifest(unsummarized.manifest, (t) => t.replace('"Timeline": 1', '"Timeline": 2')));
      const timeline = await serverError(takeBackup(conn, { label: "incremental", incremental: true }));
      expect(timeline.message).toBe("timeline 2 found in manifest, but not in this server's history");
      expect((await conn.query("IDENTIFY_SYSTEM"))[0]!.rows).toHaveLength(1);
    } finally {
      await conn.close();
    }
  });

  it("sends changed relation files as INCREMENTAL files whose blocks are the files' blocks", async () => {
    const sql = pg.sql();
    const conn = await connect(ci);
    try {
      const full = await takeBackup(conn, { label: "full" });
      const before = async (table: string) => String((await sql.unsafe(`SELECT pg_relation_filepath('${table}') AS p`))[0]!.p);
      const truncatedBefore = await before("truncated");

      await sql.unsafe("UPDATE updated SET v = 'changed' WHERE id IN (5, 10000)");
      await sql.unsafe("INSERT INTO appended SELECT g, md5(g::text) FROM generate_series(20001, 20100) g");
      await sql.unsafe("TRUNCATE truncated");
      await sql.unsafe("UPDATE in_extra SET v = 'changed' WHERE id = 7");
      for (const table of ["updated", "appended", "in_extra"]) await sql.unsafe(`SELECT count(*) FROM ${table}`);
      // Writes stop here; after the checkpoint the files on disk are what the backup will read.
      await sql.unsafe("CHECKPOINT");
      const files = new Map<string, { path: string; bytes: Uint8Array }>();
      for (const table of ["updated", "appended", "truncated", "untouched", "in_extra"]) {
        const p = await before(table);
        files.set(table, { path: p, bytes: readFileSync(path.join(pg.dataDir, p)) });
      }

      await uploadManifest(conn, full.manifest);
      const inc = await takeBackup(conn, { label: "incremental", incremental: true });
      expect((await conn.query("IDENTIFY_SYSTEM"))[0]!.rows).toHaveLength(1);

      // backup_label says what it is relative to.
      const label = inc.files.get("backup_label")!.text!;
      expect(label).toContain(`INCREMENTAL FROM LSN: ${formatLsn(full.startLsn)}\n`);
      expect(label).toContain("INCREMENTAL FROM TLI: 1\n");

      const incrementals = [...inc.files.values()].filter((f) => f.incremental !== undefined);
      expect(incrementals.length).toBeGreaterThan(10);
      // Free space maps always go whole.
      expect(incrementals.filter((f) => f.path.endsWith("_fsm"))).toEqual([]);

      // A table whose file is in the data directory or in the tablespace: the INCREMENTAL file
      // stands for it, is as long as it, and its blocks are the file's blocks.
      const incrementalOf = (table: string) => {
        const f = files.get(table)!;
        const sent = inc.files.get(path.posix.join(path.posix.dirname(f.path), `INCREMENTAL.${path.posix.basename(f.path)}`));
        expect(sent, `${table} (${f.path}) is sent as an INCREMENTAL file`).toBeDefined();
        expect(sent!.incremental!.truncationBlockLength).toBe(f.bytes.length / BLCKSZ);
        for (const [blockNumber, page] of sent!.incremental!.blocks) {
          const onDisk = f.bytes.subarray(blockNumber * BLCKSZ, (blockNumber + 1) * BLCKSZ);
          expect(Buffer.from(page).equals(onDisk), `${table} block ${blockNumber}`).toBe(true);
        }
        return sent!.incremental!;
      };
      const updated = incrementalOf("updated");
      expect(updated.relationPath).toBe(files.get("updated")!.path);
      expect(updated.blocks.size).toBeGreaterThanOrEqual(1);
      expect(updated.blocks.size).toBeLessThanOrEqual(4); // the two rows' old and new pages
      expect(incrementalOf("appended").blocks.size).toBeGreaterThanOrEqual(1);
      expect(incrementalOf("untouched").blocks.size).toBe(0);
      const inExtra = incrementalOf("in_extra");
      expect(files.get("in_extra")!.path).toMatch(new RegExp(`^pg_tblspc/${tsOid}/PG_18_\\d+/\\d+/\\d+$`));
      expect(inExtra.blocks.size).toBeGreaterThanOrEqual(1);

      // TRUNCATE gave the table a new file, which the prior backup does not have: sent whole.
      expect(files.get("truncated")!.path).not.toBe(truncatedBefore);
      expect(inc.files.get(files.get("truncated")!.path)).toMatchObject({ size: 0 });
      expect(inc.files.has(truncatedBefore)).toBe(false);

      // The manifest lists every INCREMENTAL file under its INCREMENTAL name, with the size
      // and CRC-32C of the file as sent; it says nothing else about being incremental.
      const manifest = parseManifest(inc.manifest);
      expect(Object.keys(manifest)).toEqual(["PostgreSQL-Backup-Manifest-Version", "System-Identifier", "Files", "WAL-Ranges", "Manifest-Checksum"]);
      const listed = new Map(manifest.Files.map((f) => [f.Path, f]));
      for (const f of incrementals) {
        expect(listed.get(f.path), f.path).toMatchObject({ Size: f.size, "Checksum-Algorithm": "CRC32C", Checksum: f.crc });
      }
      expect([...listed.keys()].filter((p) => p.includes("INCREMENTAL.")).sort()).toEqual(incrementals.map((f) => f.path).sort());
    } finally {
      await conn.close();
    }
  });
});

describe("uploadManifest before PostgreSQL 17", () => {
  it("says the server is too old instead of sending a command it cannot parse", async () => {
    // Only the version is read; nothing is sent.
    const old = { serverVersionNum: 150018, parameters: new Map([["server_version", "15.18"]]) } as unknown as ReplicationConnection;
    await expect(uploadManifest(old, new Uint8Array(1))).rejects.toMatchObject({
      code: "pg-version",
      message: "incremental backups need PostgreSQL 17 or later; the server runs 15.18",
    });
  });
});
