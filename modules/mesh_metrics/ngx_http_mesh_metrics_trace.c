
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/rand.h>
#include "ngx_http_mesh_metrics.h"
#include "ngx_meshgate_http.h"


/*
 * W3C Trace Context.  The trace state of a request lives with the main
 * request (found again through its pool cleanup after an internal
 * redirect).  In the rewrite phase the incoming "traceparent" is replaced
 * in r->headers_in, so every proxied request carries ours; "tracestate"
 * passes unchanged when the incoming trace is continued and is dropped
 * when the trace restarts.  A wrapper around the balancer gives each
 * upstream attempt its own span id by rewriting the 16 hex digits of the
 * parent id in the request buffer that nginx built once and reuses for
 * every retry.
 */


/* trace states kept for reuse, per worker */

#define NGX_HTTP_MESH_METRICS_TRACE_FREE  256


typedef struct {
    ngx_http_upstream_srv_conf_t       *upstream;
    ngx_http_upstream_init_peer_pt      init;
} ngx_http_mesh_metrics_peer_init_t;


static ngx_http_mesh_metrics_trace_t *ngx_http_mesh_metrics_trace_ctx(
    ngx_http_request_t *r);
static void ngx_http_mesh_metrics_trace_cleanup(void *data);
static ngx_int_t ngx_http_mesh_metrics_trace_incoming(ngx_http_request_t *r,
    ngx_http_mesh_metrics_trace_t *t);
static ngx_inline ngx_int_t ngx_http_mesh_metrics_hex(u_char *p,
    size_t len, u_char *dst);
static ngx_inline uint64_t ngx_http_mesh_metrics_hex8(u_char *p,
    u_char *dst);
static ngx_inline void ngx_http_mesh_metrics_random(u_char *buf,
    size_t len);
static ngx_inline uint64_t ngx_http_mesh_metrics_next(void);
static ngx_inline ngx_uint_t ngx_http_mesh_metrics_is_zero(u_char *p,
    size_t len);
static ngx_inline u_char *ngx_http_mesh_metrics_hex_dump(u_char *dst,
    u_char *src, size_t len);
static ngx_inline void ngx_http_mesh_metrics_hex_dump4(u_char *dst,
    u_char *src);
static ngx_uint_t ngx_http_mesh_metrics_is_name(ngx_table_elt_t *h,
    ngx_str_t *name);
static u_char *ngx_http_mesh_metrics_traceparent(u_char *p,
    ngx_http_mesh_metrics_trace_t *t, u_char *span);
static ngx_int_t ngx_http_mesh_metrics_set_headers(ngx_http_request_t *r,
    ngx_http_mesh_metrics_trace_t *t);
static ngx_int_t ngx_http_mesh_metrics_write_header(ngx_http_request_t *r,
    ngx_http_mesh_metrics_trace_t *t, ngx_table_elt_t *h);
static ngx_int_t ngx_http_mesh_metrics_rebuild_headers(ngx_http_request_t *r,
    ngx_http_mesh_metrics_trace_t *t);
static ngx_int_t ngx_http_mesh_metrics_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_mesh_metrics_upstream_spans_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_mesh_metrics_cmp_peer_inits(const void *one,
    const void *two);
