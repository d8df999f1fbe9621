
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_upstream_mesh.h"


/*
 * mesh_discovery and nginx's upstream keepalive: a peer that discovery
 * removes must lose its kept-alive connections at once, not at the end
 * of keepalive_timeout.  The keepalive module caches idle connections
 * per worker, per upstream, in a queue of its server configuration, keyed
 * by address; it has no API.  So each worker walks that queue when the
 * discovered set changed (the zone's generation differs from the one it
 * last saw: at its next request to the upstream, or within a second from
 * a timer if it gets none) and when a request to a removed peer gives its
 * connection to the cache; a connection whose address left the set is
 * closed by the keepalive module's own handler of its cached connections,
 * which also returns the cache entry.  An address still in the set (a
 * static peer, or a peer kept or found again) keeps its connections.
 */


#define NGX_HTTP_UPSTREAM_MESH_KA_CHECK  1000


/*
 * the layout of the keepalive module's configuration since nginx 1.19.10
 * (keepalive_time); older trees keep their connections until
 * keepalive_timeout, as before this file existed
 */

typedef struct {
    ngx_uint_t                          max_cached;
    ngx_uint_t                          requests;
    ngx_msec_t                          time;
    ngx_msec_t                          timeout;

    ngx_queue_t                         cache;
    ngx_queue_t                         free;

    ngx_http_upstream_init_pt           original_init_upstream;
    ngx_http_upstream_init_peer_pt      original_init_peer;
} ngx_http_upstream_mesh_ka_conf_t;


typedef struct {
    ngx_http_upstream_mesh_ka_conf_t   *conf;

    ngx_queue_t                         queue;
    ngx_connection_t                   *connection;

    socklen_t                           socklen;
    ngx_sockaddr_t                      sockaddr;
} ngx_http_upstream_mesh_ka_item_t;


static void ngx_http_upstream_mesh_ka_tick(ngx_event_t *ev);
static ngx_uint_t ngx_http_upstream_mesh_ka_member(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_sockaddr_t *sockaddr,
    socklen_t socklen);


/* per worker, at its start: the upstreams whose cache may need sweeping */

ngx_int_t
ngx_http_upstream_mesh_ka_init(ngx_cycle_t *cycle,
    ngx_http_upstream_mesh_main_conf_t *mmcf)
{
    ngx_uint_t                           i;
    ngx_module_t                        *m;
    ngx_http_upstream_mesh_disc_t       *disc;
    ngx_http_upstream_mesh_ka_conf_t    *kcf;
    ngx_http_upstream_mesh_srv_conf_t  **mcfp;

#if (nginx_version < 1019010)
    return NGX_OK;
#endif

    m = ngx_http_upstream_mesh_disc_module(cycle,
                                      "ngx_http_upstream_keepalive_module");
    if (m == NULL) {
        return NGX_OK;
    }

    mcfp = mmcf->upstreams.elts;

    for (i = 0; i < mmcf->upstreams.nelts; i++) {
        disc = mcfp[i]->disc;

        if (disc == NULL) {
            continue;
        }

        /* without a "keepalive" directive, the queues are not set up */

        kcf = mcfp[i]->uscf->srv_conf[m->ctx_index];

        if (kcf == NULL || kcf->max_cached == 0) {
            continue;
        }

        disc->keepalive = kcf;
        disc->keepalive_gen = mcfp[i]->sh->disc_gen;

        disc->keepalive_timer.handler = ngx_http_upstream_mesh_ka_tick;
        disc->keepalive_timer.data = mcfp[i];
        disc->keepalive_timer.log = cycle->log;
        disc->keepalive_timer.cancelable = 1;

        ngx_add_timer(&disc->keepalive_timer, NGX_HTTP_UPSTREAM_MESH_KA_CHECK);
    }

    return NGX_OK;
}


static void
ngx_http_upstream_mesh_ka_tick(ngx_event_t *ev)
{
    ngx_http_upstream_mesh_srv_conf_t  *mcf = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_http_upstream_mesh_ka_check(mcf);

    ngx_add_timer(ev, NGX_HTTP_UPSTREAM_MESH_KA_CHECK);
}


/* the set changed since this worker last looked: sweep its cache */

