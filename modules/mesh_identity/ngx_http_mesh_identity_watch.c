
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_mesh_identity.h"


/*
 * mesh_certificate_watch: every worker stats the certificate, key and CA
 * files of the SSL contexts it uses, from a timer, and loads a changed
 * file into its own copy of the SSL_CTX.  New handshakes use it; the
 * SSL objects of existing connections keep their copies.  A file that
 * cannot be loaded (half written, key not matching) is refused and the
 * old one stays.
 */


static ngx_uint_t ngx_http_mesh_identity_registered(
    ngx_http_mesh_identity_main_conf_t *mcf, ngx_ssl_t *ssl);
static ngx_int_t ngx_http_mesh_identity_add_pair(ngx_conf_t *cf,
    ngx_http_mesh_identity_main_conf_t *mcf, ngx_ssl_t *ssl,
    ngx_str_t *cert, ngx_str_t *key);
static ngx_int_t ngx_http_mesh_identity_add_store(ngx_conf_t *cf,
    ngx_http_mesh_identity_main_conf_t *mcf, ngx_ssl_t *ssl,
    ngx_str_t *client_ca, ngx_str_t *trusted, ngx_str_t *crl);
static ngx_int_t ngx_http_mesh_identity_file(ngx_conf_t *cf,
    ngx_http_mesh_identity_main_conf_t *mcf, ngx_str_t *name,
    ngx_http_mesh_identity_file_t **file);
static ngx_str_t *ngx_http_mesh_identity_proxy_str(void *plcf, char *name);
static void ngx_http_mesh_identity_watch_handler(ngx_event_t *ev);
static ngx_uint_t ngx_http_mesh_identity_changed(ngx_log_t *log,
    ngx_http_mesh_identity_file_t *file);
static void ngx_http_mesh_identity_load_pair(ngx_log_t *log,
    ngx_http_mesh_identity_pair_t *pair);
static X509 *ngx_http_mesh_identity_read_chain(ngx_log_t *log, char *name,
    STACK_OF(X509) **chain);
static void ngx_http_mesh_identity_load_store(ngx_log_t *log,
    ngx_http_mesh_identity_store_t *st);
static ngx_int_t ngx_http_mesh_identity_session_context(ngx_log_t *log,
    SSL_CTX *ctx);
static int ngx_http_mesh_identity_no_password(char *buf, int size, int rwflag,
    void *userdata);


