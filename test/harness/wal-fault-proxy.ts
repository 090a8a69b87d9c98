// A loopback HTTP proxy in front of the appliance's API that fails the requests for chosen
// WAL files the way a network or a proxy in between does: a 503 answer, or a connection that
// drops without one. Everything else is forwarded byte for byte.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { forward } from "./http-fault-proxy.ts";

export type WalFault = "503" | "drop";

export interface WalFaultProxy {
  url: string;
  /** Requests for these files fail, in turn, with the faults given (cycling), until healed. */
  fail(file: string, faults: WalFault[]): void;
  heal(file: string): void;
  /** Requests that were failed, per file. */
  failed: Map<string, number>;
  close(): Promise<void>;
}

export async function startWalFaultProxy(targetPort: number): Promise<WalFaultProxy> {
  const failing = new Map<string, WalFault[]>();
  const failed = new Map<string, number>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const file = /\/wal\/([^/?]+)/.exec(req.url ?? "")?.[1]?.replace(/\.partial$/, "");
    const faults = file === undefined ? undefined : failing.get(file);
    if (file !== undefined && faults) {
      const n = failed.get(file) ?? 0;
      failed.set(file, n + 1);
      const fault = faults[n % faults.length]!;
      req.resume();
      if (fault === "drop") {
        req.socket.destroy();
        return;
      }
      res.writeHead(503, { "content-type": "text/html" });
      res.end("<html><body>503 Service Unavailable (injected by the test)</body></html>");
      return;
    }
    forward(req, res, targetPort);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    fail: (file, faults) => void failing.set(file, faults),
    heal: (file) => void failing.delete(file),
    failed,
    close: () => new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}
