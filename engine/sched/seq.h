/* seq.h - private to engine/: sequences and requests of the scheduler, and their events.
 *
 * Creating and freeing requests, the waiting/running lists, block release and prefix-cache
 * registration, sampling one token and turning it into text and an event, forking the
 * completions of n > 1 after the prompt, and ending completions. Scheduler thread only.
 */
#ifndef NANO_VLLM_SEQ_H
#define NANO_VLLM_SEQ_H

#include "engine/sched/scheduler.h"

void seq_list_push_back(sched_list_t *l, sched_seq_t *q);
void seq_list_push_front(sched_list_t *l, sched_seq_t *q);
/* Inserts q after after (at the front when after is NULL). */
void seq_list_insert_after(sched_list_t *l, sched_seq_t *after, sched_seq_t *q);
void seq_list_remove(sched_list_t *l, sched_seq_t *q);

/* Builds the request's sequences (the first waits, the others wait to fork) and takes
 * ownership of r. On -ENOMEM nothing is kept and r stays with the caller. */
int seq_req_new(sched_t *s, eng_request_t *r, sched_req_t **out);
/* Frees the request, its sequences and r (no events, no block release). */
void seq_req_free(sched_req_t *r);
/* Frees the requests whose completions all ended. */
void seq_reap(sched_t *s);

/* Drops every block of q (the cached ones stay findable) and forgets what was computed. */
void seq_release_blocks(sched_t *s, sched_seq_t *q);
/* Registers the full blocks q computed since the last call in the prefix cache. */
void seq_register_blocks(sched_t *s, sched_seq_t *q);

/* Records prompt logprobs from the logit rows of q's chunk of n rows at position start
 * (logits: (n, V)); when the prompt is complete, queues them as events for every choice. */
void seq_prompt_logprobs(sched_t *s, sched_seq_t *q, int start, int n, const float *logits);
/* Samples q's next token from row (which it may modify), decodes it, checks stops and
 * queues the event; ends q when it stops. */
void seq_sample(sched_t *s, sched_seq_t *q, float *row);
/* The first completion finished its prompt: the others share its full blocks, copy its
 * partly filled last block, and sample their first token from row (left unmodified). */
void seq_fork(sched_t *s, sched_seq_t *parent, const float *row);
/* Ends every choice of a request that never entered the scheduler (an event each, text
 * "out of memory" for ENG_FINISH_ERROR) and frees it. */
void seq_reject(sched_t *s, eng_request_t *r, int finish);
/* Ends every unfinished completion of r with finish (an event each). */
void seq_finish_request(sched_t *s, sched_req_t *r, int finish);

#endif
