
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_meshgate_waiter.h"


void
ngx_meshgate_waiter_join(ngx_queue_t *waiters, ngx_meshgate_waiter_t *w,
    ngx_http_request_t *r)
{
    w->request = r;
    w->waiting = 1;
    ngx_queue_insert_tail(waiters, &w->queue);

    /* woken through its write event: run the phases again then */
    r->write_event_handler = ngx_http_core_run_phases;
}


void
ngx_meshgate_waiter_leave(ngx_meshgate_waiter_t *w)
{
    if (w->waiting) {
        ngx_queue_remove(&w->queue);
        w->waiting = 0;
    }
}


void
ngx_meshgate_waiter_wake(ngx_queue_t *waiters, ngx_meshgate_waiter_pt handoff,
    void *data)
{
    ngx_queue_t            *q;
    ngx_event_t            *wev;
    ngx_meshgate_waiter_t  *w;

    while (!ngx_queue_empty(waiters)) {
        q = ngx_queue_head(waiters);
        ngx_queue_remove(q);

        w = ngx_queue_data(q, ngx_meshgate_waiter_t, queue);
        w->waiting = 0;

        if (handoff) {
            handoff(w, data);
        }

        wev = w->request->connection->write;

        /* a timer of the wait (a caller's bound on it) is over */

        if (wev->timer_set) {
            ngx_del_timer(wev);
        }

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, wev->log, 0,
                       "meshgate: waking a waiter");

        ngx_post_event(wev, &ngx_posted_events);
    }
}