ngx_int_t
ngx_http_mesh_identity_watch_server(ngx_conf_t *cf,
    ngx_http_mesh_identity_main_conf_t *mcf, ngx_http_ssl_srv_conf_t *sscf)
{
    ngx_str_t   *certs, *keys, none;
    ngx_uint_t   i;

    if (sscf->ssl.ctx == NULL
        || ngx_http_mesh_identity_registered(mcf, &sscf->ssl))
    {
        return NGX_OK;
    }

    /* certificates with variables are loaded per handshake anyway */

    if (sscf->certificates && sscf->certificate_values == NULL) {
        certs = sscf->certificates->elts;
        keys = sscf->certificate_keys->elts;

        for (i = 0; i < sscf->certificates->nelts; i++) {
            if (ngx_http_mesh_identity_add_pair(cf, mcf, &sscf->ssl,
                                                &certs[i], &keys[i])
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    ngx_str_null(&none);

    return ngx_http_mesh_identity_add_store(cf, mcf, &sscf->ssl,
                                  sscf->verify ? &sscf->client_certificate
                                               : &none,
                                  &sscf->trusted_certificate, &sscf->crl);
}


ngx_int_t
ngx_http_mesh_identity_watch_proxy(ngx_conf_t *cf,
    ngx_http_mesh_identity_main_conf_t *mcf, void *plcf)
{
    ngx_http_upstream_conf_t *ucf = plcf;

    ngx_str_t  *trusted, *crl, none;

    if (ngx_http_mesh_identity_registered(mcf, ucf->ssl)) {
        return NGX_OK;
    }

    if (ucf->ssl_certificate
        && ucf->ssl_certificate->lengths == NULL
        && ucf->ssl_certificate_key
        && ucf->ssl_certificate_key->lengths == NULL)
    {
        if (ngx_http_mesh_identity_add_pair(cf, mcf, ucf->ssl,
                                            &ucf->ssl_certificate->value,
                                            &ucf->ssl_certificate_key->value)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (!ucf->ssl_verify) {
        return NGX_OK;
    }

    /* the proxy's private fields, found through its directive table */

    trusted = ngx_http_mesh_identity_proxy_str(plcf,
                                               "proxy_ssl_trusted_certificate");
    crl = ngx_http_mesh_identity_proxy_str(plcf, "proxy_ssl_crl");

    if (trusted == NULL || crl == NULL) {
        ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                      "mesh_certificate_watch cannot find the proxy's "
                      "trusted certificates, they are not watched");
        return NGX_OK;
    }

    ngx_str_null(&none);

    return ngx_http_mesh_identity_add_store(cf, mcf, ucf->ssl, &none,
                                            trusted, crl);
}


static ngx_str_t *
ngx_http_mesh_identity_proxy_str(void *plcf, char *name)
{
    ngx_command_t  *cmd;

    for (cmd = ngx_http_proxy_module.commands; cmd->name.len; cmd++) {
        if (ngx_strcmp(cmd->name.data, name) == 0
            && cmd->set == ngx_conf_set_str_slot
            && cmd->conf == NGX_HTTP_LOC_CONF_OFFSET)
        {
            return (ngx_str_t *) ((u_char *) plcf + cmd->offset);
        }
    }

    return NULL;
}


static ngx_uint_t
ngx_http_mesh_identity_registered(ngx_http_mesh_identity_main_conf_t *mcf,
    ngx_ssl_t *ssl)
{
    ngx_uint_t                       i;
    ngx_http_mesh_identity_pair_t   *pair;
    ngx_http_mesh_identity_store_t  *st;

    pair = mcf->pairs.elts;

    for (i = 0; i < mcf->pairs.nelts; i++) {
        if (pair[i].ssl == ssl) {
            return 1;
        }
    }

    st = mcf->stores.elts;

    for (i = 0; i < mcf->stores.nelts; i++) {
        if (st[i].ssl == ssl) {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_http_mesh_identity_add_pair(ngx_conf_t *cf,
    ngx_http_mesh_identity_main_conf_t *mcf, ngx_ssl_t *ssl,
    ngx_str_t *cert, ngx_str_t *key)
{
    ngx_http_mesh_identity_pair_t  *pair;

    if (ngx_strncmp(cert->data, "data:", 5) == 0
        || ngx_strncmp(key->data, "data:", 5) == 0
        || ngx_strncmp(key->data, "engine:", 7) == 0)
    {
        return NGX_OK;
    }

    pair = ngx_array_push(&mcf->pairs);
    if (pair == NULL) {
        return NGX_ERROR;
    }

    pair->ssl = ssl;

    if (ngx_http_mesh_identity_file(cf, mcf, cert, &pair->cert) != NGX_OK
        || ngx_http_mesh_identity_file(cf, mcf, key, &pair->key) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_mesh_identity_add_store(ngx_conf_t *cf,
    ngx_http_mesh_identity_main_conf_t *mcf, ngx_ssl_t *ssl,
    ngx_str_t *client_ca, ngx_str_t *trusted, ngx_str_t *crl)
{
    ngx_http_mesh_identity_store_t  *st;

    if (client_ca->len == 0 && trusted->len == 0) {
        return NGX_OK;
    }

    st = ngx_array_push(&mcf->stores);
    if (st == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(st, sizeof(ngx_http_mesh_identity_store_t));
    st->ssl = ssl;

    if (ngx_http_mesh_identity_file(cf, mcf, client_ca,
                             &st->files[NGX_HTTP_MESH_IDENTITY_CLIENT_CA])
        != NGX_OK
        || ngx_http_mesh_identity_file(cf, mcf, trusted,
                             &st->files[NGX_HTTP_MESH_IDENTITY_TRUSTED])
           != NGX_OK
        || ngx_http_mesh_identity_file(cf, mcf, crl,
                             &st->files[NGX_HTTP_MESH_IDENTITY_CRL])
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the watched file of that name, shared; NULL for an empty name */

static ngx_int_t
ngx_http_mesh_identity_file(ngx_conf_t *cf,
    ngx_http_mesh_identity_main_conf_t *mcf, ngx_str_t *name,
    ngx_http_mesh_identity_file_t **file)
{
    ngx_str_t                       full;
    ngx_uint_t                      i;
    ngx_list_part_t                *part;
    ngx_http_mesh_identity_file_t  *f;

    *file = NULL;

    if (name->len == 0) {
        return NGX_OK;
    }

    full = *name;

    if (ngx_conf_full_name(cf->cycle, &full, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    part = &mcf->files.part;
    f = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            f = part->elts;
            i = 0;
        }

        if (f[i].name.len == full.len
            && ngx_strncmp(f[i].name.data, full.data, full.len) == 0)
        {
            *file = &f[i];
            return NGX_OK;
        }
    }

    f = ngx_list_push(&mcf->files);
    if (f == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(f, sizeof(ngx_http_mesh_identity_file_t));

    f->name.data = ngx_pnalloc(cf->pool, full.len + 1);
    if (f->name.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(f->name.data, full.data, full.len);
    f->name.data[full.len] = '\0';
    f->name.len = full.len;

    /* the state of the file as nginx has just loaded it */

    (void) ngx_http_mesh_identity_changed(cf->log, f);

    *file = f;

    return NGX_OK;
}


ngx_int_t
ngx_http_mesh_identity_watch_start(ngx_cycle_t *cycle,
    ngx_http_mesh_identity_main_conf_t *mcf)
{
    ngx_event_t  *ev;

    if (mcf->pairs.nelts == 0 && mcf->stores.nelts == 0) {
        return NGX_OK;
    }

    ev = &mcf->watch_event;

    ev->handler = ngx_http_mesh_identity_watch_handler;
    ev->data = mcf;
    ev->log = cycle->log;
    ev->cancelable = 1;

    ngx_add_timer(ev, mcf->watch_interval);

    return NGX_OK;
}


static void
ngx_http_mesh_identity_watch_handler(ngx_event_t *ev)
{
    ngx_uint_t                           i, j, changed;
    ngx_list_part_t                     *part;
    ngx_http_mesh_identity_file_t       *f;
    ngx_http_mesh_identity_pair_t       *pair;
    ngx_http_mesh_identity_store_t      *st;
    ngx_http_mesh_identity_main_conf_t  *mcf;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    mcf = ev->data;

    /* each file is looked at once a round, whoever uses it */

    part = &mcf->files.part;
    f = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            f = part->elts;
            i = 0;
        }

        f[i].changed = ngx_http_mesh_identity_changed(ev->log, &f[i]);
    }

    pair = mcf->pairs.elts;

    for (i = 0; i < mcf->pairs.nelts; i++) {
        if (pair[i].cert->changed || pair[i].key->changed) {
            ngx_http_mesh_identity_load_pair(ev->log, &pair[i]);
        }
    }

    st = mcf->stores.elts;

    for (i = 0; i < mcf->stores.nelts; i++) {
        changed = 0;

        for (j = 0; j < NGX_HTTP_MESH_IDENTITY_STORE_FILES; j++) {
            if (st[i].files[j] && st[i].files[j]->changed) {
                changed = 1;
            }
        }

        if (changed) {
            ngx_http_mesh_identity_load_store(ev->log, &st[i]);
        }
    }

    ngx_add_timer(ev, mcf->watch_interval);
}


/*
 * Notes the file's identity (device, inode), size and mtime; returns 1
 * when they differ from what was noted before.  Atomic renames change
 * the inode, in-place writes the size or the mtime.
 */

static ngx_uint_t
ngx_http_mesh_identity_changed(ngx_log_t *log,
    ngx_http_mesh_identity_file_t *file)
{
    ngx_file_info_t  fi;

    if (file->name.len == 0) {
        return 0;
    }

    if (ngx_file_info(file->name.data, &fi) == NGX_FILE_ERROR) {
        if (!file->missing) {
            ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                          "mesh_certificate_watch: "
                          ngx_file_info_n " \"%s\" failed, keeping the "
                          "loaded version", file->name.data);
            file->missing = 1;
        }

        return 0;
    }

    if (!file->missing
        && file->uniq == ngx_file_uniq(&fi)
        && file->dev == fi.st_dev
        && file->size == ngx_file_size(&fi)
        && file->mtime == fi.st_mtim.tv_sec
        && file->mtime_ns == fi.st_mtim.tv_nsec)
    {
        return 0;
    }

    file->missing = 0;
    file->uniq = ngx_file_uniq(&fi);
    file->dev = fi.st_dev;
    file->size = ngx_file_size(&fi);
    file->mtime = fi.st_mtim.tv_sec;
    file->mtime_ns = fi.st_mtim.tv_nsec;

    return 1;
}


static void
ngx_http_mesh_identity_load_pair(ngx_log_t *log,
    ngx_http_mesh_identity_pair_t *pair)
{
    X509            *x509;
    BIO             *bio;
    char            *serial;
    BIGNUM          *bn;
    EVP_PKEY        *pkey;
    STACK_OF(X509)  *chain;

    pkey = NULL;

    x509 = ngx_http_mesh_identity_read_chain(log,
                                             (char *) pair->cert->name.data,
                                             &chain);
    if (x509 == NULL) {
        return;
    }

    bio = BIO_new_file((char *) pair->key->name.data, "r");

    if (bio) {
        pkey = PEM_read_bio_PrivateKey(bio, NULL,
                                       ngx_http_mesh_identity_no_password,
                                       NULL);
        BIO_free(bio);
    }

    if (pkey == NULL) {
        ngx_ssl_error(NGX_LOG_ERR, log, 0,
                      "mesh_certificate_watch: cannot read key \"%s\", "
                      "keeping the loaded certificate", pair->key->name.data);
        goto done;
    }

    if (X509_check_private_key(x509, pkey) != 1) {
        ngx_ssl_error(NGX_LOG_ERR, log, 0,
                      "mesh_certificate_watch: key \"%s\" does not match "
                      "certificate \"%s\", keeping the loaded certificate",
                      pair->key->name.data, pair->cert->name.data);
        goto done;
    }

    if (SSL_CTX_use_cert_and_key(pair->ssl->ctx, x509, pkey, chain, 1) != 1) {
        ngx_ssl_error(NGX_LOG_ERR, log, 0,
                      "mesh_certificate_watch: SSL_CTX_use_cert_and_key(\"%s\")"
                      " failed, keeping the loaded certificate",
                      pair->cert->name.data);
        goto done;
    }

    serial = NULL;
    bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(x509), NULL);

    if (bn) {
        serial = BN_bn2hex(bn);
        BN_free(bn);
    }

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "mesh_certificate_watch: loaded certificate \"%s\" "
                  "serial %s with key \"%s\"", pair->cert->name.data,
                  serial ? serial : "?", pair->key->name.data);

    if (serial) {
        OPENSSL_free(serial);
    }

done:

    ERR_clear_error();

    if (pkey) {
        EVP_PKEY_free(pkey);
    }

    X509_free(x509);
    sk_X509_pop_free(chain, X509_free);
}


/* the leaf and the rest of the chain from a PEM file, all or nothing */

static X509 *
ngx_http_mesh_identity_read_chain(ngx_log_t *log, char *name,
    STACK_OF(X509) **chain)
{
    X509           *x509, *ca;
    BIO            *bio;
    unsigned long   n;

    *chain = NULL;

    bio = BIO_new_file(name, "r");
    if (bio == NULL) {
        ngx_ssl_error(NGX_LOG_ERR, log, 0,
                      "mesh_certificate_watch: BIO_new_file(\"%s\") failed, "
                      "keeping the loaded certificate", name);
        return NULL;
    }

    x509 = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
    if (x509 == NULL) {
        goto failed;
    }

    *chain = sk_X509_new_null();
    if (*chain == NULL) {
        goto failed;
    }

    for ( ;; ) {
        ca = PEM_read_bio_X509(bio, NULL, NULL, NULL);

        if (ca == NULL) {
            n = ERR_peek_last_error();

            if (ERR_GET_LIB(n) == ERR_LIB_PEM
                && ERR_GET_REASON(n) == PEM_R_NO_START_LINE)
            {
                /* the end of the file */
                ERR_clear_error();
                break;
            }

            goto failed;
        }

        if (sk_X509_push(*chain, ca) == 0) {
            X509_free(ca);
            goto failed;
        }
    }

    BIO_free(bio);

    return x509;

failed:

    ngx_ssl_error(NGX_LOG_ERR, log, 0,
                  "mesh_certificate_watch: cannot read certificate \"%s\", "
                  "keeping the loaded certificate", name);

    ERR_clear_error();
    BIO_free(bio);

    if (x509) {
        X509_free(x509);
    }

    if (*chain) {
        sk_X509_pop_free(*chain, X509_free);
        *chain = NULL;
    }

    return NULL;
}


static void
ngx_http_mesh_identity_load_store(ngx_log_t *log,
    ngx_http_mesh_identity_store_t *st)
{
    ngx_uint_t                      i;
    X509_STORE                     *store, *old;
    STACK_OF(X509_NAME)            *list;
    ngx_http_mesh_identity_file_t  *f;

    list = NULL;

    store = X509_STORE_new();
    if (store == NULL) {
        ngx_ssl_error(NGX_LOG_ERR, log, 0, "X509_STORE_new() failed");
        return;
    }

    /* flags (CRL checks), purpose and depth as nginx set them up */

    old = SSL_CTX_get_cert_store(st->ssl->ctx);

    if (X509_VERIFY_PARAM_set1(X509_STORE_get0_param(store),
                               X509_STORE_get0_param(old))
        != 1)
    {
        ngx_ssl_error(NGX_LOG_ERR, log, 0, "X509_VERIFY_PARAM_set1() failed");
        goto failed;
    }

    for (i = 0; i < NGX_HTTP_MESH_IDENTITY_STORE_FILES; i++) {
        f = st->files[i];

        if (f == NULL) {
            continue;
        }

        if (X509_STORE_load_file(store, (char *) f->name.data) != 1) {
            ngx_ssl_error(NGX_LOG_ERR, log, 0,
                          "mesh_certificate_watch: cannot load \"%s\", "
                          "keeping the loaded CA certificates",
                          f->name.data);
            goto failed;
        }
    }

    f = st->files[NGX_HTTP_MESH_IDENTITY_CLIENT_CA];

    if (f) {
        list = SSL_load_client_CA_file((char *) f->name.data);

        if (list == NULL) {
            ngx_ssl_error(NGX_LOG_ERR, log, 0,
                          "mesh_certificate_watch: "
                          "SSL_load_client_CA_file(\"%s\") failed, "
                          "keeping the loaded CA certificates",
                          f->name.data);
            goto failed;
        }
    }

    SSL_CTX_set_cert_store(st->ssl->ctx, store);

    if (list) {
        SSL_CTX_set_client_CA_list(st->ssl->ctx, list);
    }

    if (ngx_http_mesh_identity_session_context(log, st->ssl->ctx)
        != NGX_OK)
    {
        ERR_clear_error();
    }

    for (i = 0; i < NGX_HTTP_MESH_IDENTITY_STORE_FILES; i++) {
        if (st->files[i]) {
            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "mesh_certificate_watch: loaded CA certificates "
                          "\"%s\"", st->files[i]->name.data);
        }
    }

    return;

failed:

    ERR_clear_error();
    X509_STORE_free(store);
}


/*
 * A TLS session (cached or in a ticket) keeps the peer's certificate and
 * its verification result: one resumed after new CA certificates or CRLs
 * were loaded would carry an identity that they no longer vouch for.  The
 * session ID context, which a session must match to be resumed, is made
 * from the server certificates, the client CA names and every certificate
 * and CRL of the store: the same in every worker that loaded the same
 * files, another one after any change.
 */

static ngx_int_t
ngx_http_mesh_identity_session_context(ngx_log_t *log, SSL_CTX *ctx)
{
    int                     i, n;
    X509                   *cert;
    X509_CRL               *crl;
    X509_NAME              *name;
    X509_OBJECT            *obj;
    EVP_MD_CTX             *md;
    unsigned int            len;
    STACK_OF(X509_NAME)    *names;
    STACK_OF(X509_OBJECT)  *objs;
    u_char                  buf[EVP_MAX_MD_SIZE];

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return NGX_ERROR;
    }

    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        goto failed;
    }

    for (cert = SSL_CTX_get_ex_data(ctx, ngx_ssl_certificate_index);
         cert;
         cert = X509_get_ex_data(cert, ngx_ssl_next_certificate_index))
    {
        if (X509_digest(cert, EVP_sha256(), buf, &len) != 1
            || EVP_DigestUpdate(md, buf, len) != 1)
        {
            goto failed;
        }
    }

    names = SSL_CTX_get_client_CA_list(ctx);
    n = names ? sk_X509_NAME_num(names) : 0;

    for (i = 0; i < n; i++) {
        name = sk_X509_NAME_value(names, i);

        if (X509_NAME_digest(name, EVP_sha256(), buf, &len) != 1
            || EVP_DigestUpdate(md, buf, len) != 1)
        {
            goto failed;
        }
    }

    objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
    n = objs ? sk_X509_OBJECT_num(objs) : 0;

    for (i = 0; i < n; i++) {
        obj = sk_X509_OBJECT_value(objs, i);
        cert = X509_OBJECT_get0_X509(obj);
        crl = X509_OBJECT_get0_X509_CRL(obj);

        if (cert) {
            if (X509_digest(cert, EVP_sha256(), buf, &len) != 1) {
                goto failed;
            }

        } else if (crl) {
            if (X509_CRL_digest(crl, EVP_sha256(), buf, &len) != 1) {
                goto failed;
            }

        } else {
            continue;
        }

        if (EVP_DigestUpdate(md, buf, len) != 1) {
            goto failed;
        }
    }

    if (EVP_DigestFinal_ex(md, buf, &len) != 1
        || SSL_CTX_set_session_id_context(ctx, buf,
                                          ngx_min(len,
                                                  SSL_MAX_SID_CTX_LENGTH))
           != 1)
    {
        goto failed;
    }

    EVP_MD_CTX_free(md);

    return NGX_OK;

failed:

    ngx_ssl_error(NGX_LOG_ERR, log, 0,
                  "mesh_certificate_watch: cannot set a new session ID "
                  "context, TLS sessions made before stay resumable");
    EVP_MD_CTX_free(md);

    return NGX_ERROR;
}


static int
ngx_http_mesh_identity_no_password(char *buf, int size, int rwflag,
    void *userdata)
{
    return 0;
}
