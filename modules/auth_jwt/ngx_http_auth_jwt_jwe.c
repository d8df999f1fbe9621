
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "ngx_http_auth_jwt.h"


/*
 * JWE compact serialization (RFC 7516) with the algorithms of RFC 7518,
 * through OpenSSL 3 EVP only.  The authentication tag is checked before
 * the plaintext is used; a key that cannot be unwrapped (RSA-OAEP
 * padding, AES key wrap integrity) is replaced by a random content key,
 * so that every failure is the same tag failure (RFC 7516 section 11.5):
 * no padding oracle.
 */


#define NGX_HTTP_AUTH_JWT_GCM    1
#define NGX_HTTP_AUTH_JWT_CBC    2
#define NGX_HTTP_AUTH_JWT_JWE_RSA_TRIES  2


typedef struct {
    ngx_str_t                       name;
    ngx_uint_t                      mode;
    size_t                          cek_len;
    const char                     *cipher;
    const char                     *md;       /* CBC: the HMAC's */
    size_t                          iv_len;
    size_t                          tag_len;
} ngx_http_auth_jwt_enc_t;


typedef struct {
    ngx_str_t                       name;
    size_t                          kek_len;  /* oct keys, 0: any */
    const char                     *cipher;   /* KW, GCMKW */
    const char                     *md;       /* RSA-OAEP */
} ngx_http_auth_jwt_kma_t;


static ngx_http_auth_jwt_enc_t  ngx_http_auth_jwt_encs[] = {
    { ngx_string("A128CBC-HS256"), NGX_HTTP_AUTH_JWT_CBC, 32,
      "AES-128-CBC", "SHA256", 16, 16 },
    { ngx_string("A192CBC-HS384"), NGX_HTTP_AUTH_JWT_CBC, 48,
      "AES-192-CBC", "SHA384", 16, 24 },
    { ngx_string("A256CBC-HS512"), NGX_HTTP_AUTH_JWT_CBC, 64,
      "AES-256-CBC", "SHA512", 16, 32 },
    { ngx_string("A128GCM"), NGX_HTTP_AUTH_JWT_GCM, 16,
      "AES-128-GCM", NULL, 12, 16 },
    { ngx_string("A192GCM"), NGX_HTTP_AUTH_JWT_GCM, 24,
      "AES-192-GCM", NULL, 12, 16 },
    { ngx_string("A256GCM"), NGX_HTTP_AUTH_JWT_GCM, 32,
      "AES-256-GCM", NULL, 12, 16 },
    { ngx_null_string, 0, 0, NULL, NULL, 0, 0 }
};


/* in the order of the NGX_HTTP_AUTH_JWT_JWE_* bits */
static ngx_http_auth_jwt_kma_t  ngx_http_auth_jwt_kmas[] = {
    { ngx_string("dir"), 0, NULL, NULL },
    { ngx_string("A128KW"), 16, "AES-128-WRAP", NULL },
    { ngx_string("A192KW"), 24, "AES-192-WRAP", NULL },
    { ngx_string("A256KW"), 32, "AES-256-WRAP", NULL },
    { ngx_string("A128GCMKW"), 16, "AES-128-GCM", NULL },
    { ngx_string("A192GCMKW"), 24, "AES-192-GCM", NULL },
    { ngx_string("A256GCMKW"), 32, "AES-256-GCM", NULL },
    { ngx_string("RSA-OAEP"), 0, NULL, "SHA1" },
    { ngx_string("RSA-OAEP-256"), 0, NULL, "SHA256" },
    { ngx_string("RSA-OAEP-384"), 0, NULL, "SHA384" },
    { ngx_string("RSA-OAEP-512"), 0, NULL, "SHA512" },
    { ngx_null_string, 0, NULL, NULL }
};


static EVP_CIPHER *ngx_http_auth_jwt_cipher(const char *name);
static EVP_MD *ngx_http_auth_jwt_jwe_md(const char *name);
static ngx_int_t ngx_http_auth_jwt_jwe_index(ngx_str_t *names, size_t size,
    const char *name);
static ngx_int_t ngx_http_auth_jwt_jwe_segment(ngx_pool_t *pool, u_char *p,
    u_char *last, ngx_str_t *out);
static ngx_int_t ngx_http_auth_jwt_jwe_header(ngx_pool_t *pool,
    ngx_http_auth_jwt_jwe_t *jwe, const char **err);
