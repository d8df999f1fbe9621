
/*
 * Copyright (C) meshgate contributors
 */


/*
 * The OTLP collector's answer (ngx_http_mesh_metrics_otlp.c): its head,
 * found as the read handler finds it (the first CRLF CRLF), the status
 * and whether the connection may carry the next export.
 *
 * Input: the bytes of an answer, at most the head buffer's size.
 * Checked: a kept connection has an HTTP/1.1 head that ended, and the
 * body left to skip is within the bound.
 *
 * max_len: 4096
 */


#include "ngx_fuzz.h"
#include "../../modules/mesh_metrics/ngx_http_mesh_metrics_otlp.c"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                              *end;
    ngx_int_t                            status;
    ngx_http_mesh_metrics_otlp_state_t  *st;

    ngx_fuzz_init();

    if (size > NGX_HTTP_MESH_METRICS_OTLP_HEAD) {
        return 0;
    }

    st = calloc(1, sizeof(ngx_http_mesh_metrics_otlp_state_t));
    ngx_memcpy(st->reply, data, size);
    st->reply_len = size;

    end = ngx_strlcasestrn(st->reply, st->reply + size,
                           (u_char *) CRLF CRLF, 4 - 1);
    if (end) {
        end += 4;
    }

    status = ngx_http_mesh_metrics_otlp_head(st, end);

    if (status != NGX_ERROR && st->keep) {
        if (end == NULL || st->reply[7] != '1') {
            abort();
        }

        if (st->body_left > NGX_HTTP_MESH_METRICS_OTLP_BODY) {
            abort();
        }
    }

    free(st);

    return 0;
}
