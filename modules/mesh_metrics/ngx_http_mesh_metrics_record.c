
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_mesh_metrics.h"


/*
 * Request-time recording: the log phase handler counts each finished
 * request into the zone's series (requests, upstream attempts, edges,
 * splits, routes and the other modules' outcomes).  Configuration lives in
 * ngx_http_mesh_metrics_module.c.
 */


static ngx_int_t ngx_http_mesh_metrics_count_usual(ngx_http_request_t *r,
    ngx_http_mesh_metrics_main_conf_t *mmcf,
    ngx_http_mesh_metrics_loc_conf_t *lcf, ngx_str_t *up, ngx_uint_t status,
    ngx_uint_t usec);
static void ngx_http_mesh_metrics_upstream_name(ngx_http_request_t *r,
    ngx_str_t *name);
static ngx_atomic_t *ngx_http_mesh_metrics_count_request(
    ngx_http_request_t *r, ngx_http_mesh_metrics_zone_t *zone,
    ngx_str_t *route, ngx_str_t *up, ngx_uint_t status, ngx_uint_t usec);
static void ngx_http_mesh_metrics_add_request(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_atomic_t *values,
    ngx_uint_t usec);
static ngx_uint_t ngx_http_mesh_metrics_count_attempts(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_str_t *up, ngx_atomic_t **found);
static void ngx_http_mesh_metrics_add_attempt(
    ngx_http_mesh_metrics_zone_t *zone, ngx_atomic_t *values,
    ngx_atomic_t *attempt, ngx_http_upstream_state_t *state);
static void ngx_http_mesh_metrics_count_subrequests(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_str_t *ups, ngx_uint_t *n);
static ngx_atomic_t *ngx_http_mesh_metrics_count_edge(ngx_http_request_t *r,
    ngx_http_mesh_metrics_main_conf_t *mmcf, ngx_str_t *route,
    ngx_str_t *up, ngx_uint_t status, ngx_uint_t usec);
static void ngx_http_mesh_metrics_caller(ngx_http_request_t *r,
    ngx_http_mesh_metrics_main_conf_t *mmcf, ngx_str_t *caller);
static void ngx_http_mesh_metrics_count_splits(ngx_http_request_t *r,
    ngx_http_mesh_metrics_main_conf_t *mmcf, ngx_str_t *route,
    ngx_uint_t status, ngx_uint_t usec);
static ngx_atomic_t *ngx_http_mesh_metrics_count_route(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_str_t *route, ngx_uint_t status,
    ngx_uint_t usec);
static void ngx_http_mesh_metrics_count_modules(ngx_http_request_t *r,
    ngx_http_mesh_metrics_main_conf_t *mmcf, ngx_str_t *route,
    ngx_str_t *up, ngx_uint_t attempts);
static ngx_inline ngx_uint_t ngx_http_mesh_metrics_outcomes(
    ngx_http_mesh_metrics_main_conf_t *mmcf);
static void ngx_http_mesh_metrics_count_auth(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_int_t index, ngx_str_t *route,
    char *name);
static void ngx_http_mesh_metrics_count_parts(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_str_t *route, ngx_str_t *list);
static void ngx_http_mesh_metrics_add(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_uint_t family, ngx_str_t *labels,
    ngx_uint_t nlabels, ngx_uint_t n);
static ngx_uint_t ngx_http_mesh_metrics_var(ngx_http_request_t *r,
    ngx_int_t index, ngx_str_t *value);
static ngx_uint_t ngx_http_mesh_metrics_status(ngx_http_request_t *r);
static ngx_uint_t ngx_http_mesh_metrics_elapsed(ngx_http_request_t *r);


static ngx_str_t  ngx_http_mesh_metrics_none = ngx_string("none");
static ngx_str_t  ngx_http_mesh_metrics_dynamic = ngx_string("dynamic");


