
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_upstream_mesh.h"
#include "ngx_meshgate_prometheus.h"
#include "ngx_meshgate_http.h"


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


static ngx_int_t ngx_http_upstream_mesh_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static void ngx_http_upstream_mesh_retry_conf(ngx_http_request_t *r,
    ngx_http_upstream_mesh_ctx_t *ctx);
static void ngx_http_upstream_mesh_count_request(
    ngx_http_upstream_mesh_srv_conf_t *mcf);
static ngx_int_t ngx_http_upstream_mesh_add_cleanup(ngx_http_request_t *r,
    ngx_http_upstream_mesh_ctx_t *ctx);
static ngx_int_t ngx_http_upstream_mesh_timeout_start(ngx_http_request_t *r,
    ngx_http_upstream_mesh_ctx_t *ctx);
static ngx_int_t ngx_http_upstream_mesh_get_peer(ngx_peer_connection_t *pc,
    void *data);
static ngx_int_t ngx_http_upstream_mesh_pick(ngx_http_upstream_mesh_ctx_t *ctx,
    ngx_peer_connection_t *pc);
static ngx_uint_t ngx_http_upstream_mesh_key_less(ngx_uint_t *a,
    ngx_uint_t *b);
static void ngx_http_upstream_mesh_free_neutral(
    ngx_http_upstream_mesh_ctx_t *ctx, ngx_peer_connection_t *pc,
    ngx_uint_t state);
static ngx_http_upstream_rr_peers_t *ngx_http_upstream_mesh_rr_peer(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_peer_connection_t *pc,
    ngx_http_upstream_rr_peer_t **peer);
static void ngx_http_upstream_mesh_own_free(ngx_http_upstream_mesh_ctx_t *ctx,
    ngx_peer_connection_t *pc, ngx_uint_t state, ngx_uint_t answered);
static void ngx_http_upstream_mesh_account_try(
    ngx_http_upstream_mesh_ctx_t *ctx, ngx_peer_connection_t *pc);
