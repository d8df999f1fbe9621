
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_HTTP_MESH_METRICS_H_INCLUDED_
#define _NGX_HTTP_MESH_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HTTP_MESH_METRICS_MAX_BUCKETS   32
#define NGX_HTTP_MESH_METRICS_MAX_VALUE     128
#define NGX_HTTP_MESH_METRICS_MAX_KEY       640
#define NGX_HTTP_MESH_METRICS_WINDOW        10
#define NGX_HTTP_MESH_METRICS_MAX_EDGES     8


/* series families: one shared-memory node per family and label set */

#define NGX_HTTP_MESH_METRICS_F_REQUEST     0
#define NGX_HTTP_MESH_METRICS_F_ATTEMPT     1
#define NGX_HTTP_MESH_METRICS_F_UPSTREAM    2
#define NGX_HTTP_MESH_METRICS_F_EDGE        3
#define NGX_HTTP_MESH_METRICS_F_AUTH        4
#define NGX_HTTP_MESH_METRICS_F_RATELIMIT   5
#define NGX_HTTP_MESH_METRICS_F_RETRIES     6
#define NGX_HTTP_MESH_METRICS_F_AGGREGATE   7
#define NGX_HTTP_MESH_METRICS_F_ROUTE       8
#define NGX_HTTP_MESH_METRICS_F_SPANS       9
#define NGX_HTTP_MESH_METRICS_F_SPLIT       10
#define NGX_HTTP_MESH_METRICS_NFAMILIES     11


/*
 * Value slots of a histogram-carrying node (REQUEST, UPSTREAM, EDGE):
 *   0 count, 1 and 2 family-specific counters, 3 sum in microseconds,
 *   4 .. 4 + nbuckets: per-bucket counts (not cumulative), last is +Inf.
 * EDGE, ROUTE and SPLIT nodes add two rate windows after the buckets:
 * epoch, requests, errors each.  ROUTE nodes (one per route) and SPLIT
 * nodes (route, traffic split, variant) are for the dependency map, not
 * exported to Prometheus.  Counter families (the others) have one slot.
 */

#define NGX_HTTP_MESH_METRICS_V_COUNT       0
#define NGX_HTTP_MESH_METRICS_V_A           1
#define NGX_HTTP_MESH_METRICS_V_B           2
#define NGX_HTTP_MESH_METRICS_V_SUM         3
#define NGX_HTTP_MESH_METRICS_V_BUCKETS     4


typedef struct {
    uint32_t                        hash;
    uint16_t                        family;
    uint16_t                        key_len;
    ngx_atomic_t                    values[1];
    /* then the label values, each ended by '\0' */
} ngx_http_mesh_metrics_node_t;


typedef struct {
    ngx_uint_t                      nslots;
    ngx_uint_t                      max_series;
    ngx_uint_t                      nbuckets;
    ngx_uint_t                      bounds[NGX_HTTP_MESH_METRICS_MAX_BUCKETS];
    time_t                          started;
    ngx_atomic_t                    warned;
    ngx_atomic_t                    series;
    ngx_atomic_t                    edge_series;  /* and split ones */
    ngx_atomic_t                    dropped;
    ngx_http_mesh_metrics_node_t  **slots;
} ngx_http_mesh_metrics_shctx_t;


typedef struct {
    ngx_http_mesh_metrics_shctx_t  *sh;
    ngx_slab_pool_t                *shpool;
    ngx_shm_zone_t                 *shm_zone;
    ngx_uint_t                      nbuckets;
    ngx_uint_t                     *bounds;
} ngx_http_mesh_metrics_zone_t;


/* a $traffic_split_<name> variable that the configuration uses */

typedef struct {
    ngx_str_t                       name;         /* of the split */
    ngx_int_t                       index;
} ngx_http_mesh_metrics_split_t;


/* mesh_trace_export otlp=... */

typedef struct {
    ngx_addr_t                      addr;
    ngx_str_t                       host;         /* Host header */
    ngx_str_t                       uri;
    ngx_str_t                       service;
    ngx_uint_t                      batch;
    ngx_msec_t                      interval;
    ngx_uint_t                      ratio;        /* per million, or unset */
} ngx_http_mesh_metrics_otlp_t;


typedef struct {
    ngx_http_mesh_metrics_zone_t   *zone;
    ngx_array_t                    *buckets;      /* of ngx_uint_t, usec */
    ngx_http_mesh_metrics_otlp_t   *otlp;

    /* indexes of other modules' variables, NGX_ERROR when not defined */
    ngx_int_t                       auth_jwt;
    ngx_int_t                       auth_key;
    ngx_int_t                       auth_introspect;
    ngx_int_t                       rate_limit;
    ngx_int_t                       aggregate;
    ngx_int_t                       retries;
    ngx_int_t                       peer_id;
    ngx_int_t                       consumer;
    ngx_int_t                       subject;
    ngx_array_t                    *splits;       /* of ..._split_t */

    ngx_flag_t                      trace_used;
    ngx_array_t                    *peer_inits;
    u_char                         *export_file;
    ngx_uint_t                      export_line;
} ngx_http_mesh_metrics_main_conf_t;


