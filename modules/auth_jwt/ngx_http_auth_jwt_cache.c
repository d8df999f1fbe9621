
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_auth_jwt.h"


/*
 * The verified-token cache (auth_jwt_cache): under the SHA-256 of a
 * signed token, a record of the suite's one encoding (ngx_meshgate_record_*
 * in ngx_meshgate_cache.h) whose kind is the index of the alg the
 * signature was verified with, and whose fields are:
 *
 *     fp       the fingerprint of the key that verified it
 *     flags    1 byte: 1 when exp is present, 2 when nbf is
 *     exp      a double, as this host stores one (a zone never leaves it)
 *     nbf      the same
 *     header   the header JSON text, as decoded from the token
 *     payload  the payload JSON text, as decoded from the token
 *
 * A hit needs no JSON parsing unless claims are looked at; they are then
 * parsed from the same text as on a miss (ngx_http_auth_jwt_part()), so a
 * hit reads every claim and header parameter exactly as a miss does.
 */

#define NGX_HTTP_AUTH_JWT_ENTRY_FP       0
#define NGX_HTTP_AUTH_JWT_ENTRY_FLAGS    1
#define NGX_HTTP_AUTH_JWT_ENTRY_EXP      2
#define NGX_HTTP_AUTH_JWT_ENTRY_NBF      3
#define NGX_HTTP_AUTH_JWT_ENTRY_HEADER   4
#define NGX_HTTP_AUTH_JWT_ENTRY_PAYLOAD  5
#define NGX_HTTP_AUTH_JWT_ENTRY_FIELDS   6

#define NGX_HTTP_AUTH_JWT_ENTRY_HAS_EXP  1
#define NGX_HTTP_AUTH_JWT_ENTRY_HAS_NBF  2


typedef struct {
    ngx_uint_t                      alg;
    u_char                         *fp;
    ngx_http_auth_jwt_times_t       t;
    ngx_str_t                       header;
    ngx_str_t                       payload;
} ngx_http_auth_jwt_entry_t;


static ngx_int_t ngx_http_auth_jwt_entry_encode(ngx_pool_t *pool,
    ngx_http_auth_jwt_entry_t *e, ngx_str_t *value);
static ngx_int_t ngx_http_auth_jwt_entry_decode(ngx_str_t *value,
    ngx_http_auth_jwt_entry_t *e);


ngx_int_t
ngx_http_auth_jwt_cache_get(ngx_http_request_t *r,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_loc_conf_t *jlcf,
    ngx_str_t *key, ngx_http_auth_jwt_times_t *t)
{
    ngx_str_t                       value;
    ngx_http_auth_jwt_entry_t       e;
    ngx_http_auth_jwt_main_conf_t  *jmcf;

    jmcf = ngx_http_get_module_main_conf(r, ngx_http_auth_jwt_module);

    if (ngx_meshgate_cache_get(jmcf->cache, key, r->pool, &value, NULL)
        != NGX_OK
        || ngx_http_auth_jwt_entry_decode(&value, &e) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (ngx_http_auth_jwt_find_fp(r, jlcf, e.fp, e.alg) == NULL) {
        /* verified with a key that this location does not trust */
        return NGX_DECLINED;
    }

    *t = e.t;
    ctx->header_text = e.header;
    ctx->payload_text = e.payload;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "auth_jwt: cache hit");

    return NGX_OK;
}


void
ngx_http_auth_jwt_cache_set(ngx_http_request_t *r, ngx_str_t *key,
    ngx_http_auth_jwt_token_t *jwt, u_char *fp, ngx_http_auth_jwt_times_t *t)
{
    double                          exp;
    uint64_t                        now, expires;
    ngx_str_t                       value;
    ngx_http_auth_jwt_entry_t       e;
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

    e.alg = jwt->alg;
    e.fp = fp;
    e.t = *t;
    e.header = jwt->header_text;
    e.payload = jwt->payload_text;

    if (ngx_http_auth_jwt_entry_encode(r->pool, &e, &value) != NGX_OK) {
        return;
    }

    if (ngx_meshgate_cache_set(jmcf->cache, key, &value, expires) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "auth_jwt: could not cache a verified token");
    }
}


