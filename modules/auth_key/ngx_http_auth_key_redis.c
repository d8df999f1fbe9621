
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_auth_key.h"
#include "ngx_meshgate_cache.h"
#include "ngx_meshgate_redis.h"
#include "ngx_meshgate_http.h"


/*
 * The Redis key store: a consumer is the hash at <prefix><sha256 hex>,
 * its field "consumer" the name, every other field a metadata value.
 * Answers, found or not, are cached in a shared-memory zone as records
 * of common's encoding: kind 'K' with the fields consumer, name, value,
 * name, value..., or kind 'N' and no field.
 */

#define NGX_HTTP_AUTH_KEY_REDIS_FOUND    'K'
#define NGX_HTTP_AUTH_KEY_REDIS_UNKNOWN  'N'
#define NGX_HTTP_AUTH_KEY_REDIS_FIELDS   64
#define NGX_HTTP_AUTH_KEY_REDIS_LEN      4096


struct ngx_http_auth_key_redis_s {
    ngx_meshgate_redis_t       *client;
    ngx_meshgate_cache_t       *cache;
    ngx_str_t                   prefix;
    ngx_str_t                   store;     /* what answers depend on */
    ngx_msec_t                  ttl;
    ngx_msec_t                  negative_ttl;
};


typedef struct {
    ngx_http_auth_key_redis_t  *kr;
    ngx_http_auth_key_ctx_t    *ctx;
    u_char                      key[NGX_HTTP_AUTH_KEY_DIGEST_LEN];
} ngx_http_auth_key_redis_call_t;


static void ngx_http_auth_key_redis_handler(void *data, ngx_int_t status,
    redisReply *reply);
