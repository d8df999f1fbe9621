
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <dlfcn.h>
#include "ngx_http_mesh_metrics.h"
#include "ngx_meshgate_prometheus.h"
#include "ngx_meshgate_escape.h"


#define NGX_HTTP_MESH_METRICS_BUF_SIZE  65536
#define NGX_HTTP_MESH_METRICS_HIST      ((ngx_uint_t) -1)

#define NGX_HTTP_MESH_METRICS_ESC_PROM  0
#define NGX_HTTP_MESH_METRICS_ESC_JSON  1
#define NGX_HTTP_MESH_METRICS_ESC_HTML  2


typedef struct {
    ngx_http_request_t             *request;
    ngx_chain_t                    *out;
    ngx_chain_t                   **last;
    ngx_buf_t                      *buf;
    u_char                         *labels;
    ngx_uint_t                      failed;
} ngx_http_mesh_metrics_writer_t;


/* escaped label text: at most twice the key, plus names and quotes */

#define NGX_HTTP_MESH_METRICS_LABELS_SIZE                                     \
    (2 * NGX_HTTP_MESH_METRICS_MAX_KEY + 256)


typedef struct {
    ngx_uint_t                      family;
    char                           *name;
    char                           *type;
    char                           *help;
    ngx_uint_t                      slot;
} ngx_http_mesh_metrics_metric_t;


/*
 * The dependency map's rows: edges (caller, route, upstream), routes, and
 * the variants of traffic splits (route, split, variant in "upstream").
 */

#define NGX_HTTP_MESH_METRICS_NO_WEIGHT  ((ngx_uint_t) -1)

typedef struct {
    ngx_str_t                       caller;
    ngx_str_t                       route;
    ngx_str_t                       split;
    ngx_str_t                       upstream;
    ngx_uint_t                      weight;       /* 0.01 %, or NO_WEIGHT */
    ngx_uint_t                      requests;
    ngx_uint_t                      errors;
    ngx_uint_t                      window_requests;
    ngx_uint_t                      window_errors;
    ngx_uint_t                      buckets[NGX_HTTP_MESH_METRICS_MAX_BUCKETS
                                            + 1];
} ngx_http_mesh_metrics_edge_t;


static ngx_int_t ngx_http_mesh_metrics_prometheus(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_http_mesh_metrics_writer_t *w);
static void ngx_http_mesh_metrics_family(ngx_http_mesh_metrics_writer_t *w,
    ngx_http_mesh_metrics_zone_t *zone, ngx_http_mesh_metrics_metric_t *m);
static void ngx_http_mesh_metrics_sample(ngx_http_mesh_metrics_writer_t *w,
    ngx_http_mesh_metrics_zone_t *zone, ngx_http_mesh_metrics_metric_t *m,
    ngx_http_mesh_metrics_node_t *node);
static u_char *ngx_http_mesh_metrics_labels(u_char *p,
    ngx_http_mesh_metrics_node_t *node, ngx_uint_t nvalues,
    ngx_uint_t family);
static u_char *ngx_http_mesh_metrics_bound(u_char *p, ngx_uint_t usec);
static void ngx_http_mesh_metrics_providers(ngx_http_request_t *r,
    ngx_http_mesh_metrics_writer_t *w);
static ngx_array_t *ngx_http_mesh_metrics_edges(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_uint_t family);
static ngx_array_t *ngx_http_mesh_metrics_splits(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone);
static ngx_int_t ngx_http_mesh_metrics_split_variants(ngx_http_request_t *r,
    ngx_array_t *splits);
static int ngx_libc_cdecl ngx_http_mesh_metrics_split_cmp(const void *one,
    const void *two);
static ngx_int_t ngx_http_mesh_metrics_graph(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_http_mesh_metrics_writer_t *w);
static void ngx_http_mesh_metrics_golden(ngx_http_mesh_metrics_writer_t *w,
    ngx_http_mesh_metrics_zone_t *zone, ngx_http_mesh_metrics_edge_t *e,
    ngx_uint_t json);
static ngx_int_t ngx_http_mesh_metrics_dashboard(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_http_mesh_metrics_writer_t *w);
static void ngx_http_mesh_metrics_split_rows(
    ngx_http_mesh_metrics_writer_t *w, ngx_http_mesh_metrics_zone_t *zone,
    ngx_array_t *splits);
static void ngx_http_mesh_metrics_svg(ngx_http_mesh_metrics_writer_t *w,
    ngx_array_t *edges, ngx_array_t *splits);
static ngx_uint_t ngx_http_mesh_metrics_via_split(ngx_array_t *splits,
    ngx_http_mesh_metrics_edge_t *e);
static void ngx_http_mesh_metrics_curve(ngx_http_mesh_metrics_writer_t *w,
    ngx_uint_t step, ngx_uint_t from, ngx_uint_t a, ngx_uint_t to,
    ngx_uint_t b, ngx_http_mesh_metrics_edge_t *e);
static ngx_uint_t ngx_http_mesh_metrics_node_index(ngx_array_t *names,
    ngx_str_t *name);
static ngx_uint_t ngx_http_mesh_metrics_same(ngx_str_t *a, ngx_str_t *b);
static double ngx_http_mesh_metrics_quantile(
    ngx_http_mesh_metrics_zone_t *zone, ngx_uint_t *buckets, double q);
static u_char *ngx_http_mesh_metrics_reserve(
    ngx_http_mesh_metrics_writer_t *w, size_t size);
static void ngx_http_mesh_metrics_text(ngx_http_mesh_metrics_writer_t *w,
    char *fmt, ...);
static void ngx_http_mesh_metrics_str(ngx_http_mesh_metrics_writer_t *w,
    ngx_str_t *s, ngx_uint_t esc);
static u_char *ngx_http_mesh_metrics_escape(u_char *p, ngx_str_t *s,
    ngx_uint_t esc);