static ngx_int_t ngx_http_mesh_metrics_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_mesh_metrics_get_peer(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_mesh_metrics_free_peer(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
static void ngx_http_mesh_metrics_notify_peer(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t type);
#if (NGX_HTTP_SSL)
static ngx_int_t ngx_http_mesh_metrics_set_session(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_mesh_metrics_save_session(ngx_peer_connection_t *pc,
    void *data);
#endif
static void ngx_http_mesh_metrics_new_attempt(ngx_http_request_t *r);
static u_char *ngx_http_mesh_metrics_find_parent(ngx_buf_t *b,
    ngx_http_mesh_metrics_trace_t *t);


#define NGX_HTTP_MESH_METRICS_VAR_TRACE        0
#define NGX_HTTP_MESH_METRICS_VAR_SPAN         1
#define NGX_HTTP_MESH_METRICS_VAR_PARENT       2
#define NGX_HTTP_MESH_METRICS_VAR_TRACEPARENT  3


static ngx_http_variable_t  ngx_http_mesh_metrics_vars[] = {

    { ngx_string("mesh_trace_id"), NULL, ngx_http_mesh_metrics_variable,
      NGX_HTTP_MESH_METRICS_VAR_TRACE, 0, 0 },

    { ngx_string("mesh_span_id"), NULL, ngx_http_mesh_metrics_variable,
      NGX_HTTP_MESH_METRICS_VAR_SPAN, 0, 0 },

    { ngx_string("mesh_parent_id"), NULL, ngx_http_mesh_metrics_variable,
      NGX_HTTP_MESH_METRICS_VAR_PARENT, 0, 0 },

    { ngx_string("mesh_traceparent"), NULL, ngx_http_mesh_metrics_variable,
      NGX_HTTP_MESH_METRICS_VAR_TRACEPARENT, 0, 0 },

    { ngx_string("mesh_upstream_span_ids"), NULL,
      ngx_http_mesh_metrics_upstream_spans_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_mesh_metrics_tp_name = ngx_string("traceparent");
static ngx_str_t  ngx_http_mesh_metrics_ts_name = ngx_string("tracestate");
static ngx_uint_t  ngx_http_mesh_metrics_tp_hash;

static uint64_t                        ngx_http_mesh_metrics_rng[4];
static ngx_pid_t                       ngx_http_mesh_metrics_rng_pid;

static ngx_http_mesh_metrics_trace_t  *ngx_http_mesh_metrics_trace_free;
static ngx_uint_t                      ngx_http_mesh_metrics_trace_nfree;


ngx_int_t
ngx_http_mesh_metrics_trace_add_variables(ngx_conf_t *cf)
{
    ngx_http_mesh_metrics_tp_hash = ngx_hash_key(
                                       ngx_http_mesh_metrics_tp_name.data,
                                       ngx_http_mesh_metrics_tp_name.len);

    return ngx_meshgate_add_variables(cf, ngx_http_mesh_metrics_vars);
}


/*
 * The state of a main request (trace ids, subrequests that went upstream),
 * kept across internal redirects: the module ctx is cleared by them, the
 * pool cleanup that holds the state is not.  The usual case, the state in
 * the ctx, is ngx_http_mesh_metrics_state(), inline.
 */

ngx_http_mesh_metrics_trace_t *
ngx_http_mesh_metrics_state_find(ngx_http_request_t *r, ngx_uint_t create)
{
    ngx_pool_cleanup_t             *cln;
    ngx_http_mesh_metrics_trace_t  *t;

    r = r->main;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_mesh_metrics_trace_cleanup) {
            t = cln->data;
            ngx_http_set_ctx(r, t, ngx_http_mesh_metrics_module);
            return t;
        }
    }

    if (!create) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    t = ngx_http_mesh_metrics_trace_free;

    if (t) {
        ngx_http_mesh_metrics_trace_free = t->next;
        ngx_http_mesh_metrics_trace_nfree--;

    } else {
        t = ngx_alloc(sizeof(ngx_http_mesh_metrics_trace_t),
                      r->connection->log);
        if (t == NULL) {
            return NULL;
        }
    }

    /* only the head: the rest is written before it is read */

    ngx_memzero(t, offsetof(ngx_http_mesh_metrics_trace_t, peer));

    cln->data = t;
    cln->handler = ngx_http_mesh_metrics_trace_cleanup;

    ngx_http_set_ctx(r, t, ngx_http_mesh_metrics_module);

    return t;
}


static ngx_http_mesh_metrics_trace_t *
ngx_http_mesh_metrics_trace_ctx(ngx_http_request_t *r)
{
    ngx_http_mesh_metrics_trace_t      *t;
    ngx_http_mesh_metrics_main_conf_t  *mmcf;

    t = ngx_http_mesh_metrics_state(r, 1);

    if (t == NULL || t->trace_ready) {
        return t;
    }

    r = r->main;

    if (ngx_http_mesh_metrics_trace_incoming(r, t) == NGX_OK) {
        t->continued = 1;

    } else {
        ngx_http_mesh_metrics_random(t->trace_id, 16);
        (void) ngx_http_mesh_metrics_hex_dump(t->trace_hex, t->trace_id, 16);
        ngx_memzero(t->parent_id, 8);

        mmcf = ngx_http_get_module_main_conf(r,
                                             ngx_http_mesh_metrics_module);
        t->flags = ngx_http_mesh_metrics_otlp_sample(mmcf, t->trace_id)
                   ? 0x01 : 0x00;
    }

    ngx_http_mesh_metrics_random(t->span_id, 8);
    t->trace_ready = 1;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "mesh trace: %s %*xs",
                   t->continued ? "continued" : "new", (size_t) 16,
                   t->trace_id);

    return t;
}


/*
 * A worker that exits frees the states it kept: nginx unloads the module
 * (and the list's head with it) before the process ends.
 */

void
ngx_http_mesh_metrics_trace_exit_process(void)
{
    ngx_http_mesh_metrics_trace_t  *t;

    while (ngx_http_mesh_metrics_trace_free) {
        t = ngx_http_mesh_metrics_trace_free;
        ngx_http_mesh_metrics_trace_free = t->next;
        ngx_free(t);
    }

    ngx_http_mesh_metrics_trace_nfree = 0;
}


/*
 * The request pool goes: its trace state is kept for the next request,
 * or freed beyond a bound.  Nothing reads the state once the pool's
 * cleanups run (the log phase is over), and nothing can take it from the
 * free list before the pool is gone.
 */

static void
ngx_http_mesh_metrics_trace_cleanup(void *data)
{
    ngx_http_mesh_metrics_trace_t  *t = data;

    if (ngx_http_mesh_metrics_trace_nfree >= NGX_HTTP_MESH_METRICS_TRACE_FREE)
    {
        ngx_free(t);
        return;
    }

    t->next = ngx_http_mesh_metrics_trace_free;
    ngx_http_mesh_metrics_trace_free = t;
    ngx_http_mesh_metrics_trace_nfree++;
}


/* parses the single incoming "traceparent"; several of them are invalid */

static ngx_int_t
ngx_http_mesh_metrics_trace_incoming(ngx_http_request_t *r,
    ngx_http_mesh_metrics_trace_t *t)
{
    ngx_uint_t        i, n;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *found;

    part = &r->headers_in.headers.part;
    h = part->elts;
    found = NULL;
    n = 0;
    t->tracestate = 0;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (ngx_http_mesh_metrics_is_name(&h[i],
                                          &ngx_http_mesh_metrics_tp_name))
        {
            found = &h[i];
            n++;

        } else if (ngx_http_mesh_metrics_is_name(&h[i],
                                             &ngx_http_mesh_metrics_ts_name))
        {
            t->tracestate = 1;
        }
    }

    t->ntraceparent = n;
    t->traceparent = found;

    if (n != 1) {
        if (n > 1) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "mesh trace: %ui \"traceparent\" headers, "
                          "starting a new trace", n);
        }

        return NGX_DECLINED;
    }

    if (ngx_http_mesh_metrics_parse_traceparent(found->value.data,
                                                found->value.len, t)
        != NGX_OK)
    {
        /* the client's bytes reach the log only short and printable */

        if (found->value.len <= 2 * NGX_HTTP_MESH_METRICS_TP_LEN
            && ngx_meshgate_text_is_safe(found->value.data, found->value.len)
            && ngx_meshgate_utf8_is_valid(found->value.data,
                                          found->value.len))
        {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "mesh trace: invalid \"traceparent\" \"%V\", "
                          "starting a new trace", &found->value);

        } else {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "mesh trace: invalid \"traceparent\" (%uz bytes, "
                          "not printable or too long), starting a new trace",
                          found->value.len);
        }

        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * version "-" trace-id "-" parent-id "-" flags, lowercase hex only.
 * Version 00 is exactly 55 characters; a later version may be longer if
 * a "-" follows the flags, and is read as version 00 (re-emitted as 00).
 * Version ff, all-zero ids and uppercase hex are invalid.
 */

