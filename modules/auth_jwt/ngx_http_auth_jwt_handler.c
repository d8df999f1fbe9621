
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_auth_jwt.h"
#include "ngx_meshgate_bearer.h"
#include "ngx_meshgate_http.h"
#include "ngx_meshgate_sha256.h"


/* what a candidate key is tried on: a JWE to decrypt, or a JWS */

typedef struct {
    ngx_http_auth_jwt_jwe_t        *jwe;
    ngx_str_t                      *plain;
    ngx_http_auth_jwt_token_t      *jwt;
    u_char                         *fp;
} ngx_http_auth_jwt_attempt_t;


static ngx_int_t ngx_http_auth_jwt_decide(ngx_http_request_t *r,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_loc_conf_t *jlcf);
static ngx_int_t ngx_http_auth_jwt_cached(ngx_http_request_t *r,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_loc_conf_t *jlcf,
    ngx_str_t *key);
static ngx_http_auth_jwt_result_e ngx_http_auth_jwt_encrypted(
    ngx_http_request_t *r, ngx_http_auth_jwt_loc_conf_t *jlcf,
    ngx_http_auth_jwt_ctx_t *ctx, u_char *fp, const char **err);
static ngx_http_auth_jwt_result_e ngx_http_auth_jwt_try_keys(
    ngx_http_request_t *r, ngx_http_auth_jwt_loc_conf_t *jlcf,
    ngx_http_auth_jwt_jwe_t *jwe, ngx_str_t *plain,
    ngx_http_auth_jwt_token_t *jwt, u_char *fp, const char **err);
static ngx_int_t ngx_http_auth_jwt_attempt(ngx_http_request_t *r,
    ngx_http_auth_jwt_key_t *key, ngx_http_auth_jwt_attempt_t *at);
static ngx_http_auth_jwt_result_e ngx_http_auth_jwt_prepare(
    ngx_http_request_t *r, ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_uint_t parse);
static ngx_int_t ngx_http_auth_jwt_get_token(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_str_t *token);
static ngx_http_auth_jwt_result_e ngx_http_auth_jwt_get_times(json_t *payload,
    ngx_http_auth_jwt_times_t *t, const char **err);
static ngx_http_auth_jwt_result_e ngx_http_auth_jwt_claims(
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_times_t *t, const char **err);
static ngx_int_t ngx_http_auth_jwt_has_string(json_t *v, ngx_str_t *s);
static ngx_int_t ngx_http_auth_jwt_scope(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, json_t *payload);
static ngx_int_t ngx_http_auth_jwt_require(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_int_t *status);
static ngx_int_t ngx_http_auth_jwt_challenge(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, char *error);
static ngx_int_t ngx_http_auth_jwt_date(json_t *payload, const char *name,
    double *date);
static double ngx_http_auth_jwt_now(void);


