
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_auth_jwt.h"
#include "ngx_meshgate_bearer.h"
#include "ngx_meshgate_fetch.h"
#include "ngx_meshgate_http.h"


static void *ngx_http_auth_jwt_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_auth_jwt_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_auth_jwt_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_auth_jwt_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_auth_jwt_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_auth_jwt_init_process(ngx_cycle_t *cycle);
static void ngx_http_auth_jwt_exit_process(ngx_cycle_t *cycle);
static char *ngx_http_auth_jwt(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_jwt_key_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_jwt_key_request(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_http_auth_jwt_source_t *ngx_http_auth_jwt_source(ngx_conf_t *cf,
    ngx_str_t *uri);
static char *ngx_http_auth_jwt_merge_sources(ngx_conf_t *cf,
    ngx_http_auth_jwt_loc_conf_t *conf);
static char *ngx_http_auth_jwt_type(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_jwt_require_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_auth_jwt_claim_set(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_jwt_strings(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_jwt_str_array(ngx_conf_t *cf, ngx_array_t **a,
    ngx_uint_t n);
static char *ngx_http_auth_jwt_scope_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void *ngx_http_auth_jwt_conf_push(ngx_conf_t *cf, ngx_array_t **a,
    size_t size);
static char *ngx_http_auth_jwt_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_auth_jwt_commands[] = {

    { ngx_string("auth_jwt"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_TAKE12,
      ngx_http_auth_jwt,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_TAKE1,
      ngx_http_auth_jwt_key_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_key_request"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_TAKE1,
      ngx_http_auth_jwt_key_request,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_key_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_auth_jwt_loc_conf_t, key_cache),
      NULL },

    { ngx_string("auth_jwt_leeway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_auth_jwt_loc_conf_t, leeway),
      NULL },

    { ngx_string("auth_jwt_type"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_TAKE1,
      ngx_http_auth_jwt_type,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_require"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_1MORE,
      ngx_http_auth_jwt_require_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_claim_set"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_auth_jwt_claim_set,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_header_set"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_auth_jwt_claim_set,
      NGX_HTTP_MAIN_CONF_OFFSET,
      1,
      NULL },

    { ngx_string("auth_jwt_issuer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_1MORE,
      ngx_http_auth_jwt_strings,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_auth_jwt_loc_conf_t, issuers),
      NULL },

    { ngx_string("auth_jwt_audience"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_1MORE,
      ngx_http_auth_jwt_strings,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_auth_jwt_loc_conf_t, audiences),
      NULL },

    { ngx_string("auth_jwt_scope"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_1MORE,
      ngx_http_auth_jwt_scope_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_jwt_key_set_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_auth_jwt_main_conf_t, keys_max),
      NULL },

    { ngx_string("auth_jwt_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_auth_jwt_cache,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_auth_jwt_module_ctx = {
    ngx_http_auth_jwt_add_variables,       /* preconfiguration */
    ngx_http_auth_jwt_init,                /* postconfiguration */

    ngx_http_auth_jwt_create_main_conf,    /* create main configuration */
    ngx_http_auth_jwt_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_auth_jwt_create_loc_conf,     /* create location configuration */
    ngx_http_auth_jwt_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_auth_jwt_module = {
    NGX_MODULE_V1,
    &ngx_http_auth_jwt_module_ctx,         /* module context */
    ngx_http_auth_jwt_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_auth_jwt_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_auth_jwt_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_auth_jwt_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_auth_jwt_main_conf_t  *jmcf;

    jmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_jwt_main_conf_t));
    if (jmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     jmcf->cache = NULL;
     */

    if (ngx_array_init(&jmcf->sources, cf->pool, 2,
                       sizeof(ngx_http_auth_jwt_source_t *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&jmcf->files, cf->pool, 2,
                       sizeof(ngx_http_auth_jwt_file_t))
        != NGX_OK)
    {
        return NULL;
    }

    jmcf->keys_max = NGX_CONF_UNSET_UINT;

    return jmcf;
}


/*
 * Key files are read where their directive stands, before the whole http
 * block is known: their sizes are checked against auth_jwt_key_set_max
 * here.
 */

static char *
ngx_http_auth_jwt_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_auth_jwt_main_conf_t *jmcf = conf;

    ngx_uint_t                 i;
    ngx_http_auth_jwt_file_t  *f;

    ngx_conf_init_uint_value(jmcf->keys_max, NGX_HTTP_AUTH_JWT_KEYS_MAX);

    if (jmcf->keys_max == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"auth_jwt_key_set_max\" must be at least 1");
        return NGX_CONF_ERROR;
    }

    f = jmcf->files.elts;

    for (i = 0; i < jmcf->files.nelts; i++) {
        if (f[i].keyset->count > jmcf->keys_max) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "key file \"%V\" holds %ui keys, more than "
                          "auth_jwt_key_set_max %ui in %V:%ui", &f[i].name,
                          f[i].keyset->count, jmcf->keys_max,
                          &f[i].conf_file, f[i].line);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_auth_jwt_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_auth_jwt_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_jwt_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->realm = NULL;
     *     conf->token = NULL;
     *     conf->scope_any = 0;
     *     conf->file = { 0, NULL };
     *     conf->line = 0;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->key_files = NGX_CONF_UNSET_PTR;
    conf->sources = NGX_CONF_UNSET_PTR;
    conf->requires = NGX_CONF_UNSET_PTR;
    conf->issuers = NGX_CONF_UNSET_PTR;
    conf->audiences = NGX_CONF_UNSET_PTR;
    conf->scopes = NGX_CONF_UNSET_PTR;
    conf->key_cache = NGX_CONF_UNSET;
    conf->leeway = NGX_CONF_UNSET;
    conf->type = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_auth_jwt_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_auth_jwt_loc_conf_t *prev = parent;
    ngx_http_auth_jwt_loc_conf_t *conf = child;

    if (conf->enable == NGX_CONF_UNSET) {
        conf->enable = prev->enable;
        conf->realm = prev->realm;
        conf->token = prev->token;
        conf->file = prev->file;
        conf->line = prev->line;
    }

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_ptr_value(conf->key_files, prev->key_files, NULL);
    ngx_conf_merge_ptr_value(conf->sources, prev->sources, NULL);

    if (ngx_http_auth_jwt_merge_sources(cf, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }
    ngx_conf_merge_ptr_value(conf->requires, prev->requires, NULL);
    ngx_conf_merge_ptr_value(conf->issuers, prev->issuers, NULL);
    ngx_conf_merge_ptr_value(conf->audiences, prev->audiences, NULL);

    if (conf->scopes == NGX_CONF_UNSET_PTR) {
        conf->scopes = prev->scopes;
        conf->scope_any = prev->scope_any;
    }

    ngx_conf_merge_ptr_value(conf->scopes, prev->scopes, NULL);
    ngx_conf_merge_sec_value(conf->key_cache, prev->key_cache, 0);
    ngx_conf_merge_sec_value(conf->leeway, prev->leeway, 0);
    ngx_conf_merge_uint_value(conf->type, prev->type,
                              NGX_HTTP_AUTH_JWT_SIGNED);

    if (conf->enable == 1 && conf->key_files == NULL
        && conf->sources == NULL)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"auth_jwt\" is enabled but no key is configured "
                      "(auth_jwt_key_file or auth_jwt_key_request) "
                      "in %V:%ui", &conf->file, conf->line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_auth_jwt_init(ngx_conf_t *cf)
{
    ngx_uint_t                       i;
    ngx_http_handler_pt             *h;
    ngx_http_core_main_conf_t       *cmcf;
    ngx_http_auth_jwt_source_t     **srcs;
    ngx_http_auth_jwt_main_conf_t   *jmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_auth_jwt_handler;

    /* every source is known now, those of inherited directives too */

    jmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_auth_jwt_module);
    srcs = jmcf->sources.elts;

    for (i = 0; i < jmcf->sources.nelts; i++) {
        srcs[i]->keys_max = jmcf->keys_max;
    }

    return ngx_meshgate_fetch_init(cf);
}


static ngx_int_t
ngx_http_auth_jwt_init_process(ngx_cycle_t *cycle)
{
    ngx_http_auth_jwt_md_init();

    return NGX_OK;
}


/* the key sets fetched by this worker, and its digests */

static void
ngx_http_auth_jwt_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i;
    ngx_http_auth_jwt_source_t     **srcs;
    ngx_http_auth_jwt_main_conf_t   *jmcf;

    ngx_http_auth_jwt_md_free();
    ngx_http_auth_jwt_var_free();
    ngx_http_auth_jwt_jwe_free();

    jmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_auth_jwt_module);
    if (jmcf == NULL) {
        return;
    }

    srcs = jmcf->sources.elts;

    for (i = 0; i < jmcf->sources.nelts; i++) {
        ngx_http_auth_jwt_keyset_free(srcs[i]->keyset);
        srcs[i]->keyset = NULL;
    }
}


static char *
ngx_http_auth_jwt(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_jwt_loc_conf_t *jlcf = conf;

    ngx_str_t                         *value, s;
    ngx_http_compile_complex_value_t   ccv;

    if (jlcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    jlcf->file = cf->conf_file->file.name;
    jlcf->line = cf->conf_file->line;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (cf->args->nelts != 2) {
            return "takes no token= with \"off\"";
        }

        jlcf->enable = 0;
        return NGX_CONF_OK;
    }

    jlcf->enable = 1;

    jlcf->realm = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (jlcf->realm == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = jlcf->realm;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 2) {
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value[2].data, "token=", 6) != 0 || value[2].len == 6) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\", expected "
                           "token=$variable", &value[2]);
        return NGX_CONF_ERROR;
    }

    s.data = value[2].data + 6;
    s.len = value[2].len - 6;

    jlcf->token = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (jlcf->token == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = &s;
    ccv.complex_value = jlcf->token;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_key_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_jwt_loc_conf_t *jlcf = conf;

    u_char                         *buf;
    ssize_t                         n;
    ngx_fd_t                        fd;
    ngx_str_t                      *value, name;
    ngx_file_t                      file;
    ngx_file_info_t                 fi;
    const char                     *err;
    ngx_http_auth_jwt_file_t       *f;
    ngx_http_auth_jwt_keyset_t     *ks, **pks;
    ngx_http_auth_jwt_main_conf_t  *jmcf;

    value = cf->args->elts;
    name = value[1];

    if (ngx_http_script_variables_count(&name) != 0) {

        /* named per request: a placeholder that holds the template */

        ks = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_jwt_keyset_t));
        if (ks == NULL) {
            return NGX_CONF_ERROR;
        }

        ks->tmpl = ngx_http_auth_jwt_template(cf, &name, 0);
        if (ks->tmpl == NULL) {
            return NGX_CONF_ERROR;
        }

        goto add;
    }

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /*
     * non-blocking: a FIFO put where a key file should be must not hang
     * nginx -t or a reload in open() or read(); it is refused below
     */

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK,
                       NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &name);
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.fd = fd;
    file.name = name;
    file.log = cf->log;

    buf = NULL;
    n = NGX_ERROR;
    err = "missing or over 1 MB";

    if (ngx_fd_info(fd, &fi) != NGX_FILE_ERROR) {
        if (!ngx_is_file(&fi)) {
            err = "not a regular file";

        } else if (ngx_file_size(&fi) <= 1024 * 1024) {
            buf = ngx_pnalloc(cf->temp_pool, ngx_file_size(&fi) + 1);
            if (buf) {
                n = ngx_read_file(&file, buf, ngx_file_size(&fi), 0);
            }
        }
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", &name);
    }

    if (n == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cannot read key file \"%V\" (%s)", &name, err);
        return NGX_CONF_ERROR;
    }

    err = "invalid key";

    ks = ngx_http_auth_jwt_keyset_create(cf->pool, cf->log);
    if (ks == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the bound is checked in init_main_conf, when it is known */

    if (ngx_http_auth_jwt_keyset_load(ks, buf, n, NGX_MAX_UINT32_VALUE,
                                      cf->log, &err)
        != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid key file \"%V\": %s", &name, err);
        return NGX_CONF_ERROR;
    }

    jmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_auth_jwt_module);

    f = ngx_array_push(&jmcf->files);
    if (f == NULL) {
        return NGX_CONF_ERROR;
    }

    f->name = name;
    f->keyset = ks;
    f->conf_file = cf->conf_file->file.name;
    f->line = cf->conf_file->line;

add:

    pks = ngx_http_auth_jwt_conf_push(cf, &jlcf->key_files,
                                      sizeof(ngx_http_auth_jwt_keyset_t *));
    if (pks == NULL) {
        return NGX_CONF_ERROR;
    }

    *pks = ks;

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_key_request(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_auth_jwt_loc_conf_t *jlcf = conf;

    ngx_str_t                     *value;
    ngx_http_auth_jwt_source_t    *src, **p;
    ngx_http_auth_jwt_template_t  *tmpl;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].data[0] != '/') {
        return "needs a URI that starts with \"/\"";
    }

    tmpl = NULL;

    if (ngx_http_script_variables_count(&value[1]) != 0) {
        tmpl = ngx_http_auth_jwt_template(cf, &value[1], 1);
        if (tmpl == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    src = ngx_http_auth_jwt_source(cf, &value[1]);
    if (src == NULL) {
        return NGX_CONF_ERROR;
    }

    if (tmpl) {
        src->tmpl = tmpl;
    }

    p = ngx_http_auth_jwt_conf_push(cf, &jlcf->sources,
                                    sizeof(ngx_http_auth_jwt_source_t *));
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    *p = src;

    return NGX_CONF_OK;
}


/*
 * The source of a URI in the server block at hand: the subrequest goes to
 * the locations of the request's server, so the same URI in two servers
 * may well be two identity providers, and their keys must not mix.
 */

static ngx_http_auth_jwt_source_t *
ngx_http_auth_jwt_source(ngx_conf_t *cf, ngx_str_t *uri)
{
    void                            *server;
    ngx_uint_t                       i;
    ngx_http_auth_jwt_source_t     **srcs, *src, **p;
    ngx_http_auth_jwt_main_conf_t   *jmcf;

    jmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_auth_jwt_module);
    server = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);

    srcs = jmcf->sources.elts;

    for (i = 0; i < jmcf->sources.nelts; i++) {
        if (srcs[i]->server == server
            && srcs[i]->uri.len == uri->len
            && ngx_strncmp(srcs[i]->uri.data, uri->data, uri->len) == 0)
        {
            return srcs[i];
        }
    }

    src = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_jwt_source_t));
    if (src == NULL) {
        return NULL;
    }

    src->uri = *uri;
    src->server = server;
    ngx_queue_init(&src->waiters);

    p = ngx_array_push(&jmcf->sources);
    if (p == NULL) {
        return NULL;
    }

    *p = src;

    return src;
}