ngx_int_t
ngx_http_mesh_metrics_parse_traceparent(u_char *p, size_t len,
    ngx_http_mesh_metrics_trace_t *t)
{
    u_char  version, flags;

    if (len < NGX_HTTP_MESH_METRICS_TP_LEN) {
        return NGX_ERROR;
    }

    if (ngx_http_mesh_metrics_hex(p, 2, &version) != NGX_OK
        || version == 0xff)
    {
        return NGX_ERROR;
    }

    if (version == 0) {
        if (len != NGX_HTTP_MESH_METRICS_TP_LEN) {
            return NGX_ERROR;
        }

    } else if (len > NGX_HTTP_MESH_METRICS_TP_LEN
               && p[NGX_HTTP_MESH_METRICS_TP_LEN] != '-')
    {
        return NGX_ERROR;
    }

    if (p[2] != '-' || p[35] != '-' || p[52] != '-') {
        return NGX_ERROR;
    }

    if ((ngx_http_mesh_metrics_hex8(p + 3, t->trace_id)
         | ngx_http_mesh_metrics_hex8(p + 11, t->trace_id + 4)
         | ngx_http_mesh_metrics_hex8(p + 19, t->trace_id + 8)
         | ngx_http_mesh_metrics_hex8(p + 27, t->trace_id + 12)
         | ngx_http_mesh_metrics_hex8(p + 36, t->parent_id)
         | ngx_http_mesh_metrics_hex8(p + 44, t->parent_id + 4))
        || ngx_http_mesh_metrics_hex(p + 53, 2, &flags) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* lowercase hex only, as checked: the id's text as we would write it */

    ngx_memcpy(t->trace_hex, p + 3, 32);

    if (ngx_http_mesh_metrics_is_zero(t->trace_id, 16)
        || ngx_http_mesh_metrics_is_zero(t->parent_id, 8))
    {
        return NGX_ERROR;
    }

    /* only the sampled bit is defined; the others are sent as zero */

    t->flags = flags & 0x01;

    return NGX_OK;
}


static ngx_inline ngx_int_t
ngx_http_mesh_metrics_hex(u_char *p, size_t len, u_char *dst)
{
    u_char      *last;
    ngx_uint_t   hi, lo, bad;

    /* lowercase hex digits only: 0xff marks every other byte */

    static const u_char  values[256] = {
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255,   0,   1,   2,   3,   4,   5,   6,   7,
          8,   9, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,  10,
         11,  12,  13,  14,  15, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255
    };

    /* one test at the end: a bad digit sets a bit above the low four */

    bad = 0;

    for (last = p + len; p < last; p += 2) {
        hi = values[p[0]];
        lo = values[p[1]];
        bad |= hi | lo;
        *dst++ = (u_char) ((hi << 4) | lo);
    }

    return (bad > 15) ? NGX_ERROR : NGX_OK;
}


/*
 * Eight lowercase hex digits into four bytes, all digits at once in a
 * word: returns 0, or else non-zero for a byte that is not a digit.  The
 * word is read byte by byte (the compiler makes that one load on a
 * little-endian machine), so byte i is digit i on any machine.
 */

static ngx_inline uint64_t
ngx_http_mesh_metrics_hex8(u_char *p, u_char *dst)
{
    uint64_t  x, digit, letter, v;

#define NGX_HTTP_MESH_METRICS_ONES  0x0101010101010101ULL
#define NGX_HTTP_MESH_METRICS_HIGH  0x8080808080808080ULL

    x = (uint64_t) p[0] | (uint64_t) p[1] << 8 | (uint64_t) p[2] << 16
        | (uint64_t) p[3] << 24 | (uint64_t) p[4] << 32
        | (uint64_t) p[5] << 40 | (uint64_t) p[6] << 48
        | (uint64_t) p[7] << 56;

    /*
     * with no byte of 0x80 or above (tested apart), adding to a byte sets
     * its high bit without a carry into the next: b + 0x50 >= 0x80 is
     * b >= '0', b + 0x46 for b > '9', b + 0x1f for b >= 'a', b + 0x19
     * for b > 'f'
     */

    digit = (x + 0x50 * NGX_HTTP_MESH_METRICS_ONES)
            & ~(x + 0x46 * NGX_HTTP_MESH_METRICS_ONES);
    letter = (x + 0x1f * NGX_HTTP_MESH_METRICS_ONES)
             & ~(x + 0x19 * NGX_HTTP_MESH_METRICS_ONES);

    /*
     * a digit's value is its low four bits, a letter's those plus 9:
     * letters, unlike digits, have bit 6 set
     */

    v = (x & 0x0f * NGX_HTTP_MESH_METRICS_ONES)
        + ((x >> 6) & NGX_HTTP_MESH_METRICS_ONES) * 9;

    /* pairs of digits into bytes, then the four bytes together */

    v = ((v & 0x000f000f000f000fULL) << 4)
        | ((v >> 8) & 0x000f000f000f000fULL);
    v = (v | (v >> 8)) & 0x0000ffff0000ffffULL;
    v |= v >> 16;

    dst[0] = (u_char) v;
    dst[1] = (u_char) (v >> 8);
    dst[2] = (u_char) (v >> 16);
    dst[3] = (u_char) (v >> 24);

    return (x & NGX_HTTP_MESH_METRICS_HIGH)
           | (~(digit | letter) & NGX_HTTP_MESH_METRICS_HIGH);

#undef NGX_HTTP_MESH_METRICS_ONES
#undef NGX_HTTP_MESH_METRICS_HIGH
}


/*
 * Ids from a per-worker xoshiro256** generator, seeded from OpenSSL's
 * CSPRNG (getrandom()) in each process that draws: a worker forked from
 * a process that had drawn reseeds (the pid changed), so no two workers,
 * nor the workers after a reload, share a sequence.  W3C trace context
 * asks ids to be unique and random, not secret (OpenTelemetry SDKs use
 * such generators too); a CSPRNG per id cost a tenth of a proxied
 * request's time in user space.  Ids are 8 or 16 bytes; no eight-byte
 * word of one is zero, so no id is all zero.
 */

static ngx_inline void
ngx_http_mesh_metrics_random(u_char *buf, size_t len)
{
    uint64_t  v;

    if (ngx_http_mesh_metrics_rng_pid != ngx_pid) {
        ngx_http_mesh_metrics_trace_seed();
    }

    do {
        v = ngx_http_mesh_metrics_next();
    } while (v == 0);

    ngx_http_mesh_metrics_put64(buf, v);

    if (len == 16) {
        do {
            v = ngx_http_mesh_metrics_next();
        } while (v == 0);

        ngx_http_mesh_metrics_put64(buf + 8, v);
    }
}


/*
 * Seeds this process's generator: at a worker's start, and at a draw in a
 * process whose pid is not the one that seeded (a fork since).
 */

void
ngx_http_mesh_metrics_trace_seed(void)
{
    uint64_t  *s;

    s = ngx_http_mesh_metrics_rng;

    if (RAND_bytes((u_char *) s, 4 * sizeof(uint64_t)) != 1) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "RAND_bytes() failed, trace ids seeded from time");

        s[0] ^= (uint64_t) ngx_random() << 32 ^ (uint64_t) ngx_random();
        s[1] ^= (uint64_t) ngx_pid << 32 ^ (uint64_t) ngx_time();
        s[2] ^= (uint64_t) ngx_current_msec;
        s[3] ^= (uint64_t) (uintptr_t) ngx_cycle;
    }

    /* the one state the generator must not have */

    if ((s[0] | s[1] | s[2] | s[3]) == 0) {
        s[0] = 0x9e3779b97f4a7c15ULL;
    }

    ngx_http_mesh_metrics_rng_pid = ngx_pid;
}


