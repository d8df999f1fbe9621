
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_rate_limit.h"


static void ngx_http_rate_limit_batches_start(void);
static ngx_int_t ngx_http_rate_limit_keys(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, ngx_http_rate_limit_main_conf_t *mcf);
static ngx_int_t ngx_http_rate_limit_batch_add(ngx_http_rate_limit_ctx_t *ctx,
    ngx_http_rate_limit_main_conf_t *mcf, ngx_log_t *log);
static ngx_int_t ngx_http_rate_limit_batch_part(
    ngx_http_rate_limit_ctx_t *ctx, ngx_http_rate_limit_main_conf_t *mcf,
    ngx_meshgate_redis_t *node, u_char *idx, ngx_uint_t n, ngx_log_t *log);
static void ngx_http_rate_limit_batch_specs(ngx_http_rate_limit_batch_t *batch,
    ngx_http_rate_limit_ctx_t *ctx, ngx_uint_t e);
static void ngx_http_rate_limit_part_done(ngx_http_rate_limit_ctx_t *ctx,
    ngx_http_rate_limit_batch_t *batch);
static void ngx_http_rate_limit_post_flush(void);
static void ngx_http_rate_limit_flush(ngx_event_t *ev);
static ngx_uint_t ngx_http_rate_limit_defer(void);
static ngx_uint_t ngx_http_rate_limit_goes(
    ngx_http_rate_limit_batch_t *batch);
static ngx_int_t ngx_http_rate_limit_batch_send(
    ngx_http_rate_limit_batch_t *batch, ngx_log_t *log);
static void ngx_http_rate_limit_batch_reply(void *data, ngx_int_t status,
    redisReply *reply);
static ngx_int_t ngx_http_rate_limit_check_reply(redisReply *reply,
    size_t total);
static void ngx_http_rate_limit_set_results(ngx_http_rate_limit_ctx_t *ctx,
    u_char *idx, ngx_uint_t n, redisReply **e);
static void ngx_http_rate_limit_free_batches(ngx_queue_t *batches);
static ngx_http_rate_limit_batch_t *ngx_http_rate_limit_batch_new(
    ngx_log_t *log);
static void ngx_http_rate_limit_batch_free(
    ngx_http_rate_limit_batch_t *batch);
static ngx_uint_t ngx_http_rate_limit_hinted(uint32_t hash);
static void ngx_http_rate_limit_hint(uint32_t hash, ngx_msec_t after);


/* per worker: batches being filled, and batches waiting for Redis */
static ngx_queue_t  ngx_http_rate_limit_unsent;
static ngx_queue_t  ngx_http_rate_limit_inflight;
static ngx_uint_t   ngx_http_rate_limit_batches_init;
static ngx_event_t  ngx_http_rate_limit_flush_event;
static ngx_uint_t   ngx_http_rate_limit_hurry;
static ngx_uint_t   ngx_http_rate_limit_deferred;
static ngx_uint_t   ngx_http_rate_limit_work_then;

/*
 * per worker: a timer set while the flush is deferred.  A worker told to
 * quit (nginx -s quit, a reload) exits once no timer is left but
 * cancelable ones: an event posted for the next turn does not keep it,
 * and the checks held back would go with it, their requests unanswered.
 */
static ngx_event_t  ngx_http_rate_limit_hold;

/* per worker: checks added and responses sent, see _defer() */
ngx_uint_t          ngx_http_rate_limit_work;

/*
 * per worker: a few batches done with, for the next ones (a batch is
 * 7 KB: malloc() and free() of it cost more than the rest of a request's
 * part of its batch)
 */
static ngx_queue_t  ngx_http_rate_limit_spare;
static ngx_uint_t   ngx_http_rate_limit_nspare;

/*
 * per worker: keys seen limited, until when (a hint for the script,
 * direct-mapped by the CRC32 of the subject XOR that of the zone name: a
 * collision only loses a hint)
 */
typedef struct {
    uint32_t     hash;
    ngx_msec_t   until;
} ngx_http_rate_limit_hint_t;

static ngx_http_rate_limit_hint_t
    ngx_http_rate_limit_hints[NGX_HTTP_RATE_LIMIT_HINTS];

/* per worker: checks waiting for Redis Cluster's slot map */
static ngx_queue_t  ngx_http_rate_limit_parked;


