
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_mesh_metrics.h"
#include "ngx_meshgate_http.h"
#include "ngx_meshgate_escape.h"


/*
 * Series live in a shared-memory zone as nodes that are never freed (the
 * counters are monotonic).  An open-addressing table of node pointers finds
 * them: readers probe it without the zone mutex, since a slot only ever
 * changes from NULL to a fully built node; writers take the mutex only to
 * create a node.  Counters change by atomic adds.
 */


static ngx_int_t ngx_http_mesh_metrics_same_buckets(
    ngx_http_mesh_metrics_zone_t *ctx, ngx_http_mesh_metrics_zone_t *octx);
static ngx_atomic_t *ngx_http_mesh_metrics_lookup(
    ngx_http_mesh_metrics_shctx_t *sh, uint32_t hash, ngx_uint_t family,
    ngx_http_mesh_metrics_key_t *key, ngx_uint_t *slot);
static ngx_atomic_t *ngx_http_mesh_metrics_insert(
    ngx_http_mesh_metrics_zone_t *zone, uint32_t hash, ngx_uint_t family,
    ngx_http_mesh_metrics_key_t *key, ngx_log_t *log);
static ngx_uint_t ngx_http_mesh_metrics_bounded(ngx_uint_t family);
static void ngx_http_mesh_metrics_drop(ngx_http_mesh_metrics_zone_t *zone,
    ngx_log_t *log);


/*
 * A worker's cache of the series it counted last, found by the label
 * values as they came (before key_add() cleans them) and the family: a
 * hit skips cleaning the values, hashing the key and probing the zone.
 * Nodes are never freed while their zone lives, so an entry stays true
 * for as long as its zone ("sh") is the one asked for.
 */

#define NGX_HTTP_MESH_METRICS_CACHE_SIZE    256
#define NGX_HTTP_MESH_METRICS_CACHE_KEY     120


typedef struct {
    ngx_http_mesh_metrics_shctx_t  *sh;
    ngx_atomic_t                   *values;
    size_t                          len;
    u_char                          raw[NGX_HTTP_MESH_METRICS_CACHE_KEY];
} ngx_http_mesh_metrics_cached_t;


static size_t ngx_http_mesh_metrics_raw_key(u_char *raw, ngx_uint_t family,
    ngx_str_t *labels, ngx_uint_t n);
static ngx_uint_t ngx_http_mesh_metrics_raw_hash(u_char *raw, size_t len,
    ngx_uint_t pad);


static ngx_http_mesh_metrics_cached_t
    ngx_http_mesh_metrics_cache[NGX_HTTP_MESH_METRICS_CACHE_SIZE];


#define NGX_HTTP_MESH_METRICS_MEMO_SIZE     64

static ngx_http_mesh_metrics_memo_t
    ngx_http_mesh_metrics_memos[NGX_HTTP_MESH_METRICS_MEMO_SIZE];