/* xoshiro256** (Blackman and Vigna) */

static ngx_inline uint64_t
ngx_http_mesh_metrics_next(void)
{
    uint64_t  *s, r, t;

    s = ngx_http_mesh_metrics_rng;

    r = s[1] * 5;
    r = ((r << 7) | (r >> 57)) * 9;
    t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);

    return r;
}


/* 8 or 16 bytes all zero: a word at a time */

static ngx_inline ngx_uint_t
ngx_http_mesh_metrics_is_zero(u_char *p, size_t len)
{
    uint64_t  a, b;

    ngx_memcpy(&a, p, 8);
    b = 0;

    if (len == 16) {
        ngx_memcpy(&b, p + 8, 8);
    }

    return (a | b) == 0;
}


static u_char *
ngx_http_mesh_metrics_traceparent(u_char *p,
    ngx_http_mesh_metrics_trace_t *t, u_char *span)
{
    p = ngx_cpymem(p, "00-", 3);
    p = ngx_cpymem(p, t->trace_hex, 32);
    *p++ = '-';
    p = ngx_http_mesh_metrics_hex_dump(p, span, 8);
    *p++ = '-';

    return ngx_http_mesh_metrics_hex_dump(p, &t->flags, 1);
}


static ngx_inline u_char *
ngx_http_mesh_metrics_hex_dump(u_char *dst, u_char *src, size_t len)
{
    /* a byte's two digits at once */

    static const u_char  hex[] =
        "000102030405060708090a0b0c0d0e0f"
        "101112131415161718191a1b1c1d1e1f"
        "202122232425262728292a2b2c2d2e2f"
        "303132333435363738393a3b3c3d3e3f"
        "404142434445464748494a4b4c4d4e4f"
        "505152535455565758595a5b5c5d5e5f"
        "606162636465666768696a6b6c6d6e6f"
        "707172737475767778797a7b7c7d7e7f"
        "808182838485868788898a8b8c8d8e8f"
        "909192939495969798999a9b9c9d9e9f"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
        "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
        "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
        "e0e1e2e3e4e5e6e7e8e9eaebecedeeef"
        "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

    for ( /* void */ ; len >= 4; len -= 4, src += 4, dst += 8) {
        ngx_http_mesh_metrics_hex_dump4(dst, src);
    }

    while (len--) {
        ngx_memcpy(dst, &hex[2 * *src++], 2);
        dst += 2;
    }

    return dst;
}


