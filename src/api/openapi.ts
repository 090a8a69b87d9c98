// /openapi.json: the API described from the same route table and typebox schemas that
// validate requests (typebox schemas are JSON Schema already).
import type { TSchema } from "@sinclair/typebox";
import { VERSION } from "../util/version.ts";
import type { RouteSpec } from "./app.ts";
import { scopeFor } from "./auth.ts";
import { ErrorBody } from "./schemas.ts";

/** Drops typebox's symbol-keyed bookkeeping: plain JSON Schema. */
function plain(s: TSchema): unknown {
  return JSON.parse(JSON.stringify(s));
}

export function openApiDocument(routes: RouteSpec[]): unknown {
  const paths: Record<string, Record<string, unknown>> = {};
  const errors = { description: "error", content: { "application/json": { schema: plain(ErrorBody) } } };
  for (const r of routes) {
    const oaPath = r.path.replace(/:([a-z]+)/g, "{$1}");
    const responses: Record<string, unknown> = { "400": errors, "401": errors, "403": errors, "404": errors };
    if (r.response && "schema" in r.response) responses[String(r.response.status)] = { description: "ok", content: { "application/json": { schema: plain(r.response.schema) } } };
    else if (r.response) responses[String(r.response.status)] = { description: "ok", content: { [r.response.contentType]: {} } };
    else responses["200"] = { description: "ok" };
    if (r.method !== "get") responses["409"] = errors;
    (paths[oaPath] ??= {})[r.method] = {
      summary: r.summary,
      "x-klio-scope": scopeFor(r.method.toUpperCase()),
      parameters: Object.entries(r.params ?? {}).map(([name, schema]) => ({ name, in: "path", required: true, schema: plain(schema) })),
      ...(r.body ? { requestBody: { required: false, content: { "application/json": { schema: plain(r.body) } } } } : {}),
      responses,
      security: [{ bearer: [] }],
    };
  }
  paths["/healthz"] = { get: { summary: "Liveness; needs no token", responses: { "200": { description: "ok", content: { "text/plain": {} } } }, security: [] } };
  paths["/metrics"] = { get: { summary: "Prometheus metrics", "x-klio-scope": "read", responses: { "200": { description: "ok", content: { "text/plain": {} } } }, security: [{ bearer: [] }] } };
  return {
    openapi: "3.1.0",
    info: { title: "klio control API", version: VERSION },
    components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
    paths,
  };
}
