// The mesher's command line: `mesher [flags]` runs the sidecar; `mesher policy ...` manages
// service policies in the registry.
import { ConfigError, flagsHelp, loadConfig } from "./config.js";
import { Sidecar } from "./sidecar.js";
import { mesherVersion } from "./version.js";

const usage = `mesher ${mesherVersion}: the service-governance sidecar.

It registers the local app in the registry (registry-node or any etcd v3 cluster), keeps its
lease alive, watches the registry, caches endpoints and routes the app's calls straight to the
chosen instance with load balancing, circuit breaking, retries and policies.

Usage:
  mesher [flags]
  mesher policy validate|apply|diff|rollback|history <service> [file]

Every flag can also be set as an environment variable (shown in brackets) or as a key of the
YAML file given with --config (keys are the flag names). Flags win over the environment,
which wins over the file.

Flags:
  --help      Show this help and exit.
  --version   Print the version and exit.
${flagsHelp()}
`;

async function policyCommand(argv: string[]): Promise<number> {
  const { runPolicyCommand, splitPolicyArgs } = await import("./policy-cli.js");
  const { policyArgs, configArgs } = splitPolicyArgs(argv);
  const cfg = loadConfig(configArgs);
  return runPolicyCommand(policyArgs, {
    endpoints: cfg["registry-endpoints"],
    prefix: cfg["registry-prefix"],
    requestTimeoutMs: cfg["registry-timeout"],
    ...(cfg["registry-user"] !== undefined ? { user: cfg["registry-user"] } : {}),
    ...(cfg["registry-password"] !== undefined ? { password: cfg["registry-password"] } : {}),
    stdout: (s) => process.stdout.write(s),
    stderr: (s) => process.stderr.write(s),
  });
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(usage);
    return 0;
  }
  if (argv.includes("--version")) {
    process.stdout.write(`mesher Version: ${mesherVersion}\nNode Version: ${process.version}\n`);
    return 0;
  }
  try {
    if (argv[0] === "policy") return await policyCommand(argv.slice(1));
    const cfg = loadConfig(argv);
    const sidecar = new Sidecar(cfg);
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      sidecar.logger.info({ signal }, "stopping");
      sidecar.stop().then(
        () => process.exit(0),
        (err: Error) => {
          sidecar.logger.error({ err: err.message }, "stop failed");
          process.exit(1);
        },
      );
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
    await sidecar.start();
    return -1; // keep running
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`mesher: ${err.message}\nRun 'mesher --help' for usage.\n`);
      return 2;
    }
    process.stderr.write(`mesher: ${(err as Error).message}\n`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
if (code >= 0) process.exitCode = code;