static ngx_int_t
ngx_http_auth_jwt_entry_encode(ngx_pool_t *pool,
    ngx_http_auth_jwt_entry_t *e, ngx_str_t *value)
{
    u_char  *p, flags;

    flags = (e->t.has_exp ? NGX_HTTP_AUTH_JWT_ENTRY_HAS_EXP : 0)
            | (e->t.has_nbf ? NGX_HTTP_AUTH_JWT_ENTRY_HAS_NBF : 0);

    value->len = NGX_MESHGATE_RECORD_HEAD
                 + NGX_HTTP_AUTH_JWT_ENTRY_FIELDS * NGX_MESHGATE_RECORD_FIELD
                 + NGX_HTTP_AUTH_JWT_FP_LEN + 1 + 2 * sizeof(double)
                 + e->header.len + e->payload.len;

    value->data = ngx_pnalloc(pool, value->len);
    if (value->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_meshgate_record_start(value->data, e->alg);
    p = ngx_meshgate_record_put(p, e->fp, NGX_HTTP_AUTH_JWT_FP_LEN);
    p = ngx_meshgate_record_put(p, &flags, 1);
    p = ngx_meshgate_record_put(p, (u_char *) &e->t.exp, sizeof(double));
    p = ngx_meshgate_record_put(p, (u_char *) &e->t.nbf, sizeof(double));
    p = ngx_meshgate_record_put(p, e->header.data, e->header.len);
    (void) ngx_meshgate_record_put(p, e->payload.data, e->payload.len);

    return NGX_OK;
}


/*
 * NGX_OK, or NGX_DECLINED when value is no entry of this layout (written
 * by another version of the module before a reload): a miss
 */

static ngx_int_t
ngx_http_auth_jwt_entry_decode(ngx_str_t *value,
    ngx_http_auth_jwt_entry_t *e)
{
    u_char                  flags;
    ngx_str_t               f[NGX_HTTP_AUTH_JWT_ENTRY_FIELDS + 1];
    ngx_uint_t              i;
    ngx_meshgate_record_t   rec;

    if (ngx_meshgate_record_open(&rec, value) != NGX_OK
        || rec.kind >= NGX_HTTP_AUTH_JWT_NALGS)
    {
        return NGX_DECLINED;
    }

    /* exactly the fields of the layout, the fixed ones of their size */

    for (i = 0; i <= NGX_HTTP_AUTH_JWT_ENTRY_FIELDS; i++) {
        if (ngx_meshgate_record_next(&rec, &f[i]) != NGX_OK) {
            break;
        }
    }

    if (i != NGX_HTTP_AUTH_JWT_ENTRY_FIELDS
        || f[NGX_HTTP_AUTH_JWT_ENTRY_FP].len != NGX_HTTP_AUTH_JWT_FP_LEN
        || f[NGX_HTTP_AUTH_JWT_ENTRY_FLAGS].len != 1
        || f[NGX_HTTP_AUTH_JWT_ENTRY_EXP].len != sizeof(double)
        || f[NGX_HTTP_AUTH_JWT_ENTRY_NBF].len != sizeof(double))
    {
        return NGX_DECLINED;
    }

    flags = f[NGX_HTTP_AUTH_JWT_ENTRY_FLAGS].data[0];

    e->alg = rec.kind;
    e->fp = f[NGX_HTTP_AUTH_JWT_ENTRY_FP].data;

    ngx_memzero(&e->t, sizeof(ngx_http_auth_jwt_times_t));
    e->t.has_exp = (flags & NGX_HTTP_AUTH_JWT_ENTRY_HAS_EXP) ? 1 : 0;
    e->t.has_nbf = (flags & NGX_HTTP_AUTH_JWT_ENTRY_HAS_NBF) ? 1 : 0;
    ngx_memcpy(&e->t.exp, f[NGX_HTTP_AUTH_JWT_ENTRY_EXP].data,
               sizeof(double));
    ngx_memcpy(&e->t.nbf, f[NGX_HTTP_AUTH_JWT_ENTRY_NBF].data,
               sizeof(double));

    e->header = f[NGX_HTTP_AUTH_JWT_ENTRY_HEADER];
    e->payload = f[NGX_HTTP_AUTH_JWT_ENTRY_PAYLOAD];

    return NGX_OK;
}
