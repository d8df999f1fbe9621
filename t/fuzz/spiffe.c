
/*
 * Copyright (C) meshgate contributors
 */


/*
 * SPIFFE IDs (ngx_http_mesh_identity_svid.c): ID checking, the patterns
 * of mesh_allow / mesh_deny / mesh_upstream_identity, and matching a
 * peer's ID against them.
 *
 * Input: a peer ID, then patterns, LF-separated.  Checked: an accepted
 * exact pattern is a valid ID and matches itself; a prefix pattern
 * matches only IDs below its "/".
 *
 * max_len: 4096
 */


#include "ngx_fuzz.h"
#include "../../modules/mesh_identity/ngx_http_mesh_identity_svid.c"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                            *copy, *p, *last, *nl;
    size_t                             td_len;
    ngx_str_t                          id, *value;
    ngx_uint_t                         i, one;
    ngx_pool_t                        *pool;
    ngx_conf_t                         cf;
    ngx_array_t                        args, *patterns, single;
    ngx_http_mesh_identity_pattern_t  *pt;

    ngx_fuzz_init();

    copy = malloc(size + 1);
    ngx_memcpy(copy, data, size);

    pool = ngx_create_pool(4096, ngx_fuzz_get_log());

    last = copy + size;
    nl = memchr(copy, '\n', size);

    id.data = copy;
    id.len = (nl ? nl : last) - copy;

    (void) ngx_http_mesh_identity_check_id(id.data, id.len, &td_len, 0);
    (void) ngx_http_mesh_identity_check_id(id.data, id.len, &td_len, 1);

    ngx_array_init(&args, pool, 4, sizeof(ngx_str_t));

    value = ngx_array_push(&args);
    ngx_str_set(value, "mesh_allow");

    for (p = nl ? nl + 1 : last; p < last; p = nl + 1) {
        nl = memchr(p, '\n', last - p);
        if (nl == NULL) {
            nl = last;
        }

        value = ngx_array_push(&args);
        value->data = p;
        value->len = nl - p;
    }

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.pool = pool;
    cf.args = &args;
    cf.log = ngx_fuzz_get_log();

    patterns = NULL;

    if (args.nelts > 1
        && ngx_http_mesh_identity_parse_patterns(&cf, &patterns)
           == NGX_CONF_OK)
    {
        (void) ngx_http_mesh_identity_match(patterns, &id);

        pt = patterns->elts;

        for (i = 0; i < patterns->nelts; i++) {
            single.elts = &pt[i];
            single.nelts = 1;

            one = ngx_http_mesh_identity_match(&single, &id);

            if (pt[i].any) {
                ngx_fuzz_assert(one == (id.len > 0), "\"*\" misread");
                continue;
            }

            if (pt[i].prefix) {
                ngx_fuzz_assert(pt[i].value.data[pt[i].value.len - 1] == '/',
                                "prefix without its \"/\"");
                ngx_fuzz_assert(!one || id.len > pt[i].value.len,
                                "prefix matches itself");
                continue;
            }

            ngx_fuzz_assert(ngx_http_mesh_identity_check_id(pt[i].value.data,
                                pt[i].value.len, NULL, 0) == NULL,
                            "invalid ID accepted as a pattern");
            ngx_fuzz_assert(ngx_http_mesh_identity_match(&single,
                                &pt[i].value),
                            "pattern does not match itself");
        }
    }

    ngx_destroy_pool(pool);
    free(copy);

    return 0;
}
