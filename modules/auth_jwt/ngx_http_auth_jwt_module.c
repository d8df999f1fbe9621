
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_auth_jwt.h"
#include "ngx_meshgate_http.h"


#define NGX_HTTP_AUTH_JWT_WAIT          60
#define NGX_HTTP_AUTH_JWT_MAX_TRIES     10
#define NGX_HTTP_AUTH_JWT_CACHE_NOEXP   3600


typedef struct {
    ngx_array_t                    *values;   /* complex values */
    ngx_uint_t                      status;
} ngx_http_auth_jwt_require_t;


typedef struct {
    ngx_str_t                       name;
    ngx_http_auth_jwt_keyset_t     *keyset;
    ngx_str_t                       conf_file;
    ngx_uint_t                      line;
} ngx_http_auth_jwt_file_t;


typedef struct {
    ngx_meshgate_cache_t           *cache;
    ngx_array_t                     sources;  /* source pointers */
    ngx_array_t                     files;    /* ngx_http_auth_jwt_file_t */
    ngx_uint_t                      keys_max;
} ngx_http_auth_jwt_main_conf_t;


typedef struct {
    ngx_flag_t                      enable;
    ngx_http_complex_value_t       *realm;
    ngx_http_complex_value_t       *token;
    ngx_array_t                    *key_files;  /* keyset pointers */
    ngx_array_t                    *sources;    /* source pointers */
    ngx_array_t                    *requires;
    ngx_array_t                    *issuers;    /* ngx_str_t */
    ngx_array_t                    *audiences;  /* ngx_str_t */
    ngx_array_t                    *scopes;     /* ngx_str_t */
    ngx_uint_t                      scope_any;
    time_t                          key_cache;
    time_t                          leeway;
    ngx_uint_t                      type;
    ngx_str_t                       file;
    ngx_uint_t                      line;
} ngx_http_auth_jwt_loc_conf_t;


typedef struct {
    ngx_array_t                     names;    /* ngx_str_t */
    ngx_str_t                       var;      /* its name, for the log */
    ngx_uint_t                      header;
} ngx_http_auth_jwt_var_t;


typedef struct {
    double                          exp;
    double                          nbf;
    unsigned                        has_exp:1;
    unsigned                        has_nbf:1;
} ngx_http_auth_jwt_times_t;


typedef struct {
    ngx_http_request_t             *request;
    ngx_http_auth_jwt_result_e      verdict;
    ngx_http_auth_jwt_result_e      result;
    ngx_http_auth_jwt_result_e      pre;      /* what is known without
                                                 keys */
    const char                     *pre_err;
    ngx_str_t                       token;
    ngx_http_auth_jwt_token_t       jwt;
    ngx_http_auth_jwt_jwe_t         jwe;
    json_t                         *outer;    /* a nested token's JWE
                                                 header */
    ngx_str_t                       inner;    /* a nested token's JWS */
    json_t                         *header;
    json_t                         *payload;
    ngx_str_t                       header_text;
    ngx_str_t                       payload_text;
    const char                     *err;
    ngx_queue_t                     queue;
    time_t                          wait_until;
    ngx_int_t                       status;
    unsigned                        verified:1;
    unsigned                        waiting:1;
    unsigned                        fetched:1;
    unsigned                        want_fresh:1;
    unsigned                        refetched:1;
    unsigned                        parsed:1;
    unsigned                        done:1;
} ngx_http_auth_jwt_ctx_t;


static ngx_int_t ngx_http_auth_jwt_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_auth_jwt_decide(ngx_http_request_t *r,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_loc_conf_t *jlcf);
static ngx_int_t ngx_http_auth_jwt_keys(ngx_http_request_t *r,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_loc_conf_t *jlcf);
static ngx_uint_t ngx_http_auth_jwt_kid_refetch(ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_loc_conf_t *jlcf);
static void ngx_http_auth_jwt_wait(ngx_http_request_t *r,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_source_t *src);
static void ngx_http_auth_jwt_wait_handler(ngx_http_request_t *r);
static ngx_http_auth_jwt_ctx_t *ngx_http_auth_jwt_get_ctx(
    ngx_http_request_t *r);
static void ngx_http_auth_jwt_ctx_cleanup(void *data);
static void ngx_http_auth_jwt_check(ngx_http_request_t *r,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_loc_conf_t *jlcf,
    ngx_uint_t final);
static ngx_http_auth_jwt_result_e ngx_http_auth_jwt_encrypted(
    ngx_http_request_t *r, ngx_http_auth_jwt_loc_conf_t *jlcf,
    ngx_http_auth_jwt_ctx_t *ctx, u_char *fp, const char **err);
static ngx_http_auth_jwt_result_e ngx_http_auth_jwt_decrypt(
    ngx_http_request_t *r, ngx_http_auth_jwt_loc_conf_t *jlcf,
    ngx_http_auth_jwt_jwe_t *jwe, ngx_str_t *plain, const char **err);
static ngx_http_auth_jwt_result_e ngx_http_auth_jwt_prepare(
    ngx_http_request_t *r, ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_uint_t parse);
static ngx_int_t ngx_http_auth_jwt_get_token(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_str_t *token);
static ngx_http_auth_jwt_result_e ngx_http_auth_jwt_signature(
    ngx_http_request_t *r, ngx_http_auth_jwt_loc_conf_t *jlcf,
    ngx_http_auth_jwt_token_t *jwt, u_char *fp, const char **err);
static ngx_int_t ngx_http_auth_jwt_set(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_uint_t i,
    ngx_http_auth_jwt_keyset_t **out);
static ngx_http_auth_jwt_source_t *ngx_http_auth_jwt_resolve(
    ngx_http_request_t *r, ngx_http_auth_jwt_source_t *src);
static ngx_http_auth_jwt_key_t *ngx_http_auth_jwt_find_fp(
    ngx_http_request_t *r, ngx_http_auth_jwt_loc_conf_t *jlcf, u_char *fp,
    ngx_uint_t alg);
static ngx_http_auth_jwt_result_e ngx_http_auth_jwt_get_times(json_t *payload,
    ngx_http_auth_jwt_times_t *t, const char **err);
static ngx_http_auth_jwt_result_e ngx_http_auth_jwt_claims(
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_times_t *t, const char **err);
static json_t *ngx_http_auth_jwt_part(ngx_http_auth_jwt_ctx_t *ctx,
    ngx_uint_t header);
static ngx_int_t ngx_http_auth_jwt_has_string(json_t *v, ngx_str_t *s);
static ngx_int_t ngx_http_auth_jwt_scope(ngx_http_auth_jwt_loc_conf_t *jlcf,
    json_t *payload);
static ngx_int_t ngx_http_auth_jwt_has_scope(json_t *payload, ngx_str_t *s);
static ngx_int_t ngx_http_auth_jwt_word(const char *list, ngx_str_t *s);
static ngx_int_t ngx_http_auth_jwt_require(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_int_t *status);
static ngx_int_t ngx_http_auth_jwt_cache_get(ngx_http_request_t *r,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_loc_conf_t *jlcf,
    ngx_str_t *key, ngx_http_auth_jwt_times_t *t);
static void ngx_http_auth_jwt_cache_set(ngx_http_request_t *r,
    ngx_str_t *key, ngx_http_auth_jwt_token_t *jwt, u_char *fp,
    ngx_http_auth_jwt_times_t *t);
static ngx_int_t ngx_http_auth_jwt_challenge(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, char *error);
static double ngx_http_auth_jwt_now(void);

static ngx_int_t ngx_http_auth_jwt_claim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_auth_jwt_header_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_auth_jwt_json_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, json_t *root, ngx_str_t *name,
    const char *what);
static ngx_int_t ngx_http_auth_jwt_value(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, json_t *value, const char *what,
    ngx_str_t *name);
static ngx_int_t ngx_http_auth_jwt_payload_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_auth_jwt_result_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_auth_jwt_set_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_http_auth_jwt_ctx_t *ngx_http_auth_jwt_lazy(ngx_http_request_t *r);
static ngx_int_t ngx_http_auth_jwt_trusted(ngx_http_auth_jwt_ctx_t *ctx);

