
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <math.h>
#include "ngx_http_traffic_split.h"


#define NGX_HTTP_TRAFFIC_SPLIT_PICKS  4


typedef struct {
    ngx_http_traffic_split_conf_t      *scf;
    ngx_uint_t                          variant;
} ngx_http_traffic_split_pick_t;


/* the variants a main request went to, counted in the log phase */

typedef struct {
    ngx_uint_t                          npicks;
    ngx_http_traffic_split_pick_t       picks[NGX_HTTP_TRAFFIC_SPLIT_PICKS];
} ngx_http_traffic_split_ctx_t;


static ngx_int_t ngx_http_traffic_split_pick(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, ngx_uint_t *variant);
static ngx_int_t ngx_http_traffic_split_matches(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, ngx_uint_t *variant);
static ngx_int_t ngx_http_traffic_split_key_value(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, ngx_str_t *key);
static ngx_uint_t ngx_http_traffic_split_draw(
    ngx_http_traffic_split_conf_t *scf, ngx_uint_t *w);
static ngx_uint_t ngx_http_traffic_split_rendezvous(
    ngx_http_traffic_split_conf_t *scf, ngx_uint_t *w, ngx_str_t *key);
static void ngx_http_traffic_split_record(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, ngx_uint_t variant);
static ngx_http_traffic_split_ctx_t *ngx_http_traffic_split_get_ctx(
    ngx_http_request_t *r, ngx_uint_t create);
static void ngx_http_traffic_split_cleanup(void *data);
static void ngx_http_traffic_split_count(ngx_http_traffic_split_stats_t *st,
    ngx_uint_t status, ngx_uint_t error, ngx_uint_t bucket, ngx_uint_t step);


/* upper bounds of the latency buckets, in milliseconds */

static ngx_uint_t  ngx_http_traffic_split_bounds[] = {
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 10000, 60000
};


