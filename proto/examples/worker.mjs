#!/usr/bin/env node
// A worker in another language: serves generation tasks on the bus, as ../PROTOCOL.md describes.
// Its "model" reverses the prompt's words (one token per word), like the Python SyntheticWorker.
//
//   node worker.mjs SERVER PREFIX [TAG] [--latency S] [--max-concurrency N]
//
// Prints "ready" once subscribed. Pulls queued tasks from the tag's JetStream work queue only
// into free slots (PROTOCOL.md 5.5), also answers direct requests on tasks.<tag>, handles
// generation and streaming_generation tasks, sends heartbeats (and JetStream progress) while
// working, honours cancel.task.<id>, and answers bad input with typed errors.

import process from "node:process";

import { decode, encode } from "@msgpack/msgpack";
import { AckPolicy, DiscardPolicy, RetentionPolicy, StorageType, connect, createInbox, headers, nanos } from "nats";

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
const running = new Map(); // task id -> { abort, attempt }

// One reply = frames on the reply subject (a direct request's reply, or a queued task's
// Scaf-Reply-To header); seq counts every frame from 0; a queued task's frames carry its attempt.
function replier(replyTo, taskId, attempt) {
  let seq = 0;
  let lastSent = Date.now();
  return {
    get quietFor() { return Date.now() - lastSent; },
    send(frame, fields = {}) {
      lastSent = Date.now();
      const body = { v: PROTOCOL_VERSION, task_id: taskId, frame, seq: seq++, ...fields };
      if (attempt) body.attempt = attempt;
      nc.publish(replyTo, encode(body));
    },
  };
}

