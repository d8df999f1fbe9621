
/*
 * Copyright (C) meshgate contributors
 */


/*
 * The balancer wrapper around every upstream's own balancer: peer choice
 * and extra tries, outcomes, outlier ejection, health results, tiers and
 * panic, the retry budget and the circuit breaker.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_upstream_mesh.h"


static void ngx_http_upstream_mesh_count_request(
    ngx_http_upstream_mesh_srv_conf_t *mcf);
static ngx_uint_t ngx_http_upstream_mesh_window_slot(
    ngx_http_upstream_mesh_sh_t *sh);
static ngx_int_t ngx_http_upstream_mesh_get_peer(ngx_peer_connection_t *pc,
    void *data);
static ngx_uint_t ngx_http_upstream_mesh_key_less(ngx_uint_t *a,
    ngx_uint_t *b);
static void ngx_http_upstream_mesh_own_free(ngx_http_upstream_mesh_ctx_t *ctx,
    ngx_peer_connection_t *pc, ngx_uint_t state, ngx_uint_t answered);
static void ngx_http_upstream_mesh_account_try(
    ngx_http_upstream_mesh_ctx_t *ctx, ngx_peer_connection_t *pc);
static void ngx_http_upstream_mesh_free_neutral(
    ngx_http_upstream_mesh_ctx_t *ctx, ngx_peer_connection_t *pc,
    ngx_uint_t state);
static ngx_http_upstream_rr_peers_t *ngx_http_upstream_mesh_rr_peer(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_peer_connection_t *pc,
    ngx_http_upstream_rr_peer_t **peer);
static void ngx_http_upstream_mesh_outcome(ngx_http_upstream_mesh_ctx_t *ctx,
    ngx_uint_t state);
static void ngx_http_upstream_mesh_eject(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_uint_t i, ngx_msec_t now,
    ngx_log_t *log);
static void ngx_http_upstream_mesh_log_tier(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_uint_t from, ngx_uint_t to,
    ngx_log_t *log);
static ngx_int_t ngx_http_upstream_mesh_find_peer(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_peer_connection_t *pc);
static ngx_uint_t ngx_http_upstream_mesh_budget_left(
    ngx_http_upstream_mesh_srv_conf_t *mcf);
#if (NGX_HTTP_SSL)
static ngx_int_t ngx_http_upstream_mesh_set_session(
    ngx_peer_connection_t *pc, void *data);
static void ngx_http_upstream_mesh_save_session(ngx_peer_connection_t *pc,
    void *data);
#endif
static void ngx_http_upstream_mesh_active_cleanup(void *data);


/* the balancer wrapper */

ngx_int_t
ngx_http_upstream_mesh_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_msec_t                          now;
    ngx_http_upstream_t                *u;
    ngx_http_upstream_mesh_sh_t        *sh;
    ngx_http_upstream_mesh_ctx_t       *ctx;
    ngx_http_upstream_mesh_srv_conf_t  *mcf;

    mcf = ngx_http_conf_upstream_srv_conf(us, ngx_http_upstream_mesh_module);

    if (mcf->original_init_peer(r, us) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_upstream_mesh_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_upstream_mesh_ctx_t));
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_upstream_mesh_module);
    }

    u = r->upstream;

    ctx->mcf = mcf;
    ctx->request = r;
    ctx->upstream = u;
    ctx->peer = -1;
    ctx->own_peer = NULL;
    ctx->own_next = 0;
    ctx->retry = 0;
    ctx->single = 0;
    ctx->connect_only = 0;
    ctx->expired = 0;
    ctx->backoff = 0;
    ctx->final_status = 0;
    ctx->data = u->peer.data;
    ctx->original_get_peer = u->peer.get;
    ctx->original_free_peer = u->peer.free;

    u->peer.data = ctx;
    u->peer.get = ngx_http_upstream_mesh_get_peer;
    u->peer.free = ngx_http_upstream_mesh_free_peer;

#if (NGX_HTTP_SSL)
    ctx->original_set_session = u->peer.set_session;
    ctx->original_save_session = u->peer.save_session;

    u->peer.set_session = ngx_http_upstream_mesh_set_session;
    u->peer.save_session = ngx_http_upstream_mesh_save_session;
