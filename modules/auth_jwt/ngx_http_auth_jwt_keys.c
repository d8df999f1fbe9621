
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_auth_jwt.h"
#include "ngx_meshgate_http.h"


static time_t ngx_http_auth_jwt_retry(ngx_http_auth_jwt_source_t *src);
static void ngx_http_auth_jwt_wait(ngx_http_request_t *r,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_source_t *src);
static void ngx_http_auth_jwt_wait_handler(ngx_http_request_t *r);


/*
 * Makes sure that every key source of the location has keys: starts a
 * fetch (this request waits for it) or waits for one in progress.  Starts
 * a background refresh of a key set older than auth_jwt_key_cache.
 */

ngx_int_t
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
            if (src->failed_at && !src->force
                && now - src->failed_at < ngx_http_auth_jwt_retry(src))
            {
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


/*
 * How long a failed fetch keeps a source from being fetched again for
 * the requests that need it.  A URI made at run time that has never given
 * keys is most likely a name a client made up (an unknown tenant): it is
 * tried again less often, so that a stream of such requests costs the
 * identity provider one fetch per name per worker every 10 s, not every
 * second.  A configured URI, or a name that once gave keys, is tried
 * again after a second, so that keys come back soon after an outage.
 */

static time_t
ngx_http_auth_jwt_retry(ngx_http_auth_jwt_source_t *src)
{
    if (src->named && src->keyset == NULL) {
        return NGX_HTTP_AUTH_JWT_NAME_RETRY;
    }

    return NGX_HTTP_AUTH_JWT_RETRY;
}


ngx_uint_t
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

    ngx_meshgate_waiter_join(&src->waiters, &ctx->waiter, r);
    ctx->fetched = 1;

    if (ctx->wait_until == 0) {
        ctx->wait_until = ngx_time() + NGX_HTTP_AUTH_JWT_WAIT;
    }

    left = ctx->wait_until - ngx_time();
    if (left < 1) {
        left = 1;
    }

    /* the wait is bounded: woken or timed out, the handler tells which */

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

    if (ctx->waiter.waiting) {
        if (!wev->timedout) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            }

            return;
        }

        ngx_meshgate_waiter_leave(&ctx->waiter);
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


/* the source for this request of a (possibly run-time) JWKS URI */

ngx_http_auth_jwt_source_t *
ngx_http_auth_jwt_resolve(ngx_http_request_t *r,
    ngx_http_auth_jwt_source_t *src)
{
    ngx_str_t  uri;

    if (src->tmpl == NULL) {
        return src;
    }

    if (ngx_http_auth_jwt_name(r, src->tmpl, &uri) != NGX_OK) {
        return NULL;
    }

    return ngx_http_auth_jwt_uri_source(r, &uri, src->keys_max);
}


/*
 * The name of a run-time key source, made once per request: the JWKS
 * subrequest runs the server's rewrite phase again on the variables it
 * shares with this request, and the keys that verify must be those of
 * the name that was fetched.
 */

ngx_int_t
ngx_http_auth_jwt_name(ngx_http_request_t *r,
    ngx_http_auth_jwt_template_t *tmpl, ngx_str_t *name)
{
    ngx_int_t                   rc;
    ngx_uint_t                  i;
    ngx_http_auth_jwt_ctx_t    *ctx;
    ngx_http_auth_jwt_named_t  *named;

    ctx = ngx_http_get_module_ctx(r, ngx_http_auth_jwt_module);

    if (ctx && ctx->names) {
        named = ctx->names->elts;

        for (i = 0; i < ctx->names->nelts; i++) {
            if (named[i].tmpl == tmpl) {
                *name = named[i].name;
                return NGX_OK;
            }
        }
    }

    rc = ngx_http_auth_jwt_template_value(r, tmpl, name);

    if (rc != NGX_OK || ctx == NULL) {
        return rc;
    }

    if (ctx->names == NULL) {
        ctx->names = ngx_array_create(r->pool, 2,
                                      sizeof(ngx_http_auth_jwt_named_t));
        if (ctx->names == NULL) {
            return NGX_ERROR;
        }
    }

    named = ngx_array_push(ctx->names);
    if (named == NULL) {
        return NGX_ERROR;
    }

    named->tmpl = tmpl;
    named->name = *name;

    return NGX_OK;
}


/*
 * The key of the location with this fingerprint that may verify alg:
 * what a cached verification was made with, if the location trusts it.
 */

ngx_http_auth_jwt_key_t *
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