static ngx_uint_t ngx_http_auth_key_redis_read(ngx_http_request_t *r,
    ngx_http_auth_key_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_auth_key_redis_valid(u_char *p, size_t len,
    ngx_uint_t name);
static void ngx_http_auth_key_redis_store(ngx_http_request_t *r,
    ngx_http_auth_key_redis_call_t *call);
static ngx_int_t ngx_http_auth_key_redis_decode(ngx_http_request_t *r,
    ngx_http_auth_key_ctx_t *ctx, ngx_str_t *value);
static char *ngx_http_auth_key_redis_store_id(ngx_conf_t *cf,
    ngx_http_auth_key_redis_t *kr, ngx_str_t *server, ngx_str_t *master,
    ngx_str_t *db, ngx_str_t *user);


char *
ngx_http_auth_key_redis_conf(ngx_conf_t *cf,
    ngx_http_auth_key_loc_conf_t *alcf)
{
    char                           *rv;
    ngx_int_t                       rc;
    ngx_str_t                      *value, s, server, master, db, user;
    ngx_msec_t                      t;
    ngx_uint_t                      i;
    ngx_http_auth_key_redis_t      *kr, **pkr;
    ngx_http_auth_key_main_conf_t  *amcf;

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        alcf->redis = NULL;
        return NGX_CONF_OK;
    }

    kr = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_key_redis_t));
    if (kr == NULL) {
        return NGX_CONF_ERROR;
    }

    kr->client = ngx_meshgate_redis_create(cf);
    if (kr->client == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&kr->prefix, "apikey:");
    kr->ttl = 30000;
    kr->negative_ttl = NGX_CONF_UNSET_MSEC;

    ngx_str_null(&server);
    ngx_str_null(&master);
    ngx_str_null(&db);
    ngx_str_null(&user);

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            rv = ngx_meshgate_cache_conf(cf, &value[i],
                                         &ngx_http_auth_key_module,
                                         &kr->cache);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            kr->prefix.data = value[i].data + 7;
            kr->prefix.len = value[i].len - 7;
            continue;
        }

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0
            || ngx_strncmp(value[i].data, "negative_ttl=", 13) == 0)
        {
            s.data = (u_char *) ngx_strchr(value[i].data, '=') + 1;
            s.len = value[i].data + value[i].len - s.data;

            t = ngx_parse_time(&s, 0);
            if (t == (ngx_msec_t) NGX_ERROR) {
                goto invalid;
            }

            if (value[i].data[0] == 't') {
                kr->ttl = t;

            } else {
                kr->negative_ttl = t;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "server=", 7) == 0
            || ngx_strncmp(value[i].data, "sentinel=", 9) == 0
            || ngx_strncmp(value[i].data, "cluster=", 8) == 0)
        {
            server = value[i];

        } else if (ngx_strncmp(value[i].data, "master=", 7) == 0) {
            master = value[i];

        } else if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            db = value[i];

        } else if (ngx_strncmp(value[i].data, "user=", 5) == 0) {
            user = value[i];
        }

        rc = ngx_meshgate_redis_parse(cf, kr->client, &value[i]);

        if (rc == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        if (rc == NGX_DECLINED) {
            goto invalid;
        }
    }

    if (kr->cache == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"auth_key_redis\" needs \"zone=name:size\"");
        return NGX_CONF_ERROR;
    }

    if (kr->negative_ttl == NGX_CONF_UNSET_MSEC) {
        kr->negative_ttl = kr->ttl;
    }

    if (ngx_http_auth_key_redis_store_id(cf, kr, &server, &master, &db,
                                         &user)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* HGETALL: names and values of at most so many fields */

    ngx_meshgate_redis_limit_replies(kr->client,
                                     1 + 2 * NGX_HTTP_AUTH_KEY_REDIS_FIELDS,
                                     1, NGX_HTTP_AUTH_KEY_REDIS_LEN);

    if (ngx_meshgate_redis_init(cf, kr->client) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_auth_key_module);

    pkr = ngx_array_push(&amcf->redis);
    if (pkr == NULL) {
        return NGX_CONF_ERROR;
    }

    *pkr = kr;
    alcf->redis = kr;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/*
 * Stores that may share a cache zone differ by key prefix, server (or
 * sentinels and master, or cluster), database or user: a cached answer is
 * keyed by these and the key's hash.
 */

static char *
ngx_http_auth_key_redis_store_id(ngx_conf_t *cf,
    ngx_http_auth_key_redis_t *kr, ngx_str_t *server, ngx_str_t *master,
    ngx_str_t *db, ngx_str_t *user)
{
    u_char  *p;

    kr->store.len = kr->prefix.len + server->len + master->len + db->len
                    + user->len + 4;

    kr->store.data = ngx_pnalloc(cf->pool, kr->store.len);
    if (kr->store.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(kr->store.data, kr->prefix.data, kr->prefix.len);
    *p++ = '\0';
    p = ngx_cpymem(p, server->data, server->len);
    *p++ = '\0';
    p = ngx_cpymem(p, master->data, master->len);
    *p++ = '\0';
    p = ngx_cpymem(p, db->data, db->len);
    *p++ = '\0';
    ngx_memcpy(p, user->data, user->len);

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_auth_key_redis_lookup(ngx_http_request_t *r,
    ngx_http_auth_key_redis_t *kr, ngx_http_auth_key_ctx_t *ctx,
    u_char *digest)
{
    u_char                          *p;
    size_t                           len[2];
    ngx_int_t                        rc;
    ngx_str_t                        key, value, parts[2];
    const char                      *argv[2];
    ngx_http_auth_key_redis_call_t  *call;

    call = ngx_palloc(r->pool, sizeof(ngx_http_auth_key_redis_call_t));
    if (call == NULL) {
        return NGX_ERROR;
    }

    call->kr = kr;
    call->ctx = ctx;

    parts[0] = kr->store;
    parts[1].data = digest;
    parts[1].len = NGX_HTTP_AUTH_KEY_DIGEST_LEN;

    if (ngx_meshgate_sha256(parts, 2, call->key) != NGX_OK) {
        return NGX_ERROR;
    }

    key.data = call->key;
    key.len = NGX_HTTP_AUTH_KEY_DIGEST_LEN;

    rc = ngx_meshgate_cache_get(kr->cache, &key, r->pool, &value, NULL);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_OK) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "auth_key: redis store cache hit");

        rc = ngx_http_auth_key_redis_decode(r, ctx, &value);

        if (rc != NGX_DECLINED) {
            return rc;
        }

        /* not a record of this encoding: asked again, then replaced */

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "auth_key: cache entry of another encoding");
    }

    len[1] = kr->prefix.len + 2 * NGX_HTTP_AUTH_KEY_DIGEST_LEN;

    p = ngx_pnalloc(r->pool, len[1]);
    if (p == NULL) {
        return NGX_ERROR;
    }

    argv[0] = "HGETALL";
    len[0] = sizeof("HGETALL") - 1;
    argv[1] = (const char *) p;

    p = ngx_cpymem(p, kr->prefix.data, kr->prefix.len);
    ngx_hex_dump(p, digest, NGX_HTTP_AUTH_KEY_DIGEST_LEN);

    rc = ngx_meshgate_redis_command(kr->client, r->pool, 2, argv, len,
                                    ngx_http_auth_key_redis_handler, call,
                                    NULL);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_key: Redis %V is unavailable, key not in cache",
                      ngx_meshgate_redis_name(kr->client));
        ctx->result = NGX_HTTP_AUTH_KEY_UNAVAILABLE;
        return NGX_OK;
    }

    ctx->state = NGX_HTTP_AUTH_KEY_WAIT;
    r->write_event_handler = ngx_http_core_run_phases;

    return NGX_AGAIN;
}


