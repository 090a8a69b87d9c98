// Every command's --help page: one aligned flag column per page (at most 30 wide; a longer flag
// stands on its own line with its text on the next), lines of at most 100 columns, required
// flags marked and first, no empty default, and --repo offering only the locations the command
// accepts (writers: a directory only).
import { describe, it, expect } from "vitest";
import { readdirSync } from "node:fs";
import path from "node:path";
import { helpText, HELP_WIDTH, MAX_LEFT } from "../src/cli/help-text.ts";
import type { Command } from "../src/cli/command.ts";
import { runKlio, ROOT } from "./harness/klio.ts";

const DIR = path.join(ROOT, "src", "cli", "commands");
const commands: Command[] = await Promise.all(
  readdirSync(DIR).filter((f) => f.endsWith(".ts")).sort().map(async (f) => ((await import(path.join(DIR, f))) as { command: Command }).command),
);
const byName = (name: string) => commands.find((c) => c.spec.name === name)!;

/** The "  --flag VALUE  text" rows of a page's Arguments and Flags sections, as [left, column of the text]. */
function rows(page: string): { left: string; textAt: number | null; line: string }[] {
  const body = page.split(/^Usage: /m)[1]!.split(/\n\n/).filter((s) => /^(Arguments|Flags):/.test(s)).join("\n");
  return body.split("\n").filter((l) => /^ {2}\S/.test(l)).map((line) => {
    const m = /^ {2}(\S+(?: [^ ]+)?)( {2,}|$)/.exec(line)!;
    return { left: m[1]!, textAt: m[2] ? m[1]!.length + 2 + m[2].length : null, line };
  });
}

describe("--help pages", () => {
  it("are aligned per page, at most 100 columns, required flags first, no empty defaults", () => {
    expect(commands.length).toBeGreaterThan(20);
    for (const c of commands) {
      const page = helpText(c.spec);
      const what = `klio ${c.spec.name} --help`;
      for (const line of page.split("\n")) if (!/^\s+restore_command = /.test(line)) expect(line.length, `${what}: ${line}`).toBeLessThanOrEqual(HELP_WIDTH);
      expect(page, what).not.toMatch(/\(default \)|\(default false\)|\(default undefined\)/);
      const r = rows(page);
      const columns = new Set(r.filter((x) => x.textAt !== null).map((x) => x.textAt));
      expect(columns.size, `${what}: one text column`).toBe(1);
      const col = [...columns][0]!;
      expect(col, what).toBeLessThanOrEqual(2 + MAX_LEFT + 2);
      // A flag wider than the column stands alone; its text starts on the next line, in the column.
      const lines = page.split("\n");
      for (const x of r.filter((x) => x.textAt === null)) {
        const next = lines[lines.indexOf(x.line) + 1]!;
        expect(next.length - next.trimStart().length, `${what}: ${x.left}`).toBe(col);
      }
      const flagsSection = page.split(/^Flags:$/m)[1]!;
      const required = Object.entries(c.spec.flags).filter(([, f]) => f.required).map(([n]) => `--${n}`);
      const listed = rows("Usage: x\n\nFlags:" + flagsSection.split("\n\n")[0]).map((x) => x.left.split(" ")[0]!);
      expect(listed.slice(0, required.length).sort(), what).toEqual([...required].sort());
      for (const n of required) expect(flagsSection, `${what}: ${n}`).toMatch(new RegExp(`^ {2}${n}\\b[^]*?\\(required\\)`, "m"));
    }
  });

  it("--pg is optional and says where the connection comes from without it", () => {
    for (const name of ["backup run", "wal stream"]) {
      const c = byName(name);
      expect(c.spec.flags.pg!.required, name).toBeFalsy();
      expect(c.spec.flags.pg!.default, name).toBeUndefined();
      expect(c.spec.usage, name).toContain("[--pg CONNSTR]");
      const page = helpText(c.spec).replace(/\s+/g, " ");
      expect(page, name).toMatch(/--pg CONNSTR libpq connection string or URI of .*Optional: what it leaves out comes from PGHOST, PGPORT, PGUSER.* libpq's defaults/);
    }
  });

  it("--repo offers remote locations only to commands that just read", () => {
    const readers = ["backup list", "backup show", "backup verify", "get-wal", "repo check", "restore"];
    const directoryOnly = ["init", "wal stream", "wal status", "backup run", "backup delete", "backup pin", "backup unpin",
      "retention get", "retention set", "retention apply", "repo maintenance", "offsite sync", "offsite status", "offsite verify"];
    for (const name of readers) {
      const page = helpText(byName(name).spec);
      expect(page, name).toMatch(/--repo DIR\|URL .*https:\/\//);
      expect(page, name).toContain("s3://BUCKET");
    }
    for (const name of directoryOnly) {
      const c = byName(name);
      const page = helpText(c.spec);
      expect(page, name).toMatch(/^ {2}--repo DIR /m);
      const repoLines = page.split("\n").filter((l) => l.startsWith("  --repo DIR")).join("\n");
      expect(repoLines, name).not.toMatch(/s3:\/\/|https:\/\//);
      expect(c.spec.flags["token-file"], name).toBeUndefined();
      // The offsite commands and retention apply reach the bucket of --to/--offsite, not a repository there.
      expect(/^offsite|^retention apply$/.test(name) || c.spec.flags["s3-endpoint"] === undefined, name).toBe(true);
    }
    // The usage line names --repo as the flag's own row does.
    for (const c of commands) {
      const repo = c.spec.flags.repo;
      if (repo === undefined || repo.kind !== "string") continue;
      expect(c.spec.usage, c.spec.name).toContain(`--repo ${repo.value}`);
    }
    const exportPage = helpText(byName("repo export").spec);
    expect(exportPage).toContain("s3://BUCKET");
    expect(exportPage).not.toContain("https://host");
  });

  it("klio backup run --help prints that page", () => {
    const r = runKlio(["backup", "run", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(helpText(byName("backup run").spec));
    expect(r.stdout).toMatch(/^ {2}--repo DIR +the repository directory \(required\)$/m);
    expect(r.stdout).not.toMatch(/s3:\/\/|https:\/\/host/);
  });
});
