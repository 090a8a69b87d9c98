// PostgreSQL frontend/backend protocol 3.0: the bytes of the messages we send, the parsing of
// the ones we receive, and the framer that cuts a byte stream into messages. Nothing here
// knows about sockets or connection state; replication-connection.ts drives it.
//
// Every parser takes the message *body* (after the type byte and the length) as a
// Uint8Array view and reads it once; nothing is copied unless it has to become a string.
import { KlioError } from "../util/errors.ts";
import type { PgFields } from "./server-error.ts";

export const PROTOCOL_3_0 = 3 << 16;
const SSL_REQUEST_CODE = 80877103;

/** Type bytes of backend messages. */
export const Backend = {
  Authentication: 0x52, // R
  BackendKeyData: 0x4b, // K
  CommandComplete: 0x43, // C
  CopyBothResponse: 0x57, // W
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  DataRow: 0x44, // D
  EmptyQueryResponse: 0x49, // I
  ErrorResponse: 0x45, // E
  NegotiateProtocolVersion: 0x76, // v
  NoticeResponse: 0x4e, // N
  NotificationResponse: 0x41, // A
  ParameterStatus: 0x53, // S
  ReadyForQuery: 0x5a, // Z
  RowDescription: 0x54, // T
} as const;

/** Authentication request codes (the Int32 that follows 'R'). */
export const Auth = {
  Ok: 0,
  KerberosV5: 2,
  CleartextPassword: 3,
  MD5Password: 5,
  GSS: 7,
  GSSContinue: 8,
  SSPI: 9,
  SASL: 10,
  SASLContinue: 11,
  SASLFinal: 12,
} as const;

/** Messages larger than this are taken as a corrupt stream, not allocated (the server's own limit is 1 GB). */
const MAX_MESSAGE = 0x40000000 + 64;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

export function text(b: Uint8Array, start = 0, end = b.length): string {
  return decoder.decode(b.subarray(start, end));
}

export function readInt32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) | 0;
}

export function readInt16(b: Uint8Array, at: number): number {
  return ((b[at]! << 8) | b[at + 1]!) << 16 >> 16;
}

function writeInt32(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 24;
  b[at + 1] = v >>> 16;
  b[at + 2] = v >>> 8;
  b[at + 3] = v;
}

function protocolError(message: string): KlioError {
  return new KlioError("pg-protocol", `protocol violation: ${message}`);
}

/** Index just past the NUL that ends the C string starting at `at`. */
function cstringEnd(b: Uint8Array, at: number, what: string): number {
  const nul = b.indexOf(0, at);
  if (nul < 0) throw protocolError(`unterminated string in ${what}`);
  return nul;
}

// ---------------------------------------------------------------- frontend messages

function assemble(type: number, parts: (Uint8Array | string | number)[], bytes: (Uint8Array | number)[], size: number): Uint8Array {
  const hasType = type !== 0;
  const out = new Uint8Array(size + (hasType ? 1 : 0));
  let at = 0;
  if (hasType) out[at++] = type;
  writeInt32(out, at, size);
  at += 4;
  for (let i = 0; i < parts.length; i++) {
    const p = bytes[i]!;
    if (typeof p === "number") {
      writeInt32(out, at, p);
      at += 4;
    } else {
      out.set(p, at);
      at += p.length;
      if (typeof parts[i] === "string") out[at++] = 0;
    }
  }
  return out;
}

function build(type: number, parts: (Uint8Array | string | number)[]): Uint8Array {
  const bytes = parts.map((p) => (typeof p === "string" ? utf8(p) : p));
  let size = 4;
  for (let i = 0; i < parts.length; i++) {
    const p = bytes[i]!;
    size += typeof p === "number" ? 4 : p.length + (typeof parts[i] === "string" ? 1 : 0);
  }
  return assemble(type, parts, bytes, size);
}

/** StartupMessage for protocol 3.0; parameters with an undefined value are left out. */
export function startupMessage(params: Record<string, string | undefined>): Uint8Array {
  const parts: (string | number)[] = [PROTOCOL_3_0];
  for (const [k, v] of Object.entries(params)) if (v !== undefined) parts.push(k, v);
  parts.push("");
  return build(0, parts);
}

export function sslRequest(): Uint8Array {
  return build(0, [SSL_REQUEST_CODE]);
}

export function queryMessage(sql: string): Uint8Array {
  return build(0x51 /* Q */, [sql]);
}

/** PasswordMessage with a cleartext or MD5-hashed password (a C string). */
export function passwordMessage(password: string): Uint8Array {
  return build(0x70 /* p */, [password]);
}

export function saslInitialResponse(mechanism: string, data: Uint8Array): Uint8Array {
  return build(0x70 /* p */, [mechanism, data.length, data]);
}

export function saslResponse(data: Uint8Array): Uint8Array {
  return build(0x70 /* p */, [data]);
}