// A request rejected before any work: one final frame, plus the micro-service error headers.
function reject(replyTo, taskId, error, attempt) {
  if (!replyTo) return; // nobody to tell
  const hdrs = headers();
  hdrs.set("Nats-Service-Error", error.message.slice(0, 200));
  hdrs.set("Nats-Service-Error-Code", HTTP_LIKE[error.code] ?? "500");
  const body = { v: PROTOCOL_VERSION, task_id: taskId, frame: "final", seq: 0, status: "rejected", error };
  if (attempt) body.attempt = attempt;
  nc.publish(replyTo, encode(body), { headers: hdrs });
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

// `jsAck(reply, token)` answers a JetStream delivery: +ACK done, +WPI still working, -NAK
// hand back, +TERM drop. `queued` is null for a direct request.
const jsAck = (reply, token) => nc.publish(reply, new TextEncoder().encode(token));

async function serve(data, replyTo, queued) {
  let req;
  try {
    req = parseRequest(data);
  } catch (err) {
    if (!(err instanceof TaskError)) throw err;
    let id = "";
    try { id = String(decode(data)?.task?.id ?? ""); } catch { /* no id to echo */ }
    reject(replyTo, id, err.info, queued?.attempt);
    if (queued) jsAck(queued.ack, "+TERM");
    return;
  }
  const task = req.task;
  const out = replier(replyTo, task.id, queued?.attempt);
  const abort = new AbortController();
  const live = { abort, attempt: queued?.attempt, superseded: false };
  running.set(task.id, live);
  if (queued) out.send("heartbeat"); // "started": the caller's silence clock starts now
  // Heartbeats tell the caller this worker is alive; without them it gives up after ~3 intervals.
  // Progress (+WPI) tells JetStream the same, so a long task is not redelivered.
  const interval = Math.max(100, req.heartbeat_ms ?? 1000);
  let lastProgress = Date.now();
  const ticker = setInterval(() => {
    if (out.quietFor >= interval) out.send("heartbeat");
    if (queued && Date.now() - lastProgress >= ACK_WAIT_MS / 4) { jsAck(queued.ack, "+WPI"); lastProgress = Date.now(); }
  }, Math.min(interval, 250));
  const deadline = req.timeout_ms ? setTimeout(() => abort.abort(new TaskError("timeout",
    `task exceeded its deadline of ${req.timeout_ms / 1000}s at the worker`)), req.timeout_ms) : null;
  try {
    const result = await run(req.kind, task, out, abort.signal);
    out.send("final", { status: "success", result });
  } catch (err) {
    if (live.superseded) return; // a newer attempt owns the task: no final frame, no ack
    const info = err instanceof TaskError ? err.info : { code: "worker_error", message: String(err), retryable: false, details: {} };
    const status = { timeout: "timeout", cancelled: "cancelled", not_supported: "not_supported" }[info.code] ?? "worker_error";
    out.send("final", { status, error: info });
  } finally {
    clearInterval(ticker);
    clearTimeout(deadline);
    running.delete(task.id);
  }
  if (queued) jsAck(queued.ack, "+ACK"); // after the final frame: a crash before it means redelivery
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
// With a Scaf-Attempts-Below header only older attempts stop (silently): the caller follows a
// newer one. A cancel for a task not running here may be for one still queued: remember it.
const cancelledEarly = new Set();
nc.subscribe(`${args.prefix}.cancel.task.*`, {
  callback: (_err, msg) => {
    const id = msg.subject.split(".").pop();
    const below = msg.headers?.get("Scaf-Attempts-Below");
    const live = running.get(id);
    if (below) {
      if (live?.attempt && live.attempt < Number(below)) {
        live.superseded = true;
        live.abort.abort(new TaskError("cancelled", "superseded by a newer attempt"));
      }
      return;
    }
    if (live) live.abort.abort(new TaskError("cancelled", "cancelled by the caller"));
    else {
      cancelledEarly.add(id);
      if (cancelledEarly.size > 10_000) cancelledEarly.delete(cancelledEarly.values().next().value);
    }
  },
});

// The queue group name is part of the contract: replicas of any language must share it, or
// every replica would answer every task. Direct requests take a free slot or are refused.
nc.subscribe(`${args.prefix}.tasks.${args.tag}`, {
  queue: `${args.prefix}-workers-${args.tag}`,
  callback: (_err, msg) => {
    if (running.size >= args.maxConcurrency) {
      reject(msg.reply, "", { code: "at_capacity", message: `node worker at capacity (${args.maxConcurrency} tasks in flight)`,
        retryable: true, details: { capacity: args.maxConcurrency } });
      return;
    }
    serve(msg.data, msg.reply, null).catch((err) => process.stderr.write(`task failed: ${err?.stack ?? err}\n`));
  },
});

// The task queue: declare the stream and the tag's durable consumer (same settings as every
// replica, in any language), then keep pull requests outstanding for exactly the free slots.
const NAME = args.prefix.replaceAll(".", "_").toUpperCase();
const STREAM = `${NAME}_TASKS`;
const CONSUMER = `${NAME}_TASKS_${args.tag}`;
const ACK_WAIT_MS = 6000;
const PULL_EXPIRES_MS = 5000;
// Provisioned by the admin user in a deployment with auth; created here only when missing
// (a local server without auth), with the same settings every replica in any language uses.
// No API check ($JS.API.INFO): a worker-<kind> user may ask only its own consumer's info.
const jsm = await nc.jetstreamManager({ checkAPI: false });
try {
  await jsm.consumers.info(STREAM, CONSUMER);
} catch {
  try {
    await jsm.streams.info(STREAM);
  } catch {
    await jsm.streams.add({ name: STREAM, subjects: [`${args.prefix}.queue.*`], retention: RetentionPolicy.Workqueue,
      storage: StorageType.File, max_msg_size: 1024 * 1024, max_age: nanos(3600_000), max_msgs: 1_000_000,
      discard: DiscardPolicy.New, num_replicas: 1 });
  }
  await jsm.consumers.add(STREAM, { durable_name: CONSUMER, ack_policy: AckPolicy.Explicit, ack_wait: nanos(ACK_WAIT_MS),
    max_deliver: 5, max_ack_pending: 100_000, max_waiting: 4096, filter_subject: `${args.prefix}.queue.${args.tag}` });
}

const pullInbox = createInbox(nc.options.inboxPrefix);
const pulls = new Map(); // token -> messages still owed by that pull request
let credit = 0; // slots promised to outstanding pulls
let pullSeq = 0;
const free = () => args.maxConcurrency - running.size - credit;
function endPull(token) {
  credit -= pulls.get(token) ?? 0;
  pulls.delete(token);
}
function pullMore() {
  const n = free();
  if (n <= 0 || nc.isClosed()) return;
  const token = String(pullSeq++);
  pulls.set(token, n);
  credit += n;
  nc.publish(`$JS.API.CONSUMER.MSG.NEXT.${STREAM}.${CONSUMER}`,
    new TextEncoder().encode(JSON.stringify({ batch: n, expires: PULL_EXPIRES_MS * 1_000_000 })), { reply: `${pullInbox}.${token}` });
  setTimeout(() => { if (pulls.has(token)) { endPull(token); pullMore(); } }, PULL_EXPIRES_MS + 1000).unref();
}
nc.subscribe(`${pullInbox}.*`, {
  callback: (_err, msg) => {
    if (msg.headers?.code && msg.data.length === 0) { // 408 expired, 404/409: this pull is over
      if (msg.headers.code !== 100) { endPull(msg.subject.split(".").pop()); setTimeout(pullMore, msg.headers.code === 409 ? 500 : 0); }
      return;
    }
    const token = [...pulls.keys()].find((t) => pulls.get(t) > 0);
    if (token !== undefined) {
      credit -= 1;
      if (pulls.get(token) === 1) pulls.delete(token); else pulls.set(token, pulls.get(token) - 1);
    } else if (free() <= 0) { jsAck(msg.reply, "-NAK"); return; }
    // $JS.ACK.<stream>.<consumer>.<delivered>... (or with <domain>.<account hash> after $JS.ACK)
    const t = msg.reply.split(".");
    const attempt = Number(t.length >= 12 ? t[6] : t[4]);
    const replyTo = msg.headers?.get("Scaf-Reply-To");
    let id = "";
    try { id = String(decode(msg.data)?.task?.id ?? ""); } catch { /* serve() rejects it */ }
    if (!replyTo || cancelledEarly.delete(id) || running.has(id)) { jsAck(msg.reply, "+TERM"); pullMore(); return; }
    serve(msg.data, replyTo, { ack: msg.reply, attempt })
      .catch((err) => process.stderr.write(`task failed: ${err?.stack ?? err}\n`))
      .finally(pullMore);
  },
});
pullMore();
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
