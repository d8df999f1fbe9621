
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_mesh_metrics.h"


/*
 * OTLP/HTTP export of spans, protobuf-encoded by hand (the messages are
 * small and fixed: no library, no allocation per span).  Each worker
 * keeps the spans it finished in one buffer of bounded size; a batch
 * leaves when it holds "batch" spans or at every "interval", over a
 * non-blocking connection to the collector with timeouts, while the next
 * batch fills; the connection is kept alive between exports (see
 * ngx_http_mesh_metrics_otlp_idle()).  A span that finds the buffer full
 * is dropped and counted; a failed export is logged and counted, and the
 * next one waits for a backoff that doubles up to a minute.  Requests
 * never wait for any of it, and while the buffer is full (or, after a
 * failure, holds a batch) they build no span until the next export
 * empties it: a dead collector costs a request one test.
 */


#define NGX_HTTP_MESH_METRICS_OTLP_MAX         1024   /* one span */
#define NGX_HTTP_MESH_METRICS_OTLP_TIMEOUT     5000
#define NGX_HTTP_MESH_METRICS_OTLP_BACKOFF_MAX 60000
#define NGX_HTTP_MESH_METRICS_OTLP_ATTEMPTS    32

/*
 * a kept-alive connection: idle for 30s at most, shorter than collectors
 * usually keep theirs, so that mostly this side closes it (no request
 * racing the collector's close), and reused only after an answer read
 * whole, its head bounded and its body short
 */

#define NGX_HTTP_MESH_METRICS_OTLP_IDLE        30000
#define NGX_HTTP_MESH_METRICS_OTLP_HEAD        4096
#define NGX_HTTP_MESH_METRICS_OTLP_BODY        65536

/* protobuf wire types */
#define NGX_HTTP_MESH_METRICS_PB_VARINT        0
#define NGX_HTTP_MESH_METRICS_PB_FIXED64       1
#define NGX_HTTP_MESH_METRICS_PB_LEN           2

#define ngx_http_mesh_metrics_pb_tag(field, type)                             \
    (u_char) (((field) << 3) | (type))

/* attribute keys are literals: their length is known when compiling */

#define ngx_http_mesh_metrics_pb_kv_str(p, field, key, value, len)           \
    ngx_http_mesh_metrics_pb_kv(p, field, (u_char *) key, sizeof(key) - 1,  \
                                value, len)
#define ngx_http_mesh_metrics_pb_kv_int(p, key, value)                        \
    ngx_http_mesh_metrics_pb_kv_num(p, (u_char *) key, sizeof(key) - 1,     \
                                    value)


/*
 * A worker's copies of span parts that configuration and a few request
 * facts decide (a location's route, the method, the status; an upstream
 * group, the peer's address), as encoded last time: a span whose parts
 * are the same copies them instead of encoding them again.  The entries
 * live with the worker's export state, made anew in each worker.
 */

#define NGX_HTTP_MESH_METRICS_OTLP_CACHE    8
#define NGX_HTTP_MESH_METRICS_OTLP_PART     240
#define NGX_HTTP_MESH_METRICS_OTLP_PEER     48


typedef struct {
    void                           *conf;        /* lcf or uscf */
    ngx_uint_t                      method;      /* 0: empty */
    ngx_uint_t                      status;
    size_t                          peer_len;
    u_char                          peer[NGX_HTTP_MESH_METRICS_OTLP_PEER];
    size_t                          head_len;
    size_t                          len;
    u_char                          bytes[2 * NGX_HTTP_MESH_METRICS_OTLP_PART];
} ngx_http_mesh_metrics_otlp_part_t;


typedef struct {
    ngx_http_mesh_metrics_otlp_t   *conf;
    ngx_http_mesh_metrics_zone_t   *zone;

    /* span parts kept, by route and by upstream */

    ngx_http_mesh_metrics_otlp_part_t
                                   server[NGX_HTTP_MESH_METRICS_OTLP_CACHE];
    ngx_http_mesh_metrics_otlp_part_t
                                   client[NGX_HTTP_MESH_METRICS_OTLP_CACHE];

    /*
     * two buffers of "head" bytes for the envelope then "cap" bytes of
     * spans: one fills while the other is in flight, and they swap at an
     * export (the spans are not copied)
     */

    u_char                         *spans;       /* the batch filling */
    size_t                          len;
    size_t                          cap;
    ngx_uint_t                      nspans;

    u_char                         *out;         /* the batch in flight */
    u_char                         *head;        /* envelope, built here */
    size_t                          head_cap;
    ngx_uint_t                      out_spans;
    u_char                         *pos;
    u_char                         *last;

    ngx_peer_connection_t           pc;
    ngx_event_t                     timer;
    ngx_msec_t                      next_try;
    ngx_uint_t                      failures;
    ngx_uint_t                      dropped;      /* not counted yet */
    unsigned                        busy:1;
    unsigned                        full:1;       /* until a flush */

    /* the connection: reused for this export, kept for the next one */

    unsigned                        reused:1;
    unsigned                        keep:1;
    unsigned                        in_body:1;

    u_char                         *start;       /* the request, to resend */
    size_t                          body_left;

    u_char                          reply[NGX_HTTP_MESH_METRICS_OTLP_HEAD];
    size_t                          reply_len;
} ngx_http_mesh_metrics_otlp_state_t;


static void ngx_http_mesh_metrics_otlp_count(
    ngx_http_mesh_metrics_otlp_state_t *st, char *outcome, ngx_uint_t n);
static void ngx_http_mesh_metrics_otlp_timer_handler(ngx_event_t *ev);
static void ngx_http_mesh_metrics_otlp_flush(
    ngx_http_mesh_metrics_otlp_state_t *st);
static void ngx_http_mesh_metrics_otlp_encode(
    ngx_http_mesh_metrics_otlp_state_t *st);
static void ngx_http_mesh_metrics_otlp_connect(
    ngx_http_mesh_metrics_otlp_state_t *st);
static void ngx_http_mesh_metrics_otlp_write_handler(ngx_event_t *wev);
static void ngx_http_mesh_metrics_otlp_read_handler(ngx_event_t *rev);
static void ngx_http_mesh_metrics_otlp_answer(
    ngx_http_mesh_metrics_otlp_state_t *st, u_char *end);
static ngx_int_t ngx_http_mesh_metrics_otlp_head(
    ngx_http_mesh_metrics_otlp_state_t *st, u_char *end);
static void ngx_http_mesh_metrics_otlp_header(
    ngx_http_mesh_metrics_otlp_state_t *st, u_char *p, u_char *last,
    off_t *length);
static void ngx_http_mesh_metrics_otlp_body(
    ngx_http_mesh_metrics_otlp_state_t *st);
static ngx_uint_t ngx_http_mesh_metrics_otlp_retry(
    ngx_http_mesh_metrics_otlp_state_t *st);
static void ngx_http_mesh_metrics_otlp_reuse(
    ngx_http_mesh_metrics_otlp_state_t *st);
static void ngx_http_mesh_metrics_otlp_idle(
    ngx_http_mesh_metrics_otlp_state_t *st);
static void ngx_http_mesh_metrics_otlp_idle_handler(ngx_event_t *rev);
static void ngx_http_mesh_metrics_otlp_close(
    ngx_http_mesh_metrics_otlp_state_t *st);