#endif

    ngx_http_upstream_mesh_retry_conf(r, ctx);

    /*
     * with mesh_retry or outlier detection, an answer is judged by the
     * mesh, not by nginx's max_fails (see the free function)
     */

    ctx->governed = (ctx->retry || mcf->od_enabled == 1);

    if (ngx_http_upstream_mesh_timeout_start(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    sh = mcf->sh;

    if (sh == NULL) {
        return NGX_OK;
    }

    if (!ctx->counted) {
        ctx->counted = 1;
        ngx_http_upstream_mesh_count_request(mcf);
    }

    if (mcf->disc) {
        ngx_http_upstream_mesh_disc_local(mcf);
        ngx_http_upstream_mesh_ka_check(mcf);
    }

    now = ngx_http_upstream_mesh_now();

    if (sh->next_expiry && now >= sh->next_expiry) {
        ngx_shmtx_lock(&mcf->shpool->mutex);
        ngx_http_upstream_mesh_apply(mcf, r->connection->log);
        ngx_shmtx_unlock(&mcf->shpool->mutex);
    }

    return NGX_OK;
}


static void
ngx_http_upstream_mesh_count_request(ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    ngx_http_upstream_mesh_sh_t  *sh;

    sh = mcf->sh;

    (void) ngx_atomic_fetch_add(&sh->requests, 1);

    ngx_shmtx_lock(&mcf->shpool->mutex);

    sh->win_req[ngx_http_upstream_mesh_window_slot(sh)]++;

    if (sh->budget_start == 0) {
        sh->budget_start = ngx_time();
    }

    ngx_shmtx_unlock(&mcf->shpool->mutex);
}


/*
 * The budget window's slot of this second, emptied when it still holds
 * an older second; with the zone mutex held.
 */

static ngx_uint_t
ngx_http_upstream_mesh_window_slot(ngx_http_upstream_mesh_sh_t *sh)
{
    time_t      sec;
    ngx_uint_t  i;

    sec = ngx_time();
    i = sec % NGX_HTTP_UPSTREAM_MESH_WINDOW;

    if (sh->win_sec[i] != sec) {
        sh->win_sec[i] = sec;
        sh->win_req[i] = 0;
        sh->win_retry[i] = 0;
    }

    return i;
}

static ngx_int_t
ngx_http_upstream_mesh_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_upstream_mesh_ctx_t  *ctx = data;

    ngx_int_t  rc;

    ctx->own_peer = NULL;

    rc = ctx->original_get_peer(pc, ctx->data);

    if (rc == NGX_BUSY && ctx->retry) {
        rc = ngx_http_upstream_mesh_pick(ctx, pc);
    }

    if (rc != NGX_OK && rc != NGX_DONE) {
        return rc;
    }

    ctx->attempts++;

    if (ctx->mcf->sh) {
        ngx_http_upstream_mesh_account_try(ctx, pc);
    }

    if (ctx->retry && ctx->attempts > 1 && pc->local == NULL) {
        rc = ngx_http_upstream_mesh_delay(pc, ctx, rc);
    }

    if (ctx->retry && ctx->lcf->retry_per_try_timeout
        && (rc == NGX_OK || rc == NGX_DONE || rc == NGX_AGAIN))
    {
        /* the whole try, up to the response header, has a deadline */

        ctx->deadline.handler = ngx_http_upstream_mesh_deadline_handler;
        ctx->deadline.data = ctx;
        ctx->deadline.log = pc->log;

        ngx_add_timer(&ctx->deadline, ctx->lcf->retry_per_try_timeout
                      + (ctx->delay.timer_set ? ctx->delay.timer.key
                                                - ngx_current_msec : 0));
    }

    return rc;
}


/*
 * The balancer has no peer left for this request: every peer was tried
 * (nginx allows one try per peer), or nginx's max_fails has taken them all
 * out.  A mesh_retry request still has tries: the next one goes to a
 * usable peer, chosen as nginx would, then by record: peers that max_fails
 * has not taken out first, then primaries before backups, then the fewest
 * failed tries in a row (the shared record of the mesh when the upstream
 * has one, else nginx's failure count of the peer).  Ties go round the
 * peers from a random start, so that the extra tries of a request spread
 * over them.  Peers that are down (in the configuration, or taken out by
 * health checks or outlier detection) or at max_conns are skipped.
 */

