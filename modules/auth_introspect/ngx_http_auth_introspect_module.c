
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_meshgate_bearer.h"
#include "ngx_meshgate_cache.h"
#include "ngx_meshgate_fetch.h"
#include "ngx_meshgate_http.h"
#include "ngx_meshgate_json.h"
#include "ngx_meshgate_json_text.h"
#include "ngx_meshgate_sha256.h"
#include "ngx_meshgate_waiter.h"


#define NGX_HTTP_INTROSPECT_DIGEST_LEN   NGX_MESHGATE_SHA256_LEN

/* request states */
#define NGX_HTTP_INTROSPECT_NEW          0
#define NGX_HTTP_INTROSPECT_WAIT         1
#define NGX_HTTP_INTROSPECT_RETRY        2
#define NGX_HTTP_INTROSPECT_DONE         3

/* results, the index into ngx_http_auth_introspect_results */
#define NGX_HTTP_INTROSPECT_NONE         0
#define NGX_HTTP_INTROSPECT_OK           1
#define NGX_HTTP_INTROSPECT_MISSING      2
#define NGX_HTTP_INTROSPECT_INVALID      3
#define NGX_HTTP_INTROSPECT_INACTIVE     4
#define NGX_HTTP_INTROSPECT_EXPIRED      5
#define NGX_HTTP_INTROSPECT_UNAVAILABLE  6
#define NGX_HTTP_INTROSPECT_SCOPE        7

/*
 * the kind of a cached answer, a record of common's encoding: an active
 * one has one field, its claims (compact JSON); the others none
 */
#define NGX_HTTP_INTROSPECT_CACHE_ACTIVE    'A'
#define NGX_HTTP_INTROSPECT_CACHE_INACTIVE  'I'
#define NGX_HTTP_INTROSPECT_CACHE_EXPIRED   'E'


typedef struct {
    ngx_flag_t                       enabled;
    ngx_str_t                        realm;
    ngx_http_complex_value_t        *token;
    ngx_str_t                        endpoint;
    ngx_str_t                        server;     /* its server block */
    ngx_meshgate_cache_t            *cache;
    ngx_msec_t                       ttl;
    ngx_msec_t                       negative_ttl;
    ngx_array_t                     *scopes;     /* ngx_str_t */
    ngx_uint_t                       scope_any;
} ngx_http_auth_introspect_loc_conf_t;


typedef struct {
    ngx_queue_t                      queue;
    u_char                           digest[NGX_HTTP_INTROSPECT_DIGEST_LEN];
    ngx_queue_t                      waiters;
} ngx_http_auth_introspect_flight_t;


typedef struct {
    ngx_http_request_t              *request;
    ngx_uint_t                       state;
    ngx_uint_t                       result;
    ngx_uint_t                       handoff;    /* the state waiters get */
    u_char                           digest[NGX_HTTP_INTROSPECT_DIGEST_LEN];
    ngx_str_t                        token;
    ngx_str_t                        payload;
    ngx_http_auth_introspect_flight_t  *flight;  /* when leading a call */
    ngx_meshgate_waiter_t            waiter;     /* when waiting for one */
    ngx_meshgate_fetch_t             fetch;
    ngx_list_t                       headers;    /* the call's */
} ngx_http_auth_introspect_ctx_t;


static ngx_int_t ngx_http_auth_introspect_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_auth_introspect_start(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf);
static ngx_int_t ngx_http_auth_introspect_token(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf, ngx_str_t *token);
static ngx_int_t ngx_http_auth_introspect_lookup(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf,
    ngx_http_auth_introspect_ctx_t *ctx);
static ngx_int_t ngx_http_auth_introspect_call(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf,
    ngx_http_auth_introspect_ctx_t *ctx);
static ngx_int_t ngx_http_auth_introspect_body(ngx_http_request_t *r,
    ngx_http_auth_introspect_ctx_t *ctx);
static ngx_int_t ngx_http_auth_introspect_done(ngx_meshgate_fetch_t *f);
static ngx_uint_t ngx_http_auth_introspect_judge(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf,
    ngx_http_auth_introspect_ctx_t *ctx, ngx_str_t *payload,
    uint64_t *expires);
static void ngx_http_auth_introspect_resolve(ngx_http_request_t *r,
    ngx_http_auth_introspect_ctx_t *ctx, ngx_uint_t state);
static void ngx_http_auth_introspect_handoff(ngx_meshgate_waiter_t *w,
    void *data);
static void ngx_http_auth_introspect_cleanup(void *data);
static ngx_int_t ngx_http_auth_introspect_set_answer(ngx_http_request_t *r,
    ngx_http_auth_introspect_ctx_t *ctx, ngx_str_t *answer);
static ngx_int_t ngx_http_auth_introspect_finish(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf,
    ngx_http_auth_introspect_ctx_t *ctx);
