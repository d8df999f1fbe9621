
/*
 * Copyright (C) meshgate contributors
 */


/*
 * Key sets: JWK Sets, single JWKs and PEM keys loaded into EVP_PKEYs and
 * HMAC secrets, each key checked and bound to the algorithms it may
 * verify.  Signature verification is in ngx_http_auth_jwt_jose.c.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "ngx_http_auth_jwt.h"
#include "ngx_meshgate_http.h"
#include "ngx_meshgate_sha256.h"


static void ngx_http_auth_jwt_keyset_cleanup(void *data);
static void ngx_http_auth_jwt_skipped(ngx_log_t *log, json_t *jwk, size_t i,
    const char *err);
static ngx_int_t ngx_http_auth_jwt_load_jwk(ngx_http_auth_jwt_keyset_t *ks,
    json_t *jwk, const char **err);
static ngx_int_t ngx_http_auth_jwt_jwk_use(json_t *jwk, ngx_uint_t *sig,
    ngx_uint_t *enc, ngx_int_t *a, ngx_int_t *ja, const char **err);
static ngx_int_t ngx_http_auth_jwt_load_pem(ngx_http_auth_jwt_keyset_t *ks,
    u_char *data, size_t len, ngx_uint_t max, const char **err);

static EVP_PKEY *ngx_http_auth_jwt_jwk_rsa(ngx_pool_t *pool, json_t *jwk,
    const char **err);
static EVP_PKEY *ngx_http_auth_jwt_jwk_ec(ngx_pool_t *pool, json_t *jwk,
    ngx_uint_t *algs, const char **err);
static EVP_PKEY *ngx_http_auth_jwt_jwk_okp(ngx_pool_t *pool, json_t *jwk,
    ngx_uint_t *algs, const char **err);
static ngx_int_t ngx_http_auth_jwt_jwk_oct(ngx_pool_t *pool, json_t *jwk,
    ngx_http_auth_jwt_key_t *key, const char **err);
static ngx_uint_t ngx_http_auth_jwt_pkey_algs(EVP_PKEY *pkey,
    const char **err);
static ngx_int_t ngx_http_auth_jwt_add_pkey(ngx_http_auth_jwt_keyset_t *ks,
    ngx_http_auth_jwt_key_t *key, const char **err);


/*
 * A key set in pool, or with a pool of its own when pool is NULL (a
 * fetched JWKS, freed when replaced).
 */

ngx_http_auth_jwt_keyset_t *
ngx_http_auth_jwt_keyset_create(ngx_pool_t *pool, ngx_log_t *log)
{
    ngx_pool_t                  *own;
    ngx_pool_cleanup_t          *cln;
    ngx_http_auth_jwt_keyset_t  *ks;

    own = NULL;

    if (pool == NULL) {
        own = ngx_create_pool(4096, log);
        if (own == NULL) {
            return NULL;
        }

        pool = own;
    }

    ks = ngx_pcalloc(pool, sizeof(ngx_http_auth_jwt_keyset_t));
    if (ks == NULL) {
        goto failed;
    }

    ks->pool = pool;
    ks->own = own ? 1 : 0;

    if (ngx_array_init(&ks->keys, pool, 4, sizeof(ngx_http_auth_jwt_key_t))
        != NGX_OK)
    {
        goto failed;
    }

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        goto failed;
    }

    cln->handler = ngx_http_auth_jwt_keyset_cleanup;
    cln->data = ks;

    return ks;

failed:

    if (own) {
        ngx_destroy_pool(own);
    }

    return NULL;
}


void
ngx_http_auth_jwt_keyset_free(ngx_http_auth_jwt_keyset_t *ks)
{
    if (ks != NULL && ks->own) {
        ngx_destroy_pool(ks->pool);
    }
}


