
/*
 * Copyright (C) meshgate contributors
 */


/*
 * The compact JWS of a request: ngx_http_auth_jwt_parse() (segments,
 * base64url, header and claims JSON, header checks), the signature check
 * against fixed keys of every family, and the $jwt_claim_* and
 * $jwt_header_* getter.
 *
 * Input: a claim name, "\n", a token.  Checked: a claim or header
 * parameter reads as found only when the token has a member of that name
 * (case-blind); a found value holds no control byte.
 *
 * max_len: 8192
 */


#include "ngx_fuzz.h"
#include "ngx_fuzz_jwt_keys.h"
#include "../../modules/common/ngx_meshgate_json.c"
#include "../../modules/common/ngx_meshgate_sha256.c"
#include "../../modules/common/ngx_meshgate_http.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_jose.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_jwk.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_jwe.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_module.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_variables.c"


static void ngx_fuzz_jwt_variable(ngx_http_request_t *r, json_t *root,
    ngx_str_t *name);


static ngx_http_auth_jwt_keyset_t  *ngx_fuzz_jwt_keys;


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t                     *part[2], *m;
    ngx_str_t                   name, token, other;
    ngx_uint_t                  i, j;
    const char                 *key, *err;
    ngx_pool_t                 *pool;
    ngx_connection_t            c;
    ngx_http_request_t          r;
    ngx_http_auth_jwt_key_t    *k;
    ngx_http_auth_jwt_token_t   jwt;

    ngx_fuzz_init();

    if (ngx_fuzz_jwt_keys == NULL) {
        ngx_http_auth_jwt_md_init();

        ngx_fuzz_jwt_keys = ngx_http_auth_jwt_keyset_create(NULL,
                                                           ngx_fuzz_get_log());
        ngx_fuzz_assert(ngx_fuzz_jwt_keys != NULL, "no keyset");
        ngx_fuzz_assert(ngx_http_auth_jwt_keyset_load(ngx_fuzz_jwt_keys,
                            (u_char *) NGX_FUZZ_JWT_KEYS,
                            sizeof(NGX_FUZZ_JWT_KEYS) - 1, 16,
                            ngx_fuzz_get_log(), &err)
                        == NGX_OK, "fixed keys refused");
    }

    ngx_fuzz_split(data, size, &name, &token);

    pool = ngx_create_pool(4096, ngx_fuzz_get_log());

    if (ngx_http_auth_jwt_parse(pool, &token, &jwt, &err)
        != NGX_HTTP_AUTH_JWT_OK)
    {
        json_decref(jwt.header);
        json_decref(jwt.payload);
        ngx_destroy_pool(pool);
        return 0;
    }

    k = ngx_fuzz_jwt_keys->keys.elts;

    for (i = 0; i < ngx_fuzz_jwt_keys->keys.nelts; i++) {
        (void) ngx_http_auth_jwt_verify(&k[i], &jwt);
    }

    ngx_memzero(&c, sizeof(ngx_connection_t));
    ngx_memzero(&r, sizeof(ngx_http_request_t));
    c.log = ngx_fuzz_get_log();
    r.connection = &c;
    r.pool = pool;

    part[0] = jwt.payload;
    part[1] = jwt.header;

    for (j = 0; j < 2; j++) {
        ngx_fuzz_jwt_variable(&r, part[j], &name);

        json_object_foreach(part[j], key, m) {
            other.data = (u_char *) key;
            other.len = ngx_strlen(key);
            ngx_fuzz_jwt_variable(&r, part[j], &other);
        }
    }

    json_decref(jwt.header);
    json_decref(jwt.payload);
    ngx_destroy_pool(pool);

    return 0;
}


static void
ngx_fuzz_jwt_variable(ngx_http_request_t *r, json_t *root, ngx_str_t *name)
{
    json_t                     *m;
    ngx_uint_t                  found;
    const char                 *key;
    ngx_http_variable_value_t   v;

    /* a variable name never holds a NUL (jansson's names are C strings) */

    if (memchr(name->data, '\0', name->len)) {
        return;
    }

    ngx_memzero(&v, sizeof(ngx_http_variable_value_t));

    if (ngx_http_auth_jwt_json_variable(r, &v, root, name, "claim")
        != NGX_OK
        || v.not_found)
    {
        return;
    }

    found = 0;

    json_object_foreach(root, key, m) {
        if (ngx_strlen(key) == name->len
            && ngx_strncasecmp((u_char *) key, name->data, name->len) == 0)
        {
            found = 1;
        }
    }

    ngx_fuzz_assert(found, "absent claim reads as found");
    ngx_fuzz_assert(ngx_meshgate_text_is_safe(v.data, v.len),
                    "claim value with control bytes");
}
