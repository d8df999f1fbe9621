
/*
 * Copyright (C) meshgate contributors
 */


/*
 * W3C trace context (ngx_http_mesh_metrics_trace.c): the incoming
 * "traceparent" among the request headers, its parsing, and the search
 * for it in a request buffer nginx built for the upstream.
 *
 * Input: request header lines ("name: value", LF-separated).  Checked: a
 * traceparent that parses is re-emitted as version 00 and parses again
 * to the same trace, parent and flags; the trace id's kept text is its
 * lowercase hex.
 *
 * max_len: 4096
 */


#include "ngx_fuzz.h"
#include "../../modules/mesh_metrics/ngx_http_mesh_metrics_trace.c"
#include "../../modules/common/ngx_meshgate_http.c"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                         *copy, *p, *last, *nl, *colon;
    u_char                          line[NGX_HTTP_MESH_METRICS_TP_LEN];
    u_char                          hex[32];
    ngx_uint_t                      nheaders;
    ngx_buf_t                       b;
    ngx_pool_t                     *pool;
    ngx_table_elt_t                *h;
    ngx_connection_t                c;
    ngx_http_request_t              r;
    ngx_http_mesh_metrics_trace_t   t, again;

    ngx_fuzz_init();

    copy = malloc(size + 1);
    ngx_memcpy(copy, data, size);

    pool = ngx_create_pool(4096, ngx_fuzz_get_log());

    ngx_memzero(&c, sizeof(ngx_connection_t));
    ngx_memzero(&r, sizeof(ngx_http_request_t));
    c.log = ngx_fuzz_get_log();
    r.connection = &c;
    r.pool = pool;

    ngx_list_init(&r.headers_in.headers, pool, 2, sizeof(ngx_table_elt_t));
    nheaders = 0;

    for (p = copy, last = copy + size; p < last; p = nl + 1) {
        nl = memchr(p, '\n', last - p);
        if (nl == NULL) {
            nl = last;
        }

        colon = memchr(p, ':', nl - p);
        if (colon == NULL) {
            continue;
        }

        h = ngx_list_push(&r.headers_in.headers);
        h->key.data = p;
        h->key.len = colon - p;

        /*
         * nginx keeps a lowercase copy of a client's header names; a
         * header a module added may have none: every other one here
         */

        h->lowcase_key = NULL;

        if (nheaders++ % 2 == 0) {
            h->lowcase_key = ngx_pnalloc(pool, h->key.len + 1);
            ngx_strlow(h->lowcase_key, h->key.data, h->key.len);
        }
        h->value.data = colon + 1;
        h->value.len = nl - colon - 1;

        while (h->value.len && h->value.data[0] == ' ') {
            h->value.data++;
            h->value.len--;
        }
    }

    ngx_memzero(&t, sizeof(ngx_http_mesh_metrics_trace_t));

    if (ngx_http_mesh_metrics_trace_incoming(&r, &t) == NGX_OK) {
        (void) ngx_hex_dump(hex, t.trace_id, 16);

        ngx_fuzz_assert(ngx_memcmp(hex, t.trace_hex, 32) == 0,
                        "kept trace id text differs from the id");

        p = ngx_http_mesh_metrics_traceparent(line, &t, t.parent_id);

        ngx_fuzz_assert(p - line == NGX_HTTP_MESH_METRICS_TP_LEN,
                        "re-emitted traceparent of another length");

        ngx_memzero(&again, sizeof(ngx_http_mesh_metrics_trace_t));

        ngx_fuzz_assert(ngx_http_mesh_metrics_parse_traceparent(line,
                            p - line, &again)
                        == NGX_OK, "re-emitted traceparent refused");
        ngx_fuzz_assert(ngx_memcmp(t.trace_id, again.trace_id, 16) == 0
                        && ngx_memcmp(t.parent_id, again.parent_id, 8) == 0
                        && t.flags == again.flags,
                        "re-emitted traceparent differs");
    }

    ngx_memzero(&b, sizeof(ngx_buf_t));
    b.start = copy;
    b.pos = copy;
    b.last = copy + size;
    b.end = copy + size;

    (void) ngx_http_mesh_metrics_find_parent(&b, &t);

    ngx_destroy_pool(pool);
    free(copy);

    return 0;
}