static void ngx_http_mesh_metrics_otlp_sent_handler(ngx_event_t *wev);
static void ngx_http_mesh_metrics_otlp_done(
    ngx_http_mesh_metrics_otlp_state_t *st, char *error);
static u_char *ngx_http_mesh_metrics_otlp_room(
    ngx_http_mesh_metrics_otlp_state_t *st, u_char *stack);
static void ngx_http_mesh_metrics_otlp_add(
    ngx_http_mesh_metrics_otlp_state_t *st, u_char *span, size_t len);
static u_char *ngx_http_mesh_metrics_otlp_server_span(u_char *p,
    ngx_http_request_t *r, ngx_http_mesh_metrics_trace_t *t,
    ngx_http_mesh_metrics_loc_conf_t *lcf);
static u_char *ngx_http_mesh_metrics_otlp_client_span(u_char *p,
    ngx_http_mesh_metrics_trace_t *t, ngx_http_mesh_metrics_attempt_t *a);
static ngx_http_upstream_state_t *ngx_http_mesh_metrics_otlp_state(
    ngx_http_mesh_metrics_attempt_t *a);
static u_char *ngx_http_mesh_metrics_otlp_peer(u_char *p, ngx_str_t *peer);
static ngx_int_t ngx_http_mesh_metrics_otlp_port(u_char *p, size_t len);
static void ngx_http_mesh_metrics_otlp_method(ngx_http_request_t *r,
    ngx_str_t *method);
static ngx_inline void ngx_http_mesh_metrics_otlp_text(ngx_str_t *text,
    ngx_http_mesh_metrics_key_t *key, ngx_str_t *value);
static u_char *ngx_http_mesh_metrics_otlp_error(u_char *p);
static ngx_inline u_char *ngx_http_mesh_metrics_pb_varint(u_char *p,
    uint64_t v);
static u_char *ngx_http_mesh_metrics_pb_varint_long(u_char *p, uint64_t v);
static ngx_inline u_char *ngx_http_mesh_metrics_pb_bytes(u_char *p,
    ngx_uint_t field, u_char *data, size_t len);
static ngx_inline u_char *ngx_http_mesh_metrics_pb_fixed64(u_char *p,
    ngx_uint_t field, uint64_t v);
/* inlined: the key's length is then a constant, and so its copy */
static ngx_inline u_char *ngx_http_mesh_metrics_pb_kv(u_char *p,
    ngx_uint_t field, u_char *key, size_t klen, u_char *value, size_t len);
static u_char *ngx_http_mesh_metrics_pb_kv_long(u_char *p, ngx_uint_t field,
    u_char *key, size_t klen, u_char *value, size_t len);
static ngx_inline u_char *ngx_http_mesh_metrics_pb_kv_num(u_char *p,
    u_char *key, size_t klen, int64_t value);
static ngx_inline size_t ngx_http_mesh_metrics_pb_varint_len(uint64_t v);
static uint64_t ngx_http_mesh_metrics_otlp_now(void);


static ngx_http_mesh_metrics_otlp_state_t  *ngx_http_mesh_metrics_otlp;


ngx_int_t
ngx_http_mesh_metrics_otlp_init_process(ngx_cycle_t *cycle,
    ngx_http_mesh_metrics_main_conf_t *mmcf)
{
    ngx_http_mesh_metrics_otlp_t        *conf;
    ngx_http_mesh_metrics_otlp_state_t  *st;

    ngx_http_mesh_metrics_otlp = NULL;

    conf = mmcf->otlp;

    if (conf == NULL) {
        return NGX_OK;
    }

    st = ngx_pcalloc(cycle->pool, sizeof(ngx_http_mesh_metrics_otlp_state_t));
    if (st == NULL) {
        return NGX_ERROR;
    }

    st->conf = conf;
    st->zone = mmcf->zone;
    st->cap = conf->batch * NGX_HTTP_MESH_METRICS_OTLP_MAX;

    /* the request line, headers and the envelope, then the spans */

    st->head_cap = 512 + conf->host.len + conf->uri.len + conf->service.len;

    st->head = ngx_palloc(cycle->pool, 2 * (st->head_cap + st->cap)
                                       + st->head_cap);
    if (st->head == NULL) {
        return NGX_ERROR;
    }

    st->spans = st->head + 2 * st->head_cap;
    st->out = st->spans + st->cap + st->head_cap;

    st->timer.handler = ngx_http_mesh_metrics_otlp_timer_handler;
    st->timer.data = st;
    st->timer.log = cycle->log;
    st->timer.cancelable = 1;

    ngx_add_timer(&st->timer, conf->interval);

    ngx_http_mesh_metrics_otlp = st;

    return NGX_OK;
}


/*
 * A worker that exits does not wait for an export in flight nor for an
 * idle connection (their timers are cancelable); the connection is closed
 * here, before nginx looks for sockets left open.  Spans not yet sent are
 * lost with the worker.
 */

void
ngx_http_mesh_metrics_otlp_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_mesh_metrics_otlp_state_t  *st;

    st = ngx_http_mesh_metrics_otlp;

    if (st == NULL) {
        return;
    }

    if (st->pc.connection) {
        ngx_close_connection(st->pc.connection);
        st->pc.connection = NULL;
    }

    ngx_http_mesh_metrics_otlp = NULL;
}


/*
 * Sampling of a trace that starts here: "ratio:" keeps a share of trace
 * ids (the same decision wherever the id is judged the same way); a
 * continued trace keeps its parent's decision.
 */

ngx_uint_t
ngx_http_mesh_metrics_otlp_sample(ngx_http_mesh_metrics_main_conf_t *mmcf,
    u_char *trace_id)
{
    uint32_t  v;

    if (mmcf->otlp == NULL || mmcf->otlp->ratio == NGX_CONF_UNSET_UINT) {
        return 1;
    }

    /* the last four bytes of the id: random in W3C Level 2 ids */

    v = ((uint32_t) trace_id[12] << 24) | ((uint32_t) trace_id[13] << 16)
        | ((uint32_t) trace_id[14] << 8) | trace_id[15];

    return (uint64_t) v * 1000000 < (uint64_t) mmcf->otlp->ratio
                                    * 0x100000000ULL;
}


/* the log phase of a main request: its server span and client spans */

ngx_int_t
ngx_http_mesh_metrics_otlp_log_handler(ngx_http_request_t *r)
{
    u_char                              *p, *b;
    u_char                               span[NGX_HTTP_MESH_METRICS_OTLP_MAX];
    ngx_uint_t                           i;
    ngx_http_mesh_metrics_attempt_t     *a;
    ngx_http_mesh_metrics_trace_t       *t;
    ngx_http_mesh_metrics_loc_conf_t    *lcf;
    ngx_http_mesh_metrics_otlp_state_t  *st;

    st = ngx_http_mesh_metrics_otlp;

    if (st == NULL || r != r->main) {
        return NGX_OK;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_mesh_metrics_module);
    t = ngx_http_mesh_metrics_state(r, 0);

    if (!lcf->trace || t == NULL || !t->trace_ready || !(t->flags & 0x01)) {
        return NGX_OK;
    }

    /*
     * spans that cannot leave (the collector is down or slow) have filled
     * the buffer: these are dropped before any work goes into them, unless
     * the backoff is over and the held batch leaves now
     */

    if (st->full) {
        ngx_http_mesh_metrics_otlp_flush(st);
    }

    if (st->full) {
        st->dropped += 1 + (t->attempts ? t->attempts->nelts : 0);
        return NGX_OK;
    }

    b = ngx_http_mesh_metrics_otlp_room(st, span);
    p = ngx_http_mesh_metrics_otlp_server_span(b, r, t, lcf);
    ngx_http_mesh_metrics_otlp_add(st, b, p - b);

    if (t->attempts == NULL) {
        return NGX_OK;
    }

    a = t->attempts->elts;

    for (i = 0; i < t->attempts->nelts; i++) {
        b = ngx_http_mesh_metrics_otlp_room(st, span);
        p = ngx_http_mesh_metrics_otlp_client_span(b, t, &a[i]);
        ngx_http_mesh_metrics_otlp_add(st, b, p - b);
    }

    return NGX_OK;
}


