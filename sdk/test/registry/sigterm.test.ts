import { describe, expect, it } from "vitest";
import { installSigtermHandler } from "../../src/registry/registrar.js";

describe("installSigtermHandler", () => {
  it("closes the registrar once on SIGTERM, then calls onDone; uninstall removes the handler", async () => {
    let closes = 0;
    let done = 0;
    const before = process.listenerCount("SIGTERM");
    const uninstall = installSigtermHandler(
      { close: async () => void closes++ },
      { signals: ["SIGTERM"], onDone: () => void done++ },
    );
    expect(process.listenerCount("SIGTERM")).toBe(before + 1);
    process.emit("SIGTERM", "SIGTERM");
    process.emit("SIGTERM", "SIGTERM");
    await new Promise((r) => setTimeout(r, 10));
    expect(closes).toBe(1);
    expect(done).toBe(1);
    uninstall();
    expect(process.listenerCount("SIGTERM")).toBe(before);
  });

  it("gives up waiting after timeoutMs (a registry that does not answer must not block exit)", async () => {
    let done = 0;
    const uninstall = installSigtermHandler(
      { close: () => new Promise<void>(() => {}) },
      { signals: ["SIGUSR2"], timeoutMs: 50, onDone: () => void done++ },
    );
    process.emit("SIGUSR2", "SIGUSR2");
    await new Promise((r) => setTimeout(r, 120));
    expect(done).toBe(1);
    uninstall();
  });
});
