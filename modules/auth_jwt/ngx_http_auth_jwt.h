
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_HTTP_AUTH_JWT_H_INCLUDED_
#define _NGX_HTTP_AUTH_JWT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "ngx_meshgate_cache.h"
#include "ngx_meshgate_json.h"
#include "ngx_meshgate_sha256.h"
#include "ngx_meshgate_waiter.h"


extern ngx_module_t  ngx_http_auth_jwt_module;


#pragma GCC visibility push(hidden)


#define NGX_HTTP_AUTH_JWT_MAX_TOKEN      16384
#define NGX_HTTP_AUTH_JWT_KID_REFETCH    30
#define NGX_HTTP_AUTH_JWT_RETRY          1
#define NGX_HTTP_AUTH_JWT_NAME_RETRY     10
#define NGX_HTTP_AUTH_JWT_FP_LEN         NGX_MESHGATE_SHA256_LEN
#define NGX_HTTP_AUTH_JWT_NALGS          13
#define NGX_HTTP_AUTH_JWT_RSA_MAX_BITS   8192
#define NGX_HTTP_AUTH_JWT_KEYS_MAX       64

/* algorithm families */
#define NGX_HTTP_AUTH_JWT_HS             1
#define NGX_HTTP_AUTH_JWT_RS             2
#define NGX_HTTP_AUTH_JWT_PS             3
#define NGX_HTTP_AUTH_JWT_ES             4
#define NGX_HTTP_AUTH_JWT_ED             5

#define NGX_HTTP_AUTH_JWT_ALGS_HS        0x0007
#define NGX_HTTP_AUTH_JWT_ALGS_RS        0x0038
#define NGX_HTTP_AUTH_JWT_ALGS_PS        0x01c0
#define NGX_HTTP_AUTH_JWT_ALG_ES256      0x0200
#define NGX_HTTP_AUTH_JWT_ALG_ES384      0x0400
#define NGX_HTTP_AUTH_JWT_ALG_ES512      0x0800
#define NGX_HTTP_AUTH_JWT_ALG_EDDSA      0x1000

/* JWE key management algorithms, bits of ngx_http_auth_jwt_key_t.jwe */
#define NGX_HTTP_AUTH_JWT_JWE_DIR        0x0001
#define NGX_HTTP_AUTH_JWT_JWE_OAEP       0x0780

/* auth_jwt_type */
#define NGX_HTTP_AUTH_JWT_SIGNED         0
#define NGX_HTTP_AUTH_JWT_ENCRYPTED      1
#define NGX_HTTP_AUTH_JWT_NESTED         2


/* outcomes, in the order of ngx_http_auth_jwt_results[] */
typedef enum {
    NGX_HTTP_AUTH_JWT_NONE = 0,
    NGX_HTTP_AUTH_JWT_OK,
    NGX_HTTP_AUTH_JWT_MISSING,
    NGX_HTTP_AUTH_JWT_MALFORMED,
    NGX_HTTP_AUTH_JWT_BAD_ALG,
    NGX_HTTP_AUTH_JWT_BAD_SIGNATURE,
    NGX_HTTP_AUTH_JWT_NO_KEY,
    NGX_HTTP_AUTH_JWT_EXPIRED,
    NGX_HTTP_AUTH_JWT_NOT_YET_VALID,
    NGX_HTTP_AUTH_JWT_BAD_ISSUER,
    NGX_HTTP_AUTH_JWT_BAD_AUDIENCE,
    NGX_HTTP_AUTH_JWT_INSUFFICIENT_SCOPE,
    NGX_HTTP_AUTH_JWT_REQUIRE_FAILED,
    NGX_HTTP_AUTH_JWT_KEY_UNAVAILABLE,
    NGX_HTTP_AUTH_JWT_ERROR
} ngx_http_auth_jwt_result_e;


typedef struct {
    ngx_str_t                       name;
    ngx_uint_t                      family;
    const char                     *md;
    size_t                          size;
} ngx_http_auth_jwt_alg_t;


typedef struct {
    ngx_str_t                       kid;
    ngx_uint_t                      algs;
    EVP_PKEY                       *pkey;
    EVP_PKEY_CTX                   *vctx[NGX_HTTP_AUTH_JWT_NALGS];
    EVP_MAC_CTX                    *mac[3];   /* HS256, HS384, HS512 */
    ngx_str_t                       secret;
    ngx_uint_t                      jwe;      /* decryption algorithms */
    u_char                          fp[NGX_HTTP_AUTH_JWT_FP_LEN];
} ngx_http_auth_jwt_key_t;


