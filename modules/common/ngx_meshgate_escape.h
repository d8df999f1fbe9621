
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_MESHGATE_ESCAPE_H_INCLUDED_
#define _NGX_MESHGATE_ESCAPE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * One escaper for names written into Prometheus label values and JSON
 * strings (upstream, peer, split and variant names; the bytes of a
 * configuration or of a peer are never trusted to be plain).  Private
 * copies, hidden symbols.
 */

#pragma GCC visibility push(hidden)


/*
 * a Prometheus label value (text format 0.0.4): \\, \" and \n; other
 * control bytes, 0x7f and bytes that are not UTF-8 become '?'
 */
#define NGX_MESHGATE_ESCAPE_LABEL  0

/*
 * a JSON string's contents (RFC 8259): \\, \", \n; other control
 * bytes, 0x7f and bytes that are not UTF-8 as \u00XX
 */
#define NGX_MESHGATE_ESCAPE_JSON   1


/* the length src takes once escaped: at most 6 bytes per byte of src */
size_t ngx_meshgate_escape_len(u_char *src, size_t len, ngx_uint_t type);

/* writes src escaped at dst; returns the end of what it wrote */
u_char *ngx_meshgate_escape(u_char *dst, u_char *src, size_t len,
    ngx_uint_t type);

/*
 * The length of the well-formed UTF-8 sequence of two bytes or more at
 * p (not past last); 0 for any other byte.
 */
size_t ngx_meshgate_utf8_len(u_char *p, u_char *last);


#pragma GCC visibility pop


/*
 * n in decimal at p (room for NGX_INT64_LEN bytes); returns the end.
 * For numbers on hot paths: ngx_sprintf() interprets its format first.
 */

static ngx_inline u_char *
ngx_meshgate_decimal(u_char *p, uint64_t n)
{
    u_char  *t, tmp[NGX_INT64_LEN];

    t = tmp + NGX_INT64_LEN;

    do {
        *--t = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    return ngx_cpymem(p, t, tmp + NGX_INT64_LEN - t);
}


#endif /* _NGX_MESHGATE_ESCAPE_H_INCLUDED_ */