static char  *ngx_http_mesh_metrics_label_names[][4] = {
    { "route", "method", "code", "upstream" },   /* REQUEST */
    { "upstream", "peer", "code", NULL },        /* ATTEMPT */
    { "upstream", "peer", NULL, NULL },          /* UPSTREAM */
    { "caller", "route", "upstream", NULL },     /* EDGE */
    { "route", "auth", "result", NULL },         /* AUTH */
    { "route", "status", NULL, NULL },           /* RATELIMIT */
    { "route", "upstream", NULL, NULL },         /* RETRIES */
    { "route", "part", "reason", NULL },         /* AGGREGATE */
    { "route", NULL, NULL, NULL },               /* ROUTE */
    { "outcome", NULL, NULL, NULL },             /* SPANS */
    { "route", "split", "variant", NULL }        /* SPLIT */
};


static ngx_http_mesh_metrics_metric_t  ngx_http_mesh_metrics_metrics[] = {

    { NGX_HTTP_MESH_METRICS_F_REQUEST, "meshgate_requests_total", "counter",
      "Requests served, by route, method, status code and upstream.",
      NGX_HTTP_MESH_METRICS_V_COUNT },

    { NGX_HTTP_MESH_METRICS_F_REQUEST, "meshgate_request_duration_seconds",
      "histogram",
      "Time from the first byte read from the client to the log phase.",
      NGX_HTTP_MESH_METRICS_HIST },

    { NGX_HTTP_MESH_METRICS_F_REQUEST, "meshgate_request_bytes_total",
      "counter", "Bytes read from clients (request line, headers, body).",
      NGX_HTTP_MESH_METRICS_V_A },

    { NGX_HTTP_MESH_METRICS_F_REQUEST, "meshgate_response_bytes_total",
      "counter", "Bytes sent to clients.", NGX_HTTP_MESH_METRICS_V_B },

    { NGX_HTTP_MESH_METRICS_F_ATTEMPT, "meshgate_upstream_attempts_total",
      "counter", "Upstream attempts (retries included), by peer and status.",
      NGX_HTTP_MESH_METRICS_V_COUNT },

    { NGX_HTTP_MESH_METRICS_F_UPSTREAM,
      "meshgate_upstream_response_duration_seconds", "histogram",
      "Time of each upstream attempt until its response was read.",
      NGX_HTTP_MESH_METRICS_HIST },

    { NGX_HTTP_MESH_METRICS_F_UPSTREAM, "meshgate_upstream_sent_bytes_total",
      "counter", "Bytes sent to upstream peers.", NGX_HTTP_MESH_METRICS_V_A },

    { NGX_HTTP_MESH_METRICS_F_UPSTREAM,
      "meshgate_upstream_received_bytes_total", "counter",
      "Bytes received from upstream peers.", NGX_HTTP_MESH_METRICS_V_B },

    { NGX_HTTP_MESH_METRICS_F_EDGE, "meshgate_edge_requests_total",
      "counter", "Requests by caller, route and upstream.",
      NGX_HTTP_MESH_METRICS_V_COUNT },

    { NGX_HTTP_MESH_METRICS_F_EDGE, "meshgate_edge_errors_total", "counter",
      "Requests answered with a 5xx status, by caller, route and upstream.",
      NGX_HTTP_MESH_METRICS_V_A },

    { NGX_HTTP_MESH_METRICS_F_AUTH, "meshgate_auth_decisions_total",
      "counter", "Authentication outcomes by module and result.", 0 },

    { NGX_HTTP_MESH_METRICS_F_RATELIMIT,
      "meshgate_rate_limit_decisions_total", "counter",
      "Rate-limit decisions by status.", 0 },

    { NGX_HTTP_MESH_METRICS_F_RETRIES, "meshgate_retries_total", "counter",
      "Upstream retries performed.", 0 },

    { NGX_HTTP_MESH_METRICS_F_AGGREGATE,
      "meshgate_aggregate_part_failures_total", "counter",
      "Failed parts of aggregated responses, by part and reason.", 0 },

    { NGX_HTTP_MESH_METRICS_F_SPANS, "meshgate_trace_spans_total",
      "counter", "Spans of the OTLP export by outcome: exported, failed "
      "(the collector did not take them), dropped (the buffer was full).",
      0 },

    { 0, NULL, NULL, NULL, 0 }
};


static char  *ngx_http_mesh_metrics_providers_list[] = {
    NGX_MESHGATE_PROMETHEUS_PROVIDERS,
    NULL
};


ngx_int_t
ngx_http_mesh_metrics_export_handler(ngx_http_request_t *r)
{
    ngx_int_t                           rc;
    ngx_chain_t                        *cl;
    ngx_http_mesh_metrics_zone_t       *zone;
    ngx_http_mesh_metrics_writer_t      w;
    ngx_http_mesh_metrics_loc_conf_t   *lcf;
    ngx_http_mesh_metrics_main_conf_t  *mmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_mesh_metrics_module);
    mmcf = ngx_http_get_module_main_conf(r, ngx_http_mesh_metrics_module);

    zone = mmcf->zone;

    if (zone == NULL || zone->sh == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&w, sizeof(ngx_http_mesh_metrics_writer_t));
    w.request = r;
    w.last = &w.out;

    switch (lcf->export) {

    case NGX_HTTP_MESH_METRICS_EXPORT_PROMETHEUS:
        rc = ngx_http_mesh_metrics_prometheus(r, zone, &w);
        ngx_str_set(&r->headers_out.content_type,
                    "text/plain; version=0.0.4; charset=utf-8");
        break;

    case NGX_HTTP_MESH_METRICS_EXPORT_GRAPH:
        rc = ngx_http_mesh_metrics_graph(r, zone, &w);
        ngx_str_set(&r->headers_out.content_type, "application/json");
        break;

    default: /* NGX_HTTP_MESH_METRICS_EXPORT_DASHBOARD */
        rc = ngx_http_mesh_metrics_dashboard(r, zone, &w);
        ngx_str_set(&r->headers_out.content_type, "text/html; charset=utf-8");
        break;
    }

    if (rc != NGX_OK || w.failed || w.out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = 0;

    for (cl = w.out; cl; cl = cl->next) {
        r->headers_out.content_length_n += ngx_buf_size(cl->buf);
    }

    w.buf->last_buf = (r == r->main) ? 1 : 0;
    w.buf->last_in_chain = 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, w.out);
}


