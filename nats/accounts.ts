/**
 * The NATS account config of a fleet: one `gateway` user with the account's full rights, and one user per agent
 * confined to what an agent needs (docs/security.md). `nodeway nats-accounts` writes it; deploy/nats/accounts.conf
 * is its output for agents `agent-1` and `agent-2` with placeholder passwords.
 *
 * An agent user `<a>` may publish only its own events (`nw.events.*.<a>`), ask the gateways about its jobs'
 * records (`nw.rec.<a>`), write its registration (`nw_agents` keys `<a>.*`) and node catalogs (`nw_nodes` keys
 * `<a>.*`), store the chunks of output assets (their entries, and every read of `nw_assets`, go through the gateways:
 * gateway/agent-assets.ts), pull and settle jobs from the pool consumers the gateways made, and read its replies
 * under its own inbox prefix `_INBOX_<a>`; it may answer requests sent to it (`allow_responses`).
 */
import { randomBytes } from "node:crypto";
import { GATEWAY_SOURCE } from "../protocol/index.js";

export interface AccountsPlan {
  /** Agent user names: each is also the agent's principal, the last token of its event subjects. */
  agents: readonly string[];
  /**
   * Passwords by user (`gateway` and each agent); missing ones are generated. A `$NAME` value is written bare:
   * nats-server then reads the password from its environment variable NAME.
   */
  passwords?: Readonly<Record<string, string>>;
  /** Lines to put first (how the file was made). */
  header?: readonly string[];
}

/** An agent name usable as a NATS user and a subject token. */
export function agentPrincipalOk(name: string): boolean {
  return /^[A-Za-z0-9_-]{1,64}$/.test(name) && name !== GATEWAY_SOURCE && name !== "gateway";
}

const quote = (s: string) => JSON.stringify(s);
/** A password, or a `$NAME` placeholder left bare: nats-server takes a bare `$NAME` from its environment. */
const passwordValue = (p: string) => (/^\$[A-Z0-9_]+$/.test(p) ? p : quote(p));

/** The permissions block of agent user `a`. */
function agentPermissions(a: string): string[] {
  const pub = [
    `nw.events.*.${a}`,
    `nw.rec.${a}`,
    `$KV.nw_agents.${a}.*`,
    `$KV.nw_nodes.${a}.*`,
    "$O.nw_assets.C.>",
    "$JS.API.CONSUMER.MSG.NEXT.NW_JOBS.*",
    "$JS.ACK.NW_JOBS.>",
    "$JS.API.CONSUMER.INFO.NW_JOBS.*",
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.MSG.GET.KV_nw_agents",
    "$JS.API.DIRECT.GET.KV_nw_agents.>",
    "$JS.API.STREAM.MSG.GET.KV_nw_nodes",
    "$JS.API.DIRECT.GET.KV_nw_nodes.>",
  ];
  const sub = ["nw.cancel.*", "nw.agent.*.control", `_INBOX_${a}.>`];
  return [
    "permissions: {",
    `  publish: { allow: [${pub.map(quote).join(", ")}] }`,
    `  subscribe: { allow: [${sub.map(quote).join(", ")}] }`,
    "  allow_responses: true",
    "}",
  ];
}

/**
 * The account config for `plan.agents`, and every user's password (generated where `plan.passwords` has none).
 * Throws on a name that cannot be a NATS user and subject token, or on a repeated one.
 */
export function renderAccounts(plan: AccountsPlan): { conf: string; passwords: Map<string, string> } {
  const seen = new Set<string>();
  for (const a of plan.agents) {
    if (!agentPrincipalOk(a))
      throw new Error(`agent name ${quote(a)}: letters, digits, "-" and "_" only, not "gw" or "gateway"`);
    if (seen.has(a)) throw new Error(`agent name ${quote(a)} given twice`);
    seen.add(a);
  }
  const passwords = new Map<string, string>();
  const pw = (user: string) => {
    const p = plan.passwords?.[user] ?? randomBytes(24).toString("base64url");
    passwords.set(user, p);
    return p;
  };
  const users = [`{ user: "gateway", password: ${passwordValue(pw("gateway"))} }`];
  for (const a of plan.agents) {
    users.push(
      [`{ user: ${quote(a)}, password: ${passwordValue(pw(a))}`, ...agentPermissions(a).map((l) => `  ${l}`), "}"].join(
        "\n",
      ),
    );
  }
  const indent = (text: string, n: number) =>
    text
      .split("\n")
      .map((l) => " ".repeat(n) + l)
      .join("\n");
  const lines = [
    ...(plan.header ?? []).map((l) => `# ${l}`),
    "accounts {",
    "  NODEWAY {",
    "    jetstream: enabled",
    "    users: [",
    indent(users.join("\n"), 6),
    "    ]",
    "  }",
    "}",
    "",
  ];
  return { conf: lines.join("\n"), passwords };
}