ngx_int_t
ngx_http_mesh_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_mesh_metrics_zone_t  *octx = data;

    size_t                          len;
    ngx_uint_t                      n;
    ngx_http_mesh_metrics_zone_t   *ctx;

    ctx = shm_zone->data;

    /* a new configuration: what the worker cached may point elsewhere */

    ngx_memzero(ngx_http_mesh_metrics_cache,
                sizeof(ngx_http_mesh_metrics_cache));
    ngx_memzero(ngx_http_mesh_metrics_memos,
                sizeof(ngx_http_mesh_metrics_memos));

    if (octx) {
        if (!ngx_http_mesh_metrics_same_buckets(ctx, octx)) {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "mesh_metrics zone \"%V\" uses other buckets; "
                          "rename the zone or change its size to reset it",
                          &shm_zone->shm.name);
            return NGX_ERROR;
        }

        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;

        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    ctx->sh = ngx_slab_alloc(ctx->shpool,
                             sizeof(ngx_http_mesh_metrics_shctx_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(ctx->sh, sizeof(ngx_http_mesh_metrics_shctx_t));
    ctx->shpool->data = ctx->sh;

    /* a slot per 256 bytes of zone, a power of two, at most half used */

    n = 64;
    while (n * 2 * 256 <= shm_zone->shm.size) {
        n *= 2;
    }

    ctx->sh->nslots = n;
    ctx->sh->max_series = n / 2;
    ctx->sh->nbuckets = ctx->nbuckets;
    ngx_memcpy(ctx->sh->bounds, ctx->bounds,
               ctx->nbuckets * sizeof(ngx_uint_t));
    ctx->sh->started = ngx_time();

    len = n * sizeof(ngx_http_mesh_metrics_node_t *);

    ctx->sh->slots = ngx_slab_calloc(ctx->shpool, len);
    if (ctx->sh->slots == NULL) {
        return NGX_ERROR;
    }

    len = sizeof(" in mesh_metrics zone \"\"") + shm_zone->shm.name.len;

    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->shpool->log_ctx, " in mesh_metrics zone \"%V\"%Z",
                &shm_zone->shm.name);

    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_mesh_metrics_same_buckets(ngx_http_mesh_metrics_zone_t *ctx,
    ngx_http_mesh_metrics_zone_t *octx)
{
    ngx_http_mesh_metrics_shctx_t  *sh;

    sh = octx->sh;

    if (sh->nbuckets != ctx->nbuckets) {
        return 0;
    }

    return ngx_memcmp(sh->bounds, ctx->bounds,
                      ctx->nbuckets * sizeof(ngx_uint_t)) == 0;
}


ngx_uint_t
ngx_http_mesh_metrics_nvalues(ngx_uint_t family, ngx_uint_t nbuckets)
{
    switch (family) {

    case NGX_HTTP_MESH_METRICS_F_REQUEST:
    case NGX_HTTP_MESH_METRICS_F_UPSTREAM:
        return NGX_HTTP_MESH_METRICS_V_BUCKETS + nbuckets + 1;

    case NGX_HTTP_MESH_METRICS_F_EDGE:
    case NGX_HTTP_MESH_METRICS_F_ROUTE:
    case NGX_HTTP_MESH_METRICS_F_SPLIT:
        return NGX_HTTP_MESH_METRICS_V_BUCKETS + nbuckets + 1 + 6;

    default:
        return 1;
    }
}


void
ngx_http_mesh_metrics_key_reset(ngx_http_mesh_metrics_key_t *key)
{
    key->len = 0;
}


/*
 * Appends one label value.  Control characters and bytes that are not
 * valid UTF-8 become '?', one per byte, so any label value exports
 * cleanly (a scrape with one bad label fails as a whole); values are cut
 * at NGX_HTTP_MESH_METRICS_MAX_VALUE bytes, and a character cut in two
 * there becomes '?' too.
 */

void
ngx_http_mesh_metrics_key_add(ngx_http_mesh_metrics_key_t *key,
    u_char *value, size_t len)
{
    u_char  *p, *last, *dst, *end;
    size_t   n;

    if (len > NGX_HTTP_MESH_METRICS_MAX_VALUE) {
        len = NGX_HTTP_MESH_METRICS_MAX_VALUE;
    }

    dst = key->data + key->len;
    end = key->data + NGX_HTTP_MESH_METRICS_MAX_KEY - 1;

    if ((size_t) (end - dst) < len) {
        len = end - dst;
    }

    p = value;
    last = value + len;

    while (p < last) {

        if (*p >= 0x20 && *p < 0x7f) {
            *dst++ = *p++;
            continue;
        }

        n = ngx_meshgate_utf8_len(p, last);

        if (n == 0) {
            *dst++ = '?';
            p++;
            continue;
        }

        dst = ngx_cpymem(dst, p, n);
        p += n;
    }

    *dst++ = '\0';
    key->len = dst - key->data;
}


/*
 * The series of a family and label values: from the worker's cache, or
 * else cleaned into a key and found (or created) in the zone.
 */

ngx_atomic_t *
ngx_http_mesh_metrics_find(ngx_http_mesh_metrics_zone_t *zone,
    ngx_uint_t family, ngx_str_t *labels, ngx_uint_t n, ngx_log_t *log)
{
    u_char                           raw[NGX_HTTP_MESH_METRICS_CACHE_KEY + 8];
    size_t                           len;
    ngx_uint_t                       i;
    ngx_atomic_t                    *values;
    ngx_http_mesh_metrics_key_t      key;
    ngx_http_mesh_metrics_cached_t  *c;

    len = ngx_http_mesh_metrics_raw_key(raw, family, labels, n);
    c = NULL;

    if (len) {
        c = &ngx_http_mesh_metrics_cache[
                ngx_http_mesh_metrics_raw_hash(raw, len, 1)
                & (NGX_HTTP_MESH_METRICS_CACHE_SIZE - 1)];

        if (c->sh == zone->sh && c->len == len
            && ngx_memcmp(c->raw, raw, len) == 0)
        {
            return c->values;
        }
    }

    ngx_http_mesh_metrics_key_reset(&key);

    for (i = 0; i < n; i++) {
        ngx_http_mesh_metrics_key_add(&key, labels[i].data, labels[i].len);
    }

    values = ngx_http_mesh_metrics_series(zone, family, &key, log);

    if (values && c) {
        c->sh = zone->sh;
        c->values = values;
        c->len = len;
        ngx_memcpy(c->raw, raw, len);
    }

    return values;
}


/*
 * The memo slot of a key: a hit, or the slot to fill (its series found,
 * the caller copies the key in).  The key's text is zero-padded to a
 * multiple of eight bytes by the caller; only its used part is compared.
 * Like the series cache, an entry holds while its zone ("sh") is asked
 * for: configuration pointers in the key are from this worker's cycle,
 * and a new cycle's workers start with the memo emptied.
 */

ngx_http_mesh_metrics_memo_t *
ngx_http_mesh_metrics_memo(ngx_http_mesh_metrics_memo_key_t *key,
    ngx_uint_t *hit)
{
    size_t                         len;
    ngx_http_mesh_metrics_memo_t  *m;

    len = offsetof(ngx_http_mesh_metrics_memo_key_t, text)
          + ngx_align(key->peer_len + key->caller_len, 8);

    m = &ngx_http_mesh_metrics_memos[
            ngx_http_mesh_metrics_raw_hash((u_char *) key, len, 0)
            & (NGX_HTTP_MESH_METRICS_MEMO_SIZE - 1)];

    *hit = (ngx_memcmp(&m->key, key, len) == 0);

    return m;
}


/*
 * The family, then each value's length (two bytes) and bytes; 0 when
 * that is too long to cache (the values are looked up the slow way)
 */

static size_t
ngx_http_mesh_metrics_raw_key(u_char *raw, ngx_uint_t family,
    ngx_str_t *labels, ngx_uint_t n)
{
    u_char      *p, *last;
    ngx_uint_t   i;

    p = raw;
    last = raw + NGX_HTTP_MESH_METRICS_CACHE_KEY;

    *p++ = (u_char) family;

    for (i = 0; i < n; i++) {
        if ((size_t) (last - p) < 2 + labels[i].len) {
            return 0;
        }

        *p++ = (u_char) (labels[i].len >> 8);
        *p++ = (u_char) labels[i].len;
        p = ngx_cpymem(p, labels[i].data, labels[i].len);
    }

    return p - raw;
}


/*
 * The cache slot's hash: eight bytes a step (the key is padded with
 * zeros to a multiple of eight, its length mixed in first), several
 * times cheaper than a byte-wise hash on the path of every request.  A
 * collision costs only a miss: the whole key is compared.
 */

static ngx_uint_t
ngx_http_mesh_metrics_raw_hash(u_char *raw, size_t len, ngx_uint_t pad)
{
    u_char    *p, *last;
    uint64_t   h, w;

    if (pad) {
        ngx_memzero(raw + len, 8);
    }

    h = (uint64_t) len * 0x9e3779b97f4a7c15ULL;

    for (p = raw, last = raw + len; p < last; p += 8) {
        ngx_memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
    }

    return (ngx_uint_t) (h ^ (h >> 32));
}


ngx_atomic_t *
ngx_http_mesh_metrics_series(ngx_http_mesh_metrics_zone_t *zone,
    ngx_uint_t family, ngx_http_mesh_metrics_key_t *key, ngx_log_t *log)
{
    uint32_t       hash;
    ngx_uint_t     slot;
    ngx_atomic_t  *values;

    hash = ngx_murmur_hash2(key->data, key->len) ^ (uint32_t) family;

    values = ngx_http_mesh_metrics_lookup(zone->sh, hash, family, key, &slot);
    if (values) {
        return values;
    }

    /*
     * A full zone drops without taking the mutex.  Edges, whose caller
     * label comes from credentials, and split variants, which a "map"
     * named like a split's variable could take from requests, may fill
     * half of the zone only, so that they cannot crowd out the per-route
     * series.
     */

    if (zone->sh->series >= zone->sh->max_series
        || (ngx_http_mesh_metrics_bounded(family)
            && zone->sh->edge_series >= zone->sh->max_series / 2))
    {
        ngx_http_mesh_metrics_drop(zone, log);
        return NULL;
    }

    return ngx_http_mesh_metrics_insert(zone, hash, family, key, log);
}


static ngx_atomic_t *
ngx_http_mesh_metrics_lookup(ngx_http_mesh_metrics_shctx_t *sh,
    uint32_t hash, ngx_uint_t family, ngx_http_mesh_metrics_key_t *key,
    ngx_uint_t *slot)
{
    ngx_uint_t                              i, n, mask;
    ngx_http_mesh_metrics_node_t           *node;
    ngx_http_mesh_metrics_node_t *volatile *slots;

    slots = (ngx_http_mesh_metrics_node_t *volatile *) sh->slots;
    mask = sh->nslots - 1;
    i = hash & mask;

    for (n = 0; n < sh->nslots; n++) {
        node = slots[i];

        if (node == NULL) {
            *slot = i;
            return NULL;
        }

        if (node->hash == hash
            && node->family == family
            && node->key_len == key->len
            && ngx_memcmp((u_char *) &node->values[
                              ngx_http_mesh_metrics_nvalues(family,
                                                            sh->nbuckets)],
                          key->data, key->len)
               == 0)
        {
            return node->values;
        }

        i = (i + 1) & mask;
    }

    *slot = sh->nslots;

    return NULL;
}


static ngx_atomic_t *
ngx_http_mesh_metrics_insert(ngx_http_mesh_metrics_zone_t *zone,
    uint32_t hash, ngx_uint_t family, ngx_http_mesh_metrics_key_t *key,
    ngx_log_t *log)
{
    size_t                          size;
    ngx_uint_t                      slot, nvalues;
    ngx_atomic_t                   *values;
    ngx_http_mesh_metrics_node_t   *node;
    ngx_http_mesh_metrics_shctx_t  *sh;

    sh = zone->sh;

    ngx_shmtx_lock(&zone->shpool->mutex);

    values = ngx_http_mesh_metrics_lookup(sh, hash, family, key, &slot);
    if (values) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return values;
    }

    node = NULL;

    if (slot < sh->nslots
        && sh->series < sh->max_series
        && (!ngx_http_mesh_metrics_bounded(family)
            || sh->edge_series < sh->max_series / 2))
    {
        nvalues = ngx_http_mesh_metrics_nvalues(family, sh->nbuckets);
        size = offsetof(ngx_http_mesh_metrics_node_t, values)
               + nvalues * sizeof(ngx_atomic_t) + key->len;

        node = ngx_slab_calloc_locked(zone->shpool, size);

        if (node) {
            node->hash = hash;
            node->family = (uint16_t) family;
            node->key_len = (uint16_t) key->len;
            ngx_memcpy((u_char *) &node->values[nvalues], key->data,
                       key->len);

            ngx_memory_barrier();

            ((ngx_http_mesh_metrics_node_t *volatile *) sh->slots)[slot]
                                                                     = node;
            sh->series++;

            if (ngx_http_mesh_metrics_bounded(family)) {
                sh->edge_series++;
            }

        } else {
            /* no memory left: the zone is full from now on */
            sh->max_series = sh->series;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (node == NULL) {
        ngx_http_mesh_metrics_drop(zone, log);
        return NULL;
    }

    return node->values;
}


/* families whose labels outside text may choose: half of the zone */

static ngx_uint_t
ngx_http_mesh_metrics_bounded(ngx_uint_t family)
{
    return family == NGX_HTTP_MESH_METRICS_F_EDGE
           || family == NGX_HTTP_MESH_METRICS_F_SPLIT;
}


/* counts a dropped series; warns at most once a minute per zone */

static void
ngx_http_mesh_metrics_drop(ngx_http_mesh_metrics_zone_t *zone,
    ngx_log_t *log)
{
    ngx_atomic_uint_t               now, last;
    ngx_http_mesh_metrics_shctx_t  *sh;

    sh = zone->sh;

    (void) ngx_atomic_fetch_add(&sh->dropped, 1);

    now = (ngx_atomic_uint_t) ngx_time();
    last = sh->warned;

    if (now - last >= 60 && ngx_atomic_cmp_set(&sh->warned, last, now)) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "mesh_metrics zone \"%V\" is full (%uA series): "
                      "new series are dropped and counted in "
                      "meshgate_metrics_series_dropped_total",
                      &zone->shm_zone->shm.name, sh->series);
    }
}


