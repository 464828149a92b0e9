#!/usr/bin/env node
// Writes gpt2-vectors.jsonl: a seeded, varied corpus of strings and the GPT-2 ids that two
// independent JavaScript GPT-2 BPE implementations give for them.
//
//   cd tests/tokenizer && npm ci && node gen-vectors.js > gpt2-vectors.jsonl
//
// Each line is {"cat": CATEGORY, "text": STRING, "ids": [ID, ...]}. The corpus is the same on
// every run (a fixed seed), so regenerating changes the file only if a reference changes.
//
// References: gpt-tokenizer (r50k_base, the GPT-2 encoding) and gpt-3-encoder (a port of
// openai/gpt-2 src/encoder.py). The ids written are gpt-tokenizer's; every string where
// the two disagree is listed on stderr and the run fails, so a disagreement is looked at,
// never silently committed.
//
// Special tokens: "<|endoftext|>" in the text is id 50256. Neither package handles it in
// the middle of a text (gpt-3-encoder never does; gpt-tokenizer's allowedSpecial only finds
// it at the start of the text, a sticky-regex bug), so the text is split on it here and
// each part encoded on its own, which is what tiktoken and Hugging Face do.
//
// The corpus (corpus.js) excludes a few code points where JavaScript and PCRE2 disagree.
'use strict';

const r50k = require('gpt-tokenizer/cjs/encoding/r50k_base');
const gpt3 = require('gpt-3-encoder');
const { chance, pick, range, times, WORDS, sentence, corpus } = require('./corpus');

const EOT = '<|endoftext|>';
const cases = corpus([EOT], (add) => {
  for (let i = 0; i < 100; i++) {
    const s = times(range(1, 4), () => (chance(0.5) ? sentence() : pick(WORDS))).map((x) => x + pick(['', ' ', '\n'])).join(pick([EOT, EOT, ' ' + EOT + ' ', EOT + '\n', '<|endoftext|', '<|endoftext', '|endoftext|>', '<|ENDOFTEXT|>', EOT + EOT]));
    add('special', chance(0.2) ? EOT + s : s);
  }
});

// ---- encode with both references ----
function encodeWith(f, text) {
  const ids = [];
  text.split(EOT).forEach((part, i) => {
    if (i > 0) ids.push(50256);
    if (part.length) ids.push(...f(part));
  });
  return ids;
}

let disagree = 0;
const out = [];
for (const c of cases) {
  const a = encodeWith((s) => r50k.encode(s), c.text);
  const b = encodeWith((s) => gpt3.encode(s), c.text);
  if (a.length !== b.length || a.some((x, i) => x !== b[i])) {
    disagree++;
    process.stderr.write(`disagree [${c.cat}] ${JSON.stringify(c.text)}\n  gpt-tokenizer ${JSON.stringify(a)}\n  gpt-3-encoder ${JSON.stringify(b)}\n`);
  }
  if (r50k.decode(a) !== c.text) throw new Error('gpt-tokenizer does not round-trip ' + JSON.stringify(c.text));
  out.push(JSON.stringify({ cat: c.cat, text: c.text, ids: a }));
}
process.stdout.write(out.join('\n') + '\n');
process.stderr.write(`${cases.length} strings, ${disagree} disagreements\n`);
process.exitCode = disagree ? 1 : 0;