static ngx_int_t ngx_http_auth_introspect_claim(ngx_http_request_t *r,
    ngx_http_auth_introspect_ctx_t *ctx, u_char *name, size_t len,
    ngx_uint_t string, ngx_str_t *text);
static ngx_int_t ngx_http_auth_introspect_check_scope(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf,
    ngx_http_auth_introspect_ctx_t *ctx);
static ngx_int_t ngx_http_auth_introspect_reject(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf,
    ngx_http_auth_introspect_ctx_t *ctx, ngx_uint_t result);

static ngx_int_t ngx_http_auth_introspect_claim_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_auth_introspect_payload_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_auth_introspect_result_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);

static char *ngx_http_auth_introspect(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_introspect_cache(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_auth_introspect_scope(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_auth_introspect_add_variables(ngx_conf_t *cf);
static void *ngx_http_auth_introspect_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_auth_introspect_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_auth_introspect_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_auth_introspect_init_process(ngx_cycle_t *cycle);


static ngx_str_t  ngx_http_auth_introspect_results[] = {
    ngx_string(""),
    ngx_string("ok"),
    ngx_string("missing"),
    ngx_string("invalid"),
    ngx_string("inactive"),
    ngx_string("expired"),
    ngx_string("unavailable"),
    ngx_string("insufficient_scope")
};


static ngx_str_t  ngx_http_auth_introspect_form =
    ngx_string("application/x-www-form-urlencoded");
static ngx_str_t  ngx_http_auth_introspect_json =
    ngx_string("application/json");


/* the calls in flight in this worker, for coalescing */
static ngx_queue_t  ngx_http_auth_introspect_flights;


static ngx_command_t  ngx_http_auth_introspect_commands[] = {

    { ngx_string("auth_introspect"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_TAKE12,
      ngx_http_auth_introspect,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_introspect_endpoint"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF
                        |NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_auth_introspect_loc_conf_t, endpoint),
      NULL },

    { ngx_string("auth_introspect_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF
                        |NGX_CONF_TAKE123,
      ngx_http_auth_introspect_cache,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_introspect_scope"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF
                        |NGX_CONF_1MORE,
      ngx_http_auth_introspect_scope,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_auth_introspect_module_ctx = {
    ngx_http_auth_introspect_add_variables,  /* preconfiguration */
    ngx_http_auth_introspect_init,           /* postconfiguration */

    NULL,                                    /* create main configuration */
    NULL,                                    /* init main configuration */

    NULL,                                    /* create server configuration */
    NULL,                                    /* merge server configuration */

    ngx_http_auth_introspect_create_loc_conf,  /* create location conf */
    ngx_http_auth_introspect_merge_loc_conf    /* merge location conf */
};


ngx_module_t  ngx_http_auth_introspect_module = {
    NGX_MODULE_V1,
    &ngx_http_auth_introspect_module_ctx,  /* module context */
    ngx_http_auth_introspect_commands,     /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_auth_introspect_init_process, /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_auth_introspect_vars[] = {

    { ngx_string("introspect_claim_"), NULL,
      ngx_http_auth_introspect_claim_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_PREFIX, 0 },

    { ngx_string("introspect_payload"), NULL,
      ngx_http_auth_introspect_payload_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("auth_introspect_result"), NULL,
      ngx_http_auth_introspect_result_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_auth_introspect_handler(ngx_http_request_t *r)
{
    ngx_http_auth_introspect_ctx_t       *ctx;
    ngx_http_auth_introspect_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_auth_introspect_module);

    if (!alcf->enabled) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_auth_introspect_module);

    if (ctx == NULL) {
        return ngx_http_auth_introspect_start(r, alcf);
    }

    switch (ctx->state) {

    case NGX_HTTP_INTROSPECT_WAIT:
        return NGX_AGAIN;

    case NGX_HTTP_INTROSPECT_RETRY:
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "auth_introspect: leader gone, retrying");
        return ngx_http_auth_introspect_lookup(r, alcf, ctx);

    default: /* NGX_HTTP_INTROSPECT_DONE */
        return ngx_http_auth_introspect_finish(r, alcf, ctx);
    }
}


static ngx_int_t
ngx_http_auth_introspect_start(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf)
{
    ngx_int_t                        rc;
    ngx_str_t                        key[5];
    ngx_pool_cleanup_t              *cln;
    ngx_http_auth_introspect_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_auth_introspect_ctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_auth_introspect_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ngx_http_set_ctx(r, ctx, ngx_http_auth_introspect_module);

    rc = ngx_http_auth_introspect_token(r, alcf, &ctx->token);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "auth_introspect: no bearer token in the request");
        return ngx_http_auth_introspect_reject(r, alcf, ctx,
                                               NGX_HTTP_INTROSPECT_MISSING);
    }

    if (rc == NGX_ABORT) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_introspect: malformed bearer token");
        return ngx_http_auth_introspect_reject(r, alcf, ctx,
                                               NGX_HTTP_INTROSPECT_INVALID);
    }

    /*
     * the key of the cache and of calls in flight: the server block (the
     * same endpoint URI in two servers may be two authorization servers),
     * the endpoint and the token
     */

    key[0] = alcf->server;
    key[1].data = (u_char *) "";
    key[1].len = 1;
    key[2] = alcf->endpoint;
    key[3] = key[1];
    key[4] = ctx->token;

    if (ngx_meshgate_sha256(key, 5, ctx->digest) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_auth_introspect_lookup(r, alcf, ctx);
}


/*
 * NGX_OK with the token; NGX_DECLINED when there is none, NGX_ABORT when
 * it is malformed.
 */

static ngx_int_t
ngx_http_auth_introspect_token(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf, ngx_str_t *token)
{
    if (alcf->token == NULL) {
        return ngx_meshgate_bearer_token(r, token, NGX_MESHGATE_BEARER_MAX);
    }

    if (ngx_http_complex_value(r, alcf->token, token) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_meshgate_bearer_check(token, NGX_MESHGATE_BEARER_MAX);
}


static ngx_int_t
ngx_http_auth_introspect_lookup(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf,
    ngx_http_auth_introspect_ctx_t *ctx)
{
    ngx_int_t                           rc;
    ngx_str_t                           key, answer;
    ngx_queue_t                        *q;
    ngx_http_auth_introspect_flight_t  *f;

    ctx->state = NGX_HTTP_INTROSPECT_NEW;

    if (alcf->cache) {
        key.data = ctx->digest;
        key.len = NGX_HTTP_INTROSPECT_DIGEST_LEN;

        rc = ngx_meshgate_cache_get(alcf->cache, &key, r->pool, &answer,
                                    NULL);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_OK) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "auth_introspect: cache hit");

            if (ngx_http_auth_introspect_set_answer(r, ctx, &answer)
                == NGX_OK)
            {
                return ngx_http_auth_introspect_finish(r, alcf, ctx);
            }

            /* not a record of this encoding: asked again, then replaced */

            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "auth_introspect: cache entry of another "
                           "encoding");
        }
    }

    /* a call for the same token already in flight: wait for its answer */

    for (q = ngx_queue_head(&ngx_http_auth_introspect_flights);
         q != ngx_queue_sentinel(&ngx_http_auth_introspect_flights);
         q = ngx_queue_next(q))
    {
        f = ngx_queue_data(q, ngx_http_auth_introspect_flight_t, queue);

        if (ngx_memcmp(f->digest, ctx->digest,
                       NGX_HTTP_INTROSPECT_DIGEST_LEN) == 0)
        {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "auth_introspect: waiting for a call in flight");

            ngx_meshgate_waiter_join(&f->waiters, &ctx->waiter, r);
            ctx->state = NGX_HTTP_INTROSPECT_WAIT;

            return NGX_AGAIN;
        }
    }

    return ngx_http_auth_introspect_call(r, alcf, ctx);
}


