// What the repository needs of the place its files live. Everything in src/repo above this
// interface (and everything above src/repo) is written against it only, so the filesystem,
// S3 and HTTP backends are interchangeable.
//
// Keys are relative paths with "/" separators ("packs/3f/3f…9a.pack"). Objects are immutable
// once put: the repository writes each key once (content- or id-named) and only removes.

export interface StorageEntry {
  key: string;
  size: number;
  /** When the object was last written (ms since the epoch), where the storage says so (S3). */
  modified?: number;
  /** S3's ETag, unquoted: the MD5 of a single-part upload, "MD5-OF-PART-MD5S-N" of a multipart one. */
  etag?: string;
}

export type PutData = Uint8Array | readonly Uint8Array[] | AsyncIterable<Uint8Array>;

/**
 * An object being written piece by piece (a pack as it fills), invisible until commit():
 * write() appends, close() ends the writing without waiting for the disk, and commit() makes
 * the object durable and visible under its key — so a writer can let the kernel write a
 * file back in the background and pay for the fsync only when it needs the object durable.
 */
export interface ObjectWriter {
  readonly key: string;
  /** Bytes written so far. */
  readonly size: number;
  /** Appends the bytes (the parts in order). */
  write(bytes: Uint8Array | readonly Uint8Array[]): Promise<void>;
  close(): Promise<void>;
  /** After close(): durable and visible. */
  commit(): Promise<void>;
  /** Removes what was written (never visible). */
  abandon(): Promise<void>;
}

export interface Storage {
  /** Where the data lives, for messages. */
  readonly description: string;
  /** The whole object. KlioError "not-found" when it does not exist. */
  get(key: string): Promise<Uint8Array>;
  /**
   * `length` bytes at `offset`. "not-found" when the object does not exist, "short-object"
   * when it ends before. With `into` (at least `length` bytes) the bytes are read into it and
   * a view of it is returned: long sequential reads reuse one buffer.
   */
  getRange(key: string, offset: number, length: number, into?: Uint8Array): Promise<Uint8Array>;
  /**
   * Stores `data` (the parts in order, or a stream of them) under `key`, atomically and
   * durably: readers see the whole object or nothing, and once this resolves the object
   * survives a crash. A key is put once; putting it again replaces it whole.
   */
  put(key: string, data: PutData): Promise<void>;
  /**
   * Stores like put(), but never replaces: KlioError "object-exists" when `key` exists, and
   * the existing object stays as it was. Atomic on a local filesystem (link()), whatever
   * runs at the same time; elsewhere a check before the put (objects reach S3 only through
   * offsite sync, one writer).
   */
  putNew(key: string, data: PutData): Promise<void>;
  /** Starts an object written piece by piece (see ObjectWriter); `key` is put once. */
  create(key: string): Promise<ObjectWriter>;
  /** Objects whose key starts with `prefix`, at any depth, sorted by key. Unfinished puts are not listed. */
  list(prefix: string): Promise<StorageEntry[]>;
  exists(key: string): Promise<boolean>;
  /** Removes the object; removing one that does not exist is not an error. */
  remove(key: string): Promise<void>;
  /** Releases cached handles. */
  close(): Promise<void>;
}
