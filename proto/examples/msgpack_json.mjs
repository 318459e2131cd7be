#!/usr/bin/env node
// JSON <-> MessagePack for the command line, so the `nats` CLI can send and show bus messages.
//
//   echo '{"v":1,"id":"job42","method":"native","prompt":"hi"}' | node msgpack_json.mjs encode > job.msgpack
//   nats kv get SCAF_RESULTS job42 --raw | node msgpack_json.mjs decode
//   nats sub 'scaf.events.job42' --dump events/ ; node msgpack_json.mjs decode-dump events/*.json

import { readFileSync } from "node:fs";
import process from "node:process";

import { decode, encode } from "@msgpack/msgpack";

const [mode, ...files] = process.argv.slice(2);
// Read stdin as a stream: readFileSync(0) fails with EAGAIN on non-blocking pipes.
async function stdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks);
}

switch (mode) {
  case "encode":
    process.stdout.write(encode(JSON.parse((await stdin()).toString("utf8"))));
    break;
  case "decode":
    process.stdout.write(`${JSON.stringify(decode(await stdin()))}\n`);
    break;
  case "decode-dump":
    // `nats sub --dump DIR` writes one JSON file per message, the body base64-encoded in "Data".
    // Numeric file names sort as numbers, so events print in the order they arrived.
    files.sort((a, b) => parseInt(a.replace(/.*\//, ""), 10) - parseInt(b.replace(/.*\//, ""), 10));
    for (const file of files) {
      const msg = JSON.parse(readFileSync(file, "utf8"));
      const body = msg.Data ? decode(Buffer.from(msg.Data, "base64")) : null;
      process.stdout.write(`${JSON.stringify({ subject: msg.Subject, body })}\n`);
    }
    break;
  default:
    process.stderr.write("usage: node msgpack_json.mjs encode|decode < IN > OUT  |  decode-dump FILE...\n");
    process.exit(3);
}