ngx_int_t
ngx_http_traffic_split_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_traffic_split_conf_t *scf = (ngx_http_traffic_split_conf_t *)
                                         data;

    ngx_uint_t                         n;
    ngx_http_traffic_split_variant_t  *vr;

    if (ngx_http_traffic_split_pick(r, scf, &n) != NGX_OK) {
        return NGX_ERROR;
    }

    vr = scf->variants.elts;

    v->data = vr[n].name.data;
    v->len = vr[n].name.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "traffic split \"%V\": variant \"%V\" (%ui)",
                   &scf->name, &vr[n].name, n);

    if (r == r->main) {
        ngx_http_traffic_split_record(r, scf, n);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_traffic_split_pick(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, ngx_uint_t *variant)
{
    ngx_int_t   rc;
    ngx_str_t   key;
    ngx_uint_t  w[NGX_HTTP_TRAFFIC_SPLIT_VARIANTS];

    rc = ngx_http_traffic_split_matches(r, scf, variant);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    ngx_http_traffic_split_read_weights(scf, w);

    if (scf->key == NULL
        || ngx_http_traffic_split_key_value(r, scf, &key) != NGX_OK
        || key.len == 0)
    {
        *variant = ngx_http_traffic_split_draw(scf, w);
        return NGX_OK;
    }

    *variant = ngx_http_traffic_split_rendezvous(scf, w, &key);

    return NGX_OK;
}


static ngx_int_t
ngx_http_traffic_split_key_value(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, ngx_str_t *key)
{
    ngx_http_variable_value_t  *vv;

    if (scf->key_index == NGX_ERROR) {
        return ngx_http_complex_value(r, scf->key, key);
    }

    /* flushed, as a complex value reads its variables */

    vv = ngx_http_get_flushed_variable(r, scf->key_index);

    if (vv == NULL) {
        return NGX_ERROR;
    }

    if (vv->not_found) {
        key->len = 0;
        return NGX_OK;
    }

    key->data = vv->data;
    key->len = vv->len;

    return NGX_OK;
}


/* without a key, or with an empty one, each request draws */

static ngx_uint_t
ngx_http_traffic_split_draw(ngx_http_traffic_split_conf_t *scf,
    ngx_uint_t *w)
{
    ngx_uint_t  i, b, sum, last;

    b = (ngx_uint_t) ngx_random() % NGX_HTTP_TRAFFIC_SPLIT_SCALE;
    sum = 0;
    last = 0;

    for (i = 0; i < scf->variants.nelts; i++) {
        if (w[i] == 0) {
            continue;
        }

        last = i;
        sum += w[i];

        if (b < sum) {
            break;
        }
    }

    return last;
}


/*
 * Weighted rendezvous hashing: each variant draws u in (0, 1) from a hash
 * of the key and of its own name (mixed with the split's name), and the
 * smallest -ln(u) / weight wins.  -ln(u) is exponential, so a variant
 * wins with the probability weight / sum of weights.  A key moves from X
 * to Y only when Y's weight grew relative to X's: raising a weight only
 * moves keys to that variant, lowering it only moves keys away, and two
 * variants whose weights keep their ratio trade no keys.  The same in
 * every worker and across restarts; a weight of 0 never wins.
 */

static ngx_uint_t
ngx_http_traffic_split_rendezvous(ngx_http_traffic_split_conf_t *scf,
    ngx_uint_t *w, ngx_str_t *key)
{
    double                             u, score, best;
    uint64_t                           h, x;
    ngx_uint_t                         i, n;
    ngx_http_traffic_split_variant_t  *v;

    v = scf->variants.elts;
    h = (uint64_t) ngx_murmur_hash2(key->data, key->len) << 32;

    /* n: the winner so far plus one, 0 before the first */

    n = 0;
    best = 0;

    for (i = 0; i < scf->variants.nelts; i++) {
        if (w[i] == 0) {
            continue;
        }

        /* splitmix64's finalizer over (key hash, variant hash) */

        x = h ^ v[i].hash;
        x ^= x >> 30;
        x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27;
        x *= 0x94d049bb133111ebULL;
        x ^= x >> 31;

        /* the top 53 bits, as a double in (0, 1) */

        u = ((double) (x >> 11) + 0.5) / 9007199254740992.0;

        score = -log(u) / (double) w[i];

        if (n == 0 || score < best) {
            best = score;
            n = i + 1;
        }
    }

    return n ? n - 1 : 0;
}


static ngx_int_t
ngx_http_traffic_split_matches(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, ngx_uint_t *variant)
{
    ngx_int_t                        rc;
    ngx_str_t                        s;
    ngx_uint_t                       i, hit;
    ngx_http_traffic_split_match_t  *m;

    m = scf->matches.elts;

    for (i = 0; i < scf->matches.nelts; i++) {

        if (ngx_http_complex_value(r, &m[i].value, &s) != NGX_OK) {
            return NGX_ERROR;
        }

        switch (m[i].op) {

        case NGX_HTTP_TRAFFIC_SPLIT_EQ:
        case NGX_HTTP_TRAFFIC_SPLIT_NE:
            hit = (s.len == m[i].pattern.len
                   && ngx_strncmp(s.data, m[i].pattern.data, s.len) == 0);
            hit = (m[i].op == NGX_HTTP_TRAFFIC_SPLIT_EQ) ? hit : !hit;
            break;

#if (NGX_PCRE)
        default: /* NGX_HTTP_TRAFFIC_SPLIT_RE, NGX_HTTP_TRAFFIC_SPLIT_NRE */
            rc = ngx_regex_exec(m[i].regex, &s, NULL, 0);

            if (rc < NGX_REGEX_NO_MATCHED) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "traffic split \"%V\": regex match failed: %i",
                              &scf->name, rc);
                rc = NGX_REGEX_NO_MATCHED;
            }

            hit = (rc >= 0);
            hit = (m[i].op == NGX_HTTP_TRAFFIC_SPLIT_RE) ? hit : !hit;
            break;
#else
        default:
            hit = 0;
            break;
#endif
        }

        if (hit) {
            *variant = m[i].variant;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/*
 * Weights are read without a lock: a writer makes the sequence odd, writes
 * and makes it even again, and a reader that saw it change reads again.
 * A writer dies only between two stores, so the reader gives up after a
 * while and uses what it read (any weights give some variant).
 */

void
ngx_http_traffic_split_read_weights(ngx_http_traffic_split_conf_t *scf,
    ngx_uint_t *weights)
{
    ngx_uint_t                      tries;
    ngx_atomic_uint_t               seq;
    ngx_http_traffic_split_node_t  *node;

    node = scf->node;

    for (tries = 0; tries < 10000; tries++) {
        seq = node->seq;

        if (seq & 1) {
            ngx_cpu_pause();
            continue;
        }

        ngx_memory_barrier();

        ngx_memcpy(weights, node->weights,
                   scf->variants.nelts * sizeof(ngx_uint_t));

        ngx_memory_barrier();

        if (node->seq == seq) {
            return;
        }
    }

    ngx_memcpy(weights, node->weights,
               scf->variants.nelts * sizeof(ngx_uint_t));
}


/* the caller holds the zone's mutex */

void
ngx_http_traffic_split_write_weights(ngx_http_traffic_split_conf_t *scf,
    ngx_uint_t *weights)
{
    ngx_http_traffic_split_node_t  *node;

    node = scf->node;

    /*
     * made odd, not incremented: a count a dead writer left odd would
     * otherwise stay inverted for good (odd at rest, even while writing)
     */

    node->seq |= 1;
    ngx_memory_barrier();

    ngx_memcpy(node->weights, weights,
               scf->variants.nelts * sizeof(ngx_uint_t));

    ngx_memory_barrier();
    node->seq++;
}


static void
ngx_http_traffic_split_record(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, ngx_uint_t variant)
{
    ngx_uint_t                     i;
    ngx_http_traffic_split_ctx_t  *ctx;

    ctx = ngx_http_traffic_split_get_ctx(r, 1);

    if (ctx == NULL) {
        return;
    }

    /* a split evaluated again (after an internal redirect) counts once */

    for (i = 0; i < ctx->npicks; i++) {
        if (ctx->picks[i].scf == scf) {
            ctx->picks[i].variant = variant;
            return;
        }
    }

    if (ctx->npicks == NGX_HTTP_TRAFFIC_SPLIT_PICKS) {
        return;
    }

    ctx->picks[ctx->npicks].scf = scf;
    ctx->picks[ctx->npicks].variant = variant;
    ctx->npicks++;
}


/*
 * The module's context is zeroed by an internal redirect (error_page,
 * try_files): a pool cleanup finds it again, as the realip module does.
 */

static ngx_http_traffic_split_ctx_t *
ngx_http_traffic_split_get_ctx(ngx_http_request_t *r, ngx_uint_t create)
{
    ngx_pool_cleanup_t            *cln;
    ngx_http_traffic_split_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_traffic_split_module);

    if (ctx) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_traffic_split_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_traffic_split_module);
            return ctx;
        }
    }

    if (!create) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_traffic_split_ctx_t));
    if (cln == NULL) {
        return NULL;
    }

    ctx = cln->data;
    ctx->npicks = 0;

    cln->handler = ngx_http_traffic_split_cleanup;

    ngx_http_set_ctx(r, ctx, ngx_http_traffic_split_module);

    return ctx;
}