static ngx_int_t
ngx_http_mesh_metrics_prometheus(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_http_mesh_metrics_writer_t *w)
{
    ngx_http_mesh_metrics_metric_t  *m;

    w->labels = ngx_pnalloc(r->pool, NGX_HTTP_MESH_METRICS_LABELS_SIZE);
    if (w->labels == NULL) {
        return NGX_ERROR;
    }

    for (m = ngx_http_mesh_metrics_metrics; m->name; m++) {
        ngx_http_mesh_metrics_family(w, zone, m);
    }

    ngx_http_mesh_metrics_text(w,
        "# HELP meshgate_metrics_series Series held in the metrics zone.\n"
        "# TYPE meshgate_metrics_series gauge\n"
        "meshgate_metrics_series %uA\n"
        "# HELP meshgate_metrics_series_dropped_total Series not recorded "
        "because the metrics zone was full.\n"
        "# TYPE meshgate_metrics_series_dropped_total counter\n"
        "meshgate_metrics_series_dropped_total %uA\n"
        "# HELP meshgate_metrics_zone_series_limit Series the metrics zone "
        "can hold.\n"
        "# TYPE meshgate_metrics_zone_series_limit gauge\n"
        "meshgate_metrics_zone_series_limit %ui\n",
        zone->sh->series, zone->sh->dropped, zone->sh->max_series);

    ngx_http_mesh_metrics_providers(r, w);

    return NGX_OK;
}


static void
ngx_http_mesh_metrics_family(ngx_http_mesh_metrics_writer_t *w,
    ngx_http_mesh_metrics_zone_t *zone, ngx_http_mesh_metrics_metric_t *m)
{
    ngx_uint_t                      i, header;
    ngx_http_mesh_metrics_node_t   *node;
    ngx_http_mesh_metrics_shctx_t  *sh;

    sh = zone->sh;
    header = 0;

    for (i = 0; i < sh->nslots; i++) {
        node = ((ngx_http_mesh_metrics_node_t *volatile *) sh->slots)[i];

        if (node == NULL || node->family != m->family) {
            continue;
        }

        if (!header) {
            ngx_http_mesh_metrics_text(w, "# HELP %s %s\n# TYPE %s %s\n",
                                       m->name, m->help, m->name, m->type);
            header = 1;
        }

        ngx_http_mesh_metrics_sample(w, zone, m, node);
    }
}


static void
ngx_http_mesh_metrics_sample(ngx_http_mesh_metrics_writer_t *w,
    ngx_http_mesh_metrics_zone_t *zone, ngx_http_mesh_metrics_metric_t *m,
    ngx_http_mesh_metrics_node_t *node)
{
    u_char        *p, *labels, *end;
    ngx_uint_t     i, nb, nvalues, cum;
    ngx_atomic_t  *v;

    nb = zone->sh->nbuckets;
    nvalues = ngx_http_mesh_metrics_nvalues(m->family, nb);
    v = node->values;

    labels = w->labels;
    end = ngx_http_mesh_metrics_labels(labels, node, nvalues, m->family);

    if (m->slot != NGX_HTTP_MESH_METRICS_HIST) {
        p = ngx_http_mesh_metrics_reserve(w, (end - labels) + 128);
        if (p == NULL) {
            return;
        }

        w->buf->last = ngx_sprintf(p, "%s{%*s} %uA\n", m->name,
                                   (size_t) (end - labels), labels,
                                   v[m->slot]);
        return;
    }

    cum = 0;

    for (i = 0; i <= nb; i++) {
        cum += v[NGX_HTTP_MESH_METRICS_V_BUCKETS + i];

        p = ngx_http_mesh_metrics_reserve(w, (end - labels) + 128);
        if (p == NULL) {
            return;
        }

        p = ngx_sprintf(p, "%s_bucket{%*s,le=\"", m->name,
                        (size_t) (end - labels), labels);

        if (i < nb) {
            p = ngx_http_mesh_metrics_bound(p, zone->sh->bounds[i]);

        } else {
            p = ngx_cpymem(p, "+Inf", 4);
        }

        w->buf->last = ngx_sprintf(p, "\"} %ui\n", cum);
    }

    p = ngx_http_mesh_metrics_reserve(w, 2 * (end - labels) + 256);
    if (p == NULL) {
        return;
    }

    w->buf->last = ngx_sprintf(p, "%s_sum{%*s} %uA.%06uA\n"
                               "%s_count{%*s} %ui\n",
                               m->name, (size_t) (end - labels), labels,
                               v[NGX_HTTP_MESH_METRICS_V_SUM] / 1000000,
                               v[NGX_HTTP_MESH_METRICS_V_SUM] % 1000000,
                               m->name, (size_t) (end - labels), labels,
                               cum);
}


static u_char *
ngx_http_mesh_metrics_labels(u_char *p, ngx_http_mesh_metrics_node_t *node,
    ngx_uint_t nvalues, ngx_uint_t family)
{
    char       **names;
    ngx_str_t    value;
    ngx_uint_t   i;

    names = ngx_http_mesh_metrics_label_names[family];

    for (i = 0; i < 4 && names[i]; i++) {
        if (!ngx_http_mesh_metrics_label(node, nvalues, i, &value)) {
            ngx_str_set(&value, "");
        }

        if (i) {
            *p++ = ',';
        }

        p = ngx_sprintf(p, "%s=\"", names[i]);
        p = ngx_http_mesh_metrics_escape(p, &value,
                                         NGX_HTTP_MESH_METRICS_ESC_PROM);
        *p++ = '"';
    }

    return p;
}


/* seconds from microseconds, without trailing zeros: 0.005, 1, 2.5 */

static u_char *
ngx_http_mesh_metrics_bound(u_char *p, ngx_uint_t usec)
{
    ngx_uint_t  frac;

    p = ngx_sprintf(p, "%ui", usec / 1000000);
    frac = usec % 1000000;

    if (frac == 0) {
        return p;
    }

    p = ngx_sprintf(p, ".%06ui", frac);

    while (p[-1] == '0') {
        p--;
    }

    return p;
}


