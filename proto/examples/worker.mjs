#!/usr/bin/env node
// A worker in another language: serves generation tasks on the bus, as ../PROTOCOL.md describes.
// Its "model" reverses the prompt's words (one token per word), like the Python SyntheticWorker.
//
//   node worker.mjs SERVER PREFIX [TAG] [--latency S] [--max-concurrency N]
//
// Prints "ready" once subscribed. Handles generation and streaming_generation tasks, sends
// heartbeats while working, honours cancel.task.<id>, and answers bad input with typed errors.

import process from "node:process";

import { decode, encode } from "@msgpack/msgpack";
import { connect, headers } from "nats";

import { connectOptions } from "./connect_options.mjs";

const PROTOCOL_VERSION = 1;
const MAX_TASK_BYTES = 900 * 1024; // the Python host's default; replies must fit max_payload
const KNOWN_KINDS = new Set(["generation", "streaming_generation", "chat", "reward", "tool_call"]);
const HTTP_LIKE = { malformed: "400", invalid: "400", unsupported_version: "400", unknown_task_type: "400",
  payload_too_large: "413", not_supported: "501", at_capacity: "503", timeout: "504" };

function parseArgs(argv) {
  const positional = [];
  const opts = { latency: 0, maxConcurrency: 64 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--latency") opts.latency = Number(argv[++i]);
    else if (argv[i] === "--max-concurrency") opts.maxConcurrency = Number(argv[++i]);
    else positional.push(argv[i]);
  }
  if (positional.length < 2 || !(opts.latency >= 0) || !(opts.maxConcurrency >= 1)) {
    process.stderr.write("usage: node worker.mjs SERVER PREFIX [TAG] [--latency S] [--max-concurrency N]\n");
    process.exit(3);
  }
  const [server, prefix, tag = "generation"] = positional;
  return { server, prefix, tag, ...opts };
}

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });

class TaskError extends Error {
  constructor(code, message, { retryable = false, details = {} } = {}) {
    super(message);
    this.info = { code, message, retryable, details };
  }
}

const args = parseArgs(process.argv.slice(2));
const nc = await connect({ ...connectOptions(args.server, `node-worker-${args.tag}`).options, timeout: 10_000 });
const running = new Map(); // task id -> AbortController

// One reply = frames on the request's reply subject; seq counts every frame from 0.
function replier(msg, taskId) {
  let seq = 0;
  let lastSent = Date.now();
  return {
    get quietFor() { return Date.now() - lastSent; },
    send(frame, fields = {}) {
      lastSent = Date.now();
      msg.respond(encode({ v: PROTOCOL_VERSION, task_id: taskId, frame, seq: seq++, ...fields }));
    },
  };
}

// A request rejected before any work: one final frame, plus the micro-service error headers.
function reject(msg, taskId, error) {
  if (!msg.reply) return; // nobody to tell
  const hdrs = headers();
  hdrs.set("Nats-Service-Error", error.message.slice(0, 200));
  hdrs.set("Nats-Service-Error-Code", HTTP_LIKE[error.code] ?? "500");
  const body = { v: PROTOCOL_VERSION, task_id: taskId, frame: "final", seq: 0, status: "rejected", error };
  msg.respond(encode(body), { headers: hdrs });
}

function parseRequest(data) {
  if (data.length > MAX_TASK_BYTES) {
    throw new TaskError("payload_too_large", `payload of ${data.length} bytes is over the limit of ${MAX_TASK_BYTES}`,
      { details: { size: data.length, limit: MAX_TASK_BYTES } });
  }
  let req;
  try {
    req = decode(data);
  } catch (err) {
    throw new TaskError("malformed", `not valid MessagePack: ${err.message}`);
  }
  if (req === null || typeof req !== "object" || Array.isArray(req)) {
    throw new TaskError("malformed", "expected a MessagePack map");
  }
  if (req.v !== PROTOCOL_VERSION) {
    throw new TaskError("unsupported_version", `protocol version ${JSON.stringify(req.v)} is not supported`,
      { details: { version: req.v ?? null, supported: [PROTOCOL_VERSION] } });
  }
  if (typeof req.kind !== "string" || req.task === null || typeof req.task !== "object" || typeof req.task.id !== "string") {
    throw new TaskError("invalid", "invalid message: kind, task and task.id are required");
  }
  if (!KNOWN_KINDS.has(req.kind)) {
    throw new TaskError("unknown_task_type", `unknown task type ${JSON.stringify(req.kind)}`, { details: { kind: req.kind } });
  }
  return req;
}

