// Durations as operators write them: "90s", "30m", "12h", "7d", "2w".
const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };

/** Milliseconds of a duration such as "7d"; null when the text is not one. */
export function parseDuration(text: string): number | null {
  const m = /^\s*(\d{1,9})\s*([smhdw])\s*$/i.exec(text);
  return m ? Number(m[1]) * UNITS[m[2]!.toLowerCase()]! : null;
}

/** The shortest exact form of `ms` ("7d", "36h", "90s"). */
export function formatDuration(ms: number): string {
  for (const u of ["w", "d", "h", "m", "s"]) if (ms % UNITS[u]! === 0 && ms >= UNITS[u]!) return `${ms / UNITS[u]!}${u}`;
  return `${Math.round(ms / 1000)}s`;
}