typedef struct {
    ngx_flag_t                      enable;
    ngx_flag_t                      trace;
    ngx_str_t                       route;        /* explicit name */
    ngx_str_t                       label;        /* route label used */
    ngx_uint_t                      export;
} ngx_http_mesh_metrics_loc_conf_t;


#define NGX_HTTP_MESH_METRICS_EXPORT_PROMETHEUS  1
#define NGX_HTTP_MESH_METRICS_EXPORT_GRAPH       2
#define NGX_HTTP_MESH_METRICS_EXPORT_DASHBOARD   3


/* an upstream attempt, for its client span */

typedef struct {
    ngx_http_request_t             *request;
    ngx_uint_t                      index;        /* of the request's */
    uint64_t                        start;        /* ns since the epoch */
    u_char                          span_id[8];
} ngx_http_mesh_metrics_attempt_t;


#define NGX_HTTP_MESH_METRICS_TP_LEN      55    /* a "traceparent" */
#define NGX_HTTP_MESH_METRICS_SPANS_LEN   (18 * 4)


/* the balancer wrapper of an upstream (or of a retry's) */

typedef struct {
    ngx_http_request_t             *request;
    void                           *data;
    ngx_event_get_peer_pt           get;
    ngx_event_free_peer_pt          free;
    ngx_event_notify_peer_pt        notify;
#if (NGX_HTTP_SSL)
    ngx_event_set_peer_session_pt   set_session;
    ngx_event_save_peer_session_pt  save_session;
#endif
} ngx_http_mesh_metrics_peer_data_t;


/*
 * The trace state of a main request.  It holds what a proxied request
 * needs (our header's value, the main request's balancer wrapper, room
 * for a few upstream span ids and attempts) and lives outside the
 * request pool, on a per-worker free list: the pool a proxied request
 * fills has no room left for it, and a pool block more costs a malloc().
 */

typedef struct ngx_http_mesh_metrics_trace_s  ngx_http_mesh_metrics_trace_t;

struct ngx_http_mesh_metrics_trace_s {
    ngx_http_mesh_metrics_trace_t  *next;         /* when free */
    u_char                          trace_id[16];
    u_char                          trace_hex[32]; /* its text */
    u_char                          parent_id[8];
    u_char                          span_id[8];
    u_char                          flags;
    unsigned                        trace_ready:1;
    unsigned                        continued:1;
    unsigned                        header_done:1;
    unsigned                        tracestate:1;  /* one came in */
    ngx_uint_t                      ntraceparent;  /* how many came in */
    ngx_table_elt_t                *traceparent;   /* the one that came */
    ngx_str_t                       upstream_spans;
    size_t                          upstream_spans_cap;
    ngx_array_t                    *subrequests;
    ngx_array_t                    *attempts;     /* when exporting */

    unsigned                        peer_used:1;
    ngx_http_mesh_metrics_peer_data_t  peer;
    ngx_array_t                     attempts_array;
    ngx_http_mesh_metrics_attempt_t attempt[2];
    u_char                          spans[NGX_HTTP_MESH_METRICS_SPANS_LEN];
    u_char                          header[NGX_HTTP_MESH_METRICS_TP_LEN];
};


/*
 * A worker's memo of the series a usual proxied request counts into (one
 * upstream attempt, no subrequest), found by what names them: the
 * location (its route), the method (a known one), the status, the
 * upstream group, the peer's name and status, and the caller.
 */

#define NGX_HTTP_MESH_METRICS_MEMO_TEXT   96

typedef struct {
    ngx_http_mesh_metrics_shctx_t  *sh;
    void                           *lcf;
    void                           *upstream;
    ngx_uint_t                      method;
    uint16_t                        status;
    uint16_t                        peer_status;
    uint16_t                        peer_len;
    uint16_t                        caller_len;
    u_char                          text[NGX_HTTP_MESH_METRICS_MEMO_TEXT];
} ngx_http_mesh_metrics_memo_key_t;


typedef struct {
    ngx_http_mesh_metrics_memo_key_t  key;
    ngx_atomic_t                     *request;
    ngx_atomic_t                     *upstream;
    ngx_atomic_t                     *attempt;
    ngx_atomic_t                     *edge;
    ngx_atomic_t                     *route;
} ngx_http_mesh_metrics_memo_t;


/* a label set being built on the stack */

typedef struct {
    u_char                          data[NGX_HTTP_MESH_METRICS_MAX_KEY];
    size_t                          len;
} ngx_http_mesh_metrics_key_t;


extern ngx_module_t  ngx_http_mesh_metrics_module;


/* functions shared by this module's files, hidden from the .so */

#pragma GCC visibility push(hidden)


