
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_MESHGATE_SHA256_H_INCLUDED_
#define _NGX_MESHGATE_SHA256_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * SHA-256 through OpenSSL's EVP interface (the SHA256_* functions are
 * deprecated in OpenSSL 3, and SHA256() fetches the algorithm by name on
 * every call): the algorithm is fetched once per process.  Private copies,
 * hidden symbols.
 */

#pragma GCC visibility push(hidden)


#define NGX_MESHGATE_SHA256_LEN  32


/*
 * The digest of the n strings in parts, one after the other.  NGX_OK, or
 * NGX_ERROR when OpenSSL fails (out of memory).
 */
ngx_int_t ngx_meshgate_sha256(ngx_str_t *parts, ngx_uint_t n,
    u_char *digest);


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_SHA256_H_INCLUDED_ */
