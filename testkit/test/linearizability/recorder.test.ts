import { describe, expect, it } from "vitest";
import { classifyEtcdError, HistoryRecorder, type KvInput, type KvOutput } from "../../src/index.js";

const grpcError = (code: number, details: string) =>
  Object.assign(new Error(`${code} ${details}`), { code, details });

describe("history recorder", () => {
  it("records call and return times, outputs, and failures by their meaning", async () => {
    let t = 100;
    const rec = new HistoryRecorder<KvInput, KvOutput>({ now: () => t });
    const put: KvInput = { f: "put", key: "k", value: "a" };
    const get: KvInput = { f: "get", key: "k" };
    const okRun = rec.run(1, put, async () => {
      t += 5;
      return {};
    });
    expect(await okRun).toEqual({ status: "ok", output: {} });
    await rec.run(1, get, async () => {
      t += 1;
      throw grpcError(8, "etcdserver: too many requests");
    });
    await rec.run(1, put, async () => {
      t += 1;
      throw grpcError(4, "Deadline exceeded");
    });
    await rec.run(1, get, async () => {
      t += 1;
      return { value: "a" };
    });
    expect(rec.history()).toEqual([
      { id: 0, process: 1, input: put, call: 0, ret: 5, status: "ok", output: {} },
      {
        id: 1,
        process: 1,
        input: get,
        call: 5,
        ret: 6,
        status: "fail",
        error: "8 etcdserver: too many requests",
      },
      { id: 2, process: 1, input: put, call: 6, status: "unknown", error: "4 Deadline exceeded" },
      // After an unknown outcome the worker goes on as a new process.
      { id: 3, process: 1000, input: get, call: 7, ret: 8, status: "ok", output: { value: "a" } },
    ]);
    expect(rec.counts()).toEqual({ ok: 2, fail: 1, unknown: 1 });
  });

  it("refuses a second open operation for one worker", async () => {
    const rec = new HistoryRecorder<KvInput, KvOutput>({ now: () => 0 });
    const never = rec.run(1, { f: "get", key: "k" }, () => new Promise<KvOutput>(() => {}));
    await expect(rec.run(1, { f: "get", key: "k" }, async () => ({ value: null }))).rejects.toThrow(/open/);
    void never;
  });

  it("classifies etcd's errors conservatively: fail only when certainly not applied", () => {
    expect(classifyEtcdError(grpcError(8, "etcdserver: too many requests"))).toBe("fail");
    expect(classifyEtcdError(grpcError(7, "etcdserver: permission denied"))).toBe("fail");
    expect(classifyEtcdError(grpcError(3, "etcdserver: key is not provided"))).toBe("fail");
    expect(
      classifyEtcdError(grpcError(14, "No connection established. Last error: connect ECONNREFUSED")),
    ).toBe("fail");
    expect(classifyEtcdError(grpcError(14, "etcdserver: request timed out"))).toBe("unknown");
    expect(classifyEtcdError(grpcError(14, "etcdserver: leader changed"))).toBe("unknown");
    expect(classifyEtcdError(grpcError(14, "Connection dropped"))).toBe("unknown");
    expect(classifyEtcdError(grpcError(4, "Deadline exceeded"))).toBe("unknown");
    expect(classifyEtcdError(grpcError(1, "Cancelled on client"))).toBe("unknown");
    expect(classifyEtcdError(new Error("socket hang up"))).toBe("unknown");
  });
});