/* a note of an upstream attempt, for its client span */

void
ngx_http_mesh_metrics_otlp_attempt(ngx_http_request_t *r,
    ngx_http_mesh_metrics_trace_t *t, u_char *span)
{
    ngx_uint_t                           i, n;
    ngx_http_mesh_metrics_attempt_t     *a;
    ngx_http_mesh_metrics_otlp_state_t  *st;

    st = ngx_http_mesh_metrics_otlp;

    /* a trace not sampled exports no span */

    if (st == NULL || !(t->flags & 0x01)) {
        return;
    }

    /*
     * while the buffer is full, the client span is dropped now, with no
     * note kept (should the buffer empty meanwhile, the server span
     * leaves without it)
     */

    if (st->full) {
        st->dropped++;
        return;
    }

    /*
     * the first attempts fit in the trace state; ngx_array_push() moves
     * the array into the pool when it outgrows them
     */

    if (t->attempts == NULL) {
        t->attempts = &t->attempts_array;
        t->attempts->elts = t->attempt;
        t->attempts->nelts = 0;
        t->attempts->size = sizeof(ngx_http_mesh_metrics_attempt_t);
        t->attempts->nalloc = 2;
        t->attempts->pool = r->main->pool;
    }

    /* bounded: a client span per attempt up to a limit */

    if (t->attempts->nelts >= NGX_HTTP_MESH_METRICS_OTLP_ATTEMPTS) {
        return;
    }

    a = t->attempts->elts;
    n = 0;

    for (i = 0; i < t->attempts->nelts; i++) {
        if (a[i].request == r) {
            n++;
        }
    }

    if (t->attempts->nelts < t->attempts->nalloc) {
        a = (ngx_http_mesh_metrics_attempt_t *) t->attempts->elts
            + t->attempts->nelts++;

    } else {
        a = ngx_array_push(t->attempts);
        if (a == NULL) {
            return;
        }
    }

    a->request = r;
    a->index = n;
    a->start = ngx_http_mesh_metrics_otlp_now();
    ngx_memcpy(a->span_id, span, 8);
}


static void
ngx_http_mesh_metrics_otlp_count(ngx_http_mesh_metrics_otlp_state_t *st,
    char *outcome, ngx_uint_t n)
{
    ngx_str_t      label;
    ngx_atomic_t  *values;

    if (st->zone == NULL || st->zone->sh == NULL || n == 0) {
        return;
    }

    label.data = (u_char *) outcome;
    label.len = ngx_strlen(outcome);

    values = ngx_http_mesh_metrics_find(st->zone,
                                        NGX_HTTP_MESH_METRICS_F_SPANS,
                                        &label, 1, ngx_cycle->log);
    if (values) {
        (void) ngx_atomic_fetch_add(&values[0], n);
    }
}


/*
 * Where the next span is encoded: in place in the batch, after room for
 * its tag and two-byte length (a span is shorter than 16384 bytes), when
 * the largest span fits; otherwise on the stack, to be copied if it fits.
 */

static u_char *
ngx_http_mesh_metrics_otlp_room(ngx_http_mesh_metrics_otlp_state_t *st,
    u_char *stack)
{
    if (st->cap - st->len < 1 + 2 + NGX_HTTP_MESH_METRICS_OTLP_MAX) {
        return stack;
    }

    return st->spans + st->len + 1 + 2;
}


static void
ngx_http_mesh_metrics_otlp_add(ngx_http_mesh_metrics_otlp_state_t *st,
    u_char *span, size_t len)
{
    u_char  *p;

    /* a span as a "spans" member (2) of ScopeSpans */

    if (st->len + 1 + 2 + len > st->cap) {
        /* counted in the zone per interval or export, not per span */
        st->dropped++;
        st->full = 1;
        return;
    }

    p = st->spans + st->len;
    *p++ = ngx_http_mesh_metrics_pb_tag(2, NGX_HTTP_MESH_METRICS_PB_LEN);
    p = ngx_http_mesh_metrics_pb_varint(p, len);

    /* a span encoded in place moves only if its length took one byte */

    p = (p == span) ? p + len : ngx_movemem(p, span, len);

    st->len = p - st->spans;
    st->nspans++;

    if (st->nspans < st->conf->batch) {
        return;
    }

    ngx_http_mesh_metrics_otlp_flush(st);

    /*
     * a batch that cannot leave while exports fail (the next try waits
     * for the backoff) is all that is kept of what comes meanwhile
     */

    if (st->nspans && st->failures) {
        st->full = 1;
    }
}


static void
ngx_http_mesh_metrics_otlp_timer_handler(ngx_event_t *ev)
{
    ngx_http_mesh_metrics_otlp_state_t  *st = ev->data;

    ngx_http_mesh_metrics_otlp_count(st, "dropped", st->dropped);
    st->dropped = 0;

    ngx_http_mesh_metrics_otlp_flush(st);

    if (!ngx_exiting && !ngx_terminate) {
        ngx_add_timer(ev, st->conf->interval);
    }
}


/*
 * Sends the filling batch, unless one is in flight or the backoff after
 * a failure has not passed.
 */

static void
ngx_http_mesh_metrics_otlp_flush(ngx_http_mesh_metrics_otlp_state_t *st)
{
    if (st->busy || st->nspans == 0
        || (ngx_msec_int_t) (st->next_try - ngx_current_msec) > 0)
    {
        return;
    }

    ngx_http_mesh_metrics_otlp_encode(st);

    st->out_spans = st->nspans;
    st->nspans = 0;
    st->len = 0;
    st->full = 0;
    st->reply_len = 0;
    st->in_body = 0;
    st->keep = 0;
    st->busy = 1;
    st->start = st->pos;

    if (st->pc.connection) {
        ngx_http_mesh_metrics_otlp_reuse(st);
        return;
    }

    ngx_http_mesh_metrics_otlp_connect(st);
}


/*
 * The request: line, headers, and the body, an ExportTraceServiceRequest
 * { resource_spans (1): ResourceSpans {
 *     resource (1): Resource { attributes (1): service.name },
 *     scope_spans (2): ScopeSpans { scope (1): { name (1) }, spans } } }.
 * Lengths come first in protobuf: they are computed, then written.
 */