ngx_int_t
ngx_http_upstream_mesh_pick(ngx_http_upstream_mesh_ctx_t *ctx,
    ngx_peer_connection_t *pc)
{
    time_t                         now;
    ngx_uint_t                     i, n, tier, best_i;
    ngx_uint_t                     key[4], best_key[4];
    ngx_http_upstream_rr_peer_t   *peer, *best;
    ngx_http_upstream_rr_peers_t  *peers, *best_peers;
    ngx_http_upstream_mesh_sh_t   *sh;

    sh = ctx->mcf->sh;

    n = 0;

    for (peers = ctx->mcf->uscf->peer.data; peers; peers = peers->next) {
        n += peers->number;
    }

    if (n == 0) {
        return NGX_BUSY;
    }

    if (ctx->own_next == 0) {
        ctx->own_next = 1 + ngx_random() % n;
    }

    now = ngx_time();
    best = NULL;
    best_peers = NULL;
    best_i = 0;
    i = 0;

    for (peers = ctx->mcf->uscf->peer.data, tier = 0;
         peers;
         peers = peers->next, tier++)
    {
        ngx_http_upstream_rr_peers_rlock(peers);

        for (peer = peers->peer; peer; peer = peer->next, i++) {

            if (peer->down
                || (peer->max_conns && peer->conns >= peer->max_conns))
            {
                continue;
            }

            /* the lowest key wins, compared field by field */

            key[0] = (peer->max_fails && peer->fails >= peer->max_fails
                      && now - peer->checked <= peer->fail_timeout);
            key[1] = tier;
            key[2] = (sh && i < sh->npeers) ? sh->peers[i].cons_fail
                                            : peer->fails;
            key[3] = (i + n - (ctx->own_next - 1) % n) % n;

            if (best == NULL || ngx_http_upstream_mesh_key_less(key, best_key))
            {
                ngx_memcpy(best_key, key, sizeof(key));
                best = peer;
                best_peers = peers;
                best_i = i;
            }
        }

        ngx_http_upstream_rr_peers_unlock(peers);
    }

    if (best == NULL) {
        return NGX_BUSY;
    }

    ctx->own_next = 1 + (best_i + 1) % n;

    ngx_http_upstream_rr_peers_rlock(best_peers);
    ngx_http_upstream_rr_peer_lock(best_peers, best);

    best->conns++;

    ngx_http_upstream_rr_peer_unlock(best_peers, best);
    ngx_http_upstream_rr_peers_unlock(best_peers);

    pc->sockaddr = best->sockaddr;
    pc->socklen = best->socklen;
    pc->name = &best->name;
    pc->cached = 0;
    pc->connection = NULL;

    ctx->own_peers = best_peers;
    ctx->own_peer = best;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "mesh retry: no peer left in the balancer, "
                   "trying %V (%ui failures in a row)", pc->name,
                   best_key[2]);

    return NGX_OK;
}


static ngx_uint_t
ngx_http_upstream_mesh_key_less(ngx_uint_t *a, ngx_uint_t *b)
{
    ngx_uint_t  i;

    for (i = 0; i < 4; i++) {
        if (a[i] != b[i]) {
            return a[i] < b[i];
        }
    }

    return 0;
}


static void
ngx_http_upstream_mesh_own_free(ngx_http_upstream_mesh_ctx_t *ctx,
    ngx_peer_connection_t *pc, ngx_uint_t state, ngx_uint_t answered)
{
    ngx_http_upstream_rr_peer_t   *peer;
    ngx_http_upstream_rr_peers_t  *peers;

    /*
     * the balancer's free function knows nothing of a peer it did not
     * choose: the module does its part (connections, nginx's failure
     * count, the try).  An answer, whatever its status, shows the peer is
     * up again: it is live for the balancer at once.
     */

    peer = ctx->own_peer;
    peers = ctx->own_peers;
    ctx->own_peer = NULL;

    ngx_http_upstream_rr_peers_rlock(peers);
    ngx_http_upstream_rr_peer_lock(peers, peer);

    peer->conns--;

    if (answered) {
        peer->fails = 0;

    } else if (state & NGX_PEER_FAILED) {
        peer->fails++;
        peer->accessed = ngx_time();
        peer->checked = peer->accessed;
    }

    ngx_http_upstream_rr_peer_unlock(peers, peer);
    ngx_http_upstream_rr_peers_unlock(peers);

    if (pc->tries) {
        pc->tries--;
    }
}


static void
ngx_http_upstream_mesh_account_try(ngx_http_upstream_mesh_ctx_t *ctx,
    ngx_peer_connection_t *pc)
{
    ngx_http_upstream_mesh_sh_t        *sh;
    ngx_http_upstream_mesh_peer_sh_t   *p;
    ngx_http_upstream_mesh_srv_conf_t  *mcf;

    mcf = ctx->mcf;
    sh = mcf->sh;

    ctx->peer = ngx_http_upstream_mesh_find_peer(mcf, pc);

    if (ctx->peer >= 0) {
        p = &sh->peers[ctx->peer];

        if (sh->panic) {
            ctx->peer_state = 4;

        } else if (p->ejected) {
            ctx->peer_state = 3;

        } else if (p->unhealthy) {
            ctx->peer_state = 2;

        } else {
            ctx->peer_state = 1;
        }
    }

    if (ctx->attempts > 1) {
        (void) ngx_atomic_fetch_add(&sh->retries, 1);

        ngx_shmtx_lock(&mcf->shpool->mutex);

        sh->win_retry[ngx_http_upstream_mesh_window_slot(sh)]++;

        ngx_shmtx_unlock(&mcf->shpool->mutex);
    }

    if (ctx->retry && pc->tries > 1
        && !ngx_http_upstream_mesh_budget_left(mcf))
    {
        /*
         * no budget for a retry: this try is the last one, and its answer,
         * whatever it is, goes to the client
         */

        pc->tries = 1;

        if (!ctx->budget_hit) {
            ctx->budget_hit = 1;
            (void) ngx_atomic_fetch_add(&sh->budget_exhausted, 1);

            ngx_log_error(NGX_LOG_WARN, pc->log, 0,
                          "mesh retry budget of upstream \"%V\" exhausted, "
                          "request will not be retried",
                          &mcf->uscf->host);
        }
    }
}


