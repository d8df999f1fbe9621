
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_meshgate_escape.h"
#include "ngx_meshgate_http.h"


/*
 * Prometheus label values know only \\, \" and \n: any other control
 * byte, 0x7f and each byte of a sequence that is not UTF-8 becomes '?'
 * (one byte for one: the length never grows for these).  JSON strings
 * take the same bytes as \u00XX.  UTF-8 is checked sequence by sequence,
 * so one bad byte does not cost the rest of a name its characters.
 */

size_t
ngx_meshgate_escape_len(u_char *src, size_t len, ngx_uint_t type)
{
    size_t   n, seq;
    u_char  *last;

    n = len;
    last = src + len;

    while (src < last) {

        if (*src == '\\' || *src == '"' || *src == '\n') {
            n++;

        } else if (*src >= 0x80) {
            seq = ngx_meshgate_utf8_len(src, last);

            if (seq) {
                src += seq;
                continue;
            }

            if (type == NGX_MESHGATE_ESCAPE_JSON) {
                n += sizeof("\\u0000") - 2;
            }

        } else if ((*src < 0x20 || *src == 0x7f)
                   && type == NGX_MESHGATE_ESCAPE_JSON)
        {
            n += sizeof("\\u0000") - 2;
        }

        src++;
    }

    return n;
}


u_char *
ngx_meshgate_escape(u_char *dst, u_char *src, size_t len, ngx_uint_t type)
{
    size_t   seq;
    u_char  *last;

    static u_char  hex[] = "0123456789abcdef";

    last = src + len;

    while (src < last) {

        switch (*src) {

        case '\\':
        case '"':
            *dst++ = '\\';
            *dst++ = *src++;
            continue;

        case '\n':
            *dst++ = '\\';
            *dst++ = 'n';
            src++;
            continue;
        }

        if (*src >= 0x80) {
            seq = ngx_meshgate_utf8_len(src, last);

            if (seq) {
                dst = ngx_cpymem(dst, src, seq);
                src += seq;
                continue;
            }

        } else if (*src >= 0x20 && *src != 0x7f) {
            *dst++ = *src++;
            continue;
        }

        if (type == NGX_MESHGATE_ESCAPE_JSON) {
            dst = ngx_cpymem(dst, "\\u00", sizeof("\\u00") - 1);
            *dst++ = hex[*src >> 4];
            *dst++ = hex[*src & 0xf];

        } else {
            *dst++ = '?';
        }

        src++;
    }

    return dst;
}


size_t
ngx_meshgate_utf8_len(u_char *p, u_char *last)
{
    size_t  n;

    if (*p >= 0xc2 && *p <= 0xdf) {
        n = 2;

    } else if (*p >= 0xe0 && *p <= 0xef) {
        n = 3;

    } else if (*p >= 0xf0 && *p <= 0xf4) {
        n = 4;

    } else {
        return 0;
    }

    if ((size_t) (last - p) < n || !ngx_meshgate_utf8_is_valid(p, n)) {
        return 0;
    }

    return n;
}
