
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_HTTP_AUTH_KEY_H_INCLUDED_
#define _NGX_HTTP_AUTH_KEY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_meshgate_sha256.h"


#define NGX_HTTP_AUTH_KEY_DIGEST_LEN     NGX_MESHGATE_SHA256_LEN
#define NGX_HTTP_AUTH_KEY_FILE_MAX       (64 * 1024 * 1024)

#define NGX_HTTP_AUTH_KEY_NONE           0
#define NGX_HTTP_AUTH_KEY_OK             1
#define NGX_HTTP_AUTH_KEY_MISSING        2
#define NGX_HTTP_AUTH_KEY_INVALID        3
#define NGX_HTTP_AUTH_KEY_CONFLICT       4
#define NGX_HTTP_AUTH_KEY_UNAVAILABLE    5

/* request states */
#define NGX_HTTP_AUTH_KEY_START          0
#define NGX_HTTP_AUTH_KEY_WAIT           1
#define NGX_HTTP_AUTH_KEY_DONE           2


typedef struct ngx_http_auth_key_redis_s  ngx_http_auth_key_redis_t;


typedef struct {
    u_char                      digest[NGX_HTTP_AUTH_KEY_DIGEST_LEN];
    ngx_str_t                   consumer;
    ngx_keyval_t               *meta;
    ngx_uint_t                  nmeta;
    ngx_uint_t                  line;
} ngx_http_auth_key_entry_t;


typedef struct {
    ngx_str_t                   name;
    ngx_http_auth_key_entry_t  *entries;     /* sorted by digest */
    ngx_uint_t                  nentries;
} ngx_http_auth_key_store_t;


typedef struct {
    ngx_array_t                 stores;      /* ngx_http_auth_key_store_t */
    ngx_array_t                 redis;       /* ngx_http_auth_key_redis_t * */
} ngx_http_auth_key_main_conf_t;


typedef struct {
    ngx_str_t                   realm;
    ngx_array_t                *headers;     /* ngx_str_t */
    ngx_array_t                *query;       /* ngx_str_t */
    ngx_http_auth_key_store_t  *store;
    ngx_http_auth_key_redis_t  *redis;
    ngx_flag_t                  enabled;
    ngx_flag_t                  hide;
} ngx_http_auth_key_loc_conf_t;


typedef struct {
    ngx_http_request_t         *request;
    ngx_uint_t                  state;
    ngx_uint_t                  result;
    u_char                      digest[NGX_HTTP_AUTH_KEY_DIGEST_LEN];
    ngx_str_t                   consumer;
    ngx_keyval_t               *meta;
    ngx_uint_t                  nmeta;
    ngx_str_t                   hidden;      /* a key auth_key_hide took */
} ngx_http_auth_key_ctx_t;


#pragma GCC visibility push(hidden)


/* the key file store (ngx_http_auth_key_file.c) */

/*
 * Loads the key file name (a full path) once per configuration: the
 * store of an earlier directive naming the same file is reused.  NULL
 * after logging why.
 */
ngx_http_auth_key_store_t *ngx_http_auth_key_load(ngx_conf_t *cf,
    ngx_str_t *name);

/* the entry of the digest, compared in constant time, or NULL */
ngx_http_auth_key_entry_t *ngx_http_auth_key_lookup(
    ngx_http_auth_key_store_t *store, u_char *digest);


/* the Redis key store (ngx_http_auth_key_redis.c) */

char *ngx_http_auth_key_redis_conf(ngx_conf_t *cf,
    ngx_http_auth_key_loc_conf_t *alcf);

/*
 * Looks the digest up: NGX_OK with ctx->result set (from the cache),
 * NGX_AGAIN when a Redis command is on its way (ctx->state is
 * NGX_HTTP_AUTH_KEY_WAIT until the request runs again), NGX_ERROR.
 */
ngx_int_t ngx_http_auth_key_redis_lookup(ngx_http_request_t *r,
    ngx_http_auth_key_redis_t *kr, ngx_http_auth_key_ctx_t *ctx,
    u_char *digest);

void ngx_http_auth_key_redis_exit(ngx_cycle_t *cycle);


#pragma GCC visibility pop


extern ngx_module_t  ngx_http_auth_key_module;


#endif /* _NGX_HTTP_AUTH_KEY_H_INCLUDED_ */
