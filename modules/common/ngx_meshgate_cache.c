
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_meshgate_cache.h"
#include "ngx_meshgate_http.h"


typedef struct {
    u_char                    color;
    u_char                    dummy;
    u_short                   key_len;
    uint32_t                  value_len;
    uint64_t                  expires;
    ngx_queue_t               queue;
    u_char                    data[1];     /* key, then value */
} ngx_meshgate_cache_node_t;


static ngx_int_t ngx_meshgate_cache_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_meshgate_cache_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_rbtree_node_t *ngx_meshgate_cache_lookup(
    ngx_meshgate_cache_t *cache, ngx_str_t *key, uint32_t hash);
static void ngx_meshgate_cache_free_node(ngx_meshgate_cache_t *cache,
    ngx_rbtree_node_t *node);
static ngx_rbtree_node_t *ngx_meshgate_cache_alloc(
    ngx_meshgate_cache_t *cache, size_t size);


char *
ngx_meshgate_cache_conf(ngx_conf_t *cf, ngx_str_t *arg, void *tag,
    ngx_meshgate_cache_t **cache)
{
    ssize_t    size;
    ngx_str_t  name;

    if (ngx_meshgate_zone_parse(cf, arg, &name, &size) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    *cache = ngx_meshgate_cache_add(cf, &name, size, tag);
    if (*cache == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


ngx_meshgate_cache_t *
ngx_meshgate_cache_add(ngx_conf_t *cf, ngx_str_t *name, size_t size,
    void *tag)
{
    ngx_shm_zone_t        *shm_zone;
    ngx_meshgate_cache_t  *cache;

    shm_zone = ngx_shared_memory_add(cf, name, size, tag);
    if (shm_zone == NULL) {
        return NULL;
    }

    if (shm_zone->data) {
        /* the same zone named again: share it */
        return shm_zone->data;
    }

    cache = ngx_pcalloc(cf->pool, sizeof(ngx_meshgate_cache_t));
    if (cache == NULL) {
        return NULL;
    }

    cache->name = *name;
    cache->shm_zone = shm_zone;

    shm_zone->init = ngx_meshgate_cache_init_zone;
    shm_zone->data = cache;

    return cache;
}


static ngx_int_t
ngx_meshgate_cache_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_meshgate_cache_t  *ocache = data;

    size_t                 len;
    ngx_meshgate_cache_t  *cache;

    cache = shm_zone->data;
    cache->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (ocache) {
        cache->sh = ocache->sh;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        cache->sh = cache->shpool->data;
        return NGX_OK;
    }

    cache->sh = ngx_slab_alloc(cache->shpool,
                               sizeof(ngx_meshgate_cache_sh_t));
    if (cache->sh == NULL) {
        return NGX_ERROR;
    }

    cache->shpool->data = cache->sh;

    ngx_rbtree_init(&cache->sh->rbtree, &cache->sh->sentinel,
                    ngx_meshgate_cache_rbtree_insert_value);
    ngx_queue_init(&cache->sh->queue);

    len = sizeof(" in meshgate cache zone \"\"") + shm_zone->shm.name.len;

    cache->shpool->log_ctx = ngx_slab_alloc(cache->shpool, len);
    if (cache->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(cache->shpool->log_ctx, " in meshgate cache zone \"%V\"%Z",
                &shm_zone->shm.name);

    cache->shpool->log_nomem = 0;

    return NGX_OK;
}


static void
ngx_meshgate_cache_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t          **p;
    ngx_meshgate_cache_node_t   *cn, *cnt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            cn = (ngx_meshgate_cache_node_t *) &node->color;
            cnt = (ngx_meshgate_cache_node_t *) &temp->color;

            p = (ngx_memn2cmp(cn->data, cnt->data, cn->key_len,
                              cnt->key_len) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_rbtree_node_t *
ngx_meshgate_cache_lookup(ngx_meshgate_cache_t *cache, ngx_str_t *key,
    uint32_t hash)
{
    ngx_int_t                   rc;
    ngx_rbtree_node_t          *node, *sentinel;
    ngx_meshgate_cache_node_t  *cn;

    node = cache->sh->rbtree.root;
    sentinel = cache->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        cn = (ngx_meshgate_cache_node_t *) &node->color;

        rc = ngx_memn2cmp(key->data, cn->data, key->len, cn->key_len);

        if (rc == 0) {
            return node;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


ngx_int_t
ngx_meshgate_cache_get(ngx_meshgate_cache_t *cache, ngx_str_t *key,
    ngx_pool_t *pool, ngx_str_t *value, uint64_t *expires)
{
    ngx_int_t  rc;

    ngx_meshgate_cache_lock(cache);
    rc = ngx_meshgate_cache_get_locked(cache, key, pool, value, expires);
    ngx_meshgate_cache_unlock(cache);

    return rc;
}


ngx_int_t
ngx_meshgate_cache_set(ngx_meshgate_cache_t *cache, ngx_str_t *key,
    ngx_str_t *value, uint64_t expires)
{
    ngx_int_t  rc;

    ngx_meshgate_cache_lock(cache);
    rc = ngx_meshgate_cache_set_locked(cache, key, value, expires);
    ngx_meshgate_cache_unlock(cache);

    return rc;
}


void
ngx_meshgate_cache_lock(ngx_meshgate_cache_t *cache)
{
    ngx_shmtx_lock(&cache->shpool->mutex);
}


void
ngx_meshgate_cache_unlock(ngx_meshgate_cache_t *cache)
{
    ngx_shmtx_unlock(&cache->shpool->mutex);
}


ngx_int_t
ngx_meshgate_cache_get_locked(ngx_meshgate_cache_t *cache, ngx_str_t *key,
    ngx_pool_t *pool, ngx_str_t *value, uint64_t *expires)
{
    uint32_t                    hash;
    ngx_rbtree_node_t          *node;
    ngx_meshgate_cache_node_t  *cn;

    hash = ngx_crc32_short(key->data, key->len);

    node = ngx_meshgate_cache_lookup(cache, key, hash);

    if (node == NULL) {
        return NGX_DECLINED;
    }

    cn = (ngx_meshgate_cache_node_t *) &node->color;

    if (cn->expires <= ngx_meshgate_now_ms()) {
        ngx_meshgate_cache_free_node(cache, node);
        return NGX_DECLINED;
    }

    value->len = cn->value_len;
    value->data = ngx_pnalloc(pool, cn->value_len + 1);

    if (value->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(value->data, cn->data + cn->key_len, cn->value_len);
    value->data[value->len] = '\0';

    if (expires) {
        *expires = cn->expires;
    }

    ngx_queue_remove(&cn->queue);
    ngx_queue_insert_head(&cache->sh->queue, &cn->queue);

    return NGX_OK;
}


ngx_int_t
ngx_meshgate_cache_set_locked(ngx_meshgate_cache_t *cache, ngx_str_t *key,
    ngx_str_t *value, uint64_t expires)
{
    size_t                      size;
    uint32_t                    hash;
    ngx_rbtree_node_t          *node;
    ngx_meshgate_cache_node_t  *cn;

    if (key->len > 65535 || value->len > 0xffffffff) {
        return NGX_ERROR;
    }

    hash = ngx_crc32_short(key->data, key->len);

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_meshgate_cache_node_t, data)
           + key->len + value->len;

    node = ngx_meshgate_cache_lookup(cache, key, hash);

    if (node) {
        ngx_meshgate_cache_free_node(cache, node);
    }

    node = ngx_meshgate_cache_alloc(cache, size);

    if (node == NULL) {
        return NGX_ERROR;
    }

    cn = (ngx_meshgate_cache_node_t *) &node->color;

    node->key = hash;
    cn->key_len = (u_short) key->len;
    cn->value_len = (uint32_t) value->len;
    cn->expires = expires;
    ngx_memcpy(cn->data, key->data, key->len);
    ngx_memcpy(cn->data + key->len, value->data, value->len);

    ngx_rbtree_insert(&cache->sh->rbtree, node);
    ngx_queue_insert_head(&cache->sh->queue, &cn->queue);
    cache->sh->count++;

    return NGX_OK;
}


static void
ngx_meshgate_cache_free_node(ngx_meshgate_cache_t *cache,
    ngx_rbtree_node_t *node)
{
    ngx_meshgate_cache_node_t  *cn;

    cn = (ngx_meshgate_cache_node_t *) &node->color;

    ngx_queue_remove(&cn->queue);
    ngx_rbtree_delete(&cache->sh->rbtree, node);
    ngx_slab_free_locked(cache->shpool, node);
    cache->sh->count--;
}


/* allocates with the mutex held; evicts from the LRU tail as needed */

static ngx_rbtree_node_t *
ngx_meshgate_cache_alloc(ngx_meshgate_cache_t *cache, size_t size)
{
    ngx_queue_t        *q;
    ngx_rbtree_node_t  *node;

    for ( ;; ) {
        node = ngx_slab_alloc_locked(cache->shpool, size);

        if (node != NULL) {
            return node;
        }

        if (ngx_queue_empty(&cache->sh->queue)) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "meshgate cache zone \"%V\": no room for an entry "
                          "of %uz bytes", &cache->name, size);
            return NULL;
        }

        q = ngx_queue_last(&cache->sh->queue);
        node = (ngx_rbtree_node_t *)
                   ((u_char *) ngx_queue_data(q, ngx_meshgate_cache_node_t,
                                              queue)
                    - offsetof(ngx_rbtree_node_t, color));

        ngx_meshgate_cache_free_node(cache, node);
    }
}


uint64_t
ngx_meshgate_now_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


u_char *
ngx_meshgate_record_start(u_char *p, ngx_uint_t kind)
{
    *p++ = NGX_MESHGATE_RECORD_VERSION;
    *p++ = (u_char) kind;

    return p;
}


u_char *
ngx_meshgate_record_put(u_char *p, u_char *data, size_t len)
{
    /* a cache value never nears 4 GB: the zone's slab pool holds it */

    *p++ = (u_char) (len >> 24);
    *p++ = (u_char) (len >> 16);
    *p++ = (u_char) (len >> 8);
    *p++ = (u_char) len;

    return ngx_cpymem(p, data, len);
}


ngx_int_t
ngx_meshgate_record_open(ngx_meshgate_record_t *rec, ngx_str_t *value)
{
    u_char  *p, *last;
    size_t   len;

    if (value->len < NGX_MESHGATE_RECORD_HEAD
        || value->data[0] != NGX_MESHGATE_RECORD_VERSION)
    {
        return NGX_DECLINED;
    }

    p = value->data + NGX_MESHGATE_RECORD_HEAD;
    last = value->data + value->len;

    /* every field within the value, the last one ending where it ends */

    while (p < last) {
        if ((size_t) (last - p) < NGX_MESHGATE_RECORD_FIELD) {
            return NGX_DECLINED;
        }

        len = ((size_t) p[0] << 24) | ((size_t) p[1] << 16)
              | ((size_t) p[2] << 8) | p[3];
        p += NGX_MESHGATE_RECORD_FIELD;

        if ((size_t) (last - p) < len) {
            return NGX_DECLINED;
        }

        p += len;
    }

    rec->kind = value->data[1];
    rec->pos = value->data + NGX_MESHGATE_RECORD_HEAD;
    rec->last = last;

    return NGX_OK;
}


ngx_int_t
ngx_meshgate_record_next(ngx_meshgate_record_t *rec, ngx_str_t *field)
{
    u_char  *p;

    /* the fields were checked by ngx_meshgate_record_open() */

    if (rec->pos == rec->last) {
        return NGX_DONE;
    }

    p = rec->pos;

    field->len = ((size_t) p[0] << 24) | ((size_t) p[1] << 16)
                 | ((size_t) p[2] << 8) | p[3];
    field->data = p + NGX_MESHGATE_RECORD_FIELD;

    rec->pos = field->data + field->len;

    return NGX_OK;
}


u_char *
ngx_meshgate_record_put_uint64(u_char *p, uint64_t n)
{
    ngx_uint_t  i;
    u_char      buf[NGX_MESHGATE_RECORD_UINT64];

    for (i = NGX_MESHGATE_RECORD_UINT64; i > 0; i--) {
        buf[i - 1] = (u_char) n;
        n >>= 8;
    }

    return ngx_meshgate_record_put(p, buf, NGX_MESHGATE_RECORD_UINT64);
}


ngx_int_t
ngx_meshgate_record_next_uint64(ngx_meshgate_record_t *rec, uint64_t *n)
{
    ngx_int_t   rc;
    ngx_str_t   field;
    ngx_uint_t  i;

    rc = ngx_meshgate_record_next(rec, &field);

    if (rc != NGX_OK) {
        return rc;
    }

    if (field.len != NGX_MESHGATE_RECORD_UINT64) {
        return NGX_DECLINED;
    }

    *n = 0;

    for (i = 0; i < NGX_MESHGATE_RECORD_UINT64; i++) {
        *n = (*n << 8) | field.data[i];
    }

    return NGX_OK;
}
