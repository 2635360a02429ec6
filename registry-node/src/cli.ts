import { configFromFlags, FlagError, parseFlags, usage } from "./config/index.js";
import { runMember } from "./server/run.js";
import { etcdServerVersion, registryNodeVersion } from "./version.js";

// registry-node's command line: etcd's flags, then the member. Exit codes: 0 on a clean
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
  let config: ReturnType<typeof configFromFlags>;
  try {
    config = configFromFlags(values);
  } catch (err) {
    if (err instanceof FlagError) {
      process.stderr.write(`registry-node: failed to verify flags: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  let member: Awaited<ReturnType<typeof runMember>>;
  try {
    member = await runMember(config);
  } catch (err) {
    process.stderr.write(`registry-node: ${(err as Error).message}\n`);
    return 1;
  }
  await new Promise<void>((resolve) => {
    const onSignal = () => resolve();
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
  });
  await member.stop();
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
