
/*
 * Copyright (C) meshgate contributors
 */


/*
 * Redis replies through the shared client (ngx_meshgate_redis.c): a fake
 * connection feeds the input to the client's read handler in chunks while
 * commands (AUTH, SELECT, plain commands, EVALSHA with its NOSCRIPT
 * retry) wait for their replies.  The client's own reply bounding and
 * hiredis's reader run as they do in a worker; libFuzzer's memory limit
 * catches a reply that makes either allocate beyond reason.
 *
 * Input: a flags byte (bit 0: password, bit 1: db, bits 2-3: plain
 * commands - 1, bit 4: an EVALSHA, bit 5: handlers issue one more
 * command, bits 6-7: the reply limits), a chunk size byte (0: all at once), then what Redis sends.
 * Checked: every handler runs at most once per command, a reply is
 * readable to its last byte.
 *
 * max_len: 4096
 */


#include "ngx_fuzz.h"
#include "../../modules/common/ngx_meshgate_redis.c"
#include "../../modules/common/ngx_meshgate_redis_reply.c"
#include "../../modules/common/ngx_meshgate_redis_conf.c"
#include "../../modules/common/ngx_meshgate_redis_cluster.c"
#include "../../modules/common/ngx_meshgate_redis_sentinel.c"
#include "../../modules/common/ngx_meshgate_redis_tls.c"
#include "ngx_fuzz_peer.h"


#define NGX_FUZZ_REDIS_CMDS  16


static void ngx_fuzz_redis_handler(void *data, ngx_int_t status,
    redisReply *reply);
static void ngx_fuzz_redis_walk(redisReply *reply, ngx_uint_t depth);


static ngx_uint_t                    ngx_fuzz_redis_more;
static ngx_uint_t                    ngx_fuzz_redis_issued;
static ngx_uint_t                    ngx_fuzz_redis_calls[NGX_FUZZ_REDIS_CMDS];
static ngx_meshgate_redis_t         *ngx_fuzz_redis_rd;
static ngx_meshgate_redis_script_t   ngx_fuzz_redis_script = {
    ngx_string("return 1"),
    "e0e1f9fabfc9d4800c877a703b823ac0578ff831"
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                 *copy;
    ngx_uint_t              flags, n, i;
    struct sockaddr_in      sin;
    ngx_meshgate_redis_t    rd;

    ngx_fuzz_init();

    if (size < 2) {
        return 0;
    }

    flags = data[0];

    copy = malloc(size - 2 + 1);
    ngx_memcpy(copy, data + 2, size - 2);

    ngx_fuzz_peer.in = copy;
    ngx_fuzz_peer.left = size - 2;
    ngx_fuzz_peer.chunk = data[1] ? data[1] : 16384;
    ngx_fuzz_peer.end = NGX_AGAIN;
    ngx_fuzz_redis_more = flags & 0x20;
    ngx_fuzz_redis_issued = 0;
    ngx_memzero(ngx_fuzz_redis_calls, sizeof(ngx_fuzz_redis_calls));

    ngx_memzero(&sin, sizeof(struct sockaddr_in));
    sin.sin_family = AF_INET;

    ngx_memzero(&rd, sizeof(ngx_meshgate_redis_t));
    ngx_str_set(&rd.name, "fuzz:6379");
    rd.sockaddr = (struct sockaddr *) &sin;
    rd.socklen = sizeof(struct sockaddr_in);
    rd.timeout = 50;
    rd.connect_timeout = 500;

    if (flags & 0x01) {
        ngx_str_set(&rd.user, "user");
        ngx_str_set(&rd.password, "secret");
    }

    rd.db = (flags & 0x02) ? 3 : 0;

    /* reply limits: the default, auth_key's, rate_limit's, a wide one */

    switch (flags >> 6) {
    case 0:
        ngx_meshgate_redis_limit_replies(&rd, 256, 1, 4096);
        break;
    case 1:
        ngx_meshgate_redis_limit_replies(&rd, 1 + 2 * 64, 1, 4096);
        break;
    case 2:
        ngx_meshgate_redis_limit_replies(&rd, 1 + 64 * 16, 1, 0);
        break;
    default:
        ngx_meshgate_redis_limit_replies(&rd, 32768, 8, 65536);
        break;
    }

    ngx_fuzz_redis_rd = &rd;

    n = ((flags >> 2) & 0x03) + 1;

    for (i = 0; i < n; i++) {
        ngx_fuzz_redis_handler(NULL, -1, NULL);
    }

    if ((flags & 0x10) && rd.conn) {
        const char  *argv[] = { "key", "10" };
        size_t       lens[] = { 3, 2 };

        if (ngx_meshgate_redis_eval(&rd, NULL, &ngx_fuzz_redis_script, 1, 2,
                                    argv, lens, ngx_fuzz_redis_handler,
                                    &ngx_fuzz_redis_calls[
                                        ngx_fuzz_redis_issued],
                                    NULL)
            == NGX_OK)
        {
            ngx_fuzz_redis_issued++;
        }
    }

    /* what nginx's event loop does: write the commands, then read */

    if (rd.conn) {
        rd.conn->write->handler(rd.conn->write);
    }

    if (rd.conn) {
        rd.conn->read->handler(rd.conn->read);
    }

    ngx_meshgate_redis_close(&rd);

    for (i = 0; i < NGX_FUZZ_REDIS_CMDS; i++) {
        ngx_fuzz_assert(ngx_fuzz_redis_calls[i] <= 1,
                        "handler called twice");
    }

    free(copy);

    return 0;
}


/* also issues the commands: status -1 */

static void
ngx_fuzz_redis_handler(void *data, ngx_int_t status, redisReply *reply)
{
    ngx_uint_t   *calls = data;
    const char   *argv[] = { "HGETALL", "apikey:0123456789abcdef" };
    size_t        lens[] = { 7, 23 };

    if (calls) {
        (*calls)++;

        ngx_fuzz_assert((status == NGX_MESHGATE_REDIS_OK) == (reply != NULL),
                        "reply and status disagree");

        if (reply) {
            ngx_fuzz_redis_walk(reply, 0);
        }

        if (!ngx_fuzz_redis_more) {
            return;
        }

        ngx_fuzz_redis_more = 0;
    }

    if (ngx_fuzz_redis_issued == NGX_FUZZ_REDIS_CMDS) {
        return;
    }

    if (ngx_meshgate_redis_command(ngx_fuzz_redis_rd, NULL, 2, argv, lens,
                                   ngx_fuzz_redis_handler,
                                   &ngx_fuzz_redis_calls[
                                       ngx_fuzz_redis_issued],
                                   NULL)
        == NGX_OK)
    {
        ngx_fuzz_redis_issued++;
    }
}


/* reads every byte of a reply, as a caller may */

static void
ngx_fuzz_redis_walk(redisReply *reply, ngx_uint_t depth)
{
    size_t                i;
    volatile u_char       sum;

    ngx_fuzz_assert(depth < 1000, "reply nested beyond reason");

    switch (reply->type) {

    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        sum = 0;
        for (i = 0; i < reply->len; i++) {
            sum += reply->str[i];
        }
        break;

    case REDIS_REPLY_ARRAY:
        for (i = 0; i < reply->elements; i++) {
            ngx_fuzz_redis_walk(reply->element[i], depth + 1);
        }
        break;
    }
}
