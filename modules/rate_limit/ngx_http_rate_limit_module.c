
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_sha1.h>
#include "ngx_meshgate_redis.h"
#include "ngx_meshgate_cache.h"
#include "ngx_meshgate_http.h"
#include "ngx_meshgate_prometheus.h"


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
#define NGX_HTTP_RATE_LIMIT_SPECS           255   /* one byte each */


typedef struct {
    ngx_str_t                     name;
    ngx_http_complex_value_t      key;
    ngx_uint_t                    rate;         /* requests per period */
    ngx_uint_t                    period;       /* seconds */
    ngx_uint_t                    burst;
    uint64_t                      interval;     /* microseconds */
    ngx_meshgate_cache_t         *local;
    ngx_uint_t                    index;        /* in the counters */
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
    ngx_array_t                   zones;        /* of zone pointers */
    ngx_shm_zone_t               *lock_zone;
    ngx_slab_pool_t              *lock_pool;    /* its mutex: local checks */
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


static ngx_int_t ngx_http_rate_limit_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_rate_limit_start(ngx_http_request_t *r,
    ngx_http_rate_limit_loc_conf_t *lcf);
static ngx_int_t ngx_http_rate_limit_hash_key(ngx_http_request_t *r,
    ngx_str_t *key);
static ngx_int_t ngx_http_rate_limit_send(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
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
static void ngx_http_rate_limit_ready(void *data, ngx_uint_t ok);
static void ngx_http_rate_limit_post_flush(void);
static void ngx_http_rate_limit_flush(ngx_event_t *ev);
static ngx_int_t ngx_http_rate_limit_batch_send(
    ngx_http_rate_limit_batch_t *batch, ngx_log_t *log);
static void ngx_http_rate_limit_batch_reply(void *data, ngx_int_t status,
    redisReply *reply);
static void ngx_http_rate_limit_batch_done(ngx_http_rate_limit_batch_t *batch,
    ngx_int_t status, redisReply *reply);
static ngx_int_t ngx_http_rate_limit_check_reply(redisReply *reply,
    size_t total);
static void ngx_http_rate_limit_result(ngx_http_rate_limit_result_t *res,
    uint64_t used, ngx_uint_t charged);
static void ngx_http_rate_limit_set_results(ngx_http_rate_limit_ctx_t *ctx,
    u_char *idx, ngx_uint_t n, redisReply **e);
static ngx_int_t ngx_http_rate_limit_decide(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, ngx_uint_t local);
static void ngx_http_rate_limit_log_key(ngx_pool_t *pool, ngx_str_t *key,
    ngx_str_t *out);
static ngx_int_t ngx_http_rate_limit_failure(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
static void ngx_http_rate_limit_local(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
static ngx_http_rate_limit_ctx_t *ngx_http_rate_limit_get_ctx(
    ngx_http_request_t *r);
static void ngx_http_rate_limit_cleanup(void *data);
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
static void *ngx_http_rate_limit_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_rate_limit_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_rate_limit_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_rate_limit_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_rate_limit_init_lock_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static char *ngx_http_rate_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_rate_limit_zone_name(ngx_conf_t *cf,
    ngx_http_rate_limit_main_conf_t *mcf, ngx_str_t *name);
static char *ngx_http_rate_limit_zone_param(ngx_conf_t *cf,
    ngx_http_rate_limit_zone_t *zone, ngx_str_t *value, ssize_t *size);
static char *ngx_http_rate_limit_parse_rate(ngx_conf_t *cf,
    ngx_http_rate_limit_zone_t *zone, ngx_str_t *value);
static char *ngx_http_rate_limit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_rate_limit_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_rate_limit_init(ngx_conf_t *cf);
static void ngx_http_rate_limit_exit_process(ngx_cycle_t *cycle);
static void ngx_http_rate_limit_free_batches(ngx_queue_t *batches);
static void ngx_http_rate_limit_count(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
static ngx_int_t ngx_http_rate_limit_node_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
ngx_chain_t *ngx_http_rate_limit_prometheus(ngx_pool_t *pool,
    ngx_log_t *log);


static ngx_conf_enum_t  ngx_http_rate_limit_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_rate_limit_failure_modes[] = {
    { ngx_string("open"), NGX_HTTP_RATE_LIMIT_FAIL_OPEN },
    { ngx_string("closed"), NGX_HTTP_RATE_LIMIT_FAIL_CLOSED },
    { ngx_string("local"), NGX_HTTP_RATE_LIMIT_FAIL_LOCAL },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_rate_limit_header_modes[] = {
    { ngx_string("off"), NGX_HTTP_RATE_LIMIT_HEADERS_OFF },
    { ngx_string("draft"), NGX_HTTP_RATE_LIMIT_HEADERS_DRAFT },
    { ngx_string("legacy"), NGX_HTTP_RATE_LIMIT_HEADERS_LEGACY },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_http_rate_limit_status_bounds = {
    ngx_conf_check_num_bounds, 400, 599
};


static ngx_command_t  ngx_http_rate_limit_commands[] = {

    { ngx_string("rate_limit_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_rate_limit_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rate_limit_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_rate_limit_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rate_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_rate_limit,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rate_limit_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rate_limit_loc_conf_t, status_code),
      &ngx_http_rate_limit_status_bounds },

    { ngx_string("rate_limit_dry_run"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rate_limit_loc_conf_t, dry_run),
      NULL },

    { ngx_string("rate_limit_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rate_limit_loc_conf_t, log_level),
      &ngx_http_rate_limit_log_levels },

    { ngx_string("rate_limit_failure_mode"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rate_limit_loc_conf_t, failure_mode),
      &ngx_http_rate_limit_failure_modes },

    { ngx_string("rate_limit_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rate_limit_loc_conf_t, headers),
      &ngx_http_rate_limit_header_modes },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_rate_limit_module_ctx = {
    ngx_http_rate_limit_add_variables,     /* preconfiguration */
    ngx_http_rate_limit_init,              /* postconfiguration */

    ngx_http_rate_limit_create_main_conf,  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_rate_limit_create_loc_conf,   /* create location configuration */
    ngx_http_rate_limit_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_rate_limit_module = {
    NGX_MODULE_V1,
    &ngx_http_rate_limit_module_ctx,       /* module context */
    ngx_http_rate_limit_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_rate_limit_exit_process,      /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


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


/*
 * GCRA on Redis's clock, for a batch of requests, each atomically over
 * all its limits.  KEYS: one per limit of each request, in order.  ARGV:
 * the number of specs, the specs (per spec: the capacity a request takes,
 * interval * cost, and the burst capacity, (burst + 1) * interval, both in
 * microseconds), then per request a string whose bytes are the numbers of
 * the specs of its limits.  Either every limit of a request admits it and
 * all are charged, or none is.  Returns one integer per limit: the
 * capacity used (TAT - now, in microseconds) after the request when it
 * was charged, or -1 - the capacity used before it when it was not; the
 * gateway works out the rest (ngx_http_rate_limit_result()).  A key of
 * another type is taken as empty and overwritten, so that it cannot fail
 * the other requests of its batch.  TATs (about 2^51 us) are exact in
 * Lua's doubles, and Redis writes such numbers as integers.  Every key is
 * read before any is written: an error then (with Redis Cluster, a key
 * that is not on this node) fails the batch with nothing charged.  With
 * Redis Cluster, ARGV starts with "c", the number of keys and the keys
 * (see ngx_http_rate_limit_batch_send()).
 *
 * A key expires at the end of the second after the one its TAT falls in:
 * never while it counts, and its expiry changes only when its TAT enters
 * another second, so most writes keep it (KEEPTTL; setting it on every
 * write was a fifth of the script's time).  Redis 6.2 or later.
 */

static ngx_str_t  ngx_http_rate_limit_lua = ngx_string(
    "local K, A = KEYS, ARGV\n"
    "if A[1] == 'c' then\n"
    "  local n = tonumber(A[2])\n"
    "  K, A = {}, {}\n"
    "  for i = 1, n do K[i] = ARGV[2 + i] end\n"
    "  for i = n + 3, #ARGV do A[#A + 1] = ARGV[i] end\n"
    "end\n"
    "local val = {}\n"
    "for i = 1, #K do\n"
    "  if val[K[i]] == nil then\n"
    "    local v = redis.pcall('GET', K[i])\n"
    "    if type(v) == 'table' and v.err then\n"
    "      if string.sub(v.err, 1, 9) ~= 'WRONGTYPE' then\n"
    "        return redis.error_reply(v.err)\n"
    "      end\n"
    "      v = nil\n"
    "    end\n"
    "    val[K[i]] = tonumber(v) or 0\n"
    "  end\n"
    "end\n"
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000000 + t[2]\n"
    "local ns = tonumber(A[1])\n"
    "local inc, cap = {}, {}\n"
    "for s = 1, ns do\n"
    "  inc[s] = tonumber(A[2 * s])\n"
    "  cap[s] = tonumber(A[2 * s + 1])\n"
    "end\n"
    "local res, k = {}, 0\n"
    "local used, new, sec = {}, {}, {}\n"
    "for a = 2 * ns + 2, #A do\n"
    "  local spec, ok = A[a], true\n"
    "  local n = #spec\n"
    "  for i = 1, n do\n"
    "    local s = string.byte(spec, i)\n"
    "    local v = val[K[k + i]]\n"
    "    sec[i] = math.ceil(v / 1000000)\n"
    "    if v < now then v = now end\n"
    "    used[i] = v - now\n"
    "    new[i] = v + inc[s]\n"
    "    if new[i] - now > cap[s] then ok = false end\n"
    "  end\n"
    "  for i = 1, n do\n"
    "    if ok then\n"
    "      res[k + i] = new[i] - now\n"
    "      local s = math.ceil(new[i] / 1000000)\n"
    "      if s == sec[i] then\n"
    "        redis.call('SET', K[k + i], new[i], 'KEEPTTL')\n"
    "      else\n"
    "        redis.call('SET', K[k + i], new[i], 'PXAT', (s + 1) * 1000)\n"
    "      end\n"
    "      val[K[k + i]] = new[i]\n"
    "    else\n"
    "      res[k + i] = -1 - used[i]\n"
    "    end\n"
    "  end\n"
    "  k = k + n\n"
    "end\n"
    "return res\n");


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

/* per worker: batches being filled, and batches waiting for Redis */
static ngx_queue_t  ngx_http_rate_limit_unsent;
static ngx_queue_t  ngx_http_rate_limit_inflight;
static ngx_uint_t   ngx_http_rate_limit_batches_init;
static ngx_event_t  ngx_http_rate_limit_flush_event;

/* per worker: checks waiting for Redis Cluster's slot map */
static ngx_queue_t  ngx_http_rate_limit_parked;


static ngx_int_t
ngx_http_rate_limit_handler(ngx_http_request_t *r)
{
    ngx_http_rate_limit_ctx_t       *ctx;
    ngx_http_rate_limit_loc_conf_t  *lcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_rate_limit_module);

    if (lcf->limits == NULL) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_rate_limit_get_ctx(r);

    if (ctx == NULL) {
        return ngx_http_rate_limit_start(r, lcf);
    }

    if (ctx->waiting) {
        return NGX_AGAIN;
    }

    if (ctx->done) {
        return NGX_DECLINED;
    }

    /* the Redis reply has come: ngx_http_rate_limit_batch_done() ran */

    ctx->done = 1;
    ngx_http_rate_limit_count(r, ctx);

    return ctx->rc;
}


static ngx_int_t
ngx_http_rate_limit_start(ngx_http_request_t *r,
    ngx_http_rate_limit_loc_conf_t *lcf)
{
    ngx_str_t                      key;
    ngx_uint_t                     i;
    ngx_pool_cleanup_t            *cln;
    ngx_http_rate_limit_ctx_t     *ctx;
    ngx_http_rate_limit_limit_t   *limits;
    ngx_http_rate_limit_result_t  *res;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_rate_limit_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->results = ngx_pcalloc(r->pool, lcf->limits->nelts
                                        * sizeof(ngx_http_rate_limit_result_t));
    if (ctx->results == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* found again after an internal redirect, which clears r->ctx */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_rate_limit_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ctx->headers = lcf->headers;
    ngx_http_set_ctx(r, ctx, ngx_http_rate_limit_module);

    limits = lcf->limits->elts;

    for (i = 0; i < lcf->limits->nelts; i++) {

        if (ngx_http_complex_value(r, &limits[i].zone->key, &key) != NGX_OK) {
            ctx->done = 1;
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (key.len == 0) {
            continue;
        }

        if (key.len > NGX_HTTP_RATE_LIMIT_MAX_KEY
            && ngx_http_rate_limit_hash_key(r, &key) != NGX_OK)
        {
            ctx->done = 1;
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        res = &ctx->results[ctx->nresults++];
        res->limit = &limits[i];
        res->key = key;
    }

    if (ctx->nresults == 0) {
        ctx->done = 1;
        return NGX_DECLINED;
    }

    return ngx_http_rate_limit_send(r, ctx);
}


/*
 * A key longer than NGX_HTTP_RATE_LIMIT_MAX_KEY bytes is limited under
 * "sha1:" and its SHA-1 in hex, so that a huge key neither escapes the
 * limit nor bloats Redis.
 */

static ngx_int_t
ngx_http_rate_limit_hash_key(ngx_http_request_t *r, ngx_str_t *key)
{
    u_char      hash[20], *p;
    ngx_sha1_t  sha1;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, key->data, key->len);
    ngx_sha1_final(hash, &sha1);

    p = ngx_pnalloc(r->pool, sizeof("sha1:") - 1 + 40);
    if (p == NULL) {
        return NGX_ERROR;
    }

    key->data = p;
    p = ngx_cpymem(p, "sha1:", sizeof("sha1:") - 1);
    p = ngx_hex_dump(p, hash, 20);
    key->len = p - key->data;

    return NGX_OK;
}


/*
 * The checks of requests go to Redis together, as one EVALSHA (a batch):
 * the script handles them one after the other, each atomically.  This
 * keeps Redis's per-command cost off the hot path under load.  When a
 * batch goes: ngx_http_rate_limit_post_flush().
 */

static ngx_int_t
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

    if (!ngx_meshgate_redis_ready(mcf->redis)) {

        /* Redis Cluster's slot map is being asked for: wait for it */

        if (!ngx_http_rate_limit_batches_init) {
            ngx_queue_init(&ngx_http_rate_limit_unsent);
            ngx_queue_init(&ngx_http_rate_limit_inflight);
            ngx_queue_init(&ngx_http_rate_limit_parked);
            ngx_http_rate_limit_batches_init = 1;
        }

        ngx_queue_insert_tail(&ngx_http_rate_limit_parked, &ctx->parked);
        ctx->is_parked = 1;
        ctx->waiting = 1;

        return NGX_AGAIN;
    }

    if (ngx_http_rate_limit_keys(r, ctx, mcf) != NGX_OK
        || ngx_http_rate_limit_batch_add(ctx, mcf, r->connection->log)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_rate_limit_post_flush();

    ctx->waiting = 1;

    return NGX_AGAIN;
}


/* the slot map is known, or not to be had: the parked checks go on */

static void
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

        ctx->waiting = 0;
        ctx->rc = ngx_http_rate_limit_failure(r, ctx);

        ngx_http_core_run_phases(r);
        ngx_http_run_posted_requests(c);
    }
}


/* per limit: the Redis key */

static ngx_int_t
ngx_http_rate_limit_keys(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, ngx_http_rate_limit_main_conf_t *mcf)
{
    u_char                        *p;
    ngx_uint_t                     i, n;
    ngx_http_rate_limit_zone_t    *zone;
    ngx_http_rate_limit_result_t  *res;

    n = ctx->nresults;

    ctx->keys = ngx_palloc(r->pool, n * (sizeof(char *) + sizeof(size_t)));
    if (ctx->keys == NULL) {
        return NGX_ERROR;
    }

    ctx->klens = (size_t *) (ctx->keys + n);

    ctx->nodes = ngx_palloc(r->pool, n * sizeof(ngx_meshgate_redis_t *));
    if (ctx->nodes == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        res = &ctx->results[i];
        zone = res->limit->zone;

        p = ngx_pnalloc(r->pool, mcf->prefix.len + zone->name.len + 1
                                 + res->key.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ctx->keys[i] = (const char *) p;
        p = ngx_cpymem(p, mcf->prefix.data, mcf->prefix.len);
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

    if (!ngx_http_rate_limit_batches_init) {
        ngx_queue_init(&ngx_http_rate_limit_unsent);
        ngx_queue_init(&ngx_http_rate_limit_inflight);
        ngx_queue_init(&ngx_http_rate_limit_parked);
        ngx_http_rate_limit_batches_init = 1;
    }

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
        batch = ngx_alloc(sizeof(ngx_http_rate_limit_batch_t), log);
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
    ngx_queue_t                  *q;
    ngx_http_rate_limit_batch_t  *batch;

    while (!ngx_queue_empty(&ngx_http_rate_limit_unsent)) {
        q = ngx_queue_head(&ngx_http_rate_limit_unsent);
        ngx_queue_remove(q);
        batch = ngx_queue_data(q, ngx_http_rate_limit_batch_t, queue);

        switch (ngx_http_rate_limit_batch_send(batch, ev->log)) {

        case NGX_OK:
            ngx_queue_insert_tail(&ngx_http_rate_limit_inflight,
                                  &batch->queue);
            break;

        case NGX_DONE:
            /* every request of the batch is gone: nothing to ask */
            ngx_free(batch);
            break;

        default:
            ngx_http_rate_limit_batch_done(batch, NGX_MESHGATE_REDIS_ERROR,
                                           NULL);
        }
    }
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

    ngx_http_rate_limit_batch_done(batch, status, reply);

    if (!ngx_queue_empty(&ngx_http_rate_limit_unsent)) {
        ngx_http_rate_limit_post_flush();
    }
}


/* hands every request of the batch its results */

static void
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

    ngx_free(batch);
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
    }
}


/*
 * A limit's result from the capacity it has used (TAT - now, in
 * microseconds): after the request if the request was charged, before it
 * if not.  A limit that was not charged rejects the request only if the
 * request's cost would overflow it (another limit may be the one that
 * rejected).
 */

static void
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


/* sets the status from the results; returns what the phase returns */

static ngx_int_t
ngx_http_rate_limit_decide(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, ngx_uint_t local)
{
    ngx_str_t                        key;
    ngx_uint_t                       i;
    ngx_http_rate_limit_result_t    *res, *rej;
    ngx_http_rate_limit_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_rate_limit_module);

    ctx->have_results = 1;
    rej = NULL;

    for (i = 0; i < ctx->nresults; i++) {
        res = &ctx->results[i];

        if (!res->allowed
            && (rej == NULL || res->retry_after > rej->retry_after))
        {
            rej = res;
        }
    }

    if (rej == NULL) {
        ctx->status = local ? NGX_HTTP_RATE_LIMIT_LOCAL_PASSED
                            : NGX_HTTP_RATE_LIMIT_PASSED;
        return NGX_DECLINED;
    }

    if (r->connection->log->log_level >= lcf->log_level) {
        ngx_http_rate_limit_log_key(r->pool, &rej->key, &key);

        ngx_log_error(lcf->log_level, r->connection->log, 0,
                      "limiting requests%s%s by zone \"%V\", key \"%V\", "
                      "retry after %M ms",
                      lcf->dry_run ? ", dry run," : "",
                      local ? " (local)" : "",
                      &rej->limit->zone->name, &key, rej->retry_after);
    }

    if (lcf->dry_run) {
        ctx->status = local ? NGX_HTTP_RATE_LIMIT_LOCAL_DRY_RUN
                            : NGX_HTTP_RATE_LIMIT_DRY_RUN;
        return NGX_DECLINED;
    }

    ctx->status = local ? NGX_HTTP_RATE_LIMIT_LOCAL_REJECTED
                        : NGX_HTTP_RATE_LIMIT_REJECTED;

    return lcf->status_code;
}


/*
 * A key as the log shows it: escaped, since it may be binary
 * ($binary_remote_addr) or hold a decoded claim with control characters.
 */

static void
ngx_http_rate_limit_log_key(ngx_pool_t *pool, ngx_str_t *key,
    ngx_str_t *out)
{
    ngx_uint_t  n;

    n = ngx_escape_uri(NULL, key->data, key->len, NGX_ESCAPE_ARGS);

    if (n == 0) {
        *out = *key;
        return;
    }

    out->data = ngx_pnalloc(pool, key->len + 2 * n);
    if (out->data == NULL) {
        ngx_str_set(out, "-");
        return;
    }

    out->len = (u_char *) ngx_escape_uri(out->data, key->data, key->len,
                                         NGX_ESCAPE_ARGS)
               - out->data;
}


static ngx_int_t
ngx_http_rate_limit_failure(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    ngx_http_rate_limit_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_rate_limit_module);

    switch (lcf->failure_mode) {

    case NGX_HTTP_RATE_LIMIT_FAIL_LOCAL:
        ngx_http_rate_limit_local(r, ctx);
        return ngx_http_rate_limit_decide(r, ctx, 1);

    case NGX_HTTP_RATE_LIMIT_FAIL_CLOSED:
        if (!lcf->dry_run) {
            ctx->status = NGX_HTTP_RATE_LIMIT_ERROR_REJECTED;
            return NGX_HTTP_SERVICE_UNAVAILABLE;
        }

        /* fall through */

    default: /* NGX_HTTP_RATE_LIMIT_FAIL_OPEN */
        ctx->status = NGX_HTTP_RATE_LIMIT_ERROR;
        return NGX_DECLINED;
    }
}


/*
 * The same GCRA on this node only, in the zone's shared memory, on this
 * machine's clock (microseconds): the fallback while Redis is unreachable.
 * A mutex in shared memory makes each check atomic across workers.
 */

static void
ngx_http_rate_limit_local(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    uint64_t                          now, tat, used;
    ngx_str_t                         value;
    struct timeval                    tv;
    ngx_uint_t                        i, ok;
    ngx_http_rate_limit_zone_t       *zone;
    ngx_http_rate_limit_result_t     *res;
    ngx_http_rate_limit_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_rate_limit_module);

    ngx_shmtx_lock(&mcf->lock_pool->mutex);

    ngx_gettimeofday(&tv);
    now = (uint64_t) tv.tv_sec * 1000000 + tv.tv_usec;
    ok = 1;

    for (i = 0; i < ctx->nresults; i++) {
        res = &ctx->results[i];
        zone = res->limit->zone;

        tat = now;

        if (ngx_meshgate_cache_get(zone->local, &res->key, r->pool, &value,
                                   NULL)
            == NGX_OK
            && value.len == sizeof(uint64_t))
        {
            ngx_memcpy(&tat, value.data, sizeof(uint64_t));

            if (tat < now) {
                tat = now;
            }
        }

        res->tat = tat + zone->interval * res->limit->cost;

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

        if (!ok) {
            continue;
        }

        value.data = (u_char *) &res->tat;
        value.len = sizeof(uint64_t);

        (void) ngx_meshgate_cache_set(zone->local, &res->key, &value,
                                      res->tat / 1000 + 1);
    }

    ngx_shmtx_unlock(&mcf->lock_pool->mutex);
}


static ngx_http_rate_limit_ctx_t *
ngx_http_rate_limit_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_rate_limit_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_rate_limit_module);

    if (ctx) {
        return ctx;
    }

    for (cln = r->main->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_rate_limit_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r->main, ctx, ngx_http_rate_limit_module);
            return ctx;
        }
    }

    return NULL;
}


static void
ngx_http_rate_limit_cleanup(void *data)
{
    ngx_http_rate_limit_ctx_t  *ctx = data;

    ngx_uint_t  i;

    /* also a marker: the context is found through it after a redirect */

    for (i = 0; i < ctx->nbatches; i++) {
        ctx->batches[i]->ctx[ctx->slots[i]] = NULL;
    }

    ctx->nbatches = 0;

    if (ctx->is_parked) {
        ngx_queue_remove(&ctx->parked);
        ctx->is_parked = 0;
    }
}


static ngx_int_t
ngx_http_rate_limit_header_filter(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_uint_t                     i;
    ngx_msec_t                     retry;
    u_char                         buf[NGX_INT_T_LEN], *p;
    ngx_http_rate_limit_ctx_t     *ctx;
    ngx_http_rate_limit_result_t  *res;

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
        len += ctx->results[i].limit->zone->name.len
               + sizeof("\"\";q=;w=, ") + 2 * NGX_INT_T_LEN;
    }

    policy = ngx_pnalloc(r->pool, 2 * len);
    if (policy == NULL) {
        return NGX_ERROR;
    }

    limit = policy + len;
    p = policy;
    q = limit;

    for (i = 0; i < ctx->nresults; i++) {
        res = &ctx->results[i];
        zone = res->limit->zone;

        if (i) {
            p = ngx_cpymem(p, ", ", 2);
            q = ngx_cpymem(q, ", ", 2);
        }

        p = ngx_sprintf(p, "\"%V\";q=%ui;w=%ui", &zone->name, zone->rate,
                        zone->period);
        q = ngx_sprintf(q, "\"%V\";r=%ui;t=%uL", &zone->name, res->remaining,
                        ngx_http_rate_limit_next_unit(res));
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


static void *
ngx_http_rate_limit_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_rate_limit_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_rate_limit_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->redis = NULL;
     *     mcf->script = NULL;
     *     mcf->prefix = { 0, NULL };
     */

    if (ngx_array_init(&mcf->zones, cf->pool, 4,
                       sizeof(ngx_http_rate_limit_zone_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return mcf;
}


static void *
ngx_http_rate_limit_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_rate_limit_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_rate_limit_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     lcf->limits = NULL;
     */

    lcf->status_code = NGX_CONF_UNSET_UINT;
    lcf->dry_run = NGX_CONF_UNSET;
    lcf->log_level = NGX_CONF_UNSET_UINT;
    lcf->failure_mode = NGX_CONF_UNSET_UINT;
    lcf->headers = NGX_CONF_UNSET_UINT;

    return lcf;
}


static char *
ngx_http_rate_limit_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_rate_limit_loc_conf_t  *prev = parent;
    ngx_http_rate_limit_loc_conf_t  *conf = child;

    if (conf->limits == NULL) {
        conf->limits = prev->limits;
    }

    ngx_conf_merge_uint_value(conf->status_code, prev->status_code,
                              NGX_HTTP_TOO_MANY_REQUESTS);
    ngx_conf_merge_value(conf->dry_run, prev->dry_run, 0);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_ERR);
    ngx_conf_merge_uint_value(conf->failure_mode, prev->failure_mode,
                              NGX_HTTP_RATE_LIMIT_FAIL_LOCAL);
    ngx_conf_merge_uint_value(conf->headers, prev->headers,
                              NGX_HTTP_RATE_LIMIT_HEADERS_DRAFT);

    return NGX_CONF_OK;
}


static char *
ngx_http_rate_limit_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_main_conf_t  *mcf = conf;

    ngx_int_t   rc;
    ngx_str_t  *value;
    ngx_uint_t  i;

    static ngx_str_t  lock_name = ngx_string("rate_limit_local_lock");

    if (mcf->redis) {
        return "is duplicate";
    }

    mcf->redis = ngx_meshgate_redis_create(cf);
    if (mcf->redis == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&mcf->prefix, "rl:");

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        rc = ngx_meshgate_redis_parse(cf, mcf->redis, &value[i]);

        if (rc == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        if (rc == NGX_OK) {
            continue;
        }

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            mcf->prefix.data = value[i].data + 7;
            mcf->prefix.len = value[i].len - 7;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    /* one integer per limit of a batch, or an error */

    ngx_meshgate_redis_limit_replies(mcf->redis,
                                     1 + NGX_HTTP_RATE_LIMIT_BATCH
                                         * NGX_HTTP_RATE_LIMIT_MAX_LIMITS,
                                     1, 0);

    if (ngx_meshgate_redis_init(cf, mcf->redis) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_meshgate_redis_on_ready(mcf->redis, ngx_http_rate_limit_ready, mcf);

    mcf->script = ngx_meshgate_redis_script(cf, &ngx_http_rate_limit_lua);
    if (mcf->script == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf->lock_zone = ngx_shared_memory_add(cf, &lock_name, 8 * ngx_pagesize,
                                           &ngx_http_rate_limit_module);
    if (mcf->lock_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf->lock_zone->init = ngx_http_rate_limit_init_lock_zone;
    mcf->lock_zone->data = mcf;

    return NGX_CONF_OK;
}


/*
 * The mutex of the local limiter is the slab pool mutex of its own zone:
 * the master process releases it if a worker dies holding it.
 */

static ngx_int_t
ngx_http_rate_limit_init_lock_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_rate_limit_main_conf_t  *mcf;

    size_t                            size;
    ngx_slab_pool_t                  *shpool;
    ngx_http_rate_limit_counters_t   *counters;

    mcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    mcf->lock_pool = shpool;

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


/* a decision, counted for the metrics by zone and status */

static void
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


static char *
ngx_http_rate_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_main_conf_t  *mcf = conf;

    u_char                       *p;
    ssize_t                       size;
    ngx_str_t                    *value, name;
    ngx_uint_t                    i;
    ngx_http_rate_limit_zone_t   *zone, **zp;

    value = cf->args->elts;

    if (mcf->redis == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"rate_limit_redis\" must be set before "
                           "\"rate_limit_zone\"");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_rate_limit_zone_name(cf, mcf, &value[1]) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_rate_limit_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->name = value[1];
    size = 1024 * 1024;

    for (i = 2; i < cf->args->nelts; i++) {
        if (ngx_http_rate_limit_zone_param(cf, zone, &value[i], &size)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (zone->key.value.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "rate_limit_zone \"%V\" needs key=", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (zone->rate == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "rate_limit_zone \"%V\" needs rate=", &value[1]);
        return NGX_CONF_ERROR;
    }

    name.len = sizeof("rate_limit_") - 1 + zone->name.len;
    name.data = ngx_pnalloc(cf->pool, name.len);
    if (name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(name.data, "rate_limit_", sizeof("rate_limit_") - 1);
    ngx_memcpy(p, zone->name.data, zone->name.len);

    zone->local = ngx_meshgate_cache_add(cf, &name, size,
                                         &ngx_http_rate_limit_module);
    if (zone->local == NULL) {
        return NGX_CONF_ERROR;
    }

    zp = ngx_array_push(&mcf->zones);
    if (zp == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->index = mcf->zones.nelts - 1;
    *zp = zone;

    return NGX_CONF_OK;
}


/* a new zone's name: unique, letters, digits, "_", "-" and "." */

static ngx_int_t
ngx_http_rate_limit_zone_name(ngx_conf_t *cf,
    ngx_http_rate_limit_main_conf_t *mcf, ngx_str_t *name)
{
    u_char                       *p;
    ngx_uint_t                    i;
    ngx_http_rate_limit_zone_t  **zp;

    if (name->len == 0 || name->len > 64) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid rate_limit_zone name \"%V\"", name);
        return NGX_ERROR;
    }

    zp = mcf->zones.elts;

    for (i = 0; i < mcf->zones.nelts; i++) {
        if (zp[i]->name.len == name->len
            && ngx_strncmp(zp[i]->name.data, name->data, name->len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate rate_limit_zone \"%V\"", name);
            return NGX_ERROR;
        }
    }

    for (p = name->data; p < name->data + name->len; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'
              || *p == '.'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid rate_limit_zone name \"%V\": use "
                               "letters, digits, \"_\", \"-\" and \".\"",
                               name);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* one "key=", "rate=", "burst=" or "local_zone=" parameter */

static char *
ngx_http_rate_limit_zone_param(ngx_conf_t *cf,
    ngx_http_rate_limit_zone_t *zone, ngx_str_t *value, ssize_t *size)
{
    ngx_int_t                          burst;
    ngx_str_t                          s;
    ngx_http_compile_complex_value_t   ccv;

    if (ngx_strncmp(value->data, "key=", 4) == 0) {
        s.data = value->data + 4;
        s.len = value->len - 4;

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &s;
        ccv.complex_value = &zone->key;

        if (s.len == 0 || ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid key \"%V\"", value);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value->data, "rate=", 5) == 0) {
        s.data = value->data + 5;
        s.len = value->len - 5;

        return ngx_http_rate_limit_parse_rate(cf, zone, &s);
    }

    if (ngx_strncmp(value->data, "burst=", 6) == 0) {
        burst = ngx_atoi(value->data + 6, value->len - 6);

        if (burst == NGX_ERROR || burst > 1000000) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid burst \"%V\"", value);
            return NGX_CONF_ERROR;
        }

        zone->burst = burst;

        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value->data, "local_zone=", 11) == 0) {
        s.data = value->data + 11;
        s.len = value->len - 11;
        *size = ngx_parse_size(&s);

        if (*size == NGX_ERROR || *size < (ssize_t) (8 * ngx_pagesize)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid local_zone size \"%V\"", value);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", value);

    return NGX_CONF_ERROR;
}


static char *
ngx_http_rate_limit_parse_rate(ngx_conf_t *cf,
    ngx_http_rate_limit_zone_t *zone, ngx_str_t *value)
{
    size_t     len;
    ngx_int_t  rate;

    len = value->len;

    if (len < 4 || value->data[len - 3] != 'r' || value->data[len - 2] != '/')
    {
        goto invalid;
    }

    switch (value->data[len - 1]) {
    case 's':
        zone->period = 1;
        break;
    case 'm':
        zone->period = 60;
        break;
    case 'h':
        zone->period = 3600;
        break;
    case 'd':
        zone->period = 86400;
        break;
    default:
        goto invalid;
    }

    rate = ngx_atoi(value->data, len - 3);

    if (rate == NGX_ERROR || rate == 0 || rate > 1000000) {
        goto invalid;
    }

    zone->rate = rate;
    zone->interval = (uint64_t) zone->period * 1000000 / rate;

    if (zone->interval == 0) {
        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid rate \"%V\", expected N r/s, r/m, r/h or r/d "
                       "with N from 1 to 1000000", value);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_rate_limit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_loc_conf_t  *lcf = conf;

    ngx_int_t                         cost;
    ngx_str_t                        *value;
    ngx_uint_t                        i;
    ngx_http_rate_limit_zone_t       *zone, **zp;
    ngx_http_rate_limit_limit_t      *limit;
    ngx_http_rate_limit_main_conf_t  *mcf;

    value = cf->args->elts;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_rate_limit_module);

    zone = NULL;
    zp = mcf->zones.elts;

    for (i = 0; i < mcf->zones.nelts; i++) {
        if (zp[i]->name.len == value[1].len
            && ngx_strncmp(zp[i]->name.data, value[1].data, value[1].len)
               == 0)
        {
            zone = zp[i];
            break;
        }
    }

    if (zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown rate_limit_zone \"%V\" (zones must be "
                           "declared before use)", &value[1]);
        return NGX_CONF_ERROR;
    }

    cost = 1;

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "cost=", 5) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        cost = ngx_atoi(value[2].data + 5, value[2].len - 5);

        if (cost == NGX_ERROR || cost == 0 || cost > 1000000) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid cost \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    if ((ngx_uint_t) cost > zone->burst + 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cost=%i exceeds what zone \"%V\" can ever admit "
                           "(burst + 1 = %ui)", cost, &zone->name,
                           zone->burst + 1);
        return NGX_CONF_ERROR;
    }

    if (lcf->limits == NULL) {
        lcf->limits = ngx_array_create(cf->pool, 2,
                                       sizeof(ngx_http_rate_limit_limit_t));
        if (lcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    limit = lcf->limits->elts;

    for (i = 0; i < lcf->limits->nelts; i++) {
        if (limit[i].zone == zone) {
            return "is duplicate";
        }
    }

    if (lcf->limits->nelts == NGX_HTTP_RATE_LIMIT_MAX_LIMITS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many rate_limit directives, at most %d",
                           NGX_HTTP_RATE_LIMIT_MAX_LIMITS);
        return NGX_CONF_ERROR;
    }

    limit = ngx_array_push(lcf->limits);
    if (limit == NULL) {
        return NGX_CONF_ERROR;
    }

    limit->zone = zone;
    limit->cost = cost;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_rate_limit_add_variables(ngx_conf_t *cf)
{
    return ngx_meshgate_add_variables(cf, ngx_http_rate_limit_vars);
}


static ngx_int_t
ngx_http_rate_limit_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_rate_limit_handler;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_rate_limit_header_filter;

    return NGX_OK;
}


static void
ngx_http_rate_limit_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_conf_ctx_t              *ctx;
    ngx_http_rate_limit_main_conf_t  *mcf;

    ctx = (ngx_http_conf_ctx_t *) ngx_get_conf(cycle->conf_ctx,
                                               ngx_http_module);
    if (ctx == NULL) {
        return;
    }

    mcf = ctx->main_conf[ngx_http_rate_limit_module.ctx_index];

    if (mcf && mcf->redis) {
        ngx_meshgate_redis_close(mcf->redis);
    }

    if (!ngx_http_rate_limit_batches_init) {
        return;
    }

    if (ngx_http_rate_limit_flush_event.posted) {
        ngx_delete_posted_event(&ngx_http_rate_limit_flush_event);
    }

    ngx_http_rate_limit_free_batches(&ngx_http_rate_limit_unsent);
    ngx_http_rate_limit_free_batches(&ngx_http_rate_limit_inflight);
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
