/**
 * `nodeway nats-accounts --agents a,b,c --out accounts.conf [--passwords-dir DIR] [--placeholders]`: writes the
 * NATS account config of a fleet (nats/accounts.ts): a `gateway` user and one confined user per agent. Each
 * user's password goes to `DIR/<user>.pw` (mode 0600; DIR defaults to `<out>.passwords`), to be given to that
 * process only (`natsUser` + `natsPasswordFile`); a user whose file is there already keeps its password (adding an
 * agent changes no other's). `--placeholders` writes `$<USER>_PASSWORD` instead of passwords:
 * nats-server reads each from that environment variable (deploy/nats/accounts.conf, nats-server.env.example).
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { renderAccounts } from "../nats/index.js";

/** The placeholder of `user`'s password in a template: `$AGENT_1_PASSWORD`. */
export const placeholderOf = (user: string): string => `$${user.toUpperCase().replace(/-/g, "_")}_PASSWORD`;

export async function cmdNatsAccounts(argv: readonly string[]): Promise<void> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      agents: { type: "string" },
      out: { type: "string" },
      "passwords-dir": { type: "string" },
      placeholders: { type: "boolean", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  const agents = (values.agents ?? "")
    .split(",")
    .map((a) => a.trim())
    .filter((a) => a.length > 0);
  if (agents.length === 0) throw new Error("--agents: give the agents' names, comma-separated (--agents gpu-1,gpu-2)");
  if (!values.out) throw new Error("--out: the file to write the account config to");
  const users = ["gateway", ...agents];
  const dir = values["passwords-dir"] ?? `${values.out}.passwords`;
  const passwords = values.placeholders
    ? Object.fromEntries(users.map((u) => [u, placeholderOf(u)]))
    : Object.fromEntries(users.flatMap((u) => existingPassword(dir, u)));
  const header = [
    `Written by: nodeway nats-accounts --agents ${agents.join(",")}${values.placeholders ? " --placeholders" : ""}`,
    "One NATS user per agent, confined to its own jobs (docs/security.md); run the command again to add an agent.",
  ];
  const { conf, passwords: made } = renderAccounts({ agents, passwords, header });
  writeFileSync(values.out, conf, { mode: 0o600 });
  if (values.placeholders) {
    process.stdout.write(`wrote ${values.out} with placeholders ${users.map(placeholderOf).join(", ")}\n`);
    return;
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const [user, pw] of made) writeFileSync(join(dir, `${user}.pw`), `${pw}\n`, { mode: 0o600 });
  process.stdout.write(
    `wrote ${values.out}; passwords in ${dir}/<user>.pw (${users.join(", ")}): give each process only its own ` +
      "(natsUser <user> and natsPasswordFile)\n",
  );
}

/** `[user, password]` from `dir/<user>.pw` when that file exists, else nothing. */
function existingPassword(dir: string, user: string): [string, string][] {
  try {
    const pw = readFileSync(join(dir, `${user}.pw`), "utf8")
      .split("\n")[0]!
      .trim();
    return pw ? [[user, pw]] : [];
  } catch {
    return [];
  }
}
