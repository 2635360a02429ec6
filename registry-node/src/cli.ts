import { configFromFlags, FlagError, parseFlags, parseInitialCluster, usage } from "./config/index.js";
import { restoreSnapshot } from "./server/restore.js";
import { runMember } from "./server/run.js";
import { etcdServerVersion, registryNodeVersion } from "./version.js";

// registry-node's command line: etcd's flags, then the member. Exit codes: 0 on a clean
// stop, 2 for a bad flag or configuration (with a message naming it), 1 for a failure.
/** `registry-node snapshot restore <file> [--data-dir --name --initial-cluster --initial-cluster-token --initial-advertise-peer-urls --skip-hash-check]` */
async function snapshotRestore(argv: string[]): Promise<number> {
  const file = argv[0];
  const flags = new Map<string, string>([
    ["data-dir", ""],
    ["name", "default"],
    ["initial-cluster", "default=http://localhost:2380"],
    ["initial-cluster-token", "etcd-cluster"],
    ["initial-advertise-peer-urls", "http://localhost:2380"],
    ["skip-hash-check", "false"],
  ]);
  for (const arg of argv.slice(1)) {
    const m = /^--?([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m || !flags.has(m[1]!)) {
      process.stderr.write(`registry-node snapshot restore: unknown flag ${arg}\n`);
      return 2;
    }
    flags.set(m[1]!, m[2] ?? "true");
  }
  if (file === undefined || file.startsWith("-")) {
    process.stderr.write("registry-node snapshot restore: snapshot file path required\n");
    return 2;
  }
  const name = flags.get("name")!;
  try {
    const cluster = parseInitialCluster(flags.get("initial-cluster")!);
    const r = await restoreSnapshot({
      file,
      dataDir: flags.get("data-dir") || `${name}.etcd`,
      name,
      initialCluster: new Map([...cluster].map(([n, urls]) => [n, urls.map((u) => u.origin)])),
      initialClusterToken: flags.get("initial-cluster-token")!,
      skipHashCheck: flags.get("skip-hash-check") === "true",
    });
    process.stdout.write(
      `restored snapshot ${file} into ${flags.get("data-dir") || `${name}.etcd`} at raft index ${r.revisionIndex} for ${r.members} member(s)\n`,
    );
    return 0;
  } catch (err) {
    process.stderr.write(`registry-node snapshot restore: ${(err as Error).message}\n`);
    return 1;
  }
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === "snapshot" && argv[1] === "restore") return snapshotRestore(argv.slice(2));
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
    // Exit now, as etcd does: listeners or files opened before the failure would otherwise
    // keep a member that cannot serve alive.
    process.stderr.write(`registry-node: ${(err as Error).message}\n`);
    process.exit(1);
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
