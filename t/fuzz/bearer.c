
/*
 * Copyright (C) meshgate contributors
 */


/*
 * Bearer tokens and scopes (ngx_meshgate_bearer.c): the Authorization
 * header's Bearer credential and the b64token grammar, scope-tokens, the
 * scopes a token grants from its claims (parsed, and from their compact
 * text), and their match against the scopes a location wants.
 *
 * Input: a flags byte (bit 0: any of the wanted scopes suffices), then
 * three lines: an Authorization header value, a claims JSON document,
 * the wanted scopes separated by spaces.  Checked: an accepted token is
 * the header's value after "Bearer" and spaces, is within
 * NGX_MESHGATE_BEARER_MAX bytes and of the b64token grammar; the scopes
 * read from the claims and from their compact text are the same; every
 * scope of a "scp" array is a valid scope-token and matches itself; the
 * match agrees with a plain word search.
 *
 * max_len: 8192
 */


#include "ngx_fuzz.h"
#include "../../modules/common/ngx_meshgate_json.c"
#include "../../modules/common/ngx_meshgate_json_text.c"
#include "../../modules/common/ngx_meshgate_bearer.c"


#define NGX_FUZZ_BEARER_WANT  8


static void ngx_fuzz_bearer_token(ngx_str_t *value);
static void ngx_fuzz_bearer_scopes(ngx_pool_t *pool, ngx_str_t *claims,
    ngx_str_t *want, ngx_uint_t any);
static ngx_uint_t ngx_fuzz_bearer_b64token(ngx_str_t *t);
static ngx_uint_t ngx_fuzz_bearer_word(ngx_str_t *granted, ngx_str_t *w);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char      *copy;
    ngx_str_t    header, rest, claims, want;
    ngx_pool_t  *pool;

    ngx_fuzz_init();

    if (size < 1) {
        return 0;
    }

    /* a copy of exactly the bytes: ASan sees a read beyond them */

    copy = malloc(size);
    ngx_memcpy(copy, data + 1, size - 1);

    ngx_fuzz_split(copy, size - 1, &header, &rest);
    ngx_fuzz_split(rest.data, rest.len, &claims, &want);

    ngx_fuzz_bearer_token(&header);

    pool = ngx_create_pool(4096, ngx_fuzz_get_log());
    ngx_fuzz_bearer_scopes(pool, &claims, &want, data[0] & 0x01);
    ngx_destroy_pool(pool);

    free(copy);

    return 0;
}


static void
ngx_fuzz_bearer_token(ngx_str_t *value)
{
    u_char              *p;
    ngx_int_t            rc, rc2;
    ngx_str_t            token;
    ngx_table_elt_t      h;
    ngx_http_request_t   r;

    ngx_memzero(&r, sizeof(ngx_http_request_t));
    ngx_memzero(&h, sizeof(ngx_table_elt_t));
    ngx_str_set(&h.key, "Authorization");
    h.value = *value;
    h.hash = 1;

    r.headers_in.authorization = (value->len & 1) || value->len > 6
                                 ? &h : NULL;

    rc = ngx_meshgate_bearer_token(&r, &token, NGX_MESHGATE_BEARER_MAX);

    ngx_fuzz_assert(rc == NGX_OK || rc == NGX_DECLINED || rc == NGX_ABORT,
                    "unexpected return");

    if (r.headers_in.authorization == NULL) {
        ngx_fuzz_assert(rc == NGX_DECLINED, "no header yet a token");
        return;
    }

    if (rc == NGX_DECLINED && value->len > 7
        && ngx_strncasecmp(value->data, (u_char *) "Bearer ", 7) == 0)
    {
        /* declined with a Bearer scheme: nothing after the spaces */

        for (p = value->data + 7; p < value->data + value->len; p++) {
            ngx_fuzz_assert(*p == ' ', "Bearer credential declined");
        }
    }

    if (rc != NGX_OK) {
        return;
    }

    ngx_fuzz_assert(value->len > 7
                    && ngx_strncasecmp(value->data, (u_char *) "Bearer ", 7)
                       == 0,
                    "token without the Bearer scheme");
    ngx_fuzz_assert(token.data > value->data + 6
                    && token.data + token.len == value->data + value->len,
                    "token is not the end of the header");

    for (p = value->data + 6; p < token.data; p++) {
        ngx_fuzz_assert(*p == ' ', "token does not follow the spaces");
    }

    ngx_fuzz_assert(ngx_fuzz_bearer_b64token(&token),
                    "token outside the b64token grammar");

    /* the check alone agrees */

    rc2 = ngx_meshgate_bearer_check(&token, NGX_MESHGATE_BEARER_MAX);
    ngx_fuzz_assert(rc2 == NGX_OK, "check disagrees with the header");
}


