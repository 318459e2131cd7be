#!/usr/bin/env node
// Publish one job over JetStream and print its events until the result or an error.
// Needs only a NATS client and MessagePack: see ../PROTOCOL.md for every field used here.
//
//   node publish_job.mjs SERVER PREFIX METHOD PROMPT [PARAMS_JSON]
//                        [--timeout S] [--idle-timeout S] [--id JOB_ID] [--owner NAME]
//
//   node publish_job.mjs nats://127.0.0.1:4222 scaf majority_vote "What is 6*7?" '{"sample_num": 3}'
//
// stdout: one JSON line per event, exactly as it arrived (decoded from MessagePack).
// Exit status: 0 result, 1 error event, 2 deadline passed, 3 bad arguments, 4 bus failure.
//
// --owner NAME submits the job as owner NAME (a NATS user client-NAME may only use its own name):
// the job's key is then NAME.JOB_ID (PROTOCOL.md 4.6), on its subjects and as its Nats-Msg-Id.

import { randomBytes } from "node:crypto";
import process from "node:process";

import { decode, encode } from "@msgpack/msgpack";
import { connect, headers } from "nats";

import { connectOptions } from "./connect_options.mjs";

const PROTOCOL_VERSION = 1; // the "v" field of every message; other versions are refused
const EXIT = { result: 0, error: 1, timeout: 2, usage: 3, bus: 4 };

function usage(message) {
  process.stderr.write(
    `${message}\nusage: node publish_job.mjs SERVER PREFIX METHOD PROMPT [PARAMS_JSON] ` +
      "[--timeout S] [--idle-timeout S] [--id JOB_ID] [--owner NAME]\n",
  );
  process.exit(EXIT.usage);
}

function parseArgs(argv) {
  const positional = [];
  const opts = { timeout: 120, idleTimeout: 60, id: randomBytes(16).toString("hex"), owner: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--timeout" || arg === "--idle-timeout" || arg === "--id" || arg === "--owner") {
      const value = argv[++i];
      if (value === undefined) usage(`${arg} needs a value`);
      if (arg === "--id") opts.id = value;
      else if (arg === "--owner") opts.owner = value;
      else {
        const seconds = Number(value);
        if (!(seconds > 0)) usage(`${arg} must be a positive number of seconds`);
        opts[arg === "--timeout" ? "timeout" : "idleTimeout"] = seconds;
      }
    } else {
      positional.push(arg);
    }
  }
  if (positional.length < 4 || positional.length > 5) usage("expected 4 or 5 positional arguments");
  const [server, prefix, method, prompt, paramsText = "{}"] = positional;
  let params;
  try {
    params = JSON.parse(paramsText);
  } catch (err) {
    usage(`PARAMS_JSON is not JSON: ${err.message}`);
  }
  if (params === null || typeof params !== "object" || Array.isArray(params)) {
    usage("PARAMS_JSON must be a JSON object");
  }
  // Subject tokens: no dots, spaces or wildcards (the prefix may have dots between tokens).
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(method)) usage(`bad method name ${JSON.stringify(method)}`);
  if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(prefix)) usage(`bad prefix ${JSON.stringify(prefix)}`);
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(opts.id)) usage(`bad job id ${JSON.stringify(opts.id)}`);
  if (opts.owner !== null && !/^[A-Za-z0-9_-]{1,128}$/.test(opts.owner)) {
    usage(`bad owner ${JSON.stringify(opts.owner)}`);
  }
  // A job is known by its owner and id together: its key is the id's de-duplication key and
  // the tail of its events and cancel subjects.
  const key = opts.owner === null ? opts.id : `${opts.owner}.${opts.id}`;
  return { server, prefix, method, prompt, params, key, ...opts };
}

