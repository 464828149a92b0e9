#!/usr/bin/env python3
"""Third opinion on the tokenizer vectors: GPT-2's own encoder (openai/gpt-2 src/encoder.py,
same algorithm, Python `regex` module) run on every string of gpt2-vectors.jsonl.

    python3 tests/tokenizer/check-vectors.py [VECTORS] [TEXT ...]

Prints how many vectors differ from encoder.py (it should be none), then the ids of each
TEXT given (Python string escapes allowed, e.g. 'a\\u0085b'). This is how the ids of the
cases where JavaScript and Python disagree on \\s (U+0085, U+FEFF; test_tokenizer.c,
test_disputed_whitespace) were obtained. Not part of `make test`; needs the `regex` module
(Debian: python3-regex).
"""
import json
import os
import sys

import regex

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, '..', 'data', 'gpt2')
EOT = '<|endoftext|>'

with open(os.path.join(DATA, 'vocab.json'), encoding='utf-8') as f:
    encoder = json.load(f)
with open(os.path.join(DATA, 'merges.txt'), encoding='utf-8') as f:
    merges = [tuple(line.split()) for line in f.read().split('\n')[1:-1]]
ranks = dict(zip(merges, range(len(merges))))


def bytes_to_unicode():
    bs = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
          + list(range(ord('®'), ord('ÿ') + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


byte_encoder = bytes_to_unicode()
pat = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
cache = {}


def bpe(token):
    if token in cache:
        return cache[token]
    word = tuple(token)
    pairs = set(zip(word, word[1:]))
    while pairs:
        bigram = min(pairs, key=lambda p: ranks.get(p, float('inf')))
        if bigram not in ranks:
            break
        first, second = bigram
        new_word, i = [], 0
        while i < len(word):
            try:
                j = word.index(first, i)
            except ValueError:
                new_word.extend(word[i:])
                break
            new_word.extend(word[i:j])
            i = j
            if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                new_word.append(first + second)
                i += 2
            else:
                new_word.append(word[i])
                i += 1
        word = tuple(new_word)
        pairs = set(zip(word, word[1:])) if len(word) > 1 else set()
    cache[token] = word
    return word


def encode(text):
    ids = []
    for k, part in enumerate(text.split(EOT)):
        if k:
            ids.append(encoder[EOT])
        for piece in regex.findall(pat, part):
            mapped = ''.join(byte_encoder[b] for b in piece.encode('utf-8'))
            ids.extend(encoder[t] for t in bpe(mapped))
    return ids


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, 'gpt2-vectors.jsonl')
    n = bad = 0
    with open(path, encoding='utf-8') as f:
        for line in f:
            v = json.loads(line)
            n += 1
            if encode(v['text']) != v['ids']:
                bad += 1
                if bad <= 5:
                    print('differs [%s] %r' % (v['cat'], v['text'][:80]))
    print('%d vectors, %d differ from encoder.py' % (n, bad))
    for arg in sys.argv[2:]:
        text = arg.encode('latin-1', 'backslashreplace').decode('unicode_escape')
        print(json.dumps(text), encode(text))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
