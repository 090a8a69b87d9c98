// A shared limit on bytes per second (the offsite copy's --bandwidth): each caller takes its
// bytes from one schedule, so concurrent uploads share the rate. A short burst is let through
// at once, so that small objects are not each held back.
import { Transform, type TransformCallback } from "node:stream";
import { KlioError } from "./errors.ts";

const BURST_MS = 250;

export class RateLimit {
  private next = 0;

  constructor(readonly bytesPerSecond: number) {}

  /** Resolves when `n` more bytes may go. */
  async take(n: number): Promise<void> {
    const now = performance.now();
    const start = Math.max(now, this.next);
    this.next = start + (n / this.bytesPerSecond) * 1000;
    const wait = this.next - now - BURST_MS;
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }

  /** A pass-through stream that holds each piece back until the limit lets it go. */
  throttle(): Transform {
    return new Transform({
      transform: (piece: Buffer, _enc: BufferEncoding, done: TransformCallback) => {
        this.take(piece.length).then(() => done(null, piece), done);
      },
    });
  }
}

const UNITS: Record<string, number> = { k: 1e3, m: 1e6, g: 1e9, ki: 1024, mi: 1024 ** 2, gi: 1024 ** 3 };

/** "20MB/s", "500KiB/s", "1GB/s" → bytes per second. */
export function parseRate(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmg]i?)b\/s\s*$/i.exec(text);
  const n = m ? Number(m[1]) * UNITS[m[2]!.toLowerCase()]! : NaN;
  if (!(n >= 1024)) throw new KlioError("usage", `"${text}" is not a bandwidth such as 20MB/s or 500KiB/s (at least 1KiB/s)`);
  return n;
}
