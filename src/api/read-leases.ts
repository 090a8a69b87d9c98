// Sessions for readers that reach the repository over the API (`klio restore --repo https://…`):
// such a client names itself in the X-Klio-Reader header, and the daemon holds a session with
// a lease for it (src/repo/sessions.ts), touched as its requests come, so that maintenance on
// the appliance removes no pack the reader may still need. A lease lapses LEASE_MS after the
// reader's last request.
import { KlioError } from "../util/errors.ts";
import { RepoSession } from "../repo/sessions.ts";
import { READER_HEADER } from "../util/api-client.ts";
const LEASE_MS = 120_000;
/** Touch a lease at most this often. */
const TOUCH_MS = 10_000;
/** Readers held at once: each one makes maintenance wait. */
const MAX_READERS = 64;

export class ReadLeases {
  private readonly held = new Map<string, { session: Promise<RepoSession>; touchedAt: number }>();

  constructor(private readonly root: string, private readonly leaseMs = LEASE_MS) {}

  /** Holds (or renews) the lease of reader `id`, whose token is `who`. */
  async note(id: string, who: string, now = Date.now()): Promise<void> {
    if (!/^[0-9a-f]{16,64}$/.test(id)) throw new KlioError("bad-request", `${READER_HEADER} must be 16 to 64 lowercase hex digits`);
    this.sweep(now);
    const h = this.held.get(id);
    if (h) {
      if (now - h.touchedAt >= TOUCH_MS) {
        h.touchedAt = now;
        await (await h.session).touch();
      }
      return;
    }
    if (this.held.size >= MAX_READERS) throw new KlioError("busy", `${MAX_READERS} readers are restoring from this appliance already; try again later`);
    const session = RepoSession.begin(this.root, `a reader over the API (token ${who})`, { leaseMs: this.leaseMs });
    this.held.set(id, { session, touchedAt: now });
    session.catch(() => this.held.delete(id));
    await session;
  }

  /** Ends the leases no request renewed in time. */
  private sweep(now: number): void {
    for (const [id, h] of this.held) {
      if (now - h.touchedAt < this.leaseMs) continue;
      this.held.delete(id);
      void h.session.then((s) => s.end(), () => {});
    }
  }

  async close(): Promise<void> {
    const all = [...this.held.values()];
    this.held.clear();
    await Promise.all(all.map((h) => h.session.then((s) => s.end(), () => {})));
  }
}