static void
ngx_http_mesh_metrics_otlp_encode(ngx_http_mesh_metrics_otlp_state_t *st)
{
    u_char                        *p;
    size_t                         any, kv, res, scope, rs, total;
    ngx_http_mesh_metrics_otlp_t  *conf;

    conf = st->conf;

    any = 1 + ngx_http_mesh_metrics_pb_varint_len(conf->service.len)
          + conf->service.len;
    kv = 1 + 1 + sizeof("service.name") - 1
         + 1 + ngx_http_mesh_metrics_pb_varint_len(any) + any;
    res = 1 + ngx_http_mesh_metrics_pb_varint_len(kv) + kv;
    scope = 2 + 2 + sizeof("meshgate") - 1 + st->len;
    rs = 1 + ngx_http_mesh_metrics_pb_varint_len(res) + res
         + 1 + ngx_http_mesh_metrics_pb_varint_len(scope) + scope;
    total = 1 + ngx_http_mesh_metrics_pb_varint_len(rs) + rs;

    p = ngx_sprintf(st->head,
                    "POST %V HTTP/1.1" CRLF
                    "Host: %V" CRLF
                    "Content-Type: application/x-protobuf" CRLF
                    "Content-Length: %uz" CRLF CRLF,
                    &conf->uri, &conf->host, total);

    *p++ = ngx_http_mesh_metrics_pb_tag(1, NGX_HTTP_MESH_METRICS_PB_LEN);
    p = ngx_http_mesh_metrics_pb_varint(p, rs);

    *p++ = ngx_http_mesh_metrics_pb_tag(1, NGX_HTTP_MESH_METRICS_PB_LEN);
    p = ngx_http_mesh_metrics_pb_varint(p, res);
    p = ngx_http_mesh_metrics_pb_kv_str(p, 1, "service.name",
                                        conf->service.data,
                                        conf->service.len);

    *p++ = ngx_http_mesh_metrics_pb_tag(2, NGX_HTTP_MESH_METRICS_PB_LEN);
    p = ngx_http_mesh_metrics_pb_varint(p, scope);
    *p++ = ngx_http_mesh_metrics_pb_tag(1, NGX_HTTP_MESH_METRICS_PB_LEN);
    *p++ = (u_char) (2 + sizeof("meshgate") - 1);
    p = ngx_http_mesh_metrics_pb_bytes(p, 1, (u_char *) "meshgate",
                                       sizeof("meshgate") - 1);

    /* the envelope goes right before the spans, and the buffers swap */

    st->pos = st->spans - (p - st->head);
    st->last = st->spans + st->len;
    ngx_memcpy(st->pos, st->head, p - st->head);

    p = st->out;
    st->out = st->spans;
    st->spans = p;
}


static void
ngx_http_mesh_metrics_otlp_connect(ngx_http_mesh_metrics_otlp_state_t *st)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    ngx_memzero(&st->pc, sizeof(ngx_peer_connection_t));

    st->reused = 0;

    st->pc.sockaddr = st->conf->addr.sockaddr;
    st->pc.socklen = st->conf->addr.socklen;
    st->pc.name = &st->conf->addr.name;
    st->pc.get = ngx_event_get_peer;
    st->pc.log = ngx_cycle->log;
    st->pc.log_error = NGX_ERROR_ERR;

    rc = ngx_event_connect_peer(&st->pc);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        if (st->pc.connection) {
            ngx_close_connection(st->pc.connection);
            st->pc.connection = NULL;
        }

        ngx_http_mesh_metrics_otlp_done(st, "cannot connect");
        return;
    }

    c = st->pc.connection;
    c->data = st;
    c->read->handler = ngx_http_mesh_metrics_otlp_read_handler;
    c->write->handler = ngx_http_mesh_metrics_otlp_write_handler;

    /* a worker that shuts down does not wait for the collector */

    c->read->cancelable = 1;
    c->write->cancelable = 1;

    ngx_add_timer(c->write, NGX_HTTP_MESH_METRICS_OTLP_TIMEOUT);

    if (rc == NGX_OK) {
        ngx_http_mesh_metrics_otlp_write_handler(c->write);
    }
}


static void
ngx_http_mesh_metrics_otlp_write_handler(ngx_event_t *wev)
{
    ssize_t                              n;
    ngx_connection_t                    *c;
    ngx_http_mesh_metrics_otlp_state_t  *st;

    c = wev->data;
    st = c->data;

    if (wev->timedout) {
        ngx_http_mesh_metrics_otlp_done(st, "timed out");
        return;
    }

    while (st->pos < st->last) {
        n = c->send(c, st->pos, st->last - st->pos);

        if (n == NGX_ERROR) {
            if (!ngx_http_mesh_metrics_otlp_retry(st)) {
                ngx_http_mesh_metrics_otlp_done(st, "send failed");
            }

            return;
        }

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_mesh_metrics_otlp_done(st, "send failed");
                return;
            }

            ngx_add_timer(wev, NGX_HTTP_MESH_METRICS_OTLP_TIMEOUT);
            return;
        }

        st->pos += n;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    wev->handler = ngx_http_mesh_metrics_otlp_sent_handler;

    if (!c->read->timer_set) {
        ngx_add_timer(c->read, NGX_HTTP_MESH_METRICS_OTLP_TIMEOUT);
    }

    if (c->read->ready) {
        ngx_http_mesh_metrics_otlp_read_handler(c->read);
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_mesh_metrics_otlp_done(st, "recv failed");
    }
}


static void
ngx_http_mesh_metrics_otlp_sent_handler(ngx_event_t *wev)
{
    /* the request is out: only the answer matters now */
}


/*
 * The answer: a head of at most NGX_HTTP_MESH_METRICS_OTLP_HEAD bytes,
 * "HTTP/1.1 200 ..." and headers, then a body that is read and skipped
 * when the connection is to carry the next export.
 */

static void
ngx_http_mesh_metrics_otlp_read_handler(ngx_event_t *rev)
{
    u_char                              *end, *from;
    ssize_t                              n;
    ngx_connection_t                    *c;
    ngx_http_mesh_metrics_otlp_state_t  *st;

    c = rev->data;
    st = c->data;

    if (rev->timedout) {
        st->keep = 0;
        ngx_http_mesh_metrics_otlp_done(st, st->in_body ? NULL : "timed out");
        return;
    }

    if (st->pos < st->last) {

        /*
         * the collector spoke before it read the request; on a reused
         * connection, that is mostly its close of the idle connection
         */

        if (st->reused) {
            n = c->recv(c, st->reply, 1);

            if (n == NGX_AGAIN) {
                return;
            }

            if (n <= 0 && ngx_http_mesh_metrics_otlp_retry(st)) {
                return;
            }
        }

        ngx_http_mesh_metrics_otlp_done(st, "early answer");
        return;
    }

    if (st->in_body) {
        ngx_http_mesh_metrics_otlp_body(st);
        return;
    }

    for ( ;; ) {
        if (st->reply_len == sizeof(st->reply)) {
            ngx_http_mesh_metrics_otlp_done(st, "answer head too long");
            return;
        }

        n = c->recv(c, st->reply + st->reply_len,
                    sizeof(st->reply) - st->reply_len);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_mesh_metrics_otlp_done(st, "recv failed");
            }

            return;
        }

        if (n == NGX_ERROR || n == 0) {
            break;
        }

        /* the empty line that ends the head may straddle two reads */

        from = st->reply + (st->reply_len > 3 ? st->reply_len - 3 : 0);
        st->reply_len += n;

        end = ngx_strlcasestrn(from, st->reply + st->reply_len,
                               (u_char *) CRLF CRLF, 4 - 1);

        if (end) {
            ngx_http_mesh_metrics_otlp_answer(st, end + 4);
            return;
        }
    }

    /*
     * the collector closed: before any answer, on a connection it may
     * have closed as idle, the batch goes again; a status line, as before
     * keep-alive, still says how the export went
     */

    if (st->reply_len == 0 && ngx_http_mesh_metrics_otlp_retry(st)) {
        return;
    }

    ngx_http_mesh_metrics_otlp_answer(st, NULL);
}