static void
ngx_http_traffic_split_cleanup(void *data)
{
    /* nothing to free: the handler marks the context's cleanup */
}


/*
 * An answer counts as an error when its status is 5xx or when any try of
 * it failed (a retry that hid a failed try still counts against the
 * variant).
 */

ngx_int_t
ngx_http_traffic_split_log_handler(ngx_http_request_t *r)
{
    ngx_msec_int_t                  ms;
    ngx_time_t                     *tp;
    ngx_uint_t                      i, status, error, b;
    ngx_http_upstream_state_t      *state;
    ngx_http_traffic_split_ctx_t   *ctx;
    ngx_http_traffic_split_pick_t  *pk;

    if (r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_http_traffic_split_get_ctx(r, 0);

    if (ctx == NULL) {
        return NGX_OK;
    }

    status = r->err_status ? r->err_status : r->headers_out.status;
    error = (status >= 500);

    if (r->upstream_states) {
        state = r->upstream_states->elts;

        for (i = 0; i < r->upstream_states->nelts; i++) {
            if (state[i].status >= 500) {
                error = 1;
            }
        }
    }

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    for (b = 0; b < NGX_HTTP_TRAFFIC_SPLIT_BUCKETS - 1; b++) {
        if ((ngx_uint_t) ms <= ngx_http_traffic_split_bounds[b]) {
            break;
        }
    }

    pk = ctx->picks;

    for (i = 0; i < ctx->npicks; i++) {
        ngx_http_traffic_split_count(&pk[i].scf->node->stats[pk[i].variant],
                                     status, error, b,
                                     pk[i].scf->rollout
                                     && pk[i].scf->rollout->canary
                                        == pk[i].variant);
    }

    return NGX_OK;
}


/* the step's counters only matter for a rollout's canary */

static void
ngx_http_traffic_split_count(ngx_http_traffic_split_stats_t *st,
    ngx_uint_t status, ngx_uint_t error, ngx_uint_t bucket, ngx_uint_t step)
{
    ngx_uint_t  code;

    code = (status >= 100 && status <= 599) ? status - 100
                                            : NGX_HTTP_TRAFFIC_SPLIT_CODES - 1;

    (void) ngx_atomic_fetch_add(&st->requests, 1);
    (void) ngx_atomic_fetch_add(&st->codes[code], 1);
    (void) ngx_atomic_fetch_add(&st->hist[bucket], 1);

    if (error) {
        (void) ngx_atomic_fetch_add(&st->errors, 1);
    }

    if (!step) {
        return;
    }

    (void) ngx_atomic_fetch_add(&st->step_requests, 1);
    (void) ngx_atomic_fetch_add(&st->step_hist[bucket], 1);

    if (error) {
        (void) ngx_atomic_fetch_add(&st->step_errors, 1);
    }
}


/* the upper bound of the bucket that holds the permille-th answer */

ngx_uint_t
ngx_http_traffic_split_quantile(ngx_atomic_t *hist, ngx_uint_t total,
    ngx_uint_t permille)
{
    ngx_uint_t  b, seen, want;

    if (total == 0) {
        return 0;
    }

    want = (total * permille + 999) / 1000;
    seen = 0;

    for (b = 0; b < NGX_HTTP_TRAFFIC_SPLIT_BUCKETS; b++) {
        seen += hist[b];

        if (seen >= want) {
            return ngx_http_traffic_split_bounds[b];
        }
    }

    return ngx_http_traffic_split_bounds[NGX_HTTP_TRAFFIC_SPLIT_BUCKETS - 1];
}
