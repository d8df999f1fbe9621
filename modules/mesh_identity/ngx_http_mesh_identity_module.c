
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_mesh_identity.h"
#include "ngx_meshgate_http.h"


/* the verified SPIFFE identity of a client connection, computed once */
typedef struct {
    ngx_str_t                      id;
    ngx_str_t                      td;
} ngx_http_mesh_identity_peer_t;


static ngx_http_mesh_identity_peer_t *ngx_http_mesh_identity_peer(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_mesh_identity_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_mesh_identity_deny_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_mesh_identity_allow_handler(ngx_http_request_t *r);
static int ngx_http_mesh_identity_upstream_verify(X509_STORE_CTX *store,
    void *arg);
static ngx_int_t ngx_http_mesh_identity_upstream_check(X509_STORE_CTX *store,
    ngx_connection_t *c, ngx_http_request_t *r,
    ngx_http_mesh_identity_loc_conf_t *mlcf);

static char *ngx_http_mesh_identity_rules(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mesh_identity_upstream_identity(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_mesh_identity_watch(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_mesh_identity_merge_upstream(ngx_conf_t *cf,
    ngx_http_mesh_identity_loc_conf_t *conf,
    ngx_http_mesh_identity_loc_conf_t *prev);

static ngx_int_t ngx_http_mesh_identity_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_mesh_identity_init(ngx_conf_t *cf);
static void *ngx_http_mesh_identity_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_mesh_identity_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_mesh_identity_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_mesh_identity_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_mesh_identity_init_process(ngx_cycle_t *cycle);


static int  ngx_http_mesh_identity_peer_index = -1;


static ngx_command_t  ngx_http_mesh_identity_commands[] = {

    { ngx_string("mesh_allow"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_mesh_identity_rules,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mesh_identity_loc_conf_t, allow),
      NULL },

    { ngx_string("mesh_deny"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_mesh_identity_rules,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mesh_identity_loc_conf_t, deny),
      NULL },

    { ngx_string("mesh_upstream_identity"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_mesh_identity_upstream_identity,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_trust_domain"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_mesh_identity_trust_domain,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_certificate_watch"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_mesh_identity_watch,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_mesh_identity_module_ctx = {
    ngx_http_mesh_identity_add_variables,  /* preconfiguration */
    ngx_http_mesh_identity_init,           /* postconfiguration */

    ngx_http_mesh_identity_create_main_conf,  /* create main configuration */
    ngx_http_mesh_identity_init_main_conf,    /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_mesh_identity_create_loc_conf,   /* create location conf */
    ngx_http_mesh_identity_merge_loc_conf     /* merge location conf */
};


ngx_module_t  ngx_http_mesh_identity_module = {
    NGX_MODULE_V1,
    &ngx_http_mesh_identity_module_ctx,    /* module context */
    ngx_http_mesh_identity_commands,       /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_mesh_identity_init_process,   /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_mesh_identity_vars[] = {

    { ngx_string("mesh_peer_id"), NULL,
      ngx_http_mesh_identity_variable,
      offsetof(ngx_http_mesh_identity_peer_t, id), 0, 0 },

    { ngx_string("mesh_peer_trust_domain"), NULL,
      ngx_http_mesh_identity_variable,
      offsetof(ngx_http_mesh_identity_peer_t, td), 0, 0 },

      ngx_http_null_variable
};


/*
 * The identity is a property of the TLS connection: it is computed on
 * first use and kept in the SSL object's ex_data, in the memory of the
 * real (not an HTTP/2 stream's) connection.
 */

static ngx_http_mesh_identity_peer_t *
ngx_http_mesh_identity_peer(ngx_http_request_t *r)
{
    X509                           *cert;
    SSL                            *ssl_conn;
    long                            rc;
    ngx_int_t                       n;
    const char                     *reason;
    ngx_connection_t               *c;
    ngx_http_mesh_identity_peer_t  *peer;

    static ngx_http_mesh_identity_peer_t  none;

    if (r->connection->ssl == NULL) {
        return &none;
    }

    ssl_conn = r->connection->ssl->connection;

    peer = SSL_get_ex_data(ssl_conn, ngx_http_mesh_identity_peer_index);
    if (peer) {
        return peer;
    }

    c = ngx_ssl_get_connection(ssl_conn);

    peer = ngx_pcalloc(c->pool, sizeof(ngx_http_mesh_identity_peer_t));
    if (peer == NULL) {
        return NULL;
    }

    cert = SSL_get_peer_certificate(ssl_conn);

    if (cert == NULL) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "mesh identity: no client certificate");
        goto done;
    }

    rc = SSL_get_verify_result(ssl_conn);

    if (rc != X509_V_OK || ngx_ssl_ocsp_get_status(c, &reason) != NGX_OK) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "mesh identity: client certificate not verified: %l",
                       rc);
        X509_free(cert);
        goto done;
    }

    n = ngx_http_mesh_identity_svid(cert, c->pool, &peer->id, &peer->td,
                                    &reason);
    X509_free(cert);

    if (n == NGX_ERROR) {
        return NULL;
    }

    if (n == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "mesh identity: the client certificate is not a "
                      "valid X.509-SVID: %s", reason);
    }

done:

    if (SSL_set_ex_data(ssl_conn, ngx_http_mesh_identity_peer_index, peer)
        == 0)
    {
        ngx_ssl_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "SSL_set_ex_data() failed");
        return NULL;
    }

    return peer;
}


static ngx_int_t
ngx_http_mesh_identity_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                      *s;
    ngx_http_mesh_identity_peer_t  *peer;

    peer = ngx_http_mesh_identity_peer(r);
    if (peer == NULL) {
        return NGX_ERROR;
    }

    s = (ngx_str_t *) ((u_char *) peer + data);

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * mesh_deny runs in the preaccess phase, so that a denied identity is
 * refused whatever "satisfy any" would let another access module grant.
 */

static ngx_int_t
ngx_http_mesh_identity_deny_handler(ngx_http_request_t *r)
{
    ngx_http_mesh_identity_peer_t      *peer;
    ngx_http_mesh_identity_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_mesh_identity_module);

    if (mlcf->deny == NULL || r != r->main) {
        return NGX_DECLINED;
    }

    peer = ngx_http_mesh_identity_peer(r);
    if (peer == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!ngx_http_mesh_identity_match(mlcf->deny, &peer->id)) {
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "mesh identity: access forbidden by mesh_deny "
                  "for peer \"%V\"", &peer->id);

    return NGX_HTTP_FORBIDDEN;
}


/* mesh_allow runs in the access phase and takes part in "satisfy" */

static ngx_int_t
ngx_http_mesh_identity_allow_handler(ngx_http_request_t *r)
{
    ngx_uint_t                          level;
    ngx_http_core_loc_conf_t           *clcf;
    ngx_http_mesh_identity_peer_t      *peer;
    ngx_http_mesh_identity_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_mesh_identity_module);

    if (mlcf->allow == NULL) {
        return NGX_DECLINED;
    }

    peer = ngx_http_mesh_identity_peer(r);
    if (peer == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_mesh_identity_match(mlcf->allow, &peer->id)) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "mesh identity: \"%V\" allowed", &peer->id);
        return NGX_OK;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    /* with "satisfy any" another access module may still let it in */

    level = (clcf->satisfy == NGX_HTTP_SATISFY_ALL) ? NGX_LOG_ERR
                                                     : NGX_LOG_INFO;

    if (peer->id.len == 0) {
        ngx_log_error(level, r->connection->log, 0,
                      "mesh identity: access forbidden, no verified "
                      "SPIFFE ID");

    } else {
        ngx_log_error(level, r->connection->log, 0,
                      "mesh identity: access forbidden for peer \"%V\", "
                      "no mesh_allow rule matches", &peer->id);
    }

    return NGX_HTTP_FORBIDDEN;
}