/* a whole head (end after its empty line) or what came of one (NULL) */

static void
ngx_http_mesh_metrics_otlp_answer(ngx_http_mesh_metrics_otlp_state_t *st,
    u_char *end)
{
    ngx_int_t  status;

    status = ngx_http_mesh_metrics_otlp_head(st, end);

    if (status == NGX_ERROR) {
        ngx_http_mesh_metrics_otlp_done(st, "no HTTP answer");
        return;
    }

    if (status < 200 || status > 299) {
        ngx_http_mesh_metrics_otlp_done(st, "status not 2xx");
        return;
    }

    /* a partial success (rejected spans in the answer) counts as sent */

    if (st->keep && st->body_left) {
        st->in_body = 1;
        ngx_http_mesh_metrics_otlp_body(st);
        return;
    }

    ngx_http_mesh_metrics_otlp_done(st, NULL);
}


/*
 * The status, and whether the connection may carry the next export: an
 * HTTP/1.1 answer with a Content-Length up to a bound, no
 * Transfer-Encoding, no "Connection: close", and nothing after its body.
 */

static ngx_int_t
ngx_http_mesh_metrics_otlp_head(ngx_http_mesh_metrics_otlp_state_t *st,
    u_char *end)
{
    u_char     *p, *eol;
    off_t       length;
    ngx_int_t   status;

    st->keep = 0;

    if (st->reply_len < 12
        || ngx_strncmp(st->reply, "HTTP/1.", 7) != 0
        || st->reply[8] != ' ')
    {
        return NGX_ERROR;
    }

    status = ngx_atoi(st->reply + 9, 3);

    if (status == NGX_ERROR || end == NULL) {
        return status;
    }

    /* 204 and 304 have no body; any other one says its length */

    length = (status == 204 || status == 304) ? 0 : -1;
    st->keep = (st->reply[7] == '1');

    p = ngx_strlchr(st->reply, end, LF) + 1;

    while (p < end - 2) {
        eol = ngx_strlchr(p, end, LF);
        ngx_http_mesh_metrics_otlp_header(st, p, eol, &length);
        p = eol + 1;
    }

    if (length < 0 || length < (off_t) (st->reply + st->reply_len - end)) {
        st->keep = 0;
        return status;
    }

    st->body_left = length - (st->reply + st->reply_len - end);

    return status;
}


/* one header line, from p to its LF at last */

static void
ngx_http_mesh_metrics_otlp_header(ngx_http_mesh_metrics_otlp_state_t *st,
    u_char *p, u_char *last, off_t *length)
{
    u_char     *colon;
    size_t      len;
    ngx_int_t   n;

    if (last > p && last[-1] == CR) {
        last--;
    }

    colon = ngx_strlchr(p, last, ':');

    if (colon == NULL) {
        st->keep = 0;
        return;
    }

    len = colon - p;

    for (colon++; colon < last && (*colon == ' ' || *colon == '\t'); colon++)
    {
        /* void */
    }

    while (last > colon && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    if (len == sizeof("Content-Length") - 1
        && ngx_strncasecmp(p, (u_char *) "Content-Length", len) == 0)
    {
        n = ngx_atoi(colon, last - colon);

        if (n == NGX_ERROR || n > NGX_HTTP_MESH_METRICS_OTLP_BODY
            || (*length >= 0 && *length != n))
        {
            st->keep = 0;
            return;
        }

        *length = n;
        return;
    }

    if (len == sizeof("Transfer-Encoding") - 1
        && ngx_strncasecmp(p, (u_char *) "Transfer-Encoding", len) == 0)
    {
        st->keep = 0;
        return;
    }

    if (len == sizeof("Connection") - 1
        && ngx_strncasecmp(p, (u_char *) "Connection", len) == 0
        && last - colon >= 5
        && ngx_strlcasestrn(colon, last, (u_char *) "close", 5 - 1))
    {
        st->keep = 0;
    }
}


/*
 * The body of a 2xx answer, read and skipped: the export went through
 * whatever happens now, and a connection that fails here is not kept.
 */

static void
ngx_http_mesh_metrics_otlp_body(ngx_http_mesh_metrics_otlp_state_t *st)
{
    ssize_t            n;
    ngx_connection_t  *c;

    c = st->pc.connection;

    while (st->body_left) {
        n = c->recv(c, st->reply, ngx_min(st->body_left, sizeof(st->reply)));

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
                break;
            }

            return;
        }

        if (n == NGX_ERROR || n == 0) {
            break;
        }

        st->body_left -= n;
    }

    st->keep = (st->body_left == 0);

    ngx_http_mesh_metrics_otlp_done(st, NULL);
}


/*
 * A reused connection that fails before any answer came: the collector
 * closed it as idle while the request left.  The batch goes again at once
 * on a new connection, once (a new connection is never retried).
 */

static ngx_uint_t
ngx_http_mesh_metrics_otlp_retry(ngx_http_mesh_metrics_otlp_state_t *st)
{
    if (!st->reused || st->reply_len || st->in_body) {
        return 0;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "mesh_trace_export: kept connection closed, resending");

    ngx_http_mesh_metrics_otlp_close(st);

    st->pos = st->start;

    ngx_http_mesh_metrics_otlp_connect(st);

    return 1;
}


/* the next export on the kept connection */

static void
ngx_http_mesh_metrics_otlp_reuse(ngx_http_mesh_metrics_otlp_state_t *st)
{
    ngx_connection_t  *c;

    c = st->pc.connection;

    st->reused = 1;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    c->read->timedout = 0;
    c->write->timedout = 0;
    c->read->handler = ngx_http_mesh_metrics_otlp_read_handler;
    c->write->handler = ngx_http_mesh_metrics_otlp_write_handler;

    ngx_add_timer(c->write, NGX_HTTP_MESH_METRICS_OTLP_TIMEOUT);

    ngx_http_mesh_metrics_otlp_write_handler(c->write);
}


/*
 * An idle connection waits for the next export: the collector's close,
 * any byte from it, or the idle timeout ends it.
 */

static void
ngx_http_mesh_metrics_otlp_idle(ngx_http_mesh_metrics_otlp_state_t *st)
{
    ngx_connection_t  *c;

    c = st->pc.connection;

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    c->read->handler = ngx_http_mesh_metrics_otlp_idle_handler;
    c->write->handler = ngx_http_mesh_metrics_otlp_sent_handler;

    ngx_add_timer(c->read, NGX_HTTP_MESH_METRICS_OTLP_IDLE);

    if (c->read->ready) {
        ngx_http_mesh_metrics_otlp_idle_handler(c->read);
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_mesh_metrics_otlp_close(st);
    }
}


