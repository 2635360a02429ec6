import { describe, expect, it } from "vitest";
import { checkWatch, type RecordedEvent, type WatchRecord } from "../src/index.js";

const ev = (modRevision: number, key: string, value: string, prevValue?: string): RecordedEvent => ({
  type: value === "" ? "DELETE" : "PUT",
  key,
  value,
  modRevision,
  prevValue,
});
const history = [
  ev(2, "a", "1"),
  ev(3, "b", "1"),
  ev(4, "a", "2", "1"),
  ev(4, "b", "2", "1"),
  ev(5, "a", "", "2"),
];
const rec = (responses: RecordedEvent[][], over: Partial<WatchRecord> = {}): WatchRecord => ({
  key: "a",
  end: "c",
  startRevision: 2,
  lastRevision: 5,
  prevKv: true,
  responses: responses.map((events) => ({ events })),
  ...over,
});

describe("watch guarantee checkers", () => {
  it("accept a faithful record", () => {
    expect(
      checkWatch(rec([[history[0]!, history[1]!], [history[2]!, history[3]!], [history[4]!]]), history),
    ).toEqual([]);
  });

  it("name each broken guarantee", () => {
    const names = (r: WatchRecord) => checkWatch(r, history).map((v) => v.guarantee);
    expect(names(rec([[history[1]!], [history[0]!]]))).toContain("ordered");
    expect(names(rec([[history[0]!], [history[0]!]]))).toContain("unique");
    expect(
      names(
        rec([
          [history[0]!, history[1]!, history[2]!],
          [history[3]!, history[4]!],
        ]),
      ),
    ).toContain("atomic");
    expect(names(rec([[history[0]!, history[1]!], [history[4]!]]))).toContain("reliable");
    expect(
      names(rec([[history[0]!, history[1]!], [ev(4, "a", "2", "0"), history[3]!], [history[4]!]])),
    ).toContain("prev_kv");
  });

  it("checks a resumed watch only from where it started", () => {
    expect(
      checkWatch(rec([[history[2]!, history[3]!], [history[4]!]], { startRevision: 4 }), history),
    ).toEqual([]);
  });
});
