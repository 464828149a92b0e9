/* strings.h - Python's string operations (strings.c), private to the template module. */
#ifndef NANO_VLLM_TEMPLATE_STRINGS_H
#define NANO_VLLM_TEMPLATE_STRINGS_H

#include "template/internal.h"

/* chars: a V_STR set of characters, or anything else for whitespace. */
val_t str_strip(render_t *r, val_t s, val_t chars, int left, int right);
val_t str_case(render_t *r, val_t s, int mode);
val_t str_replace(render_t *r, val_t s, val_t old, val_t new, long long count);
val_t str_split(render_t *r, val_t s, val_t sep, long long maxsplit);
long long str_find(val_t s, val_t sub);

#endif