static ngx_int_t ngx_http_auth_jwt_jwe_cek(ngx_pool_t *pool,
    ngx_http_auth_jwt_key_t *key, ngx_http_auth_jwt_jwe_t *jwe,
    ngx_str_t *cek);
static ngx_int_t ngx_http_auth_jwt_jwe_unwrap(ngx_http_auth_jwt_kma_t *kma,
    ngx_http_auth_jwt_key_t *key, ngx_http_auth_jwt_jwe_t *jwe, u_char *out,
    size_t *len);
static ngx_int_t ngx_http_auth_jwt_jwe_oaep(ngx_http_auth_jwt_kma_t *kma,
    ngx_http_auth_jwt_key_t *key, ngx_http_auth_jwt_jwe_t *jwe, u_char *out,
    size_t *len);
static ngx_int_t ngx_http_auth_jwt_jwe_gcm(const char *cipher, u_char *key,
    ngx_str_t *iv, ngx_str_t *aad, ngx_str_t *in, ngx_str_t *tag,
    u_char *out, size_t *len);
static ngx_int_t ngx_http_auth_jwt_jwe_cbc(ngx_http_auth_jwt_enc_t *enc,
    ngx_str_t *cek, ngx_http_auth_jwt_jwe_t *jwe, u_char *out, size_t *len);


/*
 * Ciphers, digests and HMAC fetched once per worker and kept: a fetch per
 * token would cost a provider lookup each time.
 */

static struct {
    const char                     *name;
    EVP_CIPHER                     *cipher;
}  ngx_http_auth_jwt_ciphers[9];

static struct {
    const char                     *name;
    EVP_MD                         *md;
}  ngx_http_auth_jwt_jwe_mds[4];

static EVP_MAC  *ngx_http_auth_jwt_jwe_hmac;


static EVP_CIPHER *
ngx_http_auth_jwt_cipher(const char *name)
{
    ngx_uint_t  i;

    for (i = 0; i < 9; i++) {
        if (ngx_http_auth_jwt_ciphers[i].name == NULL) {
            ngx_http_auth_jwt_ciphers[i].cipher =
                EVP_CIPHER_fetch(NULL, name, NULL);

            if (ngx_http_auth_jwt_ciphers[i].cipher == NULL) {
                return NULL;
            }

            ngx_http_auth_jwt_ciphers[i].name = name;
            return ngx_http_auth_jwt_ciphers[i].cipher;
        }

        if (ngx_strcmp(ngx_http_auth_jwt_ciphers[i].name, name) == 0) {
            return ngx_http_auth_jwt_ciphers[i].cipher;
        }
    }

    return NULL;
}


static EVP_MD *
ngx_http_auth_jwt_jwe_md(const char *name)
{
    ngx_uint_t  i;

    for (i = 0; i < 4; i++) {
        if (ngx_http_auth_jwt_jwe_mds[i].name == NULL) {
            ngx_http_auth_jwt_jwe_mds[i].md = EVP_MD_fetch(NULL, name, NULL);

            if (ngx_http_auth_jwt_jwe_mds[i].md == NULL) {
                return NULL;
            }

            ngx_http_auth_jwt_jwe_mds[i].name = name;
            return ngx_http_auth_jwt_jwe_mds[i].md;
        }

        if (ngx_strcmp(ngx_http_auth_jwt_jwe_mds[i].name, name) == 0) {
            return ngx_http_auth_jwt_jwe_mds[i].md;
        }
    }

    return NULL;
}


/* exit_process */

void
ngx_http_auth_jwt_jwe_free(void)
{
    ngx_uint_t  i;

    for (i = 0; i < 9; i++) {
        EVP_CIPHER_free(ngx_http_auth_jwt_ciphers[i].cipher);
        ngx_http_auth_jwt_ciphers[i].cipher = NULL;
        ngx_http_auth_jwt_ciphers[i].name = NULL;
    }

    for (i = 0; i < 4; i++) {
        EVP_MD_free(ngx_http_auth_jwt_jwe_mds[i].md);
        ngx_http_auth_jwt_jwe_mds[i].md = NULL;
        ngx_http_auth_jwt_jwe_mds[i].name = NULL;
    }

    EVP_MAC_free(ngx_http_auth_jwt_jwe_hmac);
    ngx_http_auth_jwt_jwe_hmac = NULL;
}