/*
 * Four bytes into eight lowercase hex digits in a word: each byte spread
 * to two, its high then its low four bits, then '0' added to each, and
 * 'a' - '0' - 10 more to those of 10 and above (a carry into bit 4 of
 * the digit plus 6 tells which)
 */

static ngx_inline void
ngx_http_mesh_metrics_hex_dump4(u_char *dst, u_char *src)
{
    uint64_t  x, n, m;

    x = (uint64_t) src[0] | (uint64_t) src[1] << 8
        | (uint64_t) src[2] << 16 | (uint64_t) src[3] << 24;

    x = (x | x << 16) & 0x0000ffff0000ffffULL;
    x = (x | x << 8) & 0x00ff00ff00ff00ffULL;

    n = ((x >> 4) & 0x000f000f000f000fULL)
        | ((x & 0x000f000f000f000fULL) << 8);

    m = ((n + 0x0606060606060606ULL) >> 4) & 0x0101010101010101ULL;
    n += 0x3030303030303030ULL + m * 0x27;

    ngx_http_mesh_metrics_put64(dst, n);
}


/*
 * A header's name against one of ours, all lowercase letters: by the
 * lowercase copy that nginx made of a client's header names, or else
 * letter by letter (c | 0x20 equals the letter only for the letter in
 * either case).
 */

static ngx_uint_t
ngx_http_mesh_metrics_is_name(ngx_table_elt_t *h, ngx_str_t *name)
{
    size_t      i;
    uint64_t    a, b, c, d;
    ngx_str_t  *key;

    key = &h->key;

    if (key->len != name->len) {
        return 0;
    }

    if (h->lowcase_key) {

        /* our names are 8 to 16 bytes long: two words, overlapping */

        ngx_memcpy(&a, h->lowcase_key, 8);
        ngx_memcpy(&b, name->data, 8);
        ngx_memcpy(&c, h->lowcase_key + name->len - 8, 8);
        ngx_memcpy(&d, name->data + name->len - 8, 8);

        return ((a ^ b) | (c ^ d)) == 0;
    }

    for (i = 0; i < name->len; i++) {
        if ((key->data[i] | 0x20) != name->data[i]) {
            return 0;
        }
    }

    return 1;
}


