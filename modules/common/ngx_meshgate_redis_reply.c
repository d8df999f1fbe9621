
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_meshgate_redis_reply.h"


/*
 * Only nginx's core headers here (no hiredis, no events): a fuzz harness
 * can build this file alone and call ngx_meshgate_redis_scan_bytes().
 */

#define NGX_MESHGATE_REDIS_MIN_LINE      1024  /* error texts */
#define NGX_MESHGATE_REDIS_MAX_DIGITS    18

#define NGX_MESHGATE_REDIS_SCAN_TYPE     0
#define NGX_MESHGATE_REDIS_SCAN_LINE     1
#define NGX_MESHGATE_REDIS_SCAN_LF       2
#define NGX_MESHGATE_REDIS_SCAN_BULK     3


static const char *ngx_meshgate_redis_scan_header(
    ngx_meshgate_redis_limits_t *limits, ngx_meshgate_redis_scan_t *sc);
static void ngx_meshgate_redis_scan_done(ngx_meshgate_redis_scan_t *sc);


size_t
ngx_meshgate_redis_scan_bytes(ngx_meshgate_redis_limits_t *limits,
    u_char *buf, size_t len)
{
    const char                 *why;
    ngx_meshgate_redis_scan_t   sc;

    ngx_memzero(&sc, sizeof(ngx_meshgate_redis_scan_t));

    return ngx_meshgate_redis_scan(limits, &sc, buf, len, &why);
}


/*
 * Checks the bytes of replies against the limits before they reach
 * hiredis, which would otherwise allocate for any element count it reads
 * (calloc of 16 GiB for "*2147483647") and buffer any line or bulk string
 * whole, however long.  Each reply may hold at most max_values values in
 * all, arrays nested max_depth deep, bulk strings of max_bulk bytes and
 * lines of max(max_bulk, 1024) bytes.  Returns how many bytes are within
 * the limits; if fewer than len, *why says what was exceeded.
 */

ssize_t
ngx_meshgate_redis_scan(ngx_meshgate_redis_limits_t *limits,
    ngx_meshgate_redis_scan_t *sc, u_char *buf, size_t len, const char **why)
{
    u_char  *p, *end, c;
    size_t   max_line;

    max_line = ngx_max(limits->max_bulk, NGX_MESHGATE_REDIS_MIN_LINE);

    for (p = buf, end = buf + len; p < end; /* void */) {

        switch (sc->state) {

        case NGX_MESHGATE_REDIS_SCAN_TYPE:
            c = *p++;

            if (c != '+' && c != '-' && c != ':' && c != '$' && c != '*') {
                *why = "protocol error (unknown reply type)";
                return p - 1 - buf;
            }

            if (++sc->values > limits->max_values) {
                *why = "reply with too many values";
                return p - 1 - buf;
            }

            sc->type = c;
            sc->line = 0;
            sc->digits = 0;
            sc->num = 0;
            sc->neg = 0;
            sc->state = NGX_MESHGATE_REDIS_SCAN_LINE;
            break;

        case NGX_MESHGATE_REDIS_SCAN_LINE:
            c = *p++;

            if (c == '\r') {
                sc->state = NGX_MESHGATE_REDIS_SCAN_LF;
                break;
            }

            if (++sc->line > max_line) {
                *why = "reply line too long";
                return p - 1 - buf;
            }

            if (sc->type != '$' && sc->type != '*') {
                break;
            }

            if (c == '-' && sc->line == 1) {
                sc->neg = 1;
                break;
            }

            if (c < '0' || c > '9'
                || ++sc->digits > NGX_MESHGATE_REDIS_MAX_DIGITS)
            {
                *why = "protocol error (bad length)";
                return p - 1 - buf;
            }

            sc->num = sc->num * 10 + (c - '0');
            break;

        case NGX_MESHGATE_REDIS_SCAN_LF:
            if (*p++ != '\n') {
                *why = "protocol error (no LF after CR)";
                return p - 1 - buf;
            }

            *why = ngx_meshgate_redis_scan_header(limits, sc);

            if (*why) {
                return p - 1 - buf;
            }

            break;

        default: /* NGX_MESHGATE_REDIS_SCAN_BULK */

            if (end - p < sc->bulk) {
                sc->bulk -= end - p;
                p = end;
                break;
            }

            p += sc->bulk;
            ngx_meshgate_redis_scan_done(sc);
        }
    }

    return len;
}


/* the line of a value is complete: NULL, or what the value exceeds */

static const char *
ngx_meshgate_redis_scan_header(ngx_meshgate_redis_limits_t *limits,
    ngx_meshgate_redis_scan_t *sc)
{
    if (sc->type != '$' && sc->type != '*') {
        ngx_meshgate_redis_scan_done(sc);
        return NULL;
    }

    if (sc->digits == 0 || (sc->neg && sc->num != 1)) {
        return "protocol error (bad length)";
    }

    if (sc->neg) {
        /* a nil bulk string or array */
        ngx_meshgate_redis_scan_done(sc);
        return NULL;
    }

    if (sc->type == '$') {
        if ((uint64_t) sc->num > limits->max_bulk) {
            return "reply with a too long bulk string";
        }

        sc->bulk = sc->num + 2;
        sc->state = NGX_MESHGATE_REDIS_SCAN_BULK;
        return NULL;
    }

    if ((uint64_t) sc->num > limits->max_values - sc->values) {
        return "reply with too many values";
    }

    if (sc->num == 0) {
        ngx_meshgate_redis_scan_done(sc);
        return NULL;
    }

    if (sc->depth == limits->max_depth) {
        return "reply nested too deep";
    }

    sc->left[++sc->depth] = sc->num;
    sc->state = NGX_MESHGATE_REDIS_SCAN_TYPE;

    return NULL;
}


/* a value is complete: so may be the arrays around it and the reply */

static void
ngx_meshgate_redis_scan_done(ngx_meshgate_redis_scan_t *sc)
{
    sc->state = NGX_MESHGATE_REDIS_SCAN_TYPE;

    while (sc->depth) {
        if (--sc->left[sc->depth]) {
            return;
        }

        sc->depth--;
    }

    sc->values = 0;
}
