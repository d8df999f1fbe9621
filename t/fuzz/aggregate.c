
/*
 * Copyright (C) meshgate contributors
 */


/*
 * Aggregation of upstream answers (ngx_http_aggregate_merge.c and
 * ngx_http_aggregate_json.c): every part body is validated and rewritten
 * as canonical JSON text, filtered by fields=, merged (object or flat);
 * a $aggregate_<part>_<field> name is resolved and looked up.
 *
 * Input: a flags byte (bit 0: flat merge, bit 1: fields= on part "a",
 * bit 2: fields= on part "c", bit 3: part "b" failed), then NUL-separated
 * segments: a variable name, and up to three part bodies.  Checked: a
 * part is accepted exactly when jansson accepts it (duplicate names
 * refused) and its canonical text is the same JSON; the merged body is
 * one valid JSON document and a newline; the heap never holds more than
 * a few times the parts' size (issue 18.6).
 *
 * max_len: 8192
 */


#include "ngx_fuzz.h"
#include <jansson.h>
#include "../../modules/common/ngx_meshgate_http.c"
#include "../../modules/common/ngx_meshgate_json_text.c"
#include "../../modules/aggregate/ngx_http_aggregate_json.c"
#include "../../modules/aggregate/ngx_http_aggregate_merge.c"


#define NGX_FUZZ_AGGREGATE_PARTS  3

/* the heap an aggregation may hold: per byte of parts, and at most */
#define NGX_FUZZ_AGGREGATE_RATIO  8
#define NGX_FUZZ_AGGREGATE_BASE   (64 * 1024)


static void ngx_fuzz_aggregate_same(ngx_http_aggregate_part_t *part,
    ngx_str_t *in);


static ngx_str_t  ngx_fuzz_aggregate_fields_a[] = {
    ngx_string("id"), ngx_string("user.name"), ngx_string("items")
};

