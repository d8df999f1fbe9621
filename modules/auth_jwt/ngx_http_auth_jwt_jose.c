
/*
 * Copyright (C) meshgate contributors
 */


/*
 * JWS: strict base64url, the header's checks, signature verification
 * through EVP with the key's bound algorithm.  Key sets are loaded in
 * ngx_http_auth_jwt_jwk.c.
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


static ngx_int_t ngx_http_auth_jwt_segment(ngx_pool_t *pool, u_char *start,
    u_char *end, ngx_str_t *text, json_t **json);
static ngx_int_t ngx_http_auth_jwt_check_header(ngx_http_auth_jwt_token_t *jwt,
    const char **err);
static ngx_int_t ngx_http_auth_jwt_verify_hmac(ngx_http_auth_jwt_key_t *key,
    ngx_http_auth_jwt_alg_t *alg, ngx_http_auth_jwt_token_t *jwt);
static ngx_int_t ngx_http_auth_jwt_verify_pkey(ngx_http_auth_jwt_key_t *key,
    ngx_http_auth_jwt_alg_t *alg, ngx_http_auth_jwt_token_t *jwt);
static EVP_PKEY_CTX *ngx_http_auth_jwt_verify_ctx(ngx_http_auth_jwt_key_t *key,
    ngx_uint_t a, ngx_http_auth_jwt_alg_t *alg, const EVP_MD *md);
static const EVP_MD *ngx_http_auth_jwt_md(ngx_http_auth_jwt_alg_t *alg);
static EVP_MAC_CTX *ngx_http_auth_jwt_mac_ctx(ngx_http_auth_jwt_key_t *key,
    ngx_uint_t a, ngx_http_auth_jwt_alg_t *alg);
static ngx_int_t ngx_http_auth_jwt_ecdsa_der(ngx_http_auth_jwt_alg_t *alg,
    ngx_str_t *sig, u_char *der, size_t *len);


ngx_http_auth_jwt_alg_t  ngx_http_auth_jwt_algs[] = {
    { ngx_string("HS256"), NGX_HTTP_AUTH_JWT_HS, "SHA256", 32 },
    { ngx_string("HS384"), NGX_HTTP_AUTH_JWT_HS, "SHA384", 48 },
    { ngx_string("HS512"), NGX_HTTP_AUTH_JWT_HS, "SHA512", 64 },
    { ngx_string("RS256"), NGX_HTTP_AUTH_JWT_RS, "SHA256", 0 },
    { ngx_string("RS384"), NGX_HTTP_AUTH_JWT_RS, "SHA384", 0 },
    { ngx_string("RS512"), NGX_HTTP_AUTH_JWT_RS, "SHA512", 0 },
    { ngx_string("PS256"), NGX_HTTP_AUTH_JWT_PS, "SHA256", 0 },
    { ngx_string("PS384"), NGX_HTTP_AUTH_JWT_PS, "SHA384", 0 },
    { ngx_string("PS512"), NGX_HTTP_AUTH_JWT_PS, "SHA512", 0 },
    { ngx_string("ES256"), NGX_HTTP_AUTH_JWT_ES, "SHA256", 32 },
    { ngx_string("ES384"), NGX_HTTP_AUTH_JWT_ES, "SHA384", 48 },
    { ngx_string("ES512"), NGX_HTTP_AUTH_JWT_ES, "SHA512", 66 },
    { ngx_string("EdDSA"), NGX_HTTP_AUTH_JWT_ED, NULL, 0 },
    { ngx_null_string, 0, NULL, 0 }
};


/* worker-wide HMAC implementation, fetched in init_process */
static EVP_MAC  *ngx_http_auth_jwt_hmac;


/* base64url alphabet value of a byte, or 0xff */
static u_char  ngx_http_auth_jwt_b64[256];
static ngx_uint_t  ngx_http_auth_jwt_b64_ready;