/* state metrics of other meshgate modules, when they are loaded */

static void
ngx_http_mesh_metrics_providers(ngx_http_request_t *r,
    ngx_http_mesh_metrics_writer_t *w)
{
    char                        **name;
    ngx_chain_t                  *cl;
    ngx_meshgate_prometheus_pt    provider;

    for (name = ngx_http_mesh_metrics_providers_list; *name; name++) {

        provider = (ngx_meshgate_prometheus_pt) dlsym(RTLD_DEFAULT, *name);

        if (provider == NULL) {
            continue;
        }

        cl = provider(r->pool, r->connection->log);

        for ( /* void */ ; cl; cl = cl->next) {
            if (ngx_buf_size(cl->buf) == 0) {
                continue;
            }

            *w->last = ngx_alloc_chain_link(r->pool);
            if (*w->last == NULL) {
                w->failed = 1;
                return;
            }

            (*w->last)->buf = cl->buf;
            (*w->last)->next = NULL;
            w->last = &(*w->last)->next;

            /* our next text goes into a new buffer after this one */

            w->buf = cl->buf;
            w->buf->last_buf = 0;
            w->buf->last_in_chain = 0;
            w->buf->end = w->buf->last;
        }
    }
}


/*
 * The edges (family EDGE: caller, route, upstream) or the routes (family
 * ROUTE: one node per route, counted once per request), with their
 * golden-metric data.
 */

static ngx_array_t *
ngx_http_mesh_metrics_edges(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_uint_t family)
{
    ngx_uint_t                      i, j, nb, nvalues, req, err;
    ngx_array_t                    *edges;
    ngx_atomic_t                   *v;
    ngx_http_mesh_metrics_edge_t   *e;
    ngx_http_mesh_metrics_node_t   *node;
    ngx_http_mesh_metrics_shctx_t  *sh;

    sh = zone->sh;
    nb = sh->nbuckets;
    nvalues = ngx_http_mesh_metrics_nvalues(family, nb);

    edges = ngx_array_create(r->pool, 16,
                             sizeof(ngx_http_mesh_metrics_edge_t));
    if (edges == NULL) {
        return NULL;
    }

    for (i = 0; i < sh->nslots; i++) {
        node = ((ngx_http_mesh_metrics_node_t *volatile *) sh->slots)[i];

        if (node == NULL || node->family != family) {
            continue;
        }

        e = ngx_array_push(edges);
        if (e == NULL) {
            return NULL;
        }

        ngx_memzero(e, sizeof(ngx_http_mesh_metrics_edge_t));

        e->weight = NGX_HTTP_MESH_METRICS_NO_WEIGHT;

        if (family == NGX_HTTP_MESH_METRICS_F_ROUTE) {
            (void) ngx_http_mesh_metrics_label(node, nvalues, 0, &e->route);

        } else if (family == NGX_HTTP_MESH_METRICS_F_SPLIT) {
            (void) ngx_http_mesh_metrics_label(node, nvalues, 0, &e->route);
            (void) ngx_http_mesh_metrics_label(node, nvalues, 1, &e->split);
            (void) ngx_http_mesh_metrics_label(node, nvalues, 2,
                                               &e->upstream);

        } else {
            (void) ngx_http_mesh_metrics_label(node, nvalues, 0, &e->caller);
            (void) ngx_http_mesh_metrics_label(node, nvalues, 1, &e->route);
            (void) ngx_http_mesh_metrics_label(node, nvalues, 2,
                                               &e->upstream);
        }

        v = node->values;

        e->requests = v[NGX_HTTP_MESH_METRICS_V_COUNT];
        e->errors = v[NGX_HTTP_MESH_METRICS_V_A];

        for (j = 0; j <= nb; j++) {
            e->buckets[j] = v[NGX_HTTP_MESH_METRICS_V_BUCKETS + j];
        }

        ngx_http_mesh_metrics_window_read(zone, v, &req, &err);
        e->window_requests = req;
        e->window_errors = err;
    }

    return edges;
}


/*
 * The variants of traffic splits that requests got, by route, with the
 * weights the splits apply now when the traffic_split module is loaded
 * (it tells them, see ngx_meshgate_prometheus.h).  Variants that no
 * request of a route got yet are added without requests: a canary at 0 %
 * shows too.  Sorted by split, route and variant.
 */

static ngx_array_t *
ngx_http_mesh_metrics_splits(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone)
{
    ngx_array_t  *splits;

    splits = ngx_http_mesh_metrics_edges(r, zone,
                                         NGX_HTTP_MESH_METRICS_F_SPLIT);

    if (splits == NULL || splits->nelts == 0) {
        return splits;
    }

    if (ngx_http_mesh_metrics_split_variants(r, splits) != NGX_OK) {
        return NULL;
    }

    ngx_qsort(splits->elts, splits->nelts,
              sizeof(ngx_http_mesh_metrics_edge_t),
              ngx_http_mesh_metrics_split_cmp);

    return splits;
}


