
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <openssl/evp.h>
#include "ngx_meshgate_sha256.h"


static ngx_int_t ngx_meshgate_sha256_init(void);
static void ngx_meshgate_sha256_cleanup(void *data);


/*
 * A process is single-threaded: one context serves every call.  Both are
 * freed with the cycle's pool, before nginx unloads the module (or they
 * would leak at each worker's exit).
 */

static EVP_MD_CTX  *ngx_meshgate_sha256_ctx;
static EVP_MD      *ngx_meshgate_sha256_md;


ngx_int_t
ngx_meshgate_sha256(ngx_str_t *parts, ngx_uint_t n, u_char *digest)
{
    ngx_uint_t  i;

    if (ngx_meshgate_sha256_ctx == NULL
        && ngx_meshgate_sha256_init() != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (EVP_DigestInit_ex(ngx_meshgate_sha256_ctx, ngx_meshgate_sha256_md,
                          NULL)
        != 1)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (EVP_DigestUpdate(ngx_meshgate_sha256_ctx, parts[i].data,
                             parts[i].len)
            != 1)
        {
            return NGX_ERROR;
        }
    }

    if (EVP_DigestFinal_ex(ngx_meshgate_sha256_ctx, digest, NULL) != 1) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_meshgate_sha256_init(void)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(ngx_cycle->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_meshgate_sha256_cleanup;

#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)
    ngx_meshgate_sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
#else
    ngx_meshgate_sha256_md = (EVP_MD *) EVP_sha256();
#endif

    ngx_meshgate_sha256_ctx = EVP_MD_CTX_new();

    if (ngx_meshgate_sha256_md == NULL || ngx_meshgate_sha256_ctx == NULL) {
        ngx_meshgate_sha256_cleanup(NULL);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_meshgate_sha256_cleanup(void *data)
{
    EVP_MD_CTX_free(ngx_meshgate_sha256_ctx);
    ngx_meshgate_sha256_ctx = NULL;

#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)
    EVP_MD_free(ngx_meshgate_sha256_md);
#endif
    ngx_meshgate_sha256_md = NULL;
}