/* a key file name or JWKS URI with variables */
typedef struct {
    ngx_array_t                    *parts;
    ngx_uint_t                      uri;
} ngx_http_auth_jwt_template_t;


typedef struct {
    ngx_array_t                     keys;     /* ngx_http_auth_jwt_key_t */
    ngx_pool_t                     *pool;
    ngx_uint_t                      own;      /* pool is the set's own */
    ngx_uint_t                      count;    /* keys in the set, usable
                                                 or not */
    ngx_http_auth_jwt_template_t   *tmpl;     /* a file named at run time:
                                                 no keys here */
} ngx_http_auth_jwt_keyset_t;


/*
 * a JWKS fetched by subrequest: the URI in one server block (a server's
 * own locations answer it); its fields after server are per worker
 */
typedef struct {
    ngx_str_t                       uri;
    void                           *server;   /* its core srv conf */
    ngx_http_auth_jwt_keyset_t     *keyset;
    time_t                          loaded;
    time_t                          refresh_at;
    time_t                          failed_at;
    time_t                          kid_refetch_at;
    u_char                          digest[NGX_MESHGATE_SHA256_LEN];
    ngx_http_request_t             *owner;
    ngx_queue_t                     waiters;
    unsigned                        fetching:1;
    unsigned                        force:1;
    unsigned                        background:1;
    unsigned                        has_digest:1;
    unsigned                        digest_ok:1;
    unsigned                        named:1;  /* made at run time */
    ngx_uint_t                      keys_max;
    ngx_http_auth_jwt_template_t   *tmpl;     /* a URI made at run time:
                                                 never fetched itself */
} ngx_http_auth_jwt_source_t;


/* a decoded compact JWS */
typedef struct {
    json_t                         *header;
    json_t                         *payload;
    ngx_str_t                       header_text;
    ngx_str_t                       payload_text;
    ngx_str_t                       input;    /* header.payload, as sent */
    ngx_str_t                       sig;
    ngx_str_t                       kid;
    ngx_uint_t                      alg;      /* index in the alg table */
    unsigned                        has_kid:1;
} ngx_http_auth_jwt_token_t;


/* a decoded compact JWE */
typedef struct {
    json_t                         *header;
    ngx_str_t                       header_text;
    ngx_str_t                       aad;      /* the header as sent */
    ngx_str_t                       ek;
    ngx_str_t                       iv;
    ngx_str_t                       ct;
    ngx_str_t                       tag;
    ngx_str_t                       kw_iv;    /* A*GCMKW */
    ngx_str_t                       kw_tag;
    ngx_str_t                       kid;
    ngx_uint_t                      alg;      /* key management */
    ngx_uint_t                      enc;
    ngx_uint_t                      rsa_tries;  /* private-key operations */
    unsigned                        has_kid:1;
} ngx_http_auth_jwt_jwe_t;


#define NGX_HTTP_AUTH_JWT_WAIT          60
#define NGX_HTTP_AUTH_JWT_MAX_TRIES     10
#define NGX_HTTP_AUTH_JWT_CACHE_NOEXP   3600


typedef struct {
    ngx_array_t                    *values;   /* complex values */
    ngx_uint_t                      status;
} ngx_http_auth_jwt_require_t;


typedef struct {
    ngx_str_t                       name;
    ngx_http_auth_jwt_keyset_t     *keyset;
    ngx_str_t                       conf_file;
    ngx_uint_t                      line;
} ngx_http_auth_jwt_file_t;


typedef struct {
    ngx_meshgate_cache_t           *cache;
    ngx_array_t                     sources;  /* source pointers */
    ngx_array_t                     files;    /* ngx_http_auth_jwt_file_t */
    ngx_uint_t                      keys_max;
} ngx_http_auth_jwt_main_conf_t;


