import type { CommandSpec, ParsedArgs } from "./args.ts";

/** What a command may touch of the outside world; passed in, never global. */
export interface CliContext {
  env: Record<string, string | undefined>;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** True when stderr is a terminal: progress may redraw lines. */
  isTTY: boolean;
  /** Aborted on SIGINT/SIGTERM: long-running commands stop cleanly. */
  signal: AbortSignal;
}

export interface Command {
  spec: CommandSpec;
  /** Resolves to the process exit code. */
  run(args: ParsedArgs, ctx: CliContext): Promise<number>;
}
