import { describe, it, expect } from "vitest";
import { startPostgres, startStandby, PG_VERSIONS } from "./harness/postgres.ts";

describe.each(PG_VERSIONS)("test harness on PostgreSQL %i", (version) => {
  it("starts a real server as the postgres user, and a standby of it", async () => {
    const pg = await startPostgres({ version });
    try {
      const [{ v }] = await pg.sql()`select current_setting('server_version_num')::int / 10000 as v`;
      expect(v).toBe(version);
      const standby = await startStandby(pg);
      try {
        const [{ r }] = await standby.sql()`select pg_is_in_recovery() as r`;
        expect(r).toBe(true);
      } finally {
        await standby.destroy();
      }
    } finally {
      await pg.destroy();
    }
  });
});
