// The first page of a WAL segment carries PostgreSQL's long page header (access/xlog_internal.h,
// XLogLongPageHeaderData, little-endian on the platforms PostgreSQL streams from here):
//
//   0 u16 xlp_magic   2 u16 xlp_info (XLP_LONG_HEADER = 0x0002)   4 u32 xlp_tli
//   8 u64 xlp_pageaddr   16 u32 xlp_rem_len   24 u64 xlp_sysid   32 u32 xlp_seg_size
//  36 u32 xlp_xlog_blcksz
//
// Checking it against the segment's name and the cluster's identity tells a segment of this
// cluster from anything else named like one (a random file, another cluster's segment, a
// segment under the wrong name) without reading the rest. It does not find damage further in:
// the checksums do that.
import { formatLsn, parseSegmentName, type SegmentSize } from "../pg/lsn.ts";

export const LONG_PAGE_HEADER_BYTES = 40;
const XLP_LONG_HEADER = 0x0002;
const WAL_BLOCK_SIZE = 8192;
/** xlp_magic of PostgreSQL 9.x to 18 (0xD062 … 0xD118) and a margin for later versions. */
const MAGIC_MIN = 0xd000;
const MAGIC_MAX = 0xd1ff;

export interface ClusterOfSegment {
  systemIdentifier: string;
  walSegmentSize: number;
}

/**
 * Why the first bytes of segment `name` are not the start of that segment of this cluster, or
 * undefined when they are. "empty" when the page is all zeros (a partial segment the receiver
 * created but has not written to yet).
 */
export function segmentStartProblem(first: Uint8Array, name: string, cluster: ClusterOfSegment): string | undefined {
  if (first.length < LONG_PAGE_HEADER_BYTES) return `shorter than a WAL page header (${first.length} bytes)`;
  if (first.subarray(0, LONG_PAGE_HEADER_BYTES).every((b) => b === 0)) return "empty";
  const v = new DataView(first.buffer, first.byteOffset, LONG_PAGE_HEADER_BYTES);
  const magic = v.getUint16(0, true);
  if (magic < MAGIC_MIN || magic > MAGIC_MAX) return `not a WAL segment (page magic 0x${magic.toString(16)})`;
  if ((v.getUint16(2, true) & XLP_LONG_HEADER) === 0) return "not a WAL segment (its first page has no long header)";
  const { timeline, segno } = parseSegmentName(name, cluster.walSegmentSize as SegmentSize);
  const start = segno * BigInt(cluster.walSegmentSize);
  const pageAddr = v.getBigUint64(8, true);
  if (pageAddr !== start) return `holds the WAL of ${formatLsn(pageAddr)}, not of ${formatLsn(start)} as its name says`;
  // The first segment of a new timeline begins with pages copied from its parent (lower id).
  const tli = v.getUint32(4, true);
  if (tli === 0 || tli > timeline) return `is of timeline ${tli}, not ${timeline} as its name says`;
  const sysid = v.getBigUint64(24, true).toString();
  if (sysid !== cluster.systemIdentifier) return `belongs to the database system ${sysid}, not ${cluster.systemIdentifier}`;
  if (v.getUint32(32, true) !== cluster.walSegmentSize) return `says its segments have ${v.getUint32(32, true)} bytes, not ${cluster.walSegmentSize}`;
  if (v.getUint32(36, true) !== WAL_BLOCK_SIZE) return `uses ${v.getUint32(36, true)}-byte WAL pages, not ${WAL_BLOCK_SIZE}`;
  return undefined;
}