typedef struct {
    ngx_flag_t                      enable;
    ngx_http_complex_value_t       *realm;
    ngx_http_complex_value_t       *token;
    ngx_array_t                    *key_files;  /* keyset pointers */
    ngx_array_t                    *sources;    /* source pointers */
    ngx_array_t                    *requires;
    ngx_array_t                    *issuers;    /* ngx_str_t */
    ngx_array_t                    *audiences;  /* ngx_str_t */
    ngx_array_t                    *scopes;     /* ngx_str_t */
    ngx_uint_t                      scope_any;
    time_t                          key_cache;
    time_t                          leeway;
    ngx_uint_t                      type;
    ngx_str_t                       file;
    ngx_uint_t                      line;
} ngx_http_auth_jwt_loc_conf_t;


typedef struct {
    ngx_array_t                     names;    /* ngx_str_t */
    ngx_str_t                       var;      /* its name, for the log */
    ngx_uint_t                      header;
} ngx_http_auth_jwt_var_t;


/* the name a run-time key source got in this request */

typedef struct {
    ngx_http_auth_jwt_template_t   *tmpl;
    ngx_str_t                       name;
} ngx_http_auth_jwt_named_t;


typedef struct {
    double                          exp;
    double                          nbf;
    unsigned                        has_exp:1;
    unsigned                        has_nbf:1;
} ngx_http_auth_jwt_times_t;


typedef struct {
    ngx_http_request_t             *request;
    ngx_http_auth_jwt_result_e      verdict;
    ngx_http_auth_jwt_result_e      result;
    ngx_http_auth_jwt_result_e      pre;      /* what is known without
                                                 keys */
    const char                     *pre_err;
    ngx_str_t                       token;
    ngx_http_auth_jwt_token_t       jwt;
    ngx_http_auth_jwt_jwe_t         jwe;
    json_t                         *outer;    /* a nested token's JWE
                                                 header */
    ngx_str_t                       inner;    /* a nested token's JWS */
    json_t                         *header;
    json_t                         *payload;
    ngx_str_t                       header_text;
    ngx_str_t                       payload_text;
    const char                     *err;
    ngx_array_t                    *names;    /* ngx_http_auth_jwt_named_t */
    ngx_meshgate_waiter_t           waiter;   /* in a source's queue */
    time_t                          wait_until;
    ngx_int_t                       status;
    unsigned                        verified:1;
    unsigned                        fetched:1;
    unsigned                        want_fresh:1;
    unsigned                        refetched:1;
    unsigned                        parsed:1;
    unsigned                        done:1;
} ngx_http_auth_jwt_ctx_t;



extern ngx_http_auth_jwt_alg_t  ngx_http_auth_jwt_algs[];
extern ngx_str_t  ngx_http_auth_jwt_result_names[];


ngx_int_t ngx_http_auth_jwt_decode_b64url(ngx_str_t *src, ngx_str_t *dst,
    ngx_pool_t *pool);
ngx_http_auth_jwt_keyset_t *ngx_http_auth_jwt_keyset_create(ngx_pool_t *pool,
    ngx_log_t *log);
void ngx_http_auth_jwt_keyset_free(ngx_http_auth_jwt_keyset_t *ks);
ngx_int_t ngx_http_auth_jwt_keyset_load(ngx_http_auth_jwt_keyset_t *ks,
    u_char *data, size_t len, ngx_uint_t max, ngx_log_t *log,
    const char **err);
ngx_http_auth_jwt_result_e ngx_http_auth_jwt_parse(ngx_pool_t *pool,
    ngx_str_t *token, ngx_http_auth_jwt_token_t *jwt, const char **err);
ngx_int_t ngx_http_auth_jwt_verify(ngx_http_auth_jwt_key_t *key,
    ngx_http_auth_jwt_token_t *jwt);
ngx_int_t ngx_http_auth_jwt_json_object(ngx_str_t *text, json_t **out);
ngx_int_t ngx_http_auth_jwt_kid(json_t *header, ngx_str_t *kid,
    const char **err);
ngx_int_t ngx_http_auth_jwt_alg_index(const char *name);
void ngx_http_auth_jwt_md_init(void);
void ngx_http_auth_jwt_md_free(void);
ngx_int_t ngx_http_auth_jwt_jwk_param(ngx_pool_t *pool, json_t *jwk,
    const char *name, ngx_str_t *out);
ngx_int_t ngx_http_auth_jwt_rsa_check(EVP_PKEY *pkey, const char **err);
EVP_PKEY *ngx_http_auth_jwt_pkey_fromdata(const char *type, int selection,
    OSSL_PARAM_BLD *bld);