static void
ngx_http_auth_jwt_keyset_cleanup(void *data)
{
    ngx_http_auth_jwt_keyset_t *ks = data;

    ngx_uint_t                i, j;
    ngx_http_auth_jwt_key_t  *key;

    key = ks->keys.elts;
    for (i = 0; i < ks->keys.nelts; i++) {
        for (j = 0; j < NGX_HTTP_AUTH_JWT_NALGS; j++) {
            if (key[i].vctx[j]) {
                EVP_PKEY_CTX_free(key[i].vctx[j]);
            }
        }

        for (j = 0; j < 3; j++) {
            if (key[i].mac[j]) {
                EVP_MAC_CTX_free(key[i].mac[j]);
            }
        }

        if (key[i].pkey) {
            EVP_PKEY_free(key[i].pkey);
        }
    }

    ks->keys.nelts = 0;
}


/*
 * Loads a JWK Set, a single JWK, or PEM public keys and certificates.  A
 * key that cannot be used is skipped with a warning that names its "kid"
 * and the reason (RFC 7517 section 5: implementations SHOULD ignore JWKs
 * they do not understand), the same for key files and fetched sets.  A
 * set with more than max keys is refused before any key is parsed, so a
 * hostile set costs no public-key work.  Returns NGX_OK when at least one
 * key was loaded.
 */

ngx_int_t
ngx_http_auth_jwt_keyset_load(ngx_http_auth_jwt_keyset_t *ks, u_char *data,
    size_t len, ngx_uint_t max, ngx_log_t *log, const char **err)
{
    size_t        i;
    json_t       *root, *keys, *jwk;
    ngx_int_t     rc;
    ngx_uint_t    before;
    json_error_t  e;

    before = ks->keys.nelts;

    for (i = 0; i < len; i++) {
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\r'
            && data[i] != '\n')
        {
            break;
        }
    }

    if (i == len) {
        *err = "no key found (empty)";
        return NGX_ERROR;
    }

    if (data[i] != '{') {
        if (ngx_http_auth_jwt_load_pem(ks, data, len, max, err) != NGX_OK) {
            return NGX_ERROR;
        }

        goto done;
    }

    root = json_loadb((const char *) data, len, JSON_REJECT_DUPLICATES, &e);
    if (root == NULL || !json_is_object(root)) {
        if (root) {
            json_decref(root);
        }

        *err = "invalid JSON";
        return NGX_ERROR;
    }

    keys = json_object_get(root, "keys");

    if (keys == NULL) {
        ks->count = 1;
        rc = ngx_http_auth_jwt_load_jwk(ks, root, err);
        json_decref(root);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        goto done;
    }

    if (!json_is_array(keys)) {
        json_decref(root);
        *err = "\"keys\" is not an array";
        return NGX_ERROR;
    }

    ks->count = json_array_size(keys);

    if (ks->count > max) {
        json_decref(root);
        *err = "more keys than auth_jwt_key_set_max";
        return NGX_ERROR;
    }

    for (i = 0; i < json_array_size(keys); i++) {
        jwk = json_array_get(keys, i);

        rc = ngx_http_auth_jwt_load_jwk(ks, jwk, err);

        if (rc == NGX_ERROR) {
            ngx_http_auth_jwt_skipped(log, jwk, i, *err);
        }
    }

    json_decref(root);

done:

    if (ks->keys.nelts == before) {
        *err = "no usable key found";
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the "kid" of a skipped key is shown only when it is safe to log */

static void
ngx_http_auth_jwt_skipped(ngx_log_t *log, json_t *jwk, size_t i,
    const char *err)
{
    json_t     *v;
    ngx_str_t   kid;

    v = json_is_object(jwk) ? json_object_get(jwk, "kid") : NULL;

    if (json_is_string(v)) {
        kid.data = (u_char *) json_string_value(v);
        kid.len = json_string_length(v);

        if (kid.len <= 64 && ngx_meshgate_text_is_safe(kid.data, kid.len)) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "auth_jwt: key #%uz (kid \"%V\") skipped: %s",
                          i, &kid, err);
            return;
        }
    }

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "auth_jwt: key #%uz (no printable kid) skipped: %s",
                  i, err);
}