void
ngx_http_upstream_mesh_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_upstream_mesh_ctx_t  *ctx = data;

    ngx_uint_t                          tries, answered;
    ngx_http_upstream_t                *u;
    ngx_http_upstream_mesh_srv_conf_t  *mcf;

    mcf = ctx->mcf;
    u = ctx->request->upstream;

    ngx_http_upstream_mesh_delay_cancel(ctx);

    /* this try got a response header: it failed, if at all, by answering */

    answered = (u && u->state && u->state->header_time != (ngx_msec_t) -1);

    if (ctx->peer >= 0 && mcf->sh) {
        ngx_http_upstream_mesh_outcome(ctx, state);
    }

    tries = pc->tries;

    if (ctx->own_peer) {
        ngx_http_upstream_mesh_own_free(ctx, pc, state, answered);

    } else {

        /*
         * A status the mesh retries on is not a failure for nginx's
         * max_fails: a blip that makes every peer answer 5xx at once must
         * not empty the upstream for fail_timeout; taking peers out is
         * the outlier detector's job, within max_ejection_percent.
         * Connection failures (refused, reset, timeouts before the
         * header) still count: the peer did not answer at all.
         */

        if (ctx->governed && answered && (state & NGX_PEER_FAILED)) {
            ngx_http_upstream_mesh_free_neutral(ctx, pc,
                                    (state & ~NGX_PEER_FAILED) | NGX_PEER_NEXT);

        } else {
            ctx->original_free_peer(pc, ctx->data, state);
        }

        ngx_http_upstream_mesh_ka_freed(ctx);

        if (ctx->single && (state & NGX_PEER_FAILED) && tries > 1) {
            pc->tries = tries - 1;
        }
    }

    if (ctx->expired) {
        pc->tries = 0;
        return;
    }

    if (!(state & NGX_PEER_FAILED) || !ctx->retry || pc->tries == 0) {
        return;
    }

    if (ctx->connect_only && u && u->state
        && u->state->connect_time != (ngx_msec_t) -1)
    {
        /* only connection failures are retried, and this one connected */
        pc->tries = 0;
        return;
    }

    ngx_http_upstream_mesh_plan_retry(ctx, pc, answered);
}


/*
 * A governed answered failure is neither a failure nor a success for
 * nginx's max_fails.  The round-robin free function knows only the two:
 * a state without NGX_PEER_FAILED "passes the check" and zeroes the
 * peer's fails when the peer was on probation after fail_timeout
 * (accessed < checked), which would put a failing peer back into the
 * rotation of the ungoverned locations sharing the upstream.  So the
 * count the free function zeroed is given back; only a count it zeroed,
 * as another worker may have changed it meanwhile.
 */

static void
ngx_http_upstream_mesh_free_neutral(ngx_http_upstream_mesh_ctx_t *ctx,
    ngx_peer_connection_t *pc, ngx_uint_t state)
{
    ngx_uint_t                     fails;
    ngx_http_upstream_rr_peer_t   *peer;
    ngx_http_upstream_rr_peers_t  *peers;

    peers = ngx_http_upstream_mesh_rr_peer(ctx->mcf, pc, &peer);

    if (peers == NULL) {
        ctx->original_free_peer(pc, ctx->data, state);
        return;
    }

    ngx_http_upstream_rr_peers_rlock(peers);
    ngx_http_upstream_rr_peer_lock(peers, peer);
    fails = peer->fails;
    ngx_http_upstream_rr_peer_unlock(peers, peer);
    ngx_http_upstream_rr_peers_unlock(peers);

    ctx->original_free_peer(pc, ctx->data, state);

    if (fails == 0) {
        return;
    }

    ngx_http_upstream_rr_peers_rlock(peers);
    ngx_http_upstream_rr_peer_lock(peers, peer);

    if (peer->fails == 0) {
        peer->fails = fails;
    }

    ngx_http_upstream_rr_peer_unlock(peers, peer);
    ngx_http_upstream_rr_peers_unlock(peers);
}