ngx_int_t
ngx_http_mesh_metrics_trace_handler(ngx_http_request_t *r)
{
    ngx_http_mesh_metrics_trace_t     *t;
    ngx_http_mesh_metrics_loc_conf_t  *lcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_mesh_metrics_module);

    if (!lcf->trace) {
        return NGX_DECLINED;
    }

    t = ngx_http_mesh_metrics_trace_ctx(r);
    if (t == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (t->header_done) {
        return NGX_DECLINED;
    }

    if (ngx_http_mesh_metrics_set_headers(r, t) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    t->header_done = 1;

    return NGX_DECLINED;
}


/*
 * Our "traceparent" goes into the request headers, which the proxy module
 * then forwards like any other: in place of the one that came in, or
 * added when none did.  Only when headers must go (several
 * "traceparent", or a "tracestate" of a trace that restarts) is the list
 * rebuilt.  The name is always written in lowercase, which is what
 * ngx_http_mesh_metrics_new_attempt() looks for.
 */

static ngx_int_t
ngx_http_mesh_metrics_set_headers(ngx_http_request_t *r,
    ngx_http_mesh_metrics_trace_t *t)
{
    ngx_table_elt_t  *h;

    h = t->traceparent;

    /*
     * the header seen when the trace was read is still the incoming
     * "traceparent", unless a module rewrote the list since (a variable
     * may have read the trace in an earlier phase): then rebuild
     */

    if (t->ntraceparent > 1 || (t->tracestate && !t->continued)
        || (h && !ngx_http_mesh_metrics_is_name(h,
                                             &ngx_http_mesh_metrics_tp_name)))
    {
        return ngx_http_mesh_metrics_rebuild_headers(r, t);
    }

    if (h == NULL) {

        /*
         * nginx never initialises the header list of an HTTP/0.9 request
         * (it has no headers): a push onto it would write through NULL
         */

        if (r->headers_in.headers.last == NULL
            && ngx_list_init(&r->headers_in.headers, r->pool, 1,
                             sizeof(ngx_table_elt_t))
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        h = ngx_list_push(&r->headers_in.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }
    }

    return ngx_http_mesh_metrics_write_header(r, t, h);
}


/* our "traceparent" into a header of the request's list */

static ngx_int_t
ngx_http_mesh_metrics_write_header(ngx_http_request_t *r,
    ngx_http_mesh_metrics_trace_t *t, ngx_table_elt_t *h)
{
    u_char  *p;

    /* written once per main request (header_done) */

    p = t->header;

    h->key = ngx_http_mesh_metrics_tp_name;
    h->lowcase_key = ngx_http_mesh_metrics_tp_name.data;
    h->hash = ngx_http_mesh_metrics_tp_hash;
    h->value.data = p;
    h->value.len = ngx_http_mesh_metrics_traceparent(p, t, t->span_id) - p;

    return NGX_OK;
}


/*
 * Rebuilds the request header list: without any incoming "traceparent",
 * without "tracestate" when the trace restarts, with our "traceparent"
 * last.
 */

static ngx_int_t
ngx_http_mesh_metrics_rebuild_headers(ngx_http_request_t *r,
    ngx_http_mesh_metrics_trace_t *t)
{
    ngx_uint_t        i, n;
    ngx_list_t        list;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *nh;

    n = 0;
    part = &r->headers_in.headers.part;

    while (part) {
        n += part->nelts;
        part = part->next;
    }

    if (ngx_list_init(&list, r->pool, n + 1, sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (ngx_http_mesh_metrics_is_name(&h[i],
                                          &ngx_http_mesh_metrics_tp_name)
            || (!t->continued
                && ngx_http_mesh_metrics_is_name(&h[i],
                                             &ngx_http_mesh_metrics_ts_name)))
        {
            continue;
        }

        nh = ngx_list_push(&list);
        if (nh == NULL) {
            return NGX_ERROR;
        }

        *nh = h[i];
    }

    nh = ngx_list_push(&list);
    if (nh == NULL
        || ngx_http_mesh_metrics_write_header(r, t, nh) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * the list has one part (room for all): its "last" must point to the
     * part inside r->headers_in, not to the one on this stack, or a later
     * ngx_list_push() (another module adding a request header) writes
     * through a dangling pointer
     */

    r->headers_in.headers = list;
    r->headers_in.headers.last = &r->headers_in.headers.part;

    return NGX_OK;
}


static ngx_int_t
ngx_http_mesh_metrics_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                            *p;
    ngx_http_mesh_metrics_trace_t     *t;
    ngx_http_mesh_metrics_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_mesh_metrics_module);

    if (!lcf->trace) {
        v->not_found = 1;
        return NGX_OK;
    }

    t = ngx_http_mesh_metrics_trace_ctx(r);
    if (t == NULL) {
        return NGX_ERROR;
    }

    if (data == NGX_HTTP_MESH_METRICS_VAR_PARENT && !t->continued) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_HTTP_MESH_METRICS_TP_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    switch (data) {

    case NGX_HTTP_MESH_METRICS_VAR_TRACE:
        p = ngx_cpymem(p, t->trace_hex, 32);
        break;

    case NGX_HTTP_MESH_METRICS_VAR_SPAN:
        p = ngx_http_mesh_metrics_hex_dump(p, t->span_id, 8);
        break;

    case NGX_HTTP_MESH_METRICS_VAR_PARENT:
        p = ngx_http_mesh_metrics_hex_dump(p, t->parent_id, 8);
        break;

    default: /* NGX_HTTP_MESH_METRICS_VAR_TRACEPARENT */
        p = ngx_http_mesh_metrics_traceparent(p, t, t->span_id);
    }

    v->len = p - v->data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_mesh_metrics_upstream_spans_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_mesh_metrics_trace_t  *t;

    t = ngx_http_mesh_metrics_state(r, 0);

    if (t == NULL || t->upstream_spans.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = t->upstream_spans.data;
    v->len = t->upstream_spans.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * Balancer wrapper: one span id per upstream attempt, and a note of the
 * subrequests that go upstream.
 */

ngx_int_t
ngx_http_mesh_metrics_trace_wrap_upstreams(ngx_conf_t *cf)
{
    ngx_uint_t                           i;
    ngx_array_t                         *inits;
    ngx_http_upstream_srv_conf_t       **uscfp;
    ngx_http_upstream_main_conf_t       *umcf;
    ngx_http_mesh_metrics_peer_init_t   *pi;
    ngx_http_mesh_metrics_main_conf_t   *mmcf;

    umcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_upstream_module);
    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_mesh_metrics_module);

    inits = ngx_array_create(cf->pool, umcf->upstreams.nelts + 1,
                             sizeof(ngx_http_mesh_metrics_peer_init_t));
    if (inits == NULL) {
        return NGX_ERROR;
    }

    uscfp = umcf->upstreams.elts;

    for (i = 0; i < umcf->upstreams.nelts; i++) {

        if (uscfp[i]->peer.init == NULL) {
            continue;
        }

        pi = ngx_array_push(inits);
        if (pi == NULL) {
            return NGX_ERROR;
        }

        pi->upstream = uscfp[i];
        pi->init = uscfp[i]->peer.init;

        uscfp[i]->peer.init = ngx_http_mesh_metrics_init_peer;
    }

    ngx_sort(inits->elts, inits->nelts,
             sizeof(ngx_http_mesh_metrics_peer_init_t),
             ngx_http_mesh_metrics_cmp_peer_inits);

    mmcf->peer_inits = inits;

    return NGX_OK;
}


static ngx_int_t
ngx_http_mesh_metrics_cmp_peer_inits(const void *one, const void *two)
{
    const ngx_http_mesh_metrics_peer_init_t  *a = one;
    const ngx_http_mesh_metrics_peer_init_t  *b = two;

    if ((uintptr_t) a->upstream == (uintptr_t) b->upstream) {
        return 0;
    }

    return (uintptr_t) a->upstream < (uintptr_t) b->upstream ? -1 : 1;
}


static ngx_int_t
ngx_http_mesh_metrics_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_int_t                            rc;
    ngx_uint_t                           lo, hi, mid;
    ngx_http_upstream_t                 *u;
    ngx_http_request_t                 **sr;
    ngx_http_mesh_metrics_trace_t       *t;
    ngx_http_mesh_metrics_peer_data_t   *pd;
    ngx_http_mesh_metrics_peer_init_t   *pi;
    ngx_http_mesh_metrics_main_conf_t   *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_mesh_metrics_module);

    /* the array is sorted by upstream address */

    pi = mmcf->peer_inits->elts;
    lo = 0;
    hi = mmcf->peer_inits->nelts;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        if ((uintptr_t) pi[mid].upstream < (uintptr_t) us) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    if (lo == mmcf->peer_inits->nelts || pi[lo].upstream != us) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "mesh_metrics: unknown upstream \"%V\"", &us->host);
        return NGX_ERROR;
    }

    rc = pi[lo].init(r, us);

    if (rc != NGX_OK) {
        return rc;
    }

    /* subrequests that go upstream are counted with their main request */

    if (r != r->main && mmcf->zone) {
        t = ngx_http_mesh_metrics_state(r, 1);
        if (t == NULL) {
            return NGX_ERROR;
        }

        if (t->subrequests == NULL) {
            t->subrequests = ngx_array_create(r->main->pool, 4,
                                              sizeof(ngx_http_request_t *));
            if (t->subrequests == NULL) {
                return NGX_ERROR;
            }
        }

        sr = ngx_array_push(t->subrequests);
        if (sr == NULL) {
            return NGX_ERROR;
        }

        *sr = r;

    } else {
        t = ngx_http_mesh_metrics_state(r, 0);
    }

    if (t == NULL || !t->header_done) {
        return NGX_OK;
    }

    u = r->upstream;

    /*
     * the state's own wrapper serves the first upstream of the request;
     * another (a subrequest's, one after an internal redirect) takes one
     * from the pool, as the first may still be in use
     */

    if (!t->peer_used) {
        t->peer_used = 1;
        pd = &t->peer;

    } else {
        pd = ngx_palloc(r->pool, sizeof(ngx_http_mesh_metrics_peer_data_t));
        if (pd == NULL) {
            return NGX_ERROR;
        }
    }

    pd->request = r;
    pd->data = u->peer.data;
    pd->get = u->peer.get;
    pd->free = u->peer.free;
    pd->notify = u->peer.notify;

    u->peer.data = pd;
    u->peer.get = ngx_http_mesh_metrics_get_peer;
    u->peer.free = ngx_http_mesh_metrics_free_peer;

    if (pd->notify) {
        u->peer.notify = ngx_http_mesh_metrics_notify_peer;
    }