ngx_int_t
ngx_http_auth_jwt_decode_b64url(ngx_str_t *src, ngx_str_t *dst,
    ngx_pool_t *pool)
{
    u_char      *s, *d, *last;
    ngx_uint_t   i, rest, v, tail;

    if (!ngx_http_auth_jwt_b64_ready) {
        ngx_memset(ngx_http_auth_jwt_b64, 0xff, 256);
        for (i = 0; i < 26; i++) {
            ngx_http_auth_jwt_b64['A' + i] = (u_char) i;
            ngx_http_auth_jwt_b64['a' + i] = (u_char) (26 + i);
        }
        for (i = 0; i < 10; i++) {
            ngx_http_auth_jwt_b64['0' + i] = (u_char) (52 + i);
        }
        ngx_http_auth_jwt_b64['-'] = 62;
        ngx_http_auth_jwt_b64['_'] = 63;
        ngx_http_auth_jwt_b64_ready = 1;
    }

    rest = src->len % 4;
    if (rest == 1) {
        return NGX_ERROR;
    }

    for (i = 0; i < src->len; i++) {
        if (ngx_http_auth_jwt_b64[src->data[i]] == 0xff) {
            return NGX_ERROR;
        }
    }

    /* the unused bits of the last character must be zero (canonical) */

    if (rest) {
        tail = ngx_http_auth_jwt_b64[src->data[src->len - 1]];
        if (tail & (rest == 2 ? 0x0f : 0x03)) {
            return NGX_ERROR;
        }
    }

    dst->data = ngx_pnalloc(pool, src->len / 4 * 3 + 3 + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    s = src->data;
    last = src->data + src->len - rest;
    d = dst->data;

    while (s < last) {
        v = (ngx_http_auth_jwt_b64[s[0]] << 18)
            | (ngx_http_auth_jwt_b64[s[1]] << 12)
            | (ngx_http_auth_jwt_b64[s[2]] << 6)
            | ngx_http_auth_jwt_b64[s[3]];
        *d++ = (u_char) (v >> 16);
        *d++ = (u_char) (v >> 8);
        *d++ = (u_char) v;
        s += 4;
    }

    if (rest) {
        v = (ngx_http_auth_jwt_b64[s[0]] << 18)
            | (ngx_http_auth_jwt_b64[s[1]] << 12);
        if (rest == 3) {
            v |= ngx_http_auth_jwt_b64[s[2]] << 6;
        }
        *d++ = (u_char) (v >> 16);
        if (rest == 3) {
            *d++ = (u_char) (v >> 8);
        }
    }

    dst->len = d - dst->data;
    *d = '\0';

    return NGX_OK;
}


ngx_int_t
ngx_http_auth_jwt_json_object(ngx_str_t *text, json_t **out)
{
    json_t        *v;
    json_error_t   e;

    v = json_loadb((const char *) text->data, text->len,
                   JSON_REJECT_DUPLICATES, &e);
    if (v == NULL) {
        return NGX_ERROR;
    }

    if (!json_is_object(v)) {
        json_decref(v);
        return NGX_ERROR;
    }

    *out = v;

    return NGX_OK;
}


ngx_int_t
ngx_http_auth_jwt_alg_index(const char *name)
{
    ngx_int_t  i;
    size_t     len;

    len = ngx_strlen(name);

    for (i = 0; ngx_http_auth_jwt_algs[i].name.len; i++) {
        if (ngx_http_auth_jwt_algs[i].name.len == len
            && ngx_strncmp(ngx_http_auth_jwt_algs[i].name.data, name, len)
               == 0)
        {
            return i;
        }
    }

    return -1;
}


/*
 * Splits and decodes a compact JWS.  The JSON values are owned by jwt and
 * released by the caller.
 */

ngx_http_auth_jwt_result_e
ngx_http_auth_jwt_parse(ngx_pool_t *pool, ngx_str_t *token,
    ngx_http_auth_jwt_token_t *jwt, const char **err)
{
    u_char     *dot1, *dot2, *last;
    ngx_str_t   seg;
    ngx_int_t   rc;

    ngx_memzero(jwt, sizeof(ngx_http_auth_jwt_token_t));

    if (token->len > NGX_HTTP_AUTH_JWT_MAX_TOKEN) {
        *err = "token too long";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    last = token->data + token->len;

    dot1 = ngx_strlchr(token->data, last, '.');
    dot2 = dot1 ? ngx_strlchr(dot1 + 1, last, '.') : NULL;

    if (dot2 == NULL || ngx_strlchr(dot2 + 1, last, '.') != NULL) {
        *err = "not a compact JWS (three segments)";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    if (dot1 == token->data || dot2 == dot1 + 1 || dot2 + 1 == last) {
        *err = "empty segment";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    rc = ngx_http_auth_jwt_segment(pool, token->data, dot1,
                                   &jwt->header_text, &jwt->header);
    if (rc != NGX_OK) {
        *err = (rc == NGX_DECLINED) ? "header is not base64url"
                                    : "header is not a JSON object";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    rc = ngx_http_auth_jwt_check_header(jwt, err);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_auth_jwt_segment(pool, dot1 + 1, dot2,
                                   &jwt->payload_text, &jwt->payload);
    if (rc != NGX_OK) {
        *err = (rc == NGX_DECLINED) ? "payload is not base64url"
                                    : "payload is not a JSON object";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    seg.data = dot2 + 1;
    seg.len = last - seg.data;

    if (ngx_http_auth_jwt_decode_b64url(&seg, &jwt->sig, pool) != NGX_OK) {
        *err = "signature is not base64url";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    jwt->input.data = token->data;
    jwt->input.len = dot2 - token->data;

    return NGX_HTTP_AUTH_JWT_OK;
}


/*
 * The header or payload segment start..end: base64url-decoded into text,
 * then parsed into *json.  NGX_DECLINED when it is not base64url,
 * NGX_ERROR when it is not a JSON object.
 */

static ngx_int_t
ngx_http_auth_jwt_segment(ngx_pool_t *pool, u_char *start, u_char *end,
    ngx_str_t *text, json_t **json)
{
    ngx_str_t  seg;

    seg.data = start;
    seg.len = end - start;

    if (ngx_http_auth_jwt_decode_b64url(&seg, text, pool) != NGX_OK) {
        return NGX_DECLINED;
    }

    return ngx_http_auth_jwt_json_object(text, json);
}


static ngx_int_t
ngx_http_auth_jwt_check_header(ngx_http_auth_jwt_token_t *jwt,
    const char **err)
{
    json_t      *v;
    ngx_int_t    a;
    const char  *s;

    v = json_object_get(jwt->header, "alg");
    if (!json_is_string(v)) {
        *err = "no \"alg\"";
        return NGX_HTTP_AUTH_JWT_BAD_ALG;
    }

    a = ngx_http_auth_jwt_alg_index(json_string_value(v));
    if (a < 0 || (size_t) ngx_strlen(json_string_value(v))
                 != json_string_length(v))
    {
        *err = "unsupported \"alg\"";
        return NGX_HTTP_AUTH_JWT_BAD_ALG;
    }

    jwt->alg = a;

    if (json_object_get(jwt->header, "crit") != NULL) {
        *err = "unsupported \"crit\" extension";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    if (json_object_get(jwt->header, "enc") != NULL
        || json_object_get(jwt->header, "b64") != NULL)
    {
        *err = "JWE or unencoded payload";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    v = json_object_get(jwt->header, "typ");
    if (v != NULL) {
        s = json_is_string(v) ? json_string_value(v) : "";

        if (ngx_strcasecmp((u_char *) s, (u_char *) "JWT") != 0
            && ngx_strcasecmp((u_char *) s, (u_char *) "at+jwt") != 0
            && ngx_strcasecmp((u_char *) s, (u_char *) "application/jwt")
               != 0
            && ngx_strcasecmp((u_char *) s, (u_char *) "application/at+jwt")
               != 0)
        {
            *err = "unexpected \"typ\"";
            return NGX_HTTP_AUTH_JWT_MALFORMED;
        }
    }

    v = json_object_get(jwt->header, "cty");
    if (v != NULL) {
        s = json_is_string(v) ? json_string_value(v) : "";

        if (ngx_strcasecmp((u_char *) s, (u_char *) "JWT") == 0
            || ngx_strcasecmp((u_char *) s, (u_char *) "application/jwt")
               == 0)
        {
            *err = "nested JWT";
            return NGX_HTTP_AUTH_JWT_MALFORMED;
        }
    }

    if (ngx_http_auth_jwt_kid(jwt->header, &jwt->kid, err) != NGX_OK) {
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    jwt->has_kid = (jwt->kid.data != NULL);

    return NGX_OK;
}


/*
 * The "kid" of a JWS or JWE header: a string when present (kid->data is
 * NULL when absent, an empty kid is a kid); NGX_ERROR when not a string
 */

ngx_int_t
ngx_http_auth_jwt_kid(json_t *header, ngx_str_t *kid, const char **err)
{
    json_t  *v;

    ngx_str_null(kid);

    v = json_object_get(header, "kid");
    if (v == NULL) {
        return NGX_OK;
    }

    if (!json_is_string(v)) {
        *err = "\"kid\" is not a string";
        return NGX_ERROR;
    }

    kid->data = (u_char *) json_string_value(v);
    kid->len = json_string_length(v);

    return NGX_OK;
}


/* NGX_OK: valid; NGX_DECLINED: bad signature */

ngx_int_t
ngx_http_auth_jwt_verify(ngx_http_auth_jwt_key_t *key,
    ngx_http_auth_jwt_token_t *jwt)
{
    ngx_http_auth_jwt_alg_t  *alg;

    if (!(key->algs & (1 << jwt->alg))) {
        return NGX_DECLINED;
    }

    alg = &ngx_http_auth_jwt_algs[jwt->alg];

    if (alg->family == NGX_HTTP_AUTH_JWT_HS) {
        if (key->pkey != NULL || key->secret.len < alg->size) {
            return NGX_DECLINED;
        }

        return ngx_http_auth_jwt_verify_hmac(key, alg, jwt);
    }

    if (key->pkey == NULL) {
        return NGX_DECLINED;
    }

    return ngx_http_auth_jwt_verify_pkey(key, alg, jwt);
}


static ngx_int_t
ngx_http_auth_jwt_verify_hmac(ngx_http_auth_jwt_key_t *key,
    ngx_http_auth_jwt_alg_t *alg, ngx_http_auth_jwt_token_t *jwt)
{
    int            ok;
    u_char         mac[EVP_MAX_MD_SIZE];
    size_t         len;
    unsigned int   n;
    EVP_MAC_CTX   *c;
    const EVP_MD  *md;

    c = ngx_http_auth_jwt_mac_ctx(key, jwt->alg, alg);

    if (c == NULL) {

        /* the master, or no HMAC provider: the one-shot call */

        md = ngx_http_auth_jwt_md(alg);

        if (md == NULL
            || HMAC(md, key->secret.data, key->secret.len, jwt->input.data,
                    jwt->input.len, mac, &n) == NULL)
        {
            ERR_clear_error();
            return NGX_DECLINED;
        }

        len = n;

    } else {

        /* a NULL key: the context starts again with the key it holds */

        ok = EVP_MAC_init(c, NULL, 0, NULL) == 1
             && EVP_MAC_update(c, jwt->input.data, jwt->input.len) == 1
             && EVP_MAC_final(c, mac, &len, sizeof(mac)) == 1;

        if (!ok) {
            ERR_clear_error();
            return NGX_DECLINED;
        }
    }

    if (jwt->sig.len != len
        || CRYPTO_memcmp(mac, jwt->sig.data, len) != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * An HMAC context keyed once per key and algorithm in a worker; each
 * verification starts it again (a copy would cost as much as the MAC).
 */

static EVP_MAC_CTX *
ngx_http_auth_jwt_mac_ctx(ngx_http_auth_jwt_key_t *key, ngx_uint_t a,
    ngx_http_auth_jwt_alg_t *alg)
{
    OSSL_PARAM    params[2];
    EVP_MAC_CTX  *c;

    if (key->mac[a] || ngx_http_auth_jwt_hmac == NULL) {
        return key->mac[a];
    }

    c = EVP_MAC_CTX_new(ngx_http_auth_jwt_hmac);
    if (c == NULL) {
        return NULL;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) alg->md, 0);
    params[1] = OSSL_PARAM_construct_end();

    if (EVP_MAC_init(c, key->secret.data, key->secret.len, params) != 1) {
        EVP_MAC_CTX_free(c);
        ERR_clear_error();
        return NULL;
    }

    key->mac[a] = c;

    return c;
}


static ngx_int_t
ngx_http_auth_jwt_verify_pkey(ngx_http_auth_jwt_key_t *key,
    ngx_http_auth_jwt_alg_t *alg, ngx_http_auth_jwt_token_t *jwt)
{
    int            ok;
    u_char         der[256], dgst[EVP_MAX_MD_SIZE];
    size_t         len;
    ngx_str_t      sig;
    unsigned int   dlen;
    const EVP_MD  *md;
    EVP_MD_CTX    *mctx;
    EVP_PKEY_CTX  *pctx;

    if (alg->family == NGX_HTTP_AUTH_JWT_ED) {
        mctx = EVP_MD_CTX_new();
        if (mctx == NULL) {
            return NGX_DECLINED;
        }

        ok = EVP_DigestVerifyInit(mctx, NULL, NULL, NULL, key->pkey) == 1
             && EVP_DigestVerify(mctx, jwt->sig.data, jwt->sig.len,
                                 jwt->input.data, jwt->input.len) == 1;

        EVP_MD_CTX_free(mctx);
        goto done;
    }

    sig = jwt->sig;

    if (alg->family == NGX_HTTP_AUTH_JWT_ES) {
        if (ngx_http_auth_jwt_ecdsa_der(alg, &jwt->sig, der, &len)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }

        sig.data = der;
        sig.len = len;
    }

    md = ngx_http_auth_jwt_md(alg);
    if (md == NULL) {
        return NGX_DECLINED;
    }

    pctx = ngx_http_auth_jwt_verify_ctx(key, jwt->alg, alg, md);
    if (pctx == NULL) {
        ERR_clear_error();
        return NGX_DECLINED;
    }

    ok = EVP_Digest(jwt->input.data, jwt->input.len, dgst, &dlen, md, NULL)
             == 1
         && EVP_PKEY_verify(pctx, sig.data, sig.len, dgst, dlen) == 1;

done:

    if (!ok) {
        ERR_clear_error();
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * A verification context per key and algorithm, made on first use in a
 * worker and kept with the key: a verification then costs a digest and
 * the public-key operation only.
 */

static EVP_PKEY_CTX *
ngx_http_auth_jwt_verify_ctx(ngx_http_auth_jwt_key_t *key, ngx_uint_t a,
    ngx_http_auth_jwt_alg_t *alg, const EVP_MD *md)
{
    EVP_PKEY_CTX  *pctx;

    if (key->vctx[a]) {
        return key->vctx[a];
    }

    pctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);
    if (pctx == NULL) {
        return NULL;
    }

    if (EVP_PKEY_verify_init(pctx) != 1
        || EVP_PKEY_CTX_set_signature_md(pctx, md) != 1)
    {
        goto failed;
    }

    if (alg->family == NGX_HTTP_AUTH_JWT_PS) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1
            || EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST)
               != 1
            || EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) != 1)
        {
            goto failed;
        }

    } else if (alg->family == NGX_HTTP_AUTH_JWT_RS) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) {
            goto failed;
        }
    }

    key->vctx[a] = pctx;

    return pctx;

failed:

    EVP_PKEY_CTX_free(pctx);

    return NULL;
}


/*
 * Digests fetched explicitly once per worker (init_process) spare OpenSSL 3
 * a provider lookup on every verification; elsewhere (the master, at
 * configuration time) the implicitly fetched ones serve.
 */

static EVP_MD      *ngx_http_auth_jwt_mds[3];
static const char  *ngx_http_auth_jwt_md_names[3] = {
    "SHA256", "SHA384", "SHA512"
};


void
ngx_http_auth_jwt_md_init(void)
{
    ngx_uint_t  i;

    for (i = 0; i < 3; i++) {
        if (ngx_http_auth_jwt_mds[i] == NULL) {
            ngx_http_auth_jwt_mds[i] =
                EVP_MD_fetch(NULL, ngx_http_auth_jwt_md_names[i], NULL);
        }
    }

    if (ngx_http_auth_jwt_hmac == NULL) {
        ngx_http_auth_jwt_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    }

    ERR_clear_error();
}


void
ngx_http_auth_jwt_md_free(void)
{
    ngx_uint_t  i;

    for (i = 0; i < 3; i++) {
        EVP_MD_free(ngx_http_auth_jwt_mds[i]);
        ngx_http_auth_jwt_mds[i] = NULL;
    }

    EVP_MAC_free(ngx_http_auth_jwt_hmac);
    ngx_http_auth_jwt_hmac = NULL;
}


static const EVP_MD *
ngx_http_auth_jwt_md(ngx_http_auth_jwt_alg_t *alg)
{
    ngx_uint_t  i;

    for (i = 0; i < 3; i++) {
        if (ngx_strcmp(alg->md, ngx_http_auth_jwt_md_names[i]) == 0) {
            break;
        }
    }

    if (i == 3) {
        return NULL;
    }

    if (ngx_http_auth_jwt_mds[i]) {
        return ngx_http_auth_jwt_mds[i];
    }

    switch (i) {
    case 0:
        return EVP_sha256();
    case 1:
        return EVP_sha384();
    default:
        return EVP_sha512();
    }
}


/* JOSE fixed-length R||S to the DER ECDSA-Sig-Value that OpenSSL checks */

static ngx_int_t
ngx_http_auth_jwt_ecdsa_der(ngx_http_auth_jwt_alg_t *alg, ngx_str_t *sig,
    u_char *der, size_t *len)
{
    int         n;
    u_char     *p;
    BIGNUM     *r, *s;
    ECDSA_SIG  *es;

    if (sig->len != 2 * alg->size) {
        return NGX_DECLINED;
    }

    r = BN_bin2bn(sig->data, alg->size, NULL);
    s = BN_bin2bn(sig->data + alg->size, alg->size, NULL);
    es = ECDSA_SIG_new();

    if (r == NULL || s == NULL || es == NULL) {
        goto failed;
    }

    if (ECDSA_SIG_set0(es, r, s) != 1) {
        goto failed;
    }

    r = NULL;
    s = NULL;

    n = i2d_ECDSA_SIG(es, NULL);
    if (n <= 0 || n > 256) {
        goto failed;
    }

    p = der;
    n = i2d_ECDSA_SIG(es, &p);
    ECDSA_SIG_free(es);

    *len = n;

    return NGX_OK;

failed:

    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    ERR_clear_error();

    return NGX_DECLINED;
}
