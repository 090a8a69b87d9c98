// Reads an `strace -f -y -xx` log of klio wal stream and checks the receiver's correctness
// argument at the level of system calls: every flush position sent to the server in a
// standby status update covers only WAL bytes that were written to the right segment file and
// fdatasync'd (the fdatasync having started after the write returned and returned before the
// status update was sent), or that belong to segments renamed complete after their sync; and
// a completed segment's checksum file is written whole under a temporary name and renamed
// into place before the segment itself.
import path from "node:path";
import { walFileName, type Lsn } from "../../src/pg/lsn.ts";

type SyscallEvent = { pid: string; name: string; phase: "start" | "end"; args: string; ret?: number };

/** Decodes strace's \xHH escapes (all strings are hex with -xx). */
function unhex(s: string): Buffer {
  return Buffer.from(s.replace(/\\x/g, ""), "hex");
}

/** strace pads pids to five columns: "2993  write(…" as well as "22497 write(…". */
function* events(log: string): Generator<SyscallEvent> {
  const pending = new Map<string, { name: string; args: string }>();
  for (const line of log.split("\n")) {
    let m = /^(\d+) +<\.\.\. (\w+) resumed>(.*)\) += (-?\d+)/.exec(line);
    if (m) {
      const start = pending.get(m[1]!);
      pending.delete(m[1]!);
      yield { pid: m[1]!, name: m[2]!, phase: "end", args: (start?.args ?? "") + m[3], ret: Number(m[4]) };
      continue;
    }
    m = /^(\d+) +(\w+)\((.*) <unfinished \.\.\.>$/.exec(line);
    if (m) {
      pending.set(m[1]!, { name: m[2]!, args: m[3]! });
      yield { pid: m[1]!, name: m[2]!, phase: "start", args: m[3]! };
      continue;
    }
    m = /^(\d+) +(\w+)\((.*)\) += (-?\d+)/.exec(line);
    if (m) {
      yield { pid: m[1]!, name: m[2]!, phase: "start", args: m[3]! };
      yield { pid: m[1]!, name: m[2]!, phase: "end", args: m[3]!, ret: Number(m[4]) };
    }
  }
}

function fdPath(args: string): string | undefined {
  const m = /^\d+<((?:\\x[0-9a-f]{2})+)>/.exec(args);
  return m ? unhex(m[1]!).toString() : undefined;
}

function strings(args: string): Buffer[] {
  return [...args.matchAll(/"((?:\\x[0-9a-f]{2})*)"/g)].map((m) => unhex(m[1]!));
}

export interface DurabilityReport {
  statusUpdates: number;
  fdatasyncs: number;
  completedSegments: number;
  /** Checksum files renamed into place (written whole under a temporary name first). */
  checksumFiles: number;
  highestFlush: Lsn;
  violations: string[];
}

/**
 * `dir` is the cluster's archive directory, `start` the LSN streaming started at (a segment
 * start on timeline 1), `segSize` the WAL segment size.
 */
export function checkDurabilityOrder(log: string, dir: string, start: Lsn, segSize: number): DurabilityReport {
  const size = BigInt(segSize);
  const zeroFilled = new Set<string>(); // partial files whose zero-fill (ended by fsync) is done
  const writtenEnd = new Map<string, number>();
  const durableEnd = new Map<string, number>();
  const syncSnapshot = new Map<string, { file: string; end: number }>();
  const completed = new Set<string>();
  const checksummed = new Set<string>(); // segments whose checksum file is in place, whole
  const report: DurabilityReport = { statusUpdates: 0, fdatasyncs: 0, completedSegments: 0, checksumFiles: 0, highestFlush: 0n, violations: [] };

  for (const ev of events(log)) {
    const file = fdPath(ev.args);
    const isPartial = file !== undefined && path.dirname(file) === dir && file.endsWith(".partial");
    if ((ev.name === "pwrite64" || ev.name === "pwritev") && isPartial && ev.phase === "end" && ev.ret! > 0) {
      if (!zeroFilled.has(file)) continue; // filling a new segment with zeros
      const offset = Number(/, (\d+)$/.exec(ev.args)![1]);
      if (offset > (writtenEnd.get(file) ?? 0)) report.violations.push(`write at ${offset} in ${path.basename(file)} leaves a hole after ${writtenEnd.get(file) ?? 0}`);
      writtenEnd.set(file, Math.max(writtenEnd.get(file) ?? 0, offset + ev.ret!));
    } else if (ev.name === "fsync" && isPartial && ev.phase === "end" && ev.ret === 0) {
      zeroFilled.add(file);
    } else if (ev.name === "fdatasync" && isPartial) {
      if (ev.phase === "start") syncSnapshot.set(ev.pid, { file, end: writtenEnd.get(file) ?? 0 });
      else if (ev.ret === 0) {
        const snap = syncSnapshot.get(ev.pid);
        if (snap) durableEnd.set(snap.file, Math.max(durableEnd.get(snap.file) ?? 0, snap.end));
        report.fdatasyncs++;
      }
    } else if ((ev.name === "rename" || ev.name === "renameat2" || ev.name === "renameat") && ev.phase === "end" && ev.ret === 0) {
      const [from, to] = strings(ev.args).map((b) => b.toString());
      // A new partial segment is zero-filled (and fsync'd) under a temporary name, then renamed.
      if (from?.endsWith(".partial.new") && path.dirname(from) === dir) zeroFilled.add(to!);
      if (from?.endsWith(".crc32.new") && path.dirname(from) === dir) {
        checksummed.add(path.basename(to!, ".crc32"));
        report.checksumFiles++;
      }
      if (from?.endsWith(".partial") && path.dirname(from) === dir) {
        // Readers trust a complete segment's checksum file: it is in place before the segment is.
        if (!checksummed.has(path.basename(to!))) report.violations.push(`${path.basename(to!)} renamed complete before its checksum file was in place`);
        if ((durableEnd.get(from) ?? 0) !== segSize) report.violations.push(`${path.basename(from)} renamed complete with only ${durableEnd.get(from) ?? 0} bytes fdatasync'd`);
        completed.add(path.basename(to!));
        report.completedSegments++;
      }
    } else if ((ev.name === "write" || ev.name === "writev" || ev.name === "sendto") && ev.phase === "start") {
      // A reader could catch a checksum file written under its own name empty or half-written.
      if (file !== undefined && path.dirname(file) === dir && file.endsWith(".crc32")) report.violations.push(`${path.basename(file)} written under its own name`);
      for (const data of strings(ev.args)) {
        // CopyData ('d', length 38) carrying a standby status update ('r'): write, flush, apply, time.
        if (data.length < 22 || data[0] !== 0x64 || data.readUInt32BE(1) !== 38 || data[5] !== 0x72) continue;
        const flush = data.readBigUInt64BE(14);
        report.statusUpdates++;
        if (flush > report.highestFlush) report.highestFlush = flush;
        if (flush <= start) continue;
        const seg = (flush - 1n) / size;
        for (let s = start / size; s < seg; s++) {
          if (!completed.has(walFileName(1, s, segSize))) report.violations.push(`flush ${flush.toString(16)} reported before segment ${walFileName(1, s, segSize)} was complete`);
        }
        const name = walFileName(1, seg, segSize);
        const needed = Number(flush - seg * size);
        const durable = completed.has(name) ? segSize : (durableEnd.get(path.join(dir, name + ".partial")) ?? 0);
        if (durable < needed) report.violations.push(`flush ${flush.toString(16)} reported with only ${durable} bytes of ${name} fdatasync'd (needs ${needed})`);
      }
    }
  }
  return report;
}
