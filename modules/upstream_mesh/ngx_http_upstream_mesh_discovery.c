
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_upstream_mesh.h"


/*
 * mesh_discovery: the peers of an upstream from DNS, live.
 *
 * nginx 1.22 has no runtime API to add a peer: the balancers walk the
 * round-robin peer list that the upstream's zone holds in shared memory,
 * with a fixed number of peers (their per-request "tried" bitmaps are
 * sized by it).  So the directive reserves max_peers slots at
 * configuration time: placeholder servers, down and of weight 0, which
 * the zone copies like any other peer (with room for any address and
 * name).  One worker resolves the name through nginx's own resolver and
 * writes the answer into the module's shared state (the slots); the
 * apply step then fills and retires round-robin slots in place under the
 * peer list's write lock.  Every worker sees the new set at its next
 * request, since the list is shared.  A slot is refilled only when no
 * request uses it (conns == 0): a request in flight always frees the
 * peer it connected to, and a kept-alive connection is cached under the
 * address it really has.
 */


#define NGX_HTTP_UPSTREAM_MESH_DISC_EMPTY   (-1)
#define NGX_HTTP_UPSTREAM_MESH_DISC_MIN     1000
#define NGX_HTTP_UPSTREAM_MESH_DISC_MAX     300000
#define NGX_HTTP_UPSTREAM_MESH_DISC_BACKOFF 30000


typedef struct {
    ngx_sockaddr_t                      sockaddr;
    socklen_t                           socklen;
    ngx_uint_t                          weight;
    ngx_uint_t                          priority;
    ngx_uint_t                          backup;
    ngx_uint_t                          found;
} ngx_http_upstream_mesh_disc_addr_t;


/* the layout of the random balancer's configuration in nginx 1.22 */

typedef struct {
    ngx_http_upstream_rr_peer_t            *peer;
    ngx_uint_t                              range;
} ngx_http_upstream_mesh_random_range_t;


typedef struct {
    ngx_uint_t                              two;
    ngx_http_upstream_mesh_random_range_t  *ranges;
} ngx_http_upstream_mesh_random_conf_t;


static ngx_int_t ngx_http_upstream_mesh_disc_placeholders(ngx_conf_t *cf,
    ngx_http_upstream_mesh_disc_t *disc, ngx_http_upstream_srv_conf_t *uscf);
static ngx_int_t ngx_http_upstream_mesh_disc_resolver(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf);
static void ngx_http_upstream_mesh_disc_zero(
    ngx_http_upstream_mesh_srv_conf_t *mcf);
static void ngx_http_upstream_mesh_disc_tick(ngx_event_t *ev);
static void ngx_http_upstream_mesh_disc_resolved(ngx_resolver_ctx_t *ctx);
static ngx_uint_t ngx_http_upstream_mesh_disc_answer(
    ngx_http_upstream_mesh_disc_t *disc, ngx_resolver_ctx_t *ctx,
    ngx_http_upstream_mesh_disc_addr_t *a, ngx_log_t *log);
static int ngx_libc_cdecl ngx_http_upstream_mesh_disc_cmp(const void *one,
    const void *two);
static void ngx_http_upstream_mesh_disc_update(
    ngx_http_upstream_mesh_disc_t *disc,
    ngx_http_upstream_mesh_disc_addr_t *a, ngx_uint_t n, ngx_log_t *log);
static ngx_int_t ngx_http_upstream_mesh_disc_fill(
    ngx_http_upstream_mesh_disc_t *disc,
    ngx_http_upstream_mesh_disc_addr_t *a, ngx_log_t *log);
static void ngx_http_upstream_mesh_disc_failed(
    ngx_http_upstream_mesh_disc_t *disc, ngx_int_t err, ngx_log_t *log);
static void ngx_http_upstream_mesh_disc_schedule(
    ngx_http_upstream_mesh_disc_t *disc, ngx_msec_t delay);
static const char *ngx_http_upstream_mesh_disc_strerror(ngx_int_t err);
static ngx_uint_t ngx_http_upstream_mesh_disc_count(
    ngx_http_upstream_mesh_srv_conf_t *mcf);


