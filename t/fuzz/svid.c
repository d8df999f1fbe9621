
/*
 * Copyright (C) meshgate contributors
 */


/*
 * X.509-SVIDs (ngx_http_mesh_identity_svid.c): the SPIFFE ID and trust
 * domain of a peer's leaf certificate (CA and key-usage rules, the one
 * URI SAN).
 *
 * Input: a DER certificate.  Checked: an accepted certificate yields a
 * valid SPIFFE ID, and a trust domain inside it.
 *
 * max_len: 8192
 */


#include "ngx_fuzz.h"
#include "../../modules/mesh_identity/ngx_http_mesh_identity_svid.c"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    X509            *cert;
    size_t           td_len;
    ngx_str_t        id, td;
    ngx_pool_t      *pool;
    const char      *reason;
    const u_char    *p;

    ngx_fuzz_init();

    p = data;
    cert = d2i_X509(NULL, &p, size);

    if (cert == NULL) {
        return 0;
    }

    pool = ngx_create_pool(4096, ngx_fuzz_get_log());

    reason = NULL;

    if (ngx_http_mesh_identity_svid(cert, pool, &id, &td, &reason) == NGX_OK)
    {
        ngx_fuzz_assert(ngx_http_mesh_identity_check_id(id.data, id.len,
                                                        &td_len, 0)
                        == NULL, "accepted SVID with an invalid ID");
        ngx_fuzz_assert(td.data > id.data && td.len == td_len
                        && td.data + td.len <= id.data + id.len,
                        "trust domain outside the ID");

    } else {
        ngx_fuzz_assert(reason != NULL, "refused SVID without a reason");
    }

    X509_free(cert);
    ngx_destroy_pool(pool);

    return 0;
}