static ngx_int_t
ngx_http_mesh_metrics_split_variants(ngx_http_request_t *r,
    ngx_array_t *splits)
{
    ngx_uint_t                      i, j, k, n;
    ngx_array_t                    *weights;
    ngx_meshgate_splits_pt          provider;
    ngx_meshgate_split_weight_t    *sw;
    ngx_http_mesh_metrics_edge_t   *e, *row;

    provider = (ngx_meshgate_splits_pt) dlsym(RTLD_DEFAULT,
                                              NGX_MESHGATE_SPLITS_PROVIDER);
    if (provider == NULL) {
        return NGX_OK;
    }

    weights = provider(r->pool, r->connection->log);
    if (weights == NULL) {
        return NGX_OK;
    }

    sw = weights->elts;
    n = splits->nelts;      /* the rows that requests made */

    for (k = 0; k < weights->nelts; k++) {

        /* each route that used the split once */

        for (i = 0; i < n; i++) {
            e = splits->elts;

            if (!ngx_http_mesh_metrics_same(&e[i].split, &sw[k].split)) {
                continue;
            }

            for (j = 0; j < i; j++) {
                if (ngx_http_mesh_metrics_same(&e[j].split, &e[i].split)
                    && ngx_http_mesh_metrics_same(&e[j].route, &e[i].route))
                {
                    break;
                }
            }

            if (j < i) {
                continue;
            }

            /* the route's row of this variant, or a new one */

            for (j = 0; j < splits->nelts; j++) {
                if (ngx_http_mesh_metrics_same(&e[j].split, &e[i].split)
                    && ngx_http_mesh_metrics_same(&e[j].route, &e[i].route)
                    && ngx_http_mesh_metrics_same(&e[j].upstream,
                                                  &sw[k].variant))
                {
                    break;
                }
            }

            if (j == splits->nelts) {
                row = ngx_array_push(splits);
                if (row == NULL) {
                    return NGX_ERROR;
                }

                e = splits->elts;

                ngx_memzero(row, sizeof(ngx_http_mesh_metrics_edge_t));
                row->route = e[i].route;
                row->split = e[i].split;
                row->upstream = sw[k].variant;
            }

            e[j].weight = sw[k].weight;
        }
    }

    return NGX_OK;
}


static int ngx_libc_cdecl
ngx_http_mesh_metrics_split_cmp(const void *one, const void *two)
{
    ngx_int_t                      rc;
    ngx_http_mesh_metrics_edge_t  *a, *b;

    a = (ngx_http_mesh_metrics_edge_t *) one;
    b = (ngx_http_mesh_metrics_edge_t *) two;

    rc = ngx_memn2cmp(a->split.data, b->split.data, a->split.len,
                      b->split.len);

    if (rc == 0) {
        rc = ngx_memn2cmp(a->route.data, b->route.data, a->route.len,
                          b->route.len);
    }

    if (rc == 0) {
        rc = ngx_memn2cmp(a->upstream.data, b->upstream.data,
                          a->upstream.len, b->upstream.len);
    }

    return (rc > 0) - (rc < 0);
}


static ngx_int_t
ngx_http_mesh_metrics_graph(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_http_mesh_metrics_writer_t *w)
{
    ngx_uint_t                     i, k;
    ngx_array_t                   *edges, *routes, *splits;
    ngx_http_mesh_metrics_edge_t  *e;

    edges = ngx_http_mesh_metrics_edges(r, zone,
                                        NGX_HTTP_MESH_METRICS_F_EDGE);
    routes = ngx_http_mesh_metrics_edges(r, zone,
                                         NGX_HTTP_MESH_METRICS_F_ROUTE);
    splits = ngx_http_mesh_metrics_splits(r, zone);

    if (edges == NULL || routes == NULL || splits == NULL) {
        return NGX_ERROR;
    }

    ngx_http_mesh_metrics_text(w, "{\"time\":%T,\"window_seconds\":%d,"
                               "\"edges\":[", ngx_time(),
                               NGX_HTTP_MESH_METRICS_WINDOW);

    for (k = 0; k < 2; k++) {
        e = k ? routes->elts : edges->elts;

        for (i = 0; i < (k ? routes->nelts : edges->nelts); i++) {
            ngx_http_mesh_metrics_text(w, "%s\n{", i ? "," : "");

            if (k == 0) {
                ngx_http_mesh_metrics_text(w, "\"caller\":\"");
                ngx_http_mesh_metrics_str(w, &e[i].caller,
                                          NGX_HTTP_MESH_METRICS_ESC_JSON);
                ngx_http_mesh_metrics_text(w, "\",");
            }

            ngx_http_mesh_metrics_text(w, "\"route\":\"");
            ngx_http_mesh_metrics_str(w, &e[i].route,
                                      NGX_HTTP_MESH_METRICS_ESC_JSON);

            if (k == 0) {
                ngx_http_mesh_metrics_text(w, "\",\"upstream\":\"");
                ngx_http_mesh_metrics_str(w, &e[i].upstream,
                                          NGX_HTTP_MESH_METRICS_ESC_JSON);
            }

            ngx_http_mesh_metrics_text(w, "\",");
            ngx_http_mesh_metrics_golden(w, zone, &e[i], 1);
            ngx_http_mesh_metrics_text(w, "}");
        }

        ngx_http_mesh_metrics_text(w, k ? "]" : "],\"routes\":[");
    }

    ngx_http_mesh_metrics_text(w, ",\"splits\":[");

    e = splits->elts;

    for (i = 0; i < splits->nelts; i++) {
        ngx_http_mesh_metrics_text(w, "%s\n{\"route\":\"", i ? "," : "");
        ngx_http_mesh_metrics_str(w, &e[i].route,
                                  NGX_HTTP_MESH_METRICS_ESC_JSON);
        ngx_http_mesh_metrics_text(w, "\",\"split\":\"");
        ngx_http_mesh_metrics_str(w, &e[i].split,
                                  NGX_HTTP_MESH_METRICS_ESC_JSON);
        ngx_http_mesh_metrics_text(w, "\",\"variant\":\"");
        ngx_http_mesh_metrics_str(w, &e[i].upstream,
                                  NGX_HTTP_MESH_METRICS_ESC_JSON);

        if (e[i].weight == NGX_HTTP_MESH_METRICS_NO_WEIGHT) {
            ngx_http_mesh_metrics_text(w, "\",\"weight_percent\":null,");

        } else {
            ngx_http_mesh_metrics_text(w, "\",\"weight_percent\":%ui.%02ui,",
                                       e[i].weight / 100, e[i].weight % 100);
        }

        ngx_http_mesh_metrics_golden(w, zone, &e[i], 1);
        ngx_http_mesh_metrics_text(w, "}");
    }

    ngx_http_mesh_metrics_text(w, "]}\n");

    return NGX_OK;
}