// Resolves to the next message, or null once `ms` pass: no wait in this program is unbounded.
function nextWithin(iterator, ms) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(null), Math.max(0, ms));
  });
  return Promise.race([iterator.next().then((r) => (r.done ? null : r.value)), timeout]).finally(() =>
    clearTimeout(timer),
  );
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const deadline = Date.now() + args.timeout * 1000;
  const left = () => deadline - Date.now();

  let nc;
  try {
    const { options } = connectOptions(args.server, "publish-job-example");
    nc = await connect({ ...options, timeout: Math.min(10_000, left()) });
  } catch (err) {
    process.stderr.write(`cannot connect to ${connectOptions(args.server).where}: ${err.message}\n`);
    return EXIT.bus;
  }

  try {
    // Subscribe to the job's events before publishing it, and make sure the server has seen the
    // subscription (flush), so not even the first event can be missed.
    const sub = nc.subscribe(`${args.prefix}.events.${args.key}`);
    await nc.flush();
    const events = sub[Symbol.asyncIterator]();

    const job = {
      v: PROTOCOL_VERSION,
      id: args.id,
      method: args.method,
      prompt: args.prompt,
      params: args.params,
      stream: true,
      metadata: { client: "node-example" },
      submitted_at: Date.now() / 1000,
    };
    // The stream de-duplicates on Nats-Msg-Id for two minutes: a retried publish runs the job once.
    const hdrs = headers();
    hdrs.set("Nats-Msg-Id", args.key);
    const subject = `${args.prefix}.jobs.${args.method}${args.owner === null ? "" : `.${args.owner}`}`;
    let ack;
    try {
      ack = await nc
        .jetstream()
        .publish(subject, encode(job), { headers: hdrs, timeout: Math.min(10_000, left()) });
    } catch (err) {
      process.stderr.write(`job not stored (is a controller running, so the jobs stream exists?): ${err.message}\n`);
      return EXIT.bus;
    }
    process.stderr.write(
      `job ${args.id} stored in ${ack.stream} as #${ack.seq}${ack.duplicate ? " (duplicate: already stored)" : ""}\n`,
    );

    // A second Ctrl-C gives up; the first asks the controller to cancel and waits for its error.
    let interrupted = false;
    process.on("SIGINT", () => {
      if (interrupted) process.exit(130);
      interrupted = true;
      process.stderr.write(`cancelling job ${args.id}\n`);
      nc.publish(`${args.prefix}.cancel.job.${args.key}`);
    });

    let expected = 0;
    for (;;) {
      const wait = Math.min(left(), args.idleTimeout * 1000);
      if (wait <= 0) {
        process.stderr.write(`timeout: job ${args.id} gave no result within ${args.timeout}s\n`);
        return EXIT.timeout;
      }
      const msg = await nextWithin(events, wait);
      if (msg === null) {
        const why = left() <= 0 ? `no result within ${args.timeout}s` : `no event for ${args.idleTimeout}s`;
        process.stderr.write(`timeout: job ${args.id}: ${why}\n`);
        return EXIT.timeout;
      }
      let event;
      try {
        event = decode(msg.data);
      } catch (err) {
        process.stderr.write(`skipping an event that is not MessagePack: ${err.message}\n`);
        continue;
      }
      if (event === null || typeof event !== "object" || event.v !== PROTOCOL_VERSION) {
        process.stderr.write(`skipping an event of unsupported protocol version ${JSON.stringify(event?.v)}\n`);
        continue;
      }
      // A job whose controller died is redelivered: its new run starts again with accepted, seq 0.
      if (event.type === "accepted" && event.seq === 0) expected = 0;
      if (event.seq !== expected) {
        process.stderr.write(`warning: expected event seq ${expected}, got ${event.seq}\n`);
      }
      expected = event.seq + 1;
      process.stdout.write(`${JSON.stringify(event)}\n`);
      if (event.type === "result") return EXIT.result;
      if (event.type === "error") {
        const e = event.error ?? {};
        process.stderr.write(`job failed: ${e.code}: ${e.message}${e.retryable ? " (retryable)" : ""}\n`);
        return EXIT.error;
      }
    }
  } finally {
    // Bounded: close() gives up on an unresponsive server rather than hanging the exit.
    await Promise.race([nc.close(), new Promise((resolve) => setTimeout(resolve, 2000))]);
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`unexpected failure: ${err?.stack ?? err}\n`);
    process.exit(EXIT.bus);
  },
);
