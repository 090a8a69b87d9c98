// The floor of a synchronous WAL receiver written for Node: the fewest steps the job needs
// (read, pwrite, fdatasync, reply) with no klio code at all, for bench:wal's latency runs to
// show what the runtime itself costs next to pg_receivewal. Not a product: trust auth only,
// one segment file, no timeline or segment-boundary handling (a 5 s run stays in one segment).
//
//   node scripts/wal-floor.mjs HOST PORT SLOT START_LSN FILE
import net from "node:net";
import { fdatasyncSync, openSync, writeSync } from "node:fs";

const [host, port, slot, startText, file] = process.argv.slice(2);
const [hi, lo] = startText.split("/").map((h) => BigInt("0x" + h));
const SEG = 16n * 1024n * 1024n;
const start = ((hi << 32n) | lo) - (((hi << 32n) | lo) % SEG);
const fd = openSync(file, "w+");
writeSync(fd, new Uint8Array(Number(SEG)), 0, Number(SEG), 0); // zero-filled, like a .partial
fdatasyncSync(fd);

const cstr = (s) => Buffer.from(s + "\0");
function message(type, body) {
  const b = Buffer.alloc(5 + body.length);
  b[0] = type.charCodeAt(0);
  b.writeInt32BE(4 + body.length, 1);
  body.copy(b, 5);
  return b;
}

const sock = net.connect({ host, port: Number(port), noDelay: true });
sock.on("connect", () => {
  const body = Buffer.concat([Buffer.from([0, 3, 0, 0]), cstr("user"), cstr("postgres"), cstr("replication"), cstr("true"), cstr("application_name"), cstr("node_floor"), Buffer.from([0])]);
  const len = Buffer.alloc(4);
  len.writeInt32BE(4 + body.length);
  sock.write(Buffer.concat([len, body]));
});
let pending = Buffer.alloc(0);
let streaming = false;
let written = start;
const reply = Buffer.alloc(34);
sock.on("data", (d) => {
  pending = pending.length ? Buffer.concat([pending, d]) : d;
  let wrote = false;
  while (pending.length >= 5) {
    const len = pending.readInt32BE(1);
    if (pending.length < 1 + len) break;
    const type = pending[0];
    const body = pending.subarray(5, 1 + len);
    pending = pending.subarray(1 + len);
    if (type === 0x45 /* E */) {
      process.stderr.write(`server error: ${body.toString().replace(/\0/g, " ")}\n`);
      process.exit(1);
    }
    if (type === 0x5a /* Z */ && !streaming) {
      streaming = true;
      sock.write(message("Q", cstr(`START_REPLICATION SLOT ${slot} PHYSICAL ${(start >> 32n).toString(16)}/${(start & 0xffffffffn).toString(16)}`)));
    }
    if (type === 0x64 /* d */ && body[0] === 0x77 /* w */) {
      const at = body.readBigUInt64BE(1);
      const data = body.subarray(25);
      writeSync(fd, data, 0, data.length, Number(at % SEG));
      written = at + BigInt(data.length);
      wrote = true;
    }
  }
  if (wrote) {
    fdatasyncSync(fd);
    reply[0] = 0x72; // r: written, flushed, applied (none), clock, no reply wanted
    reply.writeBigUInt64BE(written, 1);
    reply.writeBigUInt64BE(written, 9);
    reply.writeBigUInt64BE(0n, 17);
    reply.writeBigInt64BE(BigInt(Date.now()) * 1000n - 946684800000000n, 25);
    reply[33] = 0;
    sock.write(message("d", reply));
  }
});
sock.on("error", (e) => {
  process.stderr.write(`${e.message}\n`);
  process.exit(1);
});