/*
 * The round-robin peer of this try and its set (primary or backup), for
 * the set's locks.  Every round-robin based balancer (hash, ip_hash,
 * least_conn, random, keepalive over them) points pc->name at the name
 * of the peer it chose; a peer the module chose itself is not here.
 */

static ngx_http_upstream_rr_peers_t *
ngx_http_upstream_mesh_rr_peer(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_peer_connection_t *pc, ngx_http_upstream_rr_peer_t **peer)
{
    ngx_http_upstream_rr_peer_t   *p;
    ngx_http_upstream_rr_peers_t  *peers;

    for (peers = mcf->uscf->peer.data; peers; peers = peers->next) {

        ngx_http_upstream_rr_peers_rlock(peers);

        for (p = peers->peer; p; p = p->next) {
            if (pc->name == &p->name) {
                break;
            }
        }

        ngx_http_upstream_rr_peers_unlock(peers);

        if (p) {
            *peer = p;
            return peers;
        }
    }

    return NULL;
}


static void
ngx_http_upstream_mesh_outcome(ngx_http_upstream_mesh_ctx_t *ctx,
    ngx_uint_t state)
{
    ngx_msec_t                          now;
    ngx_uint_t                          status, fail, gw, changed;
    ngx_http_upstream_t                *u;
    ngx_http_upstream_mesh_sh_t        *sh;
    ngx_http_upstream_mesh_peer_sh_t   *p;
    ngx_http_upstream_mesh_srv_conf_t  *mcf;

    mcf = ctx->mcf;
    sh = mcf->sh;
    p = &sh->peers[ctx->peer];

    /*
     * the status of this try: u->headers_in still holds the previous try's
     * answer when connect() fails at once (it is reset after the connect)
     */

    u = ctx->request->upstream;
    status = (u && u->state) ? u->state->status : 0;

    if (status >= 400 && status < 500) {
        fail = 0;
        gw = 0;

    } else if (state & NGX_PEER_FAILED) {
        fail = 1;
        gw = (status == 0 || (status >= 502 && status <= 504));

    } else if (status >= 500) {
        fail = 1;
        gw = (status >= 502 && status <= 504);

    } else if (status >= 100) {
        fail = 0;
        gw = 0;

    } else {
        /* no answer, e.g. the client went away: says nothing of the peer */
        return;
    }

    (void) ngx_atomic_fetch_add(&p->requests, 1);

    if (fail) {
        (void) ngx_atomic_fetch_add(&p->failures, 1);
    }

    if (!fail && p->cons_fail == 0 && p->cons_5xx == 0 && p->cons_gw == 0) {
        return;
    }

    now = ngx_http_upstream_mesh_now();
    changed = 0;

    ngx_shmtx_lock(&mcf->shpool->mutex);

    if (!fail) {
        p->cons_fail = 0;
        p->cons_5xx = 0;
        p->cons_gw = 0;

    } else if (mcf->od_enabled != 1) {
        p->cons_fail++;

    } else {
        p->cons_fail++;
        p->cons_5xx++;

        if (gw) {
            p->cons_gw++;

        } else {
            p->cons_gw = 0;
        }

        if ((mcf->od_5xx && p->cons_5xx >= mcf->od_5xx)
            || (mcf->od_gw && p->cons_gw >= mcf->od_gw))
        {
            p->cons_5xx = 0;
            p->cons_gw = 0;

            if (!p->ejected) {
                ngx_http_upstream_mesh_eject(mcf, ctx->peer, now,
                                             ctx->request->connection->log);
                changed = 1;
            }
        }
    }

    if (changed) {
        ngx_http_upstream_mesh_apply(mcf, ctx->request->connection->log);
    }

    ngx_shmtx_unlock(&mcf->shpool->mutex);
}