static void ngx_http_upstream_mesh_free_peer(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
static void ngx_http_upstream_mesh_plan_retry(
    ngx_http_upstream_mesh_ctx_t *ctx, ngx_peer_connection_t *pc,
    ngx_uint_t answered);
static ngx_msec_t ngx_http_upstream_mesh_backoff(
    ngx_http_upstream_mesh_loc_conf_t *lcf, ngx_uint_t n);
static void ngx_http_upstream_mesh_outcome(ngx_http_upstream_mesh_ctx_t *ctx,
    ngx_uint_t state);
static void ngx_http_upstream_mesh_eject(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_uint_t i, ngx_msec_t now,
    ngx_log_t *log);
static void ngx_http_upstream_mesh_decay(
    ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_http_upstream_mesh_peer_sh_t *p, ngx_msec_t now);
static void ngx_http_upstream_mesh_log_tier(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_uint_t from, ngx_uint_t to,
    ngx_log_t *log);
static ngx_int_t ngx_http_upstream_mesh_find_peer(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_peer_connection_t *pc);
static ngx_uint_t ngx_http_upstream_mesh_budget_left(
    ngx_http_upstream_mesh_srv_conf_t *mcf);
static ngx_uint_t ngx_http_upstream_mesh_budget_window(
    ngx_http_upstream_mesh_sh_t *sh, ngx_uint_t *requests,
    ngx_uint_t *retries);
static ngx_int_t ngx_http_upstream_mesh_delay(ngx_peer_connection_t *pc,
    ngx_http_upstream_mesh_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_upstream_mesh_delay_socket(
    ngx_peer_connection_t *pc);
static void ngx_http_upstream_mesh_delay_handler(ngx_event_t *ev);
static void ngx_http_upstream_mesh_delay_cleanup(void *data);
static void ngx_http_upstream_mesh_deadline_handler(ngx_event_t *ev);
static void ngx_http_upstream_mesh_timeout_handler(ngx_event_t *ev);
static ngx_msec_t ngx_http_upstream_mesh_lcf_timeout(ngx_http_request_t *r);
static void ngx_http_upstream_mesh_delay_cancel(
    ngx_http_upstream_mesh_ctx_t *ctx);
static ngx_int_t ngx_http_upstream_mesh_retry_after(ngx_http_upstream_t *u);
#if (NGX_HTTP_SSL)
static ngx_int_t ngx_http_upstream_mesh_set_session(
    ngx_peer_connection_t *pc, void *data);
static void ngx_http_upstream_mesh_save_session(ngx_peer_connection_t *pc,
    void *data);
#endif

static ngx_int_t ngx_http_upstream_mesh_header_filter(ngx_http_request_t *r);

static ngx_int_t ngx_http_upstream_mesh_preaccess(ngx_http_request_t *r);
static void ngx_http_upstream_mesh_active_cleanup(void *data);
static ngx_int_t ngx_http_upstream_mesh_status_handler(ngx_http_request_t *r);
static ngx_buf_t *ngx_http_upstream_mesh_status_json(ngx_pool_t *pool,
    ngx_http_upstream_mesh_main_conf_t *mmcf);
static const char *ngx_http_upstream_mesh_peer_state_name(
    ngx_http_upstream_mesh_sh_t *sh, ngx_http_upstream_mesh_peer_sh_t *p);

static ngx_int_t ngx_http_upstream_mesh_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static ngx_int_t ngx_http_upstream_mesh_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_upstream_mesh_init_state(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_http_upstream_mesh_sh_t *sh);
static ngx_int_t ngx_http_upstream_mesh_add_zone(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf);
static ngx_int_t ngx_http_upstream_mesh_collect_peers(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf);
static void ngx_http_upstream_mesh_init_defaults(
    ngx_http_upstream_mesh_srv_conf_t *mcf);

static ngx_int_t ngx_http_upstream_mesh_printable(ngx_conf_t *cf,
    ngx_str_t *arg);
static ngx_int_t ngx_http_upstream_mesh_hc_status(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_str_t *arg);
static ngx_int_t ngx_http_upstream_mesh_hc_body(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_str_t *arg);
static char *ngx_http_upstream_mesh_health_check(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_upstream_mesh_outlier(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_upstream_mesh_budget(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_upstream_mesh_breaker(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_upstream_mesh_retry(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_upstream_mesh_retry_on(ngx_conf_t *cf,
    ngx_http_upstream_mesh_loc_conf_t *lcf, ngx_str_t *list);
static char *ngx_http_upstream_mesh_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_upstream_mesh_mark(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf);
static ngx_str_t ngx_http_upstream_mesh_arg_value(ngx_str_t *arg);
static ngx_int_t ngx_http_upstream_mesh_uint_arg(ngx_conf_t *cf,
    ngx_str_t *arg, ngx_uint_t *out);
static ngx_int_t ngx_http_upstream_mesh_msec_arg(ngx_conf_t *cf,
    ngx_str_t *arg, ngx_msec_t *out);

static ngx_int_t ngx_http_upstream_mesh_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_upstream_mesh_postconf(ngx_conf_t *cf);
static void *ngx_http_upstream_mesh_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_upstream_mesh_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_upstream_mesh_create_srv_conf(ngx_conf_t *cf);
static void *ngx_http_upstream_mesh_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_upstream_mesh_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_upstream_mesh_init_process(ngx_cycle_t *cycle);
static void ngx_http_upstream_mesh_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_upstream_mesh_rr_index(ngx_cycle_t *cycle,
    ngx_http_upstream_mesh_srv_conf_t *mcf);

ngx_chain_t *ngx_http_upstream_mesh_prometheus(ngx_pool_t *pool,
    ngx_log_t *log);


static ngx_command_t  ngx_http_upstream_mesh_commands[] = {

    { ngx_string("mesh_health_check"),
      NGX_HTTP_UPS_CONF|NGX_CONF_ANY,
      ngx_http_upstream_mesh_health_check,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_outlier_detection"),
      NGX_HTTP_UPS_CONF|NGX_CONF_ANY,
      ngx_http_upstream_mesh_outlier,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_retry_budget"),
      NGX_HTTP_UPS_CONF|NGX_CONF_1MORE,
      ngx_http_upstream_mesh_budget,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_discovery"),
      NGX_HTTP_UPS_CONF|NGX_CONF_1MORE,
      ngx_http_upstream_mesh_discovery,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_circuit_breaker"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_http_upstream_mesh_breaker,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_retry"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_upstream_mesh_retry,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_upstream_mesh_loc_conf_t, timeout),
      NULL },

    { ngx_string("mesh_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_upstream_mesh_status,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_upstream_mesh_module_ctx = {
    ngx_http_upstream_mesh_add_variables,  /* preconfiguration */
    ngx_http_upstream_mesh_postconf,       /* postconfiguration */

    ngx_http_upstream_mesh_create_main_conf, /* create main configuration */
    ngx_http_upstream_mesh_init_main_conf, /* init main configuration */

    ngx_http_upstream_mesh_create_srv_conf, /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_upstream_mesh_create_loc_conf, /* create location configuration */
    ngx_http_upstream_mesh_merge_loc_conf  /* merge location configuration */
};


ngx_module_t  ngx_http_upstream_mesh_module = {
    NGX_MODULE_V1,
    &ngx_http_upstream_mesh_module_ctx,    /* module context */
    ngx_http_upstream_mesh_commands,       /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_upstream_mesh_init_process,   /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_upstream_mesh_exit_process,   /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_upstream_mesh_vars[] = {

    { ngx_string("mesh_attempts"), NULL, ngx_http_upstream_mesh_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("mesh_retries"), NULL, ngx_http_upstream_mesh_variable,
      1, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("mesh_peer_state"), NULL, ngx_http_upstream_mesh_variable,
      2, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


static ngx_str_t  ngx_http_upstream_mesh_state_names[] = {
    ngx_string("-"),
    ngx_string("healthy"),
    ngx_string("unhealthy"),
    ngx_string("ejected"),
    ngx_string("panic")
};


/* the balancer wrapper */

static ngx_int_t
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


static ngx_int_t
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


static void
ngx_http_upstream_mesh_count_request(ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    time_t                        sec;
    ngx_uint_t                    i;
    ngx_http_upstream_mesh_sh_t  *sh;

    sh = mcf->sh;

    (void) ngx_atomic_fetch_add(&sh->requests, 1);

    sec = ngx_time();
    i = sec % NGX_HTTP_UPSTREAM_MESH_WINDOW;

    ngx_shmtx_lock(&mcf->shpool->mutex);

    if (sh->win_sec[i] != sec) {
        sh->win_sec[i] = sec;
        sh->win_req[i] = 0;
        sh->win_retry[i] = 0;
    }

    sh->win_req[i]++;

    if (sh->budget_start == 0) {
        sh->budget_start = sec;
    }

    ngx_shmtx_unlock(&mcf->shpool->mutex);
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

static ngx_int_t
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
    time_t                              sec;
    ngx_uint_t                          i;
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

        sec = ngx_time();
        i = sec % NGX_HTTP_UPSTREAM_MESH_WINDOW;

        ngx_shmtx_lock(&mcf->shpool->mutex);

        if (sh->win_sec[i] != sec) {
            sh->win_sec[i] = sec;
            sh->win_req[i] = 0;
            sh->win_retry[i] = 0;
        }

        sh->win_retry[i]++;

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


static void
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

/*
 * A retry will follow: its wait, from the backoff, a Retry-After of the
 * failed answer, and what is left of mesh_timeout.
 */

static void
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

static void
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


static ngx_uint_t
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


/*
 * Backoff.  nginx retries at once: ngx_http_upstream_next() connects to the
 * next peer in the same call.  For a retry, the balancer therefore hands
 * nginx a socket that is not connected yet and answers NGX_AGAIN, as for a
 * connect() in progress; a timer connects it when the backoff is over, and
 * nginx goes on with the write event as usual.  A cached keepalive
 * connection is handed over the same way and its write event is posted
 * when the backoff is over.
 */

static ngx_int_t
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


static void
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


static void
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


/*
 * When a Retry-After longer than max_backoff stops the retries, nginx
 * answers with the peer's status itself; the client gets the Retry-After
 */

static ngx_int_t
ngx_http_upstream_mesh_header_filter(ngx_http_request_t *r)
{
    ngx_table_elt_t               *h;
    ngx_http_upstream_mesh_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_upstream_mesh_module);

    if (ctx == NULL || ctx->final_status == 0
        || r->headers_out.status != ctx->final_status)
    {
        return ngx_http_next_header_filter(r);
    }

    ctx->final_status = 0;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");

    h->value.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (h->value.data == NULL) {
        return NGX_ERROR;
    }

    h->value.len = ngx_sprintf(h->value.data, "%i", ctx->final_retry_after)
                   - h->value.data;

    return ngx_http_next_header_filter(r);
}


/* circuit breaker: requests in flight per upstream */

static ngx_int_t
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


/* mesh_status */

static ngx_int_t
ngx_http_upstream_mesh_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                            rc;
    ngx_buf_t                           *b;
    ngx_chain_t                          out;
    ngx_http_upstream_mesh_main_conf_t  *mmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_upstream_mesh_module);

    b = ngx_http_upstream_mesh_status_json(r->pool, mmcf);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static const char *
ngx_http_upstream_mesh_peer_state_name(ngx_http_upstream_mesh_sh_t *sh,
    ngx_http_upstream_mesh_peer_sh_t *p)
{
    if (p->cfg_down) {
        return "down";
    }

    if (p->ejected) {
        return "ejected";
    }

    if (p->unhealthy) {
        return "unhealthy";
    }

    return "healthy";
}


static ngx_buf_t *
ngx_http_upstream_mesh_status_json(ngx_pool_t *pool,
    ngx_http_upstream_mesh_main_conf_t *mmcf)
{
    size_t                               len;
    ngx_buf_t                           *b;
    ngx_msec_t                           now, until;
    ngx_uint_t                           i, j, requests, retries, span;
    ngx_uint_t                           allowed, first;
    ngx_http_upstream_mesh_sh_t         *sh;
    ngx_http_upstream_mesh_peer_sh_t    *p;
    ngx_http_upstream_mesh_srv_conf_t  **mcfp, *mcf;

    mcfp = mmcf->upstreams.elts;

    len = sizeof("{\"upstreams\":[]}\n");

    for (i = 0; i < mmcf->upstreams.nelts; i++) {
        len += 2048 + 2 * mcfp[i]->uscf->host.len
               + mcfp[i]->sh->npeers * (1024 + NGX_SOCKADDR_STRLEN)
               + (mcfp[i]->disc ? mcfp[i]->disc->name.len : 0);
    }

    b = ngx_create_temp_buf(pool, len);
    if (b == NULL) {
        return NULL;
    }

    now = ngx_http_upstream_mesh_now();

    b->last = ngx_cpymem(b->last, "{\"upstreams\":[", 14);

    for (i = 0; i < mmcf->upstreams.nelts; i++) {
        mcf = mcfp[i];
        sh = mcf->sh;

        ngx_shmtx_lock(&mcf->shpool->mutex);

        if (sh->next_expiry && now >= sh->next_expiry) {
            ngx_http_upstream_mesh_apply(mcf, ngx_cycle->log);
        }

        span = ngx_http_upstream_mesh_budget_window(sh, &requests, &retries);
        allowed = requests * mcf->budget_percent / 100
                  + mcf->budget_min * span;

        b->last = ngx_sprintf(b->last,
                     "%s{\"name\":\"%V\",\"panic\":%s,\"tier\":\"%s\","
                     "\"active\":%uA,"
                     "\"requests\":%uA,\"retries\":%uA,"
                     "\"budget_exhausted\":%uA,"
                     "\"circuit_breaker_rejected\":%uA,"
                     "\"max_requests\":%ui,"
                     "\"budget\":{\"percent\":%ui,\"min_per_second\":%ui,"
                     "\"window_requests\":%ui,\"window_retries\":%ui,"
                     "\"allowed\":%ui}",
                     i ? "," : "", &mcf->uscf->host,
                     sh->panic ? "true" : "false",
                     sh->tier == NGX_HTTP_UPSTREAM_MESH_PANIC ? "panic"
                     : sh->tier == NGX_HTTP_UPSTREAM_MESH_BACKUP ? "backup"
                     : "primary",
                     sh->active, sh->requests,
                     sh->retries, sh->budget_exhausted, sh->cb_rejected,
                     mcf->cb_max, mcf->budget_percent, mcf->budget_min,
                     requests, retries, allowed);

        b->last = ngx_http_upstream_mesh_disc_status(b->last, mcf);
        b->last = ngx_cpymem(b->last, ",\"peers\":[", 10);

        for (j = 0, first = 1; j < sh->npeers; j++) {
            p = &sh->peers[j];
            until = p->ejected ? p->eject_until : 0;

            if (p->dyn && !p->used) {
                continue;
            }

            ngx_http_upstream_mesh_decay(mcf, p, now);

            b->last = ngx_sprintf(b->last,
                     "%s{\"name\":\"%*s\",\"backup\":%s,\"state\":\"%s\","
                     "\"health\":\"%s\",\"ejected\":%s,"
                     "\"ejected_until_ms\":%M,\"ejections\":%ui,"
                     "\"ejection_multiplier\":%ui,"
                     "\"requests\":%uA,\"failures\":%uA,"
                     "\"consecutive_failures\":%ui,"
                     "\"consecutive_5xx\":%ui,\"consecutive_gateway\":%ui,"
                     "\"checks\":%ui,\"check_failures\":%ui,"
                     "\"source\":\"%s\"}",
                     first ? "" : ",", p->name_len, p->name,
                     p->backup ? "true" : "false",
                     ngx_http_upstream_mesh_peer_state_name(sh, p),
                     mcf->hc_type ? (p->unhealthy ? "unhealthy" : "healthy")
                                  : "unchecked",
                     p->ejected ? "true" : "false", until, p->ejections,
                     p->multiplier, p->requests, p->failures, p->cons_fail,
                     p->cons_5xx, p->cons_gw,
                     p->hc_checks, p->hc_failed,
                     p->dyn ? "dns" : "static");

            first = 0;
        }

        ngx_shmtx_unlock(&mcf->shpool->mutex);

        b->last = ngx_cpymem(b->last, "]}", 2);
    }

    b->last = ngx_cpymem(b->last, "]}\n", 3);

    return b;
}


/* the metrics module's provider (see ngx_meshgate_prometheus.h) */

static const char  *ngx_http_upstream_mesh_peer_metrics[] = {
    "# HELP meshgate_upstream_peer_healthy Whether the peer gets traffic "
    "(1) or is unhealthy, ejected or down (0).\n"
    "# TYPE meshgate_upstream_peer_healthy gauge\n",
    "# HELP meshgate_upstream_peer_ejections_total Outlier ejections of "
    "the peer.\n"
    "# TYPE meshgate_upstream_peer_ejections_total counter\n",
    "# HELP meshgate_upstream_peer_requests_total Answers from the "
    "peer.\n"
    "# TYPE meshgate_upstream_peer_requests_total counter\n",
    "# HELP meshgate_upstream_peer_failures_total Failed tries "
    "(5xx, errors, timeouts) against the peer.\n"
    "# TYPE meshgate_upstream_peer_failures_total counter\n"
};

static const char  *ngx_http_upstream_mesh_ups_metrics[] = {
    "# HELP meshgate_upstream_retries_total Retries performed.\n"
    "# TYPE meshgate_upstream_retries_total counter\n",
    "# HELP meshgate_upstream_retry_budget_exhausted_total Requests not "
    "retried because the retry budget was used up.\n"
    "# TYPE meshgate_upstream_retry_budget_exhausted_total counter\n",
    "# HELP meshgate_upstream_circuit_breaker_rejected_total Requests "
    "answered 503 by the circuit breaker.\n"
    "# TYPE meshgate_upstream_circuit_breaker_rejected_total counter\n",
    "# HELP meshgate_upstream_active_requests Requests in flight.\n"
    "# TYPE meshgate_upstream_active_requests gauge\n",
    "# HELP meshgate_upstream_panic Whether every peer is out and "
    "traffic goes to all of them.\n"
    "# TYPE meshgate_upstream_panic gauge\n"
};


ngx_chain_t *
ngx_http_upstream_mesh_prometheus(ngx_pool_t *pool, ngx_log_t *log)
{
    size_t                               len;
    ngx_buf_t                           *b;
    ngx_uint_t                           i, j, k;
    const char                          *help;
    ngx_chain_t                         *cl;
    ngx_http_upstream_mesh_sh_t         *sh;
    ngx_http_upstream_mesh_peer_sh_t    *p;
    ngx_http_upstream_mesh_srv_conf_t  **mcfp, *mcf;
    ngx_http_upstream_mesh_main_conf_t  *mmcf;

    if (ngx_cycle->conf_ctx == NULL) {
        return NULL;
    }

    mmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_upstream_mesh_module);

    if (mmcf == NULL || mmcf->upstreams.nelts == 0) {
        return NULL;
    }

    mcfp = mmcf->upstreams.elts;

    len = 4096;

    for (i = 0; i < mmcf->upstreams.nelts; i++) {
        len += 8 * (128 + mcfp[i]->uscf->host.len)
               + 4 * mcfp[i]->sh->npeers
                 * (128 + mcfp[i]->uscf->host.len + NGX_SOCKADDR_STRLEN);
    }

    b = ngx_create_temp_buf(pool, len);
    if (b == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0, "mesh metrics: no memory");
        return NULL;
    }

    for (k = 0; k < 4; k++) {
        help = ngx_http_upstream_mesh_peer_metrics[k];
        b->last = ngx_cpymem(b->last, help, ngx_strlen(help));

        for (i = 0; i < mmcf->upstreams.nelts; i++) {
            mcf = mcfp[i];
            sh = mcf->sh;

            for (j = 0; j < sh->npeers; j++) {
                p = &sh->peers[j];

                if (p->dyn && !p->used) {
                    continue;
                }

                b->last = ngx_sprintf(b->last,
                              "meshgate_upstream_peer_%s"
                              "{upstream=\"%V\",peer=\"%*s\"} %uA\n",
                              k == 0 ? "healthy"
                              : k == 1 ? "ejections_total"
                              : k == 2 ? "requests_total"
                              : "failures_total",
                              &mcf->uscf->host, p->name_len, p->name,
                              k == 0 ? (ngx_atomic_uint_t)
                                       (!p->cfg_down && !p->ejected
                                        && !p->unhealthy)
                              : k == 1 ? (ngx_atomic_uint_t) p->ejections
                              : k == 2 ? p->requests : p->failures);
            }
        }
    }

    for (k = 0; k < 5; k++) {
        help = ngx_http_upstream_mesh_ups_metrics[k];
        b->last = ngx_cpymem(b->last, help, ngx_strlen(help));

        for (i = 0; i < mmcf->upstreams.nelts; i++) {
            mcf = mcfp[i];
            sh = mcf->sh;

            b->last = ngx_sprintf(b->last,
                              "meshgate_upstream_%s{upstream=\"%V\"} %uA\n",
                              k == 0 ? "retries_total"
                              : k == 1 ? "retry_budget_exhausted_total"
                              : k == 2 ? "circuit_breaker_rejected_total"
                              : k == 3 ? "active_requests" : "panic",
                              &mcf->uscf->host,
                              k == 0 ? sh->retries
                              : k == 1 ? sh->budget_exhausted
                              : k == 2 ? sh->cb_rejected
                              : k == 3 ? sh->active
                              : (ngx_atomic_uint_t) sh->panic);
        }
    }

    b->last = ngx_http_upstream_mesh_disc_metrics(b->last, mmcf);

    cl = ngx_alloc_chain_link(pool);
    if (cl == NULL) {
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;

    return cl;
}


/* variables */

static ngx_int_t
ngx_http_upstream_mesh_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                        *p;
    ngx_uint_t                     n;
    ngx_http_upstream_mesh_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_upstream_mesh_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    if (data == 2) {
        v->data = ngx_http_upstream_mesh_state_names[ctx->peer_state].data;
        v->len = ngx_http_upstream_mesh_state_names[ctx->peer_state].len;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    n = ctx->attempts;

    if (data == 1) {
        n = n ? n - 1 : 0;
    }

    v->data = p;
    v->len = ngx_sprintf(p, "%ui", n) - p;

    return NGX_OK;
}


/* shared state */

static ngx_int_t
ngx_http_upstream_mesh_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_upstream_mesh_srv_conf_t  *omcf = data;

    size_t                               len;
    ngx_uint_t                           i, n, same;
    ngx_slab_pool_t                     *shpool;
    ngx_http_upstream_mesh_sh_t         *sh;
    ngx_http_upstream_mesh_peer_conf_t  *pcf;
    ngx_http_upstream_mesh_srv_conf_t   *mcf;

    mcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    mcf->shpool = shpool;

    pcf = mcf->peers.elts;
    n = mcf->peers.nelts;

    if (shm_zone->shm.exists) {
        mcf->sh = shpool->data;
        return NGX_OK;
    }

    if (omcf && omcf->sh) {

        /* reload: keep the state when the peers are the same */

        sh = omcf->sh;
        same = (sh->npeers == n);

        for (i = 0; same && i < n; i++) {

            /* a discovery slot keeps its discovered peer */

            if (pcf[i].dyn) {
                same = (sh->peers[i].dyn
                        && sh->peers[i].backup == pcf[i].backup);
                continue;
            }

            same = (!sh->peers[i].dyn
                    && sh->peers[i].name_len == pcf[i].name.len
                    && ngx_memcmp(sh->peers[i].name, pcf[i].name.data,
                                  pcf[i].name.len) == 0
                    && sh->peers[i].backup == pcf[i].backup);
        }

        if (same) {
            for (i = 0; i < n; i++) {
                sh->peers[i].cfg_down = pcf[i].dyn ? 0 : pcf[i].down;
            }

            mcf->sh = sh;
            return NGX_OK;
        }

        /*
         * other peers (the zone name has a checksum of the peer list, so
         * this is a checksum collision): fresh state, beside the old one,
         * which the old workers use until they exit
         */

    } else {
        len = sizeof(" in upstream mesh zone \"\"") + shm_zone->shm.name.len;

        shpool->log_ctx = ngx_slab_alloc(shpool, len);
        if (shpool->log_ctx == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(shpool->log_ctx, " in upstream mesh zone \"%V\"%Z",
                    &shm_zone->shm.name);
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_upstream_mesh_sh_t)
                         + n * sizeof(ngx_http_upstream_mesh_peer_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_http_upstream_mesh_init_state(mcf, sh);

    return NGX_OK;
}


static void
ngx_http_upstream_mesh_init_state(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_http_upstream_mesh_sh_t *sh)
{
    ngx_uint_t                           i;
    ngx_http_upstream_mesh_peer_sh_t    *p;
    ngx_http_upstream_mesh_peer_conf_t  *pcf;

    pcf = mcf->peers.elts;

    sh->npeers = mcf->peers.nelts;

    for (i = 0; i < sh->npeers; i++) {
        p = &sh->peers[i];
        p->name_len = ngx_min(pcf[i].name.len, NGX_SOCKADDR_STRLEN);
        ngx_memcpy(p->name, pcf[i].name.data, p->name_len);
        p->backup = pcf[i].backup;
        p->dyn = pcf[i].dyn;

        /* an empty discovery slot is out by being empty, not down */

        p->cfg_down = pcf[i].dyn ? 0 : pcf[i].down;
        p->unhealthy = (mcf->hc_type && mcf->hc_initial_unhealthy);
    }

    mcf->shpool->data = sh;
    mcf->sh = sh;
}


static ngx_int_t
ngx_http_upstream_mesh_add_zone(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    size_t                               size;
    uint32_t                             crc;
    ngx_str_t                            name;
    ngx_uint_t                           i;
    ngx_shm_zone_t                      *shm_zone;
    ngx_http_upstream_mesh_peer_conf_t  *pcf;

    /*
     * The zone is kept on reload only for the same peer list, whose
     * checksum is in its name.  Another list gets a new zone: the old
     * workers keep theirs until they exit, and their requests in flight,
     * probes and outcomes never touch the state of the new peers.
     */

    pcf = mcf->peers.elts;

    ngx_crc32_init(crc);

    for (i = 0; i < mcf->peers.nelts; i++) {
        ngx_crc32_update(&crc, pcf[i].name.data, pcf[i].name.len);
        ngx_crc32_update(&crc, (u_char *) (pcf[i].backup ? "+" : "-"), 1);
    }

    ngx_crc32_final(crc);

    name.len = sizeof("upstream_mesh::") - 1 + mcf->uscf->host.len + 8;
    name.data = ngx_pnalloc(cf->pool, name.len);
    if (name.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(name.data, "upstream_mesh:%V:%08xD", &mcf->uscf->host, crc);

    size = sizeof(ngx_http_upstream_mesh_sh_t)
           + mcf->peers.nelts * sizeof(ngx_http_upstream_mesh_peer_sh_t);
    size = ngx_align(size, ngx_pagesize) + 8 * ngx_pagesize;

    shm_zone = ngx_shared_memory_add(cf, &name, size,
                                     &ngx_http_upstream_mesh_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    if (shm_zone->data) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "shared memory zone \"%V\" is already used in %V:%ui",
                      &name, &mcf->file, mcf->line);
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_upstream_mesh_init_zone;
    shm_zone->data = mcf;

    mcf->shm_zone = shm_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_mesh_collect_peers(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    ngx_uint_t                           backup;
    ngx_http_upstream_rr_peer_t         *peer;
    ngx_http_upstream_rr_peers_t        *peers;
    ngx_http_upstream_mesh_peer_conf_t  *pcf;

    peers = mcf->uscf->peer.data;

    if (peers == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "the balancer of upstream \"%V\" does not work with "
                      "mesh directives in %V:%ui",
                      &mcf->uscf->host, &mcf->file, mcf->line);
        return NGX_ERROR;
    }

    if (ngx_array_init(&mcf->peers, cf->pool, 4,
                       sizeof(ngx_http_upstream_mesh_peer_conf_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (backup = 0; peers; peers = peers->next, backup++) {
        for (peer = peers->peer; peer; peer = peer->next) {
            pcf = ngx_array_push(&mcf->peers);
            if (pcf == NULL) {
                return NGX_ERROR;
            }

            pcf->sockaddr = peer->sockaddr;
            pcf->socklen = peer->socklen;
            pcf->name = peer->name;
            pcf->backup = backup;
            pcf->down = peer->down;
            pcf->dyn = 0;
        }
    }

    return NGX_OK;
}


static void
ngx_http_upstream_mesh_init_defaults(ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    /* upstream blocks have no merge: the defaults of mesh_* live here */

    ngx_conf_init_uint_value(mcf->hc_type, 0);
    ngx_conf_init_msec_value(mcf->hc_interval, 5000);
    ngx_conf_init_msec_value(mcf->hc_timeout, 1000);
    ngx_conf_init_uint_value(mcf->hc_fails, 2);
    ngx_conf_init_uint_value(mcf->hc_passes, 2);
    ngx_conf_init_uint_value(mcf->hc_status_min, 200);
    ngx_conf_init_uint_value(mcf->hc_status_max, 399);
    ngx_conf_init_uint_value(mcf->hc_initial_unhealthy, 0);

    if (mcf->hc_uri.data == NULL) {
        ngx_str_set(&mcf->hc_uri, "/");
    }

    ngx_conf_init_uint_value(mcf->od_enabled, 0);
    ngx_conf_init_uint_value(mcf->od_5xx, 5);
    ngx_conf_init_uint_value(mcf->od_gw, 0);
    ngx_conf_init_msec_value(mcf->od_base, 30000);
    ngx_conf_init_msec_value(mcf->od_max, ngx_max(300000, mcf->od_base));
    ngx_conf_init_uint_value(mcf->od_max_percent, 10);

    ngx_conf_init_uint_value(mcf->budget_percent, 20);
    ngx_conf_init_uint_value(mcf->budget_min, 10);

    ngx_conf_init_uint_value(mcf->cb_max, 0);
}


/* directives */

static char *
ngx_http_upstream_mesh_mark(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    if (!mcf->enabled) {
        mcf->enabled = 1;
        mcf->file = cf->conf_file->file.name;
        mcf->line = cf->conf_file->line;
    }

    return NGX_CONF_OK;
}


/*
 * The value of a "name=value" parameter whose name was matched with
 * ngx_http_upstream_mesh_key(): what follows the first "=".
 */

static ngx_str_t
ngx_http_upstream_mesh_arg_value(ngx_str_t *arg)
{
    u_char     *eq;
    ngx_str_t   v;

    eq = ngx_strlchr(arg->data, arg->data + arg->len, '=');

    v.data = eq ? eq + 1 : arg->data + arg->len;
    v.len = arg->data + arg->len - v.data;

    return v;
}


static ngx_int_t
ngx_http_upstream_mesh_uint_arg(ngx_conf_t *cf, ngx_str_t *arg,
    ngx_uint_t *out)
{
    ngx_int_t  n;
    ngx_str_t  s;

    s = ngx_http_upstream_mesh_arg_value(arg);
    n = ngx_atoi(s.data, s.len);

    if (n == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number in \"%V\"", arg);
        return NGX_ERROR;
    }

    *out = n;

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_mesh_msec_arg(ngx_conf_t *cf, ngx_str_t *arg,
    ngx_msec_t *out)
{
    ngx_str_t  s;
    ngx_int_t  n;

    s = ngx_http_upstream_mesh_arg_value(arg);
    n = ngx_parse_time(&s, 0);

    if (n == NGX_ERROR || n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid time in \"%V\"", arg);
        return NGX_ERROR;
    }

    *out = (ngx_msec_t) n;

    return NGX_OK;
}


#define ngx_http_upstream_mesh_key(arg, key)                                  \
    ((arg)->len >= sizeof(key) - 1                                            \
     && ngx_strncmp((arg)->data, key, sizeof(key) - 1) == 0)


static ngx_int_t
ngx_http_upstream_mesh_printable(ngx_conf_t *cf, ngx_str_t *arg)
{
    u_char  *p;

    for (p = arg->data; p < arg->data + arg->len; p++) {
        if (*p <= ' ' || *p == 0x7f) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid character in \"%V\"", arg);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_mesh_hc_status(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_str_t *arg)
{
    u_char     *dash, *p, *last;
    ngx_int_t   min, max;

    /* status=nnn or status=nnn-nnn */

    p = arg->data + 7;
    last = arg->data + arg->len;
    dash = ngx_strlchr(p, last, '-');

    if (dash) {
        min = ngx_atoi(p, dash - p);
        max = ngx_atoi(dash + 1, last - dash - 1);

    } else {
        min = ngx_atoi(p, last - p);
        max = min;
    }

    if (min == NGX_ERROR || max == NGX_ERROR || min < 100 || max > 599
        || min > max)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid status range \"%V\"", arg);
        return NGX_ERROR;
    }

    mcf->hc_status_min = min;
    mcf->hc_status_max = max;

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_mesh_hc_body(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_str_t *arg)
{
    u_char               errstr[NGX_MAX_CONF_ERRSTR];
    ngx_str_t            s;
    ngx_regex_compile_t  rc;

    /* body=~regex (the tilde is optional), PCRE2 through ngx_regex */

    s.data = arg->data + 5;
    s.len = arg->len - 5;

    if (s.len && s.data[0] == '~') {
        s.data++;
        s.len--;
    }

    if (s.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "empty regex in \"%V\"", arg);
        return NGX_ERROR;
    }

    ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

    rc.pattern = s;
    rc.pool = cf->pool;
    rc.err.len = NGX_MAX_CONF_ERRSTR;
    rc.err.data = errstr;

    if (ngx_regex_compile(&rc) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V", &rc.err);
        return NGX_ERROR;
    }

    mcf->hc_body = rc.regex;

    return NGX_OK;
}


static char *
ngx_http_upstream_mesh_health_check(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_mesh_srv_conf_t  *mcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i, port;

    if (mcf->hc_type != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    mcf->hc_type = NGX_HTTP_UPSTREAM_MESH_HC_HTTP;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "type=http") == 0) {
            mcf->hc_type = NGX_HTTP_UPSTREAM_MESH_HC_HTTP;

        } else if (ngx_strcmp(value[i].data, "type=tcp") == 0) {
            mcf->hc_type = NGX_HTTP_UPSTREAM_MESH_HC_TCP;

        } else if (ngx_http_upstream_mesh_key(&value[i], "uri=")) {
            mcf->hc_uri.data = value[i].data + 4;
            mcf->hc_uri.len = value[i].len - 4;

            if (mcf->hc_uri.len == 0 || mcf->hc_uri.data[0] != '/') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"uri\" must start with \"/\" in \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            if (ngx_http_upstream_mesh_printable(cf, &value[i]) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "host=")) {
            mcf->hc_host.data = value[i].data + 5;
            mcf->hc_host.len = value[i].len - 5;

            if (ngx_http_upstream_mesh_printable(cf, &value[i]) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "interval=")) {
            if (ngx_http_upstream_mesh_msec_arg(cf, &value[i],
                                                &mcf->hc_interval)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "timeout=")) {
            if (ngx_http_upstream_mesh_msec_arg(cf, &value[i],
                                                &mcf->hc_timeout)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "fails=")) {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->hc_fails)
                != NGX_OK || mcf->hc_fails == 0)
            {
                return "has invalid \"fails\"";
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "passes=")) {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->hc_passes)
                != NGX_OK || mcf->hc_passes == 0)
            {
                return "has invalid \"passes\"";
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "port=")) {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i], &port)
                != NGX_OK || port == 0 || port > 65535)
            {
                return "has invalid \"port\"";
            }

            mcf->hc_port = (in_port_t) port;

        } else if (ngx_http_upstream_mesh_key(&value[i], "status=")) {
            if (ngx_http_upstream_mesh_hc_status(cf, mcf, &value[i])
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "body=")) {
            if (ngx_http_upstream_mesh_hc_body(cf, mcf, &value[i])
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_strcmp(value[i].data, "initial=unhealthy") == 0) {
            mcf->hc_initial_unhealthy = 1;

        } else if (ngx_strcmp(value[i].data, "initial=healthy") == 0) {
            mcf->hc_initial_unhealthy = 0;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (mcf->hc_timeout != NGX_CONF_UNSET_MSEC
        && mcf->hc_interval != NGX_CONF_UNSET_MSEC
        && mcf->hc_timeout > mcf->hc_interval)
    {
        return "has \"timeout\" longer than \"interval\"";
    }

    if (mcf->hc_type == NGX_HTTP_UPSTREAM_MESH_HC_TCP
        && (mcf->hc_body || mcf->hc_uri.data))
    {
        return "has \"uri\" or \"body\" with \"type=tcp\"";
    }

    return ngx_http_upstream_mesh_mark(cf, mcf);
}


static char *
ngx_http_upstream_mesh_outlier(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_mesh_srv_conf_t  *mcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (mcf->od_enabled != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    mcf->od_enabled = 1;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_http_upstream_mesh_key(&value[i], "consecutive_5xx=")) {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->od_5xx)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i],
                                              "consecutive_gateway_errors="))
        {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->od_gw)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i],
                                              "base_ejection_time="))
        {
            if (ngx_http_upstream_mesh_msec_arg(cf, &value[i],
                                                &mcf->od_base)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i],
                                              "max_ejection_time="))
        {
            if (ngx_http_upstream_mesh_msec_arg(cf, &value[i],
                                                &mcf->od_max)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i],
                                              "max_ejection_percent="))
        {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->od_max_percent)
                != NGX_OK || mcf->od_max_percent > 100)
            {
                return "has invalid \"max_ejection_percent\"";
            }

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (mcf->od_5xx == 0
        && (mcf->od_gw == 0 || mcf->od_gw == NGX_CONF_UNSET_UINT))
    {
        return "disables both consecutive_5xx and "
               "consecutive_gateway_errors";
    }

    return ngx_http_upstream_mesh_mark(cf, mcf);
}


