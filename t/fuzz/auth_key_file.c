
/*
 * Copyright (C) meshgate contributors
 */


/*
 * The key file of auth_key_file (ngx_http_auth_key_file.c): its lines
 * parsed into the store, sorted by digest, and looked up.
 *
 * Input: the bytes of a key file.  Checked: a store accepted has its
 * entries sorted without duplicates, every entry found by its own digest
 * and a flipped digest found nowhere, a non-empty consumer without control
 * bytes, metadata names of [a-z0-9_] other than "consumer" and "result",
 * each once per entry, and values without control bytes.
 *
 * max_len: 8192
 */


#include "ngx_fuzz.h"
#include "../../modules/auth_key/ngx_http_auth_key_file.c"


static void ngx_fuzz_akf_text(ngx_str_t *s, ngx_uint_t name);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                      *copy;
    char                        *rv;
    ngx_uint_t                   i, j, k;
    ngx_conf_t                   cf;
    ngx_pool_t                  *pool;
    ngx_http_auth_key_entry_t   *e;
    ngx_http_auth_key_store_t    store;
    u_char                       digest[NGX_HTTP_AUTH_KEY_DIGEST_LEN];

    ngx_fuzz_init();

    copy = malloc(size ? size : 1);
    ngx_memcpy(copy, data, size);

    pool = ngx_create_pool(4096, ngx_fuzz_get_log());

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.pool = pool;
    cf.temp_pool = pool;
    cf.log = ngx_fuzz_get_log();

    ngx_memzero(&store, sizeof(ngx_http_auth_key_store_t));
    ngx_str_set(&store.name, "keys");

    rv = ngx_http_auth_key_parse(&cf, &store, copy, copy + size);

    if (rv == NGX_CONF_OK) {
        e = store.entries;

        for (i = 0; i < store.nentries; i++) {
            if (i > 0) {
                ngx_fuzz_assert(ngx_memcmp(e[i - 1].digest, e[i].digest,
                                           NGX_HTTP_AUTH_KEY_DIGEST_LEN)
                                < 0,
                                "entries not sorted or duplicate");
            }

            ngx_fuzz_assert(ngx_http_auth_key_lookup(&store, e[i].digest)
                            == &e[i],
                            "entry not found by its digest");

            ngx_memcpy(digest, e[i].digest, NGX_HTTP_AUTH_KEY_DIGEST_LEN);
            digest[NGX_HTTP_AUTH_KEY_DIGEST_LEN - 1] ^= 0x01;

            if (i + 1 == store.nentries
                || ngx_memcmp(e[i + 1].digest, digest,
                              NGX_HTTP_AUTH_KEY_DIGEST_LEN) != 0)
            {
                if (i == 0
                    || ngx_memcmp(e[i - 1].digest, digest,
                                  NGX_HTTP_AUTH_KEY_DIGEST_LEN) != 0)
                {
                    ngx_fuzz_assert(ngx_http_auth_key_lookup(&store, digest)
                                    == NULL,
                                    "another digest found");
                }
            }

            ngx_fuzz_assert(e[i].consumer.len > 0, "empty consumer");
            ngx_fuzz_akf_text(&e[i].consumer, 0);

            for (j = 0; j < e[i].nmeta; j++) {
                ngx_fuzz_akf_text(&e[i].meta[j].key, 1);
                ngx_fuzz_akf_text(&e[i].meta[j].value, 0);

                ngx_fuzz_assert(!(e[i].meta[j].key.len == 8
                                  && ngx_strncmp(e[i].meta[j].key.data,
                                                 "consumer", 8) == 0)
                                && !(e[i].meta[j].key.len == 6
                                     && ngx_strncmp(e[i].meta[j].key.data,
                                                    "result", 6) == 0),
                                "reserved metadata name");

                for (k = 0; k < j; k++) {
                    ngx_fuzz_assert(e[i].meta[k].key.len
                                    != e[i].meta[j].key.len
                                    || ngx_memcmp(e[i].meta[k].key.data,
                                                  e[i].meta[j].key.data,
                                                  e[i].meta[j].key.len)
                                       != 0,
                                    "duplicate metadata name");
                }
            }
        }
    }

    ngx_destroy_pool(pool);
    free(copy);

    return 0;
}


/* no control bytes; a name: non-empty, [a-z0-9_] */

static void
ngx_fuzz_akf_text(ngx_str_t *s, ngx_uint_t name)
{
    size_t  i;

    if (name) {
        ngx_fuzz_assert(s->len > 0, "empty metadata name");
    }

    for (i = 0; i < s->len; i++) {
        ngx_fuzz_assert(s->data[i] >= 0x20 && s->data[i] != 0x7f,
                        "control byte in the store");

        if (name) {
            ngx_fuzz_assert((s->data[i] >= 'a' && s->data[i] <= 'z')
                            || (s->data[i] >= '0' && s->data[i] <= '9')
                            || s->data[i] == '_',
                            "metadata name outside [a-z0-9_]");
        }
    }
}
