
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <openssl/evp.h>
#include "ngx_meshgate_sha256.h"


/* a process is single-threaded: one context serves every call */

static EVP_MD_CTX    *ngx_meshgate_sha256_ctx;
static const EVP_MD  *ngx_meshgate_sha256_md;


ngx_int_t
ngx_meshgate_sha256(ngx_str_t *parts, ngx_uint_t n, u_char *digest)
{
    ngx_uint_t  i;

    if (ngx_meshgate_sha256_md == NULL) {
#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)
        ngx_meshgate_sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
#else
        ngx_meshgate_sha256_md = EVP_sha256();
#endif
        if (ngx_meshgate_sha256_md == NULL) {
            return NGX_ERROR;
        }
    }

    if (ngx_meshgate_sha256_ctx == NULL) {
        ngx_meshgate_sha256_ctx = EVP_MD_CTX_new();
        if (ngx_meshgate_sha256_ctx == NULL) {
            return NGX_ERROR;
        }
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
