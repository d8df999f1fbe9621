
/*
 * Copyright (C) meshgate contributors
 */


/*
 * API keys kept in Redis (ngx_http_auth_key_redis.c): the HGETALL answer
 * for a key hash becomes the consumer and its metadata, which are cached
 * as length-prefixed strings and read back from the cache.
 *
 * Input: what Redis answers (RESP).  Checked: a consumer is found only
 * with a non-empty name; names are lowercase letters, digits and "_";
 * no value holds a control byte; the cached form reads back the same.
 * (Reply sizes are the Redis client's to bound, fuzzed by the redis
 * target: an array or string header beyond 4 digits is skipped here.)
 *
 * max_len: 4096
 */


#include "ngx_fuzz.h"
#include "../../modules/common/ngx_meshgate_http.c"
#include "../../modules/common/ngx_meshgate_redis.c"
#include "../../modules/common/ngx_meshgate_cache.c"
#include "../../modules/auth_key/ngx_http_auth_key_redis.c"


static ngx_uint_t ngx_fuzz_auth_key_redis_sane(const uint8_t *data,
    size_t size);
static void ngx_fuzz_auth_key_redis_same(ngx_http_request_t *r,
    ngx_http_auth_key_ctx_t *ctx);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                   *p;
    void                     *reply;
    ngx_uint_t                i;
    ngx_pool_t               *pool;
    redisReader              *reader;
    ngx_connection_t          c;
    ngx_http_request_t        r;
    ngx_http_auth_key_ctx_t   ctx;

    ngx_fuzz_init();

    if (!ngx_fuzz_auth_key_redis_sane(data, size)) {
        return 0;
    }

    reader = redisReaderCreate();
    reply = NULL;

    if (redisReaderFeed(reader, (const char *) data, size) != REDIS_OK
        || redisReaderGetReply(reader, &reply) != REDIS_OK
        || reply == NULL)
    {
        redisReaderFree(reader);
        return 0;
    }

    pool = ngx_create_pool(4096, ngx_fuzz_get_log());

    ngx_memzero(&c, sizeof(ngx_connection_t));
    ngx_memzero(&r, sizeof(ngx_http_request_t));
    c.log = ngx_fuzz_get_log();
    r.connection = &c;
    r.pool = pool;

    ngx_memzero(&ctx, sizeof(ngx_http_auth_key_ctx_t));
    ctx.request = &r;

    ctx.result = ngx_http_auth_key_redis_read(&r, &ctx, reply);

    if (ctx.result == NGX_HTTP_AUTH_KEY_OK) {
        ngx_fuzz_assert(ctx.consumer.len > 0, "consumer without a name");
        ngx_fuzz_assert(ngx_meshgate_text_is_safe(ctx.consumer.data,
                                                  ctx.consumer.len),
                        "consumer with control bytes");

        for (i = 0; i < ctx.nmeta; i++) {
            for (p = ctx.meta[i].key.data;
                 p < ctx.meta[i].key.data + ctx.meta[i].key.len;
                 p++)
            {
                ngx_fuzz_assert((*p >= 'a' && *p <= 'z')
                                || (*p >= '0' && *p <= '9') || *p == '_',
                                "metadata name of other bytes");
            }

            ngx_fuzz_assert(ngx_meshgate_text_is_safe(ctx.meta[i].value.data,
                                                   ctx.meta[i].value.len),
                            "metadata value with control bytes");
        }

        ngx_fuzz_auth_key_redis_same(&r, &ctx);

    } else {
        ngx_fuzz_assert(ctx.nmeta == 0 && ctx.consumer.len == 0,
                        "refused entry leaves a consumer");
    }

    freeReplyObject(reply);
    redisReaderFree(reader);
    ngx_destroy_pool(pool);

    return 0;
}


/* no header announces more than 9999 elements or bytes */

static ngx_uint_t
ngx_fuzz_auth_key_redis_sane(const uint8_t *data, size_t size)
{
    size_t  i, digits;

    for (i = 0; i < size; i++) {
        if (data[i] != '*' && data[i] != '$') {
            continue;
        }

        for (digits = 0;
             i + 1 < size && data[i + 1] >= '0' && data[i + 1] <= '9';
             i++)
        {
            if (++digits > 4) {
                return 0;
            }
        }
    }

    return 1;
}


/* the cached form, as ngx_http_auth_key_redis_store() writes it, read back */

static void
ngx_fuzz_auth_key_redis_same(ngx_http_request_t *r,
    ngx_http_auth_key_ctx_t *ctx)
{
    u_char                   *p;
    size_t                    len;
    ngx_str_t                 value;
    ngx_uint_t                i;
    ngx_http_auth_key_ctx_t   back;

    len = NGX_MESHGATE_RECORD_HEAD + NGX_MESHGATE_RECORD_FIELD
          + ctx->consumer.len;

    for (i = 0; i < ctx->nmeta; i++) {
        len += 2 * NGX_MESHGATE_RECORD_FIELD + ctx->meta[i].key.len
               + ctx->meta[i].value.len;
    }

    value.data = ngx_pnalloc(r->pool, len);

    /* the cached form, as the store writes it (common record encoding) */

    p = ngx_meshgate_record_start(value.data, NGX_HTTP_AUTH_KEY_REDIS_FOUND);
    p = ngx_meshgate_record_put(p, ctx->consumer.data, ctx->consumer.len);

    for (i = 0; i < ctx->nmeta; i++) {
        p = ngx_meshgate_record_put(p, ctx->meta[i].key.data,
                                    ctx->meta[i].key.len);
        p = ngx_meshgate_record_put(p, ctx->meta[i].value.data,
                                    ctx->meta[i].value.len);
    }

    value.len = p - value.data;

    ngx_fuzz_assert(value.len == len, "cached form of another length");

    ngx_memzero(&back, sizeof(ngx_http_auth_key_ctx_t));

    ngx_fuzz_assert(ngx_http_auth_key_redis_decode(r, &back, &value)
                    == NGX_OK, "cached form unreadable");
    ngx_fuzz_assert(back.nmeta == ctx->nmeta
                    && back.consumer.len == ctx->consumer.len
                    && ngx_memcmp(back.consumer.data, ctx->consumer.data,
                                  ctx->consumer.len) == 0,
                    "cached form reads back another consumer");

    for (i = 0; i < ctx->nmeta; i++) {
        ngx_fuzz_assert(back.meta[i].key.len == ctx->meta[i].key.len
                        && back.meta[i].value.len == ctx->meta[i].value.len
                        && ngx_memcmp(back.meta[i].value.data,
                                      ctx->meta[i].value.data,
                                      ctx->meta[i].value.len) == 0,
                        "cached form reads back other metadata");
    }
}
