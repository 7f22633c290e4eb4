/** An ACME directory that cannot be reached is named in the issuance's error (it said "reading 'config'"). */
import { createServer } from "node:net";
import t from "tap";
import { createEcKeyPem, issueCertificate } from "../../proxy/acme.js";

t.test("acme unreachable - the error names the directory and that nothing answered", async (t) => {
  // A port nothing listens on: taken, then freed.
  const port = await new Promise<number>((resolve) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const p = (srv.address() as { port: number }).port;
      srv.close(() => resolve(p));
    });
  });
  const directoryUrl = `https://127.0.0.1:${port}/dir`;
  const err = await issueCertificate({
    directoryUrl,
    accountKeyPem: createEcKeyPem(),
    email: null,
    domain: "example.test",
    caBundlePem: null,
    challenges: { set: async () => undefined, remove: async () => undefined },
  }).catch((e: unknown) => e as Error);
  t.match(String((err as Error).message), `no answer from the ACME directory ${directoryUrl}`);
  t.notMatch(String((err as Error).message), /reading 'config'/);
});