static void
ngx_fuzz_bearer_scopes(ngx_pool_t *pool, ngx_str_t *claims, ngx_str_t *want,
    ngx_uint_t any)
{
    u_char        *p, *end;
    json_t        *v, *scp, *e;
    size_t         i;
    ngx_int_t      rc, rc2;
    ngx_str_t      text, granted, granted2, *w, s;
    ngx_uint_t     found;
    ngx_array_t    wants;
    json_error_t   err;

    /* a scope-token by itself, and b64token grammar of the same bytes */

    rc = ngx_meshgate_bearer_check(want, NGX_MESHGATE_BEARER_MAX);
    ngx_fuzz_assert((rc == NGX_OK) == ngx_fuzz_bearer_b64token(want)
                    && (rc != NGX_DECLINED || want->len == 0),
                    "b64token check wrong");

    (void) ngx_meshgate_scope_is_valid(want);

    v = json_loadb((char *) claims->data, claims->len,
                   JSON_REJECT_DUPLICATES, &err);

    if (v == NULL || !json_is_object(v)) {
        json_decref(v);
        return;
    }

    rc = ngx_meshgate_scope_granted(pool, v, &granted);

    /* the same from the compact text that modules keep of the claims */

    if (ngx_meshgate_json_dump(pool, v, &text) == NGX_OK) {
        rc2 = ngx_meshgate_scope_granted_text(pool, &text, &granted2,
                                              ngx_fuzz_get_log());

        ngx_fuzz_assert(rc == rc2, "claims and their text disagree");

        if (rc == NGX_OK) {
            ngx_fuzz_assert(granted.len == granted2.len
                            && ngx_memcmp(granted.data, granted2.data,
                                          granted.len) == 0,
                            "scopes of claims and text differ");
        }
    }

    /* every element of a "scp" array is one word of what is granted */

    scp = json_object_get(v, "scp");

    if (rc == NGX_OK && json_object_get(v, "scope") == NULL
        && json_is_array(scp))
    {
        for (i = 0; i < json_array_size(scp); i++) {
            e = json_array_get(scp, i);
            s.data = (u_char *) json_string_value(e);
            s.len = json_string_length(e);

            ngx_fuzz_assert(ngx_meshgate_scope_is_valid(&s),
                            "invalid scope-token granted");
            ngx_fuzz_assert(ngx_meshgate_scope_has(&granted, &s),
                            "granted scope does not match");
        }
    }

    if (rc != NGX_OK) {
        json_decref(v);
        return;
    }

    /* the wanted scopes: the words of the last line */

    if (ngx_array_init(&wants, pool, NGX_FUZZ_BEARER_WANT, sizeof(ngx_str_t))
        != NGX_OK)
    {
        json_decref(v);
        return;
    }

    end = want->data + want->len;

    for (p = want->data; p < end && wants.nelts < NGX_FUZZ_BEARER_WANT; ) {
        s.data = p;

        while (p < end && *p != ' ') {
            p++;
        }

        s.len = p - s.data;

        if (s.len) {
            w = ngx_array_push(&wants);
            *w = s;
        }

        while (p < end && *p == ' ') {
            p++;
        }
    }

    found = 0;
    w = wants.elts;

    for (i = 0; i < wants.nelts; i++) {
        found += ngx_fuzz_bearer_word(&granted, &w[i]);
    }

    rc = ngx_meshgate_scope_match(&granted, &wants, any);

    ngx_fuzz_assert((rc == NGX_OK) == (any ? found > 0
                                           : found == wants.nelts),
                    "scope match disagrees with a word search");

    json_decref(v);
}


/* RFC 6750's b64token, at most NGX_MESHGATE_BEARER_MAX bytes */

static ngx_uint_t
ngx_fuzz_bearer_b64token(ngx_str_t *t)
{
    size_t  i, n;

    if (t->len == 0 || t->len > NGX_MESHGATE_BEARER_MAX) {
        return 0;
    }

    for (n = 0; n < t->len && t->data[n] != '='; n++) {
        if (!isalnum(t->data[n]) && strchr("-._~+/", t->data[n]) == NULL) {
            return 0;
        }

        if (t->data[n] == '\0') {
            return 0;
        }
    }

    if (n == 0) {
        return 0;
    }

    for (i = n; i < t->len; i++) {
        if (t->data[i] != '=') {
            return 0;
        }
    }

    return 1;
}


/* whether w is one of the space-separated words of granted */

static ngx_uint_t
ngx_fuzz_bearer_word(ngx_str_t *granted, ngx_str_t *w)
{
    size_t  i, start;

    start = 0;

    for (i = 0; i <= granted->len; i++) {
        if (i == granted->len || granted->data[i] == ' ') {
            if (i - start == w->len
                && ngx_memcmp(granted->data + start, w->data, w->len) == 0)
            {
                return 1;
            }

            start = i + 1;
        }
    }

    return 0;
}
