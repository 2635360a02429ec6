// The image's HEALTHCHECK (and the example pod's probes): exits 0 when the mesher's admin API
// answers GET /healthz with a 2xx, 1 otherwise. It uses node's own fetch: the image has no curl.
//
// It asks the admin address the mesher reads from its environment, MESHER_ADMIN_LISTEN (a
// wildcard host is asked on loopback), and 127.0.0.1:15000 (the mesher's default port, the
// image's EXPOSE) without it. So a container that moves the admin API should do it with
// MESHER_ADMIN_LISTEN rather than the --admin-listen flag, which this check cannot see.
const listen = process.env.MESHER_ADMIN_LISTEN || "127.0.0.1:15000";
const colon = listen.lastIndexOf(":");
const host = listen.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
const port = listen.slice(colon + 1);
const wildcard = host === "" || host === "0.0.0.0" || host === "::";
const target = wildcard ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
const url = `http://${target}:${port}/healthz`;
const timeoutMs = 5000; // below the HEALTHCHECK's --timeout (10s), so a hung server fails here, saying so

try {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  await res.arrayBuffer();
  if (!res.ok) console.error(`healthcheck: GET ${url} answered ${res.status}`);
  process.exitCode = res.ok ? 0 : 1;
} catch (err) {
  console.error(`healthcheck: GET ${url} failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
}
