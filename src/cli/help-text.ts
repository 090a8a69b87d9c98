// A command's --help page: summary, usage, arguments, flags (required ones first) and details,
// in one aligned column and wrapped at 100 columns.
import type { CommandSpec, FlagSpec } from "./args.ts";

export const HELP_WIDTH = 100;
/** The widest flag or argument column; a longer one stands on its own line. */
export const MAX_LEFT = 30;

interface Row {
  left: string;
  text: string;
}

export function helpText(spec: CommandSpec): string {
  const args: Row[] = (spec.positionals ?? []).map((p) => ({ left: p.name, text: p.help + (p.required === false ? " (optional)" : "") }));
  const entries = Object.entries(spec.flags);
  const flags: Row[] = [...entries.filter(([, f]) => f.required), ...entries.filter(([, f]) => !f.required)].map(([name, f]) => flagRow(name, f));
  flags.push({ left: "--help", text: "show this help" });
  const fitting = [...args, ...flags].map((r) => r.left.length).filter((n) => n <= MAX_LEFT);
  const col = Math.max(0, ...fitting);
  const lines = [...wrap(spec.summary, 0), "", ...wrap(`Usage: ${spec.usage}`, 4)];
  if (args.length) lines.push("", "Arguments:", ...args.flatMap((r) => rowLines(r, col)));
  lines.push("", "Flags:", ...flags.flatMap((r) => rowLines(r, col)));
  if (spec.details) lines.push("", ...paragraphs(spec.details).flatMap((p) => (/^\s/.test(p) ? [p] : wrap(p, 0))));
  return lines.join("\n") + "\n";
}

function flagRow(name: string, f: FlagSpec): Row {
  const left = `--${name}${f.kind === "boolean" ? "" : ` ${f.value ?? "VALUE"}`}`;
  const shown = f.default !== undefined && f.default !== false && f.default !== "";
  const extra = f.required ? " (required)" : shown ? ` (default ${String(f.default)})` : "";
  return { left, text: f.help + extra };
}

/**
 * The details' paragraphs: runs of lines joined (their line breaks were only for the source),
 * ended by a line ending in ":"; an indented line (an example) stays as it is.
 */
function paragraphs(details: string): string[] {
  const out: string[] = [];
  let open = false;
  for (const line of details.split("\n")) {
    if (/^\s/.test(line) || line === "") {
      out.push(line);
      open = false;
    } else if (open) out[out.length - 1] += ` ${line}`;
    else {
      out.push(line);
      open = true;
    }
    if (line.endsWith(":")) open = false;
  }
  return out;
}

/** "  LEFT  text…" with the text wrapped under itself; a LEFT wider than the column gets its own line. */
function rowLines(r: Row, col: number): string[] {
  const indent = 2 + col + 2;
  const [first, ...rest] = wrap(r.text, indent, indent);
  if (r.left.length > col) return [`  ${r.left}`, " ".repeat(indent) + first, ...rest];
  return [`  ${r.left.padEnd(col)}  ${first}`.trimEnd(), ...rest];
}

/**
 * Words of `text` in lines of at most HELP_WIDTH columns; the first line starts at column
 * `firstAt` (its prefix is the caller's), the others are indented by `indent`. A word longer
 * than a line stands alone.
 */
function wrap(text: string, indent: number, firstAt = 0): string[] {
  const out: string[] = [];
  let line = "";
  let at = firstAt;
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line !== "" && at + line.length + 1 + word.length > HELP_WIDTH) {
      out.push(line);
      line = "";
      at = indent;
    }
    line = line === "" ? word : `${line} ${word}`;
  }
  out.push(line);
  return out.map((l, i) => (i === 0 ? l : " ".repeat(indent) + l));
}