/*
 * The SSL_CTX of a location with mesh_upstream_identity verifies the
 * upstream's certificate chain here (the proxy's own check, which would
 * also require the DNS name, is turned off) and then its SPIFFE ID.
 * A failure aborts the handshake: the proxy tries the next upstream.
 */

static int
ngx_http_mesh_identity_upstream_verify(X509_STORE_CTX *store, void *arg)
{
    SSL                                *ssl_conn;
    ngx_connection_t                   *c;
    ngx_http_request_t                 *r;
    ngx_http_mesh_identity_loc_conf_t  *mlcf;

    ssl_conn = X509_STORE_CTX_get_ex_data(store,
                                        SSL_get_ex_data_X509_STORE_CTX_idx());
    c = ngx_ssl_get_connection(ssl_conn);

    if (c == NULL || c->data == NULL) {
        return 0;
    }

    r = c->data;    /* an upstream connection's data is its request */
    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_mesh_identity_module);

    if (ngx_http_mesh_identity_upstream_check(store, c, r, mlcf) != NGX_OK) {
        if (X509_STORE_CTX_get_error(store) == X509_V_OK) {
            X509_STORE_CTX_set_error(store,
                                     X509_V_ERR_APPLICATION_VERIFICATION);
        }

        /*
         * nginx logs a failed handshake at a level chosen by the first
         * error queued: "certificate verify failed" alone would make it
         * "crit"; the reason is in the error logged above
         */

        ERR_raise(ERR_LIB_SSL, SSL_R_CALLBACK_FAILED);

        return 0;
    }

    return 1;
}