async function serve(msg) {
  let req;
  try {
    req = parseRequest(msg.data);
  } catch (err) {
    if (!(err instanceof TaskError)) throw err;
    let id = "";
    try { id = String(decode(msg.data)?.task?.id ?? ""); } catch { /* no id to echo */ }
    reject(msg, id, err.info);
    return;
  }
  const task = req.task;
  const out = replier(msg, task.id);
  const abort = new AbortController();
  running.set(task.id, abort);
  // Heartbeats tell the caller this worker is alive; without them it gives up after ~3 intervals.
  const interval = Math.max(100, req.heartbeat_ms ?? 1000);
  const ticker = setInterval(() => { if (out.quietFor >= interval) out.send("heartbeat"); }, Math.min(interval, 250));
  const deadline = req.timeout_ms ? setTimeout(() => abort.abort(new TaskError("timeout",
    `task exceeded its deadline of ${req.timeout_ms / 1000}s at the worker`)), req.timeout_ms) : null;
  try {
    const result = await run(req.kind, task, out, abort.signal);
    out.send("final", { status: "success", result });
  } catch (err) {
    const info = err instanceof TaskError ? err.info : { code: "worker_error", message: String(err), retryable: false, details: {} };
    const status = { timeout: "timeout", cancelled: "cancelled", not_supported: "not_supported" }[info.code] ?? "worker_error";
    out.send("final", { status, error: info });
  } finally {
    clearInterval(ticker);
    clearTimeout(deadline);
    running.delete(task.id);
  }
}

async function run(kind, task, out, signal) {
  if (kind !== "generation" && kind !== "streaming_generation") {
    throw new TaskError("not_supported", `node worker has no handler for ${kind} tasks`, { details: { kind } });
  }
  let words = (task.input_str ?? "").split(/\s+/).filter(Boolean).reverse();
  if (task.max_tokens != null) words = words.slice(0, task.max_tokens);
  const started = Date.now();
  const done = [];
  const step = task.streaming_step ?? 1;
  for (const word of words) {
    if (args.latency) await sleep(args.latency * 1000, signal);
    if (signal.aborted) throw signal.reason;
    done.push(word);
    // Partial frames are cumulative: each carries the whole output so far.
    if (kind === "streaming_generation" && done.length % step === 0 && done.length < words.length) {
      out.send("partial", { result: resultOf(done, words, null, started) });
    }
  }
  const result = resultOf(done, words, "stop", started);
  if (kind === "streaming_generation") result.end_flag = true;
  return result;
}

function resultOf(done, words, finishReason, started) {
  const result = {
    output_str: done.join(" "),
    output_tokens: done.map((_, i) => i),
    usage: { prompt_tokens: words.length, completion_tokens: done.length },
    latency_s: (Date.now() - started) / 1000,
  };
  if (finishReason) result.finish_reason = finishReason;
  return result;
}

// Cancels name the task in the last subject token; every replica listens (no queue group).
nc.subscribe(`${args.prefix}.cancel.task.*`, {
  callback: (_err, msg) => {
    const id = msg.subject.split(".").pop();
    running.get(id)?.abort(new TaskError("cancelled", "cancelled by the caller"));
  },
});

// The queue group name is part of the contract: replicas of any language must share it, or
// every replica would answer every task.
nc.subscribe(`${args.prefix}.tasks.${args.tag}`, {
  queue: `${args.prefix}-workers-${args.tag}`,
  callback: (_err, msg) => {
    if (running.size >= args.maxConcurrency) {
      reject(msg, "", { code: "at_capacity", message: `node worker at capacity (${args.maxConcurrency} tasks in flight)`,
        retryable: true, details: { capacity: args.maxConcurrency } });
      return;
    }
    serve(msg).catch((err) => process.stderr.write(`task failed: ${err?.stack ?? err}\n`));
  },
});
await nc.flush();
process.stdout.write("ready\n");

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    // Drain: stop taking tasks, let running ones send their final frames, then exit (bounded).
    setTimeout(() => process.exit(0), 5000).unref();
    await nc.drain();
    process.exit(0);
  });
}
