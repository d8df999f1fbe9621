
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_mesh_identity.h"


/*
 * Trust bundles per trust domain (mesh_trust_domain).  A certificate
 * store that trusts the CAs of several trust domains would let the CA of
 * one issue identities of another; with bundles configured, an X.509-SVID
 * counts only if the root its chain was verified to is in the bundle of
 * its own trust domain.  The check is part of certificate verification:
 * in the verify callback of every server that verifies clients (the
 * verify result is kept in the TLS session, so a resumed session keeps
 * the verdict), and in the check of mesh_upstream_identity.
 */


static int ngx_http_mesh_identity_verify_callback(int ok,
    X509_STORE_CTX *store);
static STACK_OF(X509) *ngx_http_mesh_identity_load_cas(ngx_conf_t *cf,
    ngx_str_t *file);
static void ngx_http_mesh_identity_free_cas(void *data);


static int  ngx_http_mesh_identity_ctx_index = -1;


char *
ngx_http_mesh_identity_trust_domain(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mesh_identity_main_conf_t *mcf = conf;

    u_char                           *p;
    size_t                            td_len;
    ngx_str_t                        *value, id;
    ngx_uint_t                        i;
    const char                       *reason;
    ngx_http_mesh_identity_bundle_t  *b;

    value = cf->args->elts;

    /* a trust domain is what a SPIFFE ID holds between "//" and "/" */

    id.len = sizeof("spiffe://") - 1 + value[1].len;
    id.data = ngx_pnalloc(cf->pool, id.len);
    if (id.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(id.data, "spiffe://", sizeof("spiffe://") - 1);
    ngx_memcpy(p, value[1].data, value[1].len);

    reason = ngx_http_mesh_identity_check_id(id.data, id.len, &td_len, 1);

    if (reason != NULL || td_len != value[1].len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid trust domain \"%V\": %s", &value[1],
                           reason ? reason : "a path follows it");
        return NGX_CONF_ERROR;
    }

    if (mcf->bundles == NULL) {
        mcf->bundles = ngx_array_create(cf->pool, 2,
                                      sizeof(ngx_http_mesh_identity_bundle_t));
        if (mcf->bundles == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    b = mcf->bundles->elts;

    for (i = 0; i < mcf->bundles->nelts; i++) {
        if (b[i].td.len == value[1].len
            && ngx_strncmp(b[i].td.data, value[1].data, value[1].len) == 0)
        {
            return "is duplicate";
        }
    }

    b = ngx_array_push(mcf->bundles);
    if (b == NULL) {
        return NGX_CONF_ERROR;
    }

    b->td = value[1];
    b->cas = ngx_http_mesh_identity_load_cas(cf, &value[2]);

    if (b->cas == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the CA certificates of a PEM file: at least one, all of them CAs */

static STACK_OF(X509) *
ngx_http_mesh_identity_load_cas(ngx_conf_t *cf, ngx_str_t *file)
{
    BIO                 *bio;
    X509                *x;
    STACK_OF(X509)      *cas;
    ngx_pool_cleanup_t  *cln;

    if (ngx_conf_full_name(cf->cycle, file, 1) != NGX_OK) {
        return NULL;
    }

    cas = sk_X509_new_null();
    if (cas == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        sk_X509_free(cas);
        return NULL;
    }

    cln->handler = ngx_http_mesh_identity_free_cas;
    cln->data = cas;

    bio = BIO_new_file((char *) file->data, "r");
    if (bio == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot read the trust bundle \"%s\"",
                           file->data);
        ERR_clear_error();
        return NULL;
    }

    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {

        if (X509_check_ca(x) == 0 || sk_X509_push(cas, x) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "the trust bundle \"%s\" holds a "
                               "certificate that is no CA", file->data);
            X509_free(x);
            BIO_free(bio);
            return NULL;
        }
    }

    BIO_free(bio);
    ERR_clear_error();      /* the end of the file */

    if (sk_X509_num(cas) == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no certificate in the trust bundle \"%s\"",
                           file->data);
        return NULL;
    }

    return cas;
}


static void
ngx_http_mesh_identity_free_cas(void *data)
{
    STACK_OF(X509)  *cas = data;

    sk_X509_pop_free(cas, X509_free);
}


/*
 * Every server that verifies client certificates gets our verify
 * callback (nginx's own only logs in debug builds and accepts; so does
 * ours, apart from the check) and the bundles in its SSL_CTX.
 */

ngx_int_t
ngx_http_mesh_identity_bundle_servers(ngx_conf_t *cf,
    ngx_http_mesh_identity_main_conf_t *mcf)
{
    ngx_uint_t                   s;
    ngx_http_ssl_srv_conf_t     *sscf;
    ngx_http_core_srv_conf_t   **cscfp;
    ngx_http_core_main_conf_t   *cmcf;

    if (mcf->bundles == NULL) {
        return NGX_OK;
    }

    if (ngx_http_mesh_identity_ctx_index == -1) {
        ngx_http_mesh_identity_ctx_index = SSL_CTX_get_ex_new_index(0, NULL,
                                                                    NULL,
                                                                    NULL,
                                                                    NULL);
        if (ngx_http_mesh_identity_ctx_index == -1) {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "SSL_CTX_get_ex_new_index() failed");
            return NGX_ERROR;
        }
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    cscfp = cmcf->servers.elts;

    for (s = 0; s < cmcf->servers.nelts; s++) {
        sscf = cscfp[s]->ctx->srv_conf[ngx_http_ssl_module.ctx_index];

        if (sscf->ssl.ctx == NULL || !sscf->verify) {
            continue;
        }

        if (SSL_CTX_set_ex_data(sscf->ssl.ctx,
                                ngx_http_mesh_identity_ctx_index, mcf)
            == 0)
        {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "SSL_CTX_set_ex_data() failed");
            return NGX_ERROR;
        }

        SSL_CTX_set_verify(sscf->ssl.ctx,
                           SSL_CTX_get_verify_mode(sscf->ssl.ctx),
                           ngx_http_mesh_identity_verify_callback);
    }

    return NGX_OK;
}


