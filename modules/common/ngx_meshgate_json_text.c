
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_meshgate_json_text.h"


static u_char *ngx_meshgate_json_skip_container(u_char *p, u_char *last);
static u_char *ngx_meshgate_json_unescape(u_char *w, u_char *p,
    u_char *last);


u_char *
ngx_meshgate_json_skip_string(u_char *p, u_char *last)
{
    while (p < last) {
        if (*p == '"') {
            return p + 1;
        }

        if (*p == '\\') {
            if (last - p < 2) {
                return NULL;
            }

            p += 2;
            continue;
        }

        p++;
    }

    return NULL;
}


u_char *
ngx_meshgate_json_skip_value(u_char *p, u_char *last)
{
    if (p == last) {
        return NULL;
    }

    switch (*p) {

    case '"':
        return ngx_meshgate_json_skip_string(p + 1, last);

    case '{':
    case '[':
        return ngx_meshgate_json_skip_container(p, last);
    }

    /* a number, true, false, null: compact text ends it with a delimiter */

    while (p < last && *p != ',' && *p != '}' && *p != ']') {
        p++;
    }

    return p;
}


/*
 * p is at a '{' or '['.  Brackets are counted, not matched: compact JSON
 * closes what it opens, and hostile text is only to be read in bounds.
 */

static u_char *
ngx_meshgate_json_skip_container(u_char *p, u_char *last)
{
    ngx_uint_t  depth;

    depth = 0;

    while (p < last) {

        switch (*p) {

        case '"':
            p = ngx_meshgate_json_skip_string(p + 1, last);
            if (p == NULL) {
                return NULL;
            }

            continue;

        case '{':
        case '[':
            if (++depth > NGX_MESHGATE_JSON_DEPTH) {
                return NULL;
            }

            break;

        case '}':
        case ']':
            if (--depth == 0) {
                return p + 1;
            }

            break;
        }

        p++;
    }

    return NULL;
}


ngx_int_t
ngx_meshgate_json_next(u_char **pp, u_char *last, ngx_str_t *name,
    ngx_str_t *value)
{
    u_char  *p, *end;

    p = *pp;

    if (p < last && *p == ',') {
        p++;
    }

    if (p == last || *p != '"') {
        *pp = p;
        return NGX_DONE;
    }

    end = ngx_meshgate_json_skip_string(p + 1, last);
    if (end == NULL || end == last || *end != ':') {
        return NGX_ERROR;
    }

    name->data = p + 1;
    name->len = end - 1 - name->data;

    p = end + 1;

    end = ngx_meshgate_json_skip_value(p, last);
    if (end == NULL || end == p || end == last
        || (*end != ',' && *end != '}'))
    {
        return NGX_ERROR;
    }

    value->data = p;
    value->len = end - p;

    *pp = end;

    return NGX_OK;
}


ngx_int_t
ngx_meshgate_json_member(ngx_str_t *json, u_char *name, size_t len,
    ngx_uint_t caseless, ngx_str_t *value)
{
    u_char      *p, *last;
    ngx_int_t    rc;
    ngx_str_t    key, v, found;
    ngx_uint_t   matched;

    p = json->data;
    last = json->data + json->len;

    if (p == last || *p++ != '{') {
        return NGX_ERROR;
    }

    matched = 0;
    ngx_str_null(&found);

    for ( ;; ) {
        rc = ngx_meshgate_json_next(&p, last, &key, &v);

        if (rc != NGX_OK) {
            break;
        }

        if (key.len != len) {
            continue;
        }

        if (ngx_memcmp(key.data, name, len) == 0) {
            *value = v;
            return NGX_OK;
        }

        if (caseless && ngx_strncasecmp(key.data, name, len) == 0) {
            found = v;
            matched++;
        }
    }

    if (rc == NGX_ERROR || p == last || *p != '}') {
        return NGX_ERROR;
    }

    if (matched != 1) {
        return NGX_DECLINED;
    }

    *value = found;

    return NGX_OK;
}


ngx_int_t
ngx_meshgate_json_value_text(ngx_pool_t *pool, ngx_str_t *raw,
    ngx_str_t *out)
{
    u_char  *p, *last, *w, *end;

    p = raw->data;
    last = p + raw->len;

    if (raw->len == 0 || (*p != '"' && *p != '[')) {
        if (raw->len == 4 && ngx_strncmp(p, "null", 4) == 0) {
            ngx_str_set(out, "");

        } else {
            *out = *raw;
        }

        return NGX_OK;
    }

    if (*p == '"' && raw->len >= 2 && last[-1] == '"'
        && ngx_strlchr(p + 1, last, '\\') == NULL)
    {
        /* the common case: the text is the string's content */
        out->data = p + 1;
        out->len = raw->len - 2;
        return NGX_OK;
    }

    out->data = ngx_pnalloc(pool, raw->len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    w = out->data;

    while (p < last) {

        switch (*p) {

        case '"':
            end = ngx_meshgate_json_skip_string(p + 1, last);
            if (end == NULL) {
                return NGX_ERROR;
            }

            w = ngx_meshgate_json_unescape(w, p + 1, end - 1);
            p = end;
            continue;

        case '[':
        case ']':
            p++;
            continue;

        case ',':
            *w++ = *p++;
            continue;
        }

        /* an object, a number, true, false, null */

        end = ngx_meshgate_json_skip_value(p, last);
        if (end == NULL || end == p) {
            return NGX_ERROR;
        }

        if (*p != 'n') {
            w = ngx_cpymem(w, p, end - p);
        }

        p = end;
    }

    out->len = w - out->data;

    return NGX_OK;
}


/*
 * The bytes a string's content stands for; returns past them.  Compact
 * text from jansson or aggregate escapes only '"', '\' and control
 * characters, so a \u escape stands for one byte below 0x80.
 */

static u_char *
ngx_meshgate_json_unescape(u_char *w, u_char *p, u_char *last)
{
    u_char     c;
    ngx_int_t  u;

    while (p < last) {
        c = *p++;

        if (c != '\\' || p == last) {
            *w++ = c;
            continue;
        }

        c = *p++;

        switch (c) {
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;

        case 'u':
            u = (last - p >= 4) ? ngx_hextoi(p, 4) : NGX_ERROR;
            p += (last - p >= 4) ? 4 : last - p;
            *w++ = (u_char) ((u == NGX_ERROR || u > 0x7f) ? '?' : u);
            break;

        default:
            *w++ = c;
        }
    }

    return w;
}
