// Checkers for etcd's watch guarantees (api_guarantees: ordered, unique, atomic, reliable,
// resumable, and prev_kv), over what clients recorded. The ground truth is the store's own
// history, read back at the end with one watch from the first revision (so the checked
// range must not have been compacted). Used by the API suites and the fault runs.

export type RecordedEvent = {
  type: "PUT" | "DELETE";
  key: string;
  value: string;
  modRevision: number;
  prevValue?: string | undefined;
};

/** One watch response as a client received it: its events, in order. */
export type RecordedResponse = { events: RecordedEvent[] };

export type WatchRecord = {
  /** What the watch covered: one key, or [key, end) (end "" for "from key"). */
  key: string;
  end?: string;
  /** The first revision the client asked for (the watch resumes from later ones itself). */
  startRevision: number;
  /** Revision up to which the client believes it has seen everything. */
  lastRevision: number;
  responses: RecordedResponse[];
  /** The client asked for prev_kv. */
  prevKv: boolean;
};

export type WatchViolation = { guarantee: string; detail: string };

function inRange(r: WatchRecord, key: string): boolean {
  if (r.end === undefined) return key === r.key;
  return key >= r.key && (r.end === "" || key < r.end);
}

/**
 * Checks one watcher's record against the full history (every event of the store, in
 * revision order, with prevValue set). Returns the violations, empty when all hold.
 */
export function checkWatch(record: WatchRecord, history: RecordedEvent[]): WatchViolation[] {
  const out: WatchViolation[] = [];
  const got = record.responses.flatMap((r) => r.events);
  // Ordered: revisions never go back.
  for (let i = 1; i < got.length; i++) {
    if (got[i]!.modRevision < got[i - 1]!.modRevision) {
      out.push({
        guarantee: "ordered",
        detail: `revision ${got[i]!.modRevision} after ${got[i - 1]!.modRevision}`,
      });
    }
  }
  // Unique: no event twice.
  const seen = new Set<string>();
  for (const e of got) {
    const id = `${e.modRevision}/${e.key}/${e.type}`;
    if (seen.has(id)) out.push({ guarantee: "unique", detail: `event ${id} delivered twice` });
    seen.add(id);
  }
  // Atomic: the events of one revision arrive in one response.
  const responseOf = new Map<number, number>();
  record.responses.forEach((r, i) => {
    for (const e of r.events) {
      const prev = responseOf.get(e.modRevision);
      if (prev !== undefined && prev !== i) {
        out.push({
          guarantee: "atomic",
          detail: `revision ${e.modRevision} split across responses ${prev} and ${i}`,
        });
      }
      responseOf.set(e.modRevision, i);
    }
  });
  // Reliable and resumable: exactly the history's events in range, from the start
  // revision to the last one the client saw.
  const want = history.filter(
    (e) =>
      inRange(record, e.key) && e.modRevision >= record.startRevision && e.modRevision <= record.lastRevision,
  );
  const key = (e: RecordedEvent) => `${e.modRevision}/${e.key}/${e.type}/${e.value}`;
  const gotKeys = got.filter((e) => e.modRevision <= record.lastRevision).map(key);
  const wantKeys = want.map(key);
  const missing = wantKeys.filter((k) => !gotKeys.includes(k));
  const extra = gotKeys.filter((k) => !wantKeys.includes(k));
  if (missing.length > 0)
    out.push({ guarantee: "reliable", detail: `missing ${missing.slice(0, 5).join(", ")}` });
  if (extra.length > 0)
    out.push({ guarantee: "reliable", detail: `not in the history: ${extra.slice(0, 5).join(", ")}` });
  // prev_kv: the previous value of the key, as the history has it.
  if (record.prevKv) {
    const truth = new Map(history.map((e) => [`${e.modRevision}/${e.key}`, e.prevValue]));
    for (const e of got) {
      const t = truth.get(`${e.modRevision}/${e.key}`);
      if (t !== e.prevValue) {
        out.push({
          guarantee: "prev_kv",
          detail: `${e.key}@${e.modRevision}: got ${e.prevValue}, want ${t}`,
        });
      }
    }
  }
  return out;
}
