// Progress of long work: a line redrawn in place on a terminal, a log line every few seconds
// otherwise, nothing at all unless asked for.
import type { CliContext } from "./command.ts";

export interface ProgressDisplay {
  update(done: number, total: number | null, note?: string): void;
  end(): void;
}

const EVERY_MS_TTY = 200;
const EVERY_MS_LOG = 10_000;

export function createProgress(ctx: CliContext, label: string, enabled: boolean, now: () => number = Date.now): ProgressDisplay {
  if (!enabled) return { update() {}, end() {} };
  const started = now();
  let last = 0;
  let drawn = false;
  return {
    update(done, total, note) {
      const t = now();
      if (t - last < (ctx.isTTY ? EVERY_MS_TTY : EVERY_MS_LOG)) return;
      last = t;
      const line = describe(label, done, total, (t - started) / 1000, note);
      if (ctx.isTTY) {
        ctx.stderr(`\r\x1b[2K${line}`);
        drawn = true;
      } else {
        ctx.stderr(line + "\n");
      }
    },
    end() {
      if (drawn) ctx.stderr("\r\x1b[2K");
    },
  };
}

export function describe(label: string, done: number, total: number | null, seconds: number, note?: string): string {
  const rate = seconds > 0 ? done / seconds : 0;
  const parts = [label, total ? `${bytes(done)} / ${bytes(total)} ${Math.min(100, Math.floor((100 * done) / total))}%` : bytes(done), `${bytes(rate)}/s`];
  if (total && rate > 0 && done < total) parts.push(`ETA ${clock((total - done) / rate)}`);
  if (note) parts.push(note);
  return parts.join("  ");
}

export function bytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

function clock(s: number): string {
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
}