/* store */
ngx_int_t ngx_http_mesh_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
ngx_uint_t ngx_http_mesh_metrics_nvalues(ngx_uint_t family,
    ngx_uint_t nbuckets);
void ngx_http_mesh_metrics_key_reset(ngx_http_mesh_metrics_key_t *key);
void ngx_http_mesh_metrics_key_add(ngx_http_mesh_metrics_key_t *key,
    u_char *value, size_t len);
ngx_atomic_t *ngx_http_mesh_metrics_series(ngx_http_mesh_metrics_zone_t *zone,
    ngx_uint_t family, ngx_http_mesh_metrics_key_t *key, ngx_log_t *log);
ngx_atomic_t *ngx_http_mesh_metrics_find(ngx_http_mesh_metrics_zone_t *zone,
    ngx_uint_t family, ngx_str_t *labels, ngx_uint_t n, ngx_log_t *log);
ngx_http_mesh_metrics_memo_t *ngx_http_mesh_metrics_memo(
    ngx_http_mesh_metrics_memo_key_t *key, ngx_uint_t *hit);
void ngx_http_mesh_metrics_count_window(ngx_http_mesh_metrics_zone_t *zone,
    ngx_atomic_t *values, ngx_uint_t status, ngx_uint_t usec);
u_char *ngx_http_mesh_metrics_code(u_char *p, ngx_uint_t status);
void ngx_http_mesh_metrics_observe(ngx_http_mesh_metrics_zone_t *zone,
    ngx_atomic_t *values, ngx_uint_t usec);
void ngx_http_mesh_metrics_window_add(ngx_http_mesh_metrics_zone_t *zone,
    ngx_atomic_t *values, ngx_uint_t error);
void ngx_http_mesh_metrics_window_read(ngx_http_mesh_metrics_zone_t *zone,
    ngx_atomic_t *values, ngx_uint_t *requests, ngx_uint_t *errors);
ngx_uint_t ngx_http_mesh_metrics_label(ngx_http_mesh_metrics_node_t *node,
    ngx_uint_t nvalues, ngx_uint_t i, ngx_str_t *value);

/* record */
ngx_int_t ngx_http_mesh_metrics_log_handler(ngx_http_request_t *r);

/* trace */
ngx_http_mesh_metrics_trace_t *ngx_http_mesh_metrics_state_find(
    ngx_http_request_t *r, ngx_uint_t create);
ngx_int_t ngx_http_mesh_metrics_trace_add_variables(ngx_conf_t *cf);
void ngx_http_mesh_metrics_trace_exit_process(void);
void ngx_http_mesh_metrics_trace_seed(void);
ngx_int_t ngx_http_mesh_metrics_trace_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_mesh_metrics_trace_wrap_upstreams(ngx_conf_t *cf);
ngx_int_t ngx_http_mesh_metrics_parse_traceparent(u_char *p, size_t len,
    ngx_http_mesh_metrics_trace_t *t);

/* export */
ngx_int_t ngx_http_mesh_metrics_export_handler(ngx_http_request_t *r);

/* otlp */
ngx_int_t ngx_http_mesh_metrics_otlp_init_process(ngx_cycle_t *cycle,
    ngx_http_mesh_metrics_main_conf_t *mmcf);
void ngx_http_mesh_metrics_otlp_exit_process(ngx_cycle_t *cycle);
ngx_uint_t ngx_http_mesh_metrics_otlp_sample(
    ngx_http_mesh_metrics_main_conf_t *mmcf, u_char *trace_id);
ngx_int_t ngx_http_mesh_metrics_otlp_log_handler(ngx_http_request_t *r);
void ngx_http_mesh_metrics_otlp_attempt(ngx_http_request_t *r,
    ngx_http_mesh_metrics_trace_t *t, u_char *span);


#pragma GCC visibility pop


/* eight bytes, least significant first: one store on most machines */

static ngx_inline void
ngx_http_mesh_metrics_put64(u_char *p, uint64_t v)
{
    p[0] = (u_char) v;
    p[1] = (u_char) (v >> 8);
    p[2] = (u_char) (v >> 16);
    p[3] = (u_char) (v >> 24);
    p[4] = (u_char) (v >> 32);
    p[5] = (u_char) (v >> 40);
    p[6] = (u_char) (v >> 48);
    p[7] = (u_char) (v >> 56);
}


/* the trace state of a request's main request, made when "create" */

static ngx_inline ngx_http_mesh_metrics_trace_t *
ngx_http_mesh_metrics_state(ngx_http_request_t *r, ngx_uint_t create)
{
    ngx_http_mesh_metrics_trace_t  *t;

    t = ngx_http_get_module_ctx(r->main, ngx_http_mesh_metrics_module);

    return t ? t : ngx_http_mesh_metrics_state_find(r, create);
}


#endif /* _NGX_HTTP_MESH_METRICS_H_INCLUDED_ */