/*
 * One JWK.  "use", "key_ops" and "alg" tell whether it verifies
 * signatures, decrypts JWE, or both (an oct key of 256 bits or more, or
 * an RSA private key for RSA-OAEP, without any of them); NGX_DECLINED: a
 * key for something else, skipped silently.
 */

static ngx_int_t
ngx_http_auth_jwt_load_jwk(ngx_http_auth_jwt_keyset_t *ks, json_t *jwk,
    const char **err)
{
    json_t                   *v;
    ngx_int_t                 a, ja;
    const char               *kty;
    ngx_uint_t                algs, fam, sig, enc;
    ngx_http_auth_jwt_key_t   key, *k;

    if (!json_is_object(jwk)) {
        *err = "JWK is not an object";
        return NGX_ERROR;
    }

    ngx_memzero(&key, sizeof(ngx_http_auth_jwt_key_t));

    if (ngx_http_auth_jwt_jwk_use(jwk, &sig, &enc, &a, &ja, err) != NGX_OK) {
        return NGX_ERROR;
    }

    if (!sig && !enc) {
        return NGX_DECLINED;
    }

    v = json_object_get(jwk, "kid");
    if (v != NULL) {
        if (!json_is_string(v)) {
            *err = "JWK \"kid\" is not a string";
            return NGX_ERROR;
        }

        key.kid.len = json_string_length(v);
        key.kid.data = ngx_pnalloc(ks->pool, key.kid.len + 1);
        if (key.kid.data == NULL) {
            *err = "out of memory";
            return NGX_ERROR;
        }

        ngx_memcpy(key.kid.data, json_string_value(v), key.kid.len);
    }

    v = json_object_get(jwk, "kty");
    if (!json_is_string(v)) {
        *err = "JWK has no \"kty\"";
        return NGX_ERROR;
    }

    kty = json_string_value(v);
    algs = 0;

    if (ngx_strcmp(kty, "RSA") == 0 && json_object_get(jwk, "d") != NULL) {

        /* a private key: for RSA-OAEP only */

        if (!enc) {
            return NGX_DECLINED;
        }

        key.pkey = ngx_http_auth_jwt_jwe_rsa_private(ks->pool, jwk, err);
        if (key.pkey == NULL) {
            return NGX_ERROR;
        }

        key.jwe = NGX_HTTP_AUTH_JWT_JWE_OAEP;

    } else if (ngx_strcmp(kty, "oct") == 0) {
        if (ngx_http_auth_jwt_jwk_oct(ks->pool, jwk, &key, err) != NGX_OK) {
            return NGX_ERROR;
        }

        /* a key not marked for JWE alone must be a strong HMAC key */

        if (sig && key.algs == 0) {
            *err = "HMAC key (oct \"k\") shorter than 256 bits";
            return NGX_ERROR;
        }

        algs = sig ? key.algs : 0;
        key.jwe = enc ? ngx_http_auth_jwt_jwe_oct(key.secret.len) : 0;

        if (algs == 0 && key.jwe == 0) {
            *err = "oct JWK \"k\" fits no JWE algorithm";
            return NGX_ERROR;
        }

    } else if (!sig) {
        return NGX_DECLINED;

    } else if (ngx_strcmp(kty, "RSA") == 0) {
        key.pkey = ngx_http_auth_jwt_jwk_rsa(ks->pool, jwk, err);
        algs = NGX_HTTP_AUTH_JWT_ALGS_RS | NGX_HTTP_AUTH_JWT_ALGS_PS;

    } else if (ngx_strcmp(kty, "EC") == 0) {
        key.pkey = ngx_http_auth_jwt_jwk_ec(ks->pool, jwk, &algs, err);

    } else if (ngx_strcmp(kty, "OKP") == 0) {
        key.pkey = ngx_http_auth_jwt_jwk_okp(ks->pool, jwk, &algs, err);
        if (key.pkey == NULL && algs == (ngx_uint_t) -1) {
            return NGX_DECLINED;
        }

    } else {
        *err = "unsupported JWK \"kty\"";
        return NGX_ERROR;
    }

    if (key.pkey == NULL && key.secret.len == 0) {
        return NGX_ERROR;
    }

    if (a >= 0) {
        fam = ngx_http_auth_jwt_algs[a].family;

        if (!(algs & (1 << a))) {
            if (key.pkey) {
                EVP_PKEY_free(key.pkey);
            }

            *err = (fam == NGX_HTTP_AUTH_JWT_HS && key.secret.len)
                   ? "JWK \"k\" is shorter than its \"alg\" requires"
                   : "JWK \"alg\" does not fit its \"kty\" or \"crv\"";
            return NGX_ERROR;
        }

        algs = 1 << a;
    }

    if (ja >= 0) {
        if (!(key.jwe & (1 << ja))) {
            if (key.pkey) {
                EVP_PKEY_free(key.pkey);
            }

            *err = "JWK \"alg\" does not fit its key";
            return NGX_ERROR;
        }

        key.jwe = 1 << ja;
    }

    key.algs = algs;

    if (key.pkey) {
        return ngx_http_auth_jwt_add_pkey(ks, &key, err);
    }

    k = ngx_array_push(&ks->keys);
    if (k == NULL) {
        *err = "out of memory";
        return NGX_ERROR;
    }

    if (ngx_meshgate_sha256(&key.secret, 1, key.fp) != NGX_OK) {
        ks->keys.nelts--;
        *err = "SHA-256 failed";
        return NGX_ERROR;
    }

    *k = key;

    return NGX_OK;
}


