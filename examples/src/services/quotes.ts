// `quotes`: a gRPC service (grpc-js, JSON messages) behind its mesher. It knows nothing about the
// registry: its mesher registers it with `--protocol=grpc`, checks it with the standard gRPC
// health service, and admits calls on its inbound port. Env: APP_PORT, INSTANCE (its name).

import grpc from "@grpc/grpc-js";
import { healthService, type Quote, type QuoteRequest, quotesService, SERVING } from "./quotes-api.js";

const port = Number(process.env.APP_PORT ?? 0);
const instance = process.env.INSTANCE ?? "quotes-1";

let tick = 0;
/** A price that moves a little on every call, from a per-SKU base. */
function priceCents(sku: string): number {
  let base = 0;
  for (const c of sku) base = (base * 31 + c.charCodeAt(0)) % 5_000;
  tick += 1;
  return 1_000 + base + Math.round(50 * Math.sin(tick / 10));
}

const server = new grpc.Server();
server.addService(quotesService, {
  Get: (call: grpc.ServerUnaryCall<QuoteRequest, Quote>, cb: grpc.sendUnaryData<Quote>) => {
    const sku = call.request.sku;
    if (typeof sku !== "string" || sku === "") {
      cb({ code: grpc.status.INVALID_ARGUMENT, details: "sku is required" });
      return;
    }
    const caller = call.metadata.get("x-mesher-caller")[0];
    cb(null, {
      sku,
      priceCents: priceCents(sku),
      from: instance,
      caller: caller === undefined ? null : String(caller),
    });
  },
});
server.addService(healthService, {
  Check: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) => cb(null, SERVING),
});
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
  if (err !== null) {
    process.stderr.write(`quotes: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify({ service: "quotes", instance, listening: bound })}\n`);
});

// A graceful stop lets calls in flight finish; a caller's mesher holding its HTTP/2 session open
// does not delay the exit by more than the grace.
const stop = () => {
  setTimeout(() => process.exit(0), 2_000).unref();
  server.tryShutdown(() => process.exit(0));
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