static char *
ngx_http_upstream_mesh_budget(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_mesh_srv_conf_t  *mcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (mcf->budget_percent != NGX_CONF_UNSET_UINT
        || mcf->budget_min != NGX_CONF_UNSET_UINT)
    {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_http_upstream_mesh_key(&value[i], "percent=")) {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->budget_percent)
                != NGX_OK || mcf->budget_percent > 1000)
            {
                return "has invalid \"percent\"";
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "min_per_second=")) {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->budget_min)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    return ngx_http_upstream_mesh_mark(cf, mcf);
}


static char *
ngx_http_upstream_mesh_breaker(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_mesh_srv_conf_t  *mcf = conf;

    ngx_str_t  *value;

    if (mcf->cb_max != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (!ngx_http_upstream_mesh_key(&value[1], "max_requests=")) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_upstream_mesh_uint_arg(cf, &value[1], &mcf->cb_max)
        != NGX_OK || mcf->cb_max == 0)
    {
        return "has invalid \"max_requests\"";
    }

    return ngx_http_upstream_mesh_mark(cf, mcf);
}


static char *
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


static char *
ngx_http_upstream_mesh_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_upstream_mesh_status_handler;

    return NGX_CONF_OK;
}


/* configuration */

static ngx_int_t
ngx_http_upstream_mesh_add_variables(ngx_conf_t *cf)
{
    return ngx_meshgate_add_variables(cf, ngx_http_upstream_mesh_vars);
}


