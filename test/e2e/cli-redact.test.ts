/** The CLI's redaction of URL passwords, which everything it prints as an error goes through (`fail`). */
import t from "tap";
import { redactUrls } from "../../bin/commands/common.js";

t.test("cli - redactUrls hides the password of every user:password@ and leaves the rest as it is", async (t) => {
  t.equal(
    redactUrls("cannot reach http://admin:s3cret@127.0.0.1:1: at http://admin:s3cret@127.0.0.1:1/api/jobs"),
    "cannot reach http://admin:***@127.0.0.1:1: at http://admin:***@127.0.0.1:1/api/jobs",
  );
  t.equal(redactUrls("nats://a:p1@h1:4222,nats://b:p2@h2:4222"), "nats://a:***@h1:4222,nats://b:***@h2:4222");
  t.equal(redactUrls("not a NATS URL: bob:pw123@127.0.0.1:4222"), "not a NATS URL: bob:***@127.0.0.1:4222");
  t.equal(redactUrls('"https://:tok@host/x"'), '"https://:***@host/x"', "a password without a user");
  for (const plain of ["http://127.0.0.1:8000/api", "mail ops@example.com", "nats://bob@host:4222", "a:b c@d"])
    t.equal(redactUrls(plain), plain, `${plain}: unchanged`);
});