static ngx_int_t
ngx_http_auth_introspect_call(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf,
    ngx_http_auth_introspect_ctx_t *ctx)
{
    ngx_meshgate_fetch_t               *fetch;
    ngx_http_auth_introspect_flight_t  *f;

    fetch = &ctx->fetch;

    if (ngx_http_auth_introspect_body(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    fetch->handler = ngx_http_auth_introspect_done;
    fetch->data = ctx;
    fetch->method = NGX_HTTP_POST;
    fetch->headers = &ctx->headers;
    fetch->max = 0;     /* the endpoint's subrequest_output_buffer_size */

    if (ngx_meshgate_fetch_start(r, fetch, &alcf->endpoint, NULL,
                                 NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    f = ngx_alloc(sizeof(ngx_http_auth_introspect_flight_t),
                  r->connection->log);
    if (f == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(f->digest, ctx->digest, NGX_HTTP_INTROSPECT_DIGEST_LEN);
    ngx_queue_init(&f->waiters);
    ngx_queue_insert_tail(&ngx_http_auth_introspect_flights, &f->queue);

    ctx->flight = f;
    ctx->state = NGX_HTTP_INTROSPECT_WAIT;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "auth_introspect: calling \"%V\"", &alcf->endpoint);

    return NGX_AGAIN;
}


/*
 * The call is a POST of "token=...&token_type_hint=access_token" with its
 * own two headers: nothing of the client's request (cookies, its
 * Authorization header) travels to the authorization server.
 */

static ngx_int_t
ngx_http_auth_introspect_body(ngx_http_request_t *r,
    ngx_http_auth_introspect_ctx_t *ctx)
{
    u_char     *p, *s;
    size_t      len;
    ngx_str_t  *token;

    static u_char  hex[] = "0123456789ABCDEF";

    token = &ctx->token;

    len = sizeof("token=") - 1 + 3 * token->len
          + sizeof("&token_type_hint=access_token") - 1;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->fetch.body.data = p;

    p = ngx_cpymem(p, "token=", sizeof("token=") - 1);

    for (s = token->data; s < token->data + token->len; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')
            || (*s >= '0' && *s <= '9') || *s == '-' || *s == '.'
            || *s == '_' || *s == '~')
        {
            *p++ = *s;

        } else {
            *p++ = '%';
            *p++ = hex[*s >> 4];
            *p++ = hex[*s & 0xf];
        }
    }

    p = ngx_cpymem(p, "&token_type_hint=access_token",
                   sizeof("&token_type_hint=access_token") - 1);

    ctx->fetch.body.len = p - ctx->fetch.body.data;

    if (ngx_list_init(&ctx->headers, r->pool, 2, sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_meshgate_fetch_add_header(&ctx->headers, "Content-Type",
                                      "content-type",
                                      &ngx_http_auth_introspect_form)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_meshgate_fetch_add_header(&ctx->headers, "Accept", "accept",
                                         &ngx_http_auth_introspect_json);
}


static ngx_int_t
ngx_http_auth_introspect_done(ngx_meshgate_fetch_t *f)
{
    ngx_http_auth_introspect_ctx_t *ctx = f->data;

    u_char                               *p;
    uint64_t                              expires;
    ngx_str_t                             payload, key, value;
    ngx_uint_t                            result;
    ngx_http_request_t                   *r;
    ngx_http_auth_introspect_loc_conf_t  *alcf;

    r = ctx->request;
    alcf = ngx_http_get_module_loc_conf(r, ngx_http_auth_introspect_module);

    if (f->closed || r->connection->error) {
        /* no answer: a waiting request, if any, makes the call again */
        ctx->result = NGX_HTTP_INTROSPECT_UNAVAILABLE;
        ctx->state = NGX_HTTP_INTROSPECT_DONE;
        ngx_http_auth_introspect_resolve(r, ctx, NGX_HTTP_INTROSPECT_RETRY);
        return NGX_OK;
    }

    ngx_str_null(&payload);
    expires = 0;

    result = ngx_http_auth_introspect_judge(f->sr, alcf, ctx, &payload,
                                            &expires);

    /* the answer as cached and as handed to the waiting requests */

    value.len = NGX_MESHGATE_RECORD_HEAD + NGX_MESHGATE_RECORD_FIELD
                + payload.len;
    value.data = ngx_pnalloc(r->pool, value.len);

    if (value.data == NULL) {
        result = NGX_HTTP_INTROSPECT_UNAVAILABLE;
        value.len = 0;

    } else {
        switch (result) {
        case NGX_HTTP_INTROSPECT_OK:
            p = ngx_meshgate_record_start(value.data,
                                          NGX_HTTP_INTROSPECT_CACHE_ACTIVE);
            p = ngx_meshgate_record_put(p, payload.data, payload.len);
            break;
        case NGX_HTTP_INTROSPECT_EXPIRED:
            p = ngx_meshgate_record_start(value.data,
                                          NGX_HTTP_INTROSPECT_CACHE_EXPIRED);
            break;
        default:
            p = ngx_meshgate_record_start(value.data,
                                          NGX_HTTP_INTROSPECT_CACHE_INACTIVE);
        }

        value.len = p - value.data;
    }

    if (alcf->cache && expires && value.len) {
        key.data = ctx->digest;
        key.len = NGX_HTTP_INTROSPECT_DIGEST_LEN;

        if (ngx_meshgate_cache_set(alcf->cache, &key, &value, expires)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "auth_introspect: cache zone \"%V\" is full",
                          &alcf->cache->name);
        }
    }

    if (result == NGX_HTTP_INTROSPECT_UNAVAILABLE) {
        ctx->result = result;

    } else if (ngx_http_auth_introspect_set_answer(r, ctx, &value)
               != NGX_OK)
    {
        ctx->result = NGX_HTTP_INTROSPECT_UNAVAILABLE;
    }

    ngx_http_auth_introspect_resolve(r, ctx, NGX_HTTP_INTROSPECT_DONE);

    ctx->state = NGX_HTTP_INTROSPECT_DONE;

    return NGX_OK;
}


/*
 * Reads the answer of the authorization server.  Sets *expires when the
 * answer may be cached, and *payload (compact JSON) when it is active.
 */

static ngx_uint_t
ngx_http_auth_introspect_judge(ngx_http_request_t *sr,
    ngx_http_auth_introspect_loc_conf_t *alcf,
    ngx_http_auth_introspect_ctx_t *ctx, ngx_str_t *payload,
    uint64_t *expires)
{
    json_t                *root, *active, *exp, *type;
    uint64_t               now, until;
    ngx_uint_t             status;
    ngx_log_t             *log;
    const char            *error;
    ngx_meshgate_fetch_t  *f;

    log = sr->connection->log;
    f = &ctx->fetch;
    status = f->status;
    error = ngx_meshgate_fetch_error(f);

    if (ngx_meshgate_fetch_failed(f)
        || status >= NGX_HTTP_INTERNAL_SERVER_ERROR)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "auth_introspect: introspection endpoint \"%V\" "
                      "failed (status %ui)", &alcf->endpoint, status);
        return NGX_HTTP_INTROSPECT_UNAVAILABLE;
    }

    if (f->too_big) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "auth_introspect: introspection response is larger "
                      "than subrequest_output_buffer_size");
        return NGX_HTTP_INTROSPECT_UNAVAILABLE;
    }

    if (status != NGX_HTTP_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "auth_introspect: introspection endpoint \"%V\" "
                      "answered status %ui, token taken as inactive",
                      &alcf->endpoint, status);
        return NGX_HTTP_INTROSPECT_INACTIVE;
    }

    if (error) {
        /* "truncated", "encoded": the answer cannot be read */
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "auth_introspect: introspection response from \"%V\" "
                      "is %s", &alcf->endpoint, error);
        return NGX_HTTP_INTROSPECT_UNAVAILABLE;
    }

    root = ngx_meshgate_json_parse(f->answer.data, f->answer.len, log,
                                   "introspection response");
    if (root == NULL) {
        return NGX_HTTP_INTROSPECT_INACTIVE;
    }

    if (ngx_meshgate_json_cleanup(sr->pool, root) != NGX_OK) {
        json_decref(root);
        return NGX_HTTP_INTROSPECT_UNAVAILABLE;
    }

    if (!json_is_object(root)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "auth_introspect: introspection response is not "
                      "a JSON object, token taken as inactive");
        return NGX_HTTP_INTROSPECT_INACTIVE;
    }

    now = ngx_meshgate_now_ms();

    active = json_object_get(root, "active");
    type = json_object_get(root, "token_type");

    if (json_is_string(type)
        && ngx_strcasecmp((u_char *) json_string_value(type),
                          (u_char *) "refresh_token") == 0)
    {
        /* a refresh token is no access token, active or not */
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "auth_introspect: a refresh token was presented");
        active = NULL;
    }

    if (!json_is_true(active)) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "auth_introspect: token is not active");

        if (alcf->negative_ttl) {
            *expires = now + alcf->negative_ttl;
        }

        return NGX_HTTP_INTROSPECT_INACTIVE;
    }

    until = now + alcf->ttl;

    exp = json_object_get(root, "exp");

    if (exp) {
        if (!json_is_number(exp) || json_number_value(exp) < 0
            || json_number_value(exp) > 1e13)
        {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "auth_introspect: \"exp\" of an active token is "
                          "not a NumericDate, token taken as inactive");
            return NGX_HTTP_INTROSPECT_INACTIVE;
        }

        if ((uint64_t) (json_number_value(exp) * 1000) <= now) {
            ngx_log_error(NGX_LOG_INFO, log, 0,
                          "auth_introspect: active token is past its "
                          "\"exp\"");

            if (alcf->negative_ttl) {
                *expires = now + alcf->negative_ttl;
            }

            return NGX_HTTP_INTROSPECT_EXPIRED;
        }

        until = ngx_min(until, (uint64_t) (json_number_value(exp) * 1000));
    }

    if (ngx_meshgate_json_dump(sr->pool, root, payload) != NGX_OK) {
        return NGX_HTTP_INTROSPECT_UNAVAILABLE;
    }

    if (alcf->ttl) {
        *expires = until;
    }

    return NGX_HTTP_INTROSPECT_OK;
}


