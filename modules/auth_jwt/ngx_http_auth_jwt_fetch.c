
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_auth_jwt.h"
#include "ngx_meshgate_http.h"
#include "ngx_meshgate_sha256.h"


/*
 * JWKS fetching for auth_jwt_key_request: an in-memory subrequest to an
 * (internal) location, never a blocking call.  The key set of a source is
 * per worker; a failed fetch keeps the last good one.
 */


typedef struct {
    ngx_http_auth_jwt_source_t  *src;
    ngx_http_request_t          *r;
} ngx_http_auth_jwt_fetch_t;


static ngx_int_t ngx_http_auth_jwt_fetch_done(ngx_http_request_t *r,
    void *data, ngx_int_t rc);
static void ngx_http_auth_jwt_fetch_cleanup(void *data);
static void ngx_http_auth_jwt_fetch_install(ngx_http_request_t *sr,
    ngx_http_auth_jwt_source_t *src);


ngx_int_t
ngx_http_auth_jwt_fetch(ngx_http_request_t *r,
    ngx_http_auth_jwt_source_t *src, ngx_uint_t background)
{
    ngx_uint_t                   flags;
    ngx_pool_cleanup_t          *cln;
    ngx_http_request_t          *sr;
    ngx_http_auth_jwt_fetch_t   *f;
    ngx_http_post_subrequest_t  *ps;

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_auth_jwt_fetch_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    f = cln->data;
    f->src = src;
    f->r = r;

    ps->handler = ngx_http_auth_jwt_fetch_done;
    ps->data = f;

    flags = NGX_HTTP_SUBREQUEST_IN_MEMORY
            | (background ? NGX_HTTP_SUBREQUEST_BACKGROUND
                          : NGX_HTTP_SUBREQUEST_WAITED);

    if (ngx_http_subrequest(r, &src->uri, NULL, &sr, ps, flags) != NGX_OK) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_auth_jwt_fetch_cleanup;

    /*
     * a plain GET without the client's headers (its token, cookies,
     * Accept-Encoding) and without its body
     */

    sr->method = NGX_HTTP_GET;
    sr->method_name = ngx_http_core_get_method;
    sr->header_only = 0;

    sr->request_body = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    if (sr->request_body == NULL) {
        return NGX_ERROR;
    }

    if (ngx_list_init(&sr->headers_in.headers, r->pool, 2,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    sr->headers_in.authorization = NULL;
    sr->headers_in.content_length = NULL;
    sr->headers_in.content_length_n = -1;
    sr->headers_in.transfer_encoding = NULL;
    sr->headers_in.chunked = 0;
    sr->headers_in.cookies.nelts = 0;
#if (NGX_HTTP_GZIP || NGX_HTTP_HEADERS)
    sr->headers_in.accept_encoding = NULL;
#endif
#if (NGX_HTTP_GZIP)
    sr->gzip_tested = 1;
    sr->gzip_ok = 0;
#endif

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
ngx_http_auth_jwt_fetch_done(ngx_http_request_t *r, void *data, ngx_int_t rc)
{
    ngx_http_auth_jwt_fetch_t *f = data;

    ngx_http_auth_jwt_source_t  *src;

    src = f->src;

    if (f->r == NULL || src->owner != f->r) {
        return rc;
    }

    f->r = NULL;
    src->fetching = 0;
    src->owner = NULL;

    if (rc == NGX_OK || rc == NGX_DONE) {
        ngx_http_auth_jwt_fetch_install(r, src);

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_jwt: JWKS request \"%V\" failed (rc %i), "
                      "keeping the last good keys", &src->uri, rc);
        src->failed_at = ngx_time();
    }

    ngx_http_auth_jwt_wake(src);

    /*
     * a failed fetch must not take the client's request down with it
     * (an error in a subrequest terminates the main request)
     */

    if (rc == NGX_ERROR && !r->connection->error) {
        return NGX_OK;
    }

    return rc;
}


static void
ngx_http_auth_jwt_fetch_install(ngx_http_request_t *sr,
    ngx_http_auth_jwt_source_t *src)
{
    u_char                       digest[NGX_MESHGATE_SHA256_LEN];
    ngx_str_t                    body;
    ngx_table_elt_t             *ce;
    const char                  *err;
    ngx_http_auth_jwt_keyset_t  *ks;

    if (sr->headers_out.status != NGX_HTTP_OK) {
        ngx_log_error(NGX_LOG_ERR, sr->connection->log, 0,
                      "auth_jwt: JWKS request \"%V\" returned status %ui, "
                      "keeping the last good keys",
                      &src->uri, sr->headers_out.status);
        goto failed;
    }

    ce = sr->headers_out.content_encoding;

    if (ce && ce->hash && ce->value.len
        && ngx_strcasecmp(ce->value.data, (u_char *) "identity") != 0)
    {
        /* the value comes from outside: logged only when it is plain */

        if (ce->value.len <= 32
            && ngx_meshgate_text_is_safe(ce->value.data, ce->value.len))
        {
            ngx_log_error(NGX_LOG_ERR, sr->connection->log, 0,
                          "auth_jwt: JWKS from \"%V\" has Content-Encoding "
                          "\"%V\", rejected", &src->uri, &ce->value);

        } else {
            ngx_log_error(NGX_LOG_ERR, sr->connection->log, 0,
                          "auth_jwt: JWKS from \"%V\" has a "
                          "Content-Encoding, rejected", &src->uri);
        }

        goto failed;
    }

    if (sr->out == NULL || sr->out->buf == NULL) {
        ngx_log_error(NGX_LOG_ERR, sr->connection->log, 0,
                      "auth_jwt: JWKS from \"%V\" has no body", &src->uri);
        goto failed;
    }

    err = "invalid key set";
    body.data = sr->out->buf->pos;
    body.len = sr->out->buf->last - sr->out->buf->pos;

    /*
     * a body seen last time is not parsed again (with auth_jwt_key_cache
     * 0 every request fetches the set): its keys are those at hand, or it
     * was refused already
     */

    if (ngx_meshgate_sha256(&body, 1, digest) != NGX_OK) {
        goto failed;
    }

    if (src->has_digest
        && ngx_memcmp(digest, src->digest, sizeof(digest)) == 0
        && (src->keyset || !src->digest_ok))
    {
        if (src->digest_ok) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, sr->connection->log, 0,
                           "auth_jwt: JWKS \"%V\" unchanged", &src->uri);
            src->loaded = ngx_time();
            src->failed_at = 0;
            return;
        }

        ngx_log_error(NGX_LOG_ERR, sr->connection->log, 0,
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

    if (ngx_http_auth_jwt_keyset_load(ks, body.data, body.len, src->keys_max,
                                      sr->connection->log, &err)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, sr->connection->log, 0,
                      "auth_jwt: JWKS from \"%V\" rejected: %s, "
                      "keeping the last good keys", &src->uri, err);
        ngx_http_auth_jwt_keyset_free(ks);
        goto failed;
    }

    src->digest_ok = 1;

    ngx_log_error(NGX_LOG_INFO, sr->connection->log, 0,
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

    ngx_http_auth_jwt_wake(src);
}