static ngx_int_t
ngx_http_upstream_mesh_postconf(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_upstream_mesh_preaccess;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_upstream_mesh_header_filter;

    return NGX_OK;
}


static void *
ngx_http_upstream_mesh_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_upstream_mesh_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_upstream_mesh_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&mmcf->upstreams, cf->pool, 4,
                       sizeof(ngx_http_upstream_mesh_srv_conf_t *))
        != NGX_OK)
    {
        return NULL;
    }

    mmcf->proxy_index = NGX_CONF_UNSET;
    mmcf->grpc_index = NGX_CONF_UNSET;

    return mmcf;
}


static char *
ngx_http_upstream_mesh_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_upstream_mesh_main_conf_t  *mmcf = conf;

    ngx_uint_t                           i;
    ngx_module_t                        *m;
    ngx_http_upstream_srv_conf_t       **uscfp, *uscf;
    ngx_http_upstream_rr_peers_t        *peers;
    ngx_http_upstream_main_conf_t       *umcf;
    ngx_http_upstream_mesh_srv_conf_t   *mcf, **mcfp;

    mmcf->proxy_index = -1;
    mmcf->grpc_index = -1;

    for (i = 0; cf->cycle->modules[i]; i++) {
        m = cf->cycle->modules[i];

        if (ngx_strcmp(m->name, "ngx_http_proxy_module") == 0) {
            mmcf->proxy_index = m->ctx_index;

        } else if (ngx_strcmp(m->name, "ngx_http_grpc_module") == 0) {
            mmcf->grpc_index = m->ctx_index;
        }
    }

    /*
     * the upstream module has run init_upstream for every upstream, so
     * every other balancer (keepalive, hash, ...) has set its peer.init:
     * ours wraps whatever is there
     */

    umcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_upstream_module);
    uscfp = umcf->upstreams.elts;

    for (i = 0; i < umcf->upstreams.nelts; i++) {
        uscf = uscfp[i];

        if (uscf->srv_conf == NULL || uscf->peer.init == NULL) {
            continue;
        }

        mcf = ngx_http_conf_upstream_srv_conf(uscf,
                                              ngx_http_upstream_mesh_module);

        ngx_http_upstream_mesh_init_defaults(mcf);

        mcf->uscf = uscf;
        mcf->original_init_peer = uscf->peer.init;
        uscf->peer.init = ngx_http_upstream_mesh_init_peer;

        /* the balancers of nginx keep round robin's peers in peer.data */

        peers = uscf->peer.data;
        mcf->single = (peers != NULL && peers->single);

        if (!mcf->enabled) {
            continue;
        }

        if (uscf->shm_zone == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "upstream \"%V\" uses mesh directives, which keep "
                          "their state shared by all workers, but has no "
                          "\"zone\": add \"zone <name> 256k;\" to it "
                          "in %V:%ui",
                          &uscf->host, &mcf->file, mcf->line);
            return NGX_CONF_ERROR;
        }

        if (ngx_http_upstream_mesh_collect_peers(cf, mcf) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        if (mcf->disc && ngx_http_upstream_mesh_disc_conf(cf, mcf) != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (ngx_http_upstream_mesh_add_zone(cf, mcf) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        mcfp = ngx_array_push(&mmcf->upstreams);
        if (mcfp == NULL) {
            return NGX_CONF_ERROR;
        }

        *mcfp = mcf;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_upstream_mesh_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_upstream_mesh_srv_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_upstream_mesh_srv_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->hc_uri = { 0, NULL };
     *     mcf->hc_host = { 0, NULL };
     *     mcf->hc_body = NULL;
     *     mcf->hc_port = 0;
     *     mcf->enabled = 0;
     *     mcf->uscf = NULL;
     *     mcf->sh = NULL;
     */

    mcf->hc_type = NGX_CONF_UNSET_UINT;
    mcf->hc_interval = NGX_CONF_UNSET_MSEC;
    mcf->hc_timeout = NGX_CONF_UNSET_MSEC;
    mcf->hc_fails = NGX_CONF_UNSET_UINT;
    mcf->hc_passes = NGX_CONF_UNSET_UINT;
    mcf->hc_status_min = NGX_CONF_UNSET_UINT;
    mcf->hc_status_max = NGX_CONF_UNSET_UINT;
    mcf->hc_initial_unhealthy = NGX_CONF_UNSET_UINT;

    mcf->od_enabled = NGX_CONF_UNSET_UINT;
    mcf->od_5xx = NGX_CONF_UNSET_UINT;
    mcf->od_gw = NGX_CONF_UNSET_UINT;
    mcf->od_base = NGX_CONF_UNSET_MSEC;
    mcf->od_max = NGX_CONF_UNSET_MSEC;
    mcf->od_max_percent = NGX_CONF_UNSET_UINT;

    mcf->budget_percent = NGX_CONF_UNSET_UINT;
    mcf->budget_min = NGX_CONF_UNSET_UINT;

    mcf->cb_max = NGX_CONF_UNSET_UINT;

    return mcf;
}


static void *
ngx_http_upstream_mesh_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_upstream_mesh_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_upstream_mesh_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    lcf->retry_attempts = NGX_CONF_UNSET_UINT;
    lcf->retry_mask = NGX_CONF_UNSET_UINT;
    lcf->retry_non_idempotent = NGX_CONF_UNSET;
    lcf->retry_connect_only = NGX_CONF_UNSET;
    lcf->retry_per_try_timeout = NGX_CONF_UNSET_MSEC;
    lcf->retry_backoff = NGX_CONF_UNSET_MSEC;
    lcf->retry_max_backoff = NGX_CONF_UNSET_MSEC;
    lcf->timeout = NGX_CONF_UNSET_MSEC;

    return lcf;
}


static char *
ngx_http_upstream_mesh_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_upstream_mesh_loc_conf_t  *prev = parent;
    ngx_http_upstream_mesh_loc_conf_t  *conf = child;

    ngx_msec_t  timeout;

    /* mesh_retry is merged as a whole, mesh_timeout on its own */

    if (conf->retry_attempts == NGX_CONF_UNSET_UINT) {
        timeout = conf->timeout;
        *conf = *prev;
        conf->timeout = timeout;
    }

    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 0);

    ngx_conf_merge_uint_value(conf->retry_attempts, prev->retry_attempts, 0);
    ngx_conf_merge_uint_value(conf->retry_mask, prev->retry_mask,
                              (NGX_HTTP_UPSTREAM_MESH_RETRY_GW));
    ngx_conf_merge_value(conf->retry_non_idempotent,
                         prev->retry_non_idempotent, 0);
    ngx_conf_merge_value(conf->retry_connect_only, prev->retry_connect_only,
                         0);
    ngx_conf_merge_msec_value(conf->retry_per_try_timeout,
                              prev->retry_per_try_timeout, 0);
    ngx_conf_merge_msec_value(conf->retry_backoff, prev->retry_backoff, 25);
    ngx_conf_merge_msec_value(conf->retry_max_backoff,
                              prev->retry_max_backoff,
                              10 * conf->retry_backoff);

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_upstream_mesh_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                           i;
    ngx_http_upstream_mesh_srv_conf_t  **mcfp;
    ngx_http_upstream_mesh_main_conf_t  *mmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_upstream_mesh_module);
    if (mmcf == NULL) {
        return NGX_OK;
    }

    /* the upstream zone is new after a reload: apply the kept state */

    mcfp = mmcf->upstreams.elts;

    for (i = 0; i < mmcf->upstreams.nelts; i++) {
        if (ngx_http_upstream_mesh_rr_index(cycle, mcfp[i]) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_shmtx_lock(&mcfp[i]->shpool->mutex);
        ngx_http_upstream_mesh_apply(mcfp[i], cycle->log);
        ngx_shmtx_unlock(&mcfp[i]->shpool->mutex);
    }

    if (ngx_http_upstream_mesh_health_init(cycle, mmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_upstream_mesh_disc_init(cycle, mmcf);
}


static void
ngx_http_upstream_mesh_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_upstream_mesh_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_upstream_mesh_module);
    if (mmcf) {
        ngx_http_upstream_mesh_disc_exit(cycle, mmcf);
    }
}


/* the zone's round-robin peers by slot, in the order of the shared state */

static ngx_int_t
ngx_http_upstream_mesh_rr_index(ngx_cycle_t *cycle,
    ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    ngx_uint_t                     i;
    ngx_http_upstream_rr_peer_t   *peer;
    ngx_http_upstream_rr_peers_t  *peers;

    mcf->rr = ngx_pcalloc(cycle->pool, mcf->sh->npeers * sizeof(void *));
    if (mcf->rr == NULL) {
        return NGX_ERROR;
    }

    i = 0;

    for (peers = mcf->uscf->peer.data; peers; peers = peers->next) {
        for (peer = peers->peer; peer && i < mcf->sh->npeers;
             peer = peer->next)
        {
            mcf->rr[i++] = peer;
        }
    }

    if (i != mcf->sh->npeers) {
        mcf->rr = NULL;
    }

    return NGX_OK;
}
