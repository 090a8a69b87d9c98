import type { Command } from "../command.ts";
import { KlioError } from "../../util/errors.ts";
import { repoFlag } from "../repo-location.ts";
import { readPassphrase } from "../secret-files.ts";
import { COMPRESSIONS, isCompression } from "../../repo/codec.ts";
import { DEFAULT_COMPRESSION, initRepository, openRepository } from "../../repo/repository.ts";

export const command: Command = {
  spec: {
    name: "init",
    summary: "Create a repository.",
    usage: "klio init --repo DIR [--encryption-passphrase-file FILE] [--compression brotli|deflate|lz4|none] [--pack-size 32MiB] [--json]",
    flags: {
      repo: repoFlag("init", { help: "directory of the new repository (created; if it exists, it must be empty or hold only a WAL archive)", why: "creates a repository directory" }),
      "encryption-passphrase-file": { kind: "string", value: "FILE", help: "encrypt the repository with the passphrase in FILE (or KLIO_PASSPHRASE_FILE)" },
      compression: { kind: "string", value: "NAME", help: `compression of new chunks: ${COMPRESSIONS.join(" or ")} (default ${DEFAULT_COMPRESSION})` },
      "pack-size": { kind: "string", value: "SIZE", help: "pack files are sealed at about this size: 64KiB to 1GiB (default 32MiB); smaller packs let maintenance free space in finer steps" },
      json: { kind: "boolean", help: "print JSON for scripts" },
    },
    details:
      "An encrypted repository cannot be read without its passphrase: keep a copy of the passphrase file somewhere other than the repository.",
  },
  async run(args, ctx) {
    const f = args.flags;
    const dir = String(f.repo);
    if (dir === "") throw new KlioError("usage", "--repo needs a directory");
    const compression = (f.compression as string | undefined) ?? DEFAULT_COMPRESSION;
    if (!isCompression(compression)) throw new KlioError("usage", `--compression must be ${COMPRESSIONS.join(" or ")}, not "${compression}"`);
    const passFile = (f["encryption-passphrase-file"] as string | undefined) ?? ctx.env.KLIO_PASSPHRASE_FILE;
    const passphrase = await readPassphrase(passFile);
    const packTargetBytes = f["pack-size"] === undefined ? undefined : parsePackSize(String(f["pack-size"]));
    await initRepository(dir, { passphrase, compression, packTargetBytes });
    const repo = await openRepository(dir, { passphrase });
    try {
      const out = { repo: dir, id: repo.id, encrypted: repo.encrypted, compression, packTargetBytes: repo.header.parameters.packTargetBytes };
      ctx.stdout(
        f.json
          ? JSON.stringify(out, null, 2) + "\n"
          : `created repository ${dir} (id ${repo.id}, ${repo.encrypted ? "encrypted" : "not encrypted"}, compression ${compression})\n`,
      );
    } finally {
      await repo.close();
    }
    return 0;
  },
};

function parsePackSize(text: string): number {
  const m = /^(\d+)\s*(?:([kmg])(?:i?b)?)?$/i.exec(text.trim());
  const n = m ? Number(m[1]) * 1024 ** ({ k: 1, m: 2, g: 3 }[(m[2] ?? "").toLowerCase() as "k" | "m" | "g"] ?? 0) : NaN;
  if (!(n >= 64 * 1024 && n <= 1024 ** 3)) throw new KlioError("usage", `--pack-size must be a size from 64KiB to 1GiB (such as 4MiB), got "${text}"`);
  return n;
}