char *
ngx_http_upstream_mesh_discovery(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_mesh_srv_conf_t  *mcf = conf;

    u_char                         *dot;
    ngx_int_t                       n;
    ngx_str_t                      *value, s;
    ngx_uint_t                      i, labels;
    ngx_http_upstream_srv_conf_t   *uscf;
    ngx_http_upstream_mesh_disc_t  *disc;

    if (mcf->disc) {
        return "is duplicate";
    }

    value = cf->args->elts;

    disc = ngx_pcalloc(cf->pool, sizeof(ngx_http_upstream_mesh_disc_t));
    if (disc == NULL) {
        return NGX_CONF_ERROR;
    }

    disc->name = value[1];
    disc->max_peers = 64;
    disc->resolver_timeout = 2000;

    if (disc->name.len == 0 || disc->name.len > 253) {
        return "has an invalid name";
    }

    for (i = 0; i < disc->name.len; i++) {
        if (disc->name.data[i] <= 0x20 || disc->name.data[i] >= 0x7f) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid name \"%V\" in mesh_discovery",
                               &disc->name);
            return NGX_CONF_ERROR;
        }
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "srv") == 0) {
            disc->srv = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "port=", 5) == 0) {
            n = ngx_atoi(value[i].data + 5, value[i].len - 5);
            if (n < 1 || n > 65535) {
                goto invalid;
            }

            disc->port = (in_port_t) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "max_peers=", 10) == 0) {
            n = ngx_atoi(value[i].data + 10, value[i].len - 10);
            if (n < 1 || n > 1024) {
                goto invalid;
            }

            disc->max_peers = n;
            continue;
        }

        if (ngx_strcmp(value[i].data, "interval=ttl") == 0) {
            disc->interval = 0;
            continue;
        }

        if (ngx_strncmp(value[i].data, "interval=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            n = ngx_parse_time(&s, 0);
            if (n == NGX_ERROR || n < NGX_HTTP_UPSTREAM_MESH_DISC_MIN) {
                goto invalid;
            }

            disc->interval = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "resolver=", 9) == 0
            && value[i].len > 9)
        {
            disc->resolver_addr.data = value[i].data + 9;
            disc->resolver_addr.len = value[i].len - 9;
            continue;
        }

        if (ngx_strncmp(value[i].data, "resolver_timeout=", 17) == 0) {
            s.data = value[i].data + 17;
            s.len = value[i].len - 17;

            n = ngx_parse_time(&s, 0);
            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            disc->resolver_timeout = n;
            continue;
        }

        goto invalid;
    }

    if (disc->srv) {

        /*
         * nginx's resolver asks for "<service>.<name>": the service is the
         * first two labels ("_http._tcp"), the name the rest
         */

        labels = 0;
        dot = NULL;

        for (i = 0; i < disc->name.len; i++) {
            if (disc->name.data[i] == '.' && ++labels == 2) {
                dot = &disc->name.data[i];
                break;
            }
        }

        if (dot == NULL || dot == disc->name.data + disc->name.len - 1) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "mesh_discovery srv needs a name of three "
                               "labels or more, such as "
                               "\"_http._tcp.orders.example\", not \"%V\"",
                               &disc->name);
            return NGX_CONF_ERROR;
        }

        disc->service.data = disc->name.data;
        disc->service.len = dot - disc->name.data;
        disc->host.data = dot + 1;
        disc->host.len = disc->name.data + disc->name.len - dot - 1;

    } else if (disc->port == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "mesh_discovery \"%V\" needs \"port=\" "
                           "(only SRV records carry ports)", &disc->name);
        return NGX_CONF_ERROR;
    }

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    if (ngx_http_upstream_mesh_disc_placeholders(cf, disc, uscf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    mcf->disc = disc;
    disc->mcf = mcf;

    if (!mcf->enabled) {
        mcf->enabled = 1;
        mcf->file = cf->conf_file->file.name;
        mcf->line = cf->conf_file->line;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in mesh_discovery",
                       &value[i]);
    return NGX_CONF_ERROR;
}


/*
 * The slots: server entries that nginx's round robin turns into peers
 * like those of "server" lines (so an upstream of discovered peers only
 * is not "without servers").  With srv, a second set of slots is for
 * the backup tier.
 */

static ngx_int_t
ngx_http_upstream_mesh_disc_placeholders(ngx_conf_t *cf,
    ngx_http_upstream_mesh_disc_t *disc, ngx_http_upstream_srv_conf_t *uscf)
{
    ngx_uint_t                   i, n;
    ngx_addr_t                  *addr;
    struct sockaddr_in          *sin;
    ngx_http_upstream_server_t  *us;

    if (uscf->servers == NULL) {
        uscf->servers = ngx_array_create(cf->pool, 4,
                                         sizeof(ngx_http_upstream_server_t));
        if (uscf->servers == NULL) {
            return NGX_ERROR;
        }
    }

    n = disc->max_peers * (disc->srv ? 2 : 1);

    disc->slots = ngx_pcalloc(cf->pool, n * sizeof(ngx_sockaddr_t));
    addr = ngx_pcalloc(cf->pool, n * sizeof(ngx_addr_t));

    if (disc->slots == NULL || addr == NULL) {
        return NGX_ERROR;
    }

    disc->nslots = n;

    for (i = 0; i < n; i++) {
        sin = &disc->slots[i].sockaddr_in;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(disc->port);

        addr[i].sockaddr = &disc->slots[i].sockaddr;
        addr[i].socklen = sizeof(struct sockaddr_in);
        ngx_str_set(&addr[i].name, "-");

        us = ngx_array_push(uscf->servers);
        if (us == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(us, sizeof(ngx_http_upstream_server_t));

        /* a name of its own per slot: "hash ... consistent" rings on it */

        us->name.data = ngx_pnalloc(cf->pool, disc->name.len + NGX_INT_T_LEN
                                              + 1);
        if (us->name.data == NULL) {
            return NGX_ERROR;
        }

        us->name.len = ngx_sprintf(us->name.data, "%V#%ui", &disc->name, i)
                       - us->name.data;
        us->addrs = &addr[i];
        us->naddrs = 1;
        us->weight = 1;
        us->max_fails = 1;
        us->fail_timeout = 10;
        us->down = 1;
        us->backup = (i >= disc->max_peers);
    }

    return NGX_OK;
}


/* init_main_conf, after round robin built its peers, before the zone */

ngx_int_t
ngx_http_upstream_mesh_disc_conf(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    size_t                               need;
    u_char                              *a, *b;
    ngx_uint_t                           i, n;
    ngx_http_upstream_mesh_disc_t       *disc;
    ngx_http_upstream_mesh_peer_conf_t  *pcf;

    disc = mcf->disc;

    /* hash, ip_hash and random have no backup tier */

    disc->backup = (mcf->uscf->flags & NGX_HTTP_UPSTREAM_BACKUP) ? 1 : 0;

    pcf = mcf->peers.elts;
    a = (u_char *) disc->slots;
    b = (u_char *) (disc->slots + disc->nslots);
    n = 0;

    for (i = 0; i < mcf->peers.nelts; i++) {
        if ((u_char *) pcf[i].sockaddr >= a && (u_char *) pcf[i].sockaddr < b)
        {
            pcf[i].dyn = 1;
            n++;
        }
    }

    if (n != disc->nslots) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "the balancer of upstream \"%V\" does not work with "
                      "mesh_discovery in %V:%ui",
                      &mcf->uscf->host, &mcf->file, mcf->line);
        return NGX_ERROR;
    }

    /*
     * nginx's zone copies each peer with room for any address and name:
     * about 0.8k per peer (measured), and its slab pages; an upstream
     * zone too small fails at start with an allocation error only
     */

    need = 32 * 1024 + mcf->peers.nelts * 800;

    if (mcf->uscf->shm_zone->shm.size
        && mcf->uscf->shm_zone->shm.size < need)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "the zone of upstream \"%V\" is too small for %ui "
                      "peers and mesh_discovery slots: make it %uzk or more "
                      "in %V:%ui", &mcf->uscf->host, mcf->peers.nelts,
                      (need + 1023) / 1024, &mcf->file, mcf->line);
        return NGX_ERROR;
    }

    if (ngx_http_upstream_mesh_disc_resolver(cf, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_upstream_mesh_disc_zero(mcf);

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_mesh_disc_resolver(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    ngx_str_t                       names[2];
    ngx_uint_t                      n;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_upstream_mesh_disc_t  *disc;

    disc = mcf->disc;

    if (disc->resolver_addr.len) {
        names[0] = disc->resolver_addr;
        n = 1;

        /* interval= wins over the TTL in the resolver's cache too */

        if (disc->interval) {
            names[1].data = ngx_pnalloc(cf->pool, sizeof("valid=s")
                                                  + NGX_TIME_T_LEN);
            if (names[1].data == NULL) {
                return NGX_ERROR;
            }

            names[1].len = ngx_sprintf(names[1].data, "valid=%Ms",
                                       (disc->interval + 999) / 1000)
                           - names[1].data;
            n = 2;
        }

        disc->resolver = ngx_resolver_create(cf, names, n);
        if (disc->resolver == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "invalid resolver \"%V\" of mesh_discovery "
                          "in %V:%ui", &disc->resolver_addr, &mcf->file,
                          mcf->line);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->resolver == NULL || clcf->resolver == NGX_CONF_UNSET_PTR
        || clcf->resolver->connections.nelts == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "mesh_discovery of upstream \"%V\" has no resolver: "
                      "add \"resolver=<address>\" to it or a \"resolver\" "
                      "directive to the http block in %V:%ui",
                      &mcf->uscf->host, &mcf->file, mcf->line);
        return NGX_ERROR;
    }

    disc->resolver = clcf->resolver;

    return NGX_OK;
}


/*
 * An empty slot weighs nothing: "hash" and "random" walk weights, and
 * must not land on an empty slot more often than on a peer.
 */

static void
ngx_http_upstream_mesh_disc_zero(ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    ngx_uint_t                     i;
    ngx_http_upstream_rr_peer_t   *peer;
    ngx_http_upstream_rr_peers_t  *peers;

    i = 0;

    for (peers = mcf->uscf->peer.data; peers; peers = peers->next) {
        for (peer = peers->peer; peer; peer = peer->next, i++) {
            if (((ngx_http_upstream_mesh_peer_conf_t *) mcf->peers.elts)[i]
                .dyn)
            {
                peer->weight = 0;
                peer->effective_weight = 0;
            }
        }

        ngx_http_upstream_mesh_disc_totals(peers);
    }
}


/* with the peer list's write lock held */

void
ngx_http_upstream_mesh_disc_totals(ngx_http_upstream_rr_peers_t *peers)
{
    ngx_uint_t                    w, t;
    ngx_http_upstream_rr_peer_t  *peer;

    w = 0;
    t = 0;

    for (peer = peers->peer; peer; peer = peer->next) {
        w += peer->weight;

        if (peer->weight && !peer->down) {
            t++;
        }
    }

    if (w == 0) {
        /* "hash" and "random" divide by the total: one empty slot counts */
        peers->peer->weight = 1;
        w = 1;
    }

    peers->total_weight = w;
    peers->weighted = 1;

    /* as round robin counts them: peers not down (a backup tier may have
     * none) */

    peers->tries = t;
}


/* with the peer list's write lock held: the slot takes the shared state */

void
ngx_http_upstream_mesh_disc_peer(ngx_http_upstream_mesh_peer_sh_t *p,
    ngx_http_upstream_rr_peer_t *peer)
{
    if (!p->used) {
        peer->down = 1;
        peer->weight = 0;
        peer->effective_weight = 0;
        return;
    }

    if (peer->socklen != p->socklen
        || ngx_memcmp(peer->sockaddr, &p->sockaddr, p->socklen) != 0)
    {
        /* a new occupant: none of the old one's state */

        ngx_memcpy(peer->sockaddr, &p->sockaddr, p->socklen);
        peer->socklen = p->socklen;
        ngx_memcpy(peer->name.data, p->name, p->name_len);
        peer->name.len = p->name_len;
        peer->current_weight = 0;
        peer->effective_weight = p->weight;
        peer->fails = 0;
        peer->accessed = 0;
        peer->checked = 0;
    }

    if (peer->weight != (ngx_int_t) p->weight) {
        peer->weight = p->weight;
        peer->effective_weight = p->weight;
        peer->current_weight = 0;
    }
}


ngx_int_t
ngx_http_upstream_mesh_disc_init(ngx_cycle_t *cycle,
    ngx_http_upstream_mesh_main_conf_t *mmcf)
{
    ngx_msec_t                           now, delay;
    ngx_uint_t                           i;
    ngx_module_t                        *m;
    ngx_http_upstream_mesh_disc_t       *disc;
    ngx_http_upstream_mesh_srv_conf_t  **mcfp;

    mcfp = mmcf->upstreams.elts;

    for (i = 0; i < mmcf->upstreams.nelts; i++) {
        disc = mcfp[i]->disc;

        if (disc == NULL) {
            continue;
        }

        m = ngx_http_upstream_mesh_disc_module(cycle,
                                      "ngx_http_upstream_random_module");

        if (m) {
            disc->random = mcfp[i]->uscf->srv_conf[m->ctx_index];
        }

        disc->random_gen = (ngx_uint_t) -1;

        /* one worker resolves; the others read the zone */

        if (ngx_process == NGX_PROCESS_WORKER && ngx_worker != 0) {
            continue;
        }

        disc->timer.handler = ngx_http_upstream_mesh_disc_tick;
        disc->timer.data = disc;
        disc->timer.log = cycle->log;
        disc->timer.cancelable = 1;

        /* after a reload, the kept set serves until its next resolution */

        now = ngx_http_upstream_mesh_now();
        delay = 1;

        if (mcfp[i]->sh->disc_next > now && mcfp[i]->sh->disc_last_ok) {
            delay = ngx_min(mcfp[i]->sh->disc_next - now,
                            NGX_HTTP_UPSTREAM_MESH_DISC_MAX);
        }

        ngx_add_timer(&disc->timer, delay);
    }

    return NGX_OK;
}


/*
 * A module of nginx whose per-worker state of the upstream must follow
 * the slots: the random balancer's weight ranges (see disc_local), the
 * keepalive module's cache (see ngx_http_upstream_mesh_keepalive.c)
 */

ngx_module_t *
ngx_http_upstream_mesh_disc_module(ngx_cycle_t *cycle, char *name)
{
    ngx_uint_t  i;

    for (i = 0; cycle->modules[i]; i++) {
        if (ngx_strcmp(cycle->modules[i]->name, name) == 0) {
            return cycle->modules[i];
        }
    }

    return NULL;
}


static void
ngx_http_upstream_mesh_disc_tick(ngx_event_t *ev)
{
    ngx_http_upstream_mesh_disc_t  *disc = ev->data;

    ngx_resolver_ctx_t  *ctx;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ctx = ngx_resolve_start(disc->resolver, NULL);

    if (ctx == NULL) {
        ngx_http_upstream_mesh_disc_failed(disc, NGX_ERROR, ev->log);
        return;
    }

    if (ctx == NGX_NO_RESOLVER) {
        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "mesh discovery of upstream \"%V\": no resolver",
                      &disc->mcf->uscf->host);
        return;
    }

    if (disc->srv) {
        ctx->service = disc->service;
        ctx->name = disc->host;

    } else {
        ctx->name = disc->name;
    }

    ctx->handler = ngx_http_upstream_mesh_disc_resolved;
    ctx->data = disc;
    ctx->timeout = disc->resolver_timeout;
    ctx->cancelable = 1;

    if (ngx_resolve_name(ctx) != NGX_OK) {
        ngx_http_upstream_mesh_disc_failed(disc, NGX_ERROR, ev->log);
    }
}