void
ngx_http_upstream_mesh_ka_check(ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    ngx_http_upstream_mesh_disc_t  *disc;

    disc = mcf->disc;

    if (disc->keepalive == NULL
        || disc->keepalive_gen == mcf->sh->disc_gen)
    {
        return;
    }

    ngx_http_upstream_mesh_ka_sweep(mcf);
}


/*
 * A try is over and the keepalive module may have cached its connection:
 * if the peer was removed meanwhile, that connection goes at once (the
 * sweep of this generation is already done).
 */

void
ngx_http_upstream_mesh_ka_freed(ngx_http_upstream_mesh_ctx_t *ctx)
{
    ngx_http_upstream_mesh_peer_sh_t   *p;
    ngx_http_upstream_mesh_srv_conf_t  *mcf;

    mcf = ctx->mcf;

    if (mcf->disc == NULL || mcf->disc->keepalive == NULL
        || ctx->peer < 0)
    {
        return;
    }

    p = &mcf->sh->peers[ctx->peer];

    /* a word read without the lock: the sweep checks under it */

    if (p->dyn && !p->used) {
        ngx_http_upstream_mesh_ka_sweep(mcf);
    }
}


void
ngx_http_upstream_mesh_ka_sweep(ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    ngx_uint_t                         n;
    ngx_queue_t                        stale, *q, *next;
    ngx_connection_t                  *c;
    ngx_http_upstream_mesh_disc_t     *disc;
    ngx_http_upstream_mesh_ka_conf_t  *kcf;
    ngx_http_upstream_mesh_ka_item_t  *item;

    disc = mcf->disc;
    kcf = disc->keepalive;

    ngx_queue_init(&stale);

    /* the entries to close, judged under the lock, closed after it */

    ngx_shmtx_lock(&mcf->shpool->mutex);

    disc->keepalive_gen = mcf->sh->disc_gen;

    for (q = ngx_queue_head(&kcf->cache);
         q != ngx_queue_sentinel(&kcf->cache);
         q = next)
    {
        next = ngx_queue_next(q);
        item = ngx_queue_data(q, ngx_http_upstream_mesh_ka_item_t, queue);

        if (!ngx_http_upstream_mesh_ka_member(mcf, &item->sockaddr,
                                              item->socklen))
        {
            ngx_queue_remove(q);
            ngx_queue_insert_tail(&stale, q);
        }
    }

    ngx_shmtx_unlock(&mcf->shpool->mutex);

    n = 0;

    while (!ngx_queue_empty(&stale)) {
        q = ngx_queue_head(&stale);
        item = ngx_queue_data(q, ngx_http_upstream_mesh_ka_item_t, queue);
        c = item->connection;

        /*
         * the keepalive module's read handler of a cached connection
         * closes it when c->close is set, and moves the entry from
         * whatever queue holds it to the free queue
         */

        c->close = 1;
        c->read->handler(c->read);

        if (ngx_queue_head(&stale) == q) {
            /* not closed: cannot happen with nginx 1.22; keep it cached */
            ngx_queue_remove(q);
            ngx_queue_insert_tail(&kcf->cache, q);
            continue;
        }

        n++;
    }

    if (n) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "mesh discovery: upstream \"%V\" closed %ui kept-alive "
                      "connections to removed peers", &mcf->uscf->host, n);
    }
}


/* with the zone mutex held: a static peer or a discovered one in use */

static ngx_uint_t
ngx_http_upstream_mesh_ka_member(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_sockaddr_t *sockaddr, socklen_t socklen)
{
    ngx_uint_t                           i;
    ngx_http_upstream_mesh_peer_sh_t    *p;
    ngx_http_upstream_mesh_peer_conf_t  *pcf;

    pcf = mcf->peers.elts;

    for (i = 0; i < mcf->sh->npeers && i < mcf->peers.nelts; i++) {
        p = &mcf->sh->peers[i];

        if (p->dyn) {
            if (p->used && p->socklen == socklen
                && ngx_memcmp(&p->sockaddr, sockaddr, socklen) == 0)
            {
                return 1;
            }

            continue;
        }

        if (pcf[i].socklen == socklen
            && ngx_memcmp(pcf[i].sockaddr, sockaddr, socklen) == 0)
        {
            return 1;
        }
    }

    return 0;
}
