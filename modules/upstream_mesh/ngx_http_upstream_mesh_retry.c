
/*
 * Copyright (C) meshgate contributors
 */


/*
 * mesh_retry and mesh_timeout: the request's own retry conditions, the
 * backoff waits between tries, per-try and whole-request deadlines.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_upstream_mesh.h"


static ngx_int_t ngx_http_upstream_mesh_add_cleanup(ngx_http_request_t *r,
    ngx_http_upstream_mesh_ctx_t *ctx);
static ngx_msec_t ngx_http_upstream_mesh_backoff(
    ngx_http_upstream_mesh_loc_conf_t *lcf, ngx_uint_t n);
static ngx_int_t ngx_http_upstream_mesh_delay_socket(
    ngx_peer_connection_t *pc);
static void ngx_http_upstream_mesh_delay_handler(ngx_event_t *ev);
static void ngx_http_upstream_mesh_delay_cleanup(void *data);
static void ngx_http_upstream_mesh_timeout_handler(ngx_event_t *ev);
static ngx_msec_t ngx_http_upstream_mesh_lcf_timeout(ngx_http_request_t *r);
static ngx_int_t ngx_http_upstream_mesh_retry_after(ngx_http_upstream_t *u);
static char *ngx_http_upstream_mesh_retry_on(ngx_conf_t *cf,
    ngx_http_upstream_mesh_loc_conf_t *lcf, ngx_str_t *list);


void
ngx_http_upstream_mesh_retry_conf(ngx_http_request_t *r,
    ngx_http_upstream_mesh_ctx_t *ctx)
{
    ngx_http_upstream_t                *u;
    ngx_http_upstream_conf_t           *ucf;
    ngx_http_upstream_mesh_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_upstream_mesh_module);

    if (lcf->retry_attempts == 0) {
        return;
    }

    /*
     * mesh_retry replaces proxy_next_upstream for this request: the
     * location's upstream configuration is shared by all requests, so the
     * request gets its own copy with the retry conditions, the number of
     * tries and the per-try timeouts
     */

    u = r->upstream;

    ucf = ngx_palloc(r->pool, sizeof(ngx_http_upstream_conf_t));
    if (ucf == NULL) {
        return;
    }

    *ucf = *u->conf;

    ucf->next_upstream = lcf->retry_mask;

    if (lcf->retry_non_idempotent) {
        ucf->next_upstream |= NGX_HTTP_UPSTREAM_FT_NON_IDEMPOTENT;
    }

    ucf->next_upstream_tries = lcf->retry_attempts;

    if (lcf->retry_per_try_timeout) {
        ucf->connect_timeout = lcf->retry_per_try_timeout;
        ucf->send_timeout = lcf->retry_per_try_timeout;
        ucf->read_timeout = lcf->retry_per_try_timeout;
    }

    u->conf = ucf;

    ctx->lcf = lcf;
    ctx->retry = 1;
    ctx->connect_only = lcf->retry_connect_only;

    /*
     * nginx allows one try per peer; attempts= may ask for more: once the
     * balancer has no untried peer left, the module picks one itself (see
     * ngx_http_upstream_mesh_pick()).  An upstream of one peer has nothing
     * else to try, so its retries go to that peer again (round robin
     * ends them in its free function: ngx_http_upstream_mesh_free_peer()
     * gives them back)
     */

    if (u->peer.tries < lcf->retry_attempts) {
        u->peer.tries = lcf->retry_attempts;
        ctx->single = ctx->mcf->single;
    }

    (void) ngx_http_upstream_mesh_add_cleanup(r, ctx);
}


