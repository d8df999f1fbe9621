
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_meshgate_json.h"


static void ngx_meshgate_json_cleanup_handler(void *data);
static ngx_int_t ngx_meshgate_json_join(ngx_pool_t *pool, json_t *array,
    ngx_str_t *out);


json_t *
ngx_meshgate_json_parse(u_char *data, size_t len, ngx_log_t *log,
    const char *what)
{
    u_char        *p;
    json_t        *v;
    json_error_t   err;

    v = json_loadb((const char *) data, len,
                   JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);

    if (v == NULL) {
        /* jansson quotes the text near the error: outside bytes */

        for (p = (u_char *) err.text; *p; p++) {
            if (*p < 0x20 || *p >= 0x7f) {
                *p = '?';
            }
        }

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "%s: invalid JSON at offset %d: %s",
                      what, err.position, err.text);
    }

    return v;
}


ngx_int_t
ngx_meshgate_json_cleanup(ngx_pool_t *pool, json_t *v)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        json_decref(v);
        return NGX_ERROR;
    }

    cln->handler = ngx_meshgate_json_cleanup_handler;
    cln->data = v;

    return NGX_OK;
}


static void
ngx_meshgate_json_cleanup_handler(void *data)
{
    json_decref((json_t *) data);
}


json_t *
ngx_meshgate_json_path(json_t *root, u_char *path, size_t len)
{
    u_char  *p, *last, *dot;
    char     name[256];
    size_t   n;
    json_t  *v;

    v = root;
    p = path;
    last = path + len;

    while (p < last) {
        if (!json_is_object(v)) {
            return NULL;
        }

        dot = ngx_strlchr(p, last, '.');
        if (dot == NULL) {
            dot = last;
        }

        n = dot - p;
        if (n == 0 || n >= sizeof(name)) {
            return NULL;
        }

        ngx_memcpy(name, p, n);
        name[n] = '\0';

        v = json_object_get(v, name);
        if (v == NULL) {
            return NULL;
        }

        p = dot + 1;
    }

    return v;
}


ngx_int_t
ngx_meshgate_json_text(ngx_pool_t *pool, json_t *v, ngx_str_t *out)
{
    switch (json_typeof(v)) {

    case JSON_STRING:
        out->len = json_string_length(v);
        out->data = ngx_pnalloc(pool, out->len + 1);
        if (out->data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(out->data, json_string_value(v), out->len);
        out->data[out->len] = '\0';
        return NGX_OK;

    case JSON_NULL:
        ngx_str_set(out, "");
        return NGX_OK;

    case JSON_ARRAY:
        return ngx_meshgate_json_join(pool, v, out);

    default:
        return ngx_meshgate_json_dump(pool, v, out);
    }
}


static ngx_int_t
ngx_meshgate_json_join(ngx_pool_t *pool, json_t *array, ngx_str_t *out)
{
    u_char     *p;
    size_t      i, n, len;
    ngx_str_t  *parts;

    n = json_array_size(array);

    if (n == 0) {
        ngx_str_set(out, "");
        return NGX_OK;
    }

    parts = ngx_palloc(pool, n * sizeof(ngx_str_t));
    if (parts == NULL) {
        return NGX_ERROR;
    }

    len = n - 1;

    for (i = 0; i < n; i++) {
        if (ngx_meshgate_json_text(pool, json_array_get(array, i), &parts[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        len += parts[i].len;
    }

    p = ngx_pnalloc(pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;
    out->len = len;

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, parts[i].data, parts[i].len);
    }

    *p = '\0';

    return NGX_OK;
}


ngx_int_t
ngx_meshgate_json_dump(ngx_pool_t *pool, json_t *v, ngx_str_t *out)
{
    char    *s;
    size_t   len;

    s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s == NULL) {
        return NGX_ERROR;
    }

    len = ngx_strlen(s);

    out->data = ngx_pnalloc(pool, len + 1);
    if (out->data == NULL) {
        free(s);
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, s, len + 1);
    out->len = len;
    free(s);

    return NGX_OK;
}