/* sources inherited from the http block become those of this server */

static char *
ngx_http_auth_jwt_merge_sources(ngx_conf_t *cf,
    ngx_http_auth_jwt_loc_conf_t *conf)
{
    void                         *server;
    ngx_uint_t                    i;
    ngx_array_t                  *a;
    ngx_http_auth_jwt_source_t  **srcs, **p;

    if (conf->sources == NULL) {
        return NGX_CONF_OK;
    }

    server = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);
    srcs = conf->sources->elts;

    for (i = 0; i < conf->sources->nelts; i++) {
        if (srcs[i]->server != server) {
            break;
        }
    }

    if (i == conf->sources->nelts) {
        return NGX_CONF_OK;
    }

    a = ngx_array_create(cf->pool, conf->sources->nelts,
                         sizeof(ngx_http_auth_jwt_source_t *));
    if (a == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < conf->sources->nelts; i++) {
        p = ngx_array_push(a);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        *p = ngx_http_auth_jwt_source(cf, &srcs[i]->uri);
        if (*p == NULL) {
            return NGX_CONF_ERROR;
        }

        (*p)->tmpl = srcs[i]->tmpl;
    }

    conf->sources = a;

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_type(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_jwt_loc_conf_t *jlcf = conf;

    ngx_str_t  *value;

    if (jlcf->type != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "signed") == 0) {
        jlcf->type = NGX_HTTP_AUTH_JWT_SIGNED;

    } else if (ngx_strcmp(value[1].data, "encrypted") == 0) {
        jlcf->type = NGX_HTTP_AUTH_JWT_ENCRYPTED;

    } else if (ngx_strcmp(value[1].data, "nested") == 0) {
        jlcf->type = NGX_HTTP_AUTH_JWT_NESTED;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\", expected \"signed\", "
                           "\"encrypted\" or \"nested\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_require_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_auth_jwt_loc_conf_t *jlcf = conf;

    ngx_str_t                         *value;
    ngx_uint_t                         i, n;
    ngx_http_complex_value_t          *cv;
    ngx_http_auth_jwt_require_t       *req;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    req = ngx_http_auth_jwt_conf_push(cf, &jlcf->requires,
                                      sizeof(ngx_http_auth_jwt_require_t));
    if (req == NULL) {
        return NGX_CONF_ERROR;
    }

    req->status = NGX_HTTP_UNAUTHORIZED;
    n = cf->args->nelts;

    if (ngx_strncmp(value[n - 1].data, "error=", 6) == 0) {
        if (ngx_strcmp(value[n - 1].data, "error=401") == 0) {
            req->status = NGX_HTTP_UNAUTHORIZED;

        } else if (ngx_strcmp(value[n - 1].data, "error=403") == 0) {
            req->status = NGX_HTTP_FORBIDDEN;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"%V\", expected error=401 or "
                               "error=403", &value[n - 1]);
            return NGX_CONF_ERROR;
        }

        n--;
    }

    if (n < 2) {
        return "needs at least one value";
    }

    req->values = ngx_array_create(cf->pool, n - 1,
                                   sizeof(ngx_http_complex_value_t));
    if (req->values == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < n; i++) {
        if (value[i].data[0] != '$') {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "value \"%V\" must start with a variable",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        cv = ngx_array_push(req->values);
        if (cv == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
        ccv.cf = cf;
        ccv.value = &value[i];
        ccv.complex_value = cv;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_claim_set(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t                *value, *s, name;
    ngx_uint_t                i;
    ngx_http_variable_t      *v;
    ngx_http_auth_jwt_var_t  *var;

    value = cf->args->elts;

    if (value[1].len < 2 || value[1].data[0] != '$') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid variable name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data + 1;
    name.len = value[1].len - 1;

    v = ngx_http_add_variable(cf, &name, NGX_HTTP_VAR_NOCACHEABLE);
    if (v == NULL) {
        return NGX_CONF_ERROR;
    }

    var = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_jwt_var_t));
    if (var == NULL) {
        return NGX_CONF_ERROR;
    }

    var->header = cmd->offset;
    var->var = name;

    if (ngx_array_init(&var->names, cf->pool, cf->args->nelts - 2,
                       sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {
        if (value[i].len == 0) {
            return "has an empty name";
        }

        s = ngx_array_push(&var->names);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = value[i];  /* NUL-terminated by the parser */
    }

    v->get_handler = ngx_http_auth_jwt_set_variable;
    v->data = (uintptr_t) var;

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_strings(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    return ngx_http_auth_jwt_str_array(cf,
                                       (ngx_array_t **) (p + cmd->offset),
                                       cf->args->nelts);
}


static char *
ngx_http_auth_jwt_str_array(ngx_conf_t *cf, ngx_array_t **a, ngx_uint_t n)
{
    ngx_str_t   *value, *s;
    ngx_uint_t   i;

    if (*a != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    *a = ngx_array_create(cf->pool, n - 1, sizeof(ngx_str_t));
    if (*a == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < n; i++) {
        if (value[i].len == 0) {
            return "has an empty value";
        }

        s = ngx_array_push(*a);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = value[i];
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_jwt_scope_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_jwt_loc_conf_t *jlcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i, n;

    value = cf->args->elts;
    n = cf->args->nelts;

    if (n > 2 && (ngx_strcmp(value[n - 1].data, "all") == 0
                  || ngx_strcmp(value[n - 1].data, "any") == 0))
    {
        jlcf->scope_any = (value[n - 1].data[1] == 'n');
        n--;
    }

    /* a scope with a space or a control byte in it could never match */

    for (i = 1; i < n; i++) {
        if (!ngx_meshgate_scope_is_valid(&value[i])) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid scope \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    return ngx_http_auth_jwt_str_array(cf, &jlcf->scopes, n);
}


/* one more element of a location's list, the list made on first use */

static void *
ngx_http_auth_jwt_conf_push(ngx_conf_t *cf, ngx_array_t **a, size_t size)
{
    if (*a == NGX_CONF_UNSET_PTR) {
        *a = ngx_array_create(cf->pool, 2, size);
        if (*a == NULL) {
            return NULL;
        }
    }

    return ngx_array_push(*a);
}


static char *
ngx_http_auth_jwt_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_jwt_main_conf_t *jmcf = conf;

    ngx_str_t  *value;

    if (jmcf->cache) {
        return "is duplicate";
    }

    value = cf->args->elts;

    return ngx_meshgate_cache_conf(cf, &value[1], &ngx_http_auth_jwt_module,
                                   &jmcf->cache);
}
