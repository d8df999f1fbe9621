
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_HTTP_RATE_LIMIT_H_INCLUDED_
#define _NGX_HTTP_RATE_LIMIT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_meshgate_redis.h"
#include "ngx_meshgate_cache.h"


/*
 * The rate_limit module's own definitions, shared by its files:
 *   ngx_http_rate_limit_module.c   directives, configuration, the phase
 *                                  handler and the decision
 *   ngx_http_rate_limit_redis.c    batches of checks to Redis
 *   ngx_http_rate_limit_script.c   the GCRA script those batches run
 *   ngx_http_rate_limit_local.c    the local limiter (failure=local)
 *   ngx_http_rate_limit_headers.c  response headers, variables, metrics
 */


#define NGX_HTTP_RATE_LIMIT_PASSED          1
#define NGX_HTTP_RATE_LIMIT_REJECTED        2
#define NGX_HTTP_RATE_LIMIT_DRY_RUN         3
#define NGX_HTTP_RATE_LIMIT_ERROR           4
#define NGX_HTTP_RATE_LIMIT_ERROR_REJECTED  5
#define NGX_HTTP_RATE_LIMIT_LOCAL_PASSED    6
#define NGX_HTTP_RATE_LIMIT_LOCAL_REJECTED  7
#define NGX_HTTP_RATE_LIMIT_LOCAL_DRY_RUN   8
#define NGX_HTTP_RATE_LIMIT_NSTATUS         9

#define NGX_HTTP_RATE_LIMIT_FAIL_OPEN       0
#define NGX_HTTP_RATE_LIMIT_FAIL_CLOSED     1
#define NGX_HTTP_RATE_LIMIT_FAIL_LOCAL      2

#define NGX_HTTP_RATE_LIMIT_HEADERS_OFF     0
#define NGX_HTTP_RATE_LIMIT_HEADERS_DRAFT   1
#define NGX_HTTP_RATE_LIMIT_HEADERS_LEGACY  2

#define NGX_HTTP_RATE_LIMIT_MAX_LIMITS      16
#define NGX_HTTP_RATE_LIMIT_MAX_KEY         256
#define NGX_HTTP_RATE_LIMIT_BATCH           64
#define NGX_HTTP_RATE_LIMIT_BATCH_MIN       16    /* see _goes() */
#define NGX_HTTP_RATE_LIMIT_SPECS           127   /* one byte each, +128 */
#define NGX_HTTP_RATE_LIMIT_HINTS           1024
#define NGX_HTTP_RATE_LIMIT_SPARE           4     /* batches kept */
#define NGX_HTTP_RATE_LIMIT_TURNS           8     /* see _defer() */
#define NGX_HTTP_RATE_LIMIT_HOLD            10    /* ms, see _hold */


typedef struct {
    ngx_str_t                     name;
    ngx_http_complex_value_t      key;
    ngx_uint_t                    rate;         /* requests per period */
    ngx_uint_t                    period;       /* seconds */
    ngx_uint_t                    burst;
    uint64_t                      interval;     /* microseconds */
    ngx_meshgate_cache_t         *local;
    ngx_uint_t                    index;        /* in the counters */
    ngx_str_t                     policy;       /* "name";q=rate;w=period */
    uint32_t                      hash;         /* CRC32 of the name */
} ngx_http_rate_limit_zone_t;


/* in shared memory: for the metrics module (ngx_meshgate_prometheus.h) */

typedef struct {
    ngx_uint_t                    nzones;
    ngx_atomic_t                  failovers;
    ngx_atomic_t                  redirects;
    ngx_atomic_t                  checks[1];    /* nzones * NSTATUS */
} ngx_http_rate_limit_counters_t;


typedef struct {
    ngx_http_rate_limit_zone_t   *zone;
    ngx_uint_t                    cost;
} ngx_http_rate_limit_limit_t;


typedef struct {
    ngx_meshgate_redis_t         *redis;
    ngx_meshgate_redis_script_t  *script;
    ngx_str_t                     prefix;
    ngx_uint_t                    cluster;      /* Redis Cluster */
    ngx_array_t                   zones;        /* of zone pointers */
    ngx_shm_zone_t               *counters_zone;
    ngx_http_rate_limit_counters_t  *counters;
    ngx_uint_t                    failovers;    /* seen in this worker */
    ngx_uint_t                    redirects;
} ngx_http_rate_limit_main_conf_t;


typedef struct {
    ngx_array_t                  *limits;
    ngx_uint_t                    status_code;
    ngx_flag_t                    dry_run;
    ngx_uint_t                    log_level;
    ngx_uint_t                    failure_mode;
    ngx_uint_t                    headers;
} ngx_http_rate_limit_loc_conf_t;