static void
ngx_http_upstream_mesh_disc_resolved(ngx_resolver_ctx_t *ctx)
{
    ngx_http_upstream_mesh_disc_t  *disc = ctx->data;

    time_t                               valid;
    ngx_uint_t                           n;
    ngx_log_t                           *log;
    ngx_msec_t                           delay;
    ngx_msec_int_t                       left;
    ngx_time_t                          *tp;
    ngx_http_upstream_mesh_sh_t         *sh;
    ngx_http_upstream_mesh_srv_conf_t   *mcf;
    ngx_http_upstream_mesh_disc_addr_t  *a;

    mcf = disc->mcf;
    sh = mcf->sh;
    log = disc->timer.log;

    if (ctx->state != NGX_OK || ctx->naddrs == 0) {
        n = ctx->state != NGX_OK ? (ngx_uint_t) ctx->state
                                 : (ngx_uint_t)
                                   NGX_HTTP_UPSTREAM_MESH_DISC_EMPTY;
        ngx_resolve_name_done(ctx);
        ngx_http_upstream_mesh_disc_failed(disc, (ngx_int_t) n, log);
        return;
    }

    a = ngx_alloc(ctx->naddrs * sizeof(ngx_http_upstream_mesh_disc_addr_t),
                  log);
    if (a == NULL) {
        ngx_resolve_name_done(ctx);
        ngx_http_upstream_mesh_disc_failed(disc, NGX_ERROR, log);
        return;
    }

    n = ngx_http_upstream_mesh_disc_answer(disc, ctx, a, log);
    valid = ctx->valid;

    ngx_resolve_name_done(ctx);

    if (n == 0) {
        ngx_free(a);
        ngx_http_upstream_mesh_disc_failed(disc,
                                      NGX_HTTP_UPSTREAM_MESH_DISC_EMPTY, log);
        return;
    }

    tp = ngx_timeofday();

    ngx_shmtx_lock(&mcf->shpool->mutex);

    ngx_http_upstream_mesh_disc_update(disc, a, n, log);

    sh->disc_last = ngx_http_upstream_mesh_now();
    sh->disc_last_ok = sh->disc_last;
    sh->disc_ttl = valid > tp->sec ? valid - tp->sec : 0;
    sh->disc_error = 0;
    sh->disc_fails_row = 0;

    ngx_shmtx_unlock(&mcf->shpool->mutex);

    (void) ngx_atomic_fetch_add(&sh->disc_resolutions, 1);

    ngx_free(a);

    /*
     * nginx's resolver keeps an answer while its "valid" second has not
     * passed: the next query goes out at the start of the second after
     */

    if (disc->interval) {
        delay = disc->interval;

    } else {
        left = (ngx_msec_int_t) (valid + 1 - tp->sec) * 1000
               - (ngx_msec_int_t) tp->msec + 20;

        /* a TTL of 0 (Consul's default) or an answer from the cache */

        if (left < NGX_HTTP_UPSTREAM_MESH_DISC_MIN) {
            delay = NGX_HTTP_UPSTREAM_MESH_DISC_MIN;

        } else if (left > NGX_HTTP_UPSTREAM_MESH_DISC_MAX) {
            delay = NGX_HTTP_UPSTREAM_MESH_DISC_MAX;

        } else {
            delay = (ngx_msec_t) left;
        }
    }

    ngx_http_upstream_mesh_disc_schedule(disc, delay);
}


