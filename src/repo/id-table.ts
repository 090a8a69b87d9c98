// A set of chunk ids in typed arrays: open addressing over a slab of 32-byte ids, with no
// JavaScript object or Map entry per id (DESIGN invariant 6). A writer keeps the ids of the
// chunks it has stored but not yet indexed in a few of these.
import { CHUNK_ID_BYTES, type ChunkId } from "./chunk-id.ts";

const EMPTY = -1;

export class IdTable {
  private ids: Uint8Array;
  /** Per slot: the number of the id stored there, or EMPTY. */
  private slots: Int32Array;
  /** Per slot: the id's first 4 bytes, to skip most full comparisons. */
  private heads: Uint32Array;
  private mask: number;
  count = 0;

  constructor(capacity = 1024) {
    let size = 16;
    while (size < capacity * 2) size *= 2;
    this.mask = size - 1;
    this.slots = new Int32Array(size).fill(EMPTY);
    this.heads = new Uint32Array(size);
    this.ids = new Uint8Array(Math.max(16, capacity) * CHUNK_ID_BYTES);
  }

  /** Empties the table, keeping its memory (writers reuse tables: fresh large buffers fragment the heap). */
  clear(): void {
    this.slots.fill(EMPTY);
    this.count = 0;
  }

  has(id: ChunkId): boolean {
    const head = headOf(id);
    for (let s = head & this.mask; ; s = (s + 1) & this.mask) {
      const n = this.slots[s]!;
      if (n === EMPTY) return false;
      if (this.heads[s] === head && this.same(n, id)) return true;
    }
  }

  /** Adds `id` (the caller knows it is not in the table). */
  add(id: ChunkId): void {
    if ((this.count + 1) * 2 > this.slots.length) this.grow();
    if ((this.count + 1) * CHUNK_ID_BYTES > this.ids.length) {
      const more = new Uint8Array(this.ids.length * 2);
      more.set(this.ids);
      this.ids = more;
    }
    this.ids.set(id.subarray(0, CHUNK_ID_BYTES), this.count * CHUNK_ID_BYTES);
    this.place(this.count, headOf(id));
    this.count++;
  }

  private same(n: number, id: ChunkId): boolean {
    const at = n * CHUNK_ID_BYTES;
    for (let i = 4; i < CHUNK_ID_BYTES; i++) if (this.ids[at + i] !== id[i]) return false;
    return true;
  }

  private place(n: number, head: number): void {
    let s = head & this.mask;
    while (this.slots[s] !== EMPTY) s = (s + 1) & this.mask;
    this.slots[s] = n;
    this.heads[s] = head;
  }

  private grow(): void {
    const size = this.slots.length * 2;
    this.slots = new Int32Array(size).fill(EMPTY);
    this.heads = new Uint32Array(size);
    this.mask = size - 1;
    for (let n = 0; n < this.count; n++) this.place(n, headOf(this.ids.subarray(n * CHUNK_ID_BYTES)));
  }
}

function headOf(id: Uint8Array): number {
  return ((id[0]! << 24) | (id[1]! << 16) | (id[2]! << 8) | id[3]!) >>> 0;
}