/* the index of a key management algorithm, or -1 */

ngx_int_t
ngx_http_auth_jwt_jwe_alg(const char *name)
{
    return ngx_http_auth_jwt_jwe_index(&ngx_http_auth_jwt_kmas[0].name,
                                       sizeof(ngx_http_auth_jwt_kma_t),
                                       name);
}


/*
 * The "alg" of a JWK for JWE: a key management algorithm, or a content
 * encryption one, which names a key for "dir" (RFC 7520 section 5.6).
 */

ngx_int_t
ngx_http_auth_jwt_jwe_key_alg(const char *name)
{
    ngx_int_t  a;

    a = ngx_http_auth_jwt_jwe_alg(name);

    if (a < 0
        && ngx_http_auth_jwt_jwe_index(&ngx_http_auth_jwt_encs[0].name,
                                       sizeof(ngx_http_auth_jwt_enc_t),
                                       name)
           >= 0)
    {
        a = 0;
    }

    return a;
}


static ngx_int_t
ngx_http_auth_jwt_jwe_index(ngx_str_t *names, size_t size, const char *name)
{
    size_t      len;
    ngx_int_t   i;
    ngx_str_t  *s;

    len = ngx_strlen(name);

    for (i = 0; /* void */; i++) {
        s = (ngx_str_t *) ((u_char *) names + i * size);

        if (s->len == 0) {
            return -1;
        }

        if (s->len == len && ngx_strncmp(s->data, name, len) == 0) {
            return i;
        }
    }
}


/*
 * The key management algorithms an oct key of len bytes may serve: dir
 * for a content key length, the AES ones for their key length.
 */

ngx_uint_t
ngx_http_auth_jwt_jwe_oct(size_t len)
{
    ngx_uint_t  i, mask;

    mask = 0;

    for (i = 0; ngx_http_auth_jwt_encs[i].name.len; i++) {
        if (ngx_http_auth_jwt_encs[i].cek_len == len) {
            mask |= NGX_HTTP_AUTH_JWT_JWE_DIR;
        }
    }

    for (i = 1; i < 7; i++) {
        if (ngx_http_auth_jwt_kmas[i].kek_len == len) {
            mask |= 1 << i;
        }
    }

    return mask;
}


/*
 * Splits and decodes a compact JWE: protected header, encrypted key,
 * IV, ciphertext, tag.  Sizes are checked against "alg" and "enc" here,
 * before any key is looked at.
 */

