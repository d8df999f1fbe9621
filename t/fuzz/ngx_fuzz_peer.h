
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_FUZZ_PEER_H_INCLUDED_
#define _NGX_FUZZ_PEER_H_INCLUDED_


#include "ngx_fuzz.h"


/*
 * The fake peer of the harnesses of network clients (redis,
 * redis_cluster, health): ngx_event_connect_peer() makes a connection
 * whose recv() hands out ngx_fuzz_peer.in, ngx_fuzz_peer.chunk bytes at a
 * time, and then answers ngx_fuzz_peer.end (NGX_AGAIN: a silent peer, 0:
 * a peer that closes); its send() takes everything.  It defines nginx's
 * functions: one harness file includes it, after the sources it fuzzes.
 */

typedef struct {
    u_char            *in;
    size_t             left;
    size_t             chunk;
    ssize_t            end;
    ngx_uint_t         read_ready;   /* the read event starts ready */
    ngx_connection_t  *conn;         /* the last one made, until closed */
} ngx_fuzz_peer_t;


static ngx_fuzz_peer_t  ngx_fuzz_peer;


static ssize_t
ngx_fuzz_peer_recv(ngx_connection_t *c, u_char *buf, size_t size)
{
    size_t  n;

    if (ngx_fuzz_peer.left == 0) {
        return ngx_fuzz_peer.end;
    }

    n = ngx_min(ngx_min(size, ngx_fuzz_peer.chunk), ngx_fuzz_peer.left);

    ngx_memcpy(buf, ngx_fuzz_peer.in, n);
    ngx_fuzz_peer.in += n;
    ngx_fuzz_peer.left -= n;

    return n;
}


static ssize_t
ngx_fuzz_peer_send(ngx_connection_t *c, u_char *buf, size_t size)
{
    return size;
}


ngx_int_t
ngx_event_connect_peer(ngx_peer_connection_t *pc)
{
    ngx_connection_t  *c;

    c = calloc(1, sizeof(ngx_connection_t));
    c->read = calloc(1, sizeof(ngx_event_t));
    c->write = calloc(1, sizeof(ngx_event_t));

    c->read->data = c;
    c->read->log = pc->log;
    c->read->ready = ngx_fuzz_peer.read_ready;
    c->write->data = c;
    c->write->log = pc->log;
    c->write->ready = 1;
    c->recv = ngx_fuzz_peer_recv;
    c->send = ngx_fuzz_peer_send;
    c->log = pc->log;
    c->fd = -1;

    pc->connection = c;
    ngx_fuzz_peer.conn = c;

    return NGX_OK;
}


void
ngx_close_connection(ngx_connection_t *c)
{
    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    if (ngx_fuzz_peer.conn == c) {
        ngx_fuzz_peer.conn = NULL;
    }

    free(c->read);
    free(c->write);
    free(c);
}


ngx_int_t
ngx_event_get_peer(ngx_peer_connection_t *pc, void *data)
{
    return NGX_OK;
}


#endif /* _NGX_FUZZ_PEER_H_INCLUDED_ */
