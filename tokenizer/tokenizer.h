/* tokenizer.h - GPT-2 byte-level BPE: encode, decode, incremental (streaming) decode.
 *
 * A tok_t's tables are immutable after tok_init and it may be shared by any number of
 * threads: tok_encode may run concurrently on several threads (it keeps its scratch per call;
 * the shared word cache inside is locked), decoding only reads the tables. Per-stream decode
 * state lives in a tok_stream_t that belongs to one sequence.
 *
 * Text that is not valid UTF-8 is encoded too: each maximal run of invalid bytes becomes a
 * piece of its own that BPE encodes byte-wise, so decode(encode(s)) == s for any bytes.
 */
#ifndef NANO_VLLM_TOKENIZER_H
#define NANO_VLLM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tok tok_t;

/* The longest byte string one token decodes to is at most this long. */
#define TOK_MAX_TOKEN_BYTES 256
/* tok_stream_feed never writes more than this: every held or new byte may become U+FFFD. */
#define TOK_STREAM_OUT_MAX (3 * (TOK_MAX_TOKEN_BYTES + 4))

/* Loads vocab.json + merges.txt from dir, or, when those are absent, the vocab and merges
 * of a Hugging Face tokenizer.json there ("model.vocab", "model.merges" as "a b" strings or
 * ["a", "b"] pairs). The vocabulary must hold every byte and "<|endoftext|>". All memory
 * (tables, a ~4 MB word cache) is allocated here. On success *out is owned by the caller
 * (tok_free). On failure returns -ENOENT/-EINVAL/-ENOMEM/-EIO, leaves *out NULL and writes
 * one line naming the file (and line or key) and the problem into err, e.g.
 * "DIR/merges.txt:1042: expected two symbols, got 3". Any thread; takes ~0.1 s for GPT-2. */
int tok_init(tok_t **out, const char *dir, char *err, size_t errlen);
/* Frees t and everything it owns; NULL is fine. No other thread may be using t. */
void tok_free(tok_t *t);

/* Highest id + 1 (50257 for GPT-2). */
int tok_vocab_size(const tok_t *t);
/* Id of <|endoftext|> (50256 for GPT-2). */
int32_t tok_eos_id(const tok_t *t);

/* Encodes len bytes of text (any bytes; invalid UTF-8 is encoded byte-wise as GPT-2 does).
 * The literal text "<|endoftext|>" encodes to tok_eos_id, as in Hugging Face's GPT-2
 * tokenizer; the text on each side of it is encoded on its own. On success *ids is a
 * malloc'd array of *n ids owned by the caller (free()); it is non-NULL even when *n is 0.
 * Returns 0 or -ENOMEM (-EINVAL only if PCRE2 itself fails a match, which the pattern
 * never makes it do). Thread-safe. */
int tok_encode(const tok_t *t, const char *text, size_t len, int32_t **ids, size_t *n);

/* Decodes ids to their bytes, joined (no UTF-8 repair). *text is malloc'd, NUL-terminated,
 * owned by the caller. Returns 0, -ENOMEM, or -EINVAL if an id is out of range or unused
 * (then *text is NULL and *len 0; the caller knows the ids). Any thread. */
int tok_decode(const tok_t *t, const int32_t *ids, size_t n, char **text, size_t *len);

/* The raw bytes of one token (not NUL-terminated) and their count; NULL (and *len 0) for an
 * invalid id. The pointer stays valid as long as t. Any thread. */
const char *tok_token_bytes(const tok_t *t, int32_t id, size_t *len);

/* Incremental decode: feed one id at a time, get back only complete UTF-8 text. Bytes of
 * a character split across tokens are held until the character is complete; bytes that
 * can never become valid UTF-8 come out as U+FFFD, as Hugging Face does. */
typedef struct tok_stream {
    unsigned char pending[4]; /* an incomplete UTF-8 sequence carried to the next token */
    int npending;
} tok_stream_t;

/* Starts an empty stream (or resets one). */
void tok_stream_init(tok_stream_t *s);
/* Writes the text completed by id to out (capacity cap; TOK_STREAM_OUT_MAX is always
 * enough, and 2 * TOK_MAX_TOKEN_BYTES is for any real GPT-2 token) and sets *outlen.
 * Returns 0, -EINVAL for an invalid id or -ENOSPC if cap is too small (state unchanged,
 * *outlen 0). Only reads t; s belongs to the caller's thread. */
int tok_stream_feed(const tok_t *t, tok_stream_t *s, int32_t id, char *out, size_t cap,
                    size_t *outlen);
/* Ends the stream: held bytes (an unfinished character) come out as one U+FFFD, 3 bytes;
 * out needs room for them. The stream is then empty and may be reused. */
void tok_stream_flush(tok_stream_t *s, char *out, size_t cap, size_t *outlen);

#endif
