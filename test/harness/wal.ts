// Compares klio's WAL archive with the server's own pg_wal, byte for byte.
import { readFileSync, existsSync } from "node:fs";
import path from "node:path";
import type postgres from "postgres";
import type { PgServer } from "./postgres.ts";
import { openClusterArchive, readWalFile } from "../../src/wal/archive-reader.ts";
import { listArchive } from "../../src/wal/archive-layout.ts";
import { formatLsn, parseLsn, type Lsn } from "../../src/pg/lsn.ts";
import { randomBytes } from "node:crypto";
import { crc32 } from "node:zlib";
import { formatSegmentChecksum } from "../../src/wal/segment-checksum.ts";
import { klio } from "./backup.ts";
import { waitFor } from "./klio.ts";

export function serverSegment(pg: PgServer, name: string): Buffer | undefined {
  const file = path.join(pg.dataDir, "pg_wal", name);
  return existsSync(file) ? readFileSync(file) : undefined;
}

/** Writes about `mb` megabytes of WAL. */
export async function generateWal(sql: postgres.Sql, mb: number): Promise<void> {
  await sql`create table if not exists klio_load (id bigint, payload text)`;
  const rows = Math.ceil((mb * 1024 * 1024) / 420);
  await sql`insert into klio_load select g, repeat(md5(g::text), 10) from generate_series(1, ${rows}) g`;
}

export async function currentLsn(sql: postgres.Sql): Promise<Lsn> {
  const [{ lsn }] = await sql`select pg_current_wal_lsn()::text as lsn`;
  return parseLsn(lsn);
}

/**
 * Waits until the receiver archiving `cluster` into `repo` reports (in `klio wal status`) that
 * it has flushed WAL at or past `lsn`. Two minutes unless told: under load the receiver lags.
 */
export async function waitForFlush(repo: string, lsn: Lsn | string, cluster = "db1", timeoutMs = 120_000): Promise<Lsn> {
  const target = typeof lsn === "string" ? parseLsn(lsn) : lsn;
  return await waitFor(`the receiver to flush ${cluster} up to ${formatLsn(target)}`, async () => {
    const s = JSON.parse(await klio(["wal", "status", "--repo", repo, "--cluster", cluster, "--json"]));
    const flushed = s.flushedLsn ? parseLsn(s.flushedLsn) : undefined;
    return flushed !== undefined && flushed >= target ? flushed : undefined;
  }, timeoutMs);
}

/** Switches to a new segment and returns the name of the segment just completed. */
export async function switchWal(sql: postgres.Sql): Promise<string> {
  const [{ name }] = await sql`select pg_walfile_name(pg_switch_wal()) as name`;
  return name;
}

export async function archivedBytes(repo: string, cluster: string, name: string, partial = false): Promise<Buffer | undefined> {
  const archive = await openClusterArchive(repo, cluster);
  const found = await readWalFile(archive, { kind: "segment", name, partial });
  return found ? Buffer.from(found.bytes) : undefined;
}

/**
 * Checks every complete segment in the archive against the server's copy (when the server
 * still has it) and that the archive has no holes. Returns the names checked.
 */
export async function expectArchiveMatchesServer(pg: PgServer, repo: string, cluster: string): Promise<{ checked: string[]; names: string[] }> {
  const archive = await openClusterArchive(repo, cluster);
  const { segments } = await listArchive(archive.dir, archive.identity.walSegmentSize);
  const complete = segments.filter((s) => s.kind !== "partial");
  const checked: string[] = [];
  for (const seg of complete) {
    const mine = await archivedBytes(repo, cluster, seg.name);
    const theirs = serverSegment(pg, seg.name);
    if (!mine) throw new Error(`archive lost ${seg.name}`);
    if (theirs) {
      if (!mine.equals(theirs)) throw new Error(`archived ${seg.name} differs from the server's`);
      checked.push(seg.name);
    }
  }
  for (let i = 1; i < segments.length; i++) {
    const gap = segments[i]!.segno - segments[i - 1]!.segno;
    if (gap > 1n) throw new Error(`hole in the archive between ${segments[i - 1]!.file} and ${segments[i]!.file}`);
  }
  return { checked, names: segments.map((s) => s.file) };
}

/** How far the archive's newest partial segment agrees with the server's copy. */
export async function archiveContentEnd(pg: PgServer, repo: string, cluster: string): Promise<Lsn> {
  // The receiver may rename a partial segment between our listing and our read: list again.
  for (;;) {
    try {
      return await contentEndOnce(pg, repo, cluster);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
  }
}

async function contentEndOnce(pg: PgServer, repo: string, cluster: string): Promise<Lsn> {
  const archive = await openClusterArchive(repo, cluster);
  const segSize = archive.identity.walSegmentSize;
  const { segments } = await listArchive(archive.dir, segSize);
  let end = 0n;
  for (const seg of segments) {
    if (seg.kind !== "partial") {
      end = (seg.segno + 1n) * BigInt(segSize);
      continue;
    }
    const mine = readFileSync(path.join(archive.dir, seg.file));
    const theirs = serverSegment(pg, seg.name);
    if (!theirs) continue;
    let n = 0;
    while (n < mine.length && n < theirs.length && mine[n] === theirs[n]) n++;
    // May overstate by the few zero bytes that follow in the server's WAL (record padding).
    const candidate = seg.segno * BigInt(segSize) + BigInt(n);
    if (candidate > end) end = candidate;
  }
  return end;
}

/**
 * A segment for archives built by hand: random bytes behind a first page header that names
 * it (page magic, long header, timeline, its address, system identifier, sizes), as the
 * receiver's would.
 */
export function syntheticSegment(name: string, systemIdentifier: string, segSize: number, fill: (b: Uint8Array) => void = (b) => b.set(randomBytes(b.length))): Uint8Array {
  const b = new Uint8Array(segSize);
  fill(b);
  const v = new DataView(b.buffer);
  v.setUint16(0, 0xd110, true);
  v.setUint16(2, 0x0002, true);
  v.setUint32(4, Number.parseInt(name.slice(0, 8), 16), true);
  const segno = BigInt("0x" + name.slice(8, 16)) * (0x100000000n / BigInt(segSize)) + BigInt("0x" + name.slice(16, 24));
  v.setBigUint64(8, segno * BigInt(segSize), true);
  v.setUint32(16, 0, true);
  v.setBigUint64(24, BigInt(systemIdentifier), true);
  v.setUint32(32, segSize, true);
  v.setUint32(36, 8192, true);
  return b;
}

/** The checksum file the receiver writes beside a raw segment. */
export function checksumFileFor(segment: Uint8Array): string {
  return formatSegmentChecksum({ crc32: crc32(segment), length: segment.length });
}
