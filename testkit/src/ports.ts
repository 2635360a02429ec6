import { createServer } from "node:net";

// etcd's well-known ports: tests must never use them, so a developer's own etcd is never hit.
const reservedPorts = new Set([2379, 2380]);
// Ports this process already handed out: the OS may offer a just-closed port again.
const handedOut = new Set<number>();

/** A free TCP port on the loopback address, never 2379/2380, never handed out twice by this process. */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.unref();
      server.once("error", reject);
      server.listen({ host, port: 0, exclusive: true }, () => {
        const address = server.address();
        const p = typeof address === "object" && address !== null ? address.port : 0;
        server.close(() => resolve(p));
      });
    });
    if (port > 0 && !reservedPorts.has(port) && !handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("freePort: no free loopback port after 50 attempts");
}

export async function freePorts(count: number, host = "127.0.0.1"): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < count; i++) ports.push(await freePort(host));
  return ports;
}
