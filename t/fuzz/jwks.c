
/*
 * Copyright (C) meshgate contributors
 */


/*
 * Key loading: ngx_http_auth_jwt_keyset_load() on a JWK Set, a single JWK
 * or PEM keys and certificates, as a fetched JWKS or a key file holds
 * them; then a fixed token of every family is checked against every key
 * loaded.
 *
 * Input: one byte (the most keys a set may hold, auth_jwt_key_set_max:
 * 1 to 64), the key text.
 *
 * max_len: 16384
 */


#include "ngx_fuzz.h"
#include "../../modules/common/ngx_meshgate_json.c"
#include "../../modules/common/ngx_meshgate_sha256.c"
#include "../../modules/common/ngx_meshgate_http.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_jose.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_jwk.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_jwe.c"


static const char  *ngx_fuzz_jwks_tokens[] = {
    "eyJhbGciOiJIUzI1NiJ9.e30.MA",
    "eyJhbGciOiJSUzI1NiJ9.e30.MA",
    "eyJhbGciOiJQUzM4NCJ9.e30.MA",
    "eyJhbGciOiJFUzI1NiJ9.e30."
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAAAAAAAAAAAAAAA",
    "eyJhbGciOiJFUzUxMiJ9.e30.MA",
    "eyJhbGciOiJFZERTQSJ9.e30.MA",
    NULL
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                      *copy;
    ngx_str_t                    token;
    ngx_uint_t                   i, t;
    const char                  *err;
    ngx_pool_t                  *pool;
    ngx_http_auth_jwt_key_t     *k;
    ngx_http_auth_jwt_token_t    jwt;
    ngx_http_auth_jwt_keyset_t  *ks;

    ngx_fuzz_init();
    ngx_http_auth_jwt_md_init();

    if (size < 1) {
        return 0;
    }

    /* an exact copy: the loader must not read past the body */

    copy = malloc(size - 1 + 1);
    ngx_memcpy(copy, data + 1, size - 1);

    ks = ngx_http_auth_jwt_keyset_create(NULL, ngx_fuzz_get_log());
    ngx_fuzz_assert(ks != NULL, "no keyset");

    err = NULL;

    if (ngx_http_auth_jwt_keyset_load(ks, copy, size - 1, 1 + data[0] % 64,
                                      ngx_fuzz_get_log(), &err)
        == NGX_OK)
    {
        pool = ngx_create_pool(4096, ngx_fuzz_get_log());
        k = ks->keys.elts;

        for (t = 0; ngx_fuzz_jwks_tokens[t]; t++) {
            token.data = (u_char *) ngx_fuzz_jwks_tokens[t];
            token.len = ngx_strlen(token.data);

            if (ngx_http_auth_jwt_parse(pool, &token, &jwt, &err)
                == NGX_HTTP_AUTH_JWT_OK)
            {
                for (i = 0; i < ks->keys.nelts; i++) {
                    (void) ngx_http_auth_jwt_verify(&k[i], &jwt);
                }
            }

            json_decref(jwt.header);
            json_decref(jwt.payload);
        }

        ngx_destroy_pool(pool);
    }

    ngx_http_auth_jwt_keyset_free(ks);
    free(copy);

    return 0;
}