#if (NGX_HTTP_SSL)
    pd->set_session = u->peer.set_session;
    pd->save_session = u->peer.save_session;
    u->peer.set_session = ngx_http_mesh_metrics_set_session;
    u->peer.save_session = ngx_http_mesh_metrics_save_session;
#endif

    return NGX_OK;
}


static ngx_int_t
ngx_http_mesh_metrics_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_mesh_metrics_peer_data_t  *pd = data;

    ngx_int_t  rc;

    rc = pd->get(pc, pd->data);

    /*
     * NGX_AGAIN: a balancer below (upstream_mesh) delays the connect of a
     * retry for its backoff; that is an attempt too
     */

    if (rc == NGX_OK || rc == NGX_DONE || rc == NGX_AGAIN) {
        ngx_http_mesh_metrics_new_attempt(pd->request);
    }

    return rc;
}


static void
ngx_http_mesh_metrics_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_mesh_metrics_peer_data_t  *pd = data;

    pd->free(pc, pd->data, state);
}


static void
ngx_http_mesh_metrics_notify_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t type)
{
    ngx_http_mesh_metrics_peer_data_t  *pd = data;

    pd->notify(pc, pd->data, type);
}


#if (NGX_HTTP_SSL)

static ngx_int_t
ngx_http_mesh_metrics_set_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_mesh_metrics_peer_data_t  *pd = data;

    if (pd->set_session == NULL) {
        return NGX_OK;
    }

    return pd->set_session(pc, pd->data);
}


