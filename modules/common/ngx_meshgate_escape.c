
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_meshgate_escape.h"


size_t
ngx_meshgate_escape_len(u_char *src, size_t len, ngx_uint_t type)
{
    size_t   n;
    u_char  *last;

    n = len;

    for (last = src + len; src < last; src++) {
        if (*src == '\\' || *src == '"' || *src == '\n') {
            n++;

        } else if (*src < 0x20 && type == NGX_MESHGATE_ESCAPE_JSON) {
            n += sizeof("\\u0000") - 2;
        }
    }

    return n;
}


u_char *
ngx_meshgate_escape(u_char *dst, u_char *src, size_t len, ngx_uint_t type)
{
    u_char  *last;

    static u_char  hex[] = "0123456789abcdef";

    for (last = src + len; src < last; src++) {

        switch (*src) {

        case '\\':
        case '"':
            *dst++ = '\\';
            *dst++ = *src;
            continue;

        case '\n':
            *dst++ = '\\';
            *dst++ = 'n';
            continue;
        }

        if (*src < 0x20 && type == NGX_MESHGATE_ESCAPE_JSON) {
            dst = ngx_cpymem(dst, "\\u00", sizeof("\\u00") - 1);
            *dst++ = hex[*src >> 4];
            *dst++ = hex[*src & 0xf];
            continue;
        }

        *dst++ = *src;
    }

    return dst;
}
