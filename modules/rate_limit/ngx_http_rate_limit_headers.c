
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_rate_limit.h"
#include "ngx_meshgate_http.h"
#include "ngx_meshgate_prometheus.h"
#include "ngx_meshgate_escape.h"


static ngx_int_t ngx_http_rate_limit_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_rate_limit_add_header(ngx_http_request_t *r,
    char *name, u_char *value, u_char *last);
static ngx_int_t ngx_http_rate_limit_draft_headers(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
static uint64_t ngx_http_rate_limit_next_unit(
    ngx_http_rate_limit_result_t *res);
static ngx_int_t ngx_http_rate_limit_legacy_headers(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
static ngx_int_t ngx_http_rate_limit_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_rate_limit_remaining_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_rate_limit_node_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
ngx_chain_t *ngx_http_rate_limit_prometheus(ngx_pool_t *pool,
    ngx_log_t *log);


static ngx_str_t  ngx_http_rate_limit_status_names[] = {
    ngx_null_string,
    ngx_string("PASSED"),
    ngx_string("REJECTED"),
    ngx_string("DRY_RUN"),
    ngx_string("ERROR"),
    ngx_string("ERROR_REJECTED"),
    ngx_string("LOCAL_PASSED"),
    ngx_string("LOCAL_REJECTED"),
    ngx_string("LOCAL_DRY_RUN")
};


static ngx_http_variable_t  ngx_http_rate_limit_vars[] = {

    { ngx_string("rate_limit_status"), NULL,
      ngx_http_rate_limit_status_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("rate_limit_remaining"), NULL,
      ngx_http_rate_limit_remaining_variable, 0, NGX_HTTP_VAR_NOCACHEABLE,
      0 },

    { ngx_string("rate_limit_redis_node"), NULL,
      ngx_http_rate_limit_node_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


static ngx_int_t
ngx_http_rate_limit_header_filter(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_uint_t                     i;
    ngx_msec_t                     retry;
    u_char                         buf[NGX_INT_T_LEN], *p;
    ngx_http_rate_limit_ctx_t     *ctx;
    ngx_http_rate_limit_result_t  *res;

    /* a response goes out: the worker is busy (ngx_http_rate_limit_defer) */

    ngx_http_rate_limit_work++;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_rate_limit_get_ctx(r);

    if (ctx == NULL || ctx->status == 0) {
        return ngx_http_next_header_filter(r);
    }

    rc = NGX_OK;

    if (ctx->have_results) {
        if (ctx->headers == NGX_HTTP_RATE_LIMIT_HEADERS_DRAFT) {
            rc = ngx_http_rate_limit_draft_headers(r, ctx);

        } else if (ctx->headers == NGX_HTTP_RATE_LIMIT_HEADERS_LEGACY) {
            rc = ngx_http_rate_limit_legacy_headers(r, ctx);
        }
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->status == NGX_HTTP_RATE_LIMIT_REJECTED
        || ctx->status == NGX_HTTP_RATE_LIMIT_LOCAL_REJECTED
        || ctx->status == NGX_HTTP_RATE_LIMIT_ERROR_REJECTED)
    {
        retry = 1000;

        for (i = 0; i < ctx->nresults; i++) {
            res = &ctx->results[i];

            if (ctx->have_results && !res->allowed
                && res->retry_after > retry)
            {
                retry = res->retry_after;
            }
        }

        p = ngx_sprintf(buf, "%M", (retry + 999) / 1000);

        if (ngx_http_rate_limit_add_header(r, "Retry-After", buf, p)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_rate_limit_add_header(ngx_http_request_t *r, char *name,
    u_char *value, u_char *last)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.len = last - value;
    h->value.data = ngx_pnalloc(r->pool, h->value.len);

    if (h->value.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(h->value.data, value, h->value.len);

    return NGX_OK;
}


/*
 * draft-ietf-httpapi-ratelimit-headers: one list item per limit,
 *   RateLimit-Policy: "zone";q=<rate>;w=<period seconds>
 *   RateLimit: "zone";r=<remaining>;t=<seconds until more quota comes>
 */

static ngx_int_t
ngx_http_rate_limit_draft_headers(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    u_char                        *policy, *limit, *p, *q;
    size_t                         len;
    ngx_uint_t                     i;
    ngx_http_rate_limit_zone_t    *zone;
    ngx_http_rate_limit_result_t  *res;

    len = 0;

    for (i = 0; i < ctx->nresults; i++) {
        len += ctx->results[i].limit->zone->policy.len
               + sizeof(", ") + NGX_INT_T_LEN + NGX_INT64_LEN;
    }

    policy = ngx_pnalloc(r->pool, 2 * len);
    if (policy == NULL) {
        return NGX_ERROR;
    }

    limit = policy + len;
    p = policy;
    q = limit;

    /* per request only the numbers, written without ngx_sprintf()'s cost */

    for (i = 0; i < ctx->nresults; i++) {
        res = &ctx->results[i];
        zone = res->limit->zone;

        if (i) {
            p = ngx_cpymem(p, ", ", 2);
            q = ngx_cpymem(q, ", ", 2);
        }

        p = ngx_cpymem(p, zone->policy.data, zone->policy.len);

        *q++ = '"';
        q = ngx_cpymem(q, zone->name.data, zone->name.len);
        q = ngx_cpymem(q, "\";r=", 4);
        q = ngx_meshgate_decimal(q, res->remaining);
        q = ngx_cpymem(q, ";t=", 3);
        q = ngx_meshgate_decimal(q, ngx_http_rate_limit_next_unit(res));
    }

    if (ngx_http_rate_limit_add_header(r, "RateLimit-Policy", policy, p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_rate_limit_add_header(r, "RateLimit", limit, q);
}


/*
 * The draft's "t": seconds until the limit frees one more unit.  GCRA
 * frees one unit per interval, and the limit is "reset" away from whole
 * (whole is a multiple of the interval).  For a limit that rejected the
 * request, never later than its Retry-After: the draft wants Retry-After
 * not to point earlier than "t".
 */

static uint64_t
ngx_http_rate_limit_next_unit(ngx_http_rate_limit_result_t *res)
{
    uint64_t  used, next, interval, t;

    interval = res->limit->zone->interval;
    used = (uint64_t) res->reset * 1000;

    if (used == 0) {
        return 0;
    }

    next = used % interval;

    if (next == 0) {
        next = interval;
    }

    t = (next + 999999) / 1000000;

    if (!res->allowed) {
        t = ngx_min(t, (uint64_t) (res->retry_after + 999) / 1000);
    }

    return t;
}


/* X-RateLimit-*: of the limit with the fewest requests remaining */

static ngx_int_t
ngx_http_rate_limit_legacy_headers(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    u_char                         buf[NGX_INT_T_LEN], *p;
    ngx_uint_t                     i;
    ngx_http_rate_limit_result_t  *res, *min;

    min = &ctx->results[0];

    for (i = 1; i < ctx->nresults; i++) {
        res = &ctx->results[i];

        if (res->remaining < min->remaining) {
            min = res;
        }
    }

    p = ngx_sprintf(buf, "%ui", min->limit->zone->rate);

    if (ngx_http_rate_limit_add_header(r, "X-RateLimit-Limit", buf, p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = ngx_sprintf(buf, "%ui", min->remaining);

    if (ngx_http_rate_limit_add_header(r, "X-RateLimit-Remaining", buf, p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = ngx_sprintf(buf, "%M", (min->reset + 999) / 1000);

    return ngx_http_rate_limit_add_header(r, "X-RateLimit-Reset", buf, p);
}


static ngx_int_t
ngx_http_rate_limit_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_rate_limit_ctx_t  *ctx;

    ctx = ngx_http_rate_limit_get_ctx(r);

    if (ctx == NULL || ctx->status == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->len = ngx_http_rate_limit_status_names[ctx->status].len;
    v->data = ngx_http_rate_limit_status_names[ctx->status].data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_rate_limit_remaining_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                     *p;
    ngx_uint_t                  i, min;
    ngx_http_rate_limit_ctx_t  *ctx;

    ctx = ngx_http_rate_limit_get_ctx(r);

    if (ctx == NULL || !ctx->have_results || ctx->nresults == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    min = ctx->results[0].remaining;

    for (i = 1; i < ctx->nresults; i++) {
        min = ngx_min(min, ctx->results[i].remaining);
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%ui", min) - p;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = p;

    return NGX_OK;
}


/* a decision, counted for the metrics by zone and status */

void
ngx_http_rate_limit_count(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    ngx_uint_t                        i, n;
    ngx_atomic_t                     *checks;
    ngx_meshgate_redis_stats_t       *stats;
    ngx_http_rate_limit_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_rate_limit_module);

    if (mcf->counters == NULL || ctx->status == 0
        || ctx->status >= NGX_HTTP_RATE_LIMIT_NSTATUS)
    {
        return;
    }

    checks = mcf->counters->checks;

    for (i = 0; i < ctx->nresults; i++) {
        n = ctx->results[i].limit->zone->index;

        if (n < mcf->counters->nzones) {
            (void) ngx_atomic_fetch_add(
                      &checks[n * NGX_HTTP_RATE_LIMIT_NSTATUS + ctx->status],
                      1);
        }
    }

    stats = ngx_meshgate_redis_stats(mcf->redis);

    if (stats->failovers != mcf->failovers) {
        (void) ngx_atomic_fetch_add(&mcf->counters->failovers,
                                    stats->failovers - mcf->failovers);
        mcf->failovers = stats->failovers;
    }

    if (stats->redirects != mcf->redirects) {
        (void) ngx_atomic_fetch_add(&mcf->counters->redirects,
                                    stats->redirects - mcf->redirects);
        mcf->redirects = stats->redirects;
    }
}


static ngx_int_t
ngx_http_rate_limit_node_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_rate_limit_ctx_t  *ctx;

    ctx = ngx_http_rate_limit_get_ctx(r->main);

    if (ctx == NULL || ctx->node.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = ctx->node.data;
    v->len = ctx->node.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * The metrics module's provider (see ngx_meshgate_prometheus.h): checks
 * by zone and status, primaries named anew by the sentinels, redirects
 * of Redis Cluster.  Zone
 * names are letters, digits, "_", "-" and ".": safe in a label.
 */

ngx_chain_t *
ngx_http_rate_limit_prometheus(ngx_pool_t *pool, ngx_log_t *log)
{
    ngx_buf_t                        *b;
    ngx_uint_t                        i, k;
    ngx_chain_t                      *cl;
    ngx_atomic_t                     *checks;
    ngx_http_rate_limit_zone_t      **zp;
    ngx_http_rate_limit_main_conf_t  *mcf;

    if (ngx_cycle->conf_ctx == NULL) {
        return NULL;
    }

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                              ngx_http_rate_limit_module);

    if (mcf == NULL || mcf->counters == NULL) {
        return NULL;
    }

    b = ngx_create_temp_buf(pool, 512 + mcf->zones.nelts
                                        * NGX_HTTP_RATE_LIMIT_NSTATUS
                                        * (128 + NGX_ATOMIC_T_LEN));
    if (b == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0, "rate limit metrics: no memory");
        return NULL;
    }

    b->last = ngx_sprintf(b->last,
                 "# HELP meshgate_rate_limit_zone_checks_total Requests "
                 "checked against a zone, by $rate_limit_status.\n"
                 "# TYPE meshgate_rate_limit_zone_checks_total counter\n");

    zp = mcf->zones.elts;
    checks = mcf->counters->checks;

    for (i = 0; i < mcf->zones.nelts && i < mcf->counters->nzones; i++) {
        for (k = 1; k < NGX_HTTP_RATE_LIMIT_NSTATUS; k++) {
            b->last = ngx_sprintf(b->last,
                         "meshgate_rate_limit_zone_checks_total"
                         "{zone=\"%V\",status=\"%V\"} %uA\n",
                         &zp[i]->name, &ngx_http_rate_limit_status_names[k],
                         checks[i * NGX_HTTP_RATE_LIMIT_NSTATUS + k]);
        }
    }

    b->last = ngx_sprintf(b->last,
                 "# HELP meshgate_rate_limit_redis_failovers_total New "
                 "primaries named by the Redis sentinels.\n"
                 "# TYPE meshgate_rate_limit_redis_failovers_total counter\n"
                 "meshgate_rate_limit_redis_failovers_total %uA\n"
                 "# HELP meshgate_rate_limit_redis_redirects_total MOVED and "
                 "ASK answers of Redis Cluster followed.\n"
                 "# TYPE meshgate_rate_limit_redis_redirects_total counter\n"
                 "meshgate_rate_limit_redis_redirects_total %uA\n",
                 mcf->counters->failovers, mcf->counters->redirects);

    cl = ngx_alloc_chain_link(pool);
    if (cl == NULL) {
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;

    return cl;
}


ngx_int_t
ngx_http_rate_limit_add_variables(ngx_conf_t *cf)
{
    return ngx_meshgate_add_variables(cf, ngx_http_rate_limit_vars);
}


/* postconfiguration: the header filter joins the chain */

void
ngx_http_rate_limit_init_header_filter(void)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_rate_limit_header_filter;
}