static void
ngx_http_upstream_mesh_eject(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_uint_t i, ngx_msec_t now, ngx_log_t *log)
{
    ngx_msec_t                         t;
    ngx_uint_t                         j, n, ejected, allowed;
    ngx_http_upstream_mesh_sh_t       *sh;
    ngx_http_upstream_mesh_peer_sh_t  *p;

    sh = mcf->sh;
    p = &sh->peers[i];

    n = 0;
    ejected = 0;

    for (j = 0; j < sh->npeers; j++) {
        if (sh->peers[j].cfg_down) {
            continue;
        }

        n++;

        if (sh->peers[j].ejected && !sh->peers[j].unhealthy) {
            ejected++;
        }
    }

    /* at least one peer may be ejected, whatever the percentage */

    allowed = n * mcf->od_max_percent / 100;

    if (allowed == 0) {
        allowed = 1;
    }

    if (ejected >= allowed) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "mesh outlier detection: peer %*s of upstream \"%V\" "
                      "not ejected, %ui of %ui peers are ejected already "
                      "(max_ejection_percent=%ui)",
                      p->name_len, p->name, &mcf->uscf->host, ejected, n,
                      mcf->od_max_percent);
        return;
    }

    ngx_http_upstream_mesh_decay(mcf, p, now);

    p->ejections++;
    p->multiplier++;

    t = mcf->od_base * p->multiplier;

    if (t > mcf->od_max || t / p->multiplier != mcf->od_base) {
        t = mcf->od_max;
        p->multiplier--;
    }

    p->ejected = 1;
    p->eject_until = now + t;

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "mesh outlier detection: peer %*s of upstream \"%V\" "
                  "ejected for %Mms (ejection %ui)",
                  p->name_len, p->name, &mcf->uscf->host, t, p->ejections);
}


/*
 * The ejection multiplier goes down by one per base_ejection_time the
 * peer spends out of ejection (as Envoy's does), so that an old flap does
 * not lengthen ejections forever.  Called with the zone mutex held.
 */

void
ngx_http_upstream_mesh_decay(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_http_upstream_mesh_peer_sh_t *p, ngx_msec_t now)
{
    ngx_msec_t  k;

    if (p->ejected || p->multiplier == 0 || mcf->od_base == 0
        || now < p->decay_from + mcf->od_base)
    {
        return;
    }

    k = (now - p->decay_from) / mcf->od_base;

    if (k >= p->multiplier) {
        p->multiplier = 0;
        p->decay_from = now;
        return;
    }

    p->multiplier -= k;
    p->decay_from += k * mcf->od_base;
}


void
ngx_http_upstream_mesh_apply(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_log_t *log)
{
    ngx_msec_t                         now, next;
    ngx_uint_t                         i, n[2], out[2], tier, down;
    ngx_http_upstream_rr_peer_t       *peer;
    ngx_http_upstream_rr_peers_t      *peers;
    ngx_http_upstream_mesh_sh_t       *sh;
    ngx_http_upstream_mesh_peer_sh_t  *p;

    /* called with the zone mutex held */

    sh = mcf->sh;
    now = ngx_http_upstream_mesh_now();
    next = 0;
    n[0] = 0;
    n[1] = 0;
    out[0] = 0;
    out[1] = 0;

    for (i = 0; i < sh->npeers; i++) {
        p = &sh->peers[i];

        if (p->ejected && p->eject_until <= now) {
            p->ejected = 0;
            p->decay_from = p->eject_until;

            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "mesh outlier detection: peer %*s of upstream "
                          "\"%V\" back after ejection",
                          p->name_len, p->name, &mcf->uscf->host);
        }

        ngx_http_upstream_mesh_decay(mcf, p, now);

        if (p->ejected && (next == 0 || p->eject_until < next)) {
            next = p->eject_until;
        }

        if (p->cfg_down || (p->dyn && !p->used)) {
            continue;
        }

        n[p->backup ? 1 : 0]++;

        if (p->ejected || p->unhealthy) {
            out[p->backup ? 1 : 0]++;
        }
    }

    sh->next_expiry = next;

    /*
     * the tier that serves: the primaries while one of them is usable,
     * else the backups while one of them is usable, else panic mode, in
     * which every primary (or every backup, without primaries) takes
     * traffic whatever its state
     */

    if (out[0] < n[0]) {
        tier = NGX_HTTP_UPSTREAM_MESH_PRIMARY;

    } else if (out[1] < n[1]) {
        tier = NGX_HTTP_UPSTREAM_MESH_BACKUP;

    } else if (n[0] + n[1]) {
        tier = NGX_HTTP_UPSTREAM_MESH_PANIC;

    } else {
        tier = NGX_HTTP_UPSTREAM_MESH_PRIMARY;
    }

    ngx_http_upstream_mesh_log_tier(mcf, sh->tier, tier, log);

    sh->tier = tier;
    sh->panic = (tier == NGX_HTTP_UPSTREAM_MESH_PANIC);

    /* the shared round-robin peers: all balancers skip a peer marked down */

    i = 0;

    for (peers = mcf->uscf->peer.data; peers; peers = peers->next) {

        ngx_http_upstream_rr_peers_wlock(peers);

        for (peer = peers->peer; peer && i < sh->npeers; peer = peer->next) {
            p = &sh->peers[i++];

            if (p->dyn) {
                /* a discovered peer: the slot takes its address */
                ngx_http_upstream_mesh_disc_peer(p, peer);

                if (!p->used) {
                    continue;
                }
            }

            down = p->cfg_down
                   || ((p->ejected || p->unhealthy)
                       && !(sh->panic && (p->backup ? n[0] == 0
                                                    : n[0] != 0)));

            peer->down = down;
        }

        if (mcf->disc) {
            ngx_http_upstream_mesh_disc_totals(peers);
        }

        ngx_http_upstream_rr_peers_unlock(peers);
    }
}