/*
 * What a JWK is for: sig (signatures), enc (JWE), from "use", "key_ops"
 * and "alg" (a JWS one in *a, a JWE key management one in *ja, or -1).
 */

static ngx_int_t
ngx_http_auth_jwt_jwk_use(json_t *jwk, ngx_uint_t *sig, ngx_uint_t *enc,
    ngx_int_t *a, ngx_int_t *ja, const char **err)
{
    size_t       i;
    json_t      *v, *op;
    const char  *s;
    ngx_uint_t   vsig, venc;

    *sig = 1;
    *enc = 1;
    *a = -1;
    *ja = -1;

    v = json_object_get(jwk, "use");
    if (v != NULL) {
        if (!json_is_string(v)) {
            *err = "JWK \"use\" is not a string";
            return NGX_ERROR;
        }

        s = json_string_value(v);
        *sig = (ngx_strcmp(s, "sig") == 0);
        *enc = (ngx_strcmp(s, "enc") == 0);
    }

    v = json_object_get(jwk, "key_ops");
    if (v != NULL) {
        if (!json_is_array(v)) {
            *err = "JWK \"key_ops\" is not an array";
            return NGX_ERROR;
        }

        vsig = 0;
        venc = 0;

        for (i = 0; i < json_array_size(v); i++) {
            op = json_array_get(v, i);
            s = json_is_string(op) ? json_string_value(op) : "";

            if (ngx_strcmp(s, "verify") == 0) {
                vsig = 1;

            } else if (ngx_strcmp(s, "decrypt") == 0
                       || ngx_strcmp(s, "unwrapKey") == 0)
            {
                venc = 1;
            }
        }

        *sig &= vsig;
        *enc &= venc;
    }

    v = json_object_get(jwk, "alg");
    if (v != NULL) {
        if (!json_is_string(v)) {
            *err = "JWK \"alg\" is not a string";
            return NGX_ERROR;
        }

        *a = ngx_http_auth_jwt_alg_index(json_string_value(v));
        *ja = ngx_http_auth_jwt_jwe_key_alg(json_string_value(v));

        *sig &= (*a >= 0);
        *enc &= (*ja >= 0);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_jwt_add_pkey(ngx_http_auth_jwt_keyset_t *ks,
    ngx_http_auth_jwt_key_t *key, const char **err)
{
    int                       n, id;
    u_char                   *der, *p;
    ngx_str_t                 s;
    EVP_PKEY_CTX             *check;
    ngx_http_auth_jwt_key_t  *k;

    /*
     * EC public keys must pass OpenSSL's public key check (a point on the
     * curve); RSA keys passed ngx_http_auth_jwt_rsa_check() already
     */

    id = EVP_PKEY_get_base_id(key->pkey);

    if (id == EVP_PKEY_EC) {
        check = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);
        n = check ? EVP_PKEY_public_check(check) : 0;
        EVP_PKEY_CTX_free(check);

        if (n != 1) {
            *err = "the public key fails its validity check";
            goto failed;
        }
    }

    *err = "cannot add the key";

    /* the fingerprint: SHA-256 of the DER SubjectPublicKeyInfo */

    n = i2d_PUBKEY(key->pkey, NULL);
    if (n <= 0) {
        goto failed;
    }

    der = ngx_pnalloc(ks->pool, n);
    if (der == NULL) {
        goto failed;
    }

    p = der;
    if (i2d_PUBKEY(key->pkey, &p) != n) {
        goto failed;
    }

    s.data = der;
    s.len = n;

    if (ngx_meshgate_sha256(&s, 1, key->fp) != NGX_OK) {
        goto failed;
    }

    k = ngx_array_push(&ks->keys);
    if (k == NULL) {
        goto failed;
    }

    *k = *key;

    return NGX_OK;

failed:

    ERR_clear_error();
    EVP_PKEY_free(key->pkey);
    key->pkey = NULL;

    return NGX_ERROR;
}


/*
 * A key of type ("RSA", "EC") from the parameters in bld: its public part
 * or the key pair, as selection says (EVP_PKEY_PUBLIC_KEY, _KEYPAIR);
 * NULL when OpenSSL refuses them
 */

EVP_PKEY *
ngx_http_auth_jwt_pkey_fromdata(const char *type, int selection,
    OSSL_PARAM_BLD *bld)
{
    EVP_PKEY      *pkey;
    OSSL_PARAM    *params;
    EVP_PKEY_CTX  *ctx;

    pkey = NULL;

    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);

    if (params == NULL || ctx == NULL
        || EVP_PKEY_fromdata_init(ctx) != 1
        || EVP_PKEY_fromdata(ctx, &pkey, selection, params) != 1)
    {
        pkey = NULL;
    }

    OSSL_PARAM_free(params);
    EVP_PKEY_CTX_free(ctx);

    return pkey;
}