ngx_http_auth_jwt_result_e
ngx_http_auth_jwt_jwe_parse(ngx_pool_t *pool, ngx_str_t *token,
    ngx_http_auth_jwt_jwe_t *jwe, const char **err)
{
    u_char                   *p, *last, *dot[4];
    ngx_int_t                 rc;
    ngx_uint_t                i;
    ngx_http_auth_jwt_enc_t  *enc;

    ngx_memzero(jwe, sizeof(ngx_http_auth_jwt_jwe_t));

    if (token->len > NGX_HTTP_AUTH_JWT_MAX_TOKEN) {
        *err = "token too long";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    p = token->data;
    last = p + token->len;

    for (i = 0; i < 4; i++) {
        dot[i] = ngx_strlchr(p, last, '.');
        if (dot[i] == NULL) {
            break;
        }

        p = dot[i] + 1;
    }

    if (i < 4 || ngx_strlchr(p, last, '.') != NULL) {
        *err = "not a compact JWE (five segments)";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    jwe->aad.data = token->data;
    jwe->aad.len = dot[0] - token->data;

    if (ngx_http_auth_jwt_jwe_segment(pool, token->data, dot[0],
                                      &jwe->header_text) != NGX_OK
        || jwe->header_text.len == 0
        || ngx_http_auth_jwt_json_object(&jwe->header_text, &jwe->header)
           != NGX_OK)
    {
        *err = "JWE header is not a base64url JSON object";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    rc = ngx_http_auth_jwt_jwe_header(pool, jwe, err);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_auth_jwt_jwe_segment(pool, dot[0] + 1, dot[1], &jwe->ek)
           != NGX_OK
        || ngx_http_auth_jwt_jwe_segment(pool, dot[1] + 1, dot[2], &jwe->iv)
           != NGX_OK
        || ngx_http_auth_jwt_jwe_segment(pool, dot[2] + 1, dot[3], &jwe->ct)
           != NGX_OK
        || ngx_http_auth_jwt_jwe_segment(pool, dot[3] + 1, last, &jwe->tag)
           != NGX_OK)
    {
        *err = "JWE segment is not base64url";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    enc = &ngx_http_auth_jwt_encs[jwe->enc];

    if (jwe->iv.len != enc->iv_len || jwe->tag.len != enc->tag_len
        || jwe->ct.len == 0
        || (jwe->alg == 0) != (jwe->ek.len == 0))
    {
        *err = "JWE segment of a wrong size";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    return NGX_HTTP_AUTH_JWT_OK;
}


static ngx_int_t
ngx_http_auth_jwt_jwe_segment(ngx_pool_t *pool, u_char *p, u_char *last,
    ngx_str_t *out)
{
    ngx_str_t  s;

    s.data = p;
    s.len = last - p;

    if (s.len == 0) {
        out->data = p;
        out->len = 0;
        return NGX_OK;
    }

    return ngx_http_auth_jwt_decode_b64url(&s, out, pool);
}


static ngx_int_t
ngx_http_auth_jwt_jwe_header(ngx_pool_t *pool, ngx_http_auth_jwt_jwe_t *jwe,
    const char **err)
{
    json_t     *v;
    ngx_int_t   a;

    v = json_object_get(jwe->header, "alg");
    a = json_is_string(v) ? ngx_http_auth_jwt_jwe_alg(json_string_value(v))
                          : -1;

    if (a < 0 || ngx_strlen(json_string_value(v)) != json_string_length(v)) {
        *err = "unsupported JWE \"alg\"";
        return NGX_HTTP_AUTH_JWT_BAD_ALG;
    }

    jwe->alg = a;

    v = json_object_get(jwe->header, "enc");
    a = json_is_string(v)
        ? ngx_http_auth_jwt_jwe_index(&ngx_http_auth_jwt_encs[0].name,
                                      sizeof(ngx_http_auth_jwt_enc_t),
                                      json_string_value(v))
        : -1;

    if (a < 0 || ngx_strlen(json_string_value(v)) != json_string_length(v)) {
        *err = "unsupported JWE \"enc\"";
        return NGX_HTTP_AUTH_JWT_BAD_ALG;
    }

    jwe->enc = a;

    if (json_object_get(jwe->header, "zip") != NULL) {
        *err = "compressed JWE (\"zip\") refused";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    if (json_object_get(jwe->header, "crit") != NULL) {
        *err = "unsupported \"crit\" extension";
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    if (ngx_http_auth_jwt_kid(jwe->header, &jwe->kid, err) != NGX_OK) {
        return NGX_HTTP_AUTH_JWT_MALFORMED;
    }

    jwe->has_kid = (jwe->kid.data != NULL);

    /* AES-GCM key wrap: its IV and tag are header parameters */

    if (jwe->alg >= 4 && jwe->alg <= 6) {
        if (ngx_http_auth_jwt_jwk_param(pool, jwe->header, "iv",
                                        &jwe->kw_iv)
            != NGX_OK
            || jwe->kw_iv.len != 12)
        {
            *err = "GCM key wrap needs a 96-bit \"iv\"";
            return NGX_HTTP_AUTH_JWT_MALFORMED;
        }

        if (ngx_http_auth_jwt_jwk_param(pool, jwe->header, "tag",
                                        &jwe->kw_tag)
            != NGX_OK
            || jwe->kw_tag.len != 16)
        {
            *err = "GCM key wrap needs a 128-bit \"tag\"";
            return NGX_HTTP_AUTH_JWT_MALFORMED;
        }
    }

    return NGX_OK;
}


/*
 * Decrypts with one key.  NGX_OK: out is the plaintext, authenticated;
 * NGX_DECLINED: not this key, or not authentic, which are not told apart.
 *
 * An RSA private-key operation costs milliseconds (about 5 ms at 4096
 * bits, 20 ms and more at 8192) and anyone can send a token: at most
 * NGX_HTTP_AUTH_JWT_JWE_RSA_TRIES of them per token.  With a "kid" only
 * the keys of that kid (and keys without one) are offered here; without,
 * the first keys for the "alg" in the order of the key sets.
 */

ngx_int_t
ngx_http_auth_jwt_jwe_decrypt(ngx_pool_t *pool, ngx_http_auth_jwt_key_t *key,
    ngx_http_auth_jwt_jwe_t *jwe, ngx_str_t *out)
{
    size_t                    len;
    ngx_int_t                 rc;
    ngx_str_t                 cek;
    ngx_http_auth_jwt_enc_t  *enc;

    if (!(key->jwe & (1 << jwe->alg))) {
        return NGX_DECLINED;
    }

    if (ngx_http_auth_jwt_kmas[jwe->alg].md && key->pkey) {
        if (jwe->rsa_tries == NGX_HTTP_AUTH_JWT_JWE_RSA_TRIES) {
            return NGX_DECLINED;
        }

        jwe->rsa_tries++;
    }

    enc = &ngx_http_auth_jwt_encs[jwe->enc];

    rc = ngx_http_auth_jwt_jwe_cek(pool, key, jwe, &cek);
    if (rc != NGX_OK) {
        return rc;
    }

    out->data = ngx_pnalloc(pool, jwe->ct.len + 32);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    if (enc->mode == NGX_HTTP_AUTH_JWT_GCM) {
        rc = ngx_http_auth_jwt_jwe_gcm(enc->cipher, cek.data, &jwe->iv,
                                       &jwe->aad, &jwe->ct, &jwe->tag,
                                       out->data, &len);

    } else {
        rc = ngx_http_auth_jwt_jwe_cbc(enc, &cek, jwe, out->data, &len);
    }

    ngx_explicit_memzero(cek.data, cek.len);
    ERR_clear_error();

    if (rc != NGX_OK) {
        return NGX_DECLINED;
    }

    out->len = len;

    return NGX_OK;
}


/*
 * The content encryption key.  dir with a key of another length than
 * "enc" needs is not this key (the length is no secret); a key that does
 * not unwrap becomes random bytes of the right length, so that the tag
 * check fails as for any other forgery.
 */

static ngx_int_t
ngx_http_auth_jwt_jwe_cek(ngx_pool_t *pool, ngx_http_auth_jwt_key_t *key,
    ngx_http_auth_jwt_jwe_t *jwe, ngx_str_t *cek)
{
    size_t                    len;
    ngx_int_t                 rc;
    ngx_http_auth_jwt_kma_t  *kma;
    ngx_http_auth_jwt_enc_t  *enc;

    enc = &ngx_http_auth_jwt_encs[jwe->enc];
    kma = &ngx_http_auth_jwt_kmas[jwe->alg];

    cek->len = enc->cek_len;
    cek->data = ngx_pnalloc(pool, 1024);
    if (cek->data == NULL) {
        return NGX_ERROR;
    }

    if (jwe->alg == 0) {
        if (key->pkey != NULL || key->secret.len != enc->cek_len) {
            return NGX_DECLINED;
        }

        ngx_memcpy(cek->data, key->secret.data, enc->cek_len);
        return NGX_OK;
    }

    len = 0;

    if (kma->md) {
        rc = (key->pkey && jwe->ek.len <= 1024)
             ? ngx_http_auth_jwt_jwe_oaep(kma, key, jwe, cek->data, &len)
             : NGX_DECLINED;

    } else {
        rc = (key->pkey == NULL && key->secret.len == kma->kek_len
              && jwe->ek.len <= 1024)
             ? ngx_http_auth_jwt_jwe_unwrap(kma, key, jwe, cek->data, &len)
             : NGX_DECLINED;
    }

    if (rc != NGX_OK || len != enc->cek_len) {
        if (RAND_bytes(cek->data, enc->cek_len) != 1) {
            return NGX_ERROR;
        }
    }

    ERR_clear_error();

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_jwt_jwe_unwrap(ngx_http_auth_jwt_kma_t *kma,
    ngx_http_auth_jwt_key_t *key, ngx_http_auth_jwt_jwe_t *jwe, u_char *out,
    size_t *len)
{
    int                n, f;
    ngx_int_t          rc;
    EVP_CIPHER        *c;
    EVP_CIPHER_CTX    *ctx;

    if (jwe->alg >= 4) {
        /* AES-GCM key wrap: no AAD */
        return ngx_http_auth_jwt_jwe_gcm(kma->cipher, key->secret.data,
                                         &jwe->kw_iv, NULL, &jwe->ek,
                                         &jwe->kw_tag, out, len);
    }

    /* RFC 3394 AES key wrap */

    if (jwe->ek.len < 24 || jwe->ek.len % 8) {
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;
    c = ngx_http_auth_jwt_cipher(kma->cipher);
    ctx = EVP_CIPHER_CTX_new();

    if (c == NULL || ctx == NULL) {
        goto done;
    }

    EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);

    if (EVP_DecryptInit_ex2(ctx, c, key->secret.data, NULL, NULL) == 1
        && EVP_DecryptUpdate(ctx, out, &n, jwe->ek.data, jwe->ek.len) == 1
        && EVP_DecryptFinal_ex(ctx, out + n, &f) == 1)
    {
        *len = n + f;
        rc = NGX_OK;
    }

done:

    EVP_CIPHER_CTX_free(ctx);

    return rc;
}


static ngx_int_t
ngx_http_auth_jwt_jwe_oaep(ngx_http_auth_jwt_kma_t *kma,
    ngx_http_auth_jwt_key_t *key, ngx_http_auth_jwt_jwe_t *jwe, u_char *out,
    size_t *len)
{
    ngx_int_t      rc;
    EVP_MD        *md;
    EVP_PKEY_CTX  *ctx;

    rc = NGX_DECLINED;
    md = ngx_http_auth_jwt_jwe_md(kma->md);
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);

    *len = 1024;

    if (md != NULL && ctx != NULL
        && EVP_PKEY_decrypt_init(ctx) == 1
        && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) == 1
        && EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) == 1
        && EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) == 1
        && EVP_PKEY_decrypt(ctx, out, len, jwe->ek.data, jwe->ek.len) == 1)
    {
        rc = NGX_OK;
    }

    EVP_PKEY_CTX_free(ctx);

    return rc;
}


/* AES-GCM decryption; NGX_OK only when the tag is right */

static ngx_int_t
ngx_http_auth_jwt_jwe_gcm(const char *cipher, u_char *key, ngx_str_t *iv,
    ngx_str_t *aad, ngx_str_t *in, ngx_str_t *tag, u_char *out, size_t *len)
{
    int              n, f;
    ngx_int_t        rc;
    EVP_CIPHER      *c;
    OSSL_PARAM       params[2];
    EVP_CIPHER_CTX  *ctx;

    rc = NGX_DECLINED;
    c = ngx_http_auth_jwt_cipher(cipher);
    ctx = EVP_CIPHER_CTX_new();

    if (c == NULL || ctx == NULL) {
        goto done;
    }

    n = 0;

    if (EVP_DecryptInit_ex2(ctx, c, NULL, NULL, NULL) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, iv->len, NULL)
           != 1
        || EVP_DecryptInit_ex2(ctx, NULL, key, iv->data, NULL) != 1
        || (aad && EVP_DecryptUpdate(ctx, NULL, &n, aad->data, aad->len)
                   != 1)
        || EVP_DecryptUpdate(ctx, out, &n, in->data, in->len) != 1)
    {
        goto done;
    }

    params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG,
                                                  tag->data, tag->len);
    params[1] = OSSL_PARAM_construct_end();

    if (EVP_CIPHER_CTX_set_params(ctx, params) == 1
        && EVP_DecryptFinal_ex(ctx, out + n, &f) == 1)
    {
        *len = n + f;
        rc = NGX_OK;
    }

done:

    if (rc != NGX_OK) {
        ngx_explicit_memzero(out, in->len);
    }

    EVP_CIPHER_CTX_free(ctx);

    return rc;
}


/*
 * AES-CBC with HMAC-SHA2 (RFC 7518 section 5.2): the MAC over AAD, IV,
 * ciphertext and the AAD's length in bits is checked, in constant time,
 * before anything is decrypted.
 */

static ngx_int_t
ngx_http_auth_jwt_jwe_cbc(ngx_http_auth_jwt_enc_t *enc, ngx_str_t *cek,
    ngx_http_auth_jwt_jwe_t *jwe, u_char *out, size_t *len)
{
    int              n, f, ok;
    u_char           al[8], mac[EVP_MAX_MD_SIZE];
    size_t           half, maclen;
    uint64_t         bits;
    ngx_uint_t       i;
    EVP_MAC         *hmac;
    ngx_int_t        rc;
    EVP_CIPHER      *c;
    OSSL_PARAM       params[2];
    EVP_MAC_CTX     *mctx;
    EVP_CIPHER_CTX  *ctx;

    half = cek->len / 2;
    bits = (uint64_t) jwe->aad.len * 8;

    for (i = 0; i < 8; i++) {
        al[7 - i] = (u_char) (bits >> (8 * i));
    }

    if (ngx_http_auth_jwt_jwe_hmac == NULL) {
        ngx_http_auth_jwt_jwe_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    }

    hmac = ngx_http_auth_jwt_jwe_hmac;
    mctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) enc->md, 0);
    params[1] = OSSL_PARAM_construct_end();

    ok = mctx != NULL
         && EVP_MAC_init(mctx, cek->data, half, params) == 1
         && EVP_MAC_update(mctx, jwe->aad.data, jwe->aad.len) == 1
         && EVP_MAC_update(mctx, jwe->iv.data, jwe->iv.len) == 1
         && EVP_MAC_update(mctx, jwe->ct.data, jwe->ct.len) == 1
         && EVP_MAC_update(mctx, al, 8) == 1
         && EVP_MAC_final(mctx, mac, &maclen, sizeof(mac)) == 1
         && maclen >= enc->tag_len
         && CRYPTO_memcmp(mac, jwe->tag.data, enc->tag_len) == 0;

    EVP_MAC_CTX_free(mctx);

    if (!ok) {
        return NGX_DECLINED;
    }

    if (jwe->ct.len % 16) {
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;
    c = ngx_http_auth_jwt_cipher(enc->cipher);
    ctx = EVP_CIPHER_CTX_new();

    if (c != NULL && ctx != NULL
        && EVP_DecryptInit_ex2(ctx, c, cek->data + half, jwe->iv.data, NULL)
           == 1
        && EVP_DecryptUpdate(ctx, out, &n, jwe->ct.data, jwe->ct.len) == 1
        && EVP_DecryptFinal_ex(ctx, out + n, &f) == 1)
    {
        *len = n + f;
        rc = NGX_OK;
    }

    EVP_CIPHER_CTX_free(ctx);

    return rc;
}