void
ngx_http_mesh_metrics_observe(ngx_http_mesh_metrics_zone_t *zone,
    ngx_atomic_t *values, ngx_uint_t usec)
{
    ngx_uint_t                      i, n;
    ngx_http_mesh_metrics_shctx_t  *sh;

    sh = zone->sh;
    n = sh->nbuckets;

    for (i = 0; i < n; i++) {
        if (usec <= sh->bounds[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&values[NGX_HTTP_MESH_METRICS_V_BUCKETS + i],
                                1);
    (void) ngx_atomic_fetch_add(&values[NGX_HTTP_MESH_METRICS_V_SUM], usec);
}


/* a request of a node with rate windows (edge, route, split variant) */

void
ngx_http_mesh_metrics_count_window(ngx_http_mesh_metrics_zone_t *zone,
    ngx_atomic_t *values, ngx_uint_t status, ngx_uint_t usec)
{
    (void) ngx_atomic_fetch_add(&values[NGX_HTTP_MESH_METRICS_V_COUNT], 1);

    if (status >= 500) {
        (void) ngx_atomic_fetch_add(&values[NGX_HTTP_MESH_METRICS_V_A], 1);
    }

    ngx_http_mesh_metrics_observe(zone, values, usec);
    ngx_http_mesh_metrics_window_add(zone, values, status >= 500);
}


/* a status as three digits ("000" for none), as ngx_sprintf("%03ui") */

u_char *
ngx_http_mesh_metrics_code(u_char *p, ngx_uint_t status)
{
    if (status > 999) {
        return ngx_sprintf(p, "%ui", status);
    }

    *p++ = (u_char) ('0' + status / 100);
    *p++ = (u_char) ('0' + status / 10 % 10);
    *p++ = (u_char) ('0' + status % 10);

    return p;
}


/*
 * Request rate windows of an edge: two slots of WINDOW seconds, each
 * {epoch, requests, errors}; the slot of the current epoch counts, the
 * other one holds the last complete window.  A slot is claimed for a new
 * epoch by compare-and-set; the few requests racing with the claim may be
 * lost, which a rate display tolerates.
 */

void
ngx_http_mesh_metrics_window_add(ngx_http_mesh_metrics_zone_t *zone,
    ngx_atomic_t *values, ngx_uint_t error)
{
    ngx_atomic_t      *w;
    ngx_atomic_uint_t  epoch, old;

    epoch = ngx_time() / NGX_HTTP_MESH_METRICS_WINDOW;
    w = &values[NGX_HTTP_MESH_METRICS_V_BUCKETS + zone->sh->nbuckets + 1
                + (epoch & 1) * 3];

    old = w[0];

    if (old != epoch && ngx_atomic_cmp_set(&w[0], old, epoch)) {
        w[1] = 0;
        w[2] = 0;
    }

    (void) ngx_atomic_fetch_add(&w[1], 1);

    if (error) {
        (void) ngx_atomic_fetch_add(&w[2], 1);
    }
}


void
ngx_http_mesh_metrics_window_read(ngx_http_mesh_metrics_zone_t *zone,
    ngx_atomic_t *values, ngx_uint_t *requests, ngx_uint_t *errors)
{
    ngx_atomic_t      *w;
    ngx_atomic_uint_t  epoch;

    epoch = ngx_time() / NGX_HTTP_MESH_METRICS_WINDOW - 1;
    w = &values[NGX_HTTP_MESH_METRICS_V_BUCKETS + zone->sh->nbuckets + 1
                + (epoch & 1) * 3];

    if (w[0] != epoch) {
        *requests = 0;
        *errors = 0;
        return;
    }

    *requests = w[1];
    *errors = w[2];
}


/* the i-th label value of a node; returns 0 when there is none */

ngx_uint_t
ngx_http_mesh_metrics_label(ngx_http_mesh_metrics_node_t *node,
    ngx_uint_t nvalues, ngx_uint_t i, ngx_str_t *value)
{
    u_char  *p, *last;

    p = (u_char *) &node->values[nvalues];
    last = p + node->key_len;

    while (i--) {
        p = ngx_strlchr(p, last, '\0');
        if (p == NULL) {
            return 0;
        }
        p++;
    }

    if (p >= last) {
        return 0;
    }

    value->data = p;
    value->len = ngx_strlen(p);

    return 1;
}
