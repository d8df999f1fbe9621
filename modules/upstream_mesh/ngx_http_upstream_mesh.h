
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

    /* mesh_discovery: a slot the resolver fills and retires */
    ngx_uint_t                          dyn;
    ngx_uint_t                          used;
    ngx_uint_t                          gen;
    ngx_uint_t                          weight;
    socklen_t                           socklen;
    ngx_sockaddr_t                      sockaddr;
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

    /* mesh_discovery: the last resolution, shared by all workers */
    ngx_uint_t                          disc_gen;
    ngx_msec_t                          disc_last;
    ngx_msec_t                          disc_last_ok;
    ngx_msec_t                          disc_next;
    time_t                              disc_ttl;
    ngx_int_t                           disc_error;
    ngx_uint_t                          disc_fails_row;
    ngx_uint_t                          disc_truncated;
    ngx_atomic_t                        disc_resolutions;
    ngx_atomic_t                        disc_failures;

    ngx_http_upstream_mesh_peer_sh_t    peers[1];
} ngx_http_upstream_mesh_sh_t;


typedef struct {
    struct sockaddr                    *sockaddr;
    socklen_t                           socklen;
    ngx_str_t                           name;
    ngx_uint_t                          backup;
    ngx_uint_t                          down;
    ngx_uint_t                          dyn;
} ngx_http_upstream_mesh_peer_conf_t;


typedef struct ngx_http_upstream_mesh_srv_conf_s
    ngx_http_upstream_mesh_srv_conf_t;


typedef struct {
    ngx_str_t                           name;
    ngx_str_t                           service;   /* srv: the first labels */
    ngx_str_t                           host;      /* srv: the rest */
    in_port_t                           port;
    ngx_uint_t                          srv;
    ngx_msec_t                          interval;  /* 0: the records' TTL */
    ngx_uint_t                          max_peers;
    ngx_str_t                           resolver_addr;
    ngx_msec_t                          resolver_timeout;
    ngx_resolver_t                     *resolver;
    ngx_sockaddr_t                     *slots;     /* placeholders */
    ngx_uint_t                          nslots;
    ngx_uint_t                          backup;    /* balancer has backups */

    ngx_str_t                           json_name; /* name, escaped */

    ngx_http_upstream_mesh_srv_conf_t  *mcf;
    ngx_event_t                         timer;
    ngx_uint_t                          random_gen;
    void                               *random;    /* random balancer conf */

    /* this worker's keepalive cache of the upstream, swept at changes */
    void                               *keepalive;
    ngx_uint_t                          keepalive_gen;
    ngx_event_t                         keepalive_timer;
} ngx_http_upstream_mesh_disc_t;


struct ngx_http_upstream_mesh_srv_conf_s {
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
    ngx_str_t                           json_name;   /* uscf->host, */
    ngx_str_t                           prom_name;   /* escaped */
    ngx_http_upstream_init_peer_pt      original_init_peer;
    ngx_uint_t                          single;   /* one peer, no backup */

    ngx_array_t                         peers;
    ngx_shm_zone_t                     *shm_zone;
    ngx_slab_pool_t                    *shpool;
    ngx_http_upstream_mesh_sh_t        *sh;

    /* this worker's view of the zone's round-robin peers, by slot */
    ngx_http_upstream_rr_peer_t       **rr;
    ngx_http_upstream_mesh_disc_t      *disc;
};


typedef struct {
    ngx_array_t                         upstreams;
    ngx_int_t                           proxy_index;
    ngx_int_t                           grpc_index;
} ngx_http_upstream_mesh_main_conf_t;


#define NGX_HTTP_UPSTREAM_MESH_RETRY_5XX                                      \
    (NGX_HTTP_UPSTREAM_FT_ERROR|NGX_HTTP_UPSTREAM_FT_TIMEOUT                  \
     |NGX_HTTP_UPSTREAM_FT_INVALID_HEADER|NGX_HTTP_UPSTREAM_FT_HTTP_500       \
     |NGX_HTTP_UPSTREAM_FT_HTTP_502|NGX_HTTP_UPSTREAM_FT_HTTP_503             \
     |NGX_HTTP_UPSTREAM_FT_HTTP_504)

