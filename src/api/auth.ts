// Bearer tokens with a scope. Every configured token is compared, each in constant time (as
// SHA-256 digests, so lengths leak nothing either), whatever matched before.
import { createHash, timingSafeEqual } from "node:crypto";
import type { ApiToken } from "../server/config.ts";

export type Scope = ApiToken["scope"];

export class TokenChecker {
  private readonly digests: { token: ApiToken; digest: Buffer }[];

  constructor(tokens: ApiToken[]) {
    this.digests = tokens.map((token) => ({ token, digest: digest(token.token) }));
  }

  /** The token an Authorization header carries, or null. */
  check(header: string | undefined): ApiToken | null {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
    if (!m) return null;
    const presented = digest(m[1]!);
    let found: ApiToken | null = null;
    for (const d of this.digests) if (timingSafeEqual(presented, d.digest) && found === null) found = d.token;
    return found;
  }
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

/** Whether a token of scope `has` may call a route that needs `needs`. */
export function allows(has: Scope, needs: Scope): boolean {
  return has === "admin" || needs === "read";
}

/** Reading needs a read token; anything that changes something needs an admin token. */
export function scopeFor(method: string): Scope {
  return method === "GET" || method === "HEAD" ? "read" : "admin";
}