/** The five bytes that precede a CopyData payload: send them and the payload without joining them. */
export function copyDataHeader(payloadLength: number): Uint8Array {
  const h = new Uint8Array(5);
  h[0] = 0x64; // d
  writeInt32(h, 1, payloadLength + 4);
  return h;
}

/** One CopyData message in one buffer (for small payloads, where a copy is cheaper than two writes). */
export function copyData(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(payload.length + 5);
  out[0] = 0x64;
  writeInt32(out, 1, payload.length + 4);
  out.set(payload, 5);
  return out;
}

export const copyDone: Uint8Array = build(0x63 /* c */, []);
export const terminate: Uint8Array = build(0x58 /* X */, []);

export function copyFail(reason: string): Uint8Array {
  return build(0x66 /* f */, [reason]);
}

// ---------------------------------------------------------------- backend messages

export interface ColumnDescription {
  name: string;
  typeOid: number;
}

/** RowDescription: Int16 count, then per column name, table oid, attnum, type oid, typlen, typmod, format. */
export function parseRowDescription(b: Uint8Array): ColumnDescription[] {
  const n = readInt16(b, 0);
  const columns: ColumnDescription[] = new Array(n);
  let at = 2;
  for (let i = 0; i < n; i++) {
    const end = cstringEnd(b, at, "RowDescription");
    const name = text(b, at, end);
    at = end + 1;
    if (at + 18 > b.length) throw protocolError("truncated RowDescription");
    columns[i] = { name, typeOid: readInt32(b, at + 6) >>> 0 };
    at += 18;
  }
  return columns;
}

/** DataRow in text format: Int16 count, then per value Int32 length (-1 = NULL) and bytes. */
export function parseDataRow(b: Uint8Array): (string | null)[] {
  const n = readInt16(b, 0);
  const row: (string | null)[] = new Array(n);
  let at = 2;
  for (let i = 0; i < n; i++) {
    if (at + 4 > b.length) throw protocolError("truncated DataRow");
    const len = readInt32(b, at);
    at += 4;
    if (len < 0) {
      row[i] = null;
    } else {
      if (at + len > b.length) throw protocolError("truncated DataRow");
      row[i] = text(b, at, at + len);
      at += len;
    }
  }
  return row;
}

/** ErrorResponse / NoticeResponse: pairs of a type byte and a C string, ended by a zero byte. */
export function parseFields(b: Uint8Array): PgFields {
  const fields: Record<string, string> = {};
  let at = 0;
  while (at < b.length && b[at] !== 0) {
    const key = String.fromCharCode(b[at]!);
    const end = cstringEnd(b, at + 1, "ErrorResponse");
    fields[key] = text(b, at + 1, end);
    at = end + 1;
  }
  return fields;
}

/** A message that is a single C string (CommandComplete's tag). */
export function parseCString(b: Uint8Array, what: string): string {
  return text(b, 0, cstringEnd(b, 0, what));
}

export function parseParameterStatus(b: Uint8Array): [string, string] {
  const nameEnd = cstringEnd(b, 0, "ParameterStatus");
  const valueEnd = cstringEnd(b, nameEnd + 1, "ParameterStatus");
  return [text(b, 0, nameEnd), text(b, nameEnd + 1, valueEnd)];
}

/** The list of C strings ended by an empty one (AuthenticationSASL's mechanisms). */
export function parseStringList(b: Uint8Array, at: number, what: string): string[] {
  const out: string[] = [];
  while (at < b.length && b[at] !== 0) {
    const end = cstringEnd(b, at, what);
    out.push(text(b, at, end));
    at = end + 1;
  }
  return out;
}

/** NegotiateProtocolVersion: newest minor version the server supports, and the options it did not recognise. */
export function parseNegotiateProtocolVersion(b: Uint8Array): { minor: number; unrecognized: string[] } {
  const version = readInt32(b, 0);
  const count = readInt32(b, 4);
  const unrecognized: string[] = [];
  let at = 8;
  for (let i = 0; i < count; i++) {
    const end = cstringEnd(b, at, "NegotiateProtocolVersion");
    unrecognized.push(text(b, at, end));
    at = end + 1;
  }
  return { minor: version & 0xffff, unrecognized };
}

// ---------------------------------------------------------------- framing

/**
 * `body` is the message without its type byte and length. `gathered` says where it lives:
 * true, in a buffer of its own (from FramerOptions.gather, or the shared empty one) that the
 * handler may keep; false, in the chunk passed to push(), valid for as long as that chunk is
 * (a reader that reads into one buffer again and again must copy what it keeps).
 */
export type MessageHandler = (type: number, body: Uint8Array, gathered: boolean) => void;

export interface FramerOptions {
  /** The buffer to gather a body of `size` bytes into when it spans chunks; default a new Uint8Array. */
  gather?: (type: number, size: number) => Uint8Array;
}

/**
 * Cuts a byte stream into messages. A message that lies within one chunk is handed over as a
 * view into that chunk; one that spans chunks is gathered into a buffer of exactly its size,
 * so every byte is copied at most once. The framer keeps no reference to a chunk after push()
 * returns. Handlers may throw: the exception propagates out of push() and the framer must not
 * be used again (the connection is dead anyway).
 */
