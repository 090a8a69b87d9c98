// Serving the hono app: @hono/node-server under Node (plain or TLS), Deno.serve under Deno —
// the one place that knows which runtime it is on.
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { Hono } from "hono";
import { serve } from "@hono/node-server";
import { KlioError } from "../util/errors.ts";

export interface Listener {
  /** The port bound (useful when 0 was asked for). */
  port: number;
  close(): Promise<void>;
}

interface DenoServe {
  serve(opts: { hostname: string; port: number; cert?: string; key?: string; onListen?: (a: { port: number }) => void; signal?: AbortSignal }, handler: (r: Request) => Response | Promise<Response>): { finished: Promise<void> };
}

export async function listen(app: Hono, opts: { host: string; port: number; tls: { cert: string; key: string } | null }): Promise<Listener> {
  const deno = (globalThis as { Deno?: DenoServe }).Deno;
  if (deno !== undefined) {
    const stopper = new AbortController();
    let port = 0;
    const server = deno.serve({ hostname: opts.host, port: opts.port, ...(opts.tls ?? {}), signal: stopper.signal, onListen: (a) => void (port = a.port) }, app.fetch);
    return { get port() { return port; }, close: async () => { stopper.abort(); await server.finished; } };
  }
  return await new Promise<Listener>((resolve, reject) => {
    const server = serve({
      fetch: app.fetch, hostname: opts.host, port: opts.port,
      ...(opts.tls ? { createServer: createHttpsServer, serverOptions: { cert: opts.tls.cert, key: opts.tls.key } } : {}),
    }, (info: AddressInfo) => resolve({
      port: info.port,
      close: () => new Promise<void>((done) => {
        server.close(() => done());
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      }),
    }));
    server.once("error", (e: NodeJS.ErrnoException) => reject(new KlioError("bad-listen", `cannot listen on ${opts.host}:${opts.port}: ${e.message}`)));
  });
}
