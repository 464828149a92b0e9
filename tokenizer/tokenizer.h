/* tokenizer.h - BPE tokenizers as Hugging Face runs them: encode, decode, streaming decode.
 *
 * Loads GPT-2's vocab.json + merges.txt or a Hugging Face tokenizer.json (byte-level BPE as
 * in Llama 3, Qwen2/3, SmolLM2, GPT-2; SentencePiece-style BPE with byte fallback as in
 * Llama 2 / TinyLlama) with its tokenizer_config.json. A tok_t's tables are immutable after
 * tok_init and it may be shared by any number of threads: tok_encode may run concurrently
 * on several threads (it keeps its scratch per call; the shared word cache inside is
 * locked), decoding only reads the tables. Per-stream decode state lives in a tok_stream_t
 * that belongs to one sequence.
 *
 * Byte-level text that is not valid UTF-8 is encoded too: each maximal run of invalid
 * bytes becomes a piece of its own that BPE encodes byte-wise, so decode(encode(s)) == s
 * for any bytes.
 */
#ifndef NANO_VLLM_TOKENIZER_H
#define NANO_VLLM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tok tok_t;

/* The longest byte string one token decodes to is at most this long. */
#define TOK_MAX_TOKEN_BYTES 256
/* A stream holds at most this many bytes of an unfinished character or byte-piece run. */
#define TOK_STREAM_HOLD 256
/* tok_stream_feed and tok_stream_flush never write more than this: every held or new byte
 * may become U+FFFD. */
#define TOK_STREAM_OUT_MAX (3 * (TOK_MAX_TOKEN_BYTES + TOK_STREAM_HOLD))

/* Loads dir/tokenizer.json (with dir/tokenizer_config.json when present) or, without it,
 * dir/vocab.json + dir/merges.txt (GPT-2; "<|endoftext|>" must be in the vocabulary). All
 * memory (tables, a ~4 MB word cache) is allocated here. On success *out is owned by the
 * caller (tok_free). On failure returns -ENOENT/-EINVAL/-ENOMEM/-EIO/-ENOTSUP, leaves *out
 * NULL and writes one line naming the file (and line or key) and the problem into err,
 * e.g. "DIR/merges.txt:1042: expected two symbols, got 3" or "DIR/tokenizer.json:
 * model.type "Unigram" is not supported". Any thread; ~0.1 s for GPT-2, ~1 s for Llama 3. */
int tok_init(tok_t **out, const char *dir, char *err, size_t errlen);
/* Frees t and everything it owns; NULL is fine. No other thread may be using t. */
void tok_free(tok_t *t);

/* Highest id + 1 (50257 for GPT-2), added tokens included. */
int tok_vocab_size(const tok_t *t);
/* Ids of tokenizer_config.json's eos_token and bos_token; without a config, eos is
 * "<|endoftext|>" when the vocabulary has it. -1 when there is none. */
int32_t tok_eos_id(const tok_t *t);
int32_t tok_bos_id(const tok_t *t);
/* 1 if id is an added token marked special (BOS, EOS, <|im_start|>, ...), else 0. */
int tok_is_special(const tok_t *t, int32_t id);
/* The id of the token whose text is exactly text[0, len): an added token's content or a
 * vocabulary entry (byte-level entries as raw bytes); -1 if none. */
int32_t tok_token_id(const tok_t *t, const char *text, size_t len);

/* tokenizer_config.json's chat_template: the template named name, or with name NULL the
 * default one (a plain string, or the entry named "default" of a list). NULL if none. The
 * string lives as long as t. tok_chat_template_name lists the named ones (i < count). */
const char *tok_chat_template(const tok_t *t, const char *name);
int tok_chat_template_count(const tok_t *t);
const char *tok_chat_template_name(const tok_t *t, int i);

/* Encode flags. */
#define TOK_ENC_SPECIAL 1u /* special-token text becomes its id (Hugging Face's default) */
#define TOK_ENC_ADD_SPECIAL                                                                        \
    2u /* the post-processor's ids, e.g. Llama 2's BOS (add_special_tokens) */

