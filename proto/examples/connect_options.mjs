// Connection options from a server URL: nats.js does not read credentials from the URL, so
// nats://USER:PASSWORD@HOST:PORT (or SCAF_NATS_USER / SCAF_NATS_PASSWORD) become user/pass,
// with the user's private inbox prefix _INBOX_<user> (the only replies its permissions let it
// read: see ../PROTOCOL.md §10). An nkey seed (SCAF_NATS_NKEY_SEED, or the file named by
// SCAF_NATS_NKEY_SEED_FILE) logs in instead of a password; SCAF_NATS_USER then names only the
// inbox. `add-identity` writes exactly these settings into <user>.env (PROTOCOL.md §10.1).
// `where` is the URL without the secret, for messages.
import { readFileSync } from "node:fs";
import process from "node:process";

import { nkeyAuthenticator } from "nats";

export function connectOptions(server, name) {
  const url = new URL(server.replace(/^(nats|tls):/, "http:"));
  const user = decodeURIComponent(url.username) || process.env.SCAF_NATS_USER || "";
  const pass = decodeURIComponent(url.password) || process.env.SCAF_NATS_PASSWORD || "";
  const seedFile = process.env.SCAF_NATS_NKEY_SEED_FILE;
  const seed = process.env.SCAF_NATS_NKEY_SEED || (seedFile ? readFileSync(seedFile, "utf8").trim() : "");
  const servers = `${url.hostname}:${url.port || 4222}`;
  const options = { servers, name };
  if (user) options.inboxPrefix = `_INBOX_${user}`;
  if (seed) options.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
  else if (user) Object.assign(options, { user, pass });
  return { options, where: user ? `${user}@${servers}` : servers };
}
