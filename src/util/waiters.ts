// Callers waiting for a state to change (a queue to drain, a limit to free up), woken all at
// once to look again: the loop `while (cond) await waiters.wait()` is the whole protocol.
export class Waiters {
  private list: (() => void)[] = [];

  wait(): Promise<void> {
    return new Promise((resolve) => this.list.push(resolve));
  }

  wake(): void {
    for (const w of this.list.splice(0)) w();
  }
}
