
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_MESHGATE_REDIS_INTERNAL_H_INCLUDED_
#define _NGX_MESHGATE_REDIS_INTERNAL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>
#include "ngx_meshgate_redis.h"
#include "ngx_meshgate_redis_reply.h"


/*
 * The Redis client's own definitions, shared by its files:
 *   ngx_meshgate_redis.c           the connection, the command pipeline
 *   ngx_meshgate_redis_conf.c      parameters, checks at configuration time
 *   ngx_meshgate_redis_tls.c       TLS: parameters and handshake
 *   ngx_meshgate_redis_reply.c     the reply limits (pre-scan)
 *   ngx_meshgate_redis_sentinel.c  Sentinel: discovery, +switch-master
 *   ngx_meshgate_redis_cluster.c   Cluster: slot map, node clients, redirects
 */


#define NGX_MESHGATE_REDIS_BACKOFF_MIN   100
#define NGX_MESHGATE_REDIS_BACKOFF_MAX   1000
#define NGX_MESHGATE_REDIS_READ_SIZE     16384

#define NGX_MESHGATE_REDIS_SLOTS         16384
#define NGX_MESHGATE_REDIS_MAX_NODES     64    /* per cluster */


#pragma GCC visibility push(hidden)


struct ngx_meshgate_redis_script_s {
    ngx_str_t                       text;
    u_char                          sha[40];
};


struct ngx_meshgate_redis_cmd_s {
    ngx_queue_t                     queue;
    ngx_meshgate_redis_t           *rd;
    ngx_meshgate_redis_handler_pt   handler;   /* NULL: cancelled */
    void                           *data;
    ngx_pool_cleanup_t             *cleanup;
    ngx_event_t                     timer;

    /* EVALSHA: the formatted command, kept for the EVAL retry */
    ngx_meshgate_redis_script_t    *script;
    char                           *eval;
    size_t                          eval_len;
    size_t                          args_off;
    ngx_uint_t                      argc;
    unsigned                        retried:1;
    unsigned                        redirected:1;
};


struct ngx_meshgate_redis_s {
    /* configuration */
    ngx_str_t                       name;
    struct sockaddr                *sockaddr;
    socklen_t                       socklen;
    ngx_str_t                       user;
    ngx_str_t                       password;
    ngx_str_t                       password_env;
    ngx_int_t                       db;
    ngx_msec_t                      timeout;
    ngx_msec_t                      connect_timeout;
    ngx_str_t                       host;

    /* Sentinel: sentinel=, master=, sentinel_user=, sentinel_password= */
    ngx_array_t                    *sentinels;   /* of ngx_addr_t */
    ngx_str_t                       master;
    ngx_str_t                       sentinel_user;
    ngx_str_t                       sentinel_password;
    ngx_meshgate_redis_t           *sentinel;    /* the client to them */
    ngx_meshgate_redis_t           *subscriber;  /* +switch-master */
    void                          (*push)(ngx_meshgate_redis_t *rd,
                                          redisReply *reply);
    ngx_meshgate_redis_t           *push_data;

    /* Cluster: cluster= (seed nodes) */
    ngx_array_t                    *cluster;     /* of ngx_addr_t */
    ngx_meshgate_redis_t           *control;     /* CLUSTER SLOTS */
    ngx_meshgate_redis_t           *parent;      /* of a node's client */
    ngx_meshgate_redis_ready_pt     ready;
    void                           *ready_data;

    /* reply limits: ngx_meshgate_redis_limit_replies() */
    ngx_meshgate_redis_limits_t     limits;

    /* TLS: tls, tls_verify=, tls_ca=, tls_name=, tls_cert=, tls_key= */
    ngx_ssl_t                      *ssl;
    ngx_int_t                       tls_verify;
    ngx_str_t                       tls_ca;
    ngx_str_t                       tls_name;
    ngx_str_t                       tls_cert;
    ngx_str_t                       tls_key;
    unsigned                        tls:1;

