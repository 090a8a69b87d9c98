import { describe, it, expect } from "vitest";
import { createArena, createFramer } from "../src/pg/protocol.ts";

/** A deterministic byte of region `id` at `offset`, so an overwrite shows. */
const byteOf = (id: number, offset: number) => (id * 131 + offset * 7 + 1) & 0xff;

function fill(b: Uint8Array, id: number): void {
  for (let i = 0; i < b.length; i++) b[i] = byteOf(id, i);
}

function intact(b: Uint8Array, id: number): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== byteOf(id, i)) return false;
  return true;
}

/** One protocol message: type byte, int32 length, body. */
const msg = (type: string, body: Uint8Array) => {
  const out = new Uint8Array(body.length + 5);
  out[0] = type.charCodeAt(0);
  new DataView(out.buffer).setInt32(1, body.length + 4);
  out.set(body, 5);
  return out;
};

describe("arena", () => {
  it("never hands out a region that overlaps one still live, and says null when none fits", () => {
    // Given a small arena and a consumer that frees its oldest regions in random steps,
    const arena = createArena(1000);
    const live: { id: number; b: Uint8Array }[] = [];
    let seed = 12345;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    let fitted = 0;
    let refused = 0;
    let wrapped = 0;
    for (let id = 0; id < 20_000; id++) {
      // when regions of random sizes are allocated and filled,
      const size = 1 + random(300);
      const b = arena.alloc(size);
      if (b === null) {
        refused++;
      } else {
        expect(b.length).toBe(size);
        expect(arena.holds(b)).toBe(true);
        if (live.length > 0 && b.byteOffset < live[live.length - 1]!.b.byteOffset) wrapped++;
        fill(b, id);
        live.push({ id, b });
        fitted++;
      }
      if (random(3) === 0) {
        live.splice(0, random(live.length + 1));
        arena.release(live[0]?.b ?? null);
      }
      // then every live region still holds what was written into it.
      for (const r of live) expect(intact(r.b, r.id)).toBe(true);
    }
    expect(fitted).toBeGreaterThan(10_000);
    expect(refused).toBeGreaterThan(0);
    expect(wrapped).toBeGreaterThan(100);
  });

  it("refuses what is larger than itself, and is whole again after release(null)", () => {
    const arena = createArena(100);
    expect(arena.alloc(101)).toBeNull();
    const a = arena.alloc(60)!;
    expect(arena.alloc(60)).toBeNull(); // a is live
    arena.release(a);
    expect(arena.alloc(41)).toBeNull(); // still live
    arena.release(null);
    const whole = arena.alloc(100)!;
    expect(whole.length).toBe(100);
    expect(arena.holds(new Uint8Array(100))).toBe(false);
  });

  it("wraps to the front once the regions there are released", () => {
    const arena = createArena(100);
    const a = arena.alloc(40)!;
    const b = arena.alloc(40)!;
    expect(b.byteOffset).toBe(40);
    arena.release(b); // a is free now
    const c = arena.alloc(30)!; // does not fit behind b: goes to the front
    expect(c.byteOffset).toBe(0);
    expect(arena.alloc(11)).toBeNull(); // [30, 40) is all that is left
    expect(arena.alloc(10)!.byteOffset).toBe(30);
    expect(a.byteOffset).toBe(0);
  });
});

describe("framer gathering", () => {

  it("gathers a message that spans chunks into the buffer gather() gives, and says so", () => {
    // Given a framer whose gather() hands out buffers it remembers,
    const given: Uint8Array[] = [];
    const got: { type: number; body: Uint8Array; gathered: boolean }[] = [];
    const f = createFramer((type, body, gathered) => got.push({ type, body: gathered ? body : body.slice(), gathered }), {
      gather: (_type, size) => {
        const b = new Uint8Array(size);
        given.push(b);
        return b;
      },
    });
    const big = new Uint8Array(1000).map((_, i) => i & 0xff);
    const bytes = new Uint8Array([...msg("d", new Uint8Array([1, 2])), ...msg("d", big), ...msg("c", new Uint8Array(0))]);
    // when the bytes come through one reused buffer of 64 bytes,
    const read = new Uint8Array(64);
    for (let at = 0; at < bytes.length; at += 64) {
      const n = Math.min(64, bytes.length - at);
      read.set(bytes.subarray(at, at + n));
      f.push(read.subarray(0, n));
      read.fill(0xee); // the next read overwrites it
    }
    // then the small one is a view (copied by the handler), the big one lives in the gathered buffer.
    expect(got.map((m) => [String.fromCharCode(m.type), m.body.length, m.gathered])).toEqual([
      ["d", 2, false],
      ["d", 1000, true],
      ["c", 0, false],
    ]);
    expect(given).toHaveLength(1);
    expect(got[1]!.body).toBe(given[0]);
    expect(got[1]!.body).toEqual(big);
    expect(Array.from(got[0]!.body)).toEqual([1, 2]);
  });
});

describe("framer", () => {
  const stream = (() => {
    const parts = [msg("d", new Uint8Array([1, 2, 3])), msg("c", new Uint8Array(0)), msg("d", new Uint8Array(300).fill(7)), msg("Z", new Uint8Array([73]))];
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return all;
  })();

  it("yields the same messages however the bytes are split", () => {
    const expected: string[] = [];
    createFramer((t, b) => expected.push(`${String.fromCharCode(t)}:${Array.from(b).join(",")}`)).push(stream);
    expect(expected).toHaveLength(4);
    for (let a = 0; a <= stream.length; a++) {
      for (const b of [a, Math.min(stream.length, a + 1), Math.min(stream.length, a + 7), stream.length]) {
        const got: string[] = [];
        const f = createFramer((t, body) => got.push(`${String.fromCharCode(t)}:${Array.from(body).join(",")}`));
        f.push(stream.subarray(0, a));
        f.push(stream.subarray(a, b));
        f.push(stream.subarray(b));
        expect(got).toEqual(expected);
        expect(f.pending).toBe(0);
      }
    }
  });

  it("hands over views into the chunk when a message lies within it", () => {
    const bodies: Uint8Array[] = [];
    createFramer((_t, b) => bodies.push(b)).push(stream);
    expect(bodies[0]!.buffer).toBe(stream.buffer);
  });

  it("rejects an impossible length", () => {
    const f = createFramer(() => {});
    expect(() => f.push(new Uint8Array([0x64, 0, 0, 0, 2]))).toThrow(/invalid message length/);
  });
});