/*
 * A base64url member of a JSON object (a JWK's key material, a JWE
 * header's "iv" and "tag"), decoded: NGX_ERROR when it is absent, not a
 * string, empty or not base64url
 */

ngx_int_t
ngx_http_auth_jwt_jwk_param(ngx_pool_t *pool, json_t *jwk, const char *name,
    ngx_str_t *out)
{
    json_t     *v;
    ngx_str_t   s;

    v = json_object_get(jwk, name);
    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    s.len = json_string_length(v);
    s.data = (u_char *) json_string_value(v);

    if (s.len == 0) {
        return NGX_ERROR;
    }

    return ngx_http_auth_jwt_decode_b64url(&s, out, pool);
}


static EVP_PKEY *
ngx_http_auth_jwt_jwk_rsa(ngx_pool_t *pool, json_t *jwk, const char **err)
{
    BIGNUM          *n, *e;
    EVP_PKEY        *pkey;
    ngx_str_t        ns, es;
    OSSL_PARAM_BLD  *bld;

    if (ngx_http_auth_jwt_jwk_param(pool, jwk, "n", &ns) != NGX_OK
        || ngx_http_auth_jwt_jwk_param(pool, jwk, "e", &es) != NGX_OK)
    {
        *err = "RSA JWK needs base64url \"n\" and \"e\"";
        return NULL;
    }

    /* sizes are checked before any big-number work */

    if (ns.len > NGX_HTTP_AUTH_JWT_RSA_MAX_BITS / 8) {
        *err = "RSA key longer than 8192 bits";
        return NULL;
    }

    if (es.len > 8) {
        *err = "RSA exponent longer than 64 bits";
        return NULL;
    }

    pkey = NULL;

    n = BN_bin2bn(ns.data, ns.len, NULL);
    e = BN_bin2bn(es.data, es.len, NULL);
    bld = OSSL_PARAM_BLD_new();

    if (n != NULL && e != NULL && bld != NULL
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n)
        && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
    {
        pkey = ngx_http_auth_jwt_pkey_fromdata("RSA", EVP_PKEY_PUBLIC_KEY,
                                               bld);
    }

    BN_free(n);
    BN_free(e);
    OSSL_PARAM_BLD_free(bld);

    if (pkey == NULL) {
        ERR_clear_error();
        *err = "invalid RSA JWK";
        return NULL;
    }

    if (ngx_http_auth_jwt_rsa_check(pkey, err) != NGX_OK) {
        EVP_PKEY_free(pkey);
        return NULL;
    }

    return pkey;
}