/*
 * The answer as the slots want it: ports set, priorities turned into
 * tiers, sorted by address (nginx rotates the order of A records, and a
 * truncated answer must keep the same peers), duplicates merged.
 */

static ngx_uint_t
ngx_http_upstream_mesh_disc_answer(ngx_http_upstream_mesh_disc_t *disc,
    ngx_resolver_ctx_t *ctx, ngx_http_upstream_mesh_disc_addr_t *a,
    ngx_log_t *log)
{
    ngx_uint_t            i, j, n, prio, max[2], cnt[2], dropped;
    ngx_resolver_addr_t  *ra;

    n = 0;
    prio = (ngx_uint_t) -1;

    for (i = 0; i < ctx->naddrs; i++) {
        ra = &ctx->addrs[i];

        /* nginx leaves a priority group whose weights are all 0 empty */

        if (ra->sockaddr == NULL || ra->socklen > sizeof(ngx_sockaddr_t)) {
            continue;
        }

        ngx_memzero(&a[n], sizeof(ngx_http_upstream_mesh_disc_addr_t));
        ngx_memcpy(&a[n].sockaddr, ra->sockaddr, ra->socklen);
        a[n].socklen = ra->socklen;

        if (disc->srv) {
            a[n].weight = ra->weight ? ra->weight : 1;
            a[n].priority = ra->priority;

        } else {
            ngx_inet_set_port(&a[n].sockaddr.sockaddr, disc->port);
            a[n].weight = 1;
        }

        if (a[n].priority < prio) {
            prio = a[n].priority;
        }

        n++;
    }

    for (i = 0; i < n; i++) {
        a[i].backup = (disc->backup && a[i].priority != prio);
    }

    ngx_qsort(a, n, sizeof(ngx_http_upstream_mesh_disc_addr_t),
              ngx_http_upstream_mesh_disc_cmp);

    max[0] = disc->max_peers;
    max[1] = disc->srv ? disc->max_peers : 0;
    cnt[0] = 0;
    cnt[1] = 0;
    dropped = 0;

    for (i = 0, j = 0; i < n; i++) {
        if (j > 0 && a[j - 1].backup == a[i].backup
            && a[j - 1].socklen == a[i].socklen
            && ngx_memcmp(&a[j - 1].sockaddr, &a[i].sockaddr, a[i].socklen)
               == 0)
        {
            a[j - 1].weight += a[i].weight;
            continue;
        }

        if (cnt[a[i].backup] >= max[a[i].backup]) {
            dropped++;
            continue;
        }

        cnt[a[i].backup]++;
        a[j++] = a[i];
    }

    disc->mcf->sh->disc_truncated = dropped;

    if (dropped) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "mesh discovery: \"%V\" of upstream \"%V\" answered "
                      "%ui addresses more than max_peers=%ui, ignored",
                      &disc->name, &disc->mcf->uscf->host, dropped,
                      disc->max_peers);
    }

    return j;
}


