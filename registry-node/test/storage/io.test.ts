import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  FaultFileSystem,
  type FileSystem,
  MemFileSystem,
  NodeFileSystem,
  SimulatedCrashError,
} from "../../src/io/index.js";

const bytes = (...xs: number[]) => Uint8Array.from(xs);

function contract(name: string, make: () => { fs: FileSystem; dir: string; done(): void }) {
  describe(`FileSystem contract: ${name}`, () => {
    it("creates exclusively, writes and reads at positions, truncates, renames, lists", () => {
      const { fs, dir, done } = make();
      const p = join(dir, "a");
      const f = fs.open(p, { create: true, exclusive: true });
      expect(() => fs.open(p, { create: true, exclusive: true })).toThrow(
        expect.objectContaining({ code: "EEXIST" }),
      );
      f.write(bytes(1, 2, 3), 4);
      expect(f.size()).toBe(7);
      const buf = new Uint8Array(8);
      expect(f.read(buf, 0)).toBe(7);
      expect([...buf]).toEqual([0, 0, 0, 0, 1, 2, 3, 0]);
      f.truncate(5);
      expect(f.size()).toBe(5);
      expect(f.read(buf, 0)).toBe(5);
      f.datasync();
      f.close();
      fs.rename(p, join(dir, "b"));
      fs.mkdir(join(dir, "sub"));
      expect(fs.readdir(dir)).toEqual(["b", "sub"]);
      fs.syncDir(dir);
      fs.unlink(join(dir, "b"));
      expect(fs.exists(join(dir, "b"))).toBe(false);
      expect(() => fs.open(join(dir, "nope"))).toThrow(expect.objectContaining({ code: "ENOENT" }));
      done();
    });
  });
}

contract("node", () => {
  const dir = mkdtempSync(join(tmpdir(), "regmesh-io-"));
  return { fs: new NodeFileSystem(), dir, done: () => rmSync(dir, { recursive: true, force: true }) };
});
contract("mem", () => ({ fs: new MemFileSystem(), dir: "/", done() {} }));
contract("fault over mem", () => ({ fs: new FaultFileSystem(new MemFileSystem()), dir: "/", done() {} }));

describe("FaultFileSystem", () => {
  it("a crash drops writes that were not fsynced", () => {
    const fs = new FaultFileSystem(new MemFileSystem());
    const f = fs.open("/f", { create: true });
    f.write(bytes(1, 1), 0);
    f.sync();
    f.write(bytes(2, 2), 2);
    f.write(bytes(9), 0);
    expect(f.size()).toBe(4);
    fs.crash("drop");
    const g = fs.open("/f");
    const buf = new Uint8Array(4);
    expect(g.read(buf, 0)).toBe(2);
    expect([...buf.subarray(0, 2)]).toEqual([1, 1]);
  });

  it("crashAfter throws at the chosen op and tears unsynced sectors, seeded", () => {
    const run = (seed: number) => {
      const fs = new FaultFileSystem(new MemFileSystem(), { seed });
      const f = fs.open("/f", { create: true });
      f.write(new Uint8Array(4096).fill(7), 0);
      fs.crashAfter(0, "tear");
      expect(() => f.sync()).toThrow(SimulatedCrashError);
      expect(() => fs.open("/f")).toThrow(SimulatedCrashError);
      fs.restart();
      const g = fs.open("/f");
      const buf = new Uint8Array(g.size());
      g.read(buf, 0);
      return buf;
    };
    expect(run(5)).toEqual(run(5));
    const torn = run(5);
    expect(torn.length).toBeLessThanOrEqual(4096);
  });
});
