
/*
 * Copyright (C) meshgate contributors
 */


/*
 * Metric label values (ngx_http_mesh_metrics_store.c and _export.c):
 * ngx_http_mesh_metrics_key_add() sanitises outside text (a route, a
 * caller identity, an upstream name) into a series key; the exporter
 * escapes it for Prometheus text and for JSON.
 *
 * Input: label values, LF-separated, 4 to a series (the most a series
 * has).  Checked: each value in the key is
 * valid UTF-8 without control bytes, within the size limits; its JSON
 * form is a valid JSON string; its Prometheus form has no raw LF and no
 * unescaped quote.
 *
 * max_len: 4096
 */


#include "ngx_fuzz.h"
#include <jansson.h>
#include "../../modules/common/ngx_meshgate_http.c"
#include "../../modules/common/ngx_meshgate_escape.c"
#include "../../modules/mesh_metrics/ngx_http_mesh_metrics_store.c"
#include "../../modules/mesh_metrics/ngx_http_mesh_metrics_export.c"


#define NGX_FUZZ_LABELS  4


static void ngx_fuzz_label_key(ngx_http_mesh_metrics_key_t *key);
static void ngx_fuzz_label_check(ngx_str_t *value);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                       *copy, *p, *last, *nl;
    ngx_uint_t                    n;
    ngx_http_mesh_metrics_key_t   key;

    ngx_fuzz_init();

    copy = malloc(size + 1);
    ngx_memcpy(copy, data, size);

    /* a series has at most 4 labels: a key per 4 values */

    n = 0;

    for (p = copy, last = copy + size; p <= last; p = nl + 1) {
        nl = memchr(p, '\n', last - p);
        if (nl == NULL) {
            nl = last;
        }

        if (n++ % NGX_FUZZ_LABELS == 0) {
            ngx_http_mesh_metrics_key_reset(&key);
        }

        ngx_http_mesh_metrics_key_add(&key, p, nl - p);

        ngx_fuzz_assert(key.len <= NGX_HTTP_MESH_METRICS_MAX_KEY,
                        "key beyond its buffer");

        if (n % NGX_FUZZ_LABELS == 0 || nl == last) {
            ngx_fuzz_label_key(&key);
        }
    }

    free(copy);

    return 0;
}


/* the values, each ended by '\0' */

static void
ngx_fuzz_label_key(ngx_http_mesh_metrics_key_t *key)
{
    u_char     *p, *last, *end;
    ngx_str_t   value;

    for (p = key->data, last = key->data + key->len; p < last; p = end + 1) {
        end = memchr(p, '\0', last - p);
        ngx_fuzz_assert(end != NULL, "value without its end");

        value.data = p;
        value.len = end - p;

        ngx_fuzz_label_check(&value);
    }
}


static void
ngx_fuzz_label_check(ngx_str_t *value)
{
    u_char   buf[NGX_HTTP_MESH_METRICS_MAX_VALUE * 6 + 2], *p, *q;
    json_t  *v;

    ngx_fuzz_assert(value->len <= NGX_HTTP_MESH_METRICS_MAX_VALUE,
                    "value beyond its limit");
    ngx_fuzz_assert(ngx_meshgate_text_is_safe(value->data, value->len),
                    "control bytes in a label value");
    ngx_fuzz_assert(ngx_meshgate_utf8_is_valid(value->data, value->len),
                    "invalid UTF-8 in a label value");

    buf[0] = '"';
    p = ngx_http_mesh_metrics_escape(buf + 1, value,
                                     NGX_HTTP_MESH_METRICS_ESC_JSON);
    *p++ = '"';

    v = json_loadb((char *) buf, p - buf, JSON_DECODE_ANY, NULL);
    ngx_fuzz_assert(v != NULL && json_is_string(v),
                    "JSON form is not a JSON string");
    json_decref(v);

    p = ngx_http_mesh_metrics_escape(buf, value,
                                     NGX_HTTP_MESH_METRICS_ESC_PROM);

    for (q = buf; q < p; q++) {
        ngx_fuzz_assert(*q != '\n', "raw LF in a Prometheus label");

        if (*q == '\\') {
            q++;
            continue;
        }

        ngx_fuzz_assert(*q != '"', "unescaped quote in a Prometheus label");
    }
}