static int ngx_libc_cdecl
ngx_http_upstream_mesh_disc_cmp(const void *one, const void *two)
{
    const ngx_http_upstream_mesh_disc_addr_t  *a = one;
    const ngx_http_upstream_mesh_disc_addr_t  *b = two;

    if (a->backup != b->backup) {
        return a->backup < b->backup ? -1 : 1;
    }

    if (a->socklen != b->socklen) {
        return a->socklen < b->socklen ? -1 : 1;
    }

    return ngx_memcmp(&a->sockaddr, &b->sockaddr, a->socklen);
}


/* with the zone mutex held */

static void
ngx_http_upstream_mesh_disc_update(ngx_http_upstream_mesh_disc_t *disc,
    ngx_http_upstream_mesh_disc_addr_t *a, ngx_uint_t n, ngx_log_t *log)
{
    ngx_uint_t                          i, j, changed, waiting;
    ngx_http_upstream_mesh_sh_t        *sh;
    ngx_http_upstream_mesh_peer_sh_t   *p;
    ngx_http_upstream_mesh_srv_conf_t  *mcf;

    mcf = disc->mcf;
    sh = mcf->sh;
    changed = 0;

    /* peers that stay, and peers that are gone */

    for (i = 0; i < sh->npeers; i++) {
        p = &sh->peers[i];

        if (!p->dyn || !p->used) {
            continue;
        }

        for (j = 0; j < n; j++) {
            if (!a[j].found && a[j].backup == p->backup
                && a[j].socklen == p->socklen
                && ngx_memcmp(&a[j].sockaddr, &p->sockaddr, p->socklen) == 0)
            {
                break;
            }
        }

        if (j < n) {
            a[j].found = 1;

            if (p->weight != a[j].weight) {
                p->weight = a[j].weight;
                changed = 1;
            }

            continue;
        }

        p->used = 0;
        changed = 1;

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "mesh discovery: upstream \"%V\" removed %speer %*s "
                      "(\"%V\" no longer has it)", &mcf->uscf->host,
                      p->backup ? "backup " : "", p->name_len, p->name,
                      &disc->name);
    }

    /* new peers, into free slots that no request uses any more */

    waiting = 0;

    for (j = 0; j < n; j++) {
        if (a[j].found) {
            continue;
        }

        if (ngx_http_upstream_mesh_disc_fill(disc, &a[j], log) == NGX_OK) {
            changed = 1;

        } else {
            waiting++;
        }
    }

    if (waiting) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "mesh discovery: upstream \"%V\" has no free slot for "
                      "%ui new peers of \"%V\" yet (slots of removed peers "
                      "still serve requests in flight)",
                      &mcf->uscf->host, waiting, &disc->name);
    }

    if (changed) {
        sh->disc_gen++;
        ngx_http_upstream_mesh_apply(mcf, log);
    }
}


