
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_meshgate_bearer.h"
#include "ngx_meshgate_json.h"
#include "ngx_meshgate_json_text.h"


static ngx_int_t ngx_meshgate_scope_join(ngx_pool_t *pool, json_t *scp,
    ngx_str_t *granted);
static ngx_uint_t ngx_meshgate_scope_has(ngx_str_t *granted, ngx_str_t *s);


ngx_int_t
ngx_meshgate_bearer_token(ngx_http_request_t *r, ngx_str_t *token,
    size_t max)
{
    u_char           *p, *end;
    ngx_table_elt_t  *h;

    h = r->headers_in.authorization;

    if (h == NULL
        || h->value.len < sizeof("Bearer") - 1
        || ngx_strncasecmp(h->value.data, (u_char *) "Bearer",
                           sizeof("Bearer") - 1) != 0)
    {
        return NGX_DECLINED;
    }

    p = h->value.data + sizeof("Bearer") - 1;
    end = h->value.data + h->value.len;

    /* "Bearerx" is another scheme */

    if (p == end || *p != ' ') {
        return NGX_DECLINED;
    }

    while (p < end && *p == ' ') {
        p++;
    }

    token->data = p;
    token->len = end - p;

    return ngx_meshgate_bearer_check(token, max);
}


ngx_int_t
ngx_meshgate_bearer_check(ngx_str_t *token, size_t max)
{
    u_char      *p, *end;
    ngx_uint_t   eq;

    if (token->len == 0) {
        return NGX_DECLINED;
    }

    if (token->len > max || token->data[0] == '=') {
        return NGX_ABORT;
    }

    eq = 0;
    end = token->data + token->len;

    for (p = token->data; p < end; p++) {
        if (*p == '=') {
            eq = 1;
            continue;
        }

        if (eq) {
            return NGX_ABORT;
        }

        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
            || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'
            || *p == '_' || *p == '~' || *p == '+' || *p == '/')
        {
            continue;
        }

        return NGX_ABORT;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_meshgate_scope_is_valid(ngx_str_t *s)
{
    u_char  *p;

    if (s->len == 0) {
        return 0;
    }

    for (p = s->data; p < s->data + s->len; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '"' || *p == '\\') {
            return 0;
        }
    }

    return 1;
}


ngx_int_t
ngx_meshgate_scope_granted(ngx_pool_t *pool, json_t *claims,
    ngx_str_t *granted)
{
    json_t  *v;

    v = json_object_get(claims, "scope");

    if (v != NULL) {
        /* RFC 8693 section 4.2: a string, never an array */
        return json_is_string(v) ? ngx_meshgate_scope_join(pool, v, granted)
                                 : NGX_DECLINED;
    }

    return ngx_meshgate_scope_join(pool, json_object_get(claims, "scp"),
                                   granted);
}


ngx_int_t
ngx_meshgate_scope_granted_text(ngx_pool_t *pool, ngx_str_t *claims,
    ngx_str_t *granted, ngx_log_t *log)
{
    json_t     *v;
    ngx_int_t   rc;
    ngx_str_t   raw;

    rc = ngx_meshgate_json_member(claims, (u_char *) "scope",
                                  sizeof("scope") - 1, 0, &raw);

    if (rc == NGX_OK && raw.data[0] != '"') {
        return NGX_DECLINED;
    }

    if (rc == NGX_DECLINED) {
        rc = ngx_meshgate_json_member(claims, (u_char *) "scp",
                                      sizeof("scp") - 1, 0, &raw);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    v = ngx_meshgate_json_parse(raw.data, raw.len, log, "scope claim");
    if (v == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_meshgate_scope_join(pool, v, granted);

    json_decref(v);

    return rc;
}


/* a string as it is; an array of scope-tokens joined with spaces */

static ngx_int_t
ngx_meshgate_scope_join(ngx_pool_t *pool, json_t *scp, ngx_str_t *granted)
{
    u_char     *p;
    size_t      i, n, len;
    json_t     *e;
    ngx_str_t   s;

    if (json_is_string(scp)) {
        s.data = (u_char *) json_string_value(scp);
        s.len = json_string_length(scp);

        granted->data = ngx_pstrdup(pool, &s);
        if (granted->data == NULL && s.len) {
            return NGX_ERROR;
        }

        granted->len = s.len;
        return NGX_OK;
    }

    if (!json_is_array(scp)) {
        return NGX_DECLINED;
    }

    n = json_array_size(scp);
    len = 0;

    for (i = 0; i < n; i++) {
        e = json_array_get(scp, i);

        if (!json_is_string(e)) {
            return NGX_DECLINED;
        }

        s.data = (u_char *) json_string_value(e);
        s.len = json_string_length(e);

        /* an element with a space in it would match as two scopes */

        if (!ngx_meshgate_scope_is_valid(&s)) {
            return NGX_DECLINED;
        }

        len += s.len + 1;
    }

    p = ngx_pnalloc(pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    granted->data = p;

    for (i = 0; i < n; i++) {
        e = json_array_get(scp, i);

        if (i) {
            *p++ = ' ';
        }

        p = ngx_cpymem(p, json_string_value(e), json_string_length(e));
    }

    granted->len = p - granted->data;

    return NGX_OK;
}


ngx_int_t
ngx_meshgate_scope_match(ngx_str_t *granted, ngx_array_t *want,
    ngx_uint_t any)
{
    ngx_str_t   *s;
    ngx_uint_t   i, found;

    s = want->elts;
    found = 0;

    for (i = 0; i < want->nelts; i++) {
        if (ngx_meshgate_scope_has(granted, &s[i])) {
            found++;
        }
    }

    if (any ? found > 0 : found == want->nelts) {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/* s is one of the space-separated words of granted */

static ngx_uint_t
ngx_meshgate_scope_has(ngx_str_t *granted, ngx_str_t *s)
{
    u_char  *p, *end, *w;

    p = granted->data;
    end = granted->data + granted->len;

    while (p < end) {
        while (p < end && *p == ' ') {
            p++;
        }

        w = p;

        while (p < end && *p != ' ') {
            p++;
        }

        if ((size_t) (p - w) == s->len && ngx_memcmp(w, s->data, s->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}