/* the worker's queues of checks, made at its first check */

static void
ngx_http_rate_limit_batches_start(void)
{
    if (ngx_http_rate_limit_batches_init) {
        return;
    }

    ngx_queue_init(&ngx_http_rate_limit_unsent);
    ngx_queue_init(&ngx_http_rate_limit_inflight);
    ngx_queue_init(&ngx_http_rate_limit_parked);
    ngx_queue_init(&ngx_http_rate_limit_spare);
    ngx_http_rate_limit_batches_init = 1;
}


/*
 * The checks of requests go to Redis together, as one EVALSHA (a batch):
 * the script handles them one after the other, each atomically.  This
 * keeps Redis's per-command cost off the hot path under load.  When a
 * batch goes: ngx_http_rate_limit_post_flush().
 */

ngx_int_t
ngx_http_rate_limit_send(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    ngx_int_t                         rc;
    ngx_http_rate_limit_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_rate_limit_module);

    if (ngx_meshgate_redis_is_down(mcf->redis)) {
        ctx->done = 1;
        rc = ngx_http_rate_limit_failure(r, ctx);
        ngx_http_rate_limit_count(r, ctx);
        return rc;
    }

    ngx_http_rate_limit_batches_start();

    if (!ngx_meshgate_redis_ready(mcf->redis)) {

        /* Redis Cluster's slot map is being asked for: wait for it */

        ngx_queue_insert_tail(&ngx_http_rate_limit_parked, &ctx->parked);
        ctx->is_parked = 1;
        ctx->waiting = 1;

        return NGX_AGAIN;
    }

    if (ngx_http_rate_limit_keys(r, ctx, mcf) != NGX_OK
        || ngx_http_rate_limit_batch_add(ctx, mcf, r->connection->log)
           != NGX_OK)
    {
        /* a part added already must not resume the request later */
        ngx_http_rate_limit_detach(ctx);
        ctx->done = 1;
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_rate_limit_post_flush();

    ctx->waiting = 1;

    return NGX_AGAIN;
}


/* the slot map is known, or not to be had: the parked checks go on */

void
ngx_http_rate_limit_ready(void *data, ngx_uint_t ok)
{
    ngx_http_rate_limit_main_conf_t *mcf = data;

    ngx_queue_t                *q;
    ngx_connection_t           *c;
    ngx_http_request_t         *r;
    ngx_http_rate_limit_ctx_t  *ctx;

    if (!ngx_http_rate_limit_batches_init) {
        return;
    }

    while (!ngx_queue_empty(&ngx_http_rate_limit_parked)) {
        q = ngx_queue_head(&ngx_http_rate_limit_parked);
        ngx_queue_remove(q);
        ctx = ngx_queue_data(q, ngx_http_rate_limit_ctx_t, parked);
        ctx->is_parked = 0;

        r = ctx->request;
        c = r->connection;

        if (ok
            && ngx_http_rate_limit_keys(r, ctx, mcf) == NGX_OK
            && ngx_http_rate_limit_batch_add(ctx, mcf, c->log) == NGX_OK)
        {
            ngx_http_rate_limit_post_flush();
            continue;
        }

        ngx_http_rate_limit_detach(ctx);
        ctx->waiting = 0;
        ctx->rc = ngx_http_rate_limit_failure(r, ctx);

        ngx_http_core_run_phases(r);
        ngx_http_run_posted_requests(c);
    }
}


/*
 * The request waits no more (it is finalized, or its check failed half
 * added): the batches that hold a part of its check skip it, and a reply
 * never comes to it.
 */

void
ngx_http_rate_limit_detach(ngx_http_rate_limit_ctx_t *ctx)
{
    ngx_uint_t  i;

    for (i = 0; i < ctx->nbatches; i++) {
        ctx->batches[i]->ctx[ctx->slots[i]] = NULL;
    }

    ctx->nbatches = 0;

    if (ctx->is_parked) {
        ngx_queue_remove(&ctx->parked);
        ctx->is_parked = 0;
    }
}