#define NGX_HTTP_UPSTREAM_MESH_RETRY_GW                                       \
    (NGX_HTTP_UPSTREAM_FT_ERROR|NGX_HTTP_UPSTREAM_FT_TIMEOUT                  \
     |NGX_HTTP_UPSTREAM_FT_HTTP_502|NGX_HTTP_UPSTREAM_FT_HTTP_503             \
     |NGX_HTTP_UPSTREAM_FT_HTTP_504)

#define NGX_HTTP_UPSTREAM_MESH_RETRY_RESET                                    \
    (NGX_HTTP_UPSTREAM_FT_ERROR|NGX_HTTP_UPSTREAM_FT_TIMEOUT)


typedef struct {
    ngx_uint_t                          retry_attempts;
    ngx_uint_t                          retry_mask;
    ngx_flag_t                          retry_non_idempotent;
    ngx_flag_t                          retry_connect_only;
    ngx_msec_t                          retry_per_try_timeout;
    ngx_msec_t                          retry_backoff;
    ngx_msec_t                          retry_max_backoff;
    ngx_msec_t                          timeout;
} ngx_http_upstream_mesh_loc_conf_t;


typedef struct {
    ngx_http_upstream_mesh_srv_conf_t  *mcf;
    ngx_http_request_t                 *request;
    void                               *data;

    ngx_event_get_peer_pt               original_get_peer;
    ngx_event_free_peer_pt              original_free_peer;
#if (NGX_HTTP_SSL)
    ngx_event_set_peer_session_pt       original_set_session;
    ngx_event_save_peer_session_pt      original_save_session;
#endif

    ngx_http_upstream_mesh_loc_conf_t  *lcf;
    ngx_http_upstream_t                *upstream;

    ngx_int_t                           peer;
    ngx_uint_t                          peer_state;
    ngx_uint_t                          attempts;
    ngx_uint_t                          budget_hit;

    /* a peer the module chose itself, after the balancer had none left */
    ngx_http_upstream_rr_peers_t       *own_peers;
    ngx_http_upstream_rr_peer_t        *own_peer;
    ngx_uint_t                          own_next;   /* 1 + index, 0: none */

    ngx_event_t                         delay;
    ngx_event_t                         deadline;
    ngx_event_t                         timeout;
    ngx_msec_t                          timeout_at;
    ngx_uint_t                          final_status;
    ngx_int_t                           final_retry_after;
    ngx_msec_t                          connect_timeout;
    ngx_msec_t                          backoff;

    unsigned                            retry:1;
    unsigned                            governed:1;
    unsigned                            single:1;
    unsigned                            connect_only:1;
    unsigned                            counted:1;
    unsigned                            delayed_connect:1;
    unsigned                            cleanup:1;
    unsigned                            expired:1;
} ngx_http_upstream_mesh_ctx_t;


typedef struct {
    ngx_http_upstream_mesh_srv_conf_t  *mcf;
} ngx_http_upstream_mesh_active_t;


/* escaped, a name takes up to 6 times its length ("\u00XX" per byte) */

#define NGX_HTTP_UPSTREAM_MESH_ESC   6


/* a "name=value" parameter of a directive, by its "name=" */

#define ngx_http_upstream_mesh_key(arg, key)                                  \
    ((arg)->len >= sizeof(key) - 1                                            \
     && ngx_strncmp((arg)->data, key, sizeof(key) - 1) == 0)


extern ngx_module_t  ngx_http_upstream_mesh_module;


#pragma GCC visibility push(hidden)

/* ngx_http_upstream_mesh_balancer.c */
ngx_int_t ngx_http_upstream_mesh_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
ngx_int_t ngx_http_upstream_mesh_pick(ngx_http_upstream_mesh_ctx_t *ctx,
    ngx_peer_connection_t *pc);