/* hands the leader's answer (or a retry) to the requests waiting for it */

static void
ngx_http_auth_introspect_resolve(ngx_http_request_t *r,
    ngx_http_auth_introspect_ctx_t *ctx, ngx_uint_t state)
{
    ngx_http_auth_introspect_flight_t  *f;

    f = ctx->flight;

    if (f == NULL) {
        return;
    }

    ctx->handoff = state;

    ngx_meshgate_waiter_wake(&f->waiters, ngx_http_auth_introspect_handoff,
                             ctx);

    ngx_queue_remove(&f->queue);
    ngx_free(f);

    ctx->flight = NULL;
}


static void
ngx_http_auth_introspect_handoff(ngx_meshgate_waiter_t *w, void *data)
{
    ngx_http_auth_introspect_ctx_t *ctx = data;

    ngx_http_request_t              *wr;
    ngx_http_auth_introspect_ctx_t  *wctx;

    wctx = ngx_queue_data(w, ngx_http_auth_introspect_ctx_t, waiter);
    wctx->state = ctx->handoff;

    wr = wctx->request;

    if (ctx->handoff == NGX_HTTP_INTROSPECT_DONE) {
        wctx->result = ctx->result;

        if (ctx->payload.len) {
            wctx->payload.data = ngx_pstrdup(wr->pool, &ctx->payload);
            if (wctx->payload.data == NULL) {
                wctx->result = NGX_HTTP_INTROSPECT_UNAVAILABLE;

            } else {
                wctx->payload.len = ctx->payload.len;
            }
        }
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, wr->connection->log, 0,
                   "auth_introspect: waking waiter, state %ui", wctx->state);
}