    /* per worker */
    ngx_connection_t               *conn;
    redisReader                    *reader;
    ngx_meshgate_redis_scan_t       scan;
    u_char                         *out;
    size_t                          out_len;
    size_t                          out_sent;
    size_t                          out_size;
    ngx_queue_t                     pending;
    ngx_queue_t                     free;
    ngx_event_t                     connect_timer;
    ngx_meshgate_redis_t          **nodes;
    ngx_uint_t                      nnodes;
    u_char                         *slots;       /* node + 1, or 0 */
    ngx_meshgate_redis_cmd_t       *control_cmd;
    ngx_uint_t                      control_next;
    ngx_uint_t                      control_tries;
    ngx_meshgate_redis_cmd_t       *sentinel_cmd;
    ngx_uint_t                      sentinel_next;   /* to ask first */
    ngx_uint_t                      sentinel_tries;
    ngx_sockaddr_t                  primary;
    socklen_t                       primary_len;
    u_char                          primary_text[NGX_SOCKADDR_STRLEN];
    ngx_meshgate_redis_stats_t      stats;
    ngx_msec_t                      down_until;
    ngx_msec_t                      backoff;
    ngx_uint_t                      generation;
    ngx_uint_t                      handshakes;  /* AUTH/SELECT/ROLE */
    unsigned                        connecting:1;
    unsigned                        late:1;      /* see usable() */
    unsigned                        discovering:1;
    unsigned                        primary_known:1;
    unsigned                        map_known:1;
    unsigned                        down:1;
    unsigned                        initialized:1;
};


/* ngx_meshgate_redis.c: the connection */

ngx_int_t ngx_meshgate_redis_connect(ngx_meshgate_redis_t *rd);
void ngx_meshgate_redis_connected(ngx_meshgate_redis_t *rd);
void ngx_meshgate_redis_close_connection(ngx_meshgate_redis_t *rd);
void ngx_meshgate_redis_disconnect(ngx_meshgate_redis_t *rd,
    ngx_int_t status, const char *why);
ngx_int_t ngx_meshgate_redis_queue(ngx_meshgate_redis_t *rd,
    ngx_pool_t *pool, char *buf, size_t len,
    ngx_meshgate_redis_handler_pt handler, void *data,
    ngx_meshgate_redis_cmd_t **cmdp);
ngx_int_t ngx_meshgate_redis_append(ngx_meshgate_redis_t *rd,
    const void *buf, size_t len);
void ngx_meshgate_redis_post_write(ngx_meshgate_redis_t *rd);
void ngx_meshgate_redis_handshake_handler(void *data,
    ngx_int_t status, redisReply *reply);
void ngx_meshgate_redis_read_handler(ngx_event_t *rev);
void ngx_meshgate_redis_write_handler(ngx_event_t *wev);

/* ngx_meshgate_redis_conf.c: configuration */

ngx_array_t *ngx_meshgate_redis_parse_nodes(ngx_conf_t *cf,
    ngx_str_t *list, in_port_t port);

/* ngx_meshgate_redis_tls.c: TLS */

ngx_int_t ngx_meshgate_redis_parse_tls(ngx_conf_t *cf,
    ngx_meshgate_redis_t *rd, ngx_str_t *param);
char *ngx_meshgate_redis_init_tls(ngx_conf_t *cf,
    ngx_meshgate_redis_t *rd);
ngx_int_t ngx_meshgate_redis_tls_start(ngx_meshgate_redis_t *rd);

/* ngx_meshgate_redis_sentinel.c: Sentinel */

ngx_int_t ngx_meshgate_redis_parse_sentinel(ngx_conf_t *cf,
    ngx_meshgate_redis_t *rd, ngx_str_t *param);
char *ngx_meshgate_redis_init_sentinel(ngx_conf_t *cf,
    ngx_meshgate_redis_t *rd);
ngx_int_t ngx_meshgate_redis_discover(ngx_meshgate_redis_t *rd);
ngx_uint_t ngx_meshgate_redis_not_primary(redisReply *reply);

/* ngx_meshgate_redis_cluster.c: Cluster */

char *ngx_meshgate_redis_init_cluster(ngx_conf_t *cf,
    ngx_meshgate_redis_t *rd);
void ngx_meshgate_redis_close_cluster(ngx_meshgate_redis_t *rd);
ngx_meshgate_redis_t *ngx_meshgate_redis_cluster_node(
    ngx_meshgate_redis_t *rd, u_char *key, size_t len);
ngx_int_t ngx_meshgate_redis_ask_slots(ngx_meshgate_redis_t *rd);
ngx_int_t ngx_meshgate_redis_redirect(ngx_meshgate_redis_t *rd,
    ngx_meshgate_redis_cmd_t *cmd, redisReply *reply);
ngx_int_t ngx_meshgate_redis_parse_addr(u_char *ip, size_t len,
    ngx_int_t port, ngx_sockaddr_t *sa, socklen_t *socklen);


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_REDIS_INTERNAL_H_INCLUDED_ */