void ngx_http_upstream_mesh_free_peer(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
void ngx_http_upstream_mesh_decay(
    ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_http_upstream_mesh_peer_sh_t *p, ngx_msec_t now);
ngx_uint_t ngx_http_upstream_mesh_budget_window(
    ngx_http_upstream_mesh_sh_t *sh, ngx_uint_t *requests,
    ngx_uint_t *retries);
ngx_int_t ngx_http_upstream_mesh_preaccess(ngx_http_request_t *r);
ngx_msec_t ngx_http_upstream_mesh_now(void);
void ngx_http_upstream_mesh_apply(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_log_t *log);
void ngx_http_upstream_mesh_health_result(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_uint_t i, ngx_uint_t gen,
    ngx_uint_t ok, ngx_log_t *log);

/* ngx_http_upstream_mesh_retry.c */
void ngx_http_upstream_mesh_retry_conf(ngx_http_request_t *r,
    ngx_http_upstream_mesh_ctx_t *ctx);
ngx_int_t ngx_http_upstream_mesh_timeout_start(ngx_http_request_t *r,
    ngx_http_upstream_mesh_ctx_t *ctx);
void ngx_http_upstream_mesh_plan_retry(
    ngx_http_upstream_mesh_ctx_t *ctx, ngx_peer_connection_t *pc,
    ngx_uint_t answered);
ngx_int_t ngx_http_upstream_mesh_delay(ngx_peer_connection_t *pc,
    ngx_http_upstream_mesh_ctx_t *ctx, ngx_int_t rc);
void ngx_http_upstream_mesh_deadline_handler(ngx_event_t *ev);
void ngx_http_upstream_mesh_delay_cancel(
    ngx_http_upstream_mesh_ctx_t *ctx);
char *ngx_http_upstream_mesh_retry(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_http_upstream_mesh_status.c */
ngx_int_t ngx_http_upstream_mesh_escape_names(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf);
ngx_int_t ngx_http_upstream_mesh_status_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_upstream_mesh_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

/* ngx_http_upstream_mesh_module.c */
ngx_int_t ngx_http_upstream_mesh_uint_arg(ngx_conf_t *cf,
    ngx_str_t *arg, ngx_uint_t *out);
ngx_int_t ngx_http_upstream_mesh_msec_arg(ngx_conf_t *cf,
    ngx_str_t *arg, ngx_msec_t *out);

/* ngx_http_upstream_mesh_health.c */
ngx_int_t ngx_http_upstream_mesh_health_init(ngx_cycle_t *cycle,
    ngx_http_upstream_mesh_main_conf_t *mmcf);

/* ngx_http_upstream_mesh_discovery.c */
char *ngx_http_upstream_mesh_discovery(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_upstream_mesh_disc_conf(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf);
ngx_int_t ngx_http_upstream_mesh_disc_init(ngx_cycle_t *cycle,
    ngx_http_upstream_mesh_main_conf_t *mmcf);
void ngx_http_upstream_mesh_disc_totals(ngx_http_upstream_rr_peers_t *peers);
void ngx_http_upstream_mesh_disc_peer(ngx_http_upstream_mesh_peer_sh_t *p,
    ngx_http_upstream_rr_peer_t *peer);
void ngx_http_upstream_mesh_disc_local(ngx_http_upstream_mesh_srv_conf_t *mcf);
ngx_module_t *ngx_http_upstream_mesh_disc_module(ngx_cycle_t *cycle,
    char *name);
void ngx_http_upstream_mesh_disc_exit(ngx_cycle_t *cycle,
    ngx_http_upstream_mesh_main_conf_t *mmcf);
u_char *ngx_http_upstream_mesh_disc_status(u_char *p,
    ngx_http_upstream_mesh_srv_conf_t *mcf);
u_char *ngx_http_upstream_mesh_disc_metrics(u_char *p,
    ngx_http_upstream_mesh_main_conf_t *mmcf);

/* ngx_http_upstream_mesh_keepalive.c */
ngx_int_t ngx_http_upstream_mesh_ka_init(ngx_cycle_t *cycle,
    ngx_http_upstream_mesh_main_conf_t *mmcf);
void ngx_http_upstream_mesh_ka_check(ngx_http_upstream_mesh_srv_conf_t *mcf);
void ngx_http_upstream_mesh_ka_freed(ngx_http_upstream_mesh_ctx_t *ctx);
void ngx_http_upstream_mesh_ka_sweep(ngx_http_upstream_mesh_srv_conf_t *mcf);

#pragma GCC visibility pop


#endif /* _NGX_HTTP_UPSTREAM_MESH_H_INCLUDED_ */
