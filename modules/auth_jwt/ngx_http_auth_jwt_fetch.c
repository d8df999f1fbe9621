
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_auth_jwt.h"
#include "ngx_meshgate_fetch.h"
#include "ngx_meshgate_sha256.h"


/*
 * JWKS fetching for auth_jwt_key_request: a subrequest to an (internal)
 * location through the common fetcher (ngx_meshgate_fetch.c), never a
 * blocking call: a plain GET without the client's headers (its token,
 * cookies, Accept-Encoding) or body, the answer kept up to the location's
 * subrequest_output_buffer_size.  A bigger answer fails the fetch, not the
 * client's request.  The key set of a source is per worker; a failed
 * fetch keeps the last good one.
 */


typedef struct {
    ngx_meshgate_fetch_t         fetch;
    ngx_http_auth_jwt_source_t  *src;
    ngx_http_request_t          *r;
} ngx_http_auth_jwt_fetch_t;


static ngx_int_t ngx_http_auth_jwt_fetch_done(ngx_meshgate_fetch_t *fetch);
static ngx_int_t ngx_http_auth_jwt_fetch_answer(ngx_meshgate_fetch_t *fetch,
    ngx_http_auth_jwt_source_t *src, ngx_log_t *log);
static void ngx_http_auth_jwt_fetch_cleanup(void *data);
static void ngx_http_auth_jwt_fetch_install(ngx_http_auth_jwt_source_t *src,
    ngx_str_t *body, ngx_log_t *log);


