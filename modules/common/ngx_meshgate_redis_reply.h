
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_MESHGATE_REDIS_REPLY_H_INCLUDED_
#define _NGX_MESHGATE_REDIS_REPLY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_MESHGATE_REDIS_MAX_DEPTH     7     /* hiredis 0.14 nests 7 */


#pragma GCC visibility push(hidden)


/* what one reply may hold: see ngx_meshgate_redis_limit_replies() */

typedef struct {
    ngx_uint_t                      max_values;
    ngx_uint_t                      max_depth;   /* <= MAX_DEPTH */
    size_t                          max_bulk;
} ngx_meshgate_redis_limits_t;


/*
 * Where the pre-scan of replies stands (ngx_meshgate_redis_scan()): the
 * bytes of a reply are checked against the limits before hiredis sees
 * them, so that hiredis never allocates for a count or a length that the
 * limits refuse.  All zero at the start of a connection.
 */

typedef struct {
    ngx_uint_t                      state;
    u_char                          type;
    unsigned                        neg:1;
    size_t                          line;      /* bytes of the line */
    ngx_uint_t                      digits;
    int64_t                         num;
    int64_t                         bulk;      /* bytes left, CRLF too */
    ngx_uint_t                      depth;
    ngx_uint_t                      values;    /* of the current reply */
    int64_t                         left[NGX_MESHGATE_REDIS_MAX_DEPTH + 1];
} ngx_meshgate_redis_scan_t;


/*
 * Scans len more bytes of a connection's replies, going on from sc.
 * Returns how many of them are within the limits; if fewer than len, *why
 * says what was exceeded and the connection must be dropped.
 */
ssize_t ngx_meshgate_redis_scan(ngx_meshgate_redis_limits_t *limits,
    ngx_meshgate_redis_scan_t *sc, u_char *buf, size_t len, const char **why);

/*
 * The same on a whole buffer, from a fresh state: how many bytes of buf
 * are within the limits (len if all).  For fuzz harnesses and tests; it
 * needs only nginx's core (no hiredis, no event loop), and reads nothing
 * outside buf[0 .. len - 1].
 */
size_t ngx_meshgate_redis_scan_bytes(ngx_meshgate_redis_limits_t *limits,
    u_char *buf, size_t len);


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_REDIS_REPLY_H_INCLUDED_ */