ngx_int_t
ngx_http_mesh_metrics_log_handler(ngx_http_request_t *r)
{
    ngx_str_t                           up;
    ngx_str_t                           ups[NGX_HTTP_MESH_METRICS_MAX_EDGES];
    ngx_uint_t                          i, n, attempts, status, usec;
    ngx_http_mesh_metrics_zone_t       *zone;
    ngx_http_mesh_metrics_loc_conf_t   *lcf;
    ngx_http_mesh_metrics_main_conf_t  *mmcf;

    if (r != r->main) {
        return NGX_OK;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_mesh_metrics_module);
    mmcf = ngx_http_get_module_main_conf(r, ngx_http_mesh_metrics_module);

    zone = mmcf->zone;

    if (!lcf->enable || zone == NULL || zone->sh == NULL) {
        return NGX_OK;
    }

    ngx_http_mesh_metrics_upstream_name(r, &up);

    status = ngx_http_mesh_metrics_status(r);
    usec = ngx_http_mesh_metrics_elapsed(r);

    if (ngx_http_mesh_metrics_count_usual(r, mmcf, lcf, &up, status, usec)
        == NGX_OK)
    {
        if (mmcf->splits) {
            ngx_http_mesh_metrics_count_splits(r, mmcf, &lcf->label, status,
                                               usec);
        }

        if (ngx_http_mesh_metrics_outcomes(mmcf)) {
            ngx_http_mesh_metrics_count_modules(r, mmcf, &lcf->label, &up,
                                                1);
        }

        return NGX_OK;
    }

    ngx_http_mesh_metrics_count_request(r, zone, &lcf->label, &up, status,
                                        usec);

    attempts = ngx_http_mesh_metrics_count_attempts(r, zone, &up, NULL);

    /* the edges: to the upstream of the request and of its subrequests */

    n = 0;

    if (r->upstream) {
        ups[n++] = up;
    }

    ngx_http_mesh_metrics_count_subrequests(r, zone, ups, &n);

    if (n == 0) {
        ups[n++] = up;
    }

    for (i = 0; i < n; i++) {
        ngx_http_mesh_metrics_count_edge(r, mmcf, &lcf->label, &ups[i],
                                         status, usec);
    }

    ngx_http_mesh_metrics_count_route(r, zone, &lcf->label, status, usec);

    ngx_http_mesh_metrics_count_splits(r, mmcf, &lcf->label, status, usec);

    ngx_http_mesh_metrics_count_modules(r, mmcf, &lcf->label, &up, attempts);

    return NGX_OK;
}


/*
 * The usual proxied request: a known method, one attempt at a peer of a
 * named upstream group, no subrequest that went upstream.  Its five
 * series (request, upstream, attempt, edge, route) are found together in
 * the worker's memo, by what names them, instead of one by one by their
 * label values; a miss finds them the usual way and fills the memo.
 * NGX_DECLINED: not such a request, nothing counted.
 */

static ngx_int_t
ngx_http_mesh_metrics_count_usual(ngx_http_request_t *r,
    ngx_http_mesh_metrics_main_conf_t *mmcf,
    ngx_http_mesh_metrics_loc_conf_t *lcf, ngx_str_t *up, ngx_uint_t status,
    ngx_uint_t usec)
{
    u_char                            *p;
    size_t                             len;
    ngx_str_t                          caller, *peer;
    ngx_uint_t                         hit;
    ngx_atomic_t                      *found[2];
    ngx_http_upstream_t               *u;
    ngx_http_upstream_state_t         *state;
    ngx_http_mesh_metrics_memo_t      *m;
    ngx_http_mesh_metrics_zone_t      *zone;
    ngx_http_mesh_metrics_trace_t     *t;
    ngx_http_mesh_metrics_memo_key_t   key;

    u = r->upstream;

    if (u == NULL || u->upstream == NULL || u->upstream->host.len == 0
        || r->upstream_states == NULL || r->upstream_states->nelts != 1
        || r->method == NGX_HTTP_UNKNOWN || r->method_name.len == 0
        || status > 0xffff)
    {
        return NGX_DECLINED;
    }

    state = r->upstream_states->elts;
    peer = state->peer;

    if (peer == NULL || state->status > 0xffff) {
        return NGX_DECLINED;
    }

    t = ngx_http_mesh_metrics_state(r, 0);

    if (t && t->subrequests) {
        return NGX_DECLINED;
    }

    ngx_http_mesh_metrics_caller(r, mmcf, &caller);

    len = peer->len + caller.len;

    if (len > NGX_HTTP_MESH_METRICS_MEMO_TEXT) {
        return NGX_DECLINED;
    }

    zone = mmcf->zone;

    key.sh = zone->sh;
    key.lcf = lcf;
    key.upstream = u->upstream;
    key.method = r->method;
    key.status = (uint16_t) status;
    key.peer_status = (uint16_t) state->status;
    key.peer_len = (uint16_t) peer->len;
    key.caller_len = (uint16_t) caller.len;

    /* the text is compared and hashed in words: zeros up to the next */

    p = ngx_cpymem(key.text, peer->data, peer->len);
    p = ngx_cpymem(p, caller.data, caller.len);
    ngx_memzero(p, ngx_align(len, 8) - len);

    m = ngx_http_mesh_metrics_memo(&key, &hit);

    if (hit) {
        ngx_http_mesh_metrics_add_request(r, zone, m->request, usec);
        ngx_http_mesh_metrics_add_attempt(zone, m->upstream, m->attempt,
                                          state);

        if (m->edge) {
            ngx_http_mesh_metrics_count_window(zone, m->edge, status, usec);
        }

        if (m->route) {
            ngx_http_mesh_metrics_count_window(zone, m->route, status, usec);
        }

        return NGX_OK;
    }

    found[0] = NULL;
    found[1] = NULL;

    m->request = ngx_http_mesh_metrics_count_request(r, zone, &lcf->label,
                                                     up, status, usec);
    (void) ngx_http_mesh_metrics_count_attempts(r, zone, up, found);
    m->upstream = found[0];
    m->attempt = found[1];
    m->edge = ngx_http_mesh_metrics_count_edge(r, mmcf, &lcf->label, up,
                                               status, usec);
    m->route = ngx_http_mesh_metrics_count_route(r, zone, &lcf->label,
                                                 status, usec);

    /* a full zone dropped a series: look it up again next time */

    if (m->request && m->upstream && m->attempt && m->edge && m->route) {
        ngx_memcpy(&m->key, &key, offsetof(ngx_http_mesh_metrics_memo_key_t,
                                           text) + ngx_align(len, 8));

    } else {
        m->key.sh = NULL;
    }

    return NGX_OK;
}