static ngx_int_t
ngx_http_upstream_mesh_add_cleanup(ngx_http_request_t *r,
    ngx_http_upstream_mesh_ctx_t *ctx)
{
    ngx_pool_cleanup_t  *cln;

    /* the timers of the context go with the request */

    if (ctx->cleanup) {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_upstream_mesh_delay_cleanup;
    cln->data = ctx;
    ctx->cleanup = 1;

    return NGX_OK;
}


ngx_int_t
ngx_http_upstream_mesh_timeout_start(ngx_http_request_t *r,
    ngx_http_upstream_mesh_ctx_t *ctx)
{
    ngx_http_upstream_mesh_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_upstream_mesh_module);

    if (ctx->timeout.timer_set) {
        ngx_del_timer(&ctx->timeout);
    }

    ctx->timeout_at = 0;

    if (lcf->timeout == 0) {
        return NGX_OK;
    }

    if (ngx_http_upstream_mesh_add_cleanup(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    /* each upstream request of r (error_page, X-Accel-Redirect) has one */

    ctx->timeout_at = ngx_current_msec + lcf->timeout;

    ctx->timeout.handler = ngx_http_upstream_mesh_timeout_handler;
    ctx->timeout.data = ctx;
    ctx->timeout.log = r->connection->log;

    ngx_add_timer(&ctx->timeout, lcf->timeout);

    return NGX_OK;
}


/*
 * A retry will follow: its wait, from the backoff, a Retry-After of the
 * failed answer, and what is left of mesh_timeout.
 */

void
ngx_http_upstream_mesh_plan_retry(ngx_http_upstream_mesh_ctx_t *ctx,
    ngx_peer_connection_t *pc, ngx_uint_t answered)
{
    ngx_int_t             ra;
    ngx_msec_t            d;
    ngx_http_upstream_t  *u;

    u = ctx->request->upstream;

    d = ngx_http_upstream_mesh_backoff(ctx->lcf, ctx->attempts);

    if (answered && u->headers_in.status_n) {
        ra = ngx_http_upstream_mesh_retry_after(u);

        /* ra * 1000 > max_backoff, without overflowing */

        if (ra != NGX_ERROR
            && (ngx_msec_t) ra > ctx->lcf->retry_max_backoff / 1000)
        {
            ngx_log_error(NGX_LOG_INFO, pc->log, 0,
                          "mesh retry: Retry-After of %i s is longer than "
                          "max_backoff, not retried", ra);
            pc->tries = 0;

            /* nginx answers with this status: add the Retry-After */

            ctx->final_status = u->headers_in.status_n;
            ctx->final_retry_after = ra;
            return;
        }

        if (ra != NGX_ERROR && (ngx_msec_t) ra * 1000 > d) {
            d = (ngx_msec_t) ra * 1000;
        }
    }

    if (ctx->timeout_at && ngx_current_msec + d >= ctx->timeout_at) {

        if (answered) {

            /*
             * no retry can start before mesh_timeout: the client gets
             * the status of this answer now rather than 504 later
             */

            ngx_log_error(NGX_LOG_ERR, pc->log, 0,
                          "mesh_timeout of %Mms leaves no time for retry "
                          "%ui, answering %ui",
                          ctx->lcf->timeout, ctx->attempts,
                          u->headers_in.status_n);

            ctx->expired = 1;
            pc->tries = 0;
            return;
        }

        /* the wait ends with mesh_timeout, which answers 504 */

        d = ctx->timeout_at > ngx_current_msec
            ? ctx->timeout_at - ngx_current_msec : 0;
    }

    ctx->backoff = d;
}


static ngx_msec_t
ngx_http_upstream_mesh_backoff(ngx_http_upstream_mesh_loc_conf_t *lcf,
    ngx_uint_t n)
{
    ngx_msec_t  b;

    /* retry n waits in [b/2, b], b = min(backoff * 2^(n-1), max_backoff) */

    b = lcf->retry_backoff;

    while (--n && b < lcf->retry_max_backoff) {
        b *= 2;
    }

    if (b > lcf->retry_max_backoff) {
        b = lcf->retry_max_backoff;
    }

    return b / 2 + (b - b / 2 ? (ngx_msec_t) ngx_random() % (b - b / 2 + 1)
                              : 0);
}


/*
 * Backoff.  nginx retries at once: ngx_http_upstream_next() connects to the
 * next peer in the same call.  For a retry, the balancer therefore hands
 * nginx a socket that is not connected yet and answers NGX_AGAIN, as for a
 * connect() in progress; a timer connects it when the backoff is over, and
 * nginx goes on with the write event as usual.  A cached keepalive
 * connection is handed over the same way and its write event is posted
 * when the backoff is over.
 */

ngx_int_t
ngx_http_upstream_mesh_delay(ngx_peer_connection_t *pc,
    ngx_http_upstream_mesh_ctx_t *ctx, ngx_int_t rc)
{
    ngx_msec_t            d;
    ngx_http_upstream_t  *u;

    u = ctx->request->upstream;

    /* the wait was planned when the failed try ended */

    d = ctx->backoff;
    ctx->backoff = 0;

    if (d == 0) {
        return rc;
    }

    if (rc == NGX_OK) {
        if (ngx_http_upstream_mesh_delay_socket(pc) != NGX_OK) {
            return NGX_ERROR;
        }

        ctx->delayed_connect = 1;

    } else {
        ctx->delayed_connect = 0;
    }

    ctx->connect_timeout = u->conf->connect_timeout;
    u->conf->connect_timeout += d;

    /* the cached time may be late after a slow try: the wait starts now */

    ngx_time_update();

    ctx->delay.handler = ngx_http_upstream_mesh_delay_handler;
    ctx->delay.data = ctx;
    ctx->delay.log = pc->log;

    ngx_add_timer(&ctx->delay, d);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "mesh retry %ui after %Mms", ctx->attempts - 1, d);

    return NGX_AGAIN;
}


static ngx_int_t
ngx_http_upstream_mesh_delay_socket(ngx_peer_connection_t *pc)
{
    ngx_socket_t       s;
    ngx_connection_t  *c;

    s = ngx_socket(pc->sockaddr->sa_family, SOCK_STREAM, 0);

    if (s == (ngx_socket_t) -1) {
        ngx_log_error(NGX_LOG_ALERT, pc->log, ngx_socket_errno,
                      ngx_socket_n " failed");
        return NGX_ERROR;
    }

    c = ngx_get_connection(s, pc->log);

    if (c == NULL) {
        if (ngx_close_socket(s) == -1) {
            ngx_log_error(NGX_LOG_ALERT, pc->log, ngx_socket_errno,
                          ngx_close_socket_n " failed");
        }

        return NGX_ERROR;
    }

    c->type = SOCK_STREAM;

    if (ngx_nonblocking(s) == -1) {
        ngx_log_error(NGX_LOG_ALERT, pc->log, ngx_socket_errno,
                      ngx_nonblocking_n " failed");
        ngx_close_connection(c);
        return NGX_ERROR;
    }

    c->recv = ngx_recv;
    c->send = ngx_send;
    c->recv_chain = ngx_recv_chain;
    c->send_chain = ngx_send_chain;
    c->sendfile = 1;

    if (pc->sockaddr->sa_family == AF_UNIX) {
        c->tcp_nopush = NGX_TCP_NOPUSH_DISABLED;
        c->tcp_nodelay = NGX_TCP_NODELAY_DISABLED;
    }

    c->log_error = pc->log_error;
    c->read->log = pc->log;
    c->write->log = pc->log;

    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);
    c->start_time = ngx_current_msec;

    pc->connection = c;

    return NGX_OK;
}