static void
ngx_http_auth_introspect_cleanup(void *data)
{
    ngx_http_auth_introspect_ctx_t *ctx = data;

    ngx_meshgate_waiter_leave(&ctx->waiter);

    if (ctx->flight) {
        /* the leader went away before the answer: a waiter takes over */
        ngx_http_auth_introspect_resolve(ctx->request, ctx,
                                         NGX_HTTP_INTROSPECT_RETRY);
    }
}


/*
 * sets the result from an answer as cached (a record); NGX_DECLINED when
 * it is no record of this encoding
 */

static ngx_int_t
ngx_http_auth_introspect_set_answer(ngx_http_request_t *r,
    ngx_http_auth_introspect_ctx_t *ctx, ngx_str_t *answer)
{
    ngx_str_t              payload;
    ngx_meshgate_record_t  rec;

    if (ngx_meshgate_record_open(&rec, answer) != NGX_OK) {
        return NGX_DECLINED;
    }

    ngx_str_null(&payload);

    if (rec.kind == NGX_HTTP_INTROSPECT_CACHE_ACTIVE
        && ngx_meshgate_record_next(&rec, &payload) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    ctx->state = NGX_HTTP_INTROSPECT_DONE;
    ctx->payload = payload;

    switch (rec.kind) {

    case NGX_HTTP_INTROSPECT_CACHE_ACTIVE:
        ctx->result = NGX_HTTP_INTROSPECT_OK;
        break;

    case NGX_HTTP_INTROSPECT_CACHE_EXPIRED:
        ctx->result = NGX_HTTP_INTROSPECT_EXPIRED;
        break;

    default:
        ctx->result = NGX_HTTP_INTROSPECT_INACTIVE;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_introspect_finish(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf,
    ngx_http_auth_introspect_ctx_t *ctx)
{
    ngx_int_t  rc;

    ctx->state = NGX_HTTP_INTROSPECT_DONE;

    switch (ctx->result) {

    case NGX_HTTP_INTROSPECT_OK:
        break;

    case NGX_HTTP_INTROSPECT_UNAVAILABLE:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_introspect: token could not be introspected, "
                      "answering 503");
        return NGX_HTTP_SERVICE_UNAVAILABLE;

    case NGX_HTTP_INTROSPECT_MISSING:
    case NGX_HTTP_INTROSPECT_INVALID:
    case NGX_HTTP_INTROSPECT_SCOPE:
        /* a rejection decided before (an internal redirect, a rerun) */
        return ngx_http_auth_introspect_reject(r, alcf, ctx, ctx->result);

    default:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "auth_introspect: token is %V",
                      &ngx_http_auth_introspect_results[ctx->result]);
        return ngx_http_auth_introspect_reject(r, alcf, ctx, ctx->result);
    }

    /*
     * A cached answer never outlives the token's exp, nor does one handed
     * over by a call just made: the claims are parsed only when needed.
     */

    ctx->result = NGX_HTTP_INTROSPECT_OK;

    if (alcf->scopes == NULL) {
        return NGX_OK;
    }

    rc = ngx_http_auth_introspect_check_scope(r, alcf, ctx);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "auth_introspect: token lacks the required scope");
        return ngx_http_auth_introspect_reject(r, alcf, ctx,
                                               NGX_HTTP_INTROSPECT_SCOPE);
    }

    return NGX_OK;
}


