
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_MESHGATE_CACHE_H_INCLUDED_
#define _NGX_MESHGATE_CACHE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * A key/value cache in a shared-memory zone, shared by all workers and kept
 * across reloads (the limit_req zone pattern: an rbtree on a hash of the
 * key, an LRU queue, and expiry of the oldest entries when memory runs out).
 *
 * Every module links its own private copy of this code: the symbols are
 * hidden so that several of our .so files can sit in one process.
 */

#pragma GCC visibility push(hidden)


typedef struct {
    ngx_rbtree_t              rbtree;
    ngx_rbtree_node_t         sentinel;
    ngx_queue_t               queue;
    ngx_uint_t                count;
} ngx_meshgate_cache_sh_t;


typedef struct {
    ngx_meshgate_cache_sh_t  *sh;
    ngx_slab_pool_t          *shpool;
    ngx_shm_zone_t           *shm_zone;
    ngx_str_t                 name;
} ngx_meshgate_cache_t;


/*
 * Parses "zone=name:size" (the argument of a directive) and declares the
 * zone; tag is the module, so that two modules cannot share one zone.
 */
char *ngx_meshgate_cache_conf(ngx_conf_t *cf, ngx_str_t *arg, void *tag,
    ngx_meshgate_cache_t **cache);

/* declares a zone from a name and a size already parsed */
ngx_meshgate_cache_t *ngx_meshgate_cache_add(ngx_conf_t *cf, ngx_str_t *name,
    size_t size, void *tag);

/*
 * Looks up key; on a live hit copies the value into pool memory and
 * returns NGX_OK, with *expires (epoch milliseconds) if not NULL.
 * Returns NGX_DECLINED on a miss or an expired entry, NGX_ERROR when
 * out of pool memory.
 */
ngx_int_t ngx_meshgate_cache_get(ngx_meshgate_cache_t *cache, ngx_str_t *key,
    ngx_pool_t *pool, ngx_str_t *value, uint64_t *expires);

/*
 * Stores a copy of value under key until expires (epoch milliseconds),
 * replacing an older entry.  Evicts the least recently used entries when
 * the zone is full; returns NGX_ERROR only if even that frees no room.
 */
ngx_int_t ngx_meshgate_cache_set(ngx_meshgate_cache_t *cache, ngx_str_t *key,
    ngx_str_t *value, uint64_t expires);

/*
 * A read-modify-write of one or more entries: lock the zone, then use the
 * _locked variants, then unlock.  The zone's mutex (its slab pool's, which
 * the master releases if a worker dies holding it) is not recursive: never
 * call ngx_meshgate_cache_get() or _set() of the same zone while holding
 * it.  A caller that locks several zones takes them in one fixed order.
 */
void ngx_meshgate_cache_lock(ngx_meshgate_cache_t *cache);
void ngx_meshgate_cache_unlock(ngx_meshgate_cache_t *cache);
ngx_int_t ngx_meshgate_cache_get_locked(ngx_meshgate_cache_t *cache,
    ngx_str_t *key, ngx_pool_t *pool, ngx_str_t *value, uint64_t *expires);
ngx_int_t ngx_meshgate_cache_set_locked(ngx_meshgate_cache_t *cache,
    ngx_str_t *key, ngx_str_t *value, uint64_t expires);

/* the wall clock in epoch milliseconds, from nginx's cached time */
uint64_t ngx_meshgate_now_ms(void);


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_CACHE_H_INCLUDED_ */
