// Reading a stream of buffers (a tar stream, one entry's content) as exact-length pieces
// without copying: what it returns is a view of the current buffer, valid until the next
// pull, except for pieces that straddle two buffers, which are gathered into the caller's
// buffer. Shared by the tar reader and the INCREMENTAL file reader.

export class ByteSource {
  private cur: Uint8Array = new Uint8Array(0);
  private pos = 0;
  /** Bytes of the stream consumed so far (for messages). */
  offset = 0;
  private ended = false;

  constructor(private readonly it: AsyncIterator<Uint8Array>) {}

  /** False at the end of the source. */
  private async fill(): Promise<boolean> {
    while (this.pos >= this.cur.length) {
      if (this.ended) return false;
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        return false;
      }
      const v = r.value;
      // A plain view: on a Node Buffer subarray() and slice() mean other things.
      this.cur = v instanceof Uint8Array && v.constructor === Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      this.pos = 0;
    }
    return true;
  }

  /**
   * The next `n` bytes (a view of the source's buffer, or of `into` when they straddle two
   * buffers), or null if the source ends first (`got` says how many there were).
   */
  async exact(n: number, into: Uint8Array): Promise<{ bytes: Uint8Array | null; got: number }> {
    if (!(await this.fill())) return { bytes: null, got: 0 };
    if (this.cur.length - this.pos >= n) {
      const v = this.cur.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.offset += n;
      return { bytes: v, got: n };
    }
    let got = 0;
    while (got < n) {
      if (!(await this.fill())) return { bytes: null, got };
      const take = Math.min(n - got, this.cur.length - this.pos);
      into.set(this.cur.subarray(this.pos, this.pos + take), got);
      this.pos += take;
      this.offset += take;
      got += take;
    }
    return { bytes: into.subarray(0, n), got };
  }

  /** Up to `max` bytes (at least one), a view; null at the end of the source. */
  async some(max: number): Promise<Uint8Array | null> {
    if (!(await this.fill())) return null;
    const take = Math.min(max, this.cur.length - this.pos);
    const v = this.cur.subarray(this.pos, this.pos + take);
    this.pos += take;
    this.offset += take;
    return v;
  }

  /** Discards `n` bytes; false if the source ends first. */
  async skip(n: number): Promise<boolean> {
    while (n > 0) {
      const v = await this.some(n);
      if (v === null) return false;
      n -= v.length;
    }
    return true;
  }

  /** Reads whatever is left. */
  async drain(): Promise<void> {
    while (await this.fill()) {
      this.offset += this.cur.length - this.pos;
      this.pos = this.cur.length;
    }
  }

  /** Stops reading: a source not read to its end is told so (return()). */
  async close(): Promise<void> {
    if (!this.ended) {
      this.ended = true;
      await this.it.return?.();
    }
  }
}