static ngx_int_t ngx_http_auth_jwt_add_variables(ngx_conf_t *cf);
static void *ngx_http_auth_jwt_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_auth_jwt_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_auth_jwt_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_auth_jwt_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_auth_jwt_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_auth_jwt_init_process(ngx_cycle_t *cycle);
static void ngx_http_auth_jwt_exit_process(ngx_cycle_t *cycle);
static char *ngx_http_auth_jwt(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_jwt_key_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_jwt_key_request(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_http_auth_jwt_source_t *ngx_http_auth_jwt_source(ngx_conf_t *cf,
    ngx_str_t *uri);
static char *ngx_http_auth_jwt_merge_sources(ngx_conf_t *cf,
    ngx_http_auth_jwt_loc_conf_t *conf);
static char *ngx_http_auth_jwt_type(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_jwt_require_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_auth_jwt_claim_set(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_jwt_strings(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_jwt_str_array(ngx_conf_t *cf, ngx_array_t **a,
    ngx_uint_t n);
static char *ngx_http_auth_jwt_scope_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_jwt_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_str_t  ngx_http_auth_jwt_payload_name = ngx_string("jwt_payload");


static ngx_str_t  ngx_http_auth_jwt_result_names[] = {
    ngx_null_string,
    ngx_string("ok"),
    ngx_string("missing"),
    ngx_string("malformed"),
    ngx_string("bad_alg"),
    ngx_string("bad_signature"),
    ngx_string("no_key"),
    ngx_string("expired"),
    ngx_string("not_yet_valid"),
    ngx_string("bad_issuer"),
    ngx_string("bad_audience"),
    ngx_string("insufficient_scope"),
    ngx_string("require_failed"),
    ngx_string("key_unavailable"),
    ngx_string("error")
};


static ngx_command_t  ngx_http_auth_jwt_commands[] = {

    { ngx_string("auth_jwt"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_TAKE12,
      ngx_http_auth_jwt,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_TAKE1,
      ngx_http_auth_jwt_key_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_key_request"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_TAKE1,
      ngx_http_auth_jwt_key_request,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_key_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_auth_jwt_loc_conf_t, key_cache),
      NULL },

    { ngx_string("auth_jwt_leeway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_auth_jwt_loc_conf_t, leeway),
      NULL },

    { ngx_string("auth_jwt_type"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_TAKE1,
      ngx_http_auth_jwt_type,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_require"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_1MORE,
      ngx_http_auth_jwt_require_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_claim_set"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_auth_jwt_claim_set,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_header_set"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_auth_jwt_claim_set,
      NGX_HTTP_MAIN_CONF_OFFSET,
      1,
      NULL },

    { ngx_string("auth_jwt_issuer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_1MORE,
      ngx_http_auth_jwt_strings,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_auth_jwt_loc_conf_t, issuers),
      NULL },

    { ngx_string("auth_jwt_audience"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_1MORE,
      ngx_http_auth_jwt_strings,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_auth_jwt_loc_conf_t, audiences),
      NULL },

    { ngx_string("auth_jwt_scope"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_1MORE,
      ngx_http_auth_jwt_scope_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_key_set_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_auth_jwt_main_conf_t, keys_max),
      NULL },

    { ngx_string("auth_jwt_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_auth_jwt_cache,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_auth_jwt_module_ctx = {
    ngx_http_auth_jwt_add_variables,       /* preconfiguration */
    ngx_http_auth_jwt_init,                /* postconfiguration */

    ngx_http_auth_jwt_create_main_conf,    /* create main configuration */
    ngx_http_auth_jwt_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_auth_jwt_create_loc_conf,     /* create location configuration */
    ngx_http_auth_jwt_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_auth_jwt_module = {
    NGX_MODULE_V1,
    &ngx_http_auth_jwt_module_ctx,         /* module context */
    ngx_http_auth_jwt_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_auth_jwt_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_auth_jwt_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_auth_jwt_vars[] = {

    { ngx_string("jwt_claim_"), NULL, ngx_http_auth_jwt_claim_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_PREFIX, 0 },

    { ngx_string("jwt_header_"), NULL, ngx_http_auth_jwt_header_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_PREFIX, 0 },

    { ngx_string("jwt_payload"), NULL, ngx_http_auth_jwt_payload_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("auth_jwt_result"), NULL,
      ngx_http_auth_jwt_result_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/* access phase */

static ngx_int_t
ngx_http_auth_jwt_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_http_auth_jwt_ctx_t       *ctx;
    ngx_http_auth_jwt_loc_conf_t  *jlcf;

    jlcf = ngx_http_get_module_loc_conf(r, ngx_http_auth_jwt_module);

    if (jlcf->enable != 1) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_auth_jwt_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->done) {
        return ctx->status;
    }

    if (ctx->waiting) {
        return NGX_AGAIN;
    }

    for ( ;; ) {

        /* a missing or malformed token costs no key fetch */

        if (jlcf->sources
            && ngx_http_auth_jwt_prepare(r, ctx, jlcf, 1)
               == NGX_HTTP_AUTH_JWT_OK)
        {
            rc = ngx_http_auth_jwt_keys(r, ctx, jlcf);

            if (rc == NGX_AGAIN) {
                return NGX_AGAIN;
            }

            if (rc == NGX_ERROR) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }

        if (!ctx->verified) {
            ngx_http_auth_jwt_check(r, ctx, jlcf, 1);
        }

        if (ctx->verdict == NGX_HTTP_AUTH_JWT_NO_KEY
            && jlcf->sources
            && !ctx->refetched
            && ngx_http_auth_jwt_kid_refetch(ctx, jlcf))
        {
            ctx->verified = 0;
            continue;
        }

        break;
    }

    ctx->status = ngx_http_auth_jwt_decide(r, ctx, jlcf);
    ctx->done = 1;

    return ctx->status;
}


static ngx_int_t
ngx_http_auth_jwt_decide(ngx_http_request_t *r, ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_loc_conf_t *jlcf)
{
    ngx_int_t   status;
    ngx_uint_t  level;

    ctx->result = ctx->verdict;

    if (ctx->verdict == NGX_HTTP_AUTH_JWT_OK) {
        if (jlcf->scopes
            && ngx_http_auth_jwt_scope(jlcf, ngx_http_auth_jwt_part(ctx, 0))
               != NGX_OK)
        {
            ctx->result = NGX_HTTP_AUTH_JWT_INSUFFICIENT_SCOPE;
            ctx->err = "a required scope is missing";

        } else if (jlcf->requires
                   && ngx_http_auth_jwt_require(r, jlcf, &status) != NGX_OK)
        {
            ctx->result = NGX_HTTP_AUTH_JWT_REQUIRE_FAILED;
            ctx->err = "auth_jwt_require failed";

            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "auth_jwt: access denied (require_failed): %s",
                          ctx->err);

            if (status == NGX_HTTP_FORBIDDEN) {
                return NGX_HTTP_FORBIDDEN;
            }

            if (ngx_http_auth_jwt_challenge(r, jlcf, "invalid_token")
                != NGX_OK)
            {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            return NGX_HTTP_UNAUTHORIZED;
        }
    }

    if (ctx->result == NGX_HTTP_AUTH_JWT_OK) {
        return NGX_OK;
    }

    level = (ctx->result == NGX_HTTP_AUTH_JWT_KEY_UNAVAILABLE
             || ctx->result == NGX_HTTP_AUTH_JWT_ERROR)
            ? NGX_LOG_ERR : NGX_LOG_INFO;

    ngx_log_error(level, r->connection->log, 0,
                  "auth_jwt: access denied (%V): %s",
                  &ngx_http_auth_jwt_result_names[ctx->result],
                  ctx->err ? ctx->err : "");

    switch (ctx->result) {

    case NGX_HTTP_AUTH_JWT_MISSING:
        return ngx_http_auth_jwt_challenge(r, jlcf, NULL) == NGX_OK
               ? NGX_HTTP_UNAUTHORIZED : NGX_HTTP_INTERNAL_SERVER_ERROR;

    case NGX_HTTP_AUTH_JWT_INSUFFICIENT_SCOPE:
        return ngx_http_auth_jwt_challenge(r, jlcf, "insufficient_scope")
               == NGX_OK
               ? NGX_HTTP_FORBIDDEN : NGX_HTTP_INTERNAL_SERVER_ERROR;

    case NGX_HTTP_AUTH_JWT_KEY_UNAVAILABLE:
    case NGX_HTTP_AUTH_JWT_ERROR:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;

    default:
        return ngx_http_auth_jwt_challenge(r, jlcf, "invalid_token") == NGX_OK
               ? NGX_HTTP_UNAUTHORIZED : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


/*
 * Makes sure that every key source of the location has keys: starts a
 * fetch (this request waits for it) or waits for one in progress.  Starts
 * a background refresh of a key set older than auth_jwt_key_cache.
 */

static ngx_int_t
ngx_http_auth_jwt_keys(ngx_http_request_t *r, ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_loc_conf_t *jlcf)
{
    time_t                        now, retry;
    ngx_uint_t                    i, need, pending;
    ngx_http_auth_jwt_source_t  **srcs, *src;

    now = ngx_time();
    pending = 0;
    srcs = jlcf->sources->elts;

    if (ctx->wait_until == 0) {
        ctx->wait_until = now + NGX_HTTP_AUTH_JWT_WAIT;
    }

    for (i = 0; i < jlcf->sources->nelts; i++) {
        src = ngx_http_auth_jwt_resolve(r, srcs[i]);
        if (src == NULL) {
            return NGX_ERROR;
        }

        need = src->keyset == NULL || src->force
               || ((jlcf->key_cache == 0 || ctx->want_fresh)
                   && !ctx->fetched);

        if (src->fetching) {
            if (!need || now >= ctx->wait_until) {
                continue;
            }

            if (src->owner == r && !src->background) {
                pending = 1;
                continue;
            }

            ngx_http_auth_jwt_wait(r, ctx, src);
            return NGX_AGAIN;
        }

        if (need) {
            if (src->failed_at && now - src->failed_at < 1 && !src->force) {
                continue;
            }

            if (ngx_http_auth_jwt_fetch(r, src, 0) != NGX_OK) {
                return NGX_ERROR;
            }

            pending = 1;
            continue;
        }

        retry = ngx_min(jlcf->key_cache, NGX_HTTP_AUTH_JWT_KID_REFETCH);

        if (jlcf->key_cache
            && now >= src->loaded + jlcf->key_cache
            && now >= src->failed_at + retry)
        {
            if (ngx_http_auth_jwt_fetch(r, src, 1) != NGX_OK) {
                return NGX_ERROR;
            }
        }
    }

    if (pending) {
        ctx->fetched = 1;
        return NGX_AGAIN;
    }

    ctx->fetched = 1;

    return NGX_OK;
}


static ngx_uint_t
ngx_http_auth_jwt_kid_refetch(ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_loc_conf_t *jlcf)
{
    time_t                        now;
    ngx_uint_t                    i, any;
    ngx_http_auth_jwt_source_t  **srcs, *src;

    ctx->refetched = 1;

    now = ngx_time();
    any = 0;
    srcs = jlcf->sources->elts;

    for (i = 0; i < jlcf->sources->nelts; i++) {
        src = ngx_http_auth_jwt_resolve(ctx->request, srcs[i]);
        if (src == NULL) {
            continue;
        }

        if (src->fetching || now >= src->kid_refetch_at) {
            if (!src->fetching) {
                src->kid_refetch_at = now + NGX_HTTP_AUTH_JWT_KID_REFETCH;
            }

            any = 1;
        }
    }

    if (any) {
        ctx->want_fresh = 1;
        ctx->fetched = 0;
        ctx->wait_until = now + NGX_HTTP_AUTH_JWT_WAIT;
    }

    return any;
}


static void
ngx_http_auth_jwt_wait(ngx_http_request_t *r, ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_source_t *src)
{
    time_t  left;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "auth_jwt: waiting for JWKS \"%V\"", &src->uri);

    ngx_queue_insert_tail(&src->waiters, &ctx->queue);
    ctx->waiting = 1;
    ctx->fetched = 1;

    if (ctx->wait_until == 0) {
        ctx->wait_until = ngx_time() + NGX_HTTP_AUTH_JWT_WAIT;
    }

    left = ctx->wait_until - ngx_time();
    if (left < 1) {
        left = 1;
    }

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_auth_jwt_wait_handler;

    ngx_add_timer(r->connection->write, (ngx_msec_t) left * 1000);
}


static void
ngx_http_auth_jwt_wait_handler(ngx_http_request_t *r)
{
    ngx_event_t              *wev;
    ngx_http_auth_jwt_ctx_t  *ctx;

    wev = r->connection->write;
    ctx = ngx_http_get_module_ctx(r, ngx_http_auth_jwt_module);

    if (ctx == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (ctx->waiting) {
        if (!wev->timedout) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            }

            return;
        }

        ngx_queue_remove(&ctx->queue);
        ctx->waiting = 0;
    }

    wev->timedout = 0;

    if (ngx_handle_read_event(r->connection->read, 0) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
}


void
ngx_http_auth_jwt_wake(ngx_http_auth_jwt_source_t *src)
{
    ngx_queue_t              *q;
    ngx_event_t              *wev;
    ngx_http_auth_jwt_ctx_t  *ctx;

    while (!ngx_queue_empty(&src->waiters)) {
        q = ngx_queue_head(&src->waiters);
        ngx_queue_remove(q);

        ctx = ngx_queue_data(q, ngx_http_auth_jwt_ctx_t, queue);
        ctx->waiting = 0;

        wev = ctx->request->connection->write;

        if (wev->timer_set) {
            ngx_del_timer(wev);
        }

        ngx_post_event(wev, &ngx_posted_events);
    }
}


static ngx_http_auth_jwt_ctx_t *
ngx_http_auth_jwt_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t       *cln;
    ngx_http_auth_jwt_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_auth_jwt_module);
    if (ctx) {
        return ctx;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_auth_jwt_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->request = r;

    cln->handler = ngx_http_auth_jwt_ctx_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_auth_jwt_module);

    return ctx;
}


static void
ngx_http_auth_jwt_ctx_cleanup(void *data)
{
    ngx_http_auth_jwt_ctx_t *ctx = data;

    if (ctx->waiting) {
        ngx_queue_remove(&ctx->queue);
        ctx->waiting = 0;
    }

    if (ctx->header) {
        json_decref(ctx->header);
        ctx->header = NULL;
    }

    if (ctx->payload) {
        json_decref(ctx->payload);
        ctx->payload = NULL;
    }

    if (ctx->outer) {
        json_decref(ctx->outer);
        ctx->outer = NULL;
    }
}


/*
 * Verifies the token of the request with the keys at hand.  Not final
 * (a variable read before the access phase): an outcome that a key fetch
 * could change is not kept.
 */

static void
ngx_http_auth_jwt_check(ngx_http_request_t *r, ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_uint_t final)
{
    u_char                          hash[32], fp[NGX_HTTP_AUTH_JWT_FP_LEN];
    ngx_str_t                       key;
    const char                     *err;
    ngx_http_auth_jwt_times_t       t;
    ngx_http_auth_jwt_result_e      res;
    ngx_http_auth_jwt_main_conf_t  *jmcf;

    ctx->err = NULL;

    res = ngx_http_auth_jwt_prepare(r, ctx, jlcf, 0);

    if (res != NGX_HTTP_AUTH_JWT_OK) {
        ctx->verdict = res;
        ctx->err = ctx->pre_err;
        ctx->verified = 1;
        return;
    }

    jmcf = ngx_http_get_module_main_conf(r, ngx_http_auth_jwt_module);

    key.len = 0;

    if (jmcf->cache && jlcf->type == NGX_HTTP_AUTH_JWT_SIGNED
        && ctx->token.len <= NGX_HTTP_AUTH_JWT_MAX_TOKEN)
    {
        key.data = hash;
        key.len = sizeof(hash);

        if (ngx_http_auth_jwt_sha256(&ctx->token, hash) != NGX_OK) {
            key.len = 0;

        } else if (ngx_http_auth_jwt_cache_get(r, ctx, jlcf, &key, &t)
                   == NGX_OK)
        {
            ctx->verdict = ngx_http_auth_jwt_claims(jlcf, ctx, &t,
                                                    &ctx->err);
            ctx->verified = 1;
            return;
        }
    }

    res = ngx_http_auth_jwt_prepare(r, ctx, jlcf, 1);

    if (res != NGX_HTTP_AUTH_JWT_OK) {
        ctx->verdict = res;
        ctx->err = ctx->pre_err;
        ctx->verified = 1;
        return;
    }

    err = NULL;

    if (jlcf->type == NGX_HTTP_AUTH_JWT_SIGNED) {
        res = ngx_http_auth_jwt_signature(r, jlcf, &ctx->jwt, fp, &err);

    } else {
        res = ngx_http_auth_jwt_encrypted(r, jlcf, ctx, fp, &err);
    }

    if (res == NGX_HTTP_AUTH_JWT_OK) {
        res = ngx_http_auth_jwt_get_times(ctx->jwt.payload, &t, &err);
    }

    if (res == NGX_HTTP_AUTH_JWT_OK) {
        res = ngx_http_auth_jwt_claims(jlcf, ctx, &t, &err);

        if (res == NGX_HTTP_AUTH_JWT_OK && key.len) {
            ngx_http_auth_jwt_cache_set(r, &key, &ctx->jwt, fp, &t);
        }
    }

    ctx->verdict = res;
    ctx->err = err;

    if (final
        || (res != NGX_HTTP_AUTH_JWT_NO_KEY
            && res != NGX_HTTP_AUTH_JWT_KEY_UNAVAILABLE))
    {
        ctx->verified = 1;
    }
}


/*
 * A JWE: decrypted with the first key that authenticates it; its
 * plaintext is the claims (encrypted) or a JWS whose signature is then
 * verified with the location's signing keys (nested).
 */

static ngx_http_auth_jwt_result_e
ngx_http_auth_jwt_encrypted(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_http_auth_jwt_ctx_t *ctx,
    u_char *fp, const char **err)
{
    ngx_int_t                    rc;
    ngx_str_t                    plain;
    ngx_http_auth_jwt_result_e   res;

    if (ctx->jwt.payload == NULL) {
        res = ngx_http_auth_jwt_decrypt(r, jlcf, &ctx->jwe, &plain, err);
        if (res != NGX_HTTP_AUTH_JWT_OK) {
            return res;
        }

        if (jlcf->type == NGX_HTTP_AUTH_JWT_ENCRYPTED) {
            rc = ngx_http_auth_jwt_json_object(&plain, &ctx->jwt.payload);

            ctx->payload = ctx->jwt.payload;
            ctx->payload_text = plain;

            if (rc != NGX_OK) {
                *err = "JWE plaintext is not a JSON object";
                return NGX_HTTP_AUTH_JWT_MALFORMED;
            }

            return NGX_HTTP_AUTH_JWT_OK;
        }

        /* nested: the claims and header are those of the inner JWS */

        ctx->outer = ctx->jwe.header;
        ctx->header = NULL;
        ctx->inner = plain;

        res = ngx_http_auth_jwt_parse(r->pool, &plain, &ctx->jwt, err);

        ctx->header = ctx->jwt.header;
        ctx->payload = ctx->jwt.payload;
        ctx->header_text = ctx->jwt.header_text;
        ctx->payload_text = ctx->jwt.payload_text;

        if (res != NGX_HTTP_AUTH_JWT_OK) {
            return res;
        }
    }

    if (jlcf->type == NGX_HTTP_AUTH_JWT_ENCRYPTED) {
        return NGX_HTTP_AUTH_JWT_OK;
    }

    return ngx_http_auth_jwt_signature(r, jlcf, &ctx->jwt, fp, err);
}


static ngx_http_auth_jwt_result_e
ngx_http_auth_jwt_decrypt(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_http_auth_jwt_jwe_t *jwe,
    ngx_str_t *plain, const char **err)
{
    ngx_int_t                    rc;
    ngx_uint_t                   i, j, tries, sets, unloaded;
    ngx_http_auth_jwt_key_t     *key;
    ngx_http_auth_jwt_keyset_t  *ks;

    tries = 0;
    unloaded = 0;

    sets = (jlcf->key_files ? jlcf->key_files->nelts : 0)
           + (jlcf->sources ? jlcf->sources->nelts : 0);

    for (i = 0; i < sets; i++) {

        if (ngx_http_auth_jwt_set(r, jlcf, i, &ks) == NGX_ERROR) {
            *err = "a key set named at run time is unusable";
            return NGX_HTTP_AUTH_JWT_ERROR;
        }

        if (ks == NULL) {
            unloaded++;
            continue;
        }

        key = ks->keys.elts;

        for (j = 0; j < ks->keys.nelts; j++) {

            if (!(key[j].jwe & (1 << jwe->alg))) {
                continue;
            }

            if (jwe->has_kid && key[j].kid.len
                && (key[j].kid.len != jwe->kid.len
                    || ngx_memcmp(key[j].kid.data, jwe->kid.data,
                                  jwe->kid.len) != 0))
            {
                continue;
            }

            if (tries++ == NGX_HTTP_AUTH_JWT_MAX_TRIES) {
                *err = "too many candidate keys";
                return NGX_HTTP_AUTH_JWT_BAD_SIGNATURE;
            }

            rc = ngx_http_auth_jwt_jwe_decrypt(r->pool, &key[j], jwe, plain);

            if (rc == NGX_OK) {
                return NGX_HTTP_AUTH_JWT_OK;
            }

            if (rc == NGX_ERROR) {
                *err = "decryption error";
                return NGX_HTTP_AUTH_JWT_ERROR;
            }
        }
    }

    if (tries) {

        /* one reason for every failure: no oracle */

        *err = "JWE decryption failed";
        return NGX_HTTP_AUTH_JWT_BAD_SIGNATURE;
    }

    if (unloaded == sets) {
        *err = "no keys could be loaded";
        return NGX_HTTP_AUTH_JWT_KEY_UNAVAILABLE;
    }

    *err = "no key matches the token's \"kid\" and \"alg\"";

    return NGX_HTTP_AUTH_JWT_NO_KEY;
}


/*
 * What can be told of the request's token without keys, found once per
 * request: no token, or (parse) a token that is no well-formed JWS.  The
 * parsed token is kept for the verification.
 */

static ngx_http_auth_jwt_result_e
ngx_http_auth_jwt_prepare(ngx_http_request_t *r, ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_uint_t parse)
{
    const char                  *err;
    ngx_http_auth_jwt_result_e   res;

    if (ctx->pre == NGX_HTTP_AUTH_JWT_NONE) {
        ctx->pre = NGX_HTTP_AUTH_JWT_OK;

        if (ngx_http_auth_jwt_get_token(r, jlcf, &ctx->token) != NGX_OK) {
            ctx->pre = NGX_HTTP_AUTH_JWT_ERROR;

        } else if (ctx->token.len == 0) {
            ctx->pre = NGX_HTTP_AUTH_JWT_MISSING;
            ctx->pre_err = "no token";
        }
    }

    if (ctx->pre != NGX_HTTP_AUTH_JWT_OK || !parse || ctx->parsed) {
        return ctx->pre;
    }

    ctx->parsed = 1;
    err = NULL;

    if (jlcf->type != NGX_HTTP_AUTH_JWT_SIGNED) {
        res = ngx_http_auth_jwt_jwe_parse(r->pool, &ctx->token, &ctx->jwe,
                                          &err);

        /* the JWE header: $jwt_header_* of an encrypted token */

        ctx->header = ctx->jwe.header;
        ctx->header_text = ctx->jwe.header_text;

        if (res != NGX_HTTP_AUTH_JWT_OK) {
            ctx->pre = res;
            ctx->pre_err = err;
        }

        return ctx->pre;
    }

    res = ngx_http_auth_jwt_parse(r->pool, &ctx->token, &ctx->jwt, &err);

    /* the request's context owns (and releases) the JSON values */

    ctx->header = ctx->jwt.header;
    ctx->payload = ctx->jwt.payload;
    ctx->header_text = ctx->jwt.header_text;
    ctx->payload_text = ctx->jwt.payload_text;

    if (res != NGX_HTTP_AUTH_JWT_OK) {
        ctx->pre = res;
        ctx->pre_err = err;
    }

    return ctx->pre;
}


static ngx_int_t
ngx_http_auth_jwt_get_token(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_str_t *token)
{
    u_char           *p, *last;
    ngx_table_elt_t  *h;

    token->len = 0;
    token->data = NULL;

    if (jlcf->token) {
        return ngx_http_complex_value(r, jlcf->token, token);
    }

    h = r->headers_in.authorization;
    if (h == NULL) {
        return NGX_OK;
    }

    p = h->value.data;
    last = p + h->value.len;

    if (h->value.len < sizeof("Bearer ") - 1
        || ngx_strncasecmp(p, (u_char *) "Bearer ", 7) != 0)
    {
        return NGX_OK;
    }

    p += 7;

    while (p < last && *p == ' ') {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    token->data = p;
    token->len = last - p;

    return NGX_OK;
}


static ngx_http_auth_jwt_result_e
ngx_http_auth_jwt_signature(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_http_auth_jwt_token_t *jwt,
    u_char *fp, const char **err)
{
    ngx_int_t                     rc;
    ngx_uint_t                    i, j, tries, sets, unloaded;
    ngx_http_auth_jwt_key_t      *key;
    ngx_http_auth_jwt_keyset_t   *ks;

    tries = 0;
    unloaded = 0;

    sets = (jlcf->key_files ? jlcf->key_files->nelts : 0)
           + (jlcf->sources ? jlcf->sources->nelts : 0);

    for (i = 0; i < sets; i++) {

        rc = ngx_http_auth_jwt_set(r, jlcf, i, &ks);

        if (rc == NGX_ERROR) {
            *err = "a key set named at run time is unusable";
            return NGX_HTTP_AUTH_JWT_ERROR;
        }

        if (ks == NULL) {
            unloaded++;
            continue;
        }

        key = ks->keys.elts;

        for (j = 0; j < ks->keys.nelts; j++) {

            if (!(key[j].algs & (1 << jwt->alg))) {
                continue;
            }

            if (jwt->has_kid && key[j].kid.len
                && (key[j].kid.len != jwt->kid.len
                    || ngx_memcmp(key[j].kid.data, jwt->kid.data,
                                  jwt->kid.len) != 0))
            {
                continue;
            }

            if (tries++ == NGX_HTTP_AUTH_JWT_MAX_TRIES) {
                *err = "too many candidate keys";
                return NGX_HTTP_AUTH_JWT_BAD_SIGNATURE;
            }

            if (ngx_http_auth_jwt_verify(&key[j], jwt) == NGX_OK) {
                ngx_memcpy(fp, key[j].fp, NGX_HTTP_AUTH_JWT_FP_LEN);
                return NGX_HTTP_AUTH_JWT_OK;
            }
        }
    }

    if (tries) {
        *err = "signature verification failed";
        return NGX_HTTP_AUTH_JWT_BAD_SIGNATURE;
    }

    if (unloaded == sets) {
        *err = "no keys could be loaded";
        return NGX_HTTP_AUTH_JWT_KEY_UNAVAILABLE;
    }

    *err = "no key matches the token's \"kid\" and \"alg\"";

    return NGX_HTTP_AUTH_JWT_NO_KEY;
}


/*
 * The i-th key set of the location: key files first, then fetched sets
 * (NULL while not fetched yet).  A name with variables is made for the
 * request here; NGX_ERROR (logged) when it cannot be, or the file cannot
 * be loaded.
 */

static ngx_int_t
ngx_http_auth_jwt_set(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_uint_t i,
    ngx_http_auth_jwt_keyset_t **out)
{
    ngx_str_t                       path;
    ngx_uint_t                      n;
    ngx_http_auth_jwt_keyset_t     *ks, **files;
    ngx_http_auth_jwt_source_t    **srcs, *src;
    ngx_http_auth_jwt_main_conf_t  *jmcf;

    n = jlcf->key_files ? jlcf->key_files->nelts : 0;

    if (i >= n) {
        srcs = jlcf->sources->elts;

        src = ngx_http_auth_jwt_resolve(r, srcs[i - n]);
        if (src == NULL) {
            return NGX_ERROR;
        }

        *out = src->keyset;
        return NGX_OK;
    }

    files = jlcf->key_files->elts;
    ks = files[i];

    if (ks->tmpl == NULL) {
        *out = ks;
        return NGX_OK;
    }

    if (ngx_http_auth_jwt_template_value(r, ks->tmpl, &path) != NGX_OK) {
        return NGX_ERROR;
    }

    jmcf = ngx_http_get_module_main_conf(r, ngx_http_auth_jwt_module);

    *out = ngx_http_auth_jwt_file_keyset(r, &path, jmcf->keys_max);

    return *out ? NGX_OK : NGX_ERROR;
}


/* the source for this request of a (possibly run-time) JWKS URI */

static ngx_http_auth_jwt_source_t *
ngx_http_auth_jwt_resolve(ngx_http_request_t *r,
    ngx_http_auth_jwt_source_t *src)
{
    ngx_str_t  uri;

    if (src->tmpl == NULL) {
        return src;
    }

    if (ngx_http_auth_jwt_template_value(r, src->tmpl, &uri) != NGX_OK) {
        return NULL;
    }

    return ngx_http_auth_jwt_uri_source(r, &uri, src->keys_max);
}


static ngx_http_auth_jwt_key_t *
ngx_http_auth_jwt_find_fp(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, u_char *fp, ngx_uint_t alg)
{
    ngx_uint_t                    i, j, sets;
    ngx_http_auth_jwt_key_t      *key;
    ngx_http_auth_jwt_keyset_t   *ks;

    sets = (jlcf->key_files ? jlcf->key_files->nelts : 0)
           + (jlcf->sources ? jlcf->sources->nelts : 0);

    for (i = 0; i < sets; i++) {
        if (ngx_http_auth_jwt_set(r, jlcf, i, &ks) != NGX_OK || ks == NULL) {
            continue;
        }

        key = ks->keys.elts;

        for (j = 0; j < ks->keys.nelts; j++) {
            if ((key[j].algs & (1 << alg))
                && ngx_memcmp(key[j].fp, fp, NGX_HTTP_AUTH_JWT_FP_LEN) == 0)
            {
                return &key[j];
            }
        }
    }

    return NULL;
}


/* exp and nbf: NumericDate (a JSON number) when present */

static ngx_http_auth_jwt_result_e
ngx_http_auth_jwt_get_times(json_t *payload, ngx_http_auth_jwt_times_t *t,
    const char **err)
{
    json_t  *v;

    ngx_memzero(t, sizeof(ngx_http_auth_jwt_times_t));

    v = json_object_get(payload, "exp");
    if (v != NULL) {
        if (!json_is_number(v)) {
            *err = "\"exp\" is not a NumericDate";
            return NGX_HTTP_AUTH_JWT_MALFORMED;
        }

        t->exp = json_number_value(v);
        t->has_exp = 1;
    }

    v = json_object_get(payload, "nbf");
    if (v != NULL) {
        if (!json_is_number(v)) {
            *err = "\"nbf\" is not a NumericDate";
            return NGX_HTTP_AUTH_JWT_MALFORMED;
        }

        t->nbf = json_number_value(v);
        t->has_nbf = 1;
    }

    return NGX_HTTP_AUTH_JWT_OK;
}


static ngx_http_auth_jwt_result_e
ngx_http_auth_jwt_claims(ngx_http_auth_jwt_loc_conf_t *jlcf,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_times_t *t,
    const char **err)
{
    double       now;
    json_t      *v, *payload;
    ngx_str_t   *s;
    ngx_uint_t   i;

    now = ngx_http_auth_jwt_now();

    if (t->has_exp && now >= t->exp + (double) jlcf->leeway) {
        *err = "the token has expired";
        return NGX_HTTP_AUTH_JWT_EXPIRED;
    }

    if (t->has_nbf && now + (double) jlcf->leeway < t->nbf) {
        *err = "the token is not valid yet";
        return NGX_HTTP_AUTH_JWT_NOT_YET_VALID;
    }

    if (jlcf->issuers == NULL && jlcf->audiences == NULL) {
        return NGX_HTTP_AUTH_JWT_OK;
    }

    payload = ngx_http_auth_jwt_part(ctx, 0);
    if (payload == NULL) {
        *err = "payload is not a JSON object";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    if (jlcf->issuers) {
        v = json_object_get(payload, "iss");
        s = jlcf->issuers->elts;

        for (i = 0; i < jlcf->issuers->nelts; i++) {
            if (json_is_string(v) && ngx_http_auth_jwt_has_string(v, &s[i])) {
                break;
            }
        }

        if (i == jlcf->issuers->nelts) {
            *err = "issuer not accepted";
            return NGX_HTTP_AUTH_JWT_BAD_ISSUER;
        }
    }

    if (jlcf->audiences) {
        v = json_object_get(payload, "aud");
        s = jlcf->audiences->elts;

        for (i = 0; i < jlcf->audiences->nelts; i++) {
            if (v && ngx_http_auth_jwt_has_string(v, &s[i])) {
                break;
            }
        }

        if (i == jlcf->audiences->nelts) {
            *err = "audience not accepted";
            return NGX_HTTP_AUTH_JWT_BAD_AUDIENCE;
        }
    }

    return NGX_HTTP_AUTH_JWT_OK;
}


/* v is s, or an array with an element s */

static ngx_int_t
ngx_http_auth_jwt_has_string(json_t *v, ngx_str_t *s)
{
    size_t   i;
    json_t  *e;

    if (json_is_string(v)) {
        return json_string_length(v) == s->len
               && ngx_memcmp(json_string_value(v), s->data, s->len) == 0;
    }

    if (!json_is_array(v)) {
        return 0;
    }

    for (i = 0; i < json_array_size(v); i++) {
        e = json_array_get(v, i);

        if (json_is_string(e) && ngx_http_auth_jwt_has_string(e, s)) {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_http_auth_jwt_scope(ngx_http_auth_jwt_loc_conf_t *jlcf, json_t *payload)
{
    ngx_str_t   *s;
    ngx_uint_t   i, found;

    s = jlcf->scopes->elts;
    found = 0;

    for (i = 0; i < jlcf->scopes->nelts; i++) {
        if (ngx_http_auth_jwt_has_scope(payload, &s[i])) {
            found++;
        }
    }

    if (jlcf->scope_any ? found > 0 : found == jlcf->scopes->nelts) {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_auth_jwt_has_scope(json_t *payload, ngx_str_t *s)
{
    size_t   i;
    json_t  *v, *e;

    v = json_object_get(payload, "scope");

    if (json_is_string(v) && ngx_http_auth_jwt_word(json_string_value(v), s))
    {
        return 1;
    }

    v = json_object_get(payload, "scp");

    if (json_is_string(v) && ngx_http_auth_jwt_word(json_string_value(v), s))
    {
        return 1;
    }

    if (json_is_array(v)) {
        for (i = 0; i < json_array_size(v); i++) {
            e = json_array_get(v, i);

            if (json_is_string(e) && ngx_http_auth_jwt_has_string(e, s)) {
                return 1;
            }
        }
    }

    return 0;
}


/* s is one of the space-separated words of list */

static ngx_int_t
ngx_http_auth_jwt_word(const char *list, ngx_str_t *s)
{
    const char  *p, *end;

    p = list;

    while (*p) {
        while (*p == ' ') {
            p++;
        }

        end = p;
        while (*end && *end != ' ') {
            end++;
        }

        if ((size_t) (end - p) == s->len
            && ngx_memcmp(p, s->data, s->len) == 0)
        {
            return 1;
        }

        p = end;
    }

    return 0;
}


static ngx_int_t
ngx_http_auth_jwt_require(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_int_t *status)
{
    ngx_str_t                     val;
    ngx_uint_t                    i, j;
    ngx_http_complex_value_t     *cv;
    ngx_http_auth_jwt_require_t  *req;

    req = jlcf->requires->elts;

    for (i = 0; i < jlcf->requires->nelts; i++) {
        cv = req[i].values->elts;

        for (j = 0; j < req[i].values->nelts; j++) {
            if (ngx_http_complex_value(r, &cv[j], &val) != NGX_OK) {
                *status = NGX_HTTP_UNAUTHORIZED;
                return NGX_ERROR;
            }

            if (val.len == 0 || (val.len == 1 && val.data[0] == '0')) {
                *status = req[i].status;
                return NGX_DECLINED;
            }
        }
    }

    return NGX_OK;
}


/*
 * A cached entry: the alg index (1 byte), the key's fingerprint, flags
 * (1 byte: exp, nbf present), exp and nbf (doubles), the length of the
 * header JSON (4 bytes), the header JSON, the payload JSON.  A hit needs
 * no JSON parsing unless claims are looked at.
 */

#define NGX_HTTP_AUTH_JWT_ENTRY_HEAD                                          \
    (1 + NGX_HTTP_AUTH_JWT_FP_LEN + 1 + 2 * sizeof(double) + 4)


static ngx_int_t
ngx_http_auth_jwt_cache_get(ngx_http_request_t *r,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_loc_conf_t *jlcf,
    ngx_str_t *key, ngx_http_auth_jwt_times_t *t)
{
    u_char                         *p, *last;
    size_t                          hlen;
    ngx_str_t                       value;
    ngx_http_auth_jwt_main_conf_t  *jmcf;

    jmcf = ngx_http_get_module_main_conf(r, ngx_http_auth_jwt_module);

    if (ngx_meshgate_cache_get(jmcf->cache, key, r->pool, &value, NULL)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (value.len < NGX_HTTP_AUTH_JWT_ENTRY_HEAD
        || value.data[0] >= NGX_HTTP_AUTH_JWT_NALGS)
    {
        return NGX_DECLINED;
    }

    p = value.data;
    last = value.data + value.len;

    if (ngx_http_auth_jwt_find_fp(r, jlcf, p + 1, p[0]) == NULL) {
        /* verified with a key that this location does not trust */
        return NGX_DECLINED;
    }

    p += 1 + NGX_HTTP_AUTH_JWT_FP_LEN;

    ngx_memzero(t, sizeof(ngx_http_auth_jwt_times_t));
    t->has_exp = (p[0] & 1) ? 1 : 0;
    t->has_nbf = (p[0] & 2) ? 1 : 0;
    p++;

    ngx_memcpy(&t->exp, p, sizeof(double));
    p += sizeof(double);
    ngx_memcpy(&t->nbf, p, sizeof(double));
    p += sizeof(double);

    hlen = (size_t) p[0] | (size_t) p[1] << 8 | (size_t) p[2] << 16
           | (size_t) p[3] << 24;
    p += 4;

    if (hlen > (size_t) (last - p)) {
        return NGX_DECLINED;
    }

    ctx->header_text.data = p;
    ctx->header_text.len = hlen;
    ctx->payload_text.data = p + hlen;
    ctx->payload_text.len = last - (p + hlen);

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "auth_jwt: cache hit");

    return NGX_OK;
}


static void
ngx_http_auth_jwt_cache_set(ngx_http_request_t *r, ngx_str_t *key,
    ngx_http_auth_jwt_token_t *jwt, u_char *fp, ngx_http_auth_jwt_times_t *t)
{
    u_char                         *p;
    double                          exp;
    uint64_t                        now, expires;
    ngx_str_t                       value;
    ngx_http_auth_jwt_main_conf_t  *jmcf;

    jmcf = ngx_http_get_module_main_conf(r, ngx_http_auth_jwt_module);

    now = ngx_meshgate_now_ms();
    expires = now + NGX_HTTP_AUTH_JWT_CACHE_NOEXP * 1000;

    if (t->has_exp) {
        exp = t->exp * 1000;

        if (exp <= (double) now) {
            return;
        }

        if (exp < (double) expires) {
            expires = (uint64_t) exp;
        }
    }

    if (t->has_nbf && t->nbf * 1000 > (double) now) {
        return;
    }

    value.len = NGX_HTTP_AUTH_JWT_ENTRY_HEAD + jwt->header_text.len
                + jwt->payload_text.len;
    value.data = ngx_pnalloc(r->pool, value.len);
    if (value.data == NULL) {
        return;
    }

    p = value.data;
    *p++ = (u_char) jwt->alg;
    p = ngx_cpymem(p, fp, NGX_HTTP_AUTH_JWT_FP_LEN);
    *p++ = (u_char) (t->has_exp | t->has_nbf << 1);
    p = ngx_cpymem(p, &t->exp, sizeof(double));
    p = ngx_cpymem(p, &t->nbf, sizeof(double));
    *p++ = (u_char) (jwt->header_text.len & 0xff);
    *p++ = (u_char) ((jwt->header_text.len >> 8) & 0xff);
    *p++ = (u_char) ((jwt->header_text.len >> 16) & 0xff);
    *p++ = (u_char) ((jwt->header_text.len >> 24) & 0xff);
    p = ngx_cpymem(p, jwt->header_text.data, jwt->header_text.len);
    ngx_memcpy(p, jwt->payload_text.data, jwt->payload_text.len);

    if (ngx_meshgate_cache_set(jmcf->cache, key, &value, expires) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "auth_jwt: could not cache a verified token");
    }
}


/* the header or payload JSON, parsed on first use after a cache hit */

static json_t *
ngx_http_auth_jwt_part(ngx_http_auth_jwt_ctx_t *ctx, ngx_uint_t header)
{
    json_t     **v;
    ngx_str_t   *text;

    v = header ? &ctx->header : &ctx->payload;
    text = header ? &ctx->header_text : &ctx->payload_text;

    if (*v == NULL && text->len) {
        (void) ngx_http_auth_jwt_json_object(text, v);
    }

    return *v;
}


static ngx_int_t
ngx_http_auth_jwt_challenge(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, char *error)
{
    u_char           *p;
    size_t            len;
    ngx_str_t         realm;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    if (ngx_http_complex_value(r, jlcf->realm, &realm) != NGX_OK) {
        return NGX_ERROR;
    }

    len = sizeof("Bearer realm=\"\"") - 1 + 2 * realm.len;
    if (error) {
        len += sizeof(", error=\"\"") - 1 + ngx_strlen(error);
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "WWW-Authenticate");
    h->value.data = p;

    p = ngx_cpymem(p, "Bearer realm=\"", sizeof("Bearer realm=\"") - 1);

    for (i = 0; i < realm.len; i++) {
        if (realm.data[i] < 0x20 || realm.data[i] == 0x7f) {
            continue;
        }

        if (realm.data[i] == '"' || realm.data[i] == '\\') {
            *p++ = '\\';
        }

        *p++ = realm.data[i];
    }

    *p++ = '"';

    if (error) {
        p = ngx_sprintf(p, ", error=\"%s\"", error);
    }

    h->value.len = p - h->value.data;

    r->headers_out.www_authenticate = h;

    return NGX_OK;
}


static double
ngx_http_auth_jwt_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (double) tp->sec + (double) tp->msec / 1000;
}


/* variables */

static ngx_http_auth_jwt_ctx_t *
ngx_http_auth_jwt_lazy(ngx_http_request_t *r)
{
    ngx_http_auth_jwt_ctx_t       *ctx;
    ngx_http_auth_jwt_loc_conf_t  *jlcf;

    if (r != r->main) {
        ctx = ngx_http_get_module_ctx(r->main, ngx_http_auth_jwt_module);
        return (ctx && ctx->verified) ? ctx : NULL;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_auth_jwt_module);

    if (ctx == NULL || (!ctx->verified && !ctx->waiting)) {
        jlcf = ngx_http_get_module_loc_conf(r, ngx_http_auth_jwt_module);

        if (jlcf->key_files == NULL && jlcf->sources == NULL) {
            return ctx;
        }

        ctx = ngx_http_auth_jwt_get_ctx(r);
        if (ctx == NULL) {
            return NULL;
        }

        if (!ctx->waiting) {
            ngx_http_auth_jwt_check(r, ctx, jlcf, 0);
        }
    }

    return ctx;
}


static ngx_int_t
ngx_http_auth_jwt_trusted(ngx_http_auth_jwt_ctx_t *ctx)
{
    return ctx != NULL && ctx->verified
           && ctx->verdict == NGX_HTTP_AUTH_JWT_OK;
}


static ngx_int_t
ngx_http_auth_jwt_claim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                *name = (ngx_str_t *) data;

    ngx_str_t                 claim;
    ngx_http_auth_jwt_ctx_t  *ctx;

    ctx = ngx_http_auth_jwt_lazy(r);

    if (!ngx_http_auth_jwt_trusted(ctx)) {
        v->not_found = 1;
        return NGX_OK;
    }

    claim.data = name->data + sizeof("jwt_claim_") - 1;
    claim.len = name->len - (sizeof("jwt_claim_") - 1);

    return ngx_http_auth_jwt_json_variable(r, v,
                                           ngx_http_auth_jwt_part(ctx, 0),
                                           &claim, "auth_jwt: claim");
}


static ngx_int_t
ngx_http_auth_jwt_header_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                *name = (ngx_str_t *) data;

    ngx_str_t                 param;
    ngx_http_auth_jwt_ctx_t  *ctx;

    ctx = ngx_http_auth_jwt_lazy(r);

    if (!ngx_http_auth_jwt_trusted(ctx)) {
        v->not_found = 1;
        return NGX_OK;
    }

    param.data = name->data + sizeof("jwt_header_") - 1;
    param.len = name->len - (sizeof("jwt_header_") - 1);

    return ngx_http_auth_jwt_json_variable(r, v,
                                           ngx_http_auth_jwt_part(ctx, 1),
                                           &param, "auth_jwt: header");
}


/*
 * A top-level member.  nginx folds variable names to lower case, so a
 * member whose name matches only without regard to case serves too, but
 * only when it is the one such member: a name that matches nothing (or
 * two members) reads as not found, never as some other member.
 */

static ngx_int_t
ngx_http_auth_jwt_json_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, json_t *root, ngx_str_t *name,
    const char *what)
{
    char        buf[256];
    json_t      *m, *found;
    const char  *k;

    v->not_found = 1;

    if (root == NULL || name->len == 0 || name->len >= sizeof(buf)) {
        return NGX_OK;
    }

    ngx_memcpy(buf, name->data, name->len);
    buf[name->len] = '\0';

    found = json_object_get(root, buf);

    if (found == NULL) {
        json_object_foreach(root, k, m) {
            if (ngx_strlen(k) != name->len
                || ngx_strncasecmp((u_char *) k, name->data, name->len) != 0)
            {
                continue;
            }

            if (found != NULL) {
                return NGX_OK;
            }

            found = m;
        }
    }

    if (found == NULL) {
        return NGX_OK;
    }

    return ngx_http_auth_jwt_value(r, v, found, what, name);
}


/*
 * The text of a JSON value from a token into v: a value that holds a
 * control byte (a decoded "\r\n", say) reads as empty with a warning, so
 * that no claim ever splits a header line or a log line.
 */

static ngx_int_t
ngx_http_auth_jwt_value(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    json_t *value, const char *what, ngx_str_t *name)
{
    ngx_str_t  text;

    if (ngx_meshgate_json_text(r->pool, value, &text) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_meshgate_variable_set_text(r, v, what, name, text.data, text.len);
    v->no_cacheable = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_jwt_payload_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                *text;
    ngx_http_auth_jwt_ctx_t  *ctx;

    ctx = ngx_http_auth_jwt_lazy(r);

    if (!ngx_http_auth_jwt_trusted(ctx)) {
        v->not_found = 1;
        return NGX_OK;
    }

    /*
     * JSON text may hold raw CR LF between its tokens (RFC 7515 A.1); a
     * nested token gives its inner JWS, as Plus does
     */

    text = ctx->inner.len ? &ctx->inner : &ctx->payload_text;

    ngx_meshgate_variable_set_text(r, v, "auth_jwt: variable",
                                   &ngx_http_auth_jwt_payload_name,
                                   text->data, text->len);
    v->no_cacheable = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_jwt_result_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_pool_cleanup_t       *cln;
    ngx_http_auth_jwt_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_auth_jwt_module);

    /*
     * an internal redirect (an error page) clears module contexts: the
     * decision is found again through its pool cleanup, as realip does
     */

    for (cln = r->main->pool->cleanup;
         (ctx == NULL || !ctx->done) && cln;
         cln = cln->next)
    {
        if (cln->handler == ngx_http_auth_jwt_ctx_cleanup) {
            ctx = cln->data;
        }
    }

    if (ctx == NULL || !ctx->done) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = ngx_http_auth_jwt_result_names[ctx->result].data;
    v->len = ngx_http_auth_jwt_result_names[ctx->result].len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_jwt_set_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_auth_jwt_var_t  *var = (ngx_http_auth_jwt_var_t *) data;

    json_t                   *m;
    ngx_str_t                *names;
    ngx_uint_t                i;
    ngx_http_auth_jwt_ctx_t  *ctx;

    v->not_found = 1;

    ctx = ngx_http_auth_jwt_lazy(r);

    if (!ngx_http_auth_jwt_trusted(ctx)) {
        return NGX_OK;
    }

    m = ngx_http_auth_jwt_part(ctx, var->header);
    names = var->names.elts;

    for (i = 0; m != NULL && i < var->names.nelts; i++) {
        if (!json_is_object(m)) {
            return NGX_OK;
        }

        m = json_object_get(m, (const char *) names[i].data);
    }

    if (m == NULL) {
        return NGX_OK;
    }

    return ngx_http_auth_jwt_value(r, v, m,
                                   var->header ? "auth_jwt: header path"
                                               : "auth_jwt: claim path",
                                   &var->var);
}


/* configuration */

static ngx_int_t
ngx_http_auth_jwt_add_variables(ngx_conf_t *cf)
{
    return ngx_meshgate_add_variables(cf, ngx_http_auth_jwt_vars);
}


static void *
ngx_http_auth_jwt_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_auth_jwt_main_conf_t  *jmcf;

    jmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_jwt_main_conf_t));
    if (jmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     jmcf->cache = NULL;
     */

    if (ngx_array_init(&jmcf->sources, cf->pool, 2,
                       sizeof(ngx_http_auth_jwt_source_t *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&jmcf->files, cf->pool, 2,
                       sizeof(ngx_http_auth_jwt_file_t))
        != NGX_OK)
    {
        return NULL;
    }

    jmcf->keys_max = NGX_CONF_UNSET_UINT;

    return jmcf;
}


/*
 * Key files are read where their directive stands, before the whole http
 * block is known: their sizes are checked against auth_jwt_key_set_max
 * here.
 */

static char *
ngx_http_auth_jwt_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_auth_jwt_main_conf_t *jmcf = conf;

    ngx_uint_t                 i;
    ngx_http_auth_jwt_file_t  *f;

    ngx_conf_init_uint_value(jmcf->keys_max, NGX_HTTP_AUTH_JWT_KEYS_MAX);

    if (jmcf->keys_max == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"auth_jwt_key_set_max\" must be at least 1");
        return NGX_CONF_ERROR;
    }

    f = jmcf->files.elts;

    for (i = 0; i < jmcf->files.nelts; i++) {
        if (f[i].keyset->count > jmcf->keys_max) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "key file \"%V\" holds %ui keys, more than "
                          "auth_jwt_key_set_max %ui in %V:%ui", &f[i].name,
                          f[i].keyset->count, jmcf->keys_max,
                          &f[i].conf_file, f[i].line);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_auth_jwt_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_auth_jwt_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_jwt_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->realm = NULL;
     *     conf->token = NULL;
     *     conf->scope_any = 0;
     *     conf->file = { 0, NULL };
     *     conf->line = 0;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->key_files = NGX_CONF_UNSET_PTR;
    conf->sources = NGX_CONF_UNSET_PTR;
    conf->requires = NGX_CONF_UNSET_PTR;
    conf->issuers = NGX_CONF_UNSET_PTR;
    conf->audiences = NGX_CONF_UNSET_PTR;
    conf->scopes = NGX_CONF_UNSET_PTR;
    conf->key_cache = NGX_CONF_UNSET;
    conf->leeway = NGX_CONF_UNSET;
    conf->type = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_auth_jwt_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_auth_jwt_loc_conf_t *prev = parent;
    ngx_http_auth_jwt_loc_conf_t *conf = child;

    if (conf->enable == NGX_CONF_UNSET) {
        conf->enable = prev->enable;
        conf->realm = prev->realm;
        conf->token = prev->token;
        conf->file = prev->file;
        conf->line = prev->line;
    }

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_ptr_value(conf->key_files, prev->key_files, NULL);
    ngx_conf_merge_ptr_value(conf->sources, prev->sources, NULL);

    if (ngx_http_auth_jwt_merge_sources(cf, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }
    ngx_conf_merge_ptr_value(conf->requires, prev->requires, NULL);
    ngx_conf_merge_ptr_value(conf->issuers, prev->issuers, NULL);
    ngx_conf_merge_ptr_value(conf->audiences, prev->audiences, NULL);

    if (conf->scopes == NGX_CONF_UNSET_PTR) {
        conf->scopes = prev->scopes;
        conf->scope_any = prev->scope_any;
    }

    ngx_conf_merge_ptr_value(conf->scopes, prev->scopes, NULL);
    ngx_conf_merge_sec_value(conf->key_cache, prev->key_cache, 0);
    ngx_conf_merge_sec_value(conf->leeway, prev->leeway, 0);
    ngx_conf_merge_uint_value(conf->type, prev->type,
                              NGX_HTTP_AUTH_JWT_SIGNED);

    if (conf->enable == 1 && conf->key_files == NULL
        && conf->sources == NULL)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"auth_jwt\" is enabled but no key is configured "
                      "(auth_jwt_key_file or auth_jwt_key_request) "
                      "in %V:%ui", &conf->file, conf->line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_auth_jwt_init(ngx_conf_t *cf)
{
    ngx_uint_t                       i;
    ngx_http_handler_pt             *h;
    ngx_http_core_main_conf_t       *cmcf;
    ngx_http_auth_jwt_source_t     **srcs;
    ngx_http_auth_jwt_main_conf_t   *jmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_auth_jwt_handler;

    /* every source is known now, those of inherited directives too */

    jmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_auth_jwt_module);
    srcs = jmcf->sources.elts;

    for (i = 0; i < jmcf->sources.nelts; i++) {
        srcs[i]->keys_max = jmcf->keys_max;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_jwt_init_process(ngx_cycle_t *cycle)
{
    ngx_http_auth_jwt_md_init();

    return NGX_OK;
}


/* the key sets fetched by this worker, and its digests */

static void
ngx_http_auth_jwt_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i;
    ngx_http_auth_jwt_source_t     **srcs;
    ngx_http_auth_jwt_main_conf_t   *jmcf;

    ngx_http_auth_jwt_md_free();
    ngx_http_auth_jwt_var_free();
    ngx_http_auth_jwt_jwe_free();

    jmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_auth_jwt_module);
    if (jmcf == NULL) {
        return;
    }

    srcs = jmcf->sources.elts;

    for (i = 0; i < jmcf->sources.nelts; i++) {
        ngx_http_auth_jwt_keyset_free(srcs[i]->keyset);
        srcs[i]->keyset = NULL;
    }
}


static char *
ngx_http_auth_jwt(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_jwt_loc_conf_t *jlcf = conf;

    ngx_str_t                         *value, s;
    ngx_http_compile_complex_value_t   ccv;

    if (jlcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    jlcf->file = cf->conf_file->file.name;
    jlcf->line = cf->conf_file->line;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (cf->args->nelts != 2) {
            return "takes no token= with \"off\"";
        }

        jlcf->enable = 0;
        return NGX_CONF_OK;
    }

    jlcf->enable = 1;

    jlcf->realm = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (jlcf->realm == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = jlcf->realm;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 2) {
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value[2].data, "token=", 6) != 0 || value[2].len == 6) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\", expected "
                           "token=$variable", &value[2]);
        return NGX_CONF_ERROR;
    }

    s.data = value[2].data + 6;
    s.len = value[2].len - 6;

    jlcf->token = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (jlcf->token == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = &s;
    ccv.complex_value = jlcf->token;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_key_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_jwt_loc_conf_t *jlcf = conf;

    u_char                         *buf;
    ssize_t                         n;
    ngx_fd_t                        fd;
    ngx_str_t                      *value, name;
    ngx_file_t                      file;
    ngx_file_info_t                 fi;
    const char                     *err;
    ngx_http_auth_jwt_file_t       *f;
    ngx_http_auth_jwt_keyset_t     *ks, **pks;
    ngx_http_auth_jwt_main_conf_t  *jmcf;

    value = cf->args->elts;
    name = value[1];

    if (ngx_http_script_variables_count(&name) != 0) {

        /* named per request: a placeholder that holds the template */

        ks = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_jwt_keyset_t));
        if (ks == NULL) {
            return NGX_CONF_ERROR;
        }

        ks->tmpl = ngx_http_auth_jwt_template(cf, &name, 0);
        if (ks->tmpl == NULL) {
            return NGX_CONF_ERROR;
        }

        goto add;
    }

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &name);
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.fd = fd;
    file.name = name;
    file.log = cf->log;

    buf = NULL;
    n = NGX_ERROR;

    if (ngx_fd_info(fd, &fi) != NGX_FILE_ERROR
        && ngx_file_size(&fi) <= 1024 * 1024)
    {
        buf = ngx_pnalloc(cf->temp_pool, ngx_file_size(&fi) + 1);
        if (buf) {
            n = ngx_read_file(&file, buf, ngx_file_size(&fi), 0);
        }
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", &name);
    }

    if (n == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cannot read key file \"%V\" (missing or over "
                           "1 MB)", &name);
        return NGX_CONF_ERROR;
    }

    err = "invalid key";

    ks = ngx_http_auth_jwt_keyset_create(cf->pool, cf->log);
    if (ks == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the bound is checked in init_main_conf, when it is known */

    if (ngx_http_auth_jwt_keyset_load(ks, buf, n, NGX_MAX_UINT32_VALUE,
                                      cf->log, &err)
        != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid key file \"%V\": %s", &name, err);
        return NGX_CONF_ERROR;
    }

    jmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_auth_jwt_module);

    f = ngx_array_push(&jmcf->files);
    if (f == NULL) {
        return NGX_CONF_ERROR;
    }

    f->name = name;
    f->keyset = ks;
    f->conf_file = cf->conf_file->file.name;
    f->line = cf->conf_file->line;

add:

    if (jlcf->key_files == NGX_CONF_UNSET_PTR) {
        jlcf->key_files = ngx_array_create(cf->pool, 2,
                                     sizeof(ngx_http_auth_jwt_keyset_t *));
        if (jlcf->key_files == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    pks = ngx_array_push(jlcf->key_files);
    if (pks == NULL) {
        return NGX_CONF_ERROR;
    }

    *pks = ks;

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_key_request(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_auth_jwt_loc_conf_t *jlcf = conf;

    ngx_str_t                     *value;
    ngx_http_auth_jwt_source_t    *src, **p;
    ngx_http_auth_jwt_template_t  *tmpl;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].data[0] != '/') {
        return "needs a URI that starts with \"/\"";
    }

    tmpl = NULL;

    if (ngx_http_script_variables_count(&value[1]) != 0) {
        tmpl = ngx_http_auth_jwt_template(cf, &value[1], 1);
        if (tmpl == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    src = ngx_http_auth_jwt_source(cf, &value[1]);
    if (src == NULL) {
        return NGX_CONF_ERROR;
    }

    if (tmpl) {
        src->tmpl = tmpl;
    }

    if (jlcf->sources == NGX_CONF_UNSET_PTR) {
        jlcf->sources = ngx_array_create(cf->pool, 2,
                                     sizeof(ngx_http_auth_jwt_source_t *));
        if (jlcf->sources == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    p = ngx_array_push(jlcf->sources);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    *p = src;

    return NGX_CONF_OK;
}


/*
 * The source of a URI in the server block at hand: the subrequest goes to
 * the locations of the request's server, so the same URI in two servers
 * may well be two identity providers, and their keys must not mix.
 */

static ngx_http_auth_jwt_source_t *
ngx_http_auth_jwt_source(ngx_conf_t *cf, ngx_str_t *uri)
{
    void                            *server;
    ngx_uint_t                       i;
    ngx_http_auth_jwt_source_t     **srcs, *src, **p;
    ngx_http_auth_jwt_main_conf_t   *jmcf;

    jmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_auth_jwt_module);
    server = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);

    srcs = jmcf->sources.elts;

    for (i = 0; i < jmcf->sources.nelts; i++) {
        if (srcs[i]->server == server
            && srcs[i]->uri.len == uri->len
            && ngx_strncmp(srcs[i]->uri.data, uri->data, uri->len) == 0)
        {
            return srcs[i];
        }
    }

    src = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_jwt_source_t));
    if (src == NULL) {
        return NULL;
    }

    src->uri = *uri;
    src->server = server;
    ngx_queue_init(&src->waiters);

    p = ngx_array_push(&jmcf->sources);
    if (p == NULL) {
        return NULL;
    }

    *p = src;

    return src;
}


/* sources inherited from the http block become those of this server */

static char *
ngx_http_auth_jwt_merge_sources(ngx_conf_t *cf,
    ngx_http_auth_jwt_loc_conf_t *conf)
{
    void                         *server;
    ngx_uint_t                    i;
    ngx_array_t                  *a;
    ngx_http_auth_jwt_source_t  **srcs, **p;

    if (conf->sources == NULL) {
        return NGX_CONF_OK;
    }

    server = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);
    srcs = conf->sources->elts;

    for (i = 0; i < conf->sources->nelts; i++) {
        if (srcs[i]->server != server) {
            break;
        }
    }

    if (i == conf->sources->nelts) {
        return NGX_CONF_OK;
    }

    a = ngx_array_create(cf->pool, conf->sources->nelts,
                         sizeof(ngx_http_auth_jwt_source_t *));
    if (a == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < conf->sources->nelts; i++) {
        p = ngx_array_push(a);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        *p = ngx_http_auth_jwt_source(cf, &srcs[i]->uri);
        if (*p == NULL) {
            return NGX_CONF_ERROR;
        }

        (*p)->tmpl = srcs[i]->tmpl;
    }

    conf->sources = a;

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_type(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_jwt_loc_conf_t *jlcf = conf;

    ngx_str_t  *value;

    if (jlcf->type != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "signed") == 0) {
        jlcf->type = NGX_HTTP_AUTH_JWT_SIGNED;

    } else if (ngx_strcmp(value[1].data, "encrypted") == 0) {
        jlcf->type = NGX_HTTP_AUTH_JWT_ENCRYPTED;

    } else if (ngx_strcmp(value[1].data, "nested") == 0) {
        jlcf->type = NGX_HTTP_AUTH_JWT_NESTED;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\", expected \"signed\", "
                           "\"encrypted\" or \"nested\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_require_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_auth_jwt_loc_conf_t *jlcf = conf;

    ngx_str_t                         *value;
    ngx_uint_t                         i, n;
    ngx_http_complex_value_t          *cv;
    ngx_http_auth_jwt_require_t       *req;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (jlcf->requires == NGX_CONF_UNSET_PTR) {
        jlcf->requires = ngx_array_create(cf->pool, 2,
                                    sizeof(ngx_http_auth_jwt_require_t));
        if (jlcf->requires == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    req = ngx_array_push(jlcf->requires);
    if (req == NULL) {
        return NGX_CONF_ERROR;
    }

    req->status = NGX_HTTP_UNAUTHORIZED;
    n = cf->args->nelts;

    if (ngx_strncmp(value[n - 1].data, "error=", 6) == 0) {
        if (ngx_strcmp(value[n - 1].data, "error=401") == 0) {
            req->status = NGX_HTTP_UNAUTHORIZED;

        } else if (ngx_strcmp(value[n - 1].data, "error=403") == 0) {
            req->status = NGX_HTTP_FORBIDDEN;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"%V\", expected error=401 or "
                               "error=403", &value[n - 1]);
            return NGX_CONF_ERROR;
        }

        n--;
    }

    if (n < 2) {
        return "needs at least one value";
    }

    req->values = ngx_array_create(cf->pool, n - 1,
                                   sizeof(ngx_http_complex_value_t));
    if (req->values == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < n; i++) {
        if (value[i].data[0] != '$') {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "value \"%V\" must start with a variable",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        cv = ngx_array_push(req->values);
        if (cv == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
        ccv.cf = cf;
        ccv.value = &value[i];
        ccv.complex_value = cv;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_claim_set(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t                *value, *s, name;
    ngx_uint_t                i;
    ngx_http_variable_t      *v;
    ngx_http_auth_jwt_var_t  *var;

    value = cf->args->elts;

    if (value[1].len < 2 || value[1].data[0] != '$') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid variable name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data + 1;
    name.len = value[1].len - 1;

    v = ngx_http_add_variable(cf, &name, NGX_HTTP_VAR_NOCACHEABLE);
    if (v == NULL) {
        return NGX_CONF_ERROR;
    }

    var = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_jwt_var_t));
    if (var == NULL) {
        return NGX_CONF_ERROR;
    }

    var->header = cmd->offset;
    var->var = name;

    if (ngx_array_init(&var->names, cf->pool, cf->args->nelts - 2,
                       sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {
        if (value[i].len == 0) {
            return "has an empty name";
        }

        s = ngx_array_push(&var->names);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = value[i];  /* NUL-terminated by the parser */
    }

    v->get_handler = ngx_http_auth_jwt_set_variable;
    v->data = (uintptr_t) var;

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_strings(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    return ngx_http_auth_jwt_str_array(cf,
                                       (ngx_array_t **) (p + cmd->offset),
                                       cf->args->nelts);
}


static char *
ngx_http_auth_jwt_str_array(ngx_conf_t *cf, ngx_array_t **a, ngx_uint_t n)
{
    ngx_str_t   *value, *s;
    ngx_uint_t   i;

    if (*a != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    *a = ngx_array_create(cf->pool, n - 1, sizeof(ngx_str_t));
    if (*a == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < n; i++) {
        if (value[i].len == 0) {
            return "has an empty value";
        }

        s = ngx_array_push(*a);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = value[i];
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_scope_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_jwt_loc_conf_t *jlcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   n;

    value = cf->args->elts;
    n = cf->args->nelts;

    if (n > 2 && (ngx_strcmp(value[n - 1].data, "all") == 0
                  || ngx_strcmp(value[n - 1].data, "any") == 0))
    {
        jlcf->scope_any = (value[n - 1].data[1] == 'n');
        n--;
    }

    return ngx_http_auth_jwt_str_array(cf, &jlcf->scopes, n);
}


static char *
ngx_http_auth_jwt_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_jwt_main_conf_t *jmcf = conf;

    ngx_str_t  *value;

    if (jmcf->cache) {
        return "is duplicate";
    }

    value = cf->args->elts;

    return ngx_meshgate_cache_conf(cf, &value[1], &ngx_http_auth_jwt_module,
                                   &jmcf->cache);
}
