// A writer process for the tests that kill it or run two at once: stores writerTestChunk(i)
// for i = FROM, FROM+1, … into the repository, reporting progress. Without COUNT it never
// flushes and runs until killed (packs seal as they fill); with COUNT it flushes and exits.
//   node --import tsx test/repo-writer-child.ts DIR [COUNT [FROM]]
import process from "node:process";
import { openRepository } from "../src/repo/repository.ts";
import { writerTestChunk } from "./repo-writer-chunks.ts";

const [dir, count, from] = [process.argv[2]!, process.argv[3] === undefined ? Infinity : Number(process.argv[3]), Number(process.argv[4] ?? 0)];
const repo = await openRepository(dir);
const w = repo.writer();
for (let i = 0; i < count; i++) {
  await w.put(writerTestChunk(from + i));
  if (i % 100 === 0) process.stdout.write(`put ${from + i}\n`);
}
await w.flush();
await repo.close();
process.stdout.write(`done ${JSON.stringify(w.stats)}\n`);