/*
 * RSA public keys: 2048 to 8192 bits, an odd modulus, an odd exponent
 * above 1 of at most 64 bits.  OpenSSL's EVP_PKEY_public_check() also
 * runs a primality test on the modulus: 7 ms for 2048 bits, 200 ms for
 * 8192 and over a second for 16384 on a worker, per key of every set
 * fetched, so it is not used for RSA.  A modulus with a small factor
 * weakens the issuer's own signatures only.  The bounds keep a
 * verification below a millisecond.
 */

ngx_int_t
ngx_http_auth_jwt_rsa_check(EVP_PKEY *pkey, const char **err)
{
    int      bits;
    BIGNUM  *n, *e;

    bits = EVP_PKEY_get_bits(pkey);

    if (bits < 2048) {
        *err = "RSA key shorter than 2048 bits";
        return NGX_ERROR;
    }

    if (bits > NGX_HTTP_AUTH_JWT_RSA_MAX_BITS) {
        *err = "RSA key longer than 8192 bits";
        return NGX_ERROR;
    }

    n = NULL;
    e = NULL;

    if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) != 1
        || EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) != 1
        || !BN_is_odd(n) || !BN_is_odd(e) || BN_is_one(e)
        || BN_num_bits(e) > 64)
    {
        BN_free(n);
        BN_free(e);
        ERR_clear_error();
        *err = "the public key fails its validity check";
        return NGX_ERROR;
    }

    BN_free(n);
    BN_free(e);

    return NGX_OK;
}


