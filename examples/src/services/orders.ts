// `orders`: GET /orders?sku=<sku> asks `inventory` (the Python service) whether the item is in
// stock and `pricing` (the Node service on the SDK, which has no mesher) for its price, both
// through this process's own mesher with `Host: <service>`. Env: APP_PORT, OUTBOUND.

import { envPort, getJson, propagated, serve } from "./http-app.js";

const outbound = process.env.OUTBOUND ?? "127.0.0.1:15001";

interface Stock {
  sku: string;
  available: number;
}

interface Price {
  sku: string;
  priceCents: number;
}

serve("orders", envPort("APP_PORT"), (url, req) => {
  if (url.pathname !== "/orders") return undefined;
  const sku = url.searchParams.get("sku") ?? "apple";
  const headers = propagated(req);
  const path = `/${encodeURIComponent(sku)}`;
  return Promise.all([
    getJson<Stock>(outbound, "inventory", `/stock${path}`, headers),
    getJson<Price>(outbound, "pricing", `/price${path}`, headers),
  ]).then(([stock, price]): [number, unknown] => [
    200,
    { sku, inStock: stock.available > 0, available: stock.available, priceCents: price.priceCents },
  ]);
});
