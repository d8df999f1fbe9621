
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

/*
 * The one encoding of the values modules keep in a cache zone:
 *
 *     version  1 byte, NGX_MESHGATE_RECORD_VERSION
 *     kind     1 byte, the module's own (found, unknown, active...)
 *     fields   each a 4-byte big-endian length, then that many bytes
 *
 * A value whose first byte is another version, or whose fields do not
 * end exactly where the value ends, is no record: ngx_meshgate_record_open()
 * declines it and the caller takes it as a miss and asks again.  That is
 * the guard for records written by another encoding (a zone survives a
 * reload, and is reused only by the same module: its tag).  0xc1 never
 * starts UTF-8 text nor a record of the earlier one-letter kinds.
 */

#define NGX_MESHGATE_RECORD_VERSION  0xc1

/* the size of a record: its header, then this much per field and its bytes */
#define NGX_MESHGATE_RECORD_HEAD     2
#define NGX_MESHGATE_RECORD_FIELD    4


typedef struct {
    u_char                   *pos;
    u_char                   *last;
    ngx_uint_t                kind;
} ngx_meshgate_record_t;


/* writes the header at p; returns where the first field goes */
u_char *ngx_meshgate_record_start(u_char *p, ngx_uint_t kind);

/* writes one field at p; returns where the next one goes */
u_char *ngx_meshgate_record_put(u_char *p, u_char *data, size_t len);

/*
 * Checks the whole of value and sets rec to its first field and
 * rec->kind: NGX_OK, or NGX_DECLINED when value is no record.
 */
ngx_int_t ngx_meshgate_record_open(ngx_meshgate_record_t *rec,
    ngx_str_t *value);

/* the next field (pointing into value): NGX_OK, or NGX_DONE at the end */
ngx_int_t ngx_meshgate_record_next(ngx_meshgate_record_t *rec,
    ngx_str_t *field);

/*
 * A number as one field of 8 big-endian bytes (the same bytes whatever
 * the machine): _put_uint64() writes it at p and returns where the next
 * field goes; _next_uint64() reads it: NGX_OK, NGX_DONE at the end, or
 * NGX_DECLINED when the next field is not 8 bytes long.
 */
#define NGX_MESHGATE_RECORD_UINT64   8

u_char *ngx_meshgate_record_put_uint64(u_char *p, uint64_t n);
ngx_int_t ngx_meshgate_record_next_uint64(ngx_meshgate_record_t *rec,
    uint64_t *n);

/* the wall clock in epoch milliseconds, from nginx's cached time */
uint64_t ngx_meshgate_now_ms(void);


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_CACHE_H_INCLUDED_ */