/* Encodes len bytes of text. On success *ids is a malloc'd array of *n ids owned by the
 * caller (free()); it is non-NULL even when *n is 0. Returns 0, -ENOMEM, or -EINVAL when a
 * character has no token and the model has neither byte fallback nor unk. Thread-safe. */
int tok_encode_with(const tok_t *t, const char *text, size_t len, unsigned flags, int32_t **ids,
                    size_t *n);
/* tok_encode_with(TOK_ENC_SPECIAL | TOK_ENC_ADD_SPECIAL): a /v1/completions prompt. */
int tok_encode(const tok_t *t, const char *text, size_t len, int32_t **ids, size_t *n);

/* Decode flags. */
#define TOK_DEC_SKIP_SPECIAL 1u   /* drop special tokens (vLLM's skip_special_tokens) */
#define TOK_DEC_SPACES_SPECIAL 2u /* a space between added tokens and the text around them */
#define TOK_DEC_CLEAN_UP 4u       /* transformers' clean_up_tokenization (" ." -> ".", ...) */
#define TOK_DEC_RAW 8u            /* byte-level: the bytes as they are, no U+FFFD repair */

/* Decodes ids as Hugging Face's decode does (invalid UTF-8 becomes U+FFFD the way its
 * decoder makes it, unless TOK_DEC_RAW). *text is malloc'd, NUL-terminated, owned by the
 * caller. Returns 0, -ENOMEM, or -EINVAL if an id is out of range or unused (then *text is
 * NULL and *len 0). Any thread. */
int tok_decode_with(const tok_t *t, const int32_t *ids, size_t n, unsigned flags, char **text,
                    size_t *len);
/* tok_decode_with(TOK_DEC_RAW): every token's text, special ones included. */
int tok_decode(const tok_t *t, const int32_t *ids, size_t n, char **text, size_t *len);
/* The config's defaults: TOK_DEC_CLEAN_UP and/or TOK_DEC_SPACES_SPECIAL when
 * tokenizer_config.json sets clean_up_tokenization_spaces / spaces_between_special_tokens. */
unsigned tok_decode_defaults(const tok_t *t);

/* The decoded bytes of one token (not NUL-terminated) and their count; NULL (and *len 0)
 * for an invalid id. The pointer stays valid as long as t. Any thread. */
const char *tok_token_bytes(const tok_t *t, int32_t id, size_t *len);

/* Incremental decode: feed one id at a time, get back only complete UTF-8 text; the
 * concatenation equals tok_decode_with(flags & TOK_DEC_SKIP_SPECIAL) of the same ids.
 * Bytes of a character split across tokens are held until the character is complete;
 * bytes that can never become valid UTF-8 come out as U+FFFD, as Hugging Face does. */
typedef struct tok_stream {
    unsigned char pending[TOK_STREAM_HOLD]; /* held bytes carried to the next token */
    int npending;
    int run;       /* pending is a run of byte pieces (<0xNN>), not one character */
    int stripped;  /* leading strip characters removed (decoder Strip) */
    int strip_max; /* how many the decoder removes, and which character */
    char strip_char;
    int started;    /* text other than strip characters came out */
    unsigned flags; /* TOK_DEC_SKIP_SPECIAL or 0 */
} tok_stream_t;

/* Starts an empty stream (or resets one) that skips special tokens (vLLM's default for
 * generated text); tok_stream_init_with chooses. */
void tok_stream_init(tok_stream_t *s);
void tok_stream_init_with(tok_stream_t *s, unsigned flags);
/* Writes the text completed by id to out (capacity cap; TOK_STREAM_OUT_MAX is always
 * enough) and sets *outlen. Returns 0, -EINVAL for an invalid id or -ENOSPC if cap is too
 * small (state unchanged, *outlen 0). Only reads t; s belongs to the caller's thread. */
int tok_stream_feed(const tok_t *t, tok_stream_t *s, int32_t id, char *out, size_t cap,
                    size_t *outlen);
/* Ends the stream: held bytes come out as U+FFFD as whole decode makes them; out needs
 * room for TOK_STREAM_OUT_MAX bytes. The stream is then empty and may be reused. */
void tok_stream_flush(tok_stream_t *s, char *out, size_t cap, size_t *outlen);

#endif
