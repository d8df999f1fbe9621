
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_upstream_mesh.h"


#define NGX_HTTP_UPSTREAM_MESH_HC_BUFFER  16384


typedef struct {
    ngx_http_upstream_mesh_srv_conf_t  *mcf;
    ngx_event_t                         timer;
    ngx_msec_t                          tick;
} ngx_http_upstream_mesh_hc_t;


typedef struct {
    ngx_http_upstream_mesh_srv_conf_t  *mcf;
    ngx_uint_t                          index;
    ngx_uint_t                          gen;
    ngx_pool_t                         *pool;
    ngx_log_t                          *log;
    ngx_peer_connection_t               pc;
    ngx_buf_t                          *request;
    ngx_buf_t                          *response;
} ngx_http_upstream_mesh_probe_t;


static void ngx_http_upstream_mesh_hc_tick(ngx_event_t *ev);
static void ngx_http_upstream_mesh_probe_start(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_uint_t i, ngx_log_t *log);
static void ngx_http_upstream_mesh_probe_write(ngx_event_t *wev);
static void ngx_http_upstream_mesh_probe_read(ngx_event_t *rev);
static ngx_int_t ngx_http_upstream_mesh_probe_complete(
    ngx_http_upstream_mesh_probe_t *pr);
static ngx_uint_t ngx_http_upstream_mesh_probe_judge(
    ngx_http_upstream_mesh_probe_t *pr);
static void ngx_http_upstream_mesh_probe_done(
    ngx_http_upstream_mesh_probe_t *pr, ngx_uint_t ok, const char *why);
static ngx_int_t ngx_http_upstream_mesh_probe_request(
    ngx_http_upstream_mesh_probe_t *pr);


ngx_int_t
ngx_http_upstream_mesh_health_init(ngx_cycle_t *cycle,
    ngx_http_upstream_mesh_main_conf_t *mmcf)
{
    ngx_uint_t                           i;
    ngx_http_upstream_mesh_hc_t         *hc;
    ngx_http_upstream_mesh_srv_conf_t  **mcfp, *mcf;

    mcfp = mmcf->upstreams.elts;

    for (i = 0; i < mmcf->upstreams.nelts; i++) {
        mcf = mcfp[i];

        if (mcf->hc_type == 0) {
            continue;
        }

        hc = ngx_pcalloc(cycle->pool, sizeof(ngx_http_upstream_mesh_hc_t));
        if (hc == NULL) {
            return NGX_ERROR;
        }

        /*
         * every worker looks often; a probe slot in shared memory makes
         * sure that each peer is probed by one worker per interval
         */

        hc->mcf = mcf;
        hc->tick = mcf->hc_interval / 4;

        if (hc->tick < 50) {
            hc->tick = 50;

        } else if (hc->tick > 1000) {
            hc->tick = 1000;
        }

        hc->timer.handler = ngx_http_upstream_mesh_hc_tick;
        hc->timer.data = hc;
        hc->timer.log = cycle->log;
        hc->timer.cancelable = 1;

        ngx_add_timer(&hc->timer, 1 + ngx_random() % hc->tick);
    }

    return NGX_OK;
}


static void
ngx_http_upstream_mesh_hc_tick(ngx_event_t *ev)
{
    ngx_http_upstream_mesh_hc_t  *hc = ev->data;

    ngx_msec_t                          now;
    ngx_uint_t                          i, claim;
    ngx_http_upstream_mesh_sh_t        *sh;
    ngx_http_upstream_mesh_peer_sh_t   *p;
    ngx_http_upstream_mesh_srv_conf_t  *mcf;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    mcf = hc->mcf;
    sh = mcf->sh;

    for (i = 0; i < sh->npeers; i++) {
        p = &sh->peers[i];

        if (p->cfg_down || (p->dyn && !p->used)) {
            continue;
        }

        now = ngx_http_upstream_mesh_now();

        ngx_shmtx_lock(&mcf->shpool->mutex);

        claim = (p->hc_next <= now);

        if (claim) {
            p->hc_next = now + mcf->hc_interval;
        }

        ngx_shmtx_unlock(&mcf->shpool->mutex);

        if (claim) {
            ngx_http_upstream_mesh_probe_start(mcf, i, ev->log);
        }
    }

    ngx_add_timer(ev, hc->tick);
}