static void
ngx_http_upstream_mesh_delay_handler(ngx_event_t *ev)
{
    ngx_http_upstream_mesh_ctx_t  *ctx = ev->data;

    int                     rc;
    ngx_err_t               err;
    ngx_connection_t       *c;
    ngx_http_upstream_t    *u;
    ngx_peer_connection_t  *pc;

    u = ctx->request->upstream;
    pc = &u->peer;
    c = pc->connection;

    u->conf->connect_timeout = ctx->connect_timeout;

    if (c == NULL) {
        return;
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    ngx_add_timer(c->write, ctx->connect_timeout);

    if (!ctx->delayed_connect) {
        ngx_post_event(c->write, &ngx_posted_events);
        return;
    }

    ctx->delayed_connect = 0;

    if (ngx_add_conn) {
        if (ngx_add_conn(c) == NGX_ERROR) {
            c->write->ready = 1;
            ngx_post_event(c->write, &ngx_posted_events);
            return;
        }
    }

    rc = connect(c->fd, pc->sockaddr, pc->socklen);

    if (rc == -1) {
        err = ngx_socket_errno;

        if (err != NGX_EINPROGRESS) {
            ngx_log_error(NGX_LOG_ERR, c->log, err,
                          "connect() to %V failed", pc->name);

            /* the write handler finds the socket unconnected and fails */

            c->write->ready = 1;
            ngx_post_event(c->write, &ngx_posted_events);
            return;
        }

        if (ngx_add_conn == NULL) {
            if (ngx_handle_read_event(c->read, 0) != NGX_OK
                || ngx_handle_write_event(c->write, 0) != NGX_OK)
            {
                c->write->ready = 1;
                ngx_post_event(c->write, &ngx_posted_events);
            }
        }

        return;
    }

    c->write->ready = 1;
    ngx_post_event(c->write, &ngx_posted_events);
}


void
ngx_http_upstream_mesh_deadline_handler(ngx_event_t *ev)
{
    ngx_http_upstream_mesh_ctx_t  *ctx = ev->data;

    ngx_connection_t     *c;
    ngx_http_upstream_t  *u;

    u = ctx->request->upstream;
    c = u->peer.connection;

    if (c == NULL || u->state == NULL
        || u->state->header_time != (ngx_msec_t) -1)
    {
        /* the answer has begun: the read timeouts apply from now on */
        return;
    }

    /* the error is nginx's "upstream timed out", as for mesh_timeout */

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "mesh retry: per_try_timeout of %Mms expired",
                  ctx->lcf->retry_per_try_timeout);

    /* as if the read timed out: nginx moves on to the next try */

    if (ctx->delay.timer_set) {
        ngx_del_timer(&ctx->delay);
        u->conf->connect_timeout = ctx->connect_timeout;
    }

    c->read->timedout = 1;
    ngx_post_event(c->read, &ngx_posted_events);
}