static void
ngx_http_upstream_mesh_log_tier(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_uint_t from, ngx_uint_t to, ngx_log_t *log)
{
    if (from == to) {
        return;
    }

    if (to == NGX_HTTP_UPSTREAM_MESH_PANIC) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "mesh: every peer of upstream \"%V\" is unhealthy or "
                      "ejected, panic mode: traffic goes to all of them",
                      &mcf->uscf->host);

    } else if (to == NGX_HTTP_UPSTREAM_MESH_BACKUP) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "mesh: every primary peer of upstream \"%V\" is "
                      "unhealthy or ejected, the backup peers take the "
                      "traffic", &mcf->uscf->host);

    } else {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "mesh: upstream \"%V\" left %s mode",
                      &mcf->uscf->host,
                      from == NGX_HTTP_UPSTREAM_MESH_PANIC ? "panic"
                                                           : "backup");
    }
}


ngx_msec_t
ngx_http_upstream_mesh_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (ngx_msec_t) tp->sec * 1000 + tp->msec;
}


void
ngx_http_upstream_mesh_health_result(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_uint_t i, ngx_uint_t gen, ngx_uint_t ok, ngx_log_t *log)
{
    ngx_uint_t                         changed;
    ngx_http_upstream_mesh_peer_sh_t  *p;

    p = &mcf->sh->peers[i];
    changed = 0;

    ngx_shmtx_lock(&mcf->shpool->mutex);

    if (p->gen != gen || (p->dyn && !p->used)) {
        /* the probe was for a discovered peer that has left the slot */
        ngx_shmtx_unlock(&mcf->shpool->mutex);
        return;
    }

    p->hc_checks++;
    p->hc_last = ngx_http_upstream_mesh_now();

    if (ok) {
        p->hc_fails = 0;
        p->hc_passes++;

        if (p->unhealthy && p->hc_passes >= mcf->hc_passes) {
            p->unhealthy = 0;
            changed = 1;

            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "mesh health check: peer %*s of upstream \"%V\" "
                          "is healthy after %ui passed checks",
                          p->name_len, p->name, &mcf->uscf->host,
                          p->hc_passes);
        }

    } else {
        p->hc_failed++;
        p->hc_passes = 0;
        p->hc_fails++;

        if (!p->unhealthy && p->hc_fails >= mcf->hc_fails) {
            p->unhealthy = 1;
            changed = 1;

            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "mesh health check: peer %*s of upstream \"%V\" "
                          "is unhealthy after %ui failed checks",
                          p->name_len, p->name, &mcf->uscf->host,
                          p->hc_fails);
        }
    }

    if (changed || (mcf->sh->next_expiry
                    && p->hc_last >= mcf->sh->next_expiry))
    {
        ngx_http_upstream_mesh_apply(mcf, log);
    }

    ngx_shmtx_unlock(&mcf->shpool->mutex);
}


static ngx_int_t
ngx_http_upstream_mesh_find_peer(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_peer_connection_t *pc)
{
    ngx_uint_t                           i;
    ngx_http_upstream_mesh_peer_conf_t  *pcf;

    /*
     * the balancers point pc->name at the name of the peer they chose:
     * the slot, even when a discovered peer has the address of another
     */

    if (mcf->rr) {
        for (i = 0; i < mcf->sh->npeers; i++) {
            if (pc->name == &mcf->rr[i]->name) {
                return i;
            }
        }
    }

    pcf = mcf->peers.elts;

    for (i = 0; i < mcf->peers.nelts; i++) {
        if (pcf[i].socklen == pc->socklen
            && ngx_memcmp(pcf[i].sockaddr, pc->sockaddr, pc->socklen) == 0)
        {
            return i;
        }
    }

    return -1;
}


