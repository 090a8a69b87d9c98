// A writer process for test/repo-writer-killed.test.ts: stores chunk(0), chunk(1), … into
// the repository without ever flushing (packs seal as they fill), reporting progress, until
// it is killed. Run: node --import tsx test/repo-writer-child.ts DIR
import process from "node:process";
import { openRepository } from "../src/repo/repository.ts";
import { writerTestChunk } from "./repo-writer-chunks.ts";

const repo = await openRepository(process.argv[2]!);
const w = repo.writer();
for (let i = 0; ; i++) {
  await w.put(writerTestChunk(i));
  if (i % 100 === 0) process.stdout.write(`put ${i}\n`);
}