static ngx_int_t
ngx_http_upstream_mesh_disc_fill(ngx_http_upstream_mesh_disc_t *disc,
    ngx_http_upstream_mesh_disc_addr_t *a, ngx_log_t *log)
{
    ngx_int_t                           busy;
    ngx_uint_t                          i, gen;
    ngx_http_upstream_rr_peer_t        *peer;
    ngx_http_upstream_rr_peers_t       *peers;
    ngx_http_upstream_mesh_sh_t        *sh;
    ngx_http_upstream_mesh_peer_sh_t   *p;
    ngx_http_upstream_mesh_srv_conf_t  *mcf;

    mcf = disc->mcf;
    sh = mcf->sh;
    peers = mcf->uscf->peer.data;

    if (mcf->rr == NULL) {
        return NGX_DECLINED;
    }

    if (a->backup) {
        peers = peers->next;
    }

    for (i = 0; i < sh->npeers; i++) {
        p = &sh->peers[i];

        if (!p->dyn || p->used || p->backup != a->backup) {
            continue;
        }

        peer = mcf->rr[i];

        /*
         * A free slot is also taken out of the balancers under the same
         * lock: until apply gives it the new address, a request that chose
         * it would hold a pointer to the address rewritten under it, and
         * the keepalive module would cache its connection to the old
         * address under the new one.
         */

        ngx_http_upstream_rr_peers_wlock(peers);

        busy = peer->conns;

        if (!busy) {
            peer->down = 1;
        }

        ngx_http_upstream_rr_peers_unlock(peers);

        if (busy) {
            continue;
        }

        gen = p->gen + 1;

        ngx_memzero(p, sizeof(ngx_http_upstream_mesh_peer_sh_t));

        p->dyn = 1;
        p->used = 1;
        p->gen = gen;
        p->backup = a->backup;
        p->weight = a->weight;
        p->socklen = a->socklen;
        ngx_memcpy(&p->sockaddr, &a->sockaddr, a->socklen);
        p->name_len = ngx_sock_ntop(&p->sockaddr.sockaddr, p->socklen,
                                    p->name, NGX_SOCKADDR_STRLEN, 1);

        /* a new peer is probed before it gets traffic, if so configured */

        p->unhealthy = (mcf->hc_type && mcf->hc_initial_unhealthy);

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "mesh discovery: upstream \"%V\" added %speer %*s "
                      "(from \"%V\", weight %ui)%s", &mcf->uscf->host,
                      p->backup ? "backup " : "", p->name_len, p->name,
                      &disc->name, p->weight,
                      p->unhealthy ? ", probed before traffic" : "");

        return NGX_OK;
    }

    return NGX_DECLINED;
}


