import { configFromFlags, FlagError, parseFlags, usage } from "./config/index.js";
import { etcdServerVersion, registryNodeVersion } from "./version.js";

// registry-node's command line: etcd's flags, then the server. Exit codes: 0 on a clean
// stop, 2 for a bad flag or configuration (with a message naming it), 1 for a failure.
async function main(argv: string[]): Promise<number> {
  let values: ReturnType<typeof parseFlags>;
  try {
    values = parseFlags(argv, process.env);
  } catch (err) {
    if (err instanceof FlagError) {
      process.stderr.write(`registry-node: ${err.message}\nRun 'registry-node --help' for usage.\n`);
      return 2;
    }
    throw err;
  }
  if (values.get("help") === "true") {
    process.stdout.write(`${usage(registryNodeVersion)}\n`);
    return 0;
  }
  if (values.get("version") === "true") {
    process.stdout.write(
      `registry-node Version: ${registryNodeVersion}\netcd API Version: ${etcdServerVersion}\nNode Version: ${process.version}\n`,
    );
    return 0;
  }
  try {
    configFromFlags(values);
  } catch (err) {
    if (err instanceof FlagError) {
      process.stderr.write(`registry-node: failed to verify flags: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  process.stderr.write(
    "registry-node: the server is not built yet (see issue 'registry-node speaks etcd v3')\n",
  );
  return 1;
}

process.exitCode = await main(process.argv.slice(2));
