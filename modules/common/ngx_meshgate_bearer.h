
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_MESHGATE_BEARER_H_INCLUDED_
#define _NGX_MESHGATE_BEARER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>


/*
 * OAuth 2.0 bearer tokens (RFC 6750) and scopes (RFC 6749 section 3.3),
 * one grammar for every module that takes a token.  Private copies,
 * hidden symbols.
 */

#pragma GCC visibility push(hidden)


/*
 * The usual bound on a token's length; a module whose tokens carry more
 * (self-contained JWTs) passes its own.
 */
#define NGX_MESHGATE_BEARER_MAX  4096


/*
 * The token of "Authorization: Bearer <token>" (the scheme without
 * regard to case, one or more spaces): NGX_OK with token pointing into
 * the header; NGX_DECLINED when there is no Bearer credential;
 * NGX_ABORT when it is malformed (see ngx_meshgate_bearer_check()).
 */
ngx_int_t ngx_meshgate_bearer_token(ngx_http_request_t *r, ngx_str_t *token,
    size_t max);

/*
 * Whether a token has the b64token grammar, 1*( ALPHA / DIGIT /
 * "-" / "." / "_" / "~" / "+" / "/" ) *"=", and at most max bytes:
 * NGX_OK, NGX_DECLINED when empty,
 * NGX_ABORT otherwise.  A token taken from elsewhere (a cookie, a
 * variable) is held to the same grammar.
 */
ngx_int_t ngx_meshgate_bearer_check(ngx_str_t *token, size_t max);

/* whether s is a scope-token: 1*( %x21 / %x23-5B / %x5D-7E ) */
ngx_uint_t ngx_meshgate_scope_is_valid(ngx_str_t *s);

/*
 * The scopes a token grants, space-separated, in pool memory: its
 * "scope" claim, which must be a string (RFC 8693), or when it has none,
 * its "scp" claim, an array of scope-tokens or a string.  NGX_DECLINED
 * when it has neither or the one it has is malformed.
 */
ngx_int_t ngx_meshgate_scope_granted(ngx_pool_t *pool, json_t *claims,
    ngx_str_t *granted);

/*
 * The same from the compact JSON text of the claims (as
 * ngx_meshgate_json_dump() wrote it), parsing only the member needed.
 */
ngx_int_t ngx_meshgate_scope_granted_text(ngx_pool_t *pool,
    ngx_str_t *claims, ngx_str_t *granted, ngx_log_t *log);

/*
 * Whether the granted scopes (space-separated) hold all of want
 * (ngx_str_t), or with any set, at least one: NGX_OK or NGX_DECLINED.
 */
ngx_int_t ngx_meshgate_scope_match(ngx_str_t *granted, ngx_array_t *want,
    ngx_uint_t any);


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_BEARER_H_INCLUDED_ */
