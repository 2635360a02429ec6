import { setTimeout as sleep } from "node:timers/promises";
import type { EtcdClient } from "../../src/etcd/client.js";

export { sleep };

/** Polls `check` until it returns true or `timeoutMs` passes; then throws with `describe()`. */
export async function until(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  describe: () => string = () => "condition",
  everyMs = 20,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${describe()}`);
    await sleep(everyMs);
  }
}

/** Every event revision under `prefix` in [from, upTo], read by a fresh watcher: the store's history. */
export async function history(c: EtcdClient, prefix: string, from: bigint, upTo: bigint): Promise<bigint[]> {
  const revs: bigint[] = [];
  let last = 0n;
  const w = c.watch(
    { key: prefix, prefix: true, startRevision: from },
    {
      events(evs) {
        for (const e of evs) if (e.kv!.modRevision <= upTo) revs.push(e.kv!.modRevision);
        last = evs[evs.length - 1]!.kv!.modRevision;
      },
    },
  );
  await until(
    () => last >= upTo,
    10_000,
    () => `history up to ${upTo}`,
  );
  w.cancel();
  return revs;
}