ngx_int_t
ngx_http_auth_jwt_fetch(ngx_http_request_t *r,
    ngx_http_auth_jwt_source_t *src, ngx_uint_t background)
{
    ngx_uint_t                  flags;
    ngx_pool_cleanup_t         *cln;
    ngx_http_auth_jwt_fetch_t  *f;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_auth_jwt_fetch_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    f = cln->data;
    ngx_memzero(f, sizeof(ngx_http_auth_jwt_fetch_t));

    f->src = src;
    f->r = r;

    f->fetch.handler = ngx_http_auth_jwt_fetch_done;
    f->fetch.data = f;
    f->fetch.method = NGX_HTTP_GET;
    f->fetch.headers = NULL;
    f->fetch.max = 0;       /* the location's subrequest_output_buffer_size */

    flags = background ? NGX_HTTP_SUBREQUEST_BACKGROUND
                       : NGX_HTTP_SUBREQUEST_WAITED;

    if (ngx_meshgate_fetch_start(r, &f->fetch, &src->uri, NULL, flags)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_auth_jwt_fetch_cleanup;

    src->fetching = 1;
    src->background = background ? 1 : 0;
    src->owner = r;
    src->force = 0;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "auth_jwt: fetching JWKS \"%V\" bg:%ui",
                   &src->uri, background);

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_jwt_fetch_done(ngx_meshgate_fetch_t *fetch)
{
    ngx_http_auth_jwt_fetch_t *f = fetch->data;

    ngx_log_t                   *log;
    ngx_http_auth_jwt_source_t  *src;

    src = f->src;

    if (f->r == NULL || src->owner != f->r) {
        return NGX_OK;
    }

    log = fetch->sr->connection->log;

    if (fetch->closed) {
        /* no answer, no verdict on the source: the next request fetches */
        ngx_http_auth_jwt_fetch_abort(f->r, src);
        f->r = NULL;
        return NGX_OK;
    }

    f->r = NULL;
    src->fetching = 0;
    src->owner = NULL;

    if (ngx_http_auth_jwt_fetch_answer(fetch, src, log) == NGX_OK) {
        ngx_http_auth_jwt_fetch_install(src, &fetch->answer, log);

    } else {
        src->failed_at = ngx_time();
    }

    ngx_meshgate_waiter_wake(&src->waiters, NULL, NULL);

    /* a failed fetch never takes the client's request down */

    return NGX_OK;
}


/* whether the answer is a body to read as a key set; logs why not */

static ngx_int_t
ngx_http_auth_jwt_fetch_answer(ngx_meshgate_fetch_t *fetch,
    ngx_http_auth_jwt_source_t *src, ngx_log_t *log)
{
    const char  *error;

    if (ngx_meshgate_fetch_failed(fetch)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "auth_jwt: JWKS request \"%V\" failed, "
                      "keeping the last good keys", &src->uri);
        return NGX_ERROR;
    }

    if (fetch->status != NGX_HTTP_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "auth_jwt: JWKS request \"%V\" returned status %ui, "
                      "keeping the last good keys",
                      &src->uri, fetch->status);
        return NGX_ERROR;
    }

    error = ngx_meshgate_fetch_error(fetch);

    if (fetch->too_big) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "auth_jwt: JWKS from \"%V\" is larger than "
                      "subrequest_output_buffer_size (%uz), "
                      "keeping the last good keys", &src->uri, fetch->max);
        return NGX_ERROR;
    }

    if (fetch->encoded) {
        /* nothing reads it decoded; the encoding's name is not logged */
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "auth_jwt: JWKS from \"%V\" has a Content-Encoding, "
                      "rejected", &src->uri);
        return NGX_ERROR;
    }

    if (error) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "auth_jwt: JWKS from \"%V\" is %s, "
                      "keeping the last good keys", &src->uri, error);
        return NGX_ERROR;
    }

    if (fetch->answer.len == 0) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "auth_jwt: JWKS from \"%V\" has no body", &src->uri);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_auth_jwt_fetch_install(ngx_http_auth_jwt_source_t *src,
    ngx_str_t *body, ngx_log_t *log)
{
    u_char                       digest[NGX_MESHGATE_SHA256_LEN];
    const char                  *err;
    ngx_http_auth_jwt_keyset_t  *ks;

    err = "invalid key set";

    /*
     * a body seen last time is not parsed again (with auth_jwt_key_cache
     * 0 every request fetches the set): its keys are those at hand, or it
     * was refused already
     */

    if (ngx_meshgate_sha256(body, 1, digest) != NGX_OK) {
        goto failed;
    }

    if (src->has_digest
        && ngx_memcmp(digest, src->digest, sizeof(digest)) == 0
        && (src->keyset || !src->digest_ok))
    {
        if (src->digest_ok) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                           "auth_jwt: JWKS \"%V\" unchanged", &src->uri);
            src->loaded = ngx_time();
            src->failed_at = 0;
            return;
        }

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "auth_jwt: JWKS from \"%V\" is the set refused "
                      "before, keeping the last good keys", &src->uri);
        goto failed;
    }

    ngx_memcpy(src->digest, digest, sizeof(digest));
    src->has_digest = 1;
    src->digest_ok = 0;

    ks = ngx_http_auth_jwt_keyset_create(NULL, ngx_cycle->log);
    if (ks == NULL) {
        src->has_digest = 0;
        goto failed;
    }

    if (ngx_http_auth_jwt_keyset_load(ks, body->data, body->len,
                                      src->keys_max, log, &err)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "auth_jwt: JWKS from \"%V\" rejected: %s, "
                      "keeping the last good keys", &src->uri, err);
        ngx_http_auth_jwt_keyset_free(ks);
        goto failed;
    }

    src->digest_ok = 1;

    ngx_log_error(NGX_LOG_INFO, log, 0,
                  "auth_jwt: loaded %ui keys from \"%V\"",
                  ks->keys.nelts, &src->uri);

    ngx_http_auth_jwt_keyset_free(src->keyset);
    src->keyset = ks;
    src->loaded = ngx_time();
    src->failed_at = 0;

    return;

failed:

    src->failed_at = ngx_time();
}


static void
ngx_http_auth_jwt_fetch_cleanup(void *data)
{
    ngx_http_auth_jwt_fetch_t *f = data;

    if (f->r != NULL && f->src->owner == f->r) {
        ngx_http_auth_jwt_fetch_abort(f->r, f->src);
    }
}


/* the request that owns a fetch goes away before the fetch ends */

void
ngx_http_auth_jwt_fetch_abort(ngx_http_request_t *r,
    ngx_http_auth_jwt_source_t *src)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "auth_jwt: JWKS fetch \"%V\" abandoned", &src->uri);

    src->fetching = 0;
    src->owner = NULL;

    ngx_meshgate_waiter_wake(&src->waiters, NULL, NULL);
}
