/* sched_check.c - the scheduler's invariants, checked by the scheduler tests after every
 * step: the block manager's own (blk_check) and the sequences' agreement with it
 * (sched_check). Test code: it reads the private structs of engine/sched/ and is linked
 * only into tests/engine's sched_* binaries.
 */
#include "tests/engine/sched_check.h"

#include <stdio.h>
#include <stdlib.h>

int blk_check(const blk_mgr_t *m, char *err, size_t errlen)
{
    int n = 0, nreg = 0;
    int32_t last = -1;
    for (int32_t b = m->free_head; b >= 0; b = m->next[b]) {
        if (b >= m->num_blocks || m->prev[b] != last || n > m->num_blocks) {
            snprintf(err, errlen, "free list broken at block %d", b);
            return -1;
        }
        if (m->ref[b] != 0) {
            snprintf(err, errlen, "block %d is on the free list with refcount %d", b, m->ref[b]);
            return -1;
        }
        last = b;
        n++;
    }
    if (last != m->free_tail) {
        snprintf(err, errlen, "free list tail %d, expected %d", m->free_tail, last);
        return -1;
    }
    int zero = 0;
    for (int b = 0; b < m->num_blocks; b++) {
        if (m->ref[b] < 0) {
            snprintf(err, errlen, "block %d has refcount %d", b, m->ref[b]);
            return -1;
        }
        zero += m->ref[b] == 0;
        if (m->registered[b]) {
            nreg++;
            uint64_t h;
            if (blk_lookup(m, m->parent[b], &m->tokens[(size_t)b * (size_t)m->block_size], &h) !=
                b) {
                snprintf(err, errlen, "registered block %d is not found by its tokens", b);
                return -1;
            }
        }
    }
    if (n != zero || n != m->num_free) {
        snprintf(err, errlen, "free list holds %d blocks, %d have refcount 0, num_free %d", n, zero,
                 m->num_free);
        return -1;
    }
    if (nreg != m->num_registered) {
        snprintf(err, errlen, "%d blocks registered, counter says %d", nreg, m->num_registered);
        return -1;
    }
    return 0;
}

static int check_list(const sched_list_t *l, int state, char *err, size_t errlen)
{
    int n = 0;
    const list_t *prev = &l->head, *it;
    LIST_FOREACH(it, &l->head)
    {
        const sched_seq_t *q = LIST_DATA(it, sched_seq_t, link);
        if (q->state != state || it->prev != prev) {
            snprintf(err, errlen, "sequence %d of request %llu is in the wrong list (state %d)",
                     q->index, (unsigned long long)q->req->r->id, q->state);
            return -1;
        }
        prev = it;
        n++;
    }
    if (n != l->count || l->head.prev != prev) {
        snprintf(err, errlen, "list count %d, walked %d", l->count, n);
        return -1;
    }
    return 0;
}

int sched_check(const sched_t *s, char *err, size_t errlen)
{
    if (blk_check(&s->blk, err, errlen) < 0)
        return -1;
    if (check_list(&s->running, SCHED_RUNNING, err, errlen) < 0 ||
        check_list(&s->waiting, SCHED_WAITING, err, errlen) < 0)
        return -1;
    int nb = s->blk.num_blocks, bs = s->block_size;
    int *owners = calloc((size_t)nb, sizeof(int));
    if (!owners) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0, n_fork = 0, waiting_reqs = 0;
    for (const sched_req_t *r = s->reqs; r && rc == 0; r = r->next) {
        for (int k = 0; k < r->r->n && rc == 0; k++) {
            const sched_seq_t *q = &r->seqs[k];
            n_fork += q->state == SCHED_FORK;
            waiting_reqs += k == 0 && !q->was_admitted && q->state != SCHED_FINISHED;
            if (q->state != SCHED_RUNNING && q->n_blocks != 0) {
                snprintf(err, errlen, "request %llu.%d holds %d blocks in state %d",
                         (unsigned long long)r->r->id, k, q->n_blocks, q->state);
                rc = -1;
            }
            if (q->state == SCHED_RUNNING && q->n_blocks < (q->num_computed + bs - 1) / bs) {
                snprintf(err, errlen, "request %llu.%d: %d blocks for %d computed tokens",
                         (unsigned long long)r->r->id, k, q->n_blocks, q->num_computed);
                rc = -1;
            }
            for (int i = 0; i < q->n_blocks && rc == 0; i++) {
                int32_t b = q->blocks[i];
                if (b < 0 || b >= nb) {
                    snprintf(err, errlen, "request %llu.%d: block id %d out of range",
                             (unsigned long long)r->r->id, k, b);
                    rc = -1;
                    break;
                }
                for (int j = 0; j < i; j++)
                    if (q->blocks[j] == b) {
                        snprintf(err, errlen, "request %llu.%d holds block %d twice",
                                 (unsigned long long)r->r->id, k, b);
                        rc = -1;
                    }
                owners[b]++;
                /* A shared block must be full for its holder: it is never written again. */
                if (s->blk.ref[b] > 1 && (i + 1) * bs > q->num_computed) {
                    snprintf(err, errlen,
                             "request %llu.%d writes into block %d shared by %d sequences",
                             (unsigned long long)r->r->id, k, b, s->blk.ref[b]);
                    rc = -1;
                }
            }
        }
    }
    for (int b = 0; b < nb && rc == 0; b++)
        if (owners[b] != s->blk.ref[b]) {
            snprintf(err, errlen, "block %d has refcount %d but %d owners", b, s->blk.ref[b],
                     owners[b]);
            rc = -1;
        }
    free(owners);
    if (rc == 0 && waiting_reqs != s->waiting_reqs) {
        snprintf(err, errlen, "%d requests never admitted, counter says %d", waiting_reqs,
                 s->waiting_reqs);
        rc = -1;
    }
    if (rc == 0 && n_fork != s->n_fork) {
        snprintf(err, errlen, "%d completions wait to fork, counter says %d", n_fork, s->n_fork);
        rc = -1;
    }
    return rc;
}
