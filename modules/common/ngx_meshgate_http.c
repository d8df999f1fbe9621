
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_meshgate_http.h"


ngx_int_t
ngx_meshgate_add_variables(ngx_conf_t *cf, ngx_http_variable_t *vars)
{
    ngx_http_variable_t  *var, *v;

    for (v = vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_meshgate_text_is_safe(u_char *p, size_t len)
{
    u_char  *last;

    for (last = p + len; p < last; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            return 0;
        }
    }

    return 1;
}


ngx_uint_t
ngx_meshgate_utf8_is_valid(u_char *p, size_t len)
{
    u_char      *last;
    uint32_t     u, min;
    ngx_uint_t   n;

    /* ngx_utf8_decode() takes any byte >= 0x80 as a continuation byte */

    last = p + len;

    while (p < last) {
        u = *p++;

        if (u < 0x80) {
            continue;
        }

        if (u >= 0xc2 && u <= 0xdf) {
            n = 1;
            u &= 0x1f;
            min = 0x80;

        } else if (u >= 0xe0 && u <= 0xef) {
            n = 2;
            u &= 0x0f;
            min = 0x800;

        } else if (u >= 0xf0 && u <= 0xf4) {
            n = 3;
            u &= 0x07;
            min = 0x10000;

        } else {
            return 0;
        }

        if ((size_t) (last - p) < n) {
            return 0;
        }

        while (n--) {
            if ((*p & 0xc0) != 0x80) {
                return 0;
            }

            u = (u << 6) | (*p++ & 0x3f);
        }

        if (u < min || u > 0x10ffff || (u >= 0xd800 && u <= 0xdfff)) {
            return 0;
        }
    }

    return 1;
}


void
ngx_meshgate_variable_set_text(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, const char *what, ngx_str_t *name,
    u_char *data, size_t len)
{
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    if (!ngx_meshgate_text_is_safe(data, len)) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "%s \"%V\" holds control bytes, read as empty",
                      what, name);
        len = 0;
    }

    v->len = len;
    v->data = data;
}


ngx_uint_t
ngx_meshgate_realm_is_valid(ngx_str_t *realm)
{
    u_char  *p;

    for (p = realm->data; p < realm->data + realm->len; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\') {
            return 0;
        }
    }

    return 1;
}


char *
ngx_meshgate_realm_conf(ngx_conf_t *cf, ngx_str_t *value,
    ngx_flag_t *enabled, ngx_str_t *realm)
{
    if (*enabled != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    if (ngx_strcmp(value->data, "off") == 0) {
        *enabled = 0;
        return NGX_CONF_OK;
    }

    if (!ngx_meshgate_realm_is_valid(value)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid character in realm \"%V\"", value);
        return NGX_CONF_ERROR;
    }

    *enabled = 1;
    *realm = *value;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_meshgate_www_authenticate(ngx_http_request_t *r, const char *scheme,
    ngx_str_t *realm, const char *error, ngx_array_t *scopes)
{
    u_char           *p;
    size_t            len;
    ngx_str_t        *s;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    len = ngx_strlen(scheme) + sizeof(" realm=\"\"") - 1 + 2 * realm->len;

    if (error) {
        len += sizeof(", error=\"\"") - 1 + ngx_strlen(error);
    }

    if (scopes) {
        len += sizeof(", scope=\"\"") - 1;
        s = scopes->elts;

        for (i = 0; i < scopes->nelts; i++) {
            len += s[i].len + 1;
        }
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "WWW-Authenticate");
    h->value.data = p;

    p = ngx_sprintf(p, "%s realm=\"", scheme);

    for (i = 0; i < realm->len; i++) {
        if (realm->data[i] < 0x20 || realm->data[i] == 0x7f) {
            continue;
        }

        if (realm->data[i] == '"' || realm->data[i] == '\\') {
            *p++ = '\\';
        }

        *p++ = realm->data[i];
    }

    *p++ = '"';

    if (error) {
        p = ngx_sprintf(p, ", error=\"%s\"", error);
    }

    if (scopes) {
        p = ngx_cpymem(p, ", scope=\"", sizeof(", scope=\"") - 1);
        s = scopes->elts;

        for (i = 0; i < scopes->nelts; i++) {
            if (i) {
                *p++ = ' ';
            }

            p = ngx_cpymem(p, s[i].data, s[i].len);
        }

        *p++ = '"';
    }

    h->value.len = p - h->value.data;
    r->headers_out.www_authenticate = h;

    return NGX_OK;
}


char *
ngx_meshgate_zone_parse(ngx_conf_t *cf, ngx_str_t *arg, ngx_str_t *name,
    ssize_t *size)
{
    u_char     *p, *last;
    ngx_str_t   s;

    if (arg->len < 5 || ngx_strncmp(arg->data, "zone=", 5) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\", expected "
                           "\"zone=name:size\"", arg);
        return NGX_CONF_ERROR;
    }

    name->data = arg->data + 5;
    last = arg->data + arg->len;

    p = ngx_strlchr(name->data, last, ':');

    if (p == NULL || p == name->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone \"%V\", expected \"zone=name:size\"",
                           arg);
        return NGX_CONF_ERROR;
    }

    name->len = p - name->data;

    s.data = p + 1;
    s.len = last - s.data;

    *size = ngx_parse_size(&s);

    if (*size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", arg);
        return NGX_CONF_ERROR;
    }

    if (*size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small", arg);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