typedef struct {
    ngx_http_rate_limit_limit_t  *limit;
    ngx_str_t                     key;
    ngx_uint_t                    allowed;
    ngx_uint_t                    remaining;
    ngx_msec_t                    retry_after;
    ngx_msec_t                    reset;
    uint64_t                      tat;          /* local: TAT after, us */
} ngx_http_rate_limit_result_t;


typedef struct ngx_http_rate_limit_batch_s  ngx_http_rate_limit_batch_t;


typedef struct {
    ngx_http_request_t           *request;

    /* the batches with a part of the request's limits (one per node) */
    ngx_http_rate_limit_batch_t  *batches[NGX_HTTP_RATE_LIMIT_MAX_LIMITS];
    u_char                        slots[NGX_HTTP_RATE_LIMIT_MAX_LIMITS];
    ngx_uint_t                    nbatches;
    ngx_queue_t                   parked;       /* for the slot map */

    const char                  **keys;         /* per limit: Redis key, */
    size_t                       *klens;
    ngx_meshgate_redis_t        **nodes;        /* and its node */
    uint32_t                     *hashes;       /* for hints: subject ^ zone */
    ngx_http_rate_limit_result_t *results;
    ngx_uint_t                    nresults;
    ngx_uint_t                    status;
    ngx_uint_t                    headers;
    ngx_str_t                     node;         /* the Redis that answered */
    ngx_int_t                     rc;
    unsigned                      waiting:1;
    unsigned                      replied:1;
    unsigned                      done:1;
    unsigned                      have_results:1;
    unsigned                      failed:1;
    unsigned                      is_parked:1;
} ngx_http_rate_limit_ctx_t;


/*
 * Checks for one Redis node: per entry, a request and the limits of it
 * whose keys live on that node (all of them but with Redis Cluster).
 */

struct ngx_http_rate_limit_batch_s {
    ngx_queue_t                       queue;   /* unsent or in flight */
    ngx_http_rate_limit_main_conf_t  *mcf;
    ngx_meshgate_redis_t             *node;
    ngx_uint_t                        n;
    ngx_uint_t                        nkeys;
    ngx_uint_t                        nspecs;
    ngx_http_rate_limit_ctx_t        *ctx[NGX_HTTP_RATE_LIMIT_BATCH];
    ngx_uint_t                        nres[NGX_HTTP_RATE_LIMIT_BATCH];
    u_char                            idx[NGX_HTTP_RATE_LIMIT_BATCH]
                                         [NGX_HTTP_RATE_LIMIT_MAX_LIMITS];
    u_char                            spec[NGX_HTTP_RATE_LIMIT_BATCH]
                                          [NGX_HTTP_RATE_LIMIT_MAX_LIMITS];
    uint64_t                          specs[NGX_HTTP_RATE_LIMIT_SPECS][2];
};


extern ngx_module_t  ngx_http_rate_limit_module;


#pragma GCC visibility push(hidden)

/* ngx_http_rate_limit_module.c: the phase handler and the decision */

ngx_int_t ngx_http_rate_limit_decide(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, ngx_uint_t local);
ngx_int_t ngx_http_rate_limit_failure(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
ngx_http_rate_limit_ctx_t *ngx_http_rate_limit_get_ctx(
    ngx_http_request_t *r);

/* ngx_http_rate_limit_script.c: the GCRA script */

ngx_meshgate_redis_script_t *ngx_http_rate_limit_script(ngx_conf_t *cf);

/* ngx_http_rate_limit_redis.c: the batches */

extern ngx_uint_t  ngx_http_rate_limit_work;

ngx_int_t ngx_http_rate_limit_send(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
void ngx_http_rate_limit_ready(void *data, ngx_uint_t ok);
void ngx_http_rate_limit_detach(ngx_http_rate_limit_ctx_t *ctx);
void ngx_http_rate_limit_batch_done(ngx_http_rate_limit_batch_t *batch,
    ngx_int_t status, redisReply *reply);
void ngx_http_rate_limit_result(ngx_http_rate_limit_result_t *res,
    uint64_t used, ngx_uint_t charged);
void ngx_http_rate_limit_exit_batches(void);

/* ngx_http_rate_limit_local.c: the local limiter */

void ngx_http_rate_limit_local(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
ngx_int_t ngx_http_rate_limit_init_counters_zone(
    ngx_shm_zone_t *shm_zone, void *data);

/* ngx_http_rate_limit_headers.c: headers, variables, metrics */

void ngx_http_rate_limit_init_header_filter(void);
ngx_int_t ngx_http_rate_limit_add_variables(ngx_conf_t *cf);
void ngx_http_rate_limit_count(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);

#pragma GCC visibility pop


#endif /* _NGX_HTTP_RATE_LIMIT_H_INCLUDED_ */