ngx_int_t ngx_http_auth_jwt_jwe_alg(const char *name);
ngx_int_t ngx_http_auth_jwt_jwe_key_alg(const char *name);
void ngx_http_auth_jwt_jwe_free(void);
ngx_uint_t ngx_http_auth_jwt_jwe_oct(size_t len);
ngx_http_auth_jwt_result_e ngx_http_auth_jwt_jwe_parse(ngx_pool_t *pool,
    ngx_str_t *token, ngx_http_auth_jwt_jwe_t *jwe, const char **err);
ngx_int_t ngx_http_auth_jwt_jwe_decrypt(ngx_pool_t *pool,
    ngx_http_auth_jwt_key_t *key, ngx_http_auth_jwt_jwe_t *jwe,
    ngx_str_t *out);
EVP_PKEY *ngx_http_auth_jwt_jwe_rsa_private(ngx_pool_t *pool, json_t *jwk,
    const char **err);

ngx_int_t ngx_http_auth_jwt_fetch(ngx_http_request_t *r,
    ngx_http_auth_jwt_source_t *src, ngx_uint_t background);
void ngx_http_auth_jwt_fetch_abort(ngx_http_request_t *r,
    ngx_http_auth_jwt_source_t *src);

ngx_http_auth_jwt_template_t *ngx_http_auth_jwt_template(ngx_conf_t *cf,
    ngx_str_t *value, ngx_uint_t uri);
ngx_int_t ngx_http_auth_jwt_template_value(ngx_http_request_t *r,
    ngx_http_auth_jwt_template_t *t, ngx_str_t *out);
ngx_http_auth_jwt_keyset_t *ngx_http_auth_jwt_file_keyset(
    ngx_http_request_t *r, ngx_str_t *path, ngx_uint_t max);
ngx_http_auth_jwt_source_t *ngx_http_auth_jwt_uri_source(
    ngx_http_request_t *r, ngx_str_t *uri, ngx_uint_t max);
void ngx_http_auth_jwt_var_free(void);

ngx_int_t ngx_http_auth_jwt_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_auth_jwt_keys(ngx_http_request_t *r,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_loc_conf_t *jlcf);
ngx_uint_t ngx_http_auth_jwt_kid_refetch(ngx_http_auth_jwt_ctx_t *ctx,
    ngx_http_auth_jwt_loc_conf_t *jlcf);
ngx_http_auth_jwt_ctx_t *ngx_http_auth_jwt_get_ctx(
    ngx_http_request_t *r);
void ngx_http_auth_jwt_ctx_cleanup(void *data);
void ngx_http_auth_jwt_check(ngx_http_request_t *r,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_loc_conf_t *jlcf,
    ngx_uint_t final);
ngx_int_t ngx_http_auth_jwt_set(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, ngx_uint_t i,
    ngx_http_auth_jwt_keyset_t **out);
ngx_int_t ngx_http_auth_jwt_name(ngx_http_request_t *r,
    ngx_http_auth_jwt_template_t *tmpl, ngx_str_t *name);
ngx_http_auth_jwt_source_t *ngx_http_auth_jwt_resolve(
    ngx_http_request_t *r, ngx_http_auth_jwt_source_t *src);
json_t *ngx_http_auth_jwt_part(ngx_http_auth_jwt_ctx_t *ctx,
    ngx_uint_t header);
ngx_http_auth_jwt_key_t *ngx_http_auth_jwt_find_fp(ngx_http_request_t *r,
    ngx_http_auth_jwt_loc_conf_t *jlcf, u_char *fp, ngx_uint_t alg);
ngx_int_t ngx_http_auth_jwt_cache_get(ngx_http_request_t *r,
    ngx_http_auth_jwt_ctx_t *ctx, ngx_http_auth_jwt_loc_conf_t *jlcf,
    ngx_str_t *key, ngx_http_auth_jwt_times_t *t);
void ngx_http_auth_jwt_cache_set(ngx_http_request_t *r,
    ngx_str_t *key, ngx_http_auth_jwt_token_t *jwt, u_char *fp,
    ngx_http_auth_jwt_times_t *t);
ngx_int_t ngx_http_auth_jwt_set_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
ngx_int_t ngx_http_auth_jwt_add_variables(ngx_conf_t *cf);


#pragma GCC visibility pop


#endif /* _NGX_HTTP_AUTH_JWT_H_INCLUDED_ */
