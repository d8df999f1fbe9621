
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_MESHGATE_WAITER_H_INCLUDED_
#define _NGX_MESHGATE_WAITER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/*
 * Single flight: while one request of a worker asks someone (a JWKS, an
 * introspection endpoint) for an answer, other requests that need the
 * same answer wait in the leader's queue instead of asking again, and are
 * woken (their write event posted, so that they run their phases again)
 * when it comes or when the leader goes away.  A waiter sits in the
 * request's pool: it must leave the queue (ngx_meshgate_waiter_leave())
 * when its request does, from a pool cleanup.  Private copies, hidden
 * symbols.
 */

#pragma GCC visibility push(hidden)


typedef struct {
    ngx_queue_t                      queue;
    ngx_http_request_t              *request;
    ngx_uint_t                       waiting;
} ngx_meshgate_waiter_t;

/* hands what the leader learnt to one waiter, before it is woken */
typedef void (*ngx_meshgate_waiter_pt)(ngx_meshgate_waiter_t *w,
    void *data);


/* r waits in waiters (a queue the caller initialized) */
void ngx_meshgate_waiter_join(ngx_queue_t *waiters, ngx_meshgate_waiter_t *w,
    ngx_http_request_t *r);

/* w leaves its queue, if it still waits */
void ngx_meshgate_waiter_leave(ngx_meshgate_waiter_t *w);

/*
 * Empties waiters: each one is handed data through handoff (if not NULL)
 * and woken.
 */
void ngx_meshgate_waiter_wake(ngx_queue_t *waiters,
    ngx_meshgate_waiter_pt handoff, void *data);


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_WAITER_H_INCLUDED_ */