ngx_str_t  ngx_http_auth_jwt_result_names[] = {
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


/* access phase */

ngx_int_t
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

    if (ctx->waiter.waiting) {
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
    ngx_int_t   rc, status;
    ngx_uint_t  level;

    ctx->result = ctx->verdict;

    if (ctx->verdict == NGX_HTTP_AUTH_JWT_OK) {
        rc = jlcf->scopes
             ? ngx_http_auth_jwt_scope(r, jlcf, ngx_http_auth_jwt_part(ctx, 0))
             : NGX_OK;

        if (rc == NGX_ERROR) {
            ctx->result = NGX_HTTP_AUTH_JWT_ERROR;
            ctx->err = "scope check failed";

        } else if (rc != NGX_OK) {
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


ngx_http_auth_jwt_ctx_t *
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


void
ngx_http_auth_jwt_ctx_cleanup(void *data)
{
    ngx_http_auth_jwt_ctx_t *ctx = data;

    ngx_meshgate_waiter_leave(&ctx->waiter);

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

void
ngx_http_auth_jwt_check(ngx_http_request_t *r, ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_uint_t final)
{
    u_char                       hash[NGX_MESHGATE_SHA256_LEN];
    u_char                       fp[NGX_HTTP_AUTH_JWT_FP_LEN];
    ngx_str_t                    key;
    const char                  *err;
    ngx_http_auth_jwt_times_t    t;
    ngx_http_auth_jwt_result_e   res;

    ctx->err = NULL;

    key.data = hash;
    key.len = 0;

    res = ngx_http_auth_jwt_prepare(r, ctx, jlcf, 0);

    if (res == NGX_HTTP_AUTH_JWT_OK
        && ngx_http_auth_jwt_cached(r, ctx, jlcf, &key) == NGX_OK)
    {
        ctx->verified = 1;
        return;
    }

    if (res == NGX_HTTP_AUTH_JWT_OK) {
        res = ngx_http_auth_jwt_prepare(r, ctx, jlcf, 1);
    }

    if (res != NGX_HTTP_AUTH_JWT_OK) {
        ctx->verdict = res;
        ctx->err = ctx->pre_err;
        ctx->verified = 1;
        return;
    }

    err = NULL;

    if (jlcf->type == NGX_HTTP_AUTH_JWT_SIGNED) {
        res = ngx_http_auth_jwt_try_keys(r, jlcf, NULL, NULL, &ctx->jwt, fp,
                                         &err);

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
 * A signed token found in auth_jwt_cache: NGX_OK with ctx->verdict from
 * its cached times and this location's claim checks.  Otherwise key (its
 * data of NGX_MESHGATE_SHA256_LEN bytes) is what to cache the token under
 * once verified, or empty when it is not to be cached.
 */

static ngx_int_t
ngx_http_auth_jwt_cached(ngx_http_request_t *r, ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_str_t *key)
{
    ngx_http_auth_jwt_times_t       t;
    ngx_http_auth_jwt_main_conf_t  *jmcf;

    jmcf = ngx_http_get_module_main_conf(r, ngx_http_auth_jwt_module);

    key->len = 0;

    if (jmcf->cache == NULL || jlcf->type != NGX_HTTP_AUTH_JWT_SIGNED
        || ctx->token.len > NGX_HTTP_AUTH_JWT_MAX_TOKEN
        || ngx_meshgate_sha256(&ctx->token, 1, key->data) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    key->len = NGX_MESHGATE_SHA256_LEN;

    if (ngx_http_auth_jwt_cache_get(r, ctx, jlcf, key, &t) != NGX_OK) {
        return NGX_DECLINED;
    }

    ctx->verdict = ngx_http_auth_jwt_claims(jlcf, ctx, &t, &ctx->err);

    return NGX_OK;
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
        res = ngx_http_auth_jwt_try_keys(r, jlcf, &ctx->jwe, &plain, NULL,
                                         NULL, err);
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

    return ngx_http_auth_jwt_try_keys(r, jlcf, NULL, NULL, &ctx->jwt, fp, err);
}


/*
 * The loop over the location's candidate keys, shared by decryption and
 * signature verification: keys bound to the token's algorithm (for a JWE,
 * its key management algorithm) and, when both have one, the same "kid";
 * at most NGX_HTTP_AUTH_JWT_MAX_TRIES of them.  With jwe, the key that
 * decrypts it gives plain; else the key that verifies jwt gives fp.
 */

static ngx_http_auth_jwt_result_e
ngx_http_auth_jwt_try_keys(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_http_auth_jwt_jwe_t *jwe,
    ngx_str_t *plain, ngx_http_auth_jwt_token_t *jwt, u_char *fp,
    const char **err)
{
    ngx_int_t                    rc;
    ngx_str_t                   *kid;
    ngx_uint_t                   i, j, tries, sets, unloaded, mask, alg;
    ngx_http_auth_jwt_key_t     *key;
    ngx_http_auth_jwt_keyset_t  *ks;
    ngx_http_auth_jwt_attempt_t  at;

    at.jwe = jwe;
    at.plain = plain;
    at.jwt = jwt;
    at.fp = fp;

    if (jwe) {
        alg = jwe->alg;
        kid = jwe->has_kid ? &jwe->kid : NULL;

    } else {
        alg = jwt->alg;
        kid = jwt->has_kid ? &jwt->kid : NULL;
    }

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

            mask = jwe ? key[j].jwe : key[j].algs;

            if (!(mask & (1 << alg))) {
                continue;
            }

            if (kid && key[j].kid.len
                && (key[j].kid.len != kid->len
                    || ngx_memcmp(key[j].kid.data, kid->data, kid->len) != 0))
            {
                continue;
            }

            if (tries++ == NGX_HTTP_AUTH_JWT_MAX_TRIES) {
                *err = "too many candidate keys";
                return NGX_HTTP_AUTH_JWT_BAD_SIGNATURE;
            }

            rc = ngx_http_auth_jwt_attempt(r, &key[j], &at);

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

        *err = jwe ? "JWE decryption failed"
                   : "signature verification failed";
        return NGX_HTTP_AUTH_JWT_BAD_SIGNATURE;
    }

    if (unloaded == sets) {
        *err = "no keys could be loaded";
        return NGX_HTTP_AUTH_JWT_KEY_UNAVAILABLE;
    }

    *err = "no key matches the token's \"kid\" and \"alg\"";

    return NGX_HTTP_AUTH_JWT_NO_KEY;
}


/* one candidate key: NGX_OK when it fits, NGX_DECLINED, NGX_ERROR */

static ngx_int_t
ngx_http_auth_jwt_attempt(ngx_http_request_t *r, ngx_http_auth_jwt_key_t *key,
    ngx_http_auth_jwt_attempt_t *at)
{
    ngx_int_t  rc;

    if (at->jwe) {
        rc = ngx_http_auth_jwt_jwe_decrypt(r->pool, key, at->jwe, at->plain);
        return (rc == NGX_OK || rc == NGX_ERROR) ? rc : NGX_DECLINED;
    }

    if (ngx_http_auth_jwt_verify(key, at->jwt) != NGX_OK) {
        return NGX_DECLINED;
    }

    ngx_memcpy(at->fp, key->fp, NGX_HTTP_AUTH_JWT_FP_LEN);

    return NGX_OK;
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

        switch (ngx_http_auth_jwt_get_token(r, jlcf, &ctx->token)) {

        case NGX_OK:
            break;

        case NGX_DECLINED:
            ctx->pre = NGX_HTTP_AUTH_JWT_MISSING;
            ctx->pre_err = "no token";
            break;

        case NGX_ABORT:
            ctx->pre = NGX_HTTP_AUTH_JWT_MALFORMED;
            ctx->pre_err = "malformed bearer token";
            break;

        default:
            ctx->pre = NGX_HTTP_AUTH_JWT_ERROR;
        }
    }

    if (ctx->pre != NGX_HTTP_AUTH_JWT_OK || !parse || ctx->parsed) {
        return ctx->pre;
    }

    ctx->parsed = 1;
    err = NULL;

    /* the request's context owns (and releases) the JSON values */

    if (jlcf->type != NGX_HTTP_AUTH_JWT_SIGNED) {
        res = ngx_http_auth_jwt_jwe_parse(r->pool, &ctx->token, &ctx->jwe,
                                          &err);

        /* the JWE header: $jwt_header_* of an encrypted token */

        ctx->header = ctx->jwe.header;
        ctx->header_text = ctx->jwe.header_text;

    } else {
        res = ngx_http_auth_jwt_parse(r->pool, &ctx->token, &ctx->jwt,
                                      &err);

        ctx->header = ctx->jwt.header;
        ctx->payload = ctx->jwt.payload;
        ctx->header_text = ctx->jwt.header_text;
        ctx->payload_text = ctx->jwt.payload_text;
    }

    if (res != NGX_HTTP_AUTH_JWT_OK) {
        ctx->pre = res;
        ctx->pre_err = err;
    }

    return ctx->pre;
}


/*
 * The token, by the grammar of RFC 6750 (ngx_meshgate_bearer.c) with
 * auth_jwt's own length bound, from the Authorization header or token=:
 * NGX_OK, NGX_DECLINED when there is none, NGX_ABORT when malformed.
 */

static ngx_int_t
ngx_http_auth_jwt_get_token(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_str_t *token)
{
    token->len = 0;
    token->data = NULL;

    if (jlcf->token == NULL) {
        return ngx_meshgate_bearer_token(r, token,
                                         NGX_HTTP_AUTH_JWT_MAX_TOKEN);
    }

    if (ngx_http_complex_value(r, jlcf->token, token) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_meshgate_bearer_check(token, NGX_HTTP_AUTH_JWT_MAX_TOKEN);
}


/*
 * The i-th key set of the location: key files first, then fetched sets
 * (NULL while not fetched yet).  A name with variables is made for the
 * request here; NGX_ERROR (logged) when it cannot be, or the file cannot
 * be loaded.
 */

ngx_int_t
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

    if (ngx_http_auth_jwt_name(r, ks->tmpl, &path) != NGX_OK) {
        return NGX_ERROR;
    }

    jmcf = ngx_http_get_module_main_conf(r, ngx_http_auth_jwt_module);

    *out = ngx_http_auth_jwt_file_keyset(r, &path, jmcf->keys_max);

    return *out ? NGX_OK : NGX_ERROR;
}


/* exp and nbf: NumericDate (a JSON number) when present */

static ngx_http_auth_jwt_result_e
ngx_http_auth_jwt_get_times(json_t *payload, ngx_http_auth_jwt_times_t *t,
    const char **err)
{
    ngx_int_t  rc;

    ngx_memzero(t, sizeof(ngx_http_auth_jwt_times_t));

    rc = ngx_http_auth_jwt_date(payload, "exp", &t->exp);
    if (rc == NGX_ERROR) {
        *err = "\"exp\" is not a NumericDate";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    t->has_exp = (rc == NGX_OK);

    rc = ngx_http_auth_jwt_date(payload, "nbf", &t->nbf);
    if (rc == NGX_ERROR) {
        *err = "\"nbf\" is not a NumericDate";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    t->has_nbf = (rc == NGX_OK);

    return NGX_HTTP_AUTH_JWT_OK;
}


/* a NumericDate claim: NGX_OK, NGX_DECLINED absent, NGX_ERROR not a number */

static ngx_int_t
ngx_http_auth_jwt_date(json_t *payload, const char *name, double *date)
{
    json_t  *v;

    v = json_object_get(payload, name);
    if (v == NULL) {
        return NGX_DECLINED;
    }

    if (!json_is_number(v)) {
        return NGX_ERROR;
    }

    *date = json_number_value(v);

    return NGX_OK;
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


/*
 * The scopes the token grants (RFC 8693 section 4.2 "scope", or "scp"
 * when there is no "scope"; never both: see ngx_meshgate_scope_granted)
 * hold all, or any, of the location's.
 */

static ngx_int_t
ngx_http_auth_jwt_scope(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, json_t *payload)
{
    ngx_int_t  rc;
    ngx_str_t  granted;

    rc = ngx_meshgate_scope_granted(r->pool, payload, &granted);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_meshgate_scope_match(&granted, jlcf->scopes, jlcf->scope_any);
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


static ngx_int_t
ngx_http_auth_jwt_challenge(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, char *error)
{
    ngx_str_t  realm;

    if (ngx_http_complex_value(r, jlcf->realm, &realm) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_meshgate_www_authenticate(r, "Bearer", &realm, error, NULL);
}


static double
ngx_http_auth_jwt_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (double) tp->sec + (double) tp->msec / 1000;
}
