import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { runCommand } from "./command.js";

export type TestCerts = {
  caFile: string;
  caKeyFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
  /** A certificate signed by another CA: valid-looking, not trusted. */
  otherCertFile: string;
  otherKeyFile: string;
};

async function openssl(args: string[], cwd: string): Promise<void> {
  const r = await runCommand("openssl", args, { cwd });
  if (r.code !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${r.stderr}`);
}

/**
 * Makes a throwaway CA, a server certificate for 127.0.0.1 and localhost, a client
 * certificate (CN `client`, or `cn`), and one from an untrusted CA, with openssl.
 */
export async function makeTestCerts(dir: string, cn = "client"): Promise<TestCerts> {
  const f = (n: string) => join(dir, n);
  writeFileSync(
    f("san.cnf"),
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
  );
  writeFileSync(f("client.cnf"), "extendedKeyUsage=clientAuth\n");
  const ca = async (name: string) => {
    await openssl(
      [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        `/CN=${name}`,
        "-keyout",
        `${name}.key`,
        "-out",
        `${name}.pem`,
      ],
      dir,
    );
  };
  const leaf = (name: string, caName: string, subject: string, ext: string) =>
    signLeaf(dir, name, caName, subject, ext);
  await ca("ca");
  await ca("otherca");
  await leaf("server", "ca", "127.0.0.1", "san.cnf");
  await leaf("client", "ca", cn, "client.cnf");
  await leaf("other", "otherca", cn, "client.cnf");
  return {
    caFile: f("ca.pem"),
    caKeyFile: f("ca.key"),
    serverCertFile: f("server.pem"),
    serverKeyFile: f("server.key"),
    clientCertFile: f("client.pem"),
    clientKeyFile: f("client.key"),
    otherCertFile: f("other.pem"),
    otherKeyFile: f("other.key"),
  };
}

/** A key and a certificate `<name>.pem` for CN `subject`, signed by `<caName>.pem` in `dir`. */
async function signLeaf(
  dir: string,
  name: string,
  caName: string,
  subject: string,
  ext: string,
): Promise<void> {
  await openssl(
    [
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-subj",
      `/CN=${subject}`,
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
    ],
    dir,
  );
  await openssl(
    [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${caName}.pem`,
      "-CAkey",
      `${caName}.key`,
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      ext,
      "-out",
      `${name}.pem`,
    ],
    dir,
  );
}

/**
 * A certificate signed by the CA that makeTestCerts(dir) made, with CN `cn`, for both TLS
 * server and client use on 127.0.0.1/localhost (a mesher's identity: CN = its service).
 */
export async function makeLeafCert(
  dir: string,
  name: string,
  cn: string,
): Promise<{ certFile: string; keyFile: string }> {
  await signLeaf(dir, name, "ca", cn, "san.cnf");
  return { certFile: join(dir, `${name}.pem`), keyFile: join(dir, `${name}.key`) };
}