void
ngx_http_upstream_mesh_delay_cancel(ngx_http_upstream_mesh_ctx_t *ctx)
{
    if (ctx->deadline.timer_set) {
        ngx_del_timer(&ctx->deadline);
    }

    if (ctx->delay.timer_set) {
        ngx_del_timer(&ctx->delay);
        ctx->request->upstream->conf->connect_timeout = ctx->connect_timeout;
    }

    ctx->delayed_connect = 0;
}


static void
ngx_http_upstream_mesh_delay_cleanup(void *data)
{
    ngx_http_upstream_mesh_ctx_t  *ctx = data;

    if (ctx->delay.timer_set) {
        ngx_del_timer(&ctx->delay);
    }

    if (ctx->deadline.timer_set) {
        ngx_del_timer(&ctx->deadline);
    }

    if (ctx->timeout.timer_set) {
        ngx_del_timer(&ctx->timeout);
    }
}


/*
 * mesh_timeout: the deadline of an upstream request, over all its tries
 * and waits, until the response header arrives.  A try in progress or a
 * wait ends as if the read had timed out, and no other try follows: nginx
 * answers 504.
 */

static void
ngx_http_upstream_mesh_timeout_handler(ngx_event_t *ev)
{
    ngx_http_upstream_mesh_ctx_t  *ctx = ev->data;

    ngx_connection_t     *c;
    ngx_http_request_t   *r;
    ngx_http_upstream_t  *u;

    r = ctx->request;
    u = r->upstream;

    if (u == NULL || u != ctx->upstream || r->header_sent) {
        return;
    }

    c = u->peer.connection;

    if (c == NULL || u->state == NULL
        || u->state->header_time != (ngx_msec_t) -1)
    {
        /* done, or the answer has begun: the read timeouts apply */
        return;
    }

    /*
     * nginx logs the error itself, "upstream timed out", when the try
     * ends below; this line only says why, at info, so that the expiry
     * is one error line
     */

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "mesh_timeout of %Mms expired after %ui tries, "
                  "answering 504", ngx_http_upstream_mesh_lcf_timeout(r),
                  ctx->attempts);

    ctx->expired = 1;
    u->peer.tries = 0;

    if (ctx->deadline.timer_set) {
        ngx_del_timer(&ctx->deadline);
    }

    if (ctx->delay.timer_set) {
        ngx_del_timer(&ctx->delay);
        u->conf->connect_timeout = ctx->connect_timeout;
    }

    c->read->timedout = 1;
    ngx_post_event(c->read, &ngx_posted_events);
}


static ngx_msec_t
ngx_http_upstream_mesh_lcf_timeout(ngx_http_request_t *r)
{
    ngx_http_upstream_mesh_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_upstream_mesh_module);

    return lcf->timeout;
}


static ngx_int_t
ngx_http_upstream_mesh_retry_after(ngx_http_upstream_t *u)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    /* Retry-After in seconds; an HTTP date is not honoured */

    part = &u->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NGX_ERROR;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0 || h[i].key.len != sizeof("Retry-After") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Retry-After",
                               sizeof("Retry-After") - 1) != 0)
        {
            continue;
        }

        return ngx_atoi(h[i].value.data, h[i].value.len);
    }
}


