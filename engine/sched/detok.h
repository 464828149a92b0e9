/* detok.h - private to engine/: the text of one completion as it streams, with stop strings.
 *
 * Token ids go in one at a time; complete UTF-8 text comes out. Text that may be the start
 * of a stop string is held back until the next tokens decide it; when a stop string appears
 * the text before it comes out and the stop string (and anything after it) never does.
 * One detok_t belongs to one sequence (scheduler thread). The buffer is allocated once in
 * detok_init and never grows.
 */
#ifndef NANO_VLLM_DETOK_H
#define NANO_VLLM_DETOK_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

/* What one token can add: its bytes plus the bytes the stream held back, and the U+FFFD
 * replacements the stream decoder may write (tokenizer.h: TOK_STREAM_OUT_MAX). */
#define DETOK_STEP_BYTES (TOK_STREAM_OUT_MAX + 16)

typedef struct detok {
    tok_stream_t ts;
    char *hold;      /* owned; (cap) text decoded but not yet given out */
    size_t hold_len; /* bytes in hold */
    size_t cap;      /* the size of hold, and of every out buffer passed below */
    char *const *stops; /* borrowed from the request; (n_stop) NUL-terminated, non-empty */
    int n_stop;
    size_t max_stop;    /* the longest stop string */
} detok_t;

/* stops is borrowed and must outlive d. Returns 0 or -ENOMEM. */
int detok_init(detok_t *d, char *const *stops, int n_stop);
void detok_free(detok_t *d);

/* Appends text (len bytes, already complete UTF-8) and writes what may be given out now to
 * out (room for d->cap bytes, NUL-terminated). Returns 1 if a stop string was found: out is
 * the text before it and the completion ends there; else 0. */
int detok_push_text(detok_t *d, const char *text, size_t len, char *out, size_t *out_len);
/* Feeds one token id through the tokenizer's streaming decoder, then as detok_push_text.
 * Returns -EINVAL for an invalid id. */
int detok_push(detok_t *d, const tok_t *tok, int32_t id, char *out, size_t *out_len);
/* The completion ended for another reason: gives out everything held (incomplete UTF-8 as
 * U+FFFD), unless a stop string appears in it, in which case the text before it and 1. */
int detok_finish(detok_t *d, char *out, size_t *out_len);

#endif
