// A loopback HTTP proxy in front of an S3 server that fails a share of requests the way an
// overloaded S3 does: 503 SlowDown, or 500 InternalError, before the request reaches the
// server. Requests are forwarded byte for byte otherwise (SigV4 signs the Host header, which
// is kept).
import { createServer, request, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface FaultProxy {
  endpoint: string;
  /** Requests failed so far, and forwarded. */
  counts: { failed: number; forwarded: number };
  close(): Promise<void>;
}

/** Passes the request to the server on `targetPort` and its answer back, byte for byte. */
export function forward(req: IncomingMessage, res: ServerResponse, targetPort: number): void {
  const up = request({ host: "127.0.0.1", port: targetPort, method: req.method, path: req.url, headers: req.headers }, (r) => {
    res.writeHead(r.statusCode ?? 502, r.headers);
    r.pipe(res);
  });
  up.on("error", () => res.destroy());
  req.pipe(up);
}

export async function startFaultProxy(targetPort: number, failShare: number, seed = 42): Promise<FaultProxy> {
  let state = seed;
  const rnd = () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const counts = { failed: 0, forwarded: 0 };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (rnd() < failShare) {
      counts.failed++;
      const [status, code] = rnd() < 0.7 ? [503, "SlowDown"] : [500, "InternalError"];
      req.resume();
      req.on("end", () => {
        res.writeHead(status, { "content-type": "application/xml" });
        res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected by the test</Message></Error>`);
      });
      return;
    }
    counts.forwarded++;
    forward(req, res, targetPort);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    counts,
    close: () => new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}
