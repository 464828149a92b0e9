/* request.c - the plain-data side of engine.h: a request's neutral sampling values, freeing a
 * request, the names of the finish reasons. Needs nothing but libc, so the API parser links it
 * alone (engine/meson.build: engine_request_dep) and keeps no copy of its own. Any thread.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

void eng_sampling_default(eng_sampling_t *sp)
{
    memset(sp, 0, sizeof(*sp));
    sp->temperature = 1.0f;
    sp->top_p = 1.0f;
    sp->repetition_penalty = 1.0f;
    sp->logprobs = -1;
    sp->prompt_logprobs = -1;
}

void eng_request_free(eng_request_t *r)
{
    if (!r)
        return;
    free(r->prompt);
    for (int i = 0; i < ENG_MAX_STOPS; i++)
        free(r->stop[i]);
    free(r->sp.logit_bias_ids);
    free(r->sp.logit_bias_values);
    free(r);
}

const char *eng_finish_name(int finish)
{
    switch (finish) {
    case ENG_FINISH_STOP:
        return "stop";
    case ENG_FINISH_LENGTH:
        return "length";
    case ENG_FINISH_ABORT:
        return "abort";
    case ENG_FINISH_ERROR:
        return "error";
    default:
        return NULL;
    }
}
