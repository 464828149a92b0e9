#!/usr/bin/env node
// The reference side of bench/tokenizer for a Hugging Face tokenizer.json: encode
// throughput of Hugging Face's tokenizers (the Rust library through its Node bindings, on
// one thread: RAYON_NUM_THREADS=1, set by bench/tokenizer) and of @lenml/tokenizers (its
// JavaScript port) on the documents bench/tokenizer wrote.
//
//   node bench/tokenizer-hf-ref.js NODE_MODULES NAME DOCS.json
//
// Prints "reference tokenizers MB/s" and "reference lenml MB/s", each the best of three
// passes in CPU seconds (all of node's threads), MB being UTF-8 bytes, after one warm-up
// pass (both libraries cache words, as ours does).
'use strict';
const fs = require('fs');
const path = require('path');

const [NM, NAME, DOCS] = process.argv.slice(2);
const { Tokenizer } = require(path.join(NM, 'tokenizers'));
const lenml = require(path.join(NM, '@lenml/tokenizer-' + NAME));
const docs = JSON.parse(fs.readFileSync(DOCS, 'utf8'));
const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d, 'utf8'), 0);

async function best(f) {
  await f();
  let bestS = Infinity;
  for (let p = 0; p < 3; p++) {
    const t0 = process.cpuUsage();
    await f();
    const u = process.cpuUsage(t0);
    bestS = Math.min(bestS, (u.user + u.system) / 1e6);
  }
  return bytes / 1e6 / bestS;
}

async function main() {
  const tok = Tokenizer.fromFile(path.join(NM, '@lenml/tokenizer-' + NAME, 'models/tokenizer.json'));
  const js = lenml.fromPreTrained();
  const rust = await best(() => tok.encodeBatch(docs, { addSpecialTokens: true }));
  console.log(`reference tokenizers ${rust.toFixed(2)} MB/s`);
  const port = await best(() => { for (const d of docs) js.encode(d); });
  console.log(`reference lenml ${port.toFixed(2)} MB/s`);
}
main().catch((e) => { console.error(e); process.exit(1); });
