
/*
 * Copyright (C) meshgate contributors
 */


/*
 * API-key extraction and hiding (ngx_http_auth_key_module.c): the key is
 * collected from the configured headers and query arguments
 * (percent-decoded, case-blind names), then removed from the request
 * before it is proxied.
 *
 * Input: the query string, then request header lines ("name: value"),
 * LF-separated.  Checked: after hiding, no key is found any more; every
 * other header is still there, in order; nginx's references to known
 * headers (Host, Authorization, User-Agent, the Cookie and
 * X-Forwarded-For arrays) point at a header of their name or nowhere;
 * the list's last part is its last part.
 *
 * max_len: 4096
 */


#include "ngx_fuzz.h"
#include "../../modules/common/ngx_meshgate_http.c"
#include "../../modules/auth_key/ngx_http_auth_key_module.c"


#define ngx_fuzz_offset(field)  offsetof(ngx_http_headers_in_t, field)


static void ngx_fuzz_auth_key_refs(ngx_http_request_t *r, ngx_uint_t count);
static ngx_uint_t ngx_fuzz_auth_key_is(ngx_table_elt_t *h,
    ngx_http_header_t *hh);


static ngx_http_header_t  ngx_fuzz_auth_key_known[] = {
    { ngx_string("host"), ngx_fuzz_offset(host), NULL },
    { ngx_string("authorization"), ngx_fuzz_offset(authorization), NULL },
    { ngx_string("user-agent"), ngx_fuzz_offset(user_agent), NULL },
    { ngx_string("cookie"), ngx_fuzz_offset(cookies), NULL },
    { ngx_string("x-forwarded-for"), ngx_fuzz_offset(x_forwarded_for), NULL },
    { ngx_null_string, 0, NULL }
};

static ngx_str_t  ngx_fuzz_auth_key_headers[] = {
    ngx_string("X-Api-Key"), ngx_string("Authorization"),
    ngx_string("Cookie")
};

static ngx_str_t  ngx_fuzz_auth_key_args[] = {
    ngx_string("api_key"), ngx_string("key")
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                        *copy, *p, *last, *nl, *colon;
    void                          *main_conf[1];
    ngx_str_t                      key;
    ngx_uint_t                     i, others, kept;
    ngx_pool_t                    *pool;
    ngx_array_t                    headers, args, *a;
    ngx_list_part_t               *part;
    ngx_table_elt_t               *h, **ph;
    ngx_connection_t               c;
    ngx_http_header_t             *hh;
    ngx_http_request_t             r;
    ngx_http_core_main_conf_t      cmcf;
    ngx_http_auth_key_loc_conf_t   alcf;

    ngx_fuzz_init();

    copy = malloc(size + 1);
    ngx_memcpy(copy, data, size);

    pool = ngx_create_pool(4096, ngx_fuzz_get_log());

    ngx_memzero(&c, sizeof(ngx_connection_t));
    ngx_memzero(&r, sizeof(ngx_http_request_t));
    ngx_memzero(&cmcf, sizeof(ngx_http_core_main_conf_t));
    c.log = ngx_fuzz_get_log();
    r.connection = &c;
    r.pool = pool;
    main_conf[0] = &cmcf;
    r.main_conf = main_conf;

    ngx_list_init(&r.headers_in.headers, pool, 2, sizeof(ngx_table_elt_t));
    ngx_array_init(&r.headers_in.cookies, pool, 1, sizeof(ngx_table_elt_t *));
    ngx_array_init(&r.headers_in.x_forwarded_for, pool, 1,
                   sizeof(ngx_table_elt_t *));

    headers.elts = ngx_fuzz_auth_key_headers;
    headers.nelts = 3;
    args.elts = ngx_fuzz_auth_key_args;
    args.nelts = 2;

    ngx_memzero(&alcf, sizeof(ngx_http_auth_key_loc_conf_t));
    alcf.headers = &headers;
    alcf.query = &args;
    alcf.enabled = 1;
    alcf.hide = 1;

    last = copy + size;
    nl = memchr(copy, '\n', size);

    r.args.data = copy;
    r.args.len = (nl ? nl : last) - copy;

    /* the header lines, as nginx's header parser leaves them */

    others = 0;

    for (p = nl ? nl + 1 : last; p < last; p = nl + 1) {
        nl = memchr(p, '\n', last - p);
        if (nl == NULL) {
            nl = last;
        }

        colon = memchr(p, ':', nl - p);
        if (colon == NULL || colon == p) {
            continue;
        }

        h = ngx_list_push(&r.headers_in.headers);
        h->key.data = p;
        h->key.len = colon - p;
        h->value.data = colon + 1;
        h->value.len = nl - colon - 1;
        h->lowcase_key = ngx_pnalloc(pool, h->key.len);
        ngx_strlow(h->lowcase_key, h->key.data, h->key.len);
        h->hash = ngx_hash_key(h->lowcase_key, h->key.len);

        for (i = 0; i < 3; i++) {
            if (h->key.len == ngx_fuzz_auth_key_headers[i].len
                && ngx_strncasecmp(h->key.data,
                                   ngx_fuzz_auth_key_headers[i].data,
                                   h->key.len) == 0)
            {
                break;
            }
        }

        others += (i == 3);

        hh = ngx_hash_find(&cmcf.headers_in_hash, h->hash, h->lowcase_key,
                           h->key.len);
        if (hh == NULL) {
            continue;
        }

        if (hh->offset == ngx_fuzz_offset(cookies)
            || hh->offset == ngx_fuzz_offset(x_forwarded_for))
        {
            a = (ngx_array_t *) ((char *) &r.headers_in + hh->offset);
            ph = ngx_array_push(a);
            *ph = h;
            continue;
        }

        ph = (ngx_table_elt_t **) ((char *) &r.headers_in + hh->offset);
        if (*ph == NULL) {
            *ph = h;
        }
    }

    if (ngx_http_auth_key_find(&r, &alcf, &key) != NGX_ERROR) {
        ngx_fuzz_assert(ngx_http_auth_key_hide_headers(&r, &alcf) == NGX_OK
                        && ngx_http_auth_key_hide_query(&r, &alcf) == NGX_OK,
                        "hiding failed");

        ngx_fuzz_assert(ngx_http_auth_key_find(&r, &alcf, &key)
                        == NGX_DECLINED, "a key is left after hiding");

        kept = 0;

        for (part = &r.headers_in.headers.part; part; part = part->next) {
            kept += part->nelts;

            if (part->next == NULL) {
                ngx_fuzz_assert(r.headers_in.headers.last == part,
                                "list's last part is not its last");
            }
        }

        ngx_fuzz_assert(kept == others, "hiding removed other headers");

        ngx_fuzz_auth_key_refs(&r, kept);
    }

    ngx_destroy_pool(pool);
    free(copy);

    return 0;
}


