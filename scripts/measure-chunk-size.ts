// Measures what the fixed chunk size of relation files costs a second backup, on the
// workload of issue 3: a cold/hot mixed database (a large untouched table, pgbench scale 20,
// an append-only table), backed up, then 1% of pgbench_accounts rows updated at random and
// 1% appended (and 1% appended to the append-only table), backed up again.
//
// Both backups run through klio's own path (BASE_BACKUP → tar reader → chunker). For each
// candidate size the relation files (src/backup/file-kind.ts isPagedFile) of the second
// backup are cut into fixed chunks, all-zero chunks elided, and the distinct chunks the first
// backup does not have are counted: that is what the repository would add, before
// compression. The yardstick is the bytes of the 8 KB pages that differ between the two
// backups. Raw DEFLATE (node:zlib, level 6) of each new chunk is shown beside it.
//
//   node --import tsx scripts/measure-chunk-size.ts [--scale 20] [--cold-rows 1500000] [--event-rows 500000]
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { deflateRawSync } from "node:zlib";
import path from "node:path";
import { parseArgs } from "node:util";
import { startPostgres, binDir } from "../test/harness/postgres.ts";
import { connect } from "../src/pg/replication-connection.ts";
import { parseConnInfo } from "../src/pg/conninfo.ts";
import { runBaseBackup, type BaseBackupEvent } from "../src/pg/base-backup.ts";
import { readTar } from "../src/backup/tar-reader.ts";
import { isPagedFile } from "../src/backup/file-kind.ts";
import { createChunker, type Chunker } from "../src/repo/chunker.ts";

const { values: args } = parseArgs({
  options: {
    scale: { type: "string", default: "20" },
    "cold-rows": { type: "string", default: "1500000" },
    "event-rows": { type: "string", default: "500000" },
  },
});
const SCALE = Number(args.scale);
const SIZES = [8192, 16384, 32768, 65536];
const PAGE = 8192;

interface Snapshot {
  /** Per candidate size: ids of the distinct non-zero chunks. */
  chunks: Map<number, Set<string>>;
  /** Per candidate size: chunks (all-zero ones included) in the backup. */
  count: Map<number, number>;
  /** Per candidate size: the distinct chunks that `known` did not have, with their bytes. */
  fresh: Map<number, Map<string, Uint8Array>>;
  /** Per relation file: a short hash of each page. */
  pages: Map<string, string[]>;
  relationBytes: number;
  seconds: number;
}

const id = (b: Uint8Array) => createHash("sha256").update(b).digest("base64").slice(0, 22);

async function backup(connString: string, home: string, known?: Map<number, Set<string>>): Promise<Snapshot> {
  const started = performance.now();
  const conn = await connect(parseConnInfo(connString, { HOME: home }));
  const snap: Snapshot = {
    chunks: new Map(SIZES.map((s) => [s, new Set()])), count: new Map(SIZES.map((s) => [s, 0])), fresh: new Map(SIZES.map((s) => [s, new Map()])),
    pages: new Map(), relationBytes: 0, seconds: 0,
  };
  try {
    const it = runBaseBackup(conn, { label: "measure chunk size" })[Symbol.asyncIterator]();
    let ahead: BaseBackupEvent | undefined;
    const next = async () => {
      if (ahead) {
        const e = ahead;
        ahead = undefined;
        return e;
      }
      const r = await it.next();
      return r.done ? undefined : r.value;
    };
    async function* data(): AsyncGenerator<Uint8Array> {
      for (;;) {
        const ev = await next();
        if (ev === undefined) return;
        if (ev.kind === "data") yield ev.bytes;
        else if (ev.kind !== "progress") {
          ahead = ev;
          return;
        }
      }
    }
    for (;;) {
      const ev = await next();
      if (ev === undefined) break;
      if (ev.kind !== "archive") continue;
      for await (const { entry, content } of readTar(data())) {
        const key = ev.tablespaceOid === null ? entry.path : `pg_tblspc/${ev.tablespaceOid}/${entry.path}`;
        if (entry.type !== "file" || !isPagedFile(entry.path)) continue;
        snap.relationBytes += entry.size;
        const chunkers = new Map<number, Chunker>(SIZES.map((s) => [s, createChunker({ kind: "fixed", size: s })]));
        const pages = createChunker({ kind: "fixed", size: PAGE });
        const pageIds: string[] = [];
        const take = (size: number, cs: { data: Uint8Array | null; length: number }[]) => {
          for (const c of cs) {
            const cid = c.data === null ? "zero" : id(c.data);
            snap.count.set(size, snap.count.get(size)! + 1);
            if (c.data === null) continue;
            snap.chunks.get(size)!.add(cid);
            if (known && !known.get(size)!.has(cid)) snap.fresh.get(size)!.set(cid, c.data);
          }
        };
        for await (const bytes of content) {
          for (const [s, c] of chunkers) take(s, c.push(bytes));
          for (const p of pages.push(bytes)) pageIds.push(p.data === null ? "zero" : id(p.data));
        }
        for (const [s, c] of chunkers) take(s, c.end());
        for (const p of pages.end()) pageIds.push(p.data === null ? "zero" : id(p.data));
        snap.pages.set(key, pageIds);
      }
    }
  } finally {
    await conn.close();
  }
  snap.seconds = (performance.now() - started) / 1000;
  return snap;
}