static void
ngx_http_upstream_mesh_disc_failed(ngx_http_upstream_mesh_disc_t *disc,
    ngx_int_t err, ngx_log_t *log)
{
    ngx_msec_t                          delay, cap;
    ngx_uint_t                          n, row;
    ngx_http_upstream_mesh_sh_t        *sh;
    ngx_http_upstream_mesh_srv_conf_t  *mcf;

    mcf = disc->mcf;
    sh = mcf->sh;

    ngx_shmtx_lock(&mcf->shpool->mutex);

    sh->disc_last = ngx_http_upstream_mesh_now();
    sh->disc_error = err;
    row = ++sh->disc_fails_row;

    ngx_shmtx_unlock(&mcf->shpool->mutex);

    (void) ngx_atomic_fetch_add(&sh->disc_resolutions, 1);
    (void) ngx_atomic_fetch_add(&sh->disc_failures, 1);

    n = ngx_http_upstream_mesh_disc_count(mcf);

    /* 1 s, 2 s, 4 s, ... up to 30 s (or four intervals) */

    cap = NGX_HTTP_UPSTREAM_MESH_DISC_BACKOFF;

    if (disc->interval && 4 * disc->interval < cap) {
        cap = 4 * disc->interval;
    }

    delay = NGX_HTTP_UPSTREAM_MESH_DISC_MIN << ngx_min(row - 1, 5);

    if (delay > cap) {
        delay = cap;
    }

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "mesh discovery: resolving \"%V\" for upstream \"%V\" "
                  "failed (%s), keeping the last %ui peers, next try in "
                  "%Mms", &disc->name, &mcf->uscf->host,
                  ngx_http_upstream_mesh_disc_strerror(err), n, delay);

    ngx_http_upstream_mesh_disc_schedule(disc, delay);
}


static void
ngx_http_upstream_mesh_disc_schedule(ngx_http_upstream_mesh_disc_t *disc,
    ngx_msec_t delay)
{
    disc->mcf->sh->disc_next = ngx_http_upstream_mesh_now() + delay;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(&disc->timer, delay);
}


static const char *
ngx_http_upstream_mesh_disc_strerror(ngx_int_t err)
{
    switch (err) {

    case 0:
        return "none";

    case NGX_HTTP_UPSTREAM_MESH_DISC_EMPTY:
        return "empty answer";

    case NGX_RESOLVE_FORMERR:
        return "format error";

    case NGX_RESOLVE_SERVFAIL:
        return "server failure";

    case NGX_RESOLVE_NXDOMAIN:
        return "host not found";

    case NGX_RESOLVE_NOTIMP:
        return "unimplemented";

    case NGX_RESOLVE_REFUSED:
        return "refused";

    case NGX_RESOLVE_TIMEDOUT:
        return "timed out";

    default:
        return "error";
    }
}


/* peers of the upstream: static ones and filled slots */

static ngx_uint_t
ngx_http_upstream_mesh_disc_count(ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    ngx_uint_t                    i, n;
    ngx_http_upstream_mesh_sh_t  *sh;

    sh = mcf->sh;
    n = 0;

    for (i = 0; i < sh->npeers; i++) {
        if (!sh->peers[i].dyn || sh->peers[i].used) {
            n++;
        }
    }

    return n;
}


/*
 * Per worker, at a request: the random balancer keeps its weight ranges
 * in the worker's memory, built at its first request; they follow the
 * slots' weights here (in place: the slots never move).
 */