static void
ngx_http_mesh_metrics_otlp_idle_handler(ngx_event_t *rev)
{
    u_char                               byte;
    ssize_t                              n;
    ngx_connection_t                    *c;
    ngx_http_mesh_metrics_otlp_state_t  *st;

    c = rev->data;
    st = c->data;

    if (!rev->timedout) {
        n = c->recv(c, &byte, 1);

        if (n == NGX_AGAIN && ngx_handle_read_event(rev, 0) == NGX_OK) {
            return;
        }
    }

    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "mesh_trace_export: kept connection closed");

    ngx_http_mesh_metrics_otlp_close(st);
}


static void
ngx_http_mesh_metrics_otlp_close(ngx_http_mesh_metrics_otlp_state_t *st)
{
    if (st->pc.connection) {
        ngx_close_connection(st->pc.connection);
        st->pc.connection = NULL;
    }
}


/*
 * The end of an export: the connection is kept when the answer allows
 * it, or goes; a failure is counted, logged
 * and delays the next export.  The next batch may leave at once if it is
 * already full.
 */

static void
ngx_http_mesh_metrics_otlp_done(ngx_http_mesh_metrics_otlp_state_t *st,
    char *error)
{
    ngx_msec_t  backoff;

    if (error == NULL && st->keep) {
        ngx_http_mesh_metrics_otlp_idle(st);

    } else {
        ngx_http_mesh_metrics_otlp_close(st);
    }

    st->busy = 0;

    ngx_http_mesh_metrics_otlp_count(st, "dropped", st->dropped);
    st->dropped = 0;

    if (error == NULL) {
        ngx_http_mesh_metrics_otlp_count(st, "exported", st->out_spans);
        st->failures = 0;
        st->next_try = ngx_current_msec;

        if (st->nspans >= st->conf->batch) {
            ngx_http_mesh_metrics_otlp_flush(st);
        }

        return;
    }

    ngx_http_mesh_metrics_otlp_count(st, "failed", st->out_spans);

    backoff = 1000;

    if (st->failures < 6) {
        backoff <<= st->failures;

    } else {
        backoff = NGX_HTTP_MESH_METRICS_OTLP_BACKOFF_MAX;
    }

    st->failures++;
    st->next_try = ngx_current_msec + backoff;

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "mesh_trace_export: export to %V failed (%s), "
                  "%ui spans lost, next try in %Mms",
                  &st->conf->addr.name, error, st->out_spans, backoff);
}


/* Span { trace_id 1, span_id 2, parent_span_id 4, name 5, kind 6,
 *        start 7, end 8, attributes 9, status 15 } */

static u_char *
ngx_http_mesh_metrics_otlp_server_span(u_char *p, ngx_http_request_t *r,
    ngx_http_mesh_metrics_trace_t *t, ngx_http_mesh_metrics_loc_conf_t *lcf)
{
    u_char                             *head, *attrs;
    uint64_t                            start;
    ngx_str_t                           method, route;
    ngx_uint_t                          status;
    ngx_http_mesh_metrics_key_t         key;
    ngx_http_mesh_metrics_otlp_part_t  *c;

    status = r->err_status ? r->err_status : r->headers_out.status;
    start = (uint64_t) r->start_sec * 1000000000
            + (uint64_t) r->start_msec * 1000000;

    p = ngx_http_mesh_metrics_pb_bytes(p, 1, t->trace_id, 16);
    p = ngx_http_mesh_metrics_pb_bytes(p, 2, t->span_id, 8);

    if (t->continued) {
        p = ngx_http_mesh_metrics_pb_bytes(p, 4, t->parent_id, 8);
    }

    /* name and kind, then the times, then the attributes of the route */

    c = &ngx_http_mesh_metrics_otlp->server[
            (((uintptr_t) lcf >> 4) ^ status)
            & (NGX_HTTP_MESH_METRICS_OTLP_CACHE - 1)];

    if (c->conf == lcf && c->method == r->method && c->status == status
        && r->method != NGX_HTTP_UNKNOWN)
    {
        p = ngx_cpymem(p, c->bytes, c->head_len);
        p = ngx_http_mesh_metrics_pb_fixed64(p, 7, start);
        p = ngx_http_mesh_metrics_pb_fixed64(p, 8,
                                             ngx_http_mesh_metrics_otlp_now());
        p = ngx_cpymem(p, c->bytes + c->head_len, c->len);

    } else {
        ngx_http_mesh_metrics_otlp_method(r, &method);

        /* the route, as a label: valid UTF-8, bounded */

        ngx_http_mesh_metrics_otlp_text(&lcf->label, &key, &route);

        /* "METHOD route": at most 16 + 1 + 128 bytes, written in place */

        head = p;

        *p++ = ngx_http_mesh_metrics_pb_tag(5, NGX_HTTP_MESH_METRICS_PB_LEN);
        p = ngx_http_mesh_metrics_pb_varint(p, method.len + 1 + route.len);
        p = ngx_cpymem(p, method.data, method.len);
        *p++ = ' ';
        p = ngx_cpymem(p, route.data, route.len);

        *p++ = ngx_http_mesh_metrics_pb_tag(6,
                                            NGX_HTTP_MESH_METRICS_PB_VARINT);
        *p++ = 2;                               /* SPAN_KIND_SERVER */

        c->method = 0;
        c->head_len = p - head;

        if (c->head_len <= NGX_HTTP_MESH_METRICS_OTLP_PART) {
            ngx_memcpy(c->bytes, head, c->head_len);
            c->method = r->method;
        }

        p = ngx_http_mesh_metrics_pb_fixed64(p, 7, start);
        p = ngx_http_mesh_metrics_pb_fixed64(p, 8,
                                             ngx_http_mesh_metrics_otlp_now());

        attrs = p;

        p = ngx_http_mesh_metrics_pb_kv_str(p, 9, "http.request.method",
                                            method.data, method.len);
        p = ngx_http_mesh_metrics_pb_kv_str(p, 9, "http.route",
                                            route.data, route.len);
        p = ngx_http_mesh_metrics_pb_kv_int(p, "http.response.status_code",
                                            status);

        c->len = p - attrs;

        if (c->method && c->len <= NGX_HTTP_MESH_METRICS_OTLP_PART) {
            ngx_memcpy(c->bytes + c->head_len, attrs, c->len);
            c->conf = lcf;
            c->status = status;

        } else {
            c->method = 0;
        }
    }

    p = ngx_http_mesh_metrics_pb_kv_str(p, 9, "client.address",
                                        r->connection->addr_text.data,
                                        r->connection->addr_text.len);

    /* a server span fails from 500 up, a 4xx is the client's */

    if (status >= 500) {
        p = ngx_http_mesh_metrics_otlp_error(p);
    }

    return p;
}


