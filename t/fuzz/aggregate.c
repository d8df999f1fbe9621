
/*
 * Copyright (C) meshgate contributors
 */


/*
 * Aggregation of upstream answers (ngx_http_aggregate_merge.c): every
 * part body is parsed, filtered by fields=, merged (object or flat) and
 * dumped; a $aggregate_<part>_<field> name is resolved and looked up.
 *
 * Input: a flags byte (bit 0: flat merge, bit 1: fields= on part "a",
 * bit 2: fields= on part "c", bit 3: part "b" failed), then NUL-separated
 * segments: a variable name, and up to three part bodies.  Checked: the
 * merged body is one valid JSON document and a newline.
 *
 * max_len: 8192
 */


#include "ngx_fuzz.h"
#include "../../modules/common/ngx_meshgate_json.c"
#include "../../modules/aggregate/ngx_http_aggregate_merge.c"


#define NGX_FUZZ_AGGREGATE_PARTS  3


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
    json_t                          *v;
    ngx_str_t                        seg[NGX_FUZZ_AGGREGATE_PARTS + 1];
    ngx_str_t                        out, field;
    ngx_int_t                        i, n;
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

    copy = malloc(size);
    ngx_memcpy(copy, data + 1, size - 1);

    p = copy;
    last = copy + size - 1;

    for (n = 0; n < NGX_FUZZ_AGGREGATE_PARTS + 1 && p <= last; n++) {
        nul = memchr(p, '\0', last - p);
        seg[n].data = p;
        seg[n].len = (nul ? nul : last) - p;
        p = seg[n].data + seg[n].len + 1;
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
        parts[i].buf = seg[i + 1].data;
        parts[i].len = seg[i + 1].len;
        parts[i].size = seg[i + 1].len;
        parts[i].status = 200;
        parts[i].complete = 1;
        parts[i].reason = "invalid JSON";

        if (i == 1 && (flags & 0x08)) {
            parts[i].state = NGX_HTTP_AGGREGATE_FAILED;
            parts[i].reason = "upstream status 502";
            continue;
        }

        parts[i].state = (ngx_http_aggregate_part_json(&parts[i],
                                                       ngx_fuzz_get_log())
                          == NGX_OK)
                         ? NGX_HTTP_AGGREGATE_OK : NGX_HTTP_AGGREGATE_FAILED;
    }

    if (ngx_http_aggregate_merge(&ctx, &out) == NGX_OK) {
        ngx_fuzz_assert(out.len > 0 && out.data[out.len - 1] == '\n',
                        "merged body without its newline");

        v = json_loadb((char *) out.data, out.len - 1, 0, &err);
        ngx_fuzz_assert(v != NULL, "merged body is not JSON");
        json_decref(v);
    }

    if (n > 0) {
        i = ngx_http_aggregate_find_part(&confs, seg[0].data, seg[0].len,
                                         &field);

        if (i != NGX_ERROR && parts[i].state == NGX_HTTP_AGGREGATE_OK) {
            (void) ngx_http_aggregate_lookup(parts[i].out, &field);
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
