/**
 * The console's CSP names its socket's origin from the request's Host, and only a Host that is a plain host name
 * and port: anything else (a second directive, a wildcard, a space) leaves the policy at 'self'.
 */
import t from "tap";
import { consoleCsp } from "../../gateway/routes/console.js";

t.test("console CSP - sockets to the page's own host; a Host that is more than a host adds nothing", async (t) => {
  t.match(
    consoleCsp("nodeway.example:8443"),
    /connect-src 'self' ws:\/\/nodeway\.example:8443 wss:\/\/nodeway\.example:8443;/,
  );
  t.match(consoleCsp("[::1]:8000"), /connect-src 'self' ws:\/\/\[::1\]:8000 wss:\/\/\[::1\]:8000;/);
  for (const host of [
    undefined,
    "",
    "evil.example; script-src *",
    "a.example *",
    "*",
    "a.example/x",
    "a.example:8000 https://evil.example",
    "a.example\r\nx: y",
    "x".repeat(300),
  ]) {
    const csp = consoleCsp(host);
    t.match(csp, /connect-src 'self';/, `${JSON.stringify(host)}: 'self' only`);
    t.equal(csp.split(";").filter((d) => d.trim().startsWith("script-src")).length, 1, "one script-src");
    t.notMatch(csp, /\*|evil/, "nothing of the Host in it");
  }
});
