// Commands that write a repository (and those that read what only a directory has) refuse an
// s3:// or https:// --repo with one line and exit 2, before they create, connect to or read
// anything; readers take all three.
import { describe, it, expect } from "vitest";
import { existsSync, readdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { runKlioAsync, ROOT } from "./harness/klio.ts";
import { repoFlag, repoLocationKind } from "../src/cli/repo-location.ts";

const S3 = "s3://bucket/klio";
const API = "https://backup-vm:8443";

/** Each command that takes only a directory, with the other arguments it needs (all valid). */
const DIRECTORY_ONLY: string[][] = [
  ["init"],
  ["wal", "stream", "--cluster", "db1", "--pg", "host=127.0.0.1 port=1"],
  ["wal", "status"],
  ["backup", "run", "--cluster", "db1", "--pg", "host=127.0.0.1 port=1"],
  ["backup", "delete", "20260101T000000Z"],
  ["backup", "pin", "20260101T000000Z"],
  ["backup", "unpin", "20260101T000000Z"],
  ["retention", "get"],
  ["retention", "set", "--cluster", "db1", "--full", "2"],
  ["retention", "apply", "--dry-run"],
  ["repo", "maintenance", "--dry-run"],
  ["offsite", "sync", "--once", "--to", "s3://copy/x", "--s3-endpoint", "http://127.0.0.1:1"],
  ["offsite", "status", "--to", "s3://copy/x", "--s3-endpoint", "http://127.0.0.1:1"],
  ["offsite", "verify", "--to", "s3://copy/x", "--s3-endpoint", "http://127.0.0.1:1"],
];

describe("repository locations per command", () => {
  it("a command that takes only a directory refuses s3:// and https:// with one line, exit 2, touching nothing", { timeout: 120_000 }, async () => {
    const before = readdirSync(ROOT).sort();
    const runs = DIRECTORY_ONLY.flatMap((args) => [S3, API].map(async (location) => {
      const name = args.filter((a) => !a.startsWith("-")).slice(0, args[0] === "init" ? 1 : 2).join(" ");
      const r = await runKlioAsync([...args, "--repo", location], { env: { KLIO_S3_ENDPOINT: "http://127.0.0.1:1" }, timeoutMs: 60_000 });
      const what = `klio ${name} --repo ${location}`;
      expect(r.code, `${what}: ${r.stderr}`).toBe(2);
      expect(r.stdout, what).toBe("");
      expect(r.stderr.startsWith(`klio: ${name}: --repo takes a repository directory, not ${JSON.stringify(location)}: ${name} `), `${what}: ${r.stderr}`).toBe(true);
      expect(r.stderr.split("\n").length, what).toBe(2); // one line
    }));
    await Promise.all(runs);
    // Nothing was created where the location would be a relative path (s3:/…, https:/…).
    expect(readdirSync(ROOT).sort()).toEqual(before);
    expect(existsSync(path.join(ROOT, "s3:"))).toBe(false);
    expect(existsSync(path.join(ROOT, "https:"))).toBe(false);
  });

  it("wal status says it reads a directory's archive", async () => {
    const r = await runKlioAsync(["wal", "status", "--repo", S3]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`klio: wal status: --repo takes a repository directory, not "${S3}": wal status reads the WAL archive of a repository directory (get-wal reads the others)\n`);
  });

  it("backup run says why, and where the S3 copy comes from", async () => {
    const r = await runKlioAsync(["backup", "run", "--repo", S3, "--cluster", "db1"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^klio: backup run: --repo takes a repository directory, not "s3:\/\/bucket\/klio": backup run writes the backup into it, .*klio offsite sync/);
  });

  it("readers accept the remote locations at parse time; repo export refuses only the API", async () => {
    const reader = repoFlag("restore", { remote: ["api", "s3"] });
    for (const l of ["/var/lib/klio", S3, API]) expect(() => reader.check!(l)).not.toThrow();
    const exporter = repoFlag("repo export", { remote: ["s3"], why: "reads no repository over the appliance's API" });
    expect(() => exporter.check!(S3)).not.toThrow();
    expect(() => exporter.check!(API)).toThrow(/repo export: --repo takes a repository directory or an S3 copy \(s3:\/\/BUCKET\[\/PREFIX\]\), not "https:\/\/backup-vm:8443"/);
    expect([repoLocationKind("rel/dir"), repoLocationKind("S3://B"), repoLocationKind("http://x")]).toEqual(["directory", "s3", "api"]);
    const r = await runKlioAsync(["repo", "export", path.join(os.tmpdir(), "klio-nowhere"), "--repo", API]);
    expect(r.code).toBe(2);
    expect(r.stderr.split("\n").length).toBe(2);
  });
});
