
/*
 * Copyright (C) meshgate contributors
 */


/*
 * The pre-scan of Redis replies alone (ngx_meshgate_redis_scan_bytes() and
 * ngx_meshgate_redis_scan() in ngx_meshgate_redis_reply.c), against
 * hiredis's reader: the scan is what keeps hiredis from allocating for
 * counts and lengths beyond the limits, so every reply hiredis builds from
 * bytes the scan let through must be within them.
 *
 * Input: a byte choosing the limits (the client's default, auth_key's,
 * rate_limit's, a wide and a tiny profile), a byte choosing where the
 * bytes are cut in two for a scan in two steps, then what Redis sends.
 * Checked: the scan accepts a prefix of the input; in two steps it
 * accepts exactly what it accepts in one; every complete reply that
 * hiredis reads from the accepted bytes holds at most max_values values,
 * nests arrays at most max_depth deep, has bulk strings of at most
 * max_bulk bytes and lines of at most max(max_bulk, 1024) bytes.
 *
 * max_len: 4096
 */


#include "ngx_fuzz.h"
#include <hiredis/hiredis.h>
#include "../../modules/common/ngx_meshgate_redis_reply.c"


static ngx_uint_t ngx_fuzz_scan_walk(ngx_meshgate_redis_limits_t *limits,
    redisReply *reply, ngx_uint_t depth);


static ngx_meshgate_redis_limits_t  ngx_fuzz_scan_limits[] = {
    { 256, 1, 4096 },                   /* the client's default */
    { 1 + 2 * 64, 1, 4096 },            /* auth_key's HGETALL */
    { 1 + 64 * 16, 1, 0 },              /* rate_limit's EVALSHA */
    { 32768, NGX_MESHGATE_REDIS_MAX_DEPTH, 65536 },
    { 5, 2, 8 }                         /* every limit within reach */
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                       *copy;
    size_t                        len, ok, cut, ok2;
    ssize_t                       n;
    void                         *r;
    const char                   *why;
    redisReader                  *reader;
    ngx_meshgate_redis_scan_t     sc;
    ngx_meshgate_redis_limits_t  *limits;

    ngx_fuzz_init();

    if (size < 2) {
        return 0;
    }

    limits = &ngx_fuzz_scan_limits[data[0] % (sizeof(ngx_fuzz_scan_limits)
                                   / sizeof(ngx_meshgate_redis_limits_t))];

    /* a copy of exactly the bytes: ASan sees a read beyond them */

    len = size - 2;
    copy = malloc(len ? len : 1);
    ngx_memcpy(copy, data + 2, len);

    ok = ngx_meshgate_redis_scan_bytes(limits, copy, len);

    ngx_fuzz_assert(ok <= len, "scan accepts more than it was given");

    /* the same bytes in two reads of a connection */

    cut = len * data[1] / 255;

    ngx_memzero(&sc, sizeof(ngx_meshgate_redis_scan_t));

    n = ngx_meshgate_redis_scan(limits, &sc, copy, cut, &why);

    if ((size_t) n == cut) {
        n = ngx_meshgate_redis_scan(limits, &sc, copy + cut, len - cut, &why);
        ok2 = (n == (ssize_t) (len - cut)) ? len : cut + n;

    } else {
        ok2 = n;
    }

    ngx_fuzz_assert(ok2 == ok, "scan in two steps differs from one");

    /* what hiredis reads from the accepted bytes */

    reader = redisReaderCreate();
    ngx_fuzz_assert(reader != NULL, "no reader");

    if (ok && redisReaderFeed(reader, (char *) copy, ok) == REDIS_OK) {

        for ( ;; ) {
            r = NULL;

            if (redisReaderGetReply(reader, &r) != REDIS_OK || r == NULL) {
                break;
            }

            ngx_fuzz_assert(ngx_fuzz_scan_walk(limits, r, 0)
                            <= limits->max_values,
                            "reply with more values than the limit");
            freeReplyObject(r);
        }
    }

    redisReaderFree(reader);
    free(copy);

    return 0;
}


/* the values of a reply (arrays count too); checks depth and sizes */

static ngx_uint_t
ngx_fuzz_scan_walk(ngx_meshgate_redis_limits_t *limits, redisReply *reply,
    ngx_uint_t depth)
{
    size_t      i;
    ngx_uint_t  n;

    switch (reply->type) {

    case REDIS_REPLY_STRING:
        ngx_fuzz_assert(reply->len <= limits->max_bulk,
                        "bulk string beyond the limit");
        return 1;

    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        ngx_fuzz_assert(reply->len <= ngx_max(limits->max_bulk,
                                              NGX_MESHGATE_REDIS_MIN_LINE),
                        "line beyond the limit");
        return 1;

    case REDIS_REPLY_ARRAY:
        if (reply->elements == 0) {
            return 1;
        }

        ngx_fuzz_assert(depth + 1 <= limits->max_depth,
                        "arrays nested beyond the limit");

        n = 1;

        for (i = 0; i < reply->elements; i++) {
            n += ngx_fuzz_scan_walk(limits, reply->element[i], depth + 1);
        }

        return n;

    default: /* integer, nil */
        return 1;
    }
}