static u_char *
ngx_http_mesh_metrics_otlp_client_span(u_char *p,
    ngx_http_mesh_metrics_trace_t *t, ngx_http_mesh_metrics_attempt_t *a)
{
    u_char                             *attrs;
    uint64_t                            start, end, now;
    ngx_str_t                           method, host;
    ngx_uint_t                          status;
    ngx_http_request_t                 *r;
    ngx_http_upstream_state_t          *s;
    ngx_http_mesh_metrics_key_t         key;
    ngx_http_upstream_srv_conf_t       *uscf;
    ngx_http_mesh_metrics_otlp_part_t  *c;

    r = a->request;
    s = ngx_http_mesh_metrics_otlp_state(a);

    ngx_http_mesh_metrics_otlp_method(r, &method);

    now = ngx_http_mesh_metrics_otlp_now();
    end = now;
    status = 0;

    if (s) {
        status = s->status;

        if (s->response_time != (ngx_msec_t) -1) {
            end = a->start + (uint64_t) s->response_time * 1000000;
        }
    }

    /*
     * the wall clock (start) and nginx's monotonic response time (end)
     * disagree by up to a millisecond: a client span is kept within its
     * server span, which starts with the main request and ends now
     */

    start = (uint64_t) r->main->start_sec * 1000000000
            + (uint64_t) r->main->start_msec * 1000000;
    start = ngx_max(a->start, start);
    end = ngx_min(end, now);
    end = ngx_max(end, start);

    p = ngx_http_mesh_metrics_pb_bytes(p, 1, t->trace_id, 16);
    p = ngx_http_mesh_metrics_pb_bytes(p, 2, a->span_id, 8);
    p = ngx_http_mesh_metrics_pb_bytes(p, 4, t->span_id, 8);
    p = ngx_http_mesh_metrics_pb_bytes(p, 5, method.data, method.len);

    *p++ = ngx_http_mesh_metrics_pb_tag(6, NGX_HTTP_MESH_METRICS_PB_VARINT);
    *p++ = 3;                                   /* SPAN_KIND_CLIENT */

    p = ngx_http_mesh_metrics_pb_fixed64(p, 7, start);
    p = ngx_http_mesh_metrics_pb_fixed64(p, 8, end);

    /*
     * the attributes of a first attempt that got an answer: the same as
     * the last such span's of the upstream group, method, status and
     * peer, or encoded (and kept for the next)
     */

    uscf = r->upstream ? r->upstream->upstream : NULL;
    c = NULL;

    if (s && s->peer && a->index == 0 && r->method != NGX_HTTP_UNKNOWN
        && s->peer->len && s->peer->len <= NGX_HTTP_MESH_METRICS_OTLP_PEER)
    {
        c = &ngx_http_mesh_metrics_otlp->client[
                (((uintptr_t) uscf >> 4) ^ status ^ s->peer->len
                 ^ s->peer->data[s->peer->len - 1])
                & (NGX_HTTP_MESH_METRICS_OTLP_CACHE - 1)];

        if (c->conf == uscf && c->method == r->method && c->status == status
            && c->peer_len == s->peer->len
            && ngx_memcmp(c->peer, s->peer->data, s->peer->len) == 0)
        {
            return ngx_cpymem(p, c->bytes, c->len);
        }
    }

    attrs = p;

    p = ngx_http_mesh_metrics_pb_kv_str(p, 9, "http.request.method",
                                        method.data, method.len);

    /*
     * server.address: the upstream group's name, which is configuration
     * (a proxy_pass with variables names none: the peer address says it)
     */

    if (uscf && uscf->host.len) {
        ngx_http_mesh_metrics_otlp_text(&uscf->host, &key, &host);
        p = ngx_http_mesh_metrics_pb_kv_str(p, 9, "server.address",
                                            host.data, host.len);
    }

    if (s && s->peer) {
        p = ngx_http_mesh_metrics_otlp_peer(p, s->peer);
    }

    if (status) {
        p = ngx_http_mesh_metrics_pb_kv_int(p, "http.response.status_code",
                                            status);
    }

    if (a->index) {
        p = ngx_http_mesh_metrics_pb_kv_int(p, "http.request.resend_count",
                                            a->index);
    }

    /* HTTP semantic conventions: a client span fails from 400 up */

    if (status == 0 || status >= 400) {
        p = ngx_http_mesh_metrics_otlp_error(p);
    }

    if (c) {
        c->method = 0;
        c->len = p - attrs;

        if (c->len <= 2 * NGX_HTTP_MESH_METRICS_OTLP_PART) {
            ngx_memcpy(c->bytes, attrs, c->len);
            ngx_memcpy(c->peer, s->peer->data, s->peer->len);
            c->peer_len = s->peer->len;
            c->conf = uscf;
            c->method = r->method;
            c->status = status;
        }
    }

    return p;
}


/* the attempt's upstream state: the index-th one that reached a peer */

static ngx_http_upstream_state_t *
ngx_http_mesh_metrics_otlp_state(ngx_http_mesh_metrics_attempt_t *a)
{
    ngx_uint_t                  i, n;
    ngx_http_request_t         *r;
    ngx_http_upstream_state_t  *state;

    r = a->request;

    if (r->upstream_states == NULL) {
        return NULL;
    }

    state = r->upstream_states->elts;
    n = 0;

    for (i = 0; i < r->upstream_states->nelts; i++) {
        if (state[i].peer && n++ == a->index) {
            return &state[i];
        }
    }

    return NULL;
}


/*
 * The peer address nginx wrote, "127.0.0.1:8080" or "[::1]:80", as
 * network.peer.address (no brackets) and network.peer.port.
 */

static u_char *
ngx_http_mesh_metrics_otlp_peer(u_char *p, ngx_str_t *peer)
{
    u_char     c;
    size_t     i;
    ngx_int_t  port, mul;
    ngx_str_t  addr;

    if (peer->len == 0 || peer->len > NGX_SOCKADDR_STRLEN) {
        return p;
    }

    addr = *peer;

    /* the usual end: ":" and one to five digits, read as they are met */

    port = 0;
    mul = 1;

    for (i = peer->len; i > 0 && peer->len - i < 5; i--) {
        c = peer->data[i - 1];

        if (c < '0' || c > '9') {
            break;
        }

        port += (c - '0') * mul;
        mul *= 10;
    }

    if (i > 0 && i < peer->len && peer->data[i - 1] == ':') {
        addr.len = i - 1;

    } else {
        port = NGX_ERROR;

        for (i = peer->len; i > 0; i--) {
            if (peer->data[i - 1] == ':') {
                port = ngx_http_mesh_metrics_otlp_port(&peer->data[i],
                                                       peer->len - i);
                addr.len = i - 1;
                break;
            }

            if (peer->data[i - 1] == ']') {
                break;
            }
        }
    }

    if (addr.len >= 2 && addr.data[0] == '[' && addr.data[addr.len - 1] == ']')
    {
        addr.data++;
        addr.len -= 2;
    }

    p = ngx_http_mesh_metrics_pb_kv_str(p, 9, "network.peer.address",
                                        addr.data, addr.len);

    if (port != NGX_ERROR) {
        p = ngx_http_mesh_metrics_pb_kv_int(p, "network.peer.port", port);
    }

    return p;
}


/* a port: one to five digits (ngx_atoi() costs a call per span) */

static ngx_int_t
ngx_http_mesh_metrics_otlp_port(u_char *p, size_t len)
{
    size_t     i;
    ngx_int_t  port;

    if (len == 0 || len > 5) {
        return NGX_ERROR;
    }

    port = 0;

    for (i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return NGX_ERROR;
        }

        port = port * 10 + (p[i] - '0');
    }

    return port;
}


/* HTTP semantic conventions: methods nginx does not know are "_OTHER" */

