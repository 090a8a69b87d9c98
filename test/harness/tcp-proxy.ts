// A loopback TCP proxy that can fail the way networks do: connections silently stop
// carrying bytes (a frozen path, no FIN, no RST), or are cut; or whose bytes from the server
// pass through a transform (damage in flight).
import { createServer, connect, type Socket } from "node:net";
import type { Duplex } from "node:stream";

export interface TcpProxy {
  port: number;
  /** Existing connections stop forwarding, and stay open; new ones work. */
  freeze(): void;
  /** Existing connections are reset. */
  cut(): void;
  close(): Promise<void>;
}

/** `fromServer` makes, per connection, the stream the server's bytes pass through to the client. */
export async function startTcpProxy(targetPort: number, opts: { fromServer?: () => Duplex } = {}): Promise<TcpProxy> {
  const pairs: { a: Socket; b: Socket }[] = [];
  const all = new Set<Socket>();
  const server = createServer((a) => {
    const b = connect(targetPort, "127.0.0.1");
    a.pipe(b);
    if (opts.fromServer) b.pipe(opts.fromServer()).pipe(a);
    else b.pipe(a);
    a.on("error", () => b.destroy());
    b.on("error", () => a.destroy());
    a.on("close", () => b.destroy());
    b.on("close", () => a.destroy());
    pairs.push({ a, b });
    for (const s of [a, b]) {
      all.add(s);
      s.on("close", () => all.delete(s));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  return {
    port: typeof address === "object" && address ? address.port : 0,
    freeze() {
      for (const { a, b } of pairs.splice(0)) {
        a.unpipe(b);
        b.unpipe(a);
        a.pause();
        b.pause();
      }
    },
    cut() {
      for (const { a, b } of pairs.splice(0)) {
        a.resetAndDestroy();
        b.destroy();
      }
    },
    async close() {
      pairs.length = 0;
      for (const s of all) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
