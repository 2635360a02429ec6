// `frontend`: the entry point of the example's traffic. GET /checkout?sku=<sku> asks `orders`
// (HTTP) for the order and `quotes` (gRPC) for a live quote, both through this process's own
// mesher: HTTP calls name the service with the Host header, the gRPC channel with its authority.
// Env: APP_PORT, OUTBOUND (host:port of its mesher's outbound proxy).

import grpc from "@grpc/grpc-js";
import { envPort, getJson, propagated, serve } from "./http-app.js";
import { getQuote, type Quote, quotesClient } from "./quotes-api.js";

const outbound = process.env.OUTBOUND ?? "127.0.0.1:15001";
const quotes = quotesClient(outbound);

interface Order {
  sku: string;
  inStock: boolean;
  priceCents: number;
}

serve(
  "frontend",
  envPort("APP_PORT"),
  (url, req) => {
    if (url.pathname !== "/checkout") return undefined;
    const sku = url.searchParams.get("sku") ?? "apple";
    const headers = propagated(req);
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(headers)) md.set(k, v);
    return Promise.all([
      getJson<Order>(outbound, "orders", `/orders?sku=${encodeURIComponent(sku)}`, headers),
      getQuote(quotes, { sku }, md, 5_000).catch((err: grpc.ServiceError) => {
        throw new Error(`quotes: ${err.details ?? err.message}`);
      }),
    ]).then(([order, quote]: [Order, Quote]): [number, unknown] => [200, { sku, order, quote }]);
  },
  { onStop: async () => quotes.close() },
);