static void
ngx_http_mesh_metrics_upstream_name(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char                        *p;
    ngx_http_upstream_t           *u;
    ngx_http_upstream_srv_conf_t  *uscf;

    u = r->upstream;

    if (u == NULL) {
        *name = ngx_http_mesh_metrics_none;
        return;
    }

    uscf = u->upstream;

    if (uscf && uscf->host.len) {
        *name = uscf->host;

        /* a literal "proxy_pass http://host:port" */

        if (uscf->port) {
            p = ngx_pnalloc(r->pool, uscf->host.len + NGX_INT_T_LEN + 1);
            if (p != NULL) {
                name->data = p;
                name->len = ngx_sprintf(p, "%V:%d", &uscf->host, uscf->port)
                            - p;
            }
        }

        return;
    }

    /*
     * proxy_pass with variables that name no upstream group: the host is
     * request data, not a label value (label cardinality stays bounded)
     */

    if (u->resolved) {
        *name = ngx_http_mesh_metrics_dynamic;
        return;
    }

    *name = ngx_http_mesh_metrics_none;
}


static ngx_atomic_t *
ngx_http_mesh_metrics_count_request(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_str_t *route, ngx_str_t *up,
    ngx_uint_t status, ngx_uint_t usec)
{
    u_char         code[NGX_INT_T_LEN];
    ngx_str_t      labels[4];
    ngx_atomic_t  *values;

    labels[0] = *route;

    if (r->method == NGX_HTTP_UNKNOWN || r->method_name.len == 0) {
        ngx_str_set(&labels[1], "other");

    } else {
        labels[1] = r->method_name;
    }

    labels[2].data = code;
    labels[2].len = ngx_http_mesh_metrics_code(code, status) - code;
    labels[3] = *up;

    values = ngx_http_mesh_metrics_find(zone, NGX_HTTP_MESH_METRICS_F_REQUEST,
                                        labels, 4, r->connection->log);

    ngx_http_mesh_metrics_add_request(r, zone, values, usec);

    return values;
}


