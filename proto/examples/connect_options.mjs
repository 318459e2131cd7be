// Connection options from a server URL: nats.js does not read credentials from the URL, so
// nats://USER:PASSWORD@HOST:PORT (or SCAF_NATS_USER / SCAF_NATS_PASSWORD) become user/pass,
// with the user's private inbox prefix _INBOX_<user> (the only replies its permissions let it
// read: see ../PROTOCOL.md §10). `where` is the URL without the password, for messages.
import process from "node:process";

export function connectOptions(server, name) {
  const url = new URL(server.replace(/^(nats|tls):/, "http:"));
  const user = decodeURIComponent(url.username) || process.env.SCAF_NATS_USER || "";
  const pass = decodeURIComponent(url.password) || process.env.SCAF_NATS_PASSWORD || "";
  const servers = `${url.hostname}:${url.port || 4222}`;
  const options = { servers, name };
  if (user) Object.assign(options, { user, pass, inboxPrefix: `_INBOX_${user}` });
  return { options, where: user ? `${user}@${servers}` : servers };
}
