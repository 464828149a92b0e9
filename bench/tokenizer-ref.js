#!/usr/bin/env node
// The reference side of bench/tokenizer: GPT-2 encode throughput of gpt-tokenizer
// (r50k_base) on the documents bench/tokenizer wrote, on one thread.
//
//   node bench/tokenizer-ref.js DOCS.json
//
// DOCS.json is an array of strings. Prints "reference cold MB/s" (its merge cache cleared
// before each pass) and "reference warm MB/s" (after a pass that fills it), each the best of
// three passes in CPU seconds, MB being UTF-8 bytes. The package comes from
// tests/tokenizer/node_modules (`npm install` there).
'use strict';
const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const req = createRequire(path.join(__dirname, '..', 'tests', 'tokenizer', 'package.json'));
const r50k = req('gpt-tokenizer/cjs/encoding/r50k_base');

const EOT = '<|endoftext|>';
const docs = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d, 'utf8'), 0);

// <|endoftext|> is split off as in tests/tokenizer/gen-vectors.js (and in our encoder).
function encodeAll() {
  let n = 0;
  for (const d of docs) {
    const parts = d.split(EOT);
    for (let i = 0; i < parts.length; i++) {
      if (i > 0) n++;
      if (parts[i].length) n += r50k.encode(parts[i]).length;
    }
  }
  return n;
}

function best(passes, before) {
  let bestS = Infinity;
  for (let p = 0; p < passes; p++) {
    if (before) before();
    // CPU time (user + system, all of node's threads), as bench/tokenizer measures ours.
    const t0 = process.cpuUsage();
    encodeAll();
    const u = process.cpuUsage(t0);
    const s = (u.user + u.system) / 1e6;
    bestS = Math.min(bestS, s);
  }
  return bytes / 1e6 / bestS;
}

const cold = best(3, () => r50k.clearMergeCache());
encodeAll();
const warm = best(3, null);
console.log(`reference: gpt-tokenizer ${req('gpt-tokenizer/package.json').version} r50k_base, node ${process.version}`);
console.log(`reference cold ${cold.toFixed(2)} MB/s`);
console.log(`reference warm ${warm.toFixed(2)} MB/s`);
