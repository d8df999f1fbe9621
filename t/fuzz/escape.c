
/*
 * Copyright (C) meshgate contributors
 */


/*
 * The escaper of names written into JSON strings and Prometheus label
 * values (ngx_meshgate_escape.c).
 *
 * Input: the bytes of a name.  Checked, for both forms: the length
 * computed first is the length written; the JSON form has no byte below
 * 0x20 and, between quotes, is a JSON string that jansson reads back as
 * the name (when the name is valid UTF-8); the label form has no newline,
 * every quote and backslash in it is escaped, and unescaping it gives the
 * name back.
 *
 * max_len: 4096
 */


#include "ngx_fuzz.h"
#include <jansson.h>
#include "../../modules/common/ngx_meshgate_escape.c"
#include "../../modules/common/ngx_meshgate_http.c"


static void ngx_fuzz_escape_json(u_char *src, size_t len);
static void ngx_fuzz_escape_label(u_char *src, size_t len);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char  *copy;

    ngx_fuzz_init();

    copy = malloc(size ? size : 1);
    ngx_memcpy(copy, data, size);

    ngx_fuzz_escape_json(copy, size);
    ngx_fuzz_escape_label(copy, size);

    free(copy);

    return 0;
}


static void
ngx_fuzz_escape_json(u_char *src, size_t len)
{
    u_char        *buf, *last;
    size_t         n, i;
    json_t        *v;
    json_error_t   err;

    n = ngx_meshgate_escape_len(src, len, NGX_MESHGATE_ESCAPE_JSON);

    /* exactly n bytes between the quotes: ASan sees a write beyond */

    buf = malloc(n + 2);
    buf[0] = '"';

    last = ngx_meshgate_escape(buf + 1, src, len, NGX_MESHGATE_ESCAPE_JSON);

    ngx_fuzz_assert((size_t) (last - (buf + 1)) == n,
                    "JSON escape length differs from its estimate");

    buf[n + 1] = '"';

    for (i = 1; i <= n; i++) {
        ngx_fuzz_assert(buf[i] >= 0x20, "control byte in JSON text");
    }

    if (ngx_meshgate_utf8_is_valid(src, len)) {
        v = json_loadb((char *) buf, n + 2,
                       JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);

        ngx_fuzz_assert(v != NULL && json_is_string(v)
                        && json_string_length(v) == len
                        && ngx_memcmp(json_string_value(v), src, len) == 0,
                        "JSON string does not read back as the name");

        json_decref(v);
    }

    free(buf);
}


static void
ngx_fuzz_escape_label(u_char *src, size_t len)
{
    u_char  *buf, *last, *p, *q;
    size_t   n;

    n = ngx_meshgate_escape_len(src, len, NGX_MESHGATE_ESCAPE_LABEL);

    buf = malloc(n ? n : 1);

    last = ngx_meshgate_escape(buf, src, len, NGX_MESHGATE_ESCAPE_LABEL);

    ngx_fuzz_assert((size_t) (last - buf) == n,
                    "label escape length differs from its estimate");

    /* unescaped as Prometheus reads a label value: \\, \" and \n */

    q = src;

    for (p = buf; p < last; p++, q++) {
        ngx_fuzz_assert(*p != '\n' && *p != '"', "unescaped byte in label");

        if (*p == '\\') {
            p++;
            ngx_fuzz_assert(p < last
                            && (*p == '\\' || *p == '"' || *p == 'n'),
                            "bad escape in label");
            ngx_fuzz_assert(*q == (*p == 'n' ? '\n' : *p),
                            "label unescapes to another name");
            continue;
        }

        /* control bytes, DEL and bytes of bad UTF-8 are written as '?' */

        ngx_fuzz_assert(*q == *p
                        || (*p == '?'
                            && (*q < 0x20 || *q == 0x7f || *q >= 0x80)),
                        "label unescapes to another name");
    }

    ngx_fuzz_assert(q == src + len, "label unescapes to another length");

    free(buf);
}
