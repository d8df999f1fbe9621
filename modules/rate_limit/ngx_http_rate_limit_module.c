
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_sha1.h>
#include "ngx_http_rate_limit.h"
#include "ngx_meshgate_http.h"


static ngx_int_t ngx_http_rate_limit_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_rate_limit_start(ngx_http_request_t *r,
    ngx_http_rate_limit_loc_conf_t *lcf);
static ngx_int_t ngx_http_rate_limit_hash_key(ngx_http_request_t *r,
    ngx_str_t *key);
static void ngx_http_rate_limit_log_key(ngx_pool_t *pool, ngx_str_t *key,
    ngx_str_t *out);
static void ngx_http_rate_limit_cleanup(void *data);
static void *ngx_http_rate_limit_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_rate_limit_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_rate_limit_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_rate_limit_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
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
static ngx_int_t ngx_http_rate_limit_init(ngx_conf_t *cf);
static void ngx_http_rate_limit_exit_process(ngx_cycle_t *cycle);


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


/* sets the status from the results; returns what the phase returns */

ngx_int_t
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


ngx_int_t
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


ngx_http_rate_limit_ctx_t *
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

    /* also a marker: the context is found through it after a redirect */

    ngx_http_rate_limit_detach(ctx);
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
     *     mcf->cluster = 0;
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

    static ngx_str_t  counters = ngx_string("rate_limit_counters");

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

    /* Redis Cluster: tagged keys, batches held (ngx_http_rate_limit_goes()) */

    mcf->cluster = ngx_meshgate_redis_is_cluster(mcf->redis);

    mcf->script = ngx_http_rate_limit_script(cf);
    if (mcf->script == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf->counters_zone = ngx_shared_memory_add(cf, &counters,
                                               8 * ngx_pagesize,
                                               &ngx_http_rate_limit_module);
    if (mcf->counters_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf->counters_zone->init = ngx_http_rate_limit_init_counters_zone;
    mcf->counters_zone->data = mcf;

    return NGX_CONF_OK;
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

    /* what does not change per request, made once */

    zone->policy.data = ngx_pnalloc(cf->pool, zone->name.len
                                    + sizeof("\"\";q=;w=") - 1
                                    + 2 * NGX_INT_T_LEN);
    if (zone->policy.data == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->policy.len = ngx_sprintf(zone->policy.data, "\"%V\";q=%ui;w=%ui",
                                   &zone->name, zone->rate, zone->period)
                       - zone->policy.data;
    zone->hash = ngx_crc32_short(zone->name.data, zone->name.len);

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

    ngx_http_rate_limit_init_header_filter();

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

    ngx_http_rate_limit_exit_batches();
}