static ngx_int_t
ngx_http_mesh_identity_upstream_check(X509_STORE_CTX *store,
    ngx_connection_t *c, ngx_http_request_t *r,
    ngx_http_mesh_identity_loc_conf_t *mlcf)
{
    int                                  ok, err;
    X509                                *cert;
    ngx_int_t                            rc;
    ngx_str_t                            id, td;
    const char                          *reason;
    ngx_http_mesh_identity_main_conf_t  *mcf;

    ok = X509_verify_cert(store);
    err = X509_STORE_CTX_get_error(store);

    if (mlcf->upstream == NULL) {
        /* a location without the directive that shares the SSL_CTX */
        return (ok > 0) ? NGX_OK : NGX_ERROR;
    }

    if (ok <= 0 || err != X509_V_OK) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "mesh identity: upstream SSL certificate verify "
                      "error: (%d:%s), expected %V",
                      err, X509_verify_cert_error_string(err),
                      &mlcf->upstream_text);
        return NGX_ERROR;
    }

    cert = X509_STORE_CTX_get0_cert(store);

    rc = ngx_http_mesh_identity_svid(cert, r->pool, &id, &td, &reason);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "mesh identity: upstream certificate is not a valid "
                      "X.509-SVID: %s, expected %V",
                      reason, &mlcf->upstream_text);
        return NGX_ERROR;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_mesh_identity_module);

    rc = ngx_http_mesh_identity_bound(mcf, store, r->pool, c->log);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "mesh identity: upstream SPIFFE ID \"%V\" is not "
                      "vouched for by its trust domain's bundle, expected "
                      "%V", &id, &mlcf->upstream_text);
        return NGX_ERROR;
    }

    if (!ngx_http_mesh_identity_match(mlcf->upstream, &id)) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "mesh identity: upstream SPIFFE ID \"%V\" does not "
                      "match, expected %V", &id, &mlcf->upstream_text);
        return NGX_ERROR;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "mesh identity: upstream \"%V\" verified", &id);

    return NGX_OK;
}


static char *
ngx_http_mesh_identity_rules(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    u_char  *p = conf;

    return ngx_http_mesh_identity_parse_patterns(cf,
                                          (ngx_array_t **) (p + cmd->offset));
}