static void
ngx_http_upstream_mesh_probe_start(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_uint_t i, ngx_log_t *log)
{
    ngx_int_t                            rc;
    ngx_str_t                           *name;
    socklen_t                            socklen;
    ngx_pool_t                          *pool;
    ngx_connection_t                    *c;
    struct sockaddr                     *sa;
    ngx_http_upstream_mesh_probe_t      *pr;
    ngx_http_upstream_mesh_peer_sh_t    *p;
    ngx_http_upstream_mesh_peer_conf_t  *pcf;

    pcf = mcf->peers.elts;
    pcf = &pcf[i];

    pool = ngx_create_pool(1024, log);
    if (pool == NULL) {
        return;
    }

    pr = ngx_pcalloc(pool, sizeof(ngx_http_upstream_mesh_probe_t));
    sa = ngx_palloc(pool, sizeof(ngx_sockaddr_t));
    name = ngx_palloc(pool, sizeof(ngx_str_t));

    if (pr == NULL || sa == NULL || name == NULL) {
        ngx_destroy_pool(pool);
        return;
    }

    pr->mcf = mcf;
    pr->index = i;
    pr->pool = pool;
    pr->log = log;

    p = &mcf->sh->peers[i];

    if (p->dyn) {

        /* a discovered peer: the address the slot holds now */

        name->data = ngx_pnalloc(pool, NGX_SOCKADDR_STRLEN);
        if (name->data == NULL) {
            ngx_destroy_pool(pool);
            return;
        }

        ngx_shmtx_lock(&mcf->shpool->mutex);

        pr->gen = p->gen;
        socklen = p->socklen;
        ngx_memcpy(sa, &p->sockaddr, socklen);
        name->len = p->name_len;
        ngx_memcpy(name->data, p->name, p->name_len);

        ngx_shmtx_unlock(&mcf->shpool->mutex);

    } else {
        pr->gen = p->gen;
        socklen = pcf->socklen;
        ngx_memcpy(sa, pcf->sockaddr, socklen);
        *name = pcf->name;
    }

    if (mcf->hc_port) {
        ngx_inet_set_port(sa, mcf->hc_port);
    }

    if (mcf->hc_type == NGX_HTTP_UPSTREAM_MESH_HC_HTTP
        && ngx_http_upstream_mesh_probe_request(pr) != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return;
    }

    pr->pc.sockaddr = sa;
    pr->pc.socklen = socklen;
    pr->pc.name = name;
    pr->pc.get = ngx_event_get_peer;
    pr->pc.log = log;
    pr->pc.log_error = NGX_ERROR_INFO;

    rc = ngx_event_connect_peer(&pr->pc);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_http_upstream_mesh_probe_done(pr, 0, "connect() failed");
        return;
    }

    c = pr->pc.connection;
    c->data = pr;
    c->log = log;
    c->read->log = log;
    c->write->log = log;
    c->read->handler = ngx_http_upstream_mesh_probe_read;
    c->write->handler = ngx_http_upstream_mesh_probe_write;

    ngx_add_timer(c->read, mcf->hc_timeout);

    if (rc == NGX_OK) {
        ngx_http_upstream_mesh_probe_write(c->write);
    }
}


static ngx_int_t
ngx_http_upstream_mesh_probe_request(ngx_http_upstream_mesh_probe_t *pr)
{
    size_t                              len;
    ngx_str_t                          *host;
    ngx_buf_t                          *b;
    ngx_http_upstream_mesh_srv_conf_t  *mcf;

    mcf = pr->mcf;
    host = mcf->hc_host.len ? &mcf->hc_host : &mcf->uscf->host;

    len = sizeof("GET  HTTP/1.0" CRLF "Host: " CRLF
                 "User-Agent: meshgate-health-check" CRLF
                 "Connection: close" CRLF CRLF)
          + mcf->hc_uri.len + host->len;

    b = ngx_create_temp_buf(pr->pool, len);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_sprintf(b->last, "GET %V HTTP/1.0" CRLF "Host: %V" CRLF
                          "User-Agent: meshgate-health-check" CRLF
                          "Connection: close" CRLF CRLF,
                          &mcf->hc_uri, host);

    pr->request = b;

    pr->response = ngx_create_temp_buf(pr->pool,
                                       NGX_HTTP_UPSTREAM_MESH_HC_BUFFER);
    if (pr->response == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_upstream_mesh_probe_write(ngx_event_t *wev)
{
    int                              err;
    ssize_t                          n;
    socklen_t                        len;
    ngx_buf_t                       *b;
    ngx_connection_t                *c;
    ngx_http_upstream_mesh_probe_t  *pr;

    c = wev->data;
    pr = c->data;

    if (pr->request == NULL || pr->request->pos == pr->request->last) {

        /* TCP check, or the request is out: has the connect succeeded? */

        err = 0;
        len = sizeof(int);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len)
            == -1)
        {
            err = ngx_socket_errno;
        }

        if (err) {
            ngx_http_upstream_mesh_probe_done(pr, 0, "connect() failed");
            return;
        }

        if (pr->request == NULL) {
            ngx_http_upstream_mesh_probe_done(pr, 1, NULL);
            return;
        }

        if (ngx_handle_write_event(wev, 0) != NGX_OK) {
            ngx_http_upstream_mesh_probe_done(pr, 0, "event error");
        }

        return;
    }

    b = pr->request;

    while (b->pos < b->last) {
        n = c->send(c, b->pos, b->last - b->pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_upstream_mesh_probe_done(pr, 0, "event error");
            }

            return;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_http_upstream_mesh_probe_done(pr, 0, "send() failed");
            return;
        }

        b->pos += n;
    }

    if (ngx_handle_write_event(wev, 0) != NGX_OK) {
        ngx_http_upstream_mesh_probe_done(pr, 0, "event error");
        return;
    }

    if (c->read->ready) {
        ngx_http_upstream_mesh_probe_read(c->read);
    }
}