/*
 * Per limit: the Redis key, "<prefix><zone>:<subject>", and its node.
 * With Redis Cluster the key starts with a hash tag made of the subject
 * alone, "<prefix>{<CRC32 of the subject, hex>}<zone>:<subject>": the
 * limits of one subject in several zones share a slot, so that one
 * script checks and charges them together, all or none.  The tag is a
 * hash, not the subject itself: a subject may hold "}" (a binary address)
 * and end the tag early.  One allocation for all of a request's keys.
 */

static ngx_int_t
ngx_http_rate_limit_keys(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, ngx_http_rate_limit_main_conf_t *mcf)
{
    u_char                        *p, tag[4];
    size_t                         size;
    uint32_t                       crc;
    ngx_uint_t                     i, n;
    ngx_http_rate_limit_zone_t    *zone;
    ngx_http_rate_limit_result_t  *res;

    n = ctx->nresults;
    size = n * (sizeof(char *) + sizeof(size_t)
                + sizeof(ngx_meshgate_redis_t *) + sizeof(uint32_t));

    for (i = 0; i < n; i++) {
        res = &ctx->results[i];
        size += mcf->prefix.len + res->limit->zone->name.len + 1
                + res->key.len + (mcf->cluster ? 10 : 0);
    }

    ctx->keys = ngx_palloc(r->pool, size);
    if (ctx->keys == NULL) {
        return NGX_ERROR;
    }

    ctx->klens = (size_t *) (ctx->keys + n);
    ctx->nodes = (ngx_meshgate_redis_t **) (ctx->klens + n);
    ctx->hashes = (uint32_t *) (ctx->nodes + n);
    p = (u_char *) (ctx->hashes + n);

    for (i = 0; i < n; i++) {
        res = &ctx->results[i];
        zone = res->limit->zone;

        ctx->keys[i] = (const char *) p;
        p = ngx_cpymem(p, mcf->prefix.data, mcf->prefix.len);

        /* the hint's hash: the subject's CRC32 and the zone's, one CRC */

        crc = ngx_crc32_short(res->key.data, res->key.len);
        ctx->hashes[i] = crc ^ zone->hash;

        if (mcf->cluster) {
            tag[0] = (u_char) (crc >> 24);
            tag[1] = (u_char) (crc >> 16);
            tag[2] = (u_char) (crc >> 8);
            tag[3] = (u_char) crc;

            /* "{%08xD}", without ngx_sprintf()'s cost */
            *p++ = '{';
            p = ngx_hex_dump(p, tag, 4);
            *p++ = '}';
        }

        p = ngx_cpymem(p, zone->name.data, zone->name.len);
        *p++ = ':';
        p = ngx_cpymem(p, res->key.data, res->key.len);
        ctx->klens[i] = p - (u_char *) ctx->keys[i];

        ctx->nodes[i] = ngx_meshgate_redis_route(mcf->redis,
                                                 (u_char *) ctx->keys[i],
                                                 ctx->klens[i]);
        if (ctx->nodes[i] == NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* the request's limits, grouped by node, to the unsent batches */

static ngx_int_t
ngx_http_rate_limit_batch_add(ngx_http_rate_limit_ctx_t *ctx,
    ngx_http_rate_limit_main_conf_t *mcf, ngx_log_t *log)
{
    u_char                 idx[NGX_HTTP_RATE_LIMIT_MAX_LIMITS];
    ngx_uint_t             i, j, n, done;
    ngx_meshgate_redis_t  *node;

    done = 0;

    for (i = 0; i < ctx->nresults; i++) {
        if (done & (1 << i)) {
            continue;
        }

        node = ctx->nodes[i];
        n = 0;

        for (j = i; j < ctx->nresults; j++) {
            if (ctx->nodes[j] == node) {
                idx[n++] = (u_char) j;
                done |= 1 << j;
            }
        }

        if (ngx_http_rate_limit_batch_part(ctx, mcf, node, idx, n, log)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* adds a part to the last unsent batch for its node, or to a new one */

static ngx_int_t
ngx_http_rate_limit_batch_part(ngx_http_rate_limit_ctx_t *ctx,
    ngx_http_rate_limit_main_conf_t *mcf, ngx_meshgate_redis_t *node,
    u_char *idx, ngx_uint_t n, ngx_log_t *log)
{
    ngx_queue_t                  *q;
    ngx_http_rate_limit_batch_t  *batch;

    batch = NULL;

    for (q = ngx_queue_last(&ngx_http_rate_limit_unsent);
         q != ngx_queue_sentinel(&ngx_http_rate_limit_unsent);
         q = ngx_queue_prev(q))
    {
        batch = ngx_queue_data(q, ngx_http_rate_limit_batch_t, queue);

        if (batch->node == node) {
            break;
        }

        batch = NULL;
    }

    if (batch
        && (batch->n == NGX_HTTP_RATE_LIMIT_BATCH
            || batch->nspecs + n > NGX_HTTP_RATE_LIMIT_SPECS))
    {
        batch = NULL;
    }

    if (batch == NULL) {
        batch = ngx_http_rate_limit_batch_new(log);
        if (batch == NULL) {
            return NGX_ERROR;
        }

        batch->n = 0;
        batch->nkeys = 0;
        batch->nspecs = 0;
        batch->mcf = mcf;
        batch->node = node;
        ngx_queue_insert_tail(&ngx_http_rate_limit_unsent, &batch->queue);
    }

    ctx->batches[ctx->nbatches] = batch;
    ctx->slots[ctx->nbatches] = (u_char) batch->n;
    ctx->nbatches++;

    batch->ctx[batch->n] = ctx;
    batch->nres[batch->n] = n;
    ngx_memcpy(batch->idx[batch->n], idx, n);
    batch->nkeys += n;

    ngx_http_rate_limit_batch_specs(batch, ctx, batch->n);

    batch->n++;
    ngx_http_rate_limit_work++;

    return NGX_OK;
}


/*
 * Limits of a batch with the same capacity per request and the same burst
 * capacity share one spec: the script reads each once.
 */

static void
ngx_http_rate_limit_batch_specs(ngx_http_rate_limit_batch_t *batch,
    ngx_http_rate_limit_ctx_t *ctx, ngx_uint_t e)
{
    uint64_t                       inc, cap;
    ngx_uint_t                     i, j;
    ngx_http_rate_limit_zone_t    *zone;
    ngx_http_rate_limit_result_t  *res;

    for (i = 0; i < batch->nres[e]; i++) {
        res = &ctx->results[batch->idx[e][i]];
        zone = res->limit->zone;
        inc = zone->interval * res->limit->cost;
        cap = zone->interval * (zone->burst + 1);

        for (j = 0; j < batch->nspecs; j++) {
            if (batch->specs[j][0] == inc && batch->specs[j][1] == cap) {
                break;
            }
        }

        if (j == batch->nspecs) {
            batch->specs[j][0] = inc;
            batch->specs[j][1] = cap;
            batch->nspecs++;
        }

        batch->spec[e][i] = (u_char) (j + 1);

        if (ngx_http_rate_limit_hinted(ctx->hashes[batch->idx[e][i]])) {
            batch->spec[e][i] |= 0x80;
        }
    }
}


/*
 * One EVALSHA at a time per worker: the checks that come while it is out
 * wait for its reply and then go together.  Under load a batch thus holds
 * the requests of a whole Redis round trip, not of one turn of the event
 * loop, and Redis, the gateway and the kernel between them handle one
 * command and one reply for many requests; a lone request still goes at
 * once.  A check waits at most for the reply to the batch before its own:
 * if that one times out, the client is down and the waiting checks fail
 * over at once.
 */

static void
ngx_http_rate_limit_post_flush(void)
{
    if (ngx_http_rate_limit_flush_event.posted
        || !ngx_queue_empty(&ngx_http_rate_limit_inflight))
    {
        return;
    }

    ngx_http_rate_limit_flush_event.handler = ngx_http_rate_limit_flush;
    ngx_http_rate_limit_flush_event.log = ngx_cycle->log;
    ngx_post_event(&ngx_http_rate_limit_flush_event, &ngx_posted_events);
}


static void
ngx_http_rate_limit_flush(ngx_event_t *ev)
{
    ngx_queue_t                  *q, *next, go;
    ngx_uint_t                    hurry;
    ngx_http_rate_limit_batch_t  *batch;

    /* what goes now: see ngx_http_rate_limit_goes() */

    hurry = ngx_http_rate_limit_hurry;

    if (!hurry && ngx_http_rate_limit_defer()) {
        return;
    }

    ngx_http_rate_limit_deferred = 0;
    ngx_http_rate_limit_hurry = 0;

    ngx_queue_init(&go);

    for (q = ngx_queue_head(&ngx_http_rate_limit_unsent);
         q != ngx_queue_sentinel(&ngx_http_rate_limit_unsent);
         q = next)
    {
        next = ngx_queue_next(q);
        batch = ngx_queue_data(q, ngx_http_rate_limit_batch_t, queue);

        if (hurry || ngx_queue_empty(&go)
            || ngx_http_rate_limit_goes(batch))
        {
            ngx_queue_remove(q);
            ngx_queue_insert_tail(&go, q);
        }
    }

    /* sending may fail a batch at once, whose requests then go on */

    while (!ngx_queue_empty(&go)) {
        q = ngx_queue_head(&go);
        ngx_queue_remove(q);
        batch = ngx_queue_data(q, ngx_http_rate_limit_batch_t, queue);

        switch (ngx_http_rate_limit_batch_send(batch, ev->log)) {

        case NGX_OK:
            ngx_queue_insert_tail(&ngx_http_rate_limit_inflight,
                                  &batch->queue);
            break;

        case NGX_DONE:
            /* every request of the batch is gone: nothing to ask */
            ngx_http_rate_limit_batch_free(batch);
            break;

        default:
            ngx_http_rate_limit_batch_done(batch, NGX_MESHGATE_REDIS_ERROR,
                                           NULL);
        }
    }

    /* none is out after all: no reply will flush the batches left */

    if (!ngx_queue_empty(&ngx_http_rate_limit_unsent)) {
        ngx_http_rate_limit_post_flush();
    }
}


/*
 * A small batch waits while the worker has other work: under load the
 * checks of the requests handled meanwhile join it, and Redis and the
 * gateway run fewer, larger commands.  The wait is in turns of the event
 * loop that do not wait (nginx polls without a timeout when an event is
 * posted for the next turn); the batch goes after a turn in which the
 * worker added no check and sent no response (it is idle: a lone request
 * goes after one such turn, a few microseconds late), once some batch
 * holds NGX_HTTP_RATE_LIMIT_BATCH_MIN checks, or after
 * NGX_HTTP_RATE_LIMIT_TURNS turns.  Sending a small batch while the
 * worker is busy would cost Redis and the gateway a command per few
 * checks; holding it while the worker is idle would only add latency.
 */

static ngx_uint_t
ngx_http_rate_limit_defer(void)
{
    ngx_queue_t                  *q;
    ngx_http_rate_limit_batch_t  *batch;

    if (ngx_http_rate_limit_deferred >= NGX_HTTP_RATE_LIMIT_TURNS
        || (ngx_http_rate_limit_deferred
            && ngx_http_rate_limit_work == ngx_http_rate_limit_work_then))
    {
        return 0;
    }

    if (ngx_queue_empty(&ngx_http_rate_limit_unsent)) {
        return 0;
    }

    for (q = ngx_queue_head(&ngx_http_rate_limit_unsent);
         q != ngx_queue_sentinel(&ngx_http_rate_limit_unsent);
         q = ngx_queue_next(q))
    {
        batch = ngx_queue_data(q, ngx_http_rate_limit_batch_t, queue);

        if (batch->n >= NGX_HTTP_RATE_LIMIT_BATCH_MIN) {
            return 0;
        }
    }

    ngx_http_rate_limit_deferred++;
    ngx_http_rate_limit_work_then = ngx_http_rate_limit_work;
    ngx_post_event(&ngx_http_rate_limit_flush_event, &ngx_posted_next_events);

    /* the timer only holds the worker: short, as it holds one that quits */

    if (!ngx_http_rate_limit_hold.timer_set) {
        ngx_http_rate_limit_hold.handler = ngx_http_empty_handler;
        ngx_http_rate_limit_hold.log = ngx_cycle->log;
        ngx_add_timer(&ngx_http_rate_limit_hold, NGX_HTTP_RATE_LIMIT_HOLD);
    }

    return 1;
}


/*
 * With Redis Cluster a round's checks are split per node, and each node's
 * part is small: sending them all would cost a command per node and round
 * (Redis's and the gateway's cost per command is that of a dozen checks,
 * and each command wakes up one more Redis process).  The oldest batch
 * therefore goes, alone unless another holds NGX_HTTP_RATE_LIMIT_BATCH_MIN
 * checks already: the nodes take turns, one command out at a time, as
 * with one server, and each node's batch gathers the checks of as many
 * rounds as there are nodes.  A lone request goes at once; a check waits
 * for one reply per other node at most before its own; after a batch
 * failed (a node down, a timeout) all go, as the checks held back have
 * waited long enough.  Without Redis Cluster every batch goes at once.
 */

static ngx_uint_t
ngx_http_rate_limit_goes(ngx_http_rate_limit_batch_t *batch)
{
    return !batch->mcf->cluster
           || batch->n >= NGX_HTTP_RATE_LIMIT_BATCH_MIN;
}


/*
 * The EVALSHA of a batch: KEYS, then ARGV as the script reads them.  With
 * Redis Cluster the keys, of several slots of one node, are not all
 * declared (Redis refuses declared keys of several slots): the first one
 * is, for Redis to check the node, and all follow "c" and their number
 * at the head of ARGV.
 */

static ngx_int_t
ngx_http_rate_limit_batch_send(ngx_http_rate_limit_batch_t *batch,
    ngx_log_t *log)
{
    u_char                     *p;
    size_t                     *lens;
    ngx_int_t                   rc;
    ngx_uint_t                  i, j, k, a, n, base;
    const char                **argv;
    ngx_http_rate_limit_ctx_t  *ctx;

    base = (batch->node != batch->mcf->redis) ? 3 : 0;

    n = base + batch->nkeys + 1 + 2 * batch->nspecs + batch->n;

    argv = ngx_alloc(n * (sizeof(char *) + sizeof(size_t))
                     + (2 + 2 * batch->nspecs) * NGX_INT64_LEN, log);
    if (argv == NULL) {
        return NGX_ERROR;
    }

    lens = (size_t *) (argv + n);
    p = (u_char *) (lens + n);

    /* keys of requests finalized meanwhile are left out: k counts keys */

    k = 0;

    for (i = 0; i < batch->n; i++) {
        ctx = batch->ctx[i];

        for (j = 0; ctx && j < batch->nres[i]; j++) {
            argv[base + k] = ctx->keys[batch->idx[i][j]];
            lens[base + k++] = ctx->klens[batch->idx[i][j]];
        }
    }

    if (k == 0) {
        ngx_free(argv);
        return NGX_DONE;
    }

    if (base) {
        argv[0] = argv[3];
        lens[0] = lens[3];
        argv[1] = "c";
        lens[1] = 1;
        argv[2] = (const char *) p;
        p = ngx_sprintf(p, "%ui", k);
        lens[2] = p - (u_char *) argv[2];
    }

    a = base + k;

    argv[a] = (const char *) p;
    p = ngx_sprintf(p, "%ui", batch->nspecs);
    lens[a] = p - (u_char *) argv[a];
    a++;

    for (i = 0; i < batch->nspecs; i++) {
        for (j = 0; j < 2; j++) {
            argv[a] = (const char *) p;
            p = ngx_sprintf(p, "%uL", batch->specs[i][j]);
            lens[a] = p - (u_char *) argv[a];
            a++;
        }
    }

    for (i = 0; i < batch->n; i++) {
        ctx = batch->ctx[i];

        if (ctx == NULL) {
            /* finalized meanwhile: checked with no limits */
            batch->nres[i] = 0;
            argv[a] = "";
            lens[a++] = 0;
            continue;
        }

        argv[a] = (const char *) batch->spec[i];
        lens[a++] = batch->nres[i];
    }

    rc = ngx_meshgate_redis_eval(batch->node, NULL, batch->mcf->script,
                                 base ? 1 : k, a, argv, lens,
                                 ngx_http_rate_limit_batch_reply, batch,
                                 NULL);
    ngx_free(argv);

    return (rc == NGX_OK) ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_rate_limit_batch_reply(void *data, ngx_int_t status,
    redisReply *reply)
{
    ngx_http_rate_limit_batch_t  *batch = data;

    ngx_queue_remove(&batch->queue);

    if (status != NGX_MESHGATE_REDIS_OK) {
        /* a node failed or timed out: the batches held back go now */
        ngx_http_rate_limit_hurry = 1;
    }

    ngx_http_rate_limit_batch_done(batch, status, reply);

    if (!ngx_queue_empty(&ngx_http_rate_limit_unsent)) {
        ngx_http_rate_limit_post_flush();
    }
}


/* hands every request of the batch its results */

void
ngx_http_rate_limit_batch_done(ngx_http_rate_limit_batch_t *batch,
    ngx_int_t status, redisReply *reply)
{
    size_t                      total;
    ngx_uint_t                  i, off;
    ngx_http_rate_limit_ctx_t  *ctx;

    if (status == NGX_MESHGATE_REDIS_OK) {
        total = 0;

        for (i = 0; i < batch->n; i++) {
            total += batch->nres[i];
        }

        if (ngx_http_rate_limit_check_reply(reply, total) != NGX_OK) {
            status = NGX_MESHGATE_REDIS_ERROR;

            /* with Redis Cluster: keys moved, maybe; later batches see */

            if (batch->node != batch->mcf->redis) {
                ngx_meshgate_redis_refresh(batch->mcf->redis);
            }
        }
    }

    off = 0;

    for (i = 0; i < batch->n; i++) {
        ctx = batch->ctx[i];

        if (ctx == NULL) {
            off += batch->nres[i];
            continue;
        }

        if (status == NGX_MESHGATE_REDIS_OK) {
            ngx_http_rate_limit_set_results(ctx, batch->idx[i],
                                            batch->nres[i],
                                            reply->element + off);

            if (ctx->node.len == 0) {
                ctx->node = *ngx_meshgate_redis_name(batch->node);
                ctx->node.data = ngx_pstrdup(ctx->request->pool,
                                             &ctx->node);
                if (ctx->node.data == NULL) {
                    ctx->node.len = 0;
                }
            }

        } else {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ctx->request->connection->log,
                           0, "rate limit: redis failed (%i)", status);
            ctx->failed = 1;
        }

        off += batch->nres[i];

        ngx_http_rate_limit_part_done(ctx, batch);
    }

    ngx_http_rate_limit_batch_free(batch);
}


/* a batch is done with the request: the last one decides and resumes it */

static void
ngx_http_rate_limit_part_done(ngx_http_rate_limit_ctx_t *ctx,
    ngx_http_rate_limit_batch_t *batch)
{
    ngx_uint_t           i;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    for (i = 0; i < ctx->nbatches; i++) {
        if (ctx->batches[i] == batch) {
            ctx->nbatches--;
            ctx->batches[i] = ctx->batches[ctx->nbatches];
            ctx->slots[i] = ctx->slots[ctx->nbatches];
            break;
        }
    }

    if (ctx->nbatches) {
        return;
    }

    ctx->waiting = 0;
    r = ctx->request;
    c = r->connection;

    if (ctx->failed) {
        ctx->rc = ngx_http_rate_limit_failure(r, ctx);

    } else {
        ctx->rc = ngx_http_rate_limit_decide(r, ctx, 0);
    }

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_rate_limit_check_reply(redisReply *reply, size_t total)
{
    u_char     buf[NGX_MESHGATE_REDIS_ERROR_LEN];
    size_t     i;
    ngx_str_t  text;

    if (reply->type == REDIS_REPLY_ERROR) {
        text = ngx_meshgate_redis_error_text(reply, buf);

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "rate limit: redis error: %V", &text);
        return NGX_ERROR;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != total) {
        goto invalid;
    }

    for (i = 0; i < total; i++) {
        if (reply->element[i]->type != REDIS_REPLY_INTEGER) {
            goto invalid;
        }
    }

    return NGX_OK;

invalid:

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "rate limit: unexpected reply from redis");
    return NGX_ERROR;
}


static void
ngx_http_rate_limit_set_results(ngx_http_rate_limit_ctx_t *ctx, u_char *idx,
    ngx_uint_t n, redisReply **e)
{
    long long                      v;
    ngx_uint_t                     i;
    ngx_http_rate_limit_result_t  *res;

    for (i = 0; i < n; i++) {
        v = e[i]->integer;
        res = &ctx->results[idx[i]];

        if (v >= 0) {
            ngx_http_rate_limit_result(res, (uint64_t) v, 1);

        } else {
            ngx_http_rate_limit_result(res, (uint64_t) (-1 - v), 0);
        }

        if (!res->allowed) {
            ngx_http_rate_limit_hint(ctx->hashes[idx[i]], res->retry_after);
        }
    }
}


/*
 * A limit's result from the capacity it has used (TAT - now, in
 * microseconds): after the request if the request was charged, before it
 * if not.  A limit that was not charged rejects the request only if the
 * request's cost would overflow it (another limit may be the one that
 * rejected).
 */

void
ngx_http_rate_limit_result(ngx_http_rate_limit_result_t *res, uint64_t used,
    ngx_uint_t charged)
{
    uint64_t                     cap, next;
    ngx_http_rate_limit_zone_t  *zone;

    zone = res->limit->zone;
    cap = zone->interval * (zone->burst + 1);
    next = used + zone->interval * res->limit->cost;

    res->allowed = 1;
    res->retry_after = 0;

    if (!charged && next > cap) {
        res->allowed = 0;
        res->retry_after = (next - cap + 999) / 1000;
    }

    res->remaining = (cap > used) ? (cap - used) / zone->interval : 0;
    res->reset = (used + 999) / 1000;
}


/* the worker is exiting: the batches of this worker go */

void
ngx_http_rate_limit_exit_batches(void)
{
    if (!ngx_http_rate_limit_batches_init) {
        return;
    }

    if (ngx_http_rate_limit_flush_event.posted) {
        ngx_delete_posted_event(&ngx_http_rate_limit_flush_event);
    }

    if (ngx_http_rate_limit_hold.timer_set) {
        ngx_del_timer(&ngx_http_rate_limit_hold);
    }

    ngx_http_rate_limit_free_batches(&ngx_http_rate_limit_unsent);
    ngx_http_rate_limit_free_batches(&ngx_http_rate_limit_inflight);
    ngx_http_rate_limit_free_batches(&ngx_http_rate_limit_spare);
    ngx_http_rate_limit_nspare = 0;
}


static void
ngx_http_rate_limit_free_batches(ngx_queue_t *batches)
{
    ngx_queue_t                  *q;
    ngx_http_rate_limit_batch_t  *batch;

    while (!ngx_queue_empty(batches)) {
        q = ngx_queue_head(batches);
        ngx_queue_remove(q);
        batch = ngx_queue_data(q, ngx_http_rate_limit_batch_t, queue);
        ngx_free(batch);
    }
}


static ngx_http_rate_limit_batch_t *
ngx_http_rate_limit_batch_new(ngx_log_t *log)
{
    ngx_queue_t  *q;

    if (ngx_queue_empty(&ngx_http_rate_limit_spare)) {
        return ngx_alloc(sizeof(ngx_http_rate_limit_batch_t), log);
    }

    q = ngx_queue_head(&ngx_http_rate_limit_spare);
    ngx_queue_remove(q);
    ngx_http_rate_limit_nspare--;

    return ngx_queue_data(q, ngx_http_rate_limit_batch_t, queue);
}


static void
ngx_http_rate_limit_batch_free(ngx_http_rate_limit_batch_t *batch)
{
    if (ngx_http_rate_limit_nspare == NGX_HTTP_RATE_LIMIT_SPARE) {
        ngx_free(batch);
        return;
    }

    ngx_queue_insert_head(&ngx_http_rate_limit_spare, &batch->queue);
    ngx_http_rate_limit_nspare++;
}


/* the key was seen limited, and may still be: the script reads it first */

static ngx_uint_t
ngx_http_rate_limit_hinted(uint32_t hash)
{
    ngx_http_rate_limit_hint_t  *h;

    h = &ngx_http_rate_limit_hints[hash % NGX_HTTP_RATE_LIMIT_HINTS];

    return h->hash == hash && h->until
           && (ngx_msec_int_t) (h->until - ngx_current_msec) > 0;
}


static void
ngx_http_rate_limit_hint(uint32_t hash, ngx_msec_t after)
{
    ngx_http_rate_limit_hint_t  *h;

    h = &ngx_http_rate_limit_hints[hash % NGX_HTTP_RATE_LIMIT_HINTS];

    h->hash = hash;
    h->until = ngx_current_msec + ngx_max(after, 1);
}