char *
ngx_http_upstream_mesh_retry(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_mesh_loc_conf_t  *lcf = conf;

    char        *rv;
    ngx_str_t   *value, s;
    ngx_uint_t   i;

    if (lcf->retry_attempts != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        lcf->retry_attempts = 0;
        return NGX_CONF_OK;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_http_upstream_mesh_key(&value[i], "attempts=")) {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &lcf->retry_attempts)
                != NGX_OK || lcf->retry_attempts < 1
                || lcf->retry_attempts > 100)
            {
                return "has invalid \"attempts\" (1..100)";
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "on=")) {
            s.data = value[i].data + 3;
            s.len = value[i].len - 3;

            rv = ngx_http_upstream_mesh_retry_on(cf, lcf, &s);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "per_try_timeout=")) {
            if (ngx_http_upstream_mesh_msec_arg(cf, &value[i],
                                                &lcf->retry_per_try_timeout)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "backoff=")) {
            if (ngx_http_upstream_mesh_msec_arg(cf, &value[i],
                                                &lcf->retry_backoff)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "max_backoff=")) {
            if (ngx_http_upstream_mesh_msec_arg(cf, &value[i],
                                                &lcf->retry_max_backoff)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_strcmp(value[i].data, "non_idempotent") == 0) {
            lcf->retry_non_idempotent = 1;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (lcf->retry_attempts == NGX_CONF_UNSET_UINT) {
        return "needs \"attempts=\" (or \"off\")";
    }

    if (lcf->retry_backoff != NGX_CONF_UNSET_MSEC
        && lcf->retry_max_backoff != NGX_CONF_UNSET_MSEC
        && lcf->retry_max_backoff < lcf->retry_backoff)
    {
        return "has \"max_backoff\" shorter than \"backoff\"";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_upstream_mesh_retry_on(ngx_conf_t *cf,
    ngx_http_upstream_mesh_loc_conf_t *lcf, ngx_str_t *list)
{
    u_char      *p, *last, *comma;
    ngx_str_t    item;
    ngx_int_t    status;
    ngx_uint_t   mask, connect;

    mask = 0;
    connect = 0;

    p = list->data;
    last = list->data + list->len;

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');

        if (comma == NULL) {
            comma = last;
        }

        item.data = p;
        item.len = comma - p;
        p = comma + 1;

        if (item.len == 3 && ngx_strncmp(item.data, "5xx", 3) == 0) {
            mask |= NGX_HTTP_UPSTREAM_MESH_RETRY_5XX;

        } else if (item.len == 13
                   && ngx_strncmp(item.data, "gateway-error", 13) == 0)
        {
            mask |= NGX_HTTP_UPSTREAM_MESH_RETRY_GW;

        } else if (item.len == 5 && ngx_strncmp(item.data, "reset", 5) == 0) {
            mask |= NGX_HTTP_UPSTREAM_MESH_RETRY_RESET;

        } else if (item.len == 15
                   && ngx_strncmp(item.data, "connect-failure", 15) == 0)
        {
            connect = 1;

        } else {
            if (ngx_http_upstream_mesh_key(&item, "status=")) {
                item.data += 7;
                item.len -= 7;
            }

            status = ngx_atoi(item.data, item.len);

            switch (status) {
            case 500: mask |= NGX_HTTP_UPSTREAM_FT_HTTP_500; break;
            case 502: mask |= NGX_HTTP_UPSTREAM_FT_HTTP_502; break;
            case 503: mask |= NGX_HTTP_UPSTREAM_FT_HTTP_503; break;
            case 504: mask |= NGX_HTTP_UPSTREAM_FT_HTTP_504; break;
            case 403: mask |= NGX_HTTP_UPSTREAM_FT_HTTP_403; break;
            case 404: mask |= NGX_HTTP_UPSTREAM_FT_HTTP_404; break;
            case 429: mask |= NGX_HTTP_UPSTREAM_FT_HTTP_429; break;

            default:
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid retry condition \"%V\" (known: "
                                   "5xx, gateway-error, reset, "
                                   "connect-failure, status=500|502|503|504|"
                                   "403|404|429)", list);
                return NGX_CONF_ERROR;
            }
        }
    }

    if (connect) {
        lcf->retry_connect_only =
                             !(mask & NGX_HTTP_UPSTREAM_MESH_RETRY_RESET);
        mask |= NGX_HTTP_UPSTREAM_MESH_RETRY_RESET;
    }

    if (mask == 0) {
        return "has empty \"on\"";
    }

    lcf->retry_mask = mask;

    return NGX_CONF_OK;
}
