// Flag parsing shared by every command: each command declares its flags once, and the
// parser turns argv into typed values or one KlioError naming the offending flag.
import { KlioError } from "../util/errors.ts";

export type FlagKind = "string" | "boolean" | "number";

export interface FlagSpec {
  kind: FlagKind;
  /** One line for --help. */
  help: string;
  /** Shown in --help as the value's name, e.g. DIR. */
  value?: string;
  required?: boolean;
  /** The value when the flag is not given (--help shows it, unless it is false or empty). */
  default?: string | boolean | number;
  /** Refuses a value (KlioError "usage") before the command runs, e.g. a location it cannot use. */
  check?: (value: string) => void;
}

export interface CommandSpec {
  /** e.g. "wal stream" */
  name: string;
  summary: string;
  usage: string;
  positionals?: { name: string; help: string; required?: boolean }[];
  flags: Record<string, FlagSpec>;
  /** Extra paragraphs printed after the flags. */
  details?: string;
}

export interface ParsedArgs {
  flags: Record<string, string | boolean | number | undefined>;
  positionals: string[];
  help: boolean;
}

export function parseArgs(spec: CommandSpec, argv: string[]): ParsedArgs {
  const flags: ParsedArgs["flags"] = {};
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--help" || arg === "-h") {
      help = true;
      continue;
    }
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = arg.slice(2, eq === -1 ? undefined : eq);
      const f = spec.flags[name];
      if (!f) throw new KlioError("usage", `${spec.name}: unknown flag --${name} (see klio ${spec.name} --help)`);
      let raw: string | undefined = eq === -1 ? undefined : arg.slice(eq + 1);
      if (f.kind === "boolean") {
        if (raw !== undefined && raw !== "true" && raw !== "false")
          throw new KlioError("usage", `${spec.name}: --${name} takes no value (or =true/=false), got "${raw}"`);
        flags[name] = raw !== "false";
        continue;
      }
      if (raw === undefined) {
        if (i + 1 >= argv.length) throw new KlioError("usage", `${spec.name}: --${name} needs a value`);
        raw = argv[++i]!;
      }
      if (f.kind === "number") {
        const n = Number(raw);
        if (raw.trim() === "" || !Number.isFinite(n))
          throw new KlioError("usage", `${spec.name}: --${name} must be a number, got "${raw}"`);
        flags[name] = n;
      } else {
        flags[name] = raw;
      }
      continue;
    }
    if (arg.startsWith("-") && arg !== "-") throw new KlioError("usage", `${spec.name}: unknown option ${arg} (see klio ${spec.name} --help)`);
    positionals.push(arg);
  }
  if (help) return { flags, positionals, help };
  for (const [name, f] of Object.entries(spec.flags)) {
    if (flags[name] === undefined && f.default !== undefined) flags[name] = f.default;
    if (flags[name] === undefined && f.required) throw new KlioError("usage", `${spec.name}: --${name} is required`);
    if (f.check && typeof flags[name] === "string") f.check(flags[name]);
  }
  const declared = spec.positionals ?? [];
  const needed = declared.filter((p) => p.required !== false).length;
  if (positionals.length < needed)
    throw new KlioError("usage", `${spec.name}: missing ${declared[positionals.length]!.name} (usage: ${spec.usage})`);
  if (positionals.length > declared.length)
    throw new KlioError("usage", `${spec.name}: unexpected argument "${positionals[declared.length]}" (usage: ${spec.usage})`);
  return { flags, positionals, help };
}