static EVP_PKEY *
ngx_http_auth_jwt_jwk_ec(ngx_pool_t *pool, json_t *jwk, ngx_uint_t *algs,
    const char **err)
{
    u_char          *pub;
    size_t           size;
    json_t          *v;
    EVP_PKEY        *pkey;
    ngx_str_t        x, y;
    const char      *crv;
    EVP_PKEY_CTX    *check;
    OSSL_PARAM_BLD  *bld;

    v = json_object_get(jwk, "crv");
    crv = json_is_string(v) ? json_string_value(v) : "";

    if (ngx_strcmp(crv, "P-256") == 0) {
        size = 32;
        *algs = NGX_HTTP_AUTH_JWT_ALG_ES256;

    } else if (ngx_strcmp(crv, "P-384") == 0) {
        size = 48;
        *algs = NGX_HTTP_AUTH_JWT_ALG_ES384;

    } else if (ngx_strcmp(crv, "P-521") == 0) {
        size = 66;
        *algs = NGX_HTTP_AUTH_JWT_ALG_ES512;

    } else {
        *err = "unsupported EC JWK \"crv\"";
        return NULL;
    }

    if (ngx_http_auth_jwt_jwk_param(pool, jwk, "x", &x) != NGX_OK
        || ngx_http_auth_jwt_jwk_param(pool, jwk, "y", &y) != NGX_OK
        || x.len != size || y.len != size)
    {
        *err = "EC JWK needs \"x\" and \"y\" of the curve's size";
        return NULL;
    }

    pub = ngx_pnalloc(pool, 1 + 2 * size);
    if (pub == NULL) {
        *err = "out of memory";
        return NULL;
    }

    pub[0] = 0x04;
    ngx_memcpy(pub + 1, x.data, size);
    ngx_memcpy(pub + 1 + size, y.data, size);

    pkey = NULL;
    check = NULL;

    bld = OSSL_PARAM_BLD_new();

    if (bld != NULL
        && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                           crv, 0)
        && OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
                                            pub, 1 + 2 * size))
    {
        pkey = ngx_http_auth_jwt_pkey_fromdata("EC", EVP_PKEY_PUBLIC_KEY,
                                               bld);
    }

    /* the point must lie on the curve */

    if (pkey != NULL) {
        check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);

        if (check == NULL || EVP_PKEY_public_check(check) != 1) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
    }

    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(check);

    if (pkey == NULL) {
        ERR_clear_error();
        *err = "invalid EC JWK (point not on the curve?)";
    }

    return pkey;
}


static EVP_PKEY *
ngx_http_auth_jwt_jwk_okp(ngx_pool_t *pool, json_t *jwk, ngx_uint_t *algs,
    const char **err)
{
    int          type;
    size_t       size;
    json_t      *v;
    EVP_PKEY    *pkey;
    ngx_str_t    x;
    const char  *crv;

    v = json_object_get(jwk, "crv");
    crv = json_is_string(v) ? json_string_value(v) : "";

    if (ngx_strcmp(crv, "Ed25519") == 0) {
        type = EVP_PKEY_ED25519;
        size = 32;

    } else if (ngx_strcmp(crv, "Ed448") == 0) {
        type = EVP_PKEY_ED448;
        size = 57;

    } else if (ngx_strcmp(crv, "X25519") == 0
               || ngx_strcmp(crv, "X448") == 0)
    {
        /* key agreement keys: not for signatures */
        *algs = (ngx_uint_t) -1;
        return NULL;

    } else {
        *err = "unsupported OKP JWK \"crv\"";
        return NULL;
    }

    if (ngx_http_auth_jwt_jwk_param(pool, jwk, "x", &x) != NGX_OK
        || x.len != size)
    {
        *err = "OKP JWK needs \"x\" of the curve's size";
        return NULL;
    }

    pkey = EVP_PKEY_new_raw_public_key(type, NULL, x.data, x.len);
    if (pkey == NULL) {
        ERR_clear_error();
        *err = "invalid OKP JWK";
        return NULL;
    }

    *algs = NGX_HTTP_AUTH_JWT_ALG_EDDSA;

    return pkey;
}