static void
ngx_http_mesh_metrics_golden(ngx_http_mesh_metrics_writer_t *w,
    ngx_http_mesh_metrics_zone_t *zone, ngx_http_mesh_metrics_edge_t *e,
    ngx_uint_t json)
{
    double  rps, error_rate, success;

    rps = (double) e->window_requests / NGX_HTTP_MESH_METRICS_WINDOW;
    error_rate = e->requests ? (double) e->errors / e->requests : 0;
    success = 100.0 * (1.0 - error_rate);

    if (json) {
        ngx_http_mesh_metrics_text(w,
            "\"requests\":%ui,\"errors\":%ui,\"error_rate\":%.4f,"
            "\"rps\":%.2f,\"window_errors\":%ui,"
            "\"p50_ms\":%.3f,\"p95_ms\":%.3f,\"p99_ms\":%.3f",
            e->requests, e->errors, error_rate, rps, e->window_errors,
            ngx_http_mesh_metrics_quantile(zone, e->buckets, 0.5),
            ngx_http_mesh_metrics_quantile(zone, e->buckets, 0.95),
            ngx_http_mesh_metrics_quantile(zone, e->buckets, 0.99));
        return;
    }

    ngx_http_mesh_metrics_text(w,
        "<td>%ui</td><td>%.2f</td><td>%.2f%%</td>"
        "<td>%.1f</td><td>%.1f</td><td>%.1f</td></tr>\n",
        e->requests, rps, success,
        ngx_http_mesh_metrics_quantile(zone, e->buckets, 0.5),
        ngx_http_mesh_metrics_quantile(zone, e->buckets, 0.95),
        ngx_http_mesh_metrics_quantile(zone, e->buckets, 0.99));
}


static ngx_int_t
ngx_http_mesh_metrics_dashboard(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_http_mesh_metrics_writer_t *w)
{
    ngx_uint_t                     i;
    ngx_array_t                   *edges, *routes, *splits;
    ngx_http_mesh_metrics_edge_t  *e;

    edges = ngx_http_mesh_metrics_edges(r, zone,
                                        NGX_HTTP_MESH_METRICS_F_EDGE);
    routes = ngx_http_mesh_metrics_edges(r, zone,
                                         NGX_HTTP_MESH_METRICS_F_ROUTE);
    splits = ngx_http_mesh_metrics_splits(r, zone);

    if (edges == NULL || routes == NULL || splits == NULL) {
        return NGX_ERROR;
    }

    ngx_http_mesh_metrics_text(w,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"refresh\" content=\"5\">"
        "<title>meshgate dependency map</title><style>"
        "body{font-family:sans-serif;margin:1em;color:#222}"
        "table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
        ".node rect{fill:#eef4ff;stroke:#4a6fa5}"
        ".node text{font-size:12px}"
        ".edge{fill:none;stroke:#7a9;stroke-width:2}"
        ".edge.bad{stroke:#d33}"
        ".node[data-kind=split] rect{fill:#fff4e0;stroke:#b8862b}"
        "</style></head><body>\n<h1>meshgate dependency map</h1>\n");

    ngx_http_mesh_metrics_svg(w, edges, splits);

    ngx_http_mesh_metrics_text(w,
        "<h2>Routes</h2>\n<table id=\"routes\"><tr><th>route</th>"
        "<th>requests</th><th>rps (last %ds)</th><th>success</th>"
        "<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>\n",
        NGX_HTTP_MESH_METRICS_WINDOW);

    e = routes->elts;

    for (i = 0; i < routes->nelts; i++) {
        ngx_http_mesh_metrics_text(w, "<tr class=\"route\"><td>");
        ngx_http_mesh_metrics_str(w, &e[i].route,
                                  NGX_HTTP_MESH_METRICS_ESC_HTML);
        ngx_http_mesh_metrics_text(w, "</td>");
        ngx_http_mesh_metrics_golden(w, zone, &e[i], 0);
    }

    ngx_http_mesh_metrics_text(w, "</table>\n");

    ngx_http_mesh_metrics_split_rows(w, zone, splits);

    ngx_http_mesh_metrics_text(w, "</body></html>\n");

    return NGX_OK;
}


static void
ngx_http_mesh_metrics_split_rows(ngx_http_mesh_metrics_writer_t *w,
    ngx_http_mesh_metrics_zone_t *zone, ngx_array_t *splits)
{
    ngx_uint_t                     i;
    ngx_http_mesh_metrics_edge_t  *e;

    if (splits->nelts == 0) {
        return;
    }

    ngx_http_mesh_metrics_text(w,
        "<h2>Traffic splits</h2>\n<table id=\"splits\"><tr><th>split</th>"
        "<th>route</th><th>variant</th><th>weight</th>"
        "<th>requests</th><th>rps (last %ds)</th><th>success</th>"
        "<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>\n",
        NGX_HTTP_MESH_METRICS_WINDOW);

    e = splits->elts;

    for (i = 0; i < splits->nelts; i++) {
        ngx_http_mesh_metrics_text(w, "<tr class=\"split\"><td>");
        ngx_http_mesh_metrics_str(w, &e[i].split,
                                  NGX_HTTP_MESH_METRICS_ESC_HTML);
        ngx_http_mesh_metrics_text(w, "</td><td>");
        ngx_http_mesh_metrics_str(w, &e[i].route,
                                  NGX_HTTP_MESH_METRICS_ESC_HTML);
        ngx_http_mesh_metrics_text(w, "</td><td>");
        ngx_http_mesh_metrics_str(w, &e[i].upstream,
                                  NGX_HTTP_MESH_METRICS_ESC_HTML);

        if (e[i].weight == NGX_HTTP_MESH_METRICS_NO_WEIGHT) {
            ngx_http_mesh_metrics_text(w, "</td><td>-</td>");

        } else {
            ngx_http_mesh_metrics_text(w, "</td><td>%ui.%02ui%%</td>",
                                       e[i].weight / 100, e[i].weight % 100);
        }

        ngx_http_mesh_metrics_golden(w, zone, &e[i], 0);
    }

    ngx_http_mesh_metrics_text(w, "</table>\n");
}


/*
 * Callers, routes and upstreams in three columns, edges between them; with
 * traffic splits, a column of splits before the upstreams: a route goes
 * to its split, the split to its variants (named like the upstream blocks
 * they select when used in proxy_pass).
 */

