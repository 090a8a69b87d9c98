// Which chunking fits which file of a PostgreSQL data directory: the PostgreSQL knowledge
// the generic chunker (src/repo/chunker.ts) leaves out.
//
// Relation files (tables, indexes, their free space and visibility maps, in base/, global/
// and tablespaces) and SLRU files (pg_xact, pg_multixact, pg_commit_ts) are arrays of 8 KB
// pages rewritten in place: they are cut at page boundaries, one page per chunk, so that a
// changed page costs one page. Why one and not a few: see the measurement in chunker.ts
// (16 KB chunks already grow a second backup to 1.40x the changed pages' bytes, over the
// issue's 1.2x; 8 KB chunks 1.00x). Other files may have content that shifts (logs, files an operator put in the
// data directory): content-defined chunks; small ones are stored whole.
import type { ChunkingPolicy } from "../repo/chunker.ts";

/** PostgreSQL's block size (BLCKSZ) as built by every distribution; one chunk per page. */
export const PAGE_CHUNK = 8192;
/** Files other than relation and SLRU files up to this size are one chunk. */
export const WHOLE_MAX = 128 * 1024;
/** Content-defined chunking for the rest: min, average, max. */
export const CDC = { min: 32 * 1024, avg: 128 * 1024, max: 512 * 1024 } as const;

// A relation file: <relfilenode>, a temporary relation's t<backend>_<relfilenode>, a fork
// suffix, a segment number. In the data directory under global/, base/<db>/ or
// pg_tblspc/<spc>/PG_<ver>_<catver>/<db>/; in a tablespace's own archive (its paths are
// relative to the tablespace directory) under PG_<ver>_<catver>/<db>/.
const RELATION_DIR = String.raw`(?:global|base/\d+|(?:pg_tblspc/\d+/)?PG_[0-9]+_[0-9]+/\d+)`;
const RELATION_FILE = String.raw`\d+(?:_(?:fsm|vm|init))?(?:\.\d+)?`;
const RELATION = new RegExp(String.raw`^${RELATION_DIR}/(?:t\d+_)?${RELATION_FILE}$`);
// What PostgreSQL's parse_filename_for_nontemp_relation() accepts: no temporary relations.
const NONTEMP_RELATION = new RegExp(String.raw`^${RELATION_DIR}/${RELATION_FILE}$`);
// SLRU segments: pages of transaction status and the like, also rewritten in place.
const SLRU = /^(?:pg_xact|pg_multixact\/(?:offsets|members)|pg_commit_ts|pg_subtrans|pg_serial|pg_notify)\/[0-9A-F]{4,15}$/;

/** A relation file of a relation that is not temporary (the only kind BASE_BACKUP can send incrementally). */
export function isNonTempRelationFile(relativePath: string): boolean {
  return NONTEMP_RELATION.test(relativePath);
}

/** A visibility map fork (<relfilenode>_vm, and its segments). */
export function isVisibilityMapFile(relativePath: string): boolean {
  return NONTEMP_RELATION.test(relativePath) && /_vm(?:\.\d+)?$/.test(relativePath);
}

export function isPagedFile(relativePath: string): boolean {
  return RELATION.test(relativePath) || SLRU.test(relativePath);
}

export function chunkingFor(relativePath: string, size: number): ChunkingPolicy {
  if (isPagedFile(relativePath)) return { kind: "fixed", size: PAGE_CHUNK };
  if (size <= WHOLE_MAX) return { kind: "whole", max: WHOLE_MAX };
  return { kind: "cdc", ...CDC };
}