static char *
ngx_http_mesh_identity_upstream_identity(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mesh_identity_loc_conf_t *mlcf = conf;

    u_char      *p;
    size_t       len;
    char        *rv;
    ngx_str_t   *value;
    ngx_uint_t   i;

    if (mlcf->upstream != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    rv = ngx_http_mesh_identity_parse_patterns(cf, &mlcf->upstream);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    /* the expected IDs as logged on a mismatch: "a" or "b" */

    value = cf->args->elts;
    len = 0;

    for (i = 1; i < cf->args->nelts; i++) {
        len += value[i].len + sizeof("\"\" or ") - 1;
    }

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    mlcf->upstream_text.data = p;

    for (i = 1; i < cf->args->nelts; i++) {
        if (i > 1) {
            p = ngx_cpymem(p, " or ", 4);
        }

        *p++ = '"';
        p = ngx_cpymem(p, value[i].data, value[i].len);
        *p++ = '"';
    }

    mlcf->upstream_text.len = p - mlcf->upstream_text.data;
    mlcf->upstream_file = cf->conf_file->file.name.data;
    mlcf->upstream_line = cf->conf_file->line;

    return NGX_CONF_OK;
}


static char *
ngx_http_mesh_identity_watch(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mesh_identity_main_conf_t *mcf = conf;

    ngx_str_t  *value, s;

    if (mcf->watch_interval != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        mcf->watch_interval = 0;
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value[1].data, "interval=", 9) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\", expected "
                           "\"interval=time\" or \"off\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    s.data = value[1].data + 9;
    s.len = value[1].len - 9;

    mcf->watch_interval = ngx_parse_time(&s, 0);

    if (mcf->watch_interval == (ngx_msec_t) NGX_ERROR
        || mcf->watch_interval < 100
        || mcf->watch_interval > 86400000)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid interval \"%V\" (100ms to 1d)",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_mesh_identity_add_variables(ngx_conf_t *cf)
{
    return ngx_meshgate_add_variables(cf, ngx_http_mesh_identity_vars);
}


static ngx_int_t
ngx_http_mesh_identity_init(ngx_conf_t *cf)
{
    ngx_uint_t                           s;
    ngx_http_handler_pt                 *h;
    ngx_http_ssl_srv_conf_t             *sscf;
    ngx_http_core_srv_conf_t           **cscfp;
    ngx_http_core_main_conf_t           *cmcf;
    ngx_http_mesh_identity_main_conf_t  *mcf;

    if (ngx_http_mesh_identity_peer_index == -1) {
        ngx_http_mesh_identity_peer_index = SSL_get_ex_new_index(0, NULL,
                                                                 NULL, NULL,
                                                                 NULL);
        if (ngx_http_mesh_identity_peer_index == -1) {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "SSL_get_ex_new_index() failed");
            return NGX_ERROR;
        }
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_mesh_identity_deny_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_mesh_identity_allow_handler;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_mesh_identity_module);

    if (ngx_http_mesh_identity_bundle_servers(cf, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (mcf->watch_interval == 0) {
        return NGX_OK;
    }

    cscfp = cmcf->servers.elts;

    for (s = 0; s < cmcf->servers.nelts; s++) {
        sscf = cscfp[s]->ctx->srv_conf[ngx_http_ssl_module.ctx_index];

        if (ngx_http_mesh_identity_watch_server(cf, mcf, sscf) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void *
ngx_http_mesh_identity_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_mesh_identity_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mesh_identity_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->watch_event = { 0 };
     */

    mcf->watch_interval = NGX_CONF_UNSET_MSEC;

    if (ngx_list_init(&mcf->files, cf->pool, 8,
                      sizeof(ngx_http_mesh_identity_file_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&mcf->pairs, cf->pool, 4,
                       sizeof(ngx_http_mesh_identity_pair_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&mcf->stores, cf->pool, 4,
                       sizeof(ngx_http_mesh_identity_store_t))
        != NGX_OK)
    {
        return NULL;
    }

    return mcf;
}


static char *
ngx_http_mesh_identity_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_mesh_identity_main_conf_t *mcf = conf;

    ngx_conf_init_msec_value(mcf->watch_interval, 0);

    return NGX_CONF_OK;
}


static void *
ngx_http_mesh_identity_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_mesh_identity_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mesh_identity_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->upstream_text = { 0, NULL };
     *     conf->upstream_file = NULL;
     *     conf->upstream_line = 0;
     */

    conf->allow = NGX_CONF_UNSET_PTR;
    conf->deny = NGX_CONF_UNSET_PTR;
    conf->upstream = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_mesh_identity_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_mesh_identity_loc_conf_t *prev = parent;
    ngx_http_mesh_identity_loc_conf_t *conf = child;

    ngx_http_upstream_conf_t            *ucf;
    ngx_http_mesh_identity_main_conf_t  *mcf;

    /* mesh_allow and mesh_deny are inherited together, as one policy */

    if (conf->allow == NGX_CONF_UNSET_PTR
        && conf->deny == NGX_CONF_UNSET_PTR)
    {
        conf->allow = prev->allow;
        conf->deny = prev->deny;
    }

    ngx_conf_merge_ptr_value(conf->allow, NULL, NULL);
    ngx_conf_merge_ptr_value(conf->deny, NULL, NULL);

    /* the proxy's conf starts with its ngx_http_upstream_conf_t */

    ucf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_proxy_module);
    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_mesh_identity_module);

    if (mcf->watch_interval && ucf->ssl && ucf->ssl->ctx) {
        if (ngx_http_mesh_identity_watch_proxy(cf, mcf, ucf) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_mesh_identity_merge_upstream(cf, conf, prev) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_mesh_identity_merge_upstream(ngx_conf_t *cf,
    ngx_http_mesh_identity_loc_conf_t *conf,
    ngx_http_mesh_identity_loc_conf_t *prev)
{
    SSL_CTX                   *ctx;
    ngx_uint_t                 own;
    ngx_http_upstream_conf_t  *ucf;

    own = (conf->upstream != NGX_CONF_UNSET_PTR);

    if (!own) {
        conf->upstream = (prev->upstream == NGX_CONF_UNSET_PTR)
                         ? NULL : prev->upstream;
        conf->upstream_text = prev->upstream_text;
        conf->upstream_file = prev->upstream_file;
        conf->upstream_line = prev->upstream_line;
    }

    if (conf->upstream == NULL) {
        return NGX_OK;
    }

    ucf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_proxy_module);

    if (ucf->ssl == NULL || ucf->ssl->ctx == NULL) {
        if (!own) {
            return NGX_OK;
        }

        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"mesh_upstream_identity\" requires "
                      "\"proxy_pass https://...\" in the same location "
                      "in %s:%ui", conf->upstream_file, conf->upstream_line);
        return NGX_ERROR;
    }

    if (ucf->ssl_verify != 1) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"mesh_upstream_identity\" requires "
                      "\"proxy_ssl_verify on\" and "
                      "\"proxy_ssl_trusted_certificate\" in %s:%ui",
                      conf->upstream_file, conf->upstream_line);
        return NGX_ERROR;
    }

    /*
     * The module takes the verification over: the chain against
     * proxy_ssl_trusted_certificate, then the SPIFFE ID instead of the
     * DNS name.  TLS sessions are not resumed, so that every new
     * connection presents a certificate to check.
     */

    ucf->ssl_verify = 0;
    ucf->ssl_session_reuse = 0;

    ctx = ucf->ssl->ctx;

    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, SSL_CTX_get_verify_callback(ctx));
    SSL_CTX_set_cert_verify_callback(ctx,
                                     ngx_http_mesh_identity_upstream_verify,
                                     NULL);

    return NGX_OK;
}


static ngx_int_t
ngx_http_mesh_identity_init_process(ngx_cycle_t *cycle)
{
    ngx_http_mesh_identity_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_mesh_identity_module);

    if (mcf == NULL || mcf->watch_interval == 0) {
        return NGX_OK;
    }

    return ngx_http_mesh_identity_watch_start(cycle, mcf);
}