static void
ngx_http_auth_key_redis_handler(void *data, ngx_int_t status,
    redisReply *reply)
{
    ngx_http_auth_key_redis_call_t *call = data;

    ngx_http_request_t       *r;
    ngx_http_auth_key_ctx_t  *ctx;

    ctx = call->ctx;
    r = ctx->request;

    if (status != NGX_MESHGATE_REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_key: Redis %V %s, key not in cache",
                      ngx_meshgate_redis_name(call->kr->client),
                      status == NGX_MESHGATE_REDIS_TIMEOUT
                      ? "timed out" : "failed");
        ctx->result = NGX_HTTP_AUTH_KEY_UNAVAILABLE;

    } else {
        ctx->result = ngx_http_auth_key_redis_read(r, ctx, reply);

        if (ctx->result != NGX_HTTP_AUTH_KEY_UNAVAILABLE) {
            ngx_http_auth_key_redis_store(r, call);
        }
    }

    ctx->state = NGX_HTTP_AUTH_KEY_DONE;

    ngx_post_event(r->connection->write, &ngx_posted_events);
}


static ngx_uint_t
ngx_http_auth_key_redis_read(ngx_http_request_t *r,
    ngx_http_auth_key_ctx_t *ctx, redisReply *reply)
{
    u_char         buf[NGX_MESHGATE_REDIS_ERROR_LEN];
    size_t         i, n;
    ngx_str_t      name, value, text;
    redisReply    *f, *v;
    ngx_keyval_t  *kv;

    if (reply->type == REDIS_REPLY_ERROR) {
        text = ngx_meshgate_redis_error_text(reply, buf);

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_key: Redis error: %V", &text);
        return NGX_HTTP_AUTH_KEY_UNAVAILABLE;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_key: unexpected Redis reply type %d",
                      reply->type);
        return NGX_HTTP_AUTH_KEY_UNAVAILABLE;
    }

    if (reply->elements == 0) {
        return NGX_HTTP_AUTH_KEY_INVALID;
    }

    n = reply->elements / 2;

    if (n > NGX_HTTP_AUTH_KEY_REDIS_FIELDS) {
        goto bad;
    }

    kv = ngx_pcalloc(r->pool, n * sizeof(ngx_keyval_t));
    if (kv == NULL) {
        return NGX_HTTP_AUTH_KEY_UNAVAILABLE;
    }

    ctx->meta = kv;
    ctx->nmeta = 0;
    ngx_str_null(&ctx->consumer);

    for (i = 0; i < n; i++) {
        f = reply->element[2 * i];
        v = reply->element[2 * i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            goto bad;
        }

        name.len = f->len;
        name.data = (u_char *) f->str;
        value.len = v->len;
        value.data = (u_char *) v->str;

        if (ngx_http_auth_key_redis_valid(name.data, name.len, 1) != NGX_OK
            || ngx_http_auth_key_redis_valid(value.data, value.len, 0)
               != NGX_OK)
        {
            goto bad;
        }

        if (name.len == 8 && ngx_strncasecmp(name.data,
                                             (u_char *) "consumer", 8) == 0)
        {
            if (value.len == 0) {
                goto bad;
            }

            ctx->consumer.data = ngx_pstrdup(r->pool, &value);
            if (ctx->consumer.data == NULL) {
                return NGX_HTTP_AUTH_KEY_UNAVAILABLE;
            }

            ctx->consumer.len = value.len;
            continue;
        }

        kv->key.data = ngx_pnalloc(r->pool, name.len);
        kv->value.data = ngx_pstrdup(r->pool, &value);

        if (kv->key.data == NULL || kv->value.data == NULL) {
            return NGX_HTTP_AUTH_KEY_UNAVAILABLE;
        }

        ngx_strlow(kv->key.data, name.data, name.len);
        kv->key.len = name.len;
        kv->value.len = value.len;

        kv++;
        ctx->nmeta++;
    }

    if (ctx->consumer.len == 0) {
        goto bad;
    }

    return NGX_HTTP_AUTH_KEY_OK;

bad:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "auth_key: malformed Redis key entry (a \"consumer\" field, "
                  "names of letters, digits and \"_\", printable values "
                  "expected), key refused");

    ctx->nmeta = 0;
    ngx_str_null(&ctx->consumer);

    return NGX_HTTP_AUTH_KEY_INVALID;
}