static void
ngx_http_mesh_metrics_save_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_mesh_metrics_peer_data_t  *pd = data;

    if (pd->save_session) {
        pd->save_session(pc, pd->data);
    }
}

#endif


/*
 * A new attempt: find our "traceparent" in the request buffer the proxy
 * module built (the first buffer holds the request line and headers) and
 * write a fresh span id over the parent id, in place.  Only a header line
 * matches, and only in the header block: a client header whose value looks
 * the same, or a body that proxy_set_body put in the buffer, is left alone.
 * The header's name is ours, in lowercase: the search is exact.
 */

static void
ngx_http_mesh_metrics_new_attempt(ngx_http_request_t *r)
{
    u_char                         *p, *s;
    u_char                          span[8];
    size_t                          n;
    ngx_buf_t                      *b;
    ngx_http_upstream_t            *u;
    ngx_http_mesh_metrics_trace_t  *t;

    t = ngx_http_mesh_metrics_state(r, 0);
    u = r->upstream;

    if (t == NULL || u == NULL || u->request_bufs == NULL) {
        return;
    }

    b = u->request_bufs->buf;

    if (!ngx_buf_in_memory(b) || b->start == NULL) {
        return;
    }

    s = ngx_http_mesh_metrics_find_parent(b, t);

    if (s == NULL) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "mesh trace: no traceparent in upstream request");
        return;
    }

    ngx_http_mesh_metrics_random(span, 8);
    (void) ngx_http_mesh_metrics_hex_dump(s, span, 8);

    if (t->upstream_spans_cap == 0) {
        t->upstream_spans.data = t->spans;
        t->upstream_spans_cap = NGX_HTTP_MESH_METRICS_SPANS_LEN;
    }

    if (t->upstream_spans.len + 18 > t->upstream_spans_cap) {
        n = t->upstream_spans_cap * 2;

        p = ngx_pnalloc(r->main->pool, n);
        if (p == NULL) {
            return;
        }

        if (t->upstream_spans.len) {
            ngx_memcpy(p, t->upstream_spans.data, t->upstream_spans.len);
        }

        t->upstream_spans.data = p;
        t->upstream_spans_cap = n;
    }

    p = t->upstream_spans.data + t->upstream_spans.len;

    if (t->upstream_spans.len) {
        *p++ = ',';
        *p++ = ' ';
    }

    p = ngx_cpymem(p, s, 16);
    t->upstream_spans.len = p - t->upstream_spans.data;

    ngx_http_mesh_metrics_otlp_attempt(r, t, span);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "mesh trace: upstream span %*xs", (size_t) 8, span);
}


/*
 * The parent id of our "traceparent" line in the header block of an
 * upstream request buffer, read line by line up to the empty line that
 * ends the block.
 */

static u_char *
ngx_http_mesh_metrics_find_parent(ngx_buf_t *b,
    ngx_http_mesh_metrics_trace_t *t)
{
    u_char  *p, *last;
    u_char   line[sizeof("traceparent: 00-") - 1 + 32 + 1];
    size_t   n;

    p = ngx_cpymem(line, "traceparent: 00-", sizeof("traceparent: 00-") - 1);
    p = ngx_cpymem(p, t->trace_hex, 32);
    *p++ = '-';
    n = p - line;

    p = b->start;
    last = b->last;

    for ( ;; ) {
        p = memchr(p, LF, last - p);

        if (p == NULL || last - ++p < 2 || *p == CR) {
            return NULL;
        }

        if (*p == 't' && (size_t) (last - p) > n + 16
            && ngx_memcmp(p, line, n) == 0)
        {
            return p + n;
        }
    }
}