static void
ngx_http_mesh_metrics_svg(ngx_http_mesh_metrics_writer_t *w,
    ngx_array_t *edges, ngx_array_t *splits)
{
    ngx_str_t                     *name;
    ngx_uint_t                     i, j, k, a, b, rows, last, step;
    ngx_array_t                   *cols[4];
    ngx_http_mesh_metrics_edge_t  *e, *s, sum;

    static char  *kinds[] = { "caller", "route", "split", "upstream" };

    last = splits->nelts ? 3 : 2;
    step = splits->nelts ? 240 : 320;

    for (k = 0; k <= last; k++) {
        cols[k] = ngx_array_create(w->request->pool, 8, sizeof(ngx_str_t));
        if (cols[k] == NULL) {
            w->failed = 1;
            return;
        }
    }

    e = edges->elts;
    s = splits->elts;
    rows = 1;

    for (i = 0; i < edges->nelts; i++) {
        (void) ngx_http_mesh_metrics_node_index(cols[0], &e[i].caller);
        (void) ngx_http_mesh_metrics_node_index(cols[1], &e[i].route);
        (void) ngx_http_mesh_metrics_node_index(cols[last], &e[i].upstream);
    }

    for (i = 0; i < splits->nelts; i++) {
        (void) ngx_http_mesh_metrics_node_index(cols[1], &s[i].route);
        (void) ngx_http_mesh_metrics_node_index(cols[2], &s[i].split);
        (void) ngx_http_mesh_metrics_node_index(cols[last], &s[i].upstream);
    }

    for (k = 0; k <= last; k++) {
        rows = ngx_max(rows, cols[k]->nelts);
    }

    ngx_http_mesh_metrics_text(w, "<svg id=\"graph\" width=\"%ui\" "
                               "height=\"%ui\" xmlns=\"http://www.w3.org/"
                               "2000/svg\">\n", last * step + 260,
                               rows * 50 + 20);

    for (i = 0; i < edges->nelts; i++) {
        a = ngx_http_mesh_metrics_node_index(cols[0], &e[i].caller);
        b = ngx_http_mesh_metrics_node_index(cols[1], &e[i].route);
        ngx_http_mesh_metrics_curve(w, step, 0, a, 1, b, &e[i]);

        /* a route that goes through a split is drawn through it below */

        if (ngx_http_mesh_metrics_via_split(splits, &e[i])) {
            continue;
        }

        a = b;
        b = ngx_http_mesh_metrics_node_index(cols[last], &e[i].upstream);
        ngx_http_mesh_metrics_curve(w, step, 1, a, last, b, &e[i]);
    }

    /*
     * route -> split: the rows of a route and split are next to each
     * other (sorted); split -> variant: summed over the routes
     */

    for (i = 0; i < splits->nelts; i++) {

        if (i == 0
            || !ngx_http_mesh_metrics_same(&s[i].split, &s[i - 1].split)
            || !ngx_http_mesh_metrics_same(&s[i].route, &s[i - 1].route))
        {
            ngx_memzero(&sum, sizeof(ngx_http_mesh_metrics_edge_t));
            sum.weight = NGX_HTTP_MESH_METRICS_NO_WEIGHT;

            for (j = i; j < splits->nelts; j++) {
                if (!ngx_http_mesh_metrics_same(&s[j].split, &s[i].split)
                    || !ngx_http_mesh_metrics_same(&s[j].route, &s[i].route))
                {
                    break;
                }

                sum.requests += s[j].requests;
                sum.errors += s[j].errors;
            }

            a = ngx_http_mesh_metrics_node_index(cols[1], &s[i].route);
            b = ngx_http_mesh_metrics_node_index(cols[2], &s[i].split);
            ngx_http_mesh_metrics_curve(w, step, 1, a, 2, b, &sum);
        }

        for (j = 0; j < i; j++) {
            if (ngx_http_mesh_metrics_same(&s[j].split, &s[i].split)
                && ngx_http_mesh_metrics_same(&s[j].upstream,
                                              &s[i].upstream))
            {
                break;
            }
        }

        if (j < i) {
            continue;
        }

        sum = s[i];

        for (j = i + 1; j < splits->nelts; j++) {
            if (ngx_http_mesh_metrics_same(&s[j].split, &s[i].split)
                && ngx_http_mesh_metrics_same(&s[j].upstream,
                                              &s[i].upstream))
            {
                sum.requests += s[j].requests;
                sum.errors += s[j].errors;
            }
        }

        a = ngx_http_mesh_metrics_node_index(cols[2], &s[i].split);
        b = ngx_http_mesh_metrics_node_index(cols[last], &s[i].upstream);
        ngx_http_mesh_metrics_curve(w, step, 2, a, last, b, &sum);
    }

    for (k = 0; k <= last; k++) {
        name = cols[k]->elts;

        for (i = 0; i < cols[k]->nelts; i++) {
            ngx_http_mesh_metrics_text(w,
                "<g class=\"node\" data-kind=\"%s\"><rect x=\"%ui\" "
                "y=\"%ui\" width=\"180\" height=\"30\" rx=\"5\"/>"
                "<text x=\"%ui\" y=\"%ui\">",
                kinds[k == last ? 3 : k], 20 + k * step, 20 + i * 50,
                28 + k * step, 40 + i * 50);
            ngx_http_mesh_metrics_str(w, &name[i],
                                      NGX_HTTP_MESH_METRICS_ESC_HTML);
            ngx_http_mesh_metrics_text(w, "</text></g>\n");
        }
    }

    ngx_http_mesh_metrics_text(w, "</svg>\n");
}


/* whether the edge's route reaches its upstream as a split's variant */

static ngx_uint_t
ngx_http_mesh_metrics_via_split(ngx_array_t *splits,
    ngx_http_mesh_metrics_edge_t *e)
{
    ngx_uint_t                     i;
    ngx_http_mesh_metrics_edge_t  *s;

    s = splits->elts;

    for (i = 0; i < splits->nelts; i++) {
        if (ngx_http_mesh_metrics_same(&s[i].route, &e->route)
            && ngx_http_mesh_metrics_same(&s[i].upstream, &e->upstream))
        {
            return 1;
        }
    }

    return 0;
}