void
ngx_http_upstream_mesh_disc_local(ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    ngx_uint_t                             i, w, gen;
    ngx_http_upstream_rr_peers_t          *peers;
    ngx_http_upstream_mesh_disc_t         *disc;
    ngx_http_upstream_mesh_random_conf_t  *rcf;

    disc = mcf->disc;
    gen = mcf->sh->disc_gen;
    rcf = disc->random;

    if (rcf == NULL || rcf->ranges == NULL || disc->random_gen == gen) {
        return;
    }

    peers = mcf->uscf->peer.data;

    ngx_http_upstream_rr_peers_rlock(peers);

    w = 0;

    for (i = 0; i < peers->number; i++) {
        rcf->ranges[i].range = w;
        w += rcf->ranges[i].peer->weight;
    }

    ngx_http_upstream_rr_peers_unlock(peers);

    disc->random_gen = gen;
}


/*
 * At a worker's exit: nginx's random balancer allocates its ranges for an
 * upstream with a zone from the heap at the worker's first request and
 * never frees them; freed here, as the module keeps them up to date.
 */

void
ngx_http_upstream_mesh_disc_exit(ngx_cycle_t *cycle,
    ngx_http_upstream_mesh_main_conf_t *mmcf)
{
    ngx_uint_t                             i;
    ngx_module_t                          *m;
    ngx_http_upstream_mesh_srv_conf_t    **mcfp;
    ngx_http_upstream_mesh_random_conf_t  *rcf;

    m = ngx_http_upstream_mesh_disc_module(cycle,
                                      "ngx_http_upstream_random_module");
    if (m == NULL) {
        return;
    }

    mcfp = mmcf->upstreams.elts;

    for (i = 0; i < mmcf->upstreams.nelts; i++) {
        if (mcfp[i]->disc == NULL) {
            continue;
        }

        rcf = mcfp[i]->uscf->srv_conf[m->ctx_index];

        if (rcf->ranges) {
            ngx_free(rcf->ranges);
            rcf->ranges = NULL;
        }
    }
}


u_char *
ngx_http_upstream_mesh_disc_status(u_char *p,
    ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    ngx_http_upstream_mesh_sh_t    *sh;
    ngx_http_upstream_mesh_disc_t  *disc;

    disc = mcf->disc;
    sh = mcf->sh;

    if (disc == NULL) {
        return ngx_sprintf(p, ",\"peer_count\":%ui",
                           ngx_http_upstream_mesh_disc_count(mcf));
    }

    return ngx_sprintf(p, ",\"peer_count\":%ui,\"discovery\":{"
                       "\"name\":\"%V\",\"type\":\"%s\",\"max_peers\":%ui,"
                       "\"last_resolution_ms\":%M,\"last_success_ms\":%M,"
                       "\"next_resolution_ms\":%M,\"ttl\":%T,"
                       "\"error\":\"%s\",\"failures_in_a_row\":%ui,"
                       "\"truncated\":%ui,"
                       "\"resolutions\":%uA,\"failures\":%uA}",
                       ngx_http_upstream_mesh_disc_count(mcf),
                       &disc->json_name, disc->srv ? "SRV" : "A",
                       disc->max_peers, sh->disc_last, sh->disc_last_ok,
                       sh->disc_next, sh->disc_ttl,
                       ngx_http_upstream_mesh_disc_strerror(sh->disc_error),
                       sh->disc_fails_row, sh->disc_truncated,
                       sh->disc_resolutions, sh->disc_failures);
}


u_char *
ngx_http_upstream_mesh_disc_metrics(u_char *p,
    ngx_http_upstream_mesh_main_conf_t *mmcf)
{
    ngx_uint_t                           i, k;
    ngx_http_upstream_mesh_sh_t         *sh;
    ngx_http_upstream_mesh_srv_conf_t  **mcfp, *mcf;

    mcfp = mmcf->upstreams.elts;

    p = ngx_cpymem(p, "# HELP meshgate_upstream_peers Peers of the "
                   "upstream (static and discovered).\n"
                   "# TYPE meshgate_upstream_peers gauge\n",
                   sizeof("# HELP meshgate_upstream_peers Peers of the "
                          "upstream (static and discovered).\n"
                          "# TYPE meshgate_upstream_peers gauge\n") - 1);

    for (i = 0; i < mmcf->upstreams.nelts; i++) {
        p = ngx_sprintf(p, "meshgate_upstream_peers{upstream=\"%V\"} %ui\n",
                        &mcfp[i]->prom_name,
                        ngx_http_upstream_mesh_disc_count(mcfp[i]));
    }

    for (k = 0; k < 2; k++) {
        p = ngx_sprintf(p, "# HELP meshgate_upstream_discovery_%s_total "
                        "DNS resolutions%s of mesh_discovery.\n"
                        "# TYPE meshgate_upstream_discovery_%s_total "
                        "counter\n",
                        k ? "failures" : "resolutions",
                        k ? " that failed" : "",
                        k ? "failures" : "resolutions");

        for (i = 0; i < mmcf->upstreams.nelts; i++) {
            mcf = mcfp[i];

            if (mcf->disc == NULL) {
                continue;
            }

            sh = mcf->sh;

            p = ngx_sprintf(p, "meshgate_upstream_discovery_%s_total"
                            "{upstream=\"%V\"} %uA\n",
                            k ? "failures" : "resolutions",
                            &mcf->prom_name,
                            k ? sh->disc_failures : sh->disc_resolutions);
        }
    }

    return p;
}