static ngx_int_t
ngx_http_auth_key_redis_valid(u_char *p, size_t len, ngx_uint_t name)
{
    u_char  *end;

    if (len > NGX_HTTP_AUTH_KEY_REDIS_LEN || (name && len == 0)) {
        return NGX_ERROR;
    }

    for (end = p + len; p < end; p++) {
        if (name) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                  || (*p >= '0' && *p <= '9') || *p == '_'))
            {
                return NGX_ERROR;
            }

        } else if (*p < 0x20 || *p == 0x7f) {
            return NGX_ERROR;
        }
    }

    /* values go into variables, and from there into headers */

    if (!name && !ngx_meshgate_utf8_is_valid(end - len, len)) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_auth_key_redis_store(ngx_http_request_t *r,
    ngx_http_auth_key_redis_call_t *call)
{
    u_char                   *p;
    size_t                    len;
    uint64_t                  expires;
    ngx_str_t                 key, value;
    ngx_uint_t                i;
    ngx_http_auth_key_ctx_t  *ctx;

    ctx = call->ctx;

    len = NGX_MESHGATE_RECORD_HEAD;

    if (ctx->result == NGX_HTTP_AUTH_KEY_OK) {
        len += NGX_MESHGATE_RECORD_FIELD + ctx->consumer.len;

        for (i = 0; i < ctx->nmeta; i++) {
            len += 2 * NGX_MESHGATE_RECORD_FIELD + ctx->meta[i].key.len
                   + ctx->meta[i].value.len;
        }

        expires = call->kr->ttl;

    } else {
        expires = call->kr->negative_ttl;
    }

    if (expires == 0) {
        return;
    }

    value.data = ngx_pnalloc(r->pool, len);
    if (value.data == NULL) {
        return;
    }

    if (ctx->result == NGX_HTTP_AUTH_KEY_OK) {
        p = ngx_meshgate_record_start(value.data,
                                      NGX_HTTP_AUTH_KEY_REDIS_FOUND);
        p = ngx_meshgate_record_put(p, ctx->consumer.data,
                                    ctx->consumer.len);

        for (i = 0; i < ctx->nmeta; i++) {
            p = ngx_meshgate_record_put(p, ctx->meta[i].key.data,
                                        ctx->meta[i].key.len);
            p = ngx_meshgate_record_put(p, ctx->meta[i].value.data,
                                        ctx->meta[i].value.len);
        }

    } else {
        p = ngx_meshgate_record_start(value.data,
                                      NGX_HTTP_AUTH_KEY_REDIS_UNKNOWN);
    }

    value.len = p - value.data;

    key.data = call->key;
    key.len = NGX_HTTP_AUTH_KEY_DIGEST_LEN;

    if (ngx_meshgate_cache_set(call->kr->cache, &key, &value,
                               ngx_meshgate_now_ms() + expires)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "auth_key: cache zone \"%V\" is full",
                      &call->kr->cache->name);
    }
}


/*
 * NGX_OK with ctx->result set, NGX_DECLINED when value is no record of
 * this encoding (a miss), NGX_ERROR when out of memory.
 */

static ngx_int_t
ngx_http_auth_key_redis_decode(ngx_http_request_t *r,
    ngx_http_auth_key_ctx_t *ctx, ngx_str_t *value)
{
    ngx_uint_t              n;
    ngx_keyval_t           *kv;
    ngx_meshgate_record_t   rec;

    if (ngx_meshgate_record_open(&rec, value) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (rec.kind == NGX_HTTP_AUTH_KEY_REDIS_UNKNOWN) {
        ctx->result = NGX_HTTP_AUTH_KEY_INVALID;
        return NGX_OK;
    }

    if (rec.kind != NGX_HTTP_AUTH_KEY_REDIS_FOUND
        || ngx_meshgate_record_next(&rec, &ctx->consumer) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    kv = ngx_palloc(r->pool,
                    NGX_HTTP_AUTH_KEY_REDIS_FIELDS * sizeof(ngx_keyval_t));
    if (kv == NULL) {
        return NGX_ERROR;
    }

    for (n = 0; n < NGX_HTTP_AUTH_KEY_REDIS_FIELDS; n++) {
        if (ngx_meshgate_record_next(&rec, &kv[n].key) != NGX_OK) {
            break;
        }

        if (ngx_meshgate_record_next(&rec, &kv[n].value) != NGX_OK) {
            return NGX_DECLINED;
        }
    }

    ctx->meta = kv;
    ctx->nmeta = n;
    ctx->result = NGX_HTTP_AUTH_KEY_OK;

    return NGX_OK;
}


void
ngx_http_auth_key_redis_exit(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_http_auth_key_redis_t     **kr;
    ngx_http_auth_key_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_auth_key_module);
    if (amcf == NULL) {
        return;
    }

    kr = amcf->redis.elts;

    for (i = 0; i < amcf->redis.nelts; i++) {
        ngx_meshgate_redis_close(kr[i]->client);
    }
}