/*
 * A claim of the active token as text, found in the compact JSON that the
 * cache and the call keep; NGX_DECLINED when the token has no such claim
 * (or, with string set, no such string claim).
 * Nothing is parsed: this runs for every request and claim variable.
 */

static ngx_int_t
ngx_http_auth_introspect_claim(ngx_http_request_t *r,
    ngx_http_auth_introspect_ctx_t *ctx, u_char *name, size_t len,
    ngx_uint_t string, ngx_str_t *text)
{
    ngx_int_t  rc;
    ngx_str_t  raw;

    rc = ngx_meshgate_json_member(&ctx->payload, name, len, 0, &raw);

    if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "auth_introspect: kept introspection response "
                      "is no JSON object");
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return NGX_DECLINED;
    }

    if (string && raw.data[0] != '"') {
        return NGX_DECLINED;
    }

    return ngx_meshgate_json_value_text(r->pool, &raw, text);
}


static ngx_int_t
ngx_http_auth_introspect_check_scope(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf,
    ngx_http_auth_introspect_ctx_t *ctx)
{
    ngx_int_t  rc;
    ngx_str_t  granted;

    rc = ngx_meshgate_scope_granted_text(r->pool, &ctx->payload, &granted,
                                         r->connection->log);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_meshgate_scope_match(&granted, alcf->scopes, alcf->scope_any);
}