static void
ngx_http_upstream_mesh_probe_read(ngx_event_t *rev)
{
    ssize_t                          n;
    ngx_buf_t                       *b;
    ngx_connection_t                *c;
    ngx_http_upstream_mesh_probe_t  *pr;

    c = rev->data;
    pr = c->data;

    if (rev->timedout) {
        ngx_http_upstream_mesh_probe_done(pr, 0, "timed out");
        return;
    }

    if (pr->request == NULL) {
        /* TCP check: the write handler judges */
        ngx_http_upstream_mesh_probe_write(c->write);
        return;
    }

    b = pr->response;

    for ( ;; ) {

        if (b->last == b->end) {
            ngx_http_upstream_mesh_probe_done(pr,
                                 ngx_http_upstream_mesh_probe_judge(pr),
                                 "bad answer");
            return;
        }

        n = c->recv(c, b->last, b->end - b->last);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_upstream_mesh_probe_done(pr, 0, "event error");
            }

            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_upstream_mesh_probe_done(pr, 0, "recv() failed");
            return;
        }

        if (n == 0) {
            ngx_http_upstream_mesh_probe_done(pr,
                                 ngx_http_upstream_mesh_probe_judge(pr),
                                 "bad answer");
            return;
        }

        b->last += n;

        if (ngx_http_upstream_mesh_probe_complete(pr) == NGX_OK) {
            ngx_http_upstream_mesh_probe_done(pr,
                                 ngx_http_upstream_mesh_probe_judge(pr),
                                 "bad answer");
            return;
        }
    }
}


static ngx_int_t
ngx_http_upstream_mesh_probe_complete(ngx_http_upstream_mesh_probe_t *pr)
{
    u_char     *p, *end, *body;
    ngx_int_t   len;
    ngx_buf_t  *b;

    /* a complete answer with Content-Length, before the peer closes */

    b = pr->response;
    body = ngx_strlcasestrn(b->pos, b->last, (u_char *) CRLF CRLF, 3);

    if (body == NULL) {
        return NGX_AGAIN;
    }

    body += 4;

    p = ngx_strlcasestrn(b->pos, body, (u_char *) CRLF "content-length:",
                         sizeof(CRLF "content-length:") - 2);

    if (p == NULL) {
        return NGX_AGAIN;
    }

    p += sizeof(CRLF "content-length:") - 1;

    while (p < body && *p == ' ') {
        p++;
    }

    end = p;

    while (end < body && *end >= '0' && *end <= '9') {
        end++;
    }

    len = ngx_atoi(p, end - p);

    if (len == NGX_ERROR) {
        return NGX_AGAIN;
    }

    return (b->last - body >= len) ? NGX_OK : NGX_AGAIN;
}


static ngx_uint_t
ngx_http_upstream_mesh_probe_judge(ngx_http_upstream_mesh_probe_t *pr)
{
    u_char                             *p, *body;
    ngx_int_t                           status;
    ngx_str_t                           s;
    ngx_buf_t                          *b;
    ngx_http_upstream_mesh_srv_conf_t  *mcf;

    mcf = pr->mcf;
    b = pr->response;
    p = b->pos;

    if (b->last - p < 12 || ngx_strncmp(p, "HTTP/1.", 7) != 0
        || p[8] != ' ')
    {
        return 0;
    }

    status = ngx_atoi(p + 9, 3);

    if (status == NGX_ERROR
        || (ngx_uint_t) status < mcf->hc_status_min
        || (ngx_uint_t) status > mcf->hc_status_max)
    {
        ngx_log_error(NGX_LOG_INFO, pr->log, 0,
                      "mesh health check of %V: status %i",
                      pr->pc.name, status);
        return 0;
    }

    if (mcf->hc_body == NULL) {
        return 1;
    }

    body = ngx_strlcasestrn(b->pos, b->last, (u_char *) CRLF CRLF, 3);

    if (body == NULL) {
        return 0;
    }

    s.data = body + 4;
    s.len = b->last - s.data;

    if (ngx_regex_exec(mcf->hc_body, &s, NULL, 0) < 0) {
        ngx_log_error(NGX_LOG_INFO, pr->log, 0,
                      "mesh health check of %V: body does not match",
                      pr->pc.name);
        return 0;
    }

    return 1;
}


static void
ngx_http_upstream_mesh_probe_done(ngx_http_upstream_mesh_probe_t *pr,
    ngx_uint_t ok, const char *why)
{
    if (!ok) {
        ngx_log_error(NGX_LOG_INFO, pr->log, 0,
                      "mesh health check of %V failed: %s",
                      pr->pc.name, why);
    }

    if (pr->pc.connection) {
        ngx_close_connection(pr->pc.connection);
        pr->pc.connection = NULL;
    }

    ngx_http_upstream_mesh_health_result(pr->mcf, pr->index, pr->gen, ok,
                                         pr->log);

    ngx_destroy_pool(pr->pool);
}