static ngx_int_t
ngx_http_auth_jwt_jwk_oct(ngx_pool_t *pool, json_t *jwk,
    ngx_http_auth_jwt_key_t *key, const char **err)
{
    ngx_uint_t  i;

    if (ngx_http_auth_jwt_jwk_param(pool, jwk, "k", &key->secret)
        != NGX_OK)
    {
        *err = "oct JWK needs a base64url \"k\"";
        return NGX_ERROR;
    }

    key->algs = 0;

    for (i = 0; i < 3; i++) {
        if (key->secret.len >= ngx_http_auth_jwt_algs[i].size) {
            key->algs |= 1 << i;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_jwt_load_pem(ngx_http_auth_jwt_keyset_t *ks, u_char *data,
    size_t len, ngx_uint_t max, const char **err)
{
    u_char                   *p;
    char                     *name, *header;
    long                      n;
    BIO                      *bio;
    X509                     *x509;
    ngx_int_t                 rc;
    ngx_uint_t                found;
    unsigned char            *body;
    const unsigned char      *q;
    ngx_http_auth_jwt_key_t   key;

    bio = BIO_new_mem_buf(data, len);
    if (bio == NULL) {
        *err = "out of memory";
        return NGX_ERROR;
    }

    rc = NGX_OK;
    found = 0;

    while (PEM_read_bio(bio, &name, &header, &body, &n) == 1) {

        if (++ks->count > max) {
            OPENSSL_free(name);
            OPENSSL_free(header);
            OPENSSL_free(body);
            *err = "more keys than auth_jwt_key_set_max";
            rc = NGX_ERROR;
            break;
        }

        ngx_memzero(&key, sizeof(ngx_http_auth_jwt_key_t));
        q = body;

        if (ngx_strcmp(name, "PUBLIC KEY") == 0) {
            key.pkey = d2i_PUBKEY(NULL, &q, n);

        } else if (ngx_strcmp(name, "CERTIFICATE") == 0) {
            x509 = d2i_X509(NULL, &q, n);
            if (x509) {
                key.pkey = X509_get_pubkey(x509);
                X509_free(x509);
            }

        } else {
            p = (u_char *) ngx_strstr(name, "PRIVATE");
            *err = p ? "a private key is not accepted, give the public key"
                     : "PEM block is neither PUBLIC KEY nor CERTIFICATE";
            rc = NGX_ERROR;
        }

        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(body);

        if (rc != NGX_OK) {
            break;
        }

        if (key.pkey == NULL) {
            *err = "invalid PEM public key or certificate";
            rc = NGX_ERROR;
            break;
        }

        key.algs = ngx_http_auth_jwt_pkey_algs(key.pkey, err);
        if (key.algs == 0) {
            EVP_PKEY_free(key.pkey);
            rc = NGX_ERROR;
            break;
        }

        if (ngx_http_auth_jwt_add_pkey(ks, &key, err) != NGX_OK) {
            rc = NGX_ERROR;
            break;
        }

        found++;
    }

    BIO_free(bio);
    ERR_clear_error();

    if (rc == NGX_OK && found == 0) {
        *err = "neither JSON nor PEM";
        rc = NGX_ERROR;
    }

    return rc;
}


static ngx_uint_t
ngx_http_auth_jwt_pkey_algs(EVP_PKEY *pkey, const char **err)
{
    char    group[64];
    size_t  len;

    switch (EVP_PKEY_get_base_id(pkey)) {

    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS:
        if (ngx_http_auth_jwt_rsa_check(pkey, err) != NGX_OK) {
            return 0;
        }

        if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA_PSS) {
            return NGX_HTTP_AUTH_JWT_ALGS_PS;
        }

        return NGX_HTTP_AUTH_JWT_ALGS_RS | NGX_HTTP_AUTH_JWT_ALGS_PS;

    case EVP_PKEY_EC:
        if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &len) != 1) {
            break;
        }

        if (ngx_strcmp(group, "prime256v1") == 0
            || ngx_strcmp(group, "P-256") == 0)
        {
            return NGX_HTTP_AUTH_JWT_ALG_ES256;
        }

        if (ngx_strcmp(group, "secp384r1") == 0
            || ngx_strcmp(group, "P-384") == 0)
        {
            return NGX_HTTP_AUTH_JWT_ALG_ES384;
        }

        if (ngx_strcmp(group, "secp521r1") == 0
            || ngx_strcmp(group, "P-521") == 0)
        {
            return NGX_HTTP_AUTH_JWT_ALG_ES512;
        }

        break;

    case EVP_PKEY_ED25519:
    case EVP_PKEY_ED448:
        return NGX_HTTP_AUTH_JWT_ALG_EDDSA;
    }

    ERR_clear_error();
    *err = "unsupported public key type or curve";

    return 0;
}