static ngx_str_t  ngx_fuzz_aggregate_fields_c[] = {
    ngx_string("a.b.c"), ngx_string("a.b"), ngx_string("x")
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                          *copy, *p, *last, *nul;
    size_t                           peak;
    json_t                          *v;
    ngx_str_t                        seg[NGX_FUZZ_AGGREGATE_PARTS + 1];
    ngx_str_t                        in[NGX_FUZZ_AGGREGATE_PARTS];
    ngx_str_t                        out, field, value;
    ngx_int_t                        i, n, rc;
    ngx_uint_t                       flags;
    ngx_pool_t                      *pool;
    ngx_array_t                      confs, fa, fc;
    json_error_t                     err;
    ngx_connection_t                 c;
    ngx_http_request_t               r;
    ngx_http_aggregate_ctx_t         ctx;
    ngx_http_aggregate_part_t        parts[NGX_FUZZ_AGGREGATE_PARTS];
    ngx_http_aggregate_loc_conf_t    conf;
    ngx_http_aggregate_part_conf_t  *pc;

    ngx_fuzz_init();

    if (size < 1) {
        return 0;
    }

    flags = data[0];

    /* two copies: the parts are rewritten in place */

    copy = malloc(2 * size);
    ngx_memcpy(copy, data + 1, size - 1);
    ngx_memcpy(copy + size, data + 1, size - 1);

    p = copy;
    last = copy + size - 1;

    for (n = 0; n < NGX_FUZZ_AGGREGATE_PARTS + 1 && p <= last; n++) {
        nul = memchr(p, '\0', last - p);
        seg[n].data = p;
        seg[n].len = (nul ? nul : last) - p;
        p = seg[n].data + seg[n].len + 1;

        if (n > 0) {
            in[n - 1].data = seg[n].data + size;
            in[n - 1].len = seg[n].len;
        }
    }

    pool = ngx_create_pool(4096, ngx_fuzz_get_log());

    ngx_memzero(&c, sizeof(ngx_connection_t));
    ngx_memzero(&r, sizeof(ngx_http_request_t));
    c.log = ngx_fuzz_get_log();
    r.connection = &c;
    r.pool = pool;

    fa.elts = ngx_fuzz_aggregate_fields_a;
    fa.nelts = 3;
    fc.elts = ngx_fuzz_aggregate_fields_c;
    fc.nelts = 3;

    ngx_memzero(&conf, sizeof(ngx_http_aggregate_loc_conf_t));
    conf.merge = (flags & 0x01) ? NGX_HTTP_AGGREGATE_MERGE_FLAT
                                : NGX_HTTP_AGGREGATE_MERGE_OBJECT;
    conf.max_part_size = 1024 * 1024;
    conf.parts = &confs;

    ngx_array_init(&confs, pool, NGX_FUZZ_AGGREGATE_PARTS,
                   sizeof(ngx_http_aggregate_part_conf_t));

    ngx_memzero(&ctx, sizeof(ngx_http_aggregate_ctx_t));
    ctx.request = &r;
    ctx.conf = &conf;
    ctx.parts = parts;
    ctx.nparts = n > 1 ? n - 1 : 0;

    ngx_fuzz_heap_start();

    for (i = 0; i < (ngx_int_t) ctx.nparts; i++) {
        pc = ngx_array_push(&confs);
        ngx_memzero(pc, sizeof(ngx_http_aggregate_part_conf_t));
        pc->name.data = (u_char *) (i == 0 ? "a" : i == 1 ? "b" : "c");
        pc->name.len = 1;
        pc->fields = (i == 0 && (flags & 0x02)) ? &fa
                     : (i == 2 && (flags & 0x04)) ? &fc : NULL;
        pc->optional = i == 1;

        ngx_memzero(&parts[i], sizeof(ngx_http_aggregate_part_t));
        parts[i].agg = &ctx;
        parts[i].conf = pc;
        /* what ngx_meshgate_fetch.c leaves once an answer is complete */
        parts[i].fetch.answer = seg[i + 1];
        parts[i].fetch.size = seg[i + 1].len;
        parts[i].fetch.status = 200;
        parts[i].fetch.header = 1;
        parts[i].fetch.complete = 1;
        parts[i].fetch.done = 1;
        parts[i].reason = "invalid JSON";

        if (i == 1 && (flags & 0x08)) {
            parts[i].state = NGX_HTTP_AGGREGATE_FAILED;
            parts[i].reason = "upstream status 502";
            continue;
        }

        rc = ngx_http_aggregate_part_json(&parts[i], ngx_fuzz_get_log());

        parts[i].state = (rc == NGX_OK) ? NGX_HTTP_AGGREGATE_OK
                                        : NGX_HTTP_AGGREGATE_FAILED;
    }

    rc = ngx_http_aggregate_merge(&ctx, &out);

    peak = ngx_fuzz_heap_peak();

    ngx_fuzz_assert(peak <= NGX_FUZZ_AGGREGATE_RATIO * size
                            + NGX_FUZZ_AGGREGATE_BASE,
                    "aggregation memory beyond proportion");

    if (rc == NGX_OK) {
        ngx_fuzz_assert(out.len > 0 && out.data[out.len - 1] == '\n',
                        "merged body without its newline");

        v = json_loadb((char *) out.data, out.len - 1, 0, &err);
        ngx_fuzz_assert(v != NULL || ngx_strstr(err.text, "too big")
                        || ngx_strstr(err.text, "overflow"),
                        "merged body is not JSON");
        json_decref(v);
    }

    for (i = 0; i < (ngx_int_t) ctx.nparts; i++) {
        if (!(i == 1 && (flags & 0x08))) {
            ngx_fuzz_aggregate_same(&parts[i], &in[i]);
        }
    }

    if (n > 0) {
        i = ngx_http_aggregate_find_part(&confs, seg[0].data, seg[0].len,
                                         &field);

        if (i != NGX_ERROR && parts[i].state == NGX_HTTP_AGGREGATE_OK) {
            (void) ngx_http_aggregate_lookup(&parts[i].out, &field, &value);
        }
    }

    if (ctx.nparts > 0
        && ngx_http_aggregate_error_body(&ctx, &parts[0], &out) == NGX_OK)
    {
        v = json_loadb((char *) out.data, out.len - 1, 0, &err);
        ngx_fuzz_assert(v != NULL, "error body is not JSON");
        json_decref(v);
    }

    ngx_destroy_pool(pool);
    free(copy);

    return 0;
}


/* the part's canonical text against jansson's reading of what was sent */

static void
ngx_fuzz_aggregate_same(ngx_http_aggregate_part_t *part, ngx_str_t *in)
{
    u_char        *p;
    size_t         len;
    json_t        *want, *got;
    json_error_t   err;

    p = in->data;
    len = in->len;

    if (len >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) {
        p += 3;
        len -= 3;
    }

    /* as the module read parts with jansson: "\u0000" refused */

    want = json_loadb((char *) p, len,
                      JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);

    /* jansson refuses numbers beyond double and int64: text keeps them */

    if (want == NULL
        && (ngx_strstr(err.text, "too big") || ngx_strstr(err.text,
                                                          "overflow")))
    {
        return;
    }

    if (part->state != NGX_HTTP_AGGREGATE_OK) {
        ngx_fuzz_assert(want == NULL, "valid JSON part refused");
        return;
    }

    ngx_fuzz_assert(want != NULL, "invalid JSON part accepted");

    got = json_loadb((char *) part->text.data, part->text.len,
                     JSON_DECODE_ANY, &err);

    ngx_fuzz_assert(got != NULL && json_equal(want, got),
                    "canonical text is another document");

    json_decref(want);
    json_decref(got);
}