static int
ngx_http_mesh_identity_verify_callback(int ok, X509_STORE_CTX *store)
{
    SSL                                 *ssl_conn;
    ngx_connection_t                    *c;
    ngx_http_mesh_identity_main_conf_t  *mcf;

    if (!ok || X509_STORE_CTX_get_error_depth(store) != 0) {
        return 1;
    }

    ssl_conn = X509_STORE_CTX_get_ex_data(store,
                                        SSL_get_ex_data_X509_STORE_CTX_idx());
    c = ngx_ssl_get_connection(ssl_conn);
    mcf = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl_conn),
                              ngx_http_mesh_identity_ctx_index);

    if (c == NULL || mcf == NULL) {
        return 1;
    }

    if (ngx_http_mesh_identity_bound(mcf, store, c->pool, c->log) != NGX_OK) {
        X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    }

    return 1;
}


/*
 * NGX_OK when no bundles are configured, when the leaf of the verified
 * chain is no X.509-SVID (it has no identity to check), or when the root
 * of the chain is in the bundle of the leaf's trust domain; else logs why
 * and returns NGX_DECLINED (NGX_ERROR without memory).
 */

ngx_int_t
ngx_http_mesh_identity_bound(ngx_http_mesh_identity_main_conf_t *mcf,
    X509_STORE_CTX *store, ngx_pool_t *pool, ngx_log_t *log)
{
    int                               j;
    X509                             *leaf, *root;
    ngx_int_t                         rc;
    ngx_str_t                         id, td;
    ngx_uint_t                        i;
    const char                       *reason;
    STACK_OF(X509)                   *chain;
    ngx_http_mesh_identity_bundle_t  *b;

    if (mcf->bundles == NULL) {
        return NGX_OK;
    }

    chain = X509_STORE_CTX_get0_chain(store);

    if (chain == NULL || sk_X509_num(chain) == 0) {
        return NGX_DECLINED;
    }

    leaf = sk_X509_value(chain, 0);
    root = sk_X509_value(chain, sk_X509_num(chain) - 1);

    rc = ngx_http_mesh_identity_svid(leaf, pool, &id, &td, &reason);

    if (rc != NGX_OK) {
        /* no identity to check (NGX_DECLINED), or no memory */
        return (rc == NGX_DECLINED) ? NGX_OK : NGX_ERROR;
    }

    b = mcf->bundles->elts;

    for (i = 0; i < mcf->bundles->nelts; i++) {
        if (b[i].td.len == td.len
            && ngx_strncmp(b[i].td.data, td.data, td.len) == 0)
        {
            break;
        }
    }

    if (i == mcf->bundles->nelts) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "mesh identity: \"%V\" is of a trust domain without "
                      "a bundle", &id);
        return NGX_DECLINED;
    }

    for (j = 0; j < sk_X509_num(b[i].cas); j++) {
        if (X509_cmp(sk_X509_value(b[i].cas, j), root) == 0) {
            return NGX_OK;
        }
    }

    ngx_log_error(NGX_LOG_INFO, log, 0,
                  "mesh identity: \"%V\" was issued under a CA outside the "
                  "bundle of its trust domain", &id);

    return NGX_DECLINED;
}