static void
ngx_http_mesh_metrics_otlp_method(ngx_http_request_t *r, ngx_str_t *method)
{
    if (r->method == NGX_HTTP_UNKNOWN || r->method_name.len == 0
        || r->method_name.len > 16)
    {
        ngx_str_set(method, "_OTHER");
        return;
    }

    *method = r->method_name;
}


/*
 * Configuration text (a route, an upstream's name) as an attribute,
 * cleaned as a label is: text that is short printable ASCII, the usual
 * case, is that already and goes as it is.
 */

static ngx_inline void
ngx_http_mesh_metrics_otlp_text(ngx_str_t *text,
    ngx_http_mesh_metrics_key_t *key, ngx_str_t *value)
{
    size_t  i;

    if (text->len <= NGX_HTTP_MESH_METRICS_MAX_VALUE) {

        for (i = 0; i < text->len; i++) {
            if (text->data[i] < 0x20 || text->data[i] >= 0x7f) {
                break;
            }
        }

        if (i == text->len) {
            *value = *text;
            return;
        }
    }

    ngx_http_mesh_metrics_key_reset(key);
    ngx_http_mesh_metrics_key_add(key, text->data, text->len);

    value->data = key->data;
    value->len = key->len - 1;
}


/* Status { code (3): STATUS_CODE_ERROR (2) } */

static u_char *
ngx_http_mesh_metrics_otlp_error(u_char *p)
{
    *p++ = ngx_http_mesh_metrics_pb_tag(15, NGX_HTTP_MESH_METRICS_PB_LEN);
    *p++ = 2;
    *p++ = ngx_http_mesh_metrics_pb_tag(3, NGX_HTTP_MESH_METRICS_PB_VARINT);
    *p++ = 2;

    return p;
}


/* most lengths and numbers here take one byte: that case is inline */

static ngx_inline u_char *
ngx_http_mesh_metrics_pb_varint(u_char *p, uint64_t v)
{
    if (v < 0x80) {
        *p++ = (u_char) v;
        return p;
    }

    return ngx_http_mesh_metrics_pb_varint_long(p, v);
}


static u_char *
ngx_http_mesh_metrics_pb_varint_long(u_char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (u_char) (v | 0x80);
        v >>= 7;
    }

    *p++ = (u_char) v;

    return p;
}


static ngx_inline size_t
ngx_http_mesh_metrics_pb_varint_len(uint64_t v)
{
    size_t  n;

    if (v < 0x80) {
        return 1;
    }

    for (n = 1; v >= 0x80; n++) {
        v >>= 7;
    }

    return n;
}


static ngx_inline u_char *
ngx_http_mesh_metrics_pb_bytes(u_char *p, ngx_uint_t field, u_char *data,
    size_t len)
{
    *p++ = ngx_http_mesh_metrics_pb_tag(field, NGX_HTTP_MESH_METRICS_PB_LEN);
    p = ngx_http_mesh_metrics_pb_varint(p, len);

    return ngx_cpymem(p, data, len);
}


static ngx_inline u_char *
ngx_http_mesh_metrics_pb_fixed64(u_char *p, ngx_uint_t field, uint64_t v)
{
    p[0] = ngx_http_mesh_metrics_pb_tag(field,
                                        NGX_HTTP_MESH_METRICS_PB_FIXED64);
    ngx_http_mesh_metrics_put64(p + 1, v);

    return p + 9;
}


/*
 * attributes: KeyValue { key 1, value 2: AnyValue { string_value 1 } };
 * keys are literals shorter than 100 bytes (a one-byte length), values
 * at most a span's bound (a two-byte length at most).  A short value, the
 * usual one, makes every length one byte: then the lengths are patched in
 * once the value is written.
 */

#define NGX_HTTP_MESH_METRICS_PB_SHORT  (127 - 6 - 25)  /* longest key */

static ngx_inline u_char *
ngx_http_mesh_metrics_pb_kv(u_char *p, ngx_uint_t field, u_char *key,
    size_t klen, u_char *value, size_t len)
{
    if (len <= NGX_HTTP_MESH_METRICS_PB_SHORT && klen <= 25) {
        p[0] = ngx_http_mesh_metrics_pb_tag(field,
                                            NGX_HTTP_MESH_METRICS_PB_LEN);
        p[1] = (u_char) (klen + len + 6);
        p[2] = ngx_http_mesh_metrics_pb_tag(1, NGX_HTTP_MESH_METRICS_PB_LEN);
        p[3] = (u_char) klen;
        p = ngx_cpymem(p + 4, key, klen);
        p[0] = ngx_http_mesh_metrics_pb_tag(2, NGX_HTTP_MESH_METRICS_PB_LEN);
        p[1] = (u_char) (len + 2);
        p[2] = ngx_http_mesh_metrics_pb_tag(1, NGX_HTTP_MESH_METRICS_PB_LEN);
        p[3] = (u_char) len;

        return ngx_cpymem(p + 4, value, len);
    }

    return ngx_http_mesh_metrics_pb_kv_long(p, field, key, klen, value, len);
}


static u_char *
ngx_http_mesh_metrics_pb_kv_long(u_char *p, ngx_uint_t field, u_char *key,
    size_t klen, u_char *value, size_t len)
{
    size_t  any, kv;

    any = 1 + ngx_http_mesh_metrics_pb_varint_len(len) + len;
    kv = 2 + klen + 1 + ngx_http_mesh_metrics_pb_varint_len(any) + any;

    *p++ = ngx_http_mesh_metrics_pb_tag(field, NGX_HTTP_MESH_METRICS_PB_LEN);
    p = ngx_http_mesh_metrics_pb_varint(p, kv);
    *p++ = ngx_http_mesh_metrics_pb_tag(1, NGX_HTTP_MESH_METRICS_PB_LEN);
    *p++ = (u_char) klen;
    p = ngx_cpymem(p, key, klen);
    *p++ = ngx_http_mesh_metrics_pb_tag(2, NGX_HTTP_MESH_METRICS_PB_LEN);
    p = ngx_http_mesh_metrics_pb_varint(p, any);

    return ngx_http_mesh_metrics_pb_bytes(p, 1, value, len);
}


/*
 * AnyValue { int_value 3 }: with a key shorter than 100 bytes and a
 * varint of at most ten, both lengths take one byte, patched in after
 */

static ngx_inline u_char *
ngx_http_mesh_metrics_pb_kv_num(u_char *p, u_char *key, size_t klen,
    int64_t value)
{
    u_char  *any, *last;

    p[0] = ngx_http_mesh_metrics_pb_tag(9, NGX_HTTP_MESH_METRICS_PB_LEN);
    p[2] = ngx_http_mesh_metrics_pb_tag(1, NGX_HTTP_MESH_METRICS_PB_LEN);
    p[3] = (u_char) klen;

    any = ngx_cpymem(p + 4, key, klen);
    any[0] = ngx_http_mesh_metrics_pb_tag(2, NGX_HTTP_MESH_METRICS_PB_LEN);
    any[2] = ngx_http_mesh_metrics_pb_tag(3, NGX_HTTP_MESH_METRICS_PB_VARINT);

    last = ngx_http_mesh_metrics_pb_varint(any + 3, (uint64_t) value);

    any[1] = (u_char) (last - any - 2);
    p[1] = (u_char) (last - p - 2);

    return last;
}


static uint64_t
ngx_http_mesh_metrics_otlp_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000000000 + (uint64_t) tp->msec * 1000000;
}
