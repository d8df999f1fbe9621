
/*
 * Copyright (C) meshgate contributors
 */


/*
 * The compact JWE of a request (ngx_http_auth_jwt_jwe.c): five segments,
 * the protected header, then decryption with fixed keys of every kind
 * (AES key wrap, direct, RSA-OAEP) and, for a nested JWT, the JWS inside.
 *
 * Input: a token.  Checked: decryption succeeds with at most one key and
 * never leaves the plaintext past its length.
 *
 * max_len: 8192
 */


#include "ngx_fuzz.h"
#include "ngx_fuzz_jwe_keys.h"
#include "../../modules/common/ngx_meshgate_json.c"
#include "../../modules/common/ngx_meshgate_sha256.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_jose.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_jwk.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_jwe.c"


static ngx_http_auth_jwt_keyset_t  *ngx_fuzz_jwe_keys;


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                      *copy;
    ngx_str_t                    token, plain;
    ngx_uint_t                   i, opened;
    const char                  *err;
    ngx_pool_t                  *pool;
    ngx_http_auth_jwt_jwe_t      jwe;
    ngx_http_auth_jwt_key_t     *k;
    ngx_http_auth_jwt_token_t    jwt;

    ngx_fuzz_init();

    if (ngx_fuzz_jwe_keys == NULL) {
        ngx_http_auth_jwt_md_init();

        ngx_fuzz_jwe_keys = ngx_http_auth_jwt_keyset_create(NULL,
                                                           ngx_fuzz_get_log());
        ngx_fuzz_assert(ngx_fuzz_jwe_keys != NULL, "no keyset");
        ngx_fuzz_assert(ngx_http_auth_jwt_keyset_load(ngx_fuzz_jwe_keys,
                            (u_char *) NGX_FUZZ_JWE_KEYS,
                            sizeof(NGX_FUZZ_JWE_KEYS) - 1, 16,
                            ngx_fuzz_get_log(), &err)
                        == NGX_OK, "fixed keys refused");
    }

    copy = malloc(size + 1);
    ngx_memcpy(copy, data, size);

    token.data = copy;
    token.len = size;

    pool = ngx_create_pool(4096, ngx_fuzz_get_log());

    ngx_memzero(&jwe, sizeof(ngx_http_auth_jwt_jwe_t));

    if (ngx_http_auth_jwt_jwe_parse(pool, &token, &jwe, &err)
        == NGX_HTTP_AUTH_JWT_OK)
    {
        k = ngx_fuzz_jwe_keys->keys.elts;
        opened = 0;

        for (i = 0; i < ngx_fuzz_jwe_keys->keys.nelts; i++) {
            if (ngx_http_auth_jwt_jwe_decrypt(pool, &k[i], &jwe, &plain)
                != NGX_OK)
            {
                continue;
            }

            opened++;

            /* a nested JWT: the JWS inside, as the module reads it */

            if (ngx_http_auth_jwt_parse(pool, &plain, &jwt, &err)
                == NGX_HTTP_AUTH_JWT_OK)
            {
                (void) ngx_http_auth_jwt_verify(&k[i], &jwt);
            }

            json_decref(jwt.header);
            json_decref(jwt.payload);
        }

        ngx_fuzz_assert(opened <= 1, "one token opened by two keys");
    }

    json_decref(jwe.header);
    ngx_destroy_pool(pool);
    free(copy);

    return 0;
}
