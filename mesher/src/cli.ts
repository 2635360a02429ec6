import { mesherVersion } from "./version.js";

// The mesher's command line. Today it answers --help and --version; the sidecar itself
// (registration, proxy, bridge, admin API) lands with the issue "Mesher: the drop-in sidecar".
const usage = `mesher ${mesherVersion}: the service-governance sidecar.

It registers the local app in the registry (registry-node or any etcd v3 cluster), keeps its
lease alive, watches the registry, caches endpoints and routes the app's calls straight to the
chosen instance with load balancing, circuit breaking, retries and policies.

Usage:
  mesher [flags]
  mesher policy validate|apply|diff|rollback|history <service> [file]

Flags:
  --help      Show this help and exit.
  --version   Print the version and exit.
`;

function main(argv: string[]): number {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(usage);
    return 0;
  }
  if (argv.includes("--version")) {
    process.stdout.write(`mesher Version: ${mesherVersion}\nNode Version: ${process.version}\n`);
    return 0;
  }
  const unknown = argv.find((a) => a.startsWith("-"));
  if (unknown !== undefined) {
    process.stderr.write(`mesher: unknown flag ${unknown}\nRun 'mesher --help' for usage.\n`);
    return 2;
  }
  process.stderr.write("mesher: the sidecar is not built yet (see issue 'Mesher: the drop-in sidecar')\n");
  return 1;
}

process.exitCode = main(process.argv.slice(2));
