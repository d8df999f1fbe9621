
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_rate_limit.h"


/*
 * A key's entry in a local zone: a cache record (ngx_meshgate_cache.h) of
 * this kind with one field, the key's TAT in microseconds.
 */
#define NGX_HTTP_RATE_LIMIT_LOCAL_TAT  'T'

#define NGX_HTTP_RATE_LIMIT_LOCAL_LEN                                         \
    (NGX_MESHGATE_RECORD_HEAD + NGX_MESHGATE_RECORD_FIELD                     \
     + NGX_MESHGATE_RECORD_UINT64)


static uint64_t ngx_http_rate_limit_local_get(ngx_http_request_t *r,
    ngx_http_rate_limit_result_t *res, uint64_t now);
static void ngx_http_rate_limit_local_set(ngx_http_rate_limit_result_t *res);
static void ngx_http_rate_limit_local_lock(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, ngx_uint_t lock);


/*
 * The same GCRA on this node only, in the zone's shared memory, on this
 * machine's clock (microseconds): the fallback while Redis is unreachable.
 * All of a request's limits are decided at once, under the locks of all
 * their zones, so that no worker sees half of another's update.
 */

void
ngx_http_rate_limit_local(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    uint64_t                          now, used;
    struct timeval                    tv;
    ngx_uint_t                        i, ok;
    ngx_http_rate_limit_zone_t       *zone;
    ngx_http_rate_limit_result_t     *res;

    ngx_http_rate_limit_local_lock(r, ctx, 1);

    ngx_gettimeofday(&tv);
    now = (uint64_t) tv.tv_sec * 1000000 + tv.tv_usec;
    ok = 1;

    for (i = 0; i < ctx->nresults; i++) {
        res = &ctx->results[i];
        zone = res->limit->zone;

        res->tat = ngx_http_rate_limit_local_get(r, res, now)
                   + zone->interval * res->limit->cost;

        if (res->tat - now > zone->interval * (zone->burst + 1)) {
            ok = 0;
        }
    }

    for (i = 0; i < ctx->nresults; i++) {
        res = &ctx->results[i];
        zone = res->limit->zone;

        used = res->tat - now;

        if (!ok) {
            used -= zone->interval * res->limit->cost;
        }

        ngx_http_rate_limit_result(res, used, ok);

        if (ok) {
            ngx_http_rate_limit_local_set(res);
        }
    }

    ngx_http_rate_limit_local_lock(r, ctx, 0);
}


/*
 * The key's TAT, not before now: now when the key has no entry, or an
 * entry that is no TAT record (one written by an earlier encoding, kept
 * across a reload).
 */

static uint64_t
ngx_http_rate_limit_local_get(ngx_http_request_t *r,
    ngx_http_rate_limit_result_t *res, uint64_t now)
{
    uint64_t                tat;
    ngx_str_t               value;
    ngx_meshgate_record_t   rec;

    if (ngx_meshgate_cache_get_locked(res->limit->zone->local, &res->key,
                                      r->pool, &value, NULL)
        != NGX_OK
        || ngx_meshgate_record_open(&rec, &value) != NGX_OK
        || rec.kind != NGX_HTTP_RATE_LIMIT_LOCAL_TAT
        || ngx_meshgate_record_next_uint64(&rec, &tat) != NGX_OK)
    {
        return now;
    }

    return ngx_max(tat, now);
}


/*
 * Stores the key's TAT until it is reached (the end of its millisecond):
 * an entry older than that says nothing a missing one would not.
 */

static void
ngx_http_rate_limit_local_set(ngx_http_rate_limit_result_t *res)
{
    u_char     *p;
    ngx_str_t   value;
    u_char      buf[NGX_HTTP_RATE_LIMIT_LOCAL_LEN];

    p = ngx_meshgate_record_start(buf, NGX_HTTP_RATE_LIMIT_LOCAL_TAT);
    p = ngx_meshgate_record_put_uint64(p, res->tat);

    value.data = buf;
    value.len = p - buf;

    (void) ngx_meshgate_cache_set_locked(res->limit->zone->local, &res->key,
                                         &value, res->tat / 1000 + 1);
}


/*
 * Locks (or unlocks) each distinct zone of the request's limits once, in
 * zone index order: two workers locking overlapping sets never wait for
 * each other in a cycle, and a zone used by two limits is not locked twice
 * (its mutex is not recursive).
 */

static void
ngx_http_rate_limit_local_lock(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, ngx_uint_t lock)
{
    ngx_uint_t                        i, z;
    ngx_http_rate_limit_zone_t      **zones;
    ngx_http_rate_limit_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_rate_limit_module);
    zones = mcf->zones.elts;

    for (z = 0; z < mcf->zones.nelts; z++) {

        for (i = 0; i < ctx->nresults; i++) {
            if (ctx->results[i].limit->zone == zones[z]) {
                break;
            }
        }

        if (i == ctx->nresults) {
            continue;
        }

        if (lock) {
            ngx_meshgate_cache_lock(zones[z]->local);

        } else {
            ngx_meshgate_cache_unlock(zones[z]->local);
        }
    }
}


/*
 * The counters of the metrics live in a zone of their own, allocated once
 * and kept across reloads.
 */

ngx_int_t
ngx_http_rate_limit_init_counters_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_rate_limit_main_conf_t  *mcf;

    size_t                            size;
    ngx_slab_pool_t                  *shpool;
    ngx_http_rate_limit_counters_t   *counters;

    mcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    /* the counters live on across reloads while the zones stay the same */

    counters = shpool->data;

    if (counters && counters->nzones == mcf->zones.nelts) {
        mcf->counters = counters;
        return NGX_OK;
    }

    ngx_shmtx_lock(&shpool->mutex);

    if (counters) {
        ngx_slab_free_locked(shpool, counters);
    }

    size = sizeof(ngx_http_rate_limit_counters_t)
           + ngx_max(mcf->zones.nelts * NGX_HTTP_RATE_LIMIT_NSTATUS, 1)
             * sizeof(ngx_atomic_t);

    counters = ngx_slab_calloc_locked(shpool, size);
    shpool->data = counters;

    ngx_shmtx_unlock(&shpool->mutex);

    if (counters == NULL) {
        ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                      "rate limit: no room for the metrics' counters");
        return NGX_OK;
    }

    counters->nzones = mcf->zones.nelts;
    mcf->counters = counters;

    return NGX_OK;
}