const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;

async function main(): Promise<void> {
  const pg = await startPostgres({ version: 15, conf: { shared_buffers: "'256MB'", max_wal_size: "'4GB'", checkpoint_timeout: "'1h'" } });
  try {
    const sql = pg.sql();
    const pgbench = path.join(binDir(15), "pgbench");
    console.log(`loading: pgbench -i -s ${SCALE}, cold table ${args["cold-rows"]} rows, append-only table ${args["event-rows"]} rows …`);
    execFileSync(pgbench, ["-i", "-q", "-s", String(SCALE), "-h", pg.host, "-p", String(pg.port), "-U", "postgres", "postgres"], { stdio: "ignore" });
    await sql.unsafe(`CREATE TABLE cold AS SELECT g AS id, md5(g::text) AS a, repeat(md5((g * 7)::text), 6) AS b FROM generate_series(1, ${Number(args["cold-rows"])}) g`);
    await sql.unsafe("CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), payload text)");
    await sql.unsafe(`INSERT INTO events (payload) SELECT repeat(md5(g::text), 4) FROM generate_series(1, ${Number(args["event-rows"])}) g`);
    await sql.unsafe("VACUUM ANALYZE");
    await sql.unsafe("CHECKPOINT");
    const relnames = new Map<string, string>();
    for (const r of await sql.unsafe("SELECT relname, pg_relation_filepath(oid) AS p FROM pg_class WHERE pg_relation_filepath(oid) IS NOT NULL")) relnames.set(r.p, r.relname);

    const first = await backup(pg.connString(), pg.baseDir);
    console.log(`backup 1: ${mb(first.relationBytes)} of relation files in ${first.seconds.toFixed(1)} s`);

    const accounts = 100000 * SCALE;
    const pct = Math.round(accounts / 100);
    // One random row per statement (an index lookup, as pgbench's own updates); random() in
    // the WHERE clause would be evaluated per row, a sequential scan each time.
    await sql.unsafe(
      `DO $$ DECLARE a int; BEGIN FOR i IN 1..${pct} LOOP a := 1 + floor(random() * ${accounts})::int; UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = a; END LOOP; END $$`,
    );
    await sql.unsafe(`INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT ${accounts} + g, 1 + (g - 1) % ${SCALE}, 0, '' FROM generate_series(1, ${pct}) g`);
    await sql.unsafe(`INSERT INTO events (payload) SELECT repeat(md5(g::text), 4) FROM generate_series(1, ${Math.round(Number(args["event-rows"]) / 100)}) g`);

    const second = await backup(pg.connString(), pg.baseDir, first.chunks);
    console.log(`backup 2: ${mb(second.relationBytes)} of relation files in ${second.seconds.toFixed(1)} s`);

    // Changed pages: pages of the second backup that differ from the same page of the first.
    let pages = 0;
    let changed = 0;
    const perRelation = new Map<string, { pages: number; changed: number }>();
    for (const [file, ids] of second.pages) {
      const before = first.pages.get(file) ?? [];
      const rel = relnames.get(file.replace(/(_fsm|_vm|_init)?(\.\d+)?$/, "")) ?? "(other)";
      const r = perRelation.get(rel) ?? { pages: 0, changed: 0 };
      ids.forEach((p, i) => {
        pages++;
        r.pages++;
        if (before[i] !== p) {
          changed++;
          r.changed++;
        }
      });
      perRelation.set(rel, r);
    }
    const changedBytes = changed * PAGE;
    console.log(`pages: ${pages} (${mb(pages * PAGE)}), changed ${changed} = ${((100 * changed) / pages).toFixed(1)}% (${mb(changedBytes)})`);
    console.log("relations with changed pages (pages, changed, fraction q):");
    for (const [rel, r] of [...perRelation].filter(([, r]) => r.changed > 0).sort((a, b) => b[1].changed - a[1].changed).slice(0, 8)) {
      console.log(`  ${rel.padEnd(28)} ${String(r.pages).padStart(8)} ${String(r.changed).padStart(8)}  q=${(r.changed / r.pages).toFixed(3)}`);
    }

    console.log("\nchunk size   chunks(2nd)   new distinct   new bytes     × changed   deflated new");
    for (const size of SIZES) {
      const fresh = second.fresh.get(size)!;
      let bytes = 0;
      let deflated = 0;
      for (const d of fresh.values()) {
        bytes += d.length;
        deflated += Math.min(d.length, deflateRawSync(d, { level: 6 }).length);
      }
      console.log(
        `${String(size / 1024).padStart(6)} KB ${String(second.count.get(size)!).padStart(13)} ${String(fresh.size).padStart(14)}   ${mb(bytes).padStart(10)}   ${(bytes / changedBytes).toFixed(2).padStart(8)}×   ${mb(deflated).padStart(10)}`,
      );
    }
  } finally {
    await pg.destroy();
  }
}

// Ctrl-C: exit through process.exit, so that the harness stops the server it started.
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => process.exit(130));
await main();
