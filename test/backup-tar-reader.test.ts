// The tar reader: archives written by GNU tar in every format it has read back exactly as
// the files on disk, and every malicious or damaged stream refused with one clear error.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync } from "node:child_process";
import { createReadStream, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { readTar, validateEntryPath, type TarEntry } from "../src/backup/tar-reader.ts";
import { KlioError } from "../src/util/errors.ts";

interface Read {
  entry: TarEntry;
  sha: string;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function readAllFrom(source: AsyncIterable<Uint8Array>): Promise<Map<string, Read>> {
  const out = new Map<string, Read>();
  for await (const { entry, content } of readTar(source)) {
    const h = createHash("sha256");
    for await (const b of content) h.update(b);
    out.set(entry.path, { entry, sha: h.digest("hex") });
  }
  return out;
}

/** `bytes` in pieces of `piece` bytes, each a fresh buffer that is overwritten once the next one is asked for. */
async function* pieces(bytes: Uint8Array, piece: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += piece) {
    const b = bytes.slice(at, at + piece);
    yield b;
    b.fill(0xa5); // the reader must not keep views past the next pull
  }
}

const readAll = (bytes: Uint8Array, piece = 700) => readAllFrom(pieces(bytes, piece));

// ---------------------------------------------------------------- archives from GNU tar

/** What the files under `root` (only the top-level `names`) should read back as. */
function expected(root: string, names: string[]): Map<string, Read> {
  const out = new Map<string, Read>();
  const visit = (rel: string) => {
    const full = path.join(root, rel);
    const st = lstatSync(full);
    const base = { path: rel, mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000) };
    if (st.isSymbolicLink()) {
      out.set(rel, { entry: { ...base, type: "symlink", size: 0, linkTarget: readlinkSync(full) }, sha: sha(new Uint8Array(0)) });
    } else if (st.isDirectory()) {
      out.set(rel, { entry: { ...base, type: "directory", size: 0 }, sha: sha(new Uint8Array(0)) });
      for (const n of readdirSync(full)) visit(`${rel}/${n}`);
    } else {
      out.set(rel, { entry: { ...base, type: "file", size: st.size }, sha: sha(readFileSync(full)) });
    }
  };
  for (const n of names) visit(n);
  return out;
}