/* an edge from node a of column "from" to node b of column "to" */

static void
ngx_http_mesh_metrics_curve(ngx_http_mesh_metrics_writer_t *w,
    ngx_uint_t step, ngx_uint_t from, ngx_uint_t a, ngx_uint_t to,
    ngx_uint_t b, ngx_http_mesh_metrics_edge_t *e)
{
    ngx_uint_t  x0, x1;

    x0 = 200 + from * step;
    x1 = 20 + to * step;

    ngx_http_mesh_metrics_text(w,
        "<path class=\"edge%s\" d=\"M%ui %ui C%ui %ui %ui %ui %ui %ui\">"
        "<title>%ui requests, %ui errors",
        e->errors * 20 > e->requests ? " bad" : "",
        x0, 35 + a * 50, (x0 + x1) / 2, 35 + a * 50,
        (x0 + x1) / 2, 35 + b * 50, x1, 35 + b * 50,
        e->requests, e->errors);

    if (e->weight != NGX_HTTP_MESH_METRICS_NO_WEIGHT) {
        ngx_http_mesh_metrics_text(w, ", weight %ui.%02ui%%",
                                   e->weight / 100, e->weight % 100);
    }

    ngx_http_mesh_metrics_text(w, "</title></path>\n");
}


static ngx_uint_t
ngx_http_mesh_metrics_node_index(ngx_array_t *names, ngx_str_t *name)
{
    ngx_str_t   *s;
    ngx_uint_t   i;

    s = names->elts;

    for (i = 0; i < names->nelts; i++) {
        if (s[i].len == name->len
            && ngx_strncmp(s[i].data, name->data, name->len) == 0)
        {
            return i;
        }
    }

    s = ngx_array_push(names);
    if (s == NULL) {
        return 0;
    }

    *s = *name;

    return i;
}


static ngx_uint_t
ngx_http_mesh_metrics_same(ngx_str_t *a, ngx_str_t *b)
{
    return a->len == b->len && ngx_strncmp(a->data, b->data, a->len) == 0;
}


/* a quantile in milliseconds, interpolated inside its bucket */

static double
ngx_http_mesh_metrics_quantile(ngx_http_mesh_metrics_zone_t *zone,
    ngx_uint_t *buckets, double q)
{
    double       rank, lower, upper;
    ngx_uint_t   i, nb, total, cum, prev;

    nb = zone->sh->nbuckets;
    total = 0;

    for (i = 0; i <= nb; i++) {
        total += buckets[i];
    }

    if (total == 0) {
        return 0;
    }

    rank = q * total;
    cum = 0;

    for (i = 0; i <= nb; i++) {
        prev = cum;
        cum += buckets[i];

        if ((double) cum >= rank && buckets[i]) {
            break;
        }
    }

    if (i >= nb) {
        return zone->sh->bounds[nb - 1] / 1000.0;
    }

    lower = i ? zone->sh->bounds[i - 1] : 0;
    upper = zone->sh->bounds[i];

    return (lower + (upper - lower) * (rank - prev) / (cum - prev)) / 1000.0;
}


static u_char *
ngx_http_mesh_metrics_reserve(ngx_http_mesh_metrics_writer_t *w, size_t size)
{
    size_t        n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (w->failed) {
        return NULL;
    }

    b = w->buf;

    if (b && (size_t) (b->end - b->last) >= size) {
        return b->last;
    }

    n = ngx_max(size, NGX_HTTP_MESH_METRICS_BUF_SIZE);

    b = ngx_create_temp_buf(w->request->pool, n);
    cl = ngx_alloc_chain_link(w->request->pool);

    if (b == NULL || cl == NULL) {
        w->failed = 1;
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;
    *w->last = cl;
    w->last = &cl->next;
    w->buf = b;

    return b->last;
}


static void
ngx_http_mesh_metrics_text(ngx_http_mesh_metrics_writer_t *w, char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    p = ngx_http_mesh_metrics_reserve(w, 1024);
    if (p == NULL) {
        return;
    }

    va_start(args, fmt);
    w->buf->last = ngx_vslprintf(p, w->buf->end, fmt, args);
    va_end(args);
}


static void
ngx_http_mesh_metrics_str(ngx_http_mesh_metrics_writer_t *w, ngx_str_t *s,
    ngx_uint_t esc)
{
    u_char  *p;

    p = ngx_http_mesh_metrics_reserve(w, s->len * 6 + 1);
    if (p == NULL) {
        return;
    }

    w->buf->last = ngx_http_mesh_metrics_escape(p, s, esc);
}


/*
 * Label values and JSON strings go through the one escaper of common
 * (label values hold no control characters anyway, see key_add); only
 * the dashboard's HTML escaping is this module's own.
 */

static u_char *
ngx_http_mesh_metrics_escape(u_char *p, ngx_str_t *s, ngx_uint_t esc)
{
    u_char      c;
    ngx_uint_t  i;

    if (esc == NGX_HTTP_MESH_METRICS_ESC_PROM) {
        return ngx_meshgate_escape(p, s->data, s->len,
                                   NGX_MESHGATE_ESCAPE_LABEL);
    }

    if (esc == NGX_HTTP_MESH_METRICS_ESC_JSON) {
        return ngx_meshgate_escape(p, s->data, s->len,
                                   NGX_MESHGATE_ESCAPE_JSON);
    }

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        switch (c) {
        case '<':
            p = ngx_cpymem(p, "&lt;", 4);
            continue;
        case '>':
            p = ngx_cpymem(p, "&gt;", 4);
            continue;
        case '&':
            p = ngx_cpymem(p, "&amp;", 5);
            continue;
        case '"':
            p = ngx_cpymem(p, "&quot;", 6);
            continue;
        case '\'':
            p = ngx_cpymem(p, "&#39;", 5);
            continue;
        }

        *p++ = c;
    }

    return p;
}
