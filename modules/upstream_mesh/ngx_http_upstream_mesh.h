
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_HTTP_UPSTREAM_MESH_H_INCLUDED_
#define _NGX_HTTP_UPSTREAM_MESH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HTTP_UPSTREAM_MESH_WINDOW     10
#define NGX_HTTP_UPSTREAM_MESH_W          NGX_HTTP_UPSTREAM_MESH_WINDOW

#define NGX_HTTP_UPSTREAM_MESH_HC_HTTP    1
#define NGX_HTTP_UPSTREAM_MESH_HC_TCP     2

#define NGX_HTTP_UPSTREAM_MESH_PRIMARY    0
#define NGX_HTTP_UPSTREAM_MESH_BACKUP     1
#define NGX_HTTP_UPSTREAM_MESH_PANIC      2


typedef struct {
    u_char                              name[NGX_SOCKADDR_STRLEN];
    size_t                              name_len;
    ngx_uint_t                          backup;
    ngx_uint_t                          cfg_down;

    /* active health checks */
    ngx_uint_t                          unhealthy;
    ngx_uint_t                          hc_passes;
    ngx_uint_t                          hc_fails;
    ngx_msec_t                          hc_next;
    ngx_msec_t                          hc_last;
    ngx_uint_t                          hc_checks;
    ngx_uint_t                          hc_failed;

    /* outlier detection */
    ngx_uint_t                          ejected;
    ngx_msec_t                          eject_until;
    ngx_uint_t                          ejections;
    ngx_uint_t                          multiplier;
    ngx_msec_t                          decay_from;
    ngx_uint_t                          cons_5xx;
    ngx_uint_t                          cons_gw;

    /* failed tries in a row, of any kind: ranks peers for extra tries */
    ngx_uint_t                          cons_fail;

    ngx_atomic_t                        requests;
    ngx_atomic_t                        failures;
} ngx_http_upstream_mesh_peer_sh_t;


typedef struct {
    ngx_uint_t                          npeers;
    ngx_uint_t                          panic;
    ngx_uint_t                          tier;
    ngx_msec_t                          next_expiry;

    ngx_atomic_t                        active;
    ngx_atomic_t                        requests;
    ngx_atomic_t                        retries;
    ngx_atomic_t                        budget_exhausted;
    ngx_atomic_t                        cb_rejected;

    time_t                              budget_start;
    time_t                              win_sec[NGX_HTTP_UPSTREAM_MESH_W];
    ngx_uint_t                          win_req[NGX_HTTP_UPSTREAM_MESH_W];
    ngx_uint_t                          win_retry[NGX_HTTP_UPSTREAM_MESH_W];

    ngx_http_upstream_mesh_peer_sh_t    peers[1];
} ngx_http_upstream_mesh_sh_t;


typedef struct {
    struct sockaddr                    *sockaddr;
    socklen_t                           socklen;
    ngx_str_t                           name;
    ngx_uint_t                          backup;
    ngx_uint_t                          down;
} ngx_http_upstream_mesh_peer_conf_t;


typedef struct {
    /* mesh_health_check */
    ngx_uint_t                          hc_type;
    ngx_str_t                           hc_uri;
    ngx_str_t                           hc_host;
    ngx_msec_t                          hc_interval;
    ngx_msec_t                          hc_timeout;
    ngx_uint_t                          hc_fails;
    ngx_uint_t                          hc_passes;
    ngx_uint_t                          hc_status_min;
    ngx_uint_t                          hc_status_max;
    ngx_regex_t                        *hc_body;
    in_port_t                           hc_port;
    ngx_uint_t                          hc_initial_unhealthy;

    /* mesh_outlier_detection */
    ngx_uint_t                          od_enabled;
    ngx_uint_t                          od_5xx;
    ngx_uint_t                          od_gw;
    ngx_msec_t                          od_base;
    ngx_msec_t                          od_max;
    ngx_uint_t                          od_max_percent;

    /* mesh_retry_budget */
    ngx_uint_t                          budget_percent;
    ngx_uint_t                          budget_min;

    /* mesh_circuit_breaker */
    ngx_uint_t                          cb_max;

    ngx_uint_t                          enabled;
    ngx_str_t                           file;
    ngx_uint_t                          line;

    ngx_http_upstream_srv_conf_t       *uscf;
    ngx_http_upstream_init_peer_pt      original_init_peer;
    ngx_uint_t                          single;   /* one peer, no backup */

    ngx_array_t                         peers;
    ngx_shm_zone_t                     *shm_zone;
    ngx_slab_pool_t                    *shpool;
    ngx_http_upstream_mesh_sh_t        *sh;
} ngx_http_upstream_mesh_srv_conf_t;


typedef struct {
    ngx_array_t                         upstreams;
    ngx_int_t                           proxy_index;
    ngx_int_t                           grpc_index;
} ngx_http_upstream_mesh_main_conf_t;


#pragma GCC visibility push(hidden)

ngx_msec_t ngx_http_upstream_mesh_now(void);
void ngx_http_upstream_mesh_apply(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_log_t *log);
ngx_int_t ngx_http_upstream_mesh_health_init(ngx_cycle_t *cycle,
    ngx_http_upstream_mesh_main_conf_t *mmcf);
void ngx_http_upstream_mesh_health_result(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_uint_t i, ngx_uint_t ok,
    ngx_log_t *log);

#pragma GCC visibility pop


#endif /* _NGX_HTTP_UPSTREAM_MESH_H_INCLUDED_ */