static void
ngx_http_mesh_metrics_add_request(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_atomic_t *values, ngx_uint_t usec)
{
    if (values == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(&values[NGX_HTTP_MESH_METRICS_V_COUNT], 1);
    (void) ngx_atomic_fetch_add(&values[NGX_HTTP_MESH_METRICS_V_A],
                                (ngx_atomic_int_t) r->request_length);
    (void) ngx_atomic_fetch_add(&values[NGX_HTTP_MESH_METRICS_V_B],
                                (ngx_atomic_int_t) r->connection->sent);

    ngx_http_mesh_metrics_observe(zone, values, usec);
}


static ngx_uint_t
ngx_http_mesh_metrics_count_attempts(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_str_t *up, ngx_atomic_t **found)
{
    u_char                      code[NGX_INT_T_LEN];
    ngx_str_t                   labels[3];
    ngx_uint_t                  i, n;
    ngx_atomic_t               *values, *attempt;
    ngx_http_upstream_state_t  *state;

    if (r->upstream_states == NULL) {
        return 0;
    }

    state = r->upstream_states->elts;
    n = 0;

    for (i = 0; i < r->upstream_states->nelts; i++) {

        if (state[i].peer == NULL) {
            continue;
        }

        n++;

        /*
         * the address of a proxy_pass with variables and no upstream
         * group is request data: one "dynamic" series, not one per port
         * or host a client names
         */

        labels[0] = *up;
        labels[1] = (up->data == ngx_http_mesh_metrics_dynamic.data)
                    ? ngx_http_mesh_metrics_dynamic : *state[i].peer;

        values = ngx_http_mesh_metrics_find(zone,
                                            NGX_HTTP_MESH_METRICS_F_UPSTREAM,
                                            labels, 2, r->connection->log);

        labels[2].data = code;
        labels[2].len = ngx_http_mesh_metrics_code(code, state[i].status)
                        - code;

        attempt = ngx_http_mesh_metrics_find(zone,
                                             NGX_HTTP_MESH_METRICS_F_ATTEMPT,
                                             labels, 3, r->connection->log);

        ngx_http_mesh_metrics_add_attempt(zone, values, attempt, &state[i]);

        if (found) {
            found[0] = values;
            found[1] = attempt;
        }
    }

    return n;
}


static void
ngx_http_mesh_metrics_add_attempt(ngx_http_mesh_metrics_zone_t *zone,
    ngx_atomic_t *values, ngx_atomic_t *attempt,
    ngx_http_upstream_state_t *state)
{
    if (values) {
        (void) ngx_atomic_fetch_add(&values[NGX_HTTP_MESH_METRICS_V_COUNT], 1);
        (void) ngx_atomic_fetch_add(&values[NGX_HTTP_MESH_METRICS_V_A],
                                    (ngx_atomic_int_t) state->bytes_sent);
        (void) ngx_atomic_fetch_add(&values[NGX_HTTP_MESH_METRICS_V_B],
                                    (ngx_atomic_int_t) state->bytes_received);

        if (state->response_time != (ngx_msec_t) -1) {
            ngx_http_mesh_metrics_observe(zone, values,
                                          state->response_time * 1000);
        }
    }

    if (attempt) {
        (void) ngx_atomic_fetch_add(&attempt[0], 1);
    }
}


/*
 * Upstream attempts of subrequests (aggregation parts, auth calls); adds
 * their distinct upstream names to ups (room for MAX_EDGES).
 */

static void
ngx_http_mesh_metrics_count_subrequests(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_str_t *ups, ngx_uint_t *n)
{
    ngx_str_t                       up;
    ngx_uint_t                      i, j;
    ngx_http_request_t            **sr;
    ngx_http_mesh_metrics_trace_t  *t;

    t = ngx_http_mesh_metrics_state(r, 0);

    if (t == NULL || t->subrequests == NULL) {
        return;
    }

    sr = t->subrequests->elts;

    for (i = 0; i < t->subrequests->nelts; i++) {

        /* a subrequest may have gone upstream twice: count it once */

        for (j = 0; j < i; j++) {
            if (sr[j] == sr[i]) {
                break;
            }
        }

        if (j < i) {
            continue;
        }

        ngx_http_mesh_metrics_upstream_name(sr[i], &up);
        (void) ngx_http_mesh_metrics_count_attempts(sr[i], zone, &up, NULL);

        for (j = 0; j < *n; j++) {
            if (ups[j].len == up.len
                && ngx_strncmp(ups[j].data, up.data, up.len) == 0)
            {
                break;
            }
        }

        if (j == *n && *n < NGX_HTTP_MESH_METRICS_MAX_EDGES) {
            ups[(*n)++] = up;
        }
    }
}


static ngx_atomic_t *
ngx_http_mesh_metrics_count_edge(ngx_http_request_t *r,
    ngx_http_mesh_metrics_main_conf_t *mmcf, ngx_str_t *route,
    ngx_str_t *up, ngx_uint_t status, ngx_uint_t usec)
{
    ngx_str_t      labels[3];
    ngx_atomic_t  *values;

    ngx_http_mesh_metrics_caller(r, mmcf, &labels[0]);

    labels[1] = *route;
    labels[2] = *up;

    values = ngx_http_mesh_metrics_find(mmcf->zone,
                                        NGX_HTTP_MESH_METRICS_F_EDGE,
                                        labels, 3, r->connection->log);
    if (values) {
        ngx_http_mesh_metrics_count_window(mmcf->zone, values, status, usec);
    }

    return values;
}


/* the caller of an edge: the first of the identities a request has */

static void
ngx_http_mesh_metrics_caller(ngx_http_request_t *r,
    ngx_http_mesh_metrics_main_conf_t *mmcf, ngx_str_t *caller)
{
    if (!ngx_http_mesh_metrics_var(r, mmcf->peer_id, caller)
        && !ngx_http_mesh_metrics_var(r, mmcf->consumer, caller)
        && !ngx_http_mesh_metrics_var(r, mmcf->subject, caller))
    {
        ngx_str_set(caller, "anonymous");
    }
}


/*
 * The variants of traffic splits this request got, for the dependency
 * map: route -> split -> variant.  Only a value the request has already
 * computed is read (r->variables), never evaluated here: evaluating a
 * split would pick a variant and count a request for it.
 */

static void
ngx_http_mesh_metrics_count_splits(ngx_http_request_t *r,
    ngx_http_mesh_metrics_main_conf_t *mmcf, ngx_str_t *route,
    ngx_uint_t status, ngx_uint_t usec)
{
    ngx_str_t                       labels[3];
    ngx_uint_t                      i;
    ngx_atomic_t                   *values;
    ngx_http_variable_value_t      *vv;
    ngx_http_mesh_metrics_split_t  *split;

    if (mmcf->splits == NULL || r->variables == NULL) {
        return;
    }

    split = mmcf->splits->elts;

    for (i = 0; i < mmcf->splits->nelts; i++) {
        vv = &r->variables[split[i].index];

        if (!vv->valid || vv->not_found || vv->len == 0) {
            continue;
        }

        labels[0] = *route;
        labels[1] = split[i].name;
        labels[2].data = vv->data;
        labels[2].len = vv->len;

        values = ngx_http_mesh_metrics_find(mmcf->zone,
                                            NGX_HTTP_MESH_METRICS_F_SPLIT,
                                            labels, 3, r->connection->log);
        if (values) {
            ngx_http_mesh_metrics_count_window(mmcf->zone, values, status,
                                               usec);
        }
    }
}


/* golden metrics of a route, for the dashboard */

static ngx_atomic_t *
ngx_http_mesh_metrics_count_route(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_str_t *route, ngx_uint_t status,
    ngx_uint_t usec)
{
    ngx_atomic_t  *values;

    values = ngx_http_mesh_metrics_find(zone, NGX_HTTP_MESH_METRICS_F_ROUTE,
                                        route, 1, r->connection->log);
    if (values) {
        ngx_http_mesh_metrics_count_window(zone, values, status, usec);
    }

    return values;
}


static void
ngx_http_mesh_metrics_count_modules(ngx_http_request_t *r,
    ngx_http_mesh_metrics_main_conf_t *mmcf, ngx_str_t *route,
    ngx_str_t *up, ngx_uint_t attempts)
{
    ngx_int_t                      n;
    ngx_str_t                      labels[2];
    ngx_http_mesh_metrics_zone_t  *zone;

    if (!ngx_http_mesh_metrics_outcomes(mmcf) && attempts < 2) {
        return;
    }

    zone = mmcf->zone;

    ngx_http_mesh_metrics_count_auth(r, zone, mmcf->auth_jwt, route, "jwt");
    ngx_http_mesh_metrics_count_auth(r, zone, mmcf->auth_key, route, "key");
    ngx_http_mesh_metrics_count_auth(r, zone, mmcf->auth_introspect, route,
                                     "introspect");

    labels[0] = *route;

    if (ngx_http_mesh_metrics_var(r, mmcf->rate_limit, &labels[1])) {
        ngx_http_mesh_metrics_add(r, zone, NGX_HTTP_MESH_METRICS_F_RATELIMIT,
                                  labels, 2, 1);
    }

    if (ngx_http_mesh_metrics_var(r, mmcf->aggregate, &labels[1])) {
        ngx_http_mesh_metrics_count_parts(r, zone, route, &labels[1]);
    }

    if (ngx_http_mesh_metrics_var(r, mmcf->retries, &labels[1])) {
        n = ngx_atoi(labels[1].data, labels[1].len);

    } else {
        n = attempts > 1 ? (ngx_int_t) attempts - 1 : 0;
    }

    if (n > 0) {
        labels[1] = *up;
        ngx_http_mesh_metrics_add(r, zone, NGX_HTTP_MESH_METRICS_F_RETRIES,
                                  labels, 2, n);
    }
}


/* some module whose outcomes are counted defines its variable */

static ngx_inline ngx_uint_t
ngx_http_mesh_metrics_outcomes(ngx_http_mesh_metrics_main_conf_t *mmcf)
{
    return mmcf->auth_jwt != NGX_ERROR || mmcf->auth_key != NGX_ERROR
           || mmcf->auth_introspect != NGX_ERROR
           || mmcf->rate_limit != NGX_ERROR || mmcf->aggregate != NGX_ERROR
           || mmcf->retries != NGX_ERROR;
}


static void
ngx_http_mesh_metrics_count_auth(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_int_t index, ngx_str_t *route,
    char *name)
{
    ngx_str_t  labels[3];

    if (!ngx_http_mesh_metrics_var(r, index, &labels[2])) {
        return;
    }

    labels[0] = *route;
    labels[1].data = (u_char *) name;
    labels[1].len = ngx_strlen(name);

    ngx_http_mesh_metrics_add(r, zone, NGX_HTTP_MESH_METRICS_F_AUTH, labels,
                              3, 1);
}


/* "$aggregate_failed_parts": space-separated "part:reason" items */

static void
ngx_http_mesh_metrics_count_parts(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_str_t *route, ngx_str_t *list)
{
    u_char     *p, *last, *item, *colon;
    ngx_str_t   labels[3];

    p = list->data;
    last = p + list->len;

    while (p < last) {

        while (p < last && *p == ' ') {
            p++;
        }

        item = p;

        while (p < last && *p != ' ') {
            p++;
        }

        if (p == item) {
            break;
        }

        colon = ngx_strlchr(item, p, ':');

        labels[0] = *route;
        labels[1].data = item;

        if (colon) {
            labels[1].len = colon - item;
            labels[2].data = colon + 1;
            labels[2].len = p - colon - 1;

        } else {
            labels[1].len = p - item;
            ngx_str_set(&labels[2], "unknown");
        }

        ngx_http_mesh_metrics_add(r, zone, NGX_HTTP_MESH_METRICS_F_AGGREGATE,
                                  labels, 3, 1);
    }
}


static void
ngx_http_mesh_metrics_add(ngx_http_request_t *r,
    ngx_http_mesh_metrics_zone_t *zone, ngx_uint_t family, ngx_str_t *labels,
    ngx_uint_t nlabels, ngx_uint_t n)
{
    ngx_atomic_t  *values;

    values = ngx_http_mesh_metrics_find(zone, family, labels, nlabels,
                                        r->connection->log);
    if (values) {
        (void) ngx_atomic_fetch_add(&values[0], n);
    }
}


static ngx_uint_t
ngx_http_mesh_metrics_var(ngx_http_request_t *r, ngx_int_t index,
    ngx_str_t *value)
{
    ngx_http_variable_value_t  *vv;

    if (index == NGX_ERROR) {
        return 0;
    }

    vv = ngx_http_get_indexed_variable(r, index);

    if (vv == NULL || vv->not_found || vv->len == 0) {
        return 0;
    }

    value->data = vv->data;
    value->len = vv->len;

    return 1;
}


static ngx_uint_t
ngx_http_mesh_metrics_status(ngx_http_request_t *r)
{
    if (r->err_status) {
        return r->err_status;
    }

    return r->headers_out.status;
}


static ngx_uint_t
ngx_http_mesh_metrics_elapsed(ngx_http_request_t *r)
{
    ngx_time_t      *tp;
    ngx_msec_int_t   ms;

    tp = ngx_timeofday();

    ms = (ngx_msec_int_t)
             ((tp->sec - r->start_sec) * 1000 + (tp->msec - r->start_msec));

    return (ngx_uint_t) ngx_max(ms, 0) * 1000;
}