ngx_uint_t
ngx_http_upstream_mesh_budget_window(ngx_http_upstream_mesh_sh_t *sh,
    ngx_uint_t *requests, ngx_uint_t *retries)
{
    time_t      sec, span;
    ngx_uint_t  i;

    /* called with the zone mutex held; returns the seconds covered */

    sec = ngx_time();
    *requests = 0;
    *retries = 0;

    for (i = 0; i < NGX_HTTP_UPSTREAM_MESH_WINDOW; i++) {
        if (sh->win_sec[i] > sec - NGX_HTTP_UPSTREAM_MESH_WINDOW) {
            *requests += sh->win_req[i];
            *retries += sh->win_retry[i];
        }
    }

    span = sh->budget_start ? sec - sh->budget_start + 1 : 1;

    if (span > NGX_HTTP_UPSTREAM_MESH_WINDOW) {
        span = NGX_HTTP_UPSTREAM_MESH_WINDOW;
    }

    return (ngx_uint_t) span;
}


static ngx_uint_t
ngx_http_upstream_mesh_budget_left(ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    ngx_uint_t  requests, retries, span, allowed;

    ngx_shmtx_lock(&mcf->shpool->mutex);

    span = ngx_http_upstream_mesh_budget_window(mcf->sh, &requests, &retries);

    ngx_shmtx_unlock(&mcf->shpool->mutex);

    allowed = requests * mcf->budget_percent / 100 + mcf->budget_min * span;

    return retries < allowed;
}


#if (NGX_HTTP_SSL)

static ngx_int_t
ngx_http_upstream_mesh_set_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_upstream_mesh_ctx_t  *ctx = data;

    /* a peer the balancer did not choose: its sessions are not known */

    if (ctx->original_set_session == NULL || ctx->own_peer) {
        return NGX_OK;
    }

    return ctx->original_set_session(pc, ctx->data);
}


static void
ngx_http_upstream_mesh_save_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_upstream_mesh_ctx_t  *ctx = data;

    if (ctx->original_save_session && ctx->own_peer == NULL) {
        ctx->original_save_session(pc, ctx->data);
    }
}

#endif


/* circuit breaker: requests in flight per upstream */

ngx_int_t
ngx_http_upstream_mesh_preaccess(ngx_http_request_t *r)
{
    ngx_atomic_uint_t                    n;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_upstream_conf_t            *ucf;
    ngx_http_upstream_srv_conf_t        *uscf;
    ngx_http_upstream_mesh_active_t     *act;
    ngx_http_upstream_mesh_srv_conf_t   *mcf;
    ngx_http_upstream_mesh_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_upstream_mesh_module);

    if (mmcf->upstreams.nelts == 0) {
        return NGX_DECLINED;
    }

    /*
     * the location's upstream: proxy and grpc location configurations
     * begin with their ngx_http_upstream_conf_t
     */

    uscf = NULL;

    if (mmcf->proxy_index >= 0) {
        ucf = r->loc_conf[mmcf->proxy_index];
        uscf = ucf->upstream;
    }

    if (uscf == NULL && mmcf->grpc_index >= 0) {
        ucf = r->loc_conf[mmcf->grpc_index];
        uscf = ucf->upstream;
    }

    if (uscf == NULL || uscf->srv_conf == NULL) {
        return NGX_DECLINED;
    }

    mcf = ngx_http_conf_upstream_srv_conf(uscf, ngx_http_upstream_mesh_module);

    if (mcf->sh == NULL) {
        return NGX_DECLINED;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_upstream_mesh_active_cleanup) {
            return NGX_DECLINED;
        }
    }

    cln = ngx_pool_cleanup_add(r->pool,
                               sizeof(ngx_http_upstream_mesh_active_t));
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = ngx_atomic_fetch_add(&mcf->sh->active, 1) + 1;

    act = cln->data;
    act->mcf = mcf;
    cln->handler = ngx_http_upstream_mesh_active_cleanup;

    if (mcf->cb_max && n > mcf->cb_max) {

        /*
         * a rejected request is not in flight to the upstream, however
         * long nginx then takes to discard its body; the cleanup stays,
         * so that the request is not counted again after a redirect
         */

        (void) ngx_atomic_fetch_add(&mcf->sh->active, (ngx_atomic_int_t) -1);
        act->mcf = NULL;

        (void) ngx_atomic_fetch_add(&mcf->sh->cb_rejected, 1);

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "mesh circuit breaker: %uA requests in flight to "
                      "upstream \"%V\", max_requests=%ui, answering 503",
                      n - 1, &uscf->host, mcf->cb_max);

        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    return NGX_DECLINED;
}


static void
ngx_http_upstream_mesh_active_cleanup(void *data)
{
    ngx_http_upstream_mesh_active_t  *act = data;

    if (act->mcf) {
        (void) ngx_atomic_fetch_add(&act->mcf->sh->active,
                                    (ngx_atomic_int_t) -1);
    }
}
