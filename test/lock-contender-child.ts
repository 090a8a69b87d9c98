// A process that contends for a lock when told to, for test/util-lock-file.test.ts. Commands
// on stdin, one a line; answers on stdout, one a line:
//   try FILE AT    at AT (ms since the epoch, spinning until then) tryLock(FILE) → "won" | "lost PID"
//   release        releases what it won → "released"
//   node --import tsx test/lock-contender-child.ts
import process from "node:process";
import { createInterface } from "node:readline";
import { tryLock, type HeldLock } from "../src/util/lock-file.ts";

let held: HeldLock | null = null;
for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, file, at] = line.split(" ");
  if (cmd === "try") {
    while (Date.now() < Number(at));
    const a = await tryLock(file!, "contender");
    held = a.held ?? null;
    process.stdout.write(a.held ? "won\n" : `lost ${a.holder.process?.pid ?? "?"}\n`);
  } else if (cmd === "release") {
    await held?.release();
    held = null;
    process.stdout.write("released\n");
  }
}
