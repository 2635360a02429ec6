import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "@regmesh/testkit";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../src/config.js";

const dir = tempDir("mesher-config-");
afterAll(() => dir.remove());

function yamlFile(text: string): string {
  const p = join(dir.path, `c${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(p, text);
  return p;
}

function error(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error("no error");
}

describe("mesher configuration", () => {
  it("has defaults", () => {
    const c = loadConfig([], {});
    expect(c["outbound-listen"]).toBe("127.0.0.1:15001");
    expect(c["admin-listen"]).toBe("127.0.0.1:15000");
    expect(c["lease-ttl"]).toBe(10_000);
    expect(c.tags).toEqual([]);
    expect(c.service).toBeUndefined();
  });

  it("takes flags over environment over the YAML file", () => {
    const file = yamlFile(
      "service: orders\napp-port: 8080\nweight: 5\nzone: eu-1a\ntags: [a, b]\nlease-ttl: 3s\n",
    );
    const env = { MESHER_WEIGHT: "7", MESHER_ZONE: "eu-1b" };
    const c = loadConfig([`--config=${file}`, "--zone", "eu-1c"], env);
    expect(c.service).toBe("orders");
    expect(c["app-port"]).toBe(8080);
    expect(c.weight).toBe(7); // environment over file
    expect(c.zone).toBe("eu-1c"); // flag over environment
    expect(c.tags).toEqual(["a", "b"]);
    expect(c["lease-ttl"]).toBe(3_000);
  });

  it("parses durations, lists, booleans and addresses", () => {
    const c = loadConfig(
      [
        "--drain-timeout=1.5s",
        "--tags=x, y",
        "--embedded-registry",
        "--inbound-listen=[::1]:9000",
        "--health-interval",
        "250ms",
      ],
      {},
    );
    expect(c["drain-timeout"]).toBe(1_500);
    expect(c.tags).toEqual(["x", "y"]);
    expect(c["embedded-registry"]).toBe(true);
    expect(c["inbound-listen"]).toBe("[::1]:9000");
    expect(c["health-interval"]).toBe(250);
  });

  it("names what is wrong", () => {
    expect(error(() => loadConfig(["--frobnicate"], {}))).toBe("unknown flag --frobnicate");
    expect(error(() => loadConfig([], { MESHER_FROB: "1" }))).toBe(
      "unknown environment variable MESHER_FROB",
    );
    expect(error(() => loadConfig([`--config=${yamlFile("servcie: x\n")}`], {}))).toMatch(
      /unknown key servcie$/,
    );
    expect(error(() => loadConfig(["--weight=heavy"], {}))).toMatch(/--weight: want an integer, got "heavy"/);
    expect(error(() => loadConfig(["--app-port=70000"], {}))).toMatch(
      /--app-port: 70000 is out of range 1..65535/,
    );
    expect(error(() => loadConfig(["--lease-ttl=soon"], {}))).toMatch(/lease-ttl: want a duration/);
    expect(error(() => loadConfig(["--protocol=ftp"], {}))).toMatch(/protocol: want one of http, grpc, h2c/);
    expect(error(() => loadConfig([], { MESHER_WEIGHT: "x" }))).toMatch(/environment MESHER_WEIGHT/);
    expect(error(() => loadConfig(["--service=orders"], {}))).toMatch(/--service needs --app-port/);
    expect(error(() => loadConfig(["--health-check=ping"], {}))).toMatch(
      /--health-check: want none, tcp, grpc or http/,
    );
    expect(error(() => loadConfig(["--admin-listen=nowhere"], {}))).toMatch(/want host:port/);
    expect(error(() => loadConfig([`--config=${yamlFile("- a\n- b\n")}`], {}))).toMatch(/want a mapping/);
    expect(error(() => loadConfig(["--config=/nonexistent.yaml"], {}))).toMatch(
      /config file \/nonexistent.yaml/,
    );
  });
});
