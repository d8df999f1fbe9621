
/*
 * Copyright (C) meshgate contributors
 */


/*
 * The compact JWS of a request: ngx_http_auth_jwt_parse() (segments,
 * base64url, header and claims JSON, header checks), the signature check
 * against fixed keys of every family, the $jwt_claim_* and $jwt_header_*
 * getter, and the verified-token cache entry (ngx_http_auth_jwt_cache.c).
 *
 * Input: a claim name, "\n", a token.  Checked: a claim or header
 * parameter reads as found only when the token has a member of that name
 * (case-blind); a found value holds no control byte; the token's cache
 * entry reads back as written, and every claim and header parameter reads
 * from it exactly as from the token; the token's bytes read as a cache
 * entry never reach outside themselves.
 *
 * max_len: 8192
 */


#include "ngx_fuzz.h"
#include "ngx_fuzz_jwt_keys.h"
#include "../../modules/common/ngx_meshgate_json.c"
#include "../../modules/common/ngx_meshgate_sha256.c"
#include "../../modules/common/ngx_meshgate_http.c"
#include "../../modules/common/ngx_meshgate_cache.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_jose.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_jwk.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_jwe.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_module.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_variables.c"
#include "../../modules/auth_jwt/ngx_http_auth_jwt_cache.c"


static void ngx_fuzz_jwt_variable(ngx_http_request_t *r, json_t *root,
    ngx_str_t *name);
static void ngx_fuzz_jwt_entry(ngx_http_request_t *r,
    ngx_http_auth_jwt_token_t *jwt, ngx_str_t *name);
static void ngx_fuzz_jwt_same(ngx_http_request_t *r, json_t *fresh,
    json_t *cached, ngx_str_t *name);


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
    ngx_http_auth_jwt_entry_t   entry;
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

    /* hostile bytes as a cache entry: decoded within themselves or not */

    if (ngx_http_auth_jwt_entry_decode(&token, &entry) == NGX_OK) {
        ngx_fuzz_assert(entry.alg < NGX_HTTP_AUTH_JWT_NALGS, "entry alg");
        ngx_fuzz_assert(entry.payload.data + entry.payload.len
                        == token.data + token.len, "entry bounds");
    }

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

    ngx_fuzz_jwt_entry(&r, &jwt, &name);

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


/* the token cached as after its verification, and read back */

static void
ngx_fuzz_jwt_entry(ngx_http_request_t *r, ngx_http_auth_jwt_token_t *jwt,
    ngx_str_t *name)
{
    u_char                      fp[NGX_HTTP_AUTH_JWT_FP_LEN];
    json_t                     *v, *header, *payload, *m;
    ngx_str_t                   value, other;
    const char                 *key;
    ngx_http_auth_jwt_entry_t   e, d;

    ngx_memset(fp, 0x5a, sizeof(fp));
    ngx_memzero(&e, sizeof(ngx_http_auth_jwt_entry_t));

    e.alg = jwt->alg;
    e.fp = fp;
    e.header = jwt->header_text;
    e.payload = jwt->payload_text;

    v = json_object_get(jwt->payload, "exp");
    if (json_is_number(v)) {
        e.t.exp = json_number_value(v);
        e.t.has_exp = 1;
    }

    v = json_object_get(jwt->payload, "nbf");
    if (json_is_number(v)) {
        e.t.nbf = json_number_value(v);
        e.t.has_nbf = 1;
    }

    ngx_fuzz_assert(ngx_http_auth_jwt_entry_encode(r->pool, &e, &value)
                    == NGX_OK, "no entry");
    ngx_fuzz_assert(ngx_http_auth_jwt_entry_decode(&value, &d) == NGX_OK,
                    "an entry reads back as no entry");

    ngx_fuzz_assert(d.alg == e.alg
                    && ngx_memcmp(d.fp, fp, sizeof(fp)) == 0
                    && d.t.has_exp == e.t.has_exp
                    && d.t.has_nbf == e.t.has_nbf
                    && ngx_memcmp(&d.t.exp, &e.t.exp, sizeof(double)) == 0
                    && ngx_memcmp(&d.t.nbf, &e.t.nbf, sizeof(double)) == 0,
                    "an entry reads back otherwise");
    ngx_fuzz_assert(d.header.len == e.header.len
                    && ngx_memcmp(d.header.data, e.header.data,
                                  e.header.len) == 0
                    && d.payload.len == e.payload.len
                    && ngx_memcmp(d.payload.data, e.payload.data,
                                  e.payload.len) == 0,
                    "cached JSON text differs");

    header = NULL;
    payload = NULL;

    ngx_fuzz_assert(ngx_http_auth_jwt_json_object(&d.header, &header)
                    == NGX_OK
                    && ngx_http_auth_jwt_json_object(&d.payload, &payload)
                       == NGX_OK,
                    "cached JSON does not parse");

    ngx_fuzz_jwt_same(r, jwt->payload, payload, name);
    ngx_fuzz_jwt_same(r, jwt->header, header, name);

    json_object_foreach(jwt->payload, key, m) {
        other.data = (u_char *) key;
        other.len = ngx_strlen(key);
        ngx_fuzz_jwt_same(r, jwt->payload, payload, &other);
    }

    json_object_foreach(jwt->header, key, m) {
        other.data = (u_char *) key;
        other.len = ngx_strlen(key);
        ngx_fuzz_jwt_same(r, jwt->header, header, &other);
    }

    json_decref(header);
    json_decref(payload);
}


/* a variable reads the same from the cached JSON as from the token's */

static void
ngx_fuzz_jwt_same(ngx_http_request_t *r, json_t *fresh, json_t *cached,
    ngx_str_t *name)
{
    ngx_http_variable_value_t  a, b;

    if (memchr(name->data, '\0', name->len)) {
        return;
    }

    ngx_memzero(&a, sizeof(ngx_http_variable_value_t));
    ngx_memzero(&b, sizeof(ngx_http_variable_value_t));

    ngx_fuzz_assert(ngx_http_auth_jwt_json_variable(r, &a, fresh, name,
                                                    "claim") == NGX_OK
                    && ngx_http_auth_jwt_json_variable(r, &b, cached, name,
                                                       "claim") == NGX_OK,
                    "variable failed");

    ngx_fuzz_assert(a.not_found == b.not_found
                    && (a.not_found
                        || (a.len == b.len
                            && ngx_memcmp(a.data, b.data, a.len) == 0)),
                    "a cached claim reads otherwise");
}