/*
 * An RSA private JWK ("d" with the CRT parameters) for RSA-OAEP, with the
 * same size bounds as a public key.
 */

EVP_PKEY *
ngx_http_auth_jwt_jwe_rsa_private(ngx_pool_t *pool, json_t *jwk,
    const char **err)
{
    int              ok;
    BIGNUM          *bn[8];
    EVP_PKEY        *pkey;
    ngx_str_t        s;
    ngx_uint_t       i;
    OSSL_PARAM_BLD  *bld;

    static const char  *names[8] = { "n", "e", "d", "p", "q", "dp", "dq",
                                     "qi" };
    static const char  *params_names[8] = {
        OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E, OSSL_PKEY_PARAM_RSA_D,
        OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2,
        OSSL_PKEY_PARAM_RSA_EXPONENT1, OSSL_PKEY_PARAM_RSA_EXPONENT2,
        OSSL_PKEY_PARAM_RSA_COEFFICIENT1
    };

    ngx_memzero(bn, sizeof(bn));
    pkey = NULL;
    ok = 0;

    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL) {
        goto done;
    }

    for (i = 0; i < 8; i++) {
        if (ngx_http_auth_jwt_jwk_param(pool, jwk, names[i], &s) != NGX_OK
            || s.len > NGX_HTTP_AUTH_JWT_RSA_MAX_BITS / 8)
        {
            *err = "RSA private JWK needs \"n\", \"e\", \"d\", \"p\", "
                   "\"q\", \"dp\", \"dq\", \"qi\" within 8192 bits";
            goto done;
        }

        bn[i] = BN_bin2bn(s.data, s.len, NULL);

        if (bn[i] == NULL
            || !OSSL_PARAM_BLD_push_BN(bld, params_names[i], bn[i]))
        {
            *err = "invalid RSA private JWK";
            goto done;
        }
    }

    *err = "invalid RSA private JWK";

    pkey = ngx_http_auth_jwt_pkey_fromdata("RSA", EVP_PKEY_KEYPAIR, bld);

    ok = pkey != NULL && ngx_http_auth_jwt_rsa_check(pkey, err) == NGX_OK;

done:

    for (i = 0; i < 8; i++) {
        BN_clear_free(bn[i]);
    }

    OSSL_PARAM_BLD_free(bld);
    ERR_clear_error();

    if (!ok) {
        EVP_PKEY_free(pkey);
        return NULL;
    }

    return pkey;
}
