
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_HTTP_MESH_IDENTITY_H_INCLUDED_
#define _NGX_HTTP_MESH_IDENTITY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#if !(NGX_HTTP_SSL)
#error ngx_http_mesh_identity_module needs nginx built with SSL
#endif


#define NGX_HTTP_MESH_IDENTITY_ID_MAX      2048
#define NGX_HTTP_MESH_IDENTITY_TD_MAX      255


/* one mesh_allow / mesh_deny / mesh_upstream_identity pattern */
typedef struct {
    ngx_str_t                      value;    /* the ID or the prefix */
    unsigned                       prefix:1; /* "spiffe://td/a/" + "*" */
    unsigned                       any:1;    /* "*" */
} ngx_http_mesh_identity_pattern_t;


/* a file the certificate watch follows, shared by the contexts using it */
typedef struct {
    ngx_str_t                      name;     /* full path, null-terminated */
    ngx_file_uniq_t                uniq;
    dev_t                          dev;
    off_t                          size;
    time_t                         mtime;
    long                           mtime_ns;
    unsigned                       missing:1;
    unsigned                       changed:1; /* in this round */
} ngx_http_mesh_identity_file_t;


/* a certificate and its key, loaded into one SSL_CTX */
typedef struct {
    ngx_ssl_t                     *ssl;
    ngx_http_mesh_identity_file_t *cert;
    ngx_http_mesh_identity_file_t *key;
} ngx_http_mesh_identity_pair_t;


/* the CA files of one SSL_CTX's X509_STORE (NULL when not used) */
#define NGX_HTTP_MESH_IDENTITY_CLIENT_CA   0
#define NGX_HTTP_MESH_IDENTITY_TRUSTED     1
#define NGX_HTTP_MESH_IDENTITY_CRL         2
#define NGX_HTTP_MESH_IDENTITY_STORE_FILES 3

typedef struct {
    ngx_ssl_t                     *ssl;
    ngx_http_mesh_identity_file_t *files[NGX_HTTP_MESH_IDENTITY_STORE_FILES];
} ngx_http_mesh_identity_store_t;


/* the CAs of one trust domain (mesh_trust_domain) */
typedef struct {
    ngx_str_t                      td;
    STACK_OF(X509)                *cas;
} ngx_http_mesh_identity_bundle_t;


typedef struct {
    ngx_msec_t                     watch_interval;
    ngx_array_t                   *bundles;  /* of ..._bundle_t */
    ngx_list_t                     files;    /* of ..._file_t */
    ngx_array_t                    pairs;    /* of ..._pair_t */
    ngx_array_t                    stores;   /* of ..._store_t */
    ngx_event_t                    watch_event;
} ngx_http_mesh_identity_main_conf_t;


typedef struct {
    ngx_array_t                   *allow;    /* of ..._pattern_t */
    ngx_array_t                   *deny;     /* of ..._pattern_t */
    ngx_array_t                   *upstream; /* of ..._pattern_t */
    ngx_str_t                      upstream_text;
    u_char                        *upstream_file;
    ngx_uint_t                     upstream_line;
} ngx_http_mesh_identity_loc_conf_t;


/* functions shared by this module's files: hidden from the .so's table */

#pragma GCC visibility push(hidden)


/* the SVID rules (ngx_http_mesh_identity_svid.c) */

/*
 * Extracts the SPIFFE ID of an X.509-SVID leaf certificate into pool
 * memory: id, and its trust domain td.  Returns NGX_OK, NGX_DECLINED
 * with *reason set when the certificate breaks the X.509-SVID rules, or
 * NGX_ERROR without memory.
 */
ngx_int_t ngx_http_mesh_identity_svid(X509 *cert, ngx_pool_t *pool,
    ngx_str_t *id, ngx_str_t *td, const char **reason);

/*
 * Checks a SPIFFE ID: "spiffe://" + trust domain + path.  With
 * root_ok, an empty path is accepted.  Returns NULL or the reason.
 */
const char *ngx_http_mesh_identity_check_id(u_char *p, size_t len,
    size_t *td_len, ngx_uint_t root_ok);

/* parses the directive arguments from args[1] on into an array */
char *ngx_http_mesh_identity_parse_patterns(ngx_conf_t *cf,
    ngx_array_t **patterns);

ngx_uint_t ngx_http_mesh_identity_match(ngx_array_t *patterns,
    ngx_str_t *id);


/* trust bundles per trust domain (ngx_http_mesh_identity_bundle.c) */

char *ngx_http_mesh_identity_trust_domain(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_mesh_identity_bundle_servers(ngx_conf_t *cf,
    ngx_http_mesh_identity_main_conf_t *mcf);
ngx_int_t ngx_http_mesh_identity_bound(ngx_http_mesh_identity_main_conf_t *mcf,
    X509_STORE_CTX *store, ngx_pool_t *pool, ngx_log_t *log);


/* the certificate watch (ngx_http_mesh_identity_watch.c) */

ngx_int_t ngx_http_mesh_identity_watch_server(ngx_conf_t *cf,
    ngx_http_mesh_identity_main_conf_t *mcf, ngx_http_ssl_srv_conf_t *sscf);
ngx_int_t ngx_http_mesh_identity_watch_proxy(ngx_conf_t *cf,
    ngx_http_mesh_identity_main_conf_t *mcf, void *plcf);
ngx_int_t ngx_http_mesh_identity_watch_start(ngx_cycle_t *cycle,
    ngx_http_mesh_identity_main_conf_t *mcf);


#pragma GCC visibility pop


extern ngx_module_t  ngx_http_mesh_identity_module;
extern ngx_module_t  ngx_http_proxy_module;


#endif /* _NGX_HTTP_MESH_IDENTITY_H_INCLUDED_ */
