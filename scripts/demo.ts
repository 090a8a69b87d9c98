// `npm start`: the main job on embedded defaults. Starts an embedded PostgreSQL 18 (the npm
// binaries) in ./klio-demo/pg and a `klio wal stream` archiving its WAL into
// ./klio-demo/repo, writes a little data every few seconds, and shows `klio wal status`.
// Ctrl-C stops everything. `npm start -- --seconds 30` stops by itself.
import { existsSync, rmSync } from "node:fs";
import path from "node:path";
import process from "node:process";
import { startPostgres } from "../test/harness/postgres.ts";
import { runKlio, startKlio } from "../test/harness/klio.ts";

const seconds = (() => {
  const i = process.argv.indexOf("--seconds");
  return i === -1 ? Infinity : Number(process.argv[i + 1]);
})();
const demo = path.resolve("klio-demo");
const pgDir = path.join(demo, "pg");
const repo = path.join(demo, "repo");
const say = (text: string) => console.log(`[demo] ${text}`);

// A previous demo's server is not running any more; start from a fresh cluster, keep nothing.
if (existsSync(demo)) rmSync(demo, { recursive: true, force: true });
say(`starting embedded PostgreSQL 18 in ${path.relative(process.cwd(), pgDir)}`);
const pg = await startPostgres({ version: 18, baseDir: pgDir, conf: { wal_keep_size: "'64MB'" } });
say(`PostgreSQL is up on 127.0.0.1:${pg.port}`);
const args = ["wal", "stream", "--repo", repo, "--cluster", "demo", "--pg", pg.connString(), "--create-slot", "--log-format", "text"];
say(`klio ${args.join(" ")}`);
const klio = startKlio(args);
klio.child.stderr!.pipe(process.stderr);

const sql = pg.sql();
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  say("stopping klio (it flushes and reports its last position) and PostgreSQL");
  await klio.stop();
  const status = runKlio(["wal", "status", "--repo", repo, "--cluster", "demo"]);
  process.stdout.write(status.stdout);
  await pg.stop("fast");
  say(`the archive stays in ${path.relative(process.cwd(), repo)}; try: npm run klio -- get-wal --help`);
  process.exit(0);
};
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());

await klio.waitForLog(/wal.streaming/);
await sql`create table demo (id bigserial primary key, at timestamptz default now(), payload text)`;
const started = Date.now();
for (let round = 1; !stopping && Date.now() - started < seconds * 1000; round++) {
  await sql`insert into demo (payload) select repeat(md5(random()::text), 20) from generate_series(1, 5000)`;
  if (round % 3 === 0) {
    const [{ name }] = await sql`select pg_walfile_name(pg_switch_wal()) as name`;
    say(`wrote 5000 rows and switched WAL: ${name} should be archived next`);
  } else say("wrote 5000 rows");
  if (round % 5 === 0) process.stdout.write(runKlio(["wal", "status", "--repo", repo, "--cluster", "demo"]).stdout);
  await new Promise((r) => setTimeout(r, 2000));
}
await stop();