static void
ngx_fuzz_auth_key_refs(ngx_http_request_t *r, ngx_uint_t count)
{
    ngx_uint_t          i, found;
    ngx_array_t        *a;
    ngx_list_part_t    *part;
    ngx_table_elt_t    *h, **ph, *ref;
    ngx_http_header_t  *hh;

    for (hh = ngx_fuzz_auth_key_known; hh->name.len; hh++) {

        if (hh->offset == ngx_fuzz_offset(cookies)
            || hh->offset == ngx_fuzz_offset(x_forwarded_for))
        {
            a = (ngx_array_t *) ((char *) &r->headers_in + hh->offset);
            ph = a->elts;
            ngx_fuzz_assert(a->nelts <= count, "array refs beyond headers");

        } else {
            a = NULL;
            ph = (ngx_table_elt_t **) ((char *) &r->headers_in + hh->offset);
        }

        for (i = 0; i < (a ? a->nelts : 1); i++) {
            ref = ph[i];

            if (ref == NULL) {
                ngx_fuzz_assert(a == NULL, "NULL in a reference array");
                continue;
            }

            found = 0;

            for (part = &r->headers_in.headers.part; part; part = part->next)
            {
                h = part->elts;

                if (ref >= h && ref < h + part->nelts) {
                    found = 1;
                }
            }

            ngx_fuzz_assert(found, "reference to a removed header");
            ngx_fuzz_assert(ngx_fuzz_auth_key_is(ref, hh),
                            "reference to another header");
        }
    }
}


static ngx_uint_t
ngx_fuzz_auth_key_is(ngx_table_elt_t *h, ngx_http_header_t *hh)
{
    return h->key.len == hh->name.len
           && ngx_strncasecmp(h->key.data, hh->name.data, h->key.len) == 0;
}


/* cmcf->headers_in_hash: the known headers above */

void *
ngx_hash_find(ngx_hash_t *hash, ngx_uint_t key, u_char *name, size_t len)
{
    ngx_http_header_t  *hh;

    for (hh = ngx_fuzz_auth_key_known; hh->name.len; hh++) {
        if (hh->name.len == len && ngx_strncmp(hh->name.data, name, len) == 0)
        {
            return hh;
        }
    }

    return NULL;
}