describe("archives written by GNU tar", () => {
  let root: string;
  let work: string;
  const deep = `deep/${"x".repeat(60)}/${"y".repeat(60)}/file-with-a-long-name-${"z".repeat(70)}`; // > 100, fits ustar's prefix
  const veryLong = `very/${"v".repeat(120)}/${"w".repeat(120)}/${"u".repeat(99)}`; // > 255: pax or GNU long names only
  const ustarNames = ["empty", "one", "block", "block+1", "big", "deep", "link", "private", "ünïcødé.txt"];
  const allNames = [...ustarNames, "old", "very", "longlink"];

  beforeAll(() => {
    work = mkdtempSync(path.join(tmpdir(), "klio-tar-"));
    root = path.join(work, "root");
    mkdirSync(root);
    const file = (rel: string, content: Uint8Array | string, mode = 0o644) => {
      mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
      writeFileSync(path.join(root, rel), content);
      chmodSync(path.join(root, rel), mode);
    };
    file("empty", "");
    file("one", "1");
    file("block", randomBytes(512));
    file("block+1", randomBytes(513));
    file("big", randomBytes(3 * 1024 * 1024 + 17));
    file(deep, "deep\n");
    file(veryLong, "very long\n", 0o600);
    symlinkSync("big", path.join(root, "link"));
    symlinkSync("t".repeat(150), path.join(root, "longlink")); // dangling, and longer than the linkname field
    file("private/secret", "s", 0o600);
    chmodSync(path.join(root, "private"), 0o700);
    file("ünïcødé.txt", "unicode name");
    file("old", "from long ago");
    // Before 1901: GNU tar writes the mtime in base-256 (negative), pax as "mtime=-…".
    const longAgo = new Date(-2_200_000_000 * 1000); // a Date: utimes takes negative numbers as "now"
    utimesSync(path.join(root, "old"), longAgo, longAgo);
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  for (const format of ["gnu", "oldgnu", "posix", "ustar"] as const) {
    it(`reads --format=${format} exactly as the files on disk`, async () => {
      const names = format === "ustar" ? ustarNames : allNames;
      const tarFile = path.join(work, `${format}.tar`);
      execFileSync("tar", [`--format=${format}`, "-C", root, "-cf", tarFile, ...names]);
      const want = expected(root, names);
      if (format !== "ustar") expect(want.get("old")!.entry.mtime).toBeLessThan(0); // the file system may clamp it to -2^31
      // Small odd reads make headers and pax records straddle buffers; large ones do not.
      for (const highWaterMark of [333, 64 * 1024]) {
        const got = await readAllFrom(createReadStream(tarFile, { highWaterMark }));
        expect(got).toEqual(want);
      }
    });
  }

  it("reads `tar -C dir .` (the root entry \"./\" is skipped) and a pax global header", async () => {
    const tarFile = path.join(work, "dot.tar");
    execFileSync("tar", ["--format=posix", "--pax-option=comment=global", "-C", root, "-cf", tarFile, "."]);
    const bytes = new Uint8Array(readFileSync(tarFile));
    expect(bytes[156]).toBe("g".charCodeAt(0));
    expect(await readAll(bytes)).toEqual(expected(root, allNames.slice().sort()));
  });

  it("reads a size in GNU's base-256 form", async () => {
    // GNU tar writes base-256 only past 8 GB; the same file with its size field rewritten
    // in that form must read the same.
    const tarFile = path.join(work, "b256.tar");
    execFileSync("tar", ["--format=gnu", "-C", root, "-cf", tarFile, "big"]);
    const bytes = new Uint8Array(readFileSync(tarFile));
    const size = 3 * 1024 * 1024 + 17;
    bytes.fill(0, 124, 136);
    bytes[124] = 0x80;
    new DataView(bytes.buffer).setUint32(132, size);
    setChecksum(bytes.subarray(0, 512));
    const got = await readAll(bytes);
    expect(got.get("big")!.entry.size).toBe(size);
    expect(got.get("big")!.sha).toBe(sha(readFileSync(path.join(root, "big"))));
    // And a size beyond 8 GB: parsed, then the stream is found short of it.
    bytes.fill(0, 124, 136);
    bytes[124] = 0x80;
    new DataView(bytes.buffer).setBigUint64(128, 9n * 1024n ** 3n + 5n);
    setChecksum(bytes.subarray(0, 512));
    const sizes: number[] = [];
    await expect(
      (async () => {
        for await (const { entry, content } of readTar(pieces(bytes, 4096))) {
          sizes.push(entry.size);
          for await (const _ of content);
        }
      })(),
        ).rejects.toThrow(/ends inside the content of "big", \d{10} bytes short/);
    expect(sizes).toEqual([9 * 1024 ** 3 + 5]);
  });
});

// ---------------------------------------------------------------- hand-made archives

const enc = new TextEncoder();

function setChecksum(h: Uint8Array): void {
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.set(enc.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
}

interface HeaderOptions {
  name: string;
  type?: string;
  size?: number;
  mode?: number;
  linkname?: string;
  prefix?: string;
  /** Raw size field text instead of the octal of `size`. */
  sizeField?: string;
}

function header(o: HeaderOptions): Uint8Array {
  const h = new Uint8Array(512);
  const put = (s: string | Uint8Array, at: number, len: number) => h.set((typeof s === "string" ? enc.encode(s) : s).subarray(0, len), at);
  const octal = (n: number, digits: number) => n.toString(8).padStart(digits, "0") + "\0";
  put(o.name, 0, 100);
  put(octal(o.mode ?? 0o644, 7), 100, 8);
  put(octal(0, 7), 108, 8);
  put(octal(0, 7), 116, 8);
  put(o.sizeField ?? octal(o.size ?? 0, 11), 124, 12);
  put(octal(1_700_000_000, 11), 136, 12);
  put(o.type ?? "0", 156, 1);
  put(o.linkname ?? "", 157, 100);
  put("ustar\x0000", 257, 8);
  put(o.prefix ?? "", 345, 155);
  setChecksum(h);
  return h;
}

function padded(content: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(content.length / 512) * 512);
  out.set(content);
  return out;
}

function file(name: string, content: string | Uint8Array = "", extra: Partial<HeaderOptions> = {}): Uint8Array[] {
  const data = typeof content === "string" ? enc.encode(content) : content;
  return [header({ name, size: data.length, ...extra }), padded(data)];
}

function paxHeader(records: Record<string, string>, type: "x" | "g" = "x"): Uint8Array[] {
  let text = "";
  for (const [k, v] of Object.entries(records)) {
    const body = ` ${k}=${v}\n`;
    let len = body.length + 1;
    while (String(len).length + enc.encode(body).length !== len) len = String(len).length + enc.encode(body).length;
    text += `${len}${body}`;
  }
  return file("PaxHeader", text, { type });
}

function tar(...parts: Uint8Array[][]): Uint8Array {
  const all = [...parts.flat(), new Uint8Array(1024)];
  const out = new Uint8Array(all.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of all) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

describe("hand-made archives", () => {
  it("reads ustar prefixes, pax paths, sizes and global headers, GNU long names and links", async () => {
    const got = await readAll(
      tar(
        file("name.txt", "prefixed", { prefix: "some/prefix" }),
        paxHeader({ comment: "applies to all", mtime: "1234567890.75" }, "g"),
        paxHeader({ path: "pax/ü-name", size: "5" }),
        file("ignored-name", "12345", { sizeField: "00000000000\0" }),
        file("././L", "gnu/long/" + "n".repeat(200) + "\0", { type: "L" }),
        file("short", "long-named"),
        file("././K", "/a/long/target/" + "t".repeat(200) + "\0", { type: "K" }),
        file("lnk", "", { type: "2", linkname: "ignored" }),
        file("dir/", "", { type: "5", mode: 0o750 }),
      ),
      100,
    );
    expect([...got.values()].map((r) => r.entry)).toEqual([
      { path: "some/prefix/name.txt", type: "file", mode: 0o644, size: 8, mtime: 1_700_000_000 },
      { path: "pax/ü-name", type: "file", mode: 0o644, size: 5, mtime: 1234567890 },
      { path: "gnu/long/" + "n".repeat(200), type: "file", mode: 0o644, size: 10, mtime: 1234567890 },
      { path: "lnk", type: "symlink", mode: 0o644, size: 0, mtime: 1234567890, linkTarget: "/a/long/target/" + "t".repeat(200) },
      { path: "dir", type: "directory", mode: 0o750, size: 0, mtime: 1234567890 },
    ]);
    expect(got.get("pax/ü-name")!.sha).toBe(sha(enc.encode("12345")));
  });

  it("skips content the consumer leaves (wholly or partly), and hands over views of the source's buffers, never a whole file", async () => {
    const big = randomBytes(1024 * 1024 + 3);
    const bytes = tar(file("a", big), file("b", "bee"), file("c", big));
    const seen: string[] = [];
    let largest = 0;
    for await (const { entry, content } of readTar(pieces(bytes, 64 * 1024))) {
      seen.push(entry.path);
      if (entry.path === "a") for await (const _ of content) break; // one piece, then leave it
      if (entry.path === "c") {
        const h = createHash("sha256");
        for await (const b of content) {
          largest = Math.max(largest, b.length);
          h.update(b);
        }
        expect(h.digest("hex")).toBe(sha(big));
      }
    }
    expect(seen).toEqual(["a", "b", "c"]);
    expect(largest).toBeLessThanOrEqual(64 * 1024);
  });

  it("refuses to read an entry's content after moving on", async () => {
    const it = readTar(pieces(tar(file("a", "aaa"), file("b", "bbb")), 512))[Symbol.asyncIterator]();
    const first = (await it.next()).value!;
    await it.next();
    await expect((async () => { for await (const _ of first.content); })()).rejects.toMatchObject({ code: "tar-usage" });
    await it.return?.(undefined);
  });

  it("reads to the end of the source, ignoring what follows the end-of-archive marker; closes it when stopped early", async () => {
    let finished = false;
    let closed = false;
    async function* source() {
      try {
        yield tar(file("a", "x"));
        yield new Uint8Array(10240 - 2048); // GNU tar's record padding
        finished = true;
      } finally {
        closed = true;
      }
    }
    await readAllFrom(source());
    expect(finished).toBe(true);
    finished = closed = false;
    for await (const _ of readTar(source())) break;
    expect(finished).toBe(false);
    expect(closed).toBe(true);
  });

  const refusals: [string, () => Uint8Array, string, RegExp][] = [
    ["an absolute path", () => tar(file("/etc/passwd", "x")), "bad-tar-entry", /absolute path "\/etc\/passwd"/],
    ["an absolute pax path", () => tar(paxHeader({ path: "/etc/shadow" }), file("ok", "x")), "bad-tar-entry", /absolute path "\/etc\/shadow"/],
    ["a .. component", () => tar(file("a/../../etc/passwd", "x")), "bad-tar-entry", /contains "\.\."/],
    ["a .. in a GNU long name", () => tar(file("././L", "../x\0", { type: "L" }), file("ok", "x")), "bad-tar-entry", /contains "\.\."/],
    ["a NUL byte in a pax path", () => tar(paxHeader({ path: "a\0b" }), file("ok", "x")), "bad-tar-entry", /contains a NUL byte/],
    ["a NUL byte in a GNU long name", () => tar(file("././L", "safe\0../../evil\0", { type: "L" }), file("ok", "x")), "bad-tar-entry", /contains a NUL byte/],
    ["an empty name", () => tar(file("", "x")), "bad-tar-entry", /empty path/],
    ["a name of dots only", () => tar(file("./.", "x")), "bad-tar-entry", /names no file/],
    ["a hard link", () => tar(file("h", "", { type: "1", linkname: "/etc/passwd" })), "bad-tar-entry", /"h" at byte 0 is a hard link/],
    ["a character device", () => tar(file("c", "", { type: "3" })), "bad-tar-entry", /device file/],
    ["a block device", () => tar(file("b", "", { type: "4" })), "bad-tar-entry", /device file/],
    ["a FIFO", () => tar(file("f", "", { type: "6" })), "bad-tar-entry", /FIFO/],
    ["a sparse file", () => tar(file("s", "", { type: "S" })), "bad-tar-entry", /sparse/],
    ["an unknown type", () => tar(file("u", "", { type: "Z" })), "bad-tar-entry", /unsupported entry type "Z"/],
    ["a file beneath a symlink", () => tar(file("a", "", { type: "2", linkname: "/etc" }), file("a/passwd", "x")), "bad-tar-entry", /beneath the symbolic link "a"/],
    ["a symlink without target", () => tar(file("l", "", { type: "2" })), "bad-tar-entry", /without a target/],
    ["a directory with content", () => tar(file("d", "xyz", { type: "5" })), "bad-tar-entry", /directory with content/],
    ["a bad checksum", () => { const t = tar(file("a", "x")); t[10] = 0x41; return t; }, "bad-tar", /checksum mismatch at byte 0/],
    ["not a tar at all", () => enc.encode("hello world\n".repeat(100)), "bad-tar", /checksum mismatch/],
    ["a size that does not parse", () => tar(file("a", "", { sizeField: "12x4\0" })), "bad-tar", /"a" at byte 0: the size field does not parse/],
    ["a negative base-256 size", () => { const h = header({ name: "a" }); h.fill(0xff, 124, 136); setChecksum(h); return tar([h]); }, "bad-tar", /size field does not parse/],
    ["a pax size that is not a number", () => tar(paxHeader({ size: "1e9" }), file("a", "")), "bad-tar", /pax size "1e9" is not a number/],
    ["a malformed pax record", () => tar(file("PaxHeader", "99 path=x\n", { type: "x" }), file("a", "")), "bad-tar", /malformed record/],
    ["a pax header over 1 MB", () => tar(file("PaxHeader", new Uint8Array(1024 * 1024 + 1), { type: "x" }), file("a", "")), "bad-tar", /more than 1048576/],
    ["a pax header and no entry", () => tar(paxHeader({ path: "x" })), "bad-tar", /without the entry it describes/],
    ["an empty stream", () => new Uint8Array(0), "bad-tar", /ends at byte 0 without the end-of-archive marker/],
    ["no end-of-archive marker", () => tar(file("a", "x")).subarray(0, 1024), "bad-tar", /ends at byte 1024 without the end-of-archive marker/],
    ["one zero block only", () => tar(file("a", "x")).subarray(0, 1536), "bad-tar", /after one zero block/],
    ["a stream cut inside a header", () => tar(file("a", "x"), file("b", "y")).subarray(0, 1100), "bad-tar", /inside a header block at byte 1024/],
    ["a stream cut inside content", () => tar(file("a", "x".repeat(5000))).subarray(0, 3000), "bad-tar", /inside the content of "a"/],
    ["a stream cut inside a pax header", () => tar(paxHeader({ path: "p".repeat(600) })).subarray(0, 700), "bad-tar", /inside the pax header/],
  ];
  for (const [what, make, code, message] of refusals) {
    it(`refuses ${what}`, async () => {
      const bytes = make();
      for (const piece of [bytes.length || 1, 100]) {
        const e = await readAll(bytes, piece).then(
          () => null,
          (err: unknown) => err,
        );
        expect(e, `${what}, pieces of ${piece}`).toBeInstanceOf(KlioError);
        expect((e as KlioError).code).toBe(code);
        expect((e as KlioError).message).toMatch(message);
      }
    });
  }
});

describe("validateEntryPath", () => {
  it("normalises relative paths", () => {
    expect(validateEntryPath("./base/1/1259")).toBe("base/1/1259");
    expect(validateEntryPath("pg_tblspc//16385/")).toBe("pg_tblspc/16385");
    expect(validateEntryPath("a/./b")).toBe("a/b");
    expect(validateEntryPath("..a/b..")).toBe("..a/b..");
  });
  it("refuses what could escape or names nothing", () => {
    for (const [p, m] of [
      ["", /empty/],
      ["/abs", /absolute/],
      ["//abs", /absolute/],
      ["..", /"\.\."/],
      ["a/..", /"\.\."/],
      ["a/../b", /"\.\."/],
      ["a\0b", /NUL/],
      [".", /names no file/],
      ["./", /names no file/],
      ["x/".repeat(2049), /longer than 4096/],
    ] as const) {
      expect(() => validateEntryPath(p), JSON.stringify(p)).toThrow(m);
      expect(() => validateEntryPath(p)).toThrow(expect.objectContaining({ code: "bad-tar-entry" }));
    }
  });
});