export interface Framer {
  push(chunk: Uint8Array): void;
  /** Bytes of an incomplete message held back. */
  readonly pending: number;
}

const EMPTY = new Uint8Array(0);

export function createFramer(onMessage: MessageHandler, opts: FramerOptions = {}): Framer {
  const gather = opts.gather ?? ((_type: number, size: number) => new Uint8Array(size));
  const head = new Uint8Array(5); // a header split across chunks
  let headLen = 0;
  let body: Uint8Array | null = null; // the body being gathered
  let bodyType = 0;
  let bodyFilled = 0;

  function startBody(type: number, length: number): Uint8Array | null {
    if (length < 4 || length > MAX_MESSAGE) throw protocolError(`invalid message length ${length} for message type '${String.fromCharCode(type)}'`);
    if (length === 4) {
      onMessage(type, EMPTY, true);
      return null;
    }
    const b = gather(type, length - 4);
    if (b.length !== length - 4) throw new RangeError(`gather() returned ${b.length} bytes for a body of ${length - 4}`);
    bodyType = type;
    bodyFilled = 0;
    return (body = b);
  }

  function push(chunk: Uint8Array): void {
    const n = chunk.length;
    let at = 0;

    if (body !== null) {
      const take = Math.min(body.length - bodyFilled, n);
      body.set(take === n ? chunk : chunk.subarray(0, take), bodyFilled);
      bodyFilled += take;
      at = take;
      if (bodyFilled < body.length) return;
      const done = body;
      body = null;
      onMessage(bodyType, done, true);
    }

    if (headLen > 0) {
      const take = Math.min(5 - headLen, n - at);
      head.set(chunk.subarray(at, at + take), headLen);
      headLen += take;
      at += take;
      if (headLen < 5) return;
      headLen = 0;
      const b = startBody(head[0]!, readInt32(head, 1) >>> 0);
      if (b !== null) {
        const take2 = Math.min(b.length, n - at);
        b.set(chunk.subarray(at, at + take2));
        bodyFilled = take2;
        at += take2;
        if (bodyFilled < b.length) return;
        body = null;
        onMessage(bodyType, b, true);
      }
    }

    while (n - at >= 5) {
      const type = chunk[at]!;
      const length = readInt32(chunk, at + 1) >>> 0;
      const end = at + 1 + length;
      if (end <= n && length >= 4) {
        onMessage(type, chunk.subarray(at + 5, end), false);
        at = end;
        continue;
      }
      const b = startBody(type, length)!; // length === 4 always fits, so b is a real buffer
      const take = n - at - 5;
      b.set(chunk.subarray(at + 5, n));
      bodyFilled = take;
      return;
    }

    if (at < n) {
      head.set(chunk.subarray(at, n));
      headLen = n - at;
    }
  }

  return {
    push,
    get pending() {
      return body !== null ? bodyFilled + 5 : headLen;
    },
  };
}

// ---------------------------------------------------------------- arena

/**
 * A ring of memory for CopyData payloads, allocated once (on first use), so that a stream of
 * WAL does not cost a fresh, zeroed buffer per message. Regions are handed out in ring order;
 * the caller says which is the oldest it still needs (release), and everything from there on
 * stays untouched. When no contiguous free region is large enough, alloc() returns null and
 * the caller allocates one-off: correctness never depends on the arena's size.
 */
export interface Arena {
  /** A region of `size` bytes that overlaps no live one, or null if there is none. */
  alloc(size: number): Uint8Array | null;
  /** Frees every region allocated before `oldest` (a region alloc() returned, live), or all when null. */
  release(oldest: Uint8Array | null): void;
  /** Whether `b` is (part of) a region of this arena. */
  holds(b: Uint8Array): boolean;
}

export function createArena(size: number): Arena {
  let mem: Uint8Array | null = null;
  let head = 0; // where the next region starts
  let tail = 0; // where the oldest live region starts
  let empty = true; // with head === tail: nothing live (else: full)
  const holds = (b: Uint8Array) => mem !== null && b.buffer === mem.buffer;

  return {
    alloc(n) {
      if (n > size || n === 0) return null;
      mem ??= new Uint8Array(size);
      let at: number;
      if (empty) {
        at = 0;
        tail = 0;
      } else if (head > tail) {
        // live: [tail, head); free: [head, size) and [0, tail)
        if (size - head >= n) at = head;
        else if (tail >= n) at = 0;
        else return null;
      } else {
        // wrapped (or full): live from tail to the end of the last region before the wrap, and [0, head)
        if (tail - head >= n) at = head;
        else return null;
      }
      head = at + n;
      empty = false;
      return mem.subarray(at, head);
    },
    release(oldest) {
      if (oldest === null) {
        empty = true;
        head = tail = 0;
        return;
      }
      if (!holds(oldest)) throw new RangeError("release() of a region the arena does not hold");
      tail = oldest.byteOffset;
    },
    holds,
  };
}