static ngx_int_t
ngx_http_auth_introspect_reject(ngx_http_request_t *r,
    ngx_http_auth_introspect_loc_conf_t *alcf,
    ngx_http_auth_introspect_ctx_t *ctx, ngx_uint_t result)
{
    ngx_int_t  rc;

    ctx->result = result;
    ctx->state = NGX_HTTP_INTROSPECT_DONE;

    switch (result) {

    case NGX_HTTP_INTROSPECT_MISSING:
        rc = ngx_meshgate_www_authenticate(r, "Bearer", &alcf->realm, NULL,
                                           NULL);
        break;

    case NGX_HTTP_INTROSPECT_SCOPE:
        rc = ngx_meshgate_www_authenticate(r, "Bearer", &alcf->realm,
                                           "insufficient_scope",
                                           alcf->scopes);
        break;

    default:
        rc = ngx_meshgate_www_authenticate(r, "Bearer", &alcf->realm,
                                           "invalid_token", NULL);
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    return (result == NGX_HTTP_INTROSPECT_SCOPE) ? NGX_HTTP_FORBIDDEN
                                                 : NGX_HTTP_UNAUTHORIZED;
}


static ngx_int_t
ngx_http_auth_introspect_claim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t *var = (ngx_str_t *) data;

    ngx_int_t                        rc;
    ngx_str_t                        name, text;
    ngx_http_auth_introspect_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_auth_introspect_module);

    if (ctx == NULL || ctx->state != NGX_HTTP_INTROSPECT_DONE
        || ctx->result != NGX_HTTP_INTROSPECT_OK)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    name.data = var->data + sizeof("introspect_claim_") - 1;
    name.len = var->len - (sizeof("introspect_claim_") - 1);

    rc = ngx_http_auth_introspect_claim(r, ctx, name.data, name.len, 0,
                                        &text);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        v->not_found = 1;
        return NGX_OK;
    }

    /* a claim's escapes may decode to CR, LF: never into a header */

    ngx_meshgate_variable_set_text(r, v, "introspection claim", &name,
                                   text.data, text.len);
    v->no_cacheable = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_introspect_payload_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_auth_introspect_ctx_t  *ctx;

    static ngx_str_t  name = ngx_string("introspect_payload");

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_auth_introspect_module);

    if (ctx == NULL || ctx->state != NGX_HTTP_INTROSPECT_DONE
        || ctx->result != NGX_HTTP_INTROSPECT_OK)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    /* compact JSON escapes control bytes, but leaves DEL (0x7f) as it is */

    ngx_meshgate_variable_set_text(r, v, "introspection answer", &name,
                                   ctx->payload.data, ctx->payload.len);
    v->no_cacheable = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_introspect_result_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                       *s;
    ngx_http_auth_introspect_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_auth_introspect_module);

    if (ctx == NULL || ctx->state != NGX_HTTP_INTROSPECT_DONE) {
        s = &ngx_http_auth_introspect_results[NGX_HTTP_INTROSPECT_NONE];

    } else {
        s = &ngx_http_auth_introspect_results[ctx->result];
    }

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static char *
ngx_http_auth_introspect(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_introspect_loc_conf_t *alcf = conf;

    char                              *rv;
    ngx_str_t                         *value, v;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    rv = ngx_meshgate_realm_conf(cf, &value[1], &alcf->enabled,
                                 &alcf->realm);

    if (rv != NGX_CONF_OK || cf->args->nelts == 2) {
        return rv;
    }

    if (!alcf->enabled) {
        return "takes no parameters after \"off\"";
    }

    if (ngx_strncmp(value[2].data, "token=", 6) != 0 || value[2].len == 6) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\", expected "
                           "\"token=$variable\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    v.data = value[2].data + 6;
    v.len = value[2].len - 6;

    alcf->token = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (alcf->token == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &v;
    ccv.complex_value = alcf->token;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_introspect_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_auth_introspect_loc_conf_t *alcf = conf;

    char        *rv;
    ngx_str_t   *value, s;
    ngx_msec_t   t;
    ngx_uint_t   i;

    if (alcf->cache != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0 && cf->args->nelts == 2) {
        alcf->cache = NULL;
        return NGX_CONF_OK;
    }

    rv = ngx_meshgate_cache_conf(cf, &value[1],
                                 &ngx_http_auth_introspect_module,
                                 &alcf->cache);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0) {
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            t = ngx_parse_time(&s, 0);
            if (t == (ngx_msec_t) NGX_ERROR) {
                goto invalid;
            }

            alcf->ttl = t;
            continue;
        }

        if (ngx_strncmp(value[i].data, "negative_ttl=", 13) == 0) {
            s.data = value[i].data + 13;
            s.len = value[i].len - 13;

            t = ngx_parse_time(&s, 0);
            if (t == (ngx_msec_t) NGX_ERROR) {
                goto invalid;
            }

            alcf->negative_ttl = t;
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_auth_introspect_scope(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_auth_introspect_loc_conf_t *alcf = conf;

    ngx_str_t   *value, *s;
    ngx_uint_t   i, n;

    if (alcf->scopes != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    n = cf->args->nelts;

    alcf->scope_any = 0;

    if (n > 2 && ngx_strcmp(value[n - 1].data, "any") == 0) {
        alcf->scope_any = 1;
        n--;

    } else if (n > 2 && ngx_strcmp(value[n - 1].data, "all") == 0) {
        n--;
    }

    alcf->scopes = ngx_array_create(cf->pool, n - 1, sizeof(ngx_str_t));
    if (alcf->scopes == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < n; i++) {

        if (!ngx_meshgate_scope_is_valid(&value[i])) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid scope \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        s = ngx_array_push(alcf->scopes);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = value[i];
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_auth_introspect_add_variables(ngx_conf_t *cf)
{
    return ngx_meshgate_add_variables(cf, ngx_http_auth_introspect_vars);
}


static void *
ngx_http_auth_introspect_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_auth_introspect_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool,
                       sizeof(ngx_http_auth_introspect_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->realm = { 0, NULL };
     *     conf->token = NULL;
     *     conf->endpoint = { 0, NULL };
     *     conf->server = { 0, NULL };
     *     conf->scope_any = 0;
     */

    conf->enabled = NGX_CONF_UNSET;
    conf->cache = NGX_CONF_UNSET_PTR;
    conf->ttl = NGX_CONF_UNSET_MSEC;
    conf->negative_ttl = NGX_CONF_UNSET_MSEC;
    conf->scopes = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_auth_introspect_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_auth_introspect_loc_conf_t *prev = parent;
    ngx_http_auth_introspect_loc_conf_t *conf = child;

    u_char                    *p;
    size_t                     len;
    ngx_http_core_srv_conf_t  *cscf;

    if (conf->enabled == NGX_CONF_UNSET) {
        conf->enabled = prev->enabled;
        conf->realm = prev->realm;
        conf->token = prev->token;
    }

    ngx_conf_merge_value(conf->enabled, prev->enabled, 0);
    ngx_conf_merge_str_value(conf->endpoint, prev->endpoint, "");

    if (conf->cache == NGX_CONF_UNSET_PTR) {
        conf->cache = prev->cache;
        conf->ttl = prev->ttl;
        conf->negative_ttl = prev->negative_ttl;
    }

    ngx_conf_merge_ptr_value(conf->cache, prev->cache, NULL);
    ngx_conf_merge_msec_value(conf->ttl, prev->ttl, 60000);
    ngx_conf_merge_msec_value(conf->negative_ttl, prev->negative_ttl, 5000);

    if (conf->scopes == NGX_CONF_UNSET_PTR) {
        conf->scopes = prev->scopes;
        conf->scope_any = prev->scope_any;
    }

    ngx_conf_merge_ptr_value(conf->scopes, prev->scopes, NULL);

    if (conf->enabled && conf->endpoint.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"auth_introspect\" needs "
                           "\"auth_introspect_endpoint\"");
        return NGX_CONF_ERROR;
    }

    /* the server block: where it is defined, and its name */

    cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);

    len = (cscf->file_name ? ngx_strlen(cscf->file_name) : 0)
          + 1 + NGX_INT_T_LEN + 1 + cscf->server_name.len;

    conf->server.data = ngx_pnalloc(cf->pool, len);
    if (conf->server.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_sprintf(conf->server.data, "%s:%ui:%V",
                    cscf->file_name ? cscf->file_name : (u_char *) "",
                    cscf->line, &cscf->server_name);
    conf->server.len = p - conf->server.data;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_auth_introspect_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_auth_introspect_handler;

    return ngx_meshgate_fetch_init(cf);
}


static ngx_int_t
ngx_http_auth_introspect_init_process(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_http_auth_introspect_flights);

    return NGX_OK;
}
