
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_traffic_split.h"
#include "ngx_meshgate_http.h"


static char *ngx_http_traffic_split_block(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_traffic_split_params(ngx_conf_t *cf,
    ngx_http_traffic_split_conf_t *scf);
static char *ngx_http_traffic_split_line(ngx_conf_t *cf, ngx_command_t *dummy,
    void *conf);
static ngx_uint_t ngx_http_traffic_split_is_variable(ngx_str_t *value);
static char *ngx_http_traffic_split_key(ngx_conf_t *cf,
    ngx_http_traffic_split_conf_t *scf);
static char *ngx_http_traffic_split_match(ngx_conf_t *cf,
    ngx_http_traffic_split_conf_t *scf);
static char *ngx_http_traffic_split_variant(ngx_conf_t *cf,
    ngx_http_traffic_split_conf_t *scf);
static char *ngx_http_traffic_split_check(ngx_conf_t *cf,
    ngx_http_traffic_split_conf_t *scf);
static ngx_int_t ngx_http_traffic_split_find_variant(
    ngx_http_traffic_split_conf_t *scf, ngx_str_t *name);
static ngx_uint_t ngx_http_traffic_split_valid_name(ngx_str_t *name,
    ngx_uint_t variant);
static char *ngx_http_traffic_split_rollout(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_traffic_split_rollout_param(ngx_conf_t *cf,
    ngx_http_traffic_split_conf_t *scf, ngx_http_traffic_split_rollout_t *ro,
    ngx_str_t *arg);
static char *ngx_http_traffic_split_steps(ngx_conf_t *cf,
    ngx_http_traffic_split_rollout_t *ro, ngx_str_t *value);
static char *ngx_http_traffic_split_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_http_traffic_split_conf_t *ngx_http_traffic_split_find(
    ngx_http_traffic_split_main_conf_t *mcf, ngx_str_t *name);

static void ngx_http_traffic_split_checksum(
    ngx_http_traffic_split_conf_t *scf);
static ngx_int_t ngx_http_traffic_split_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_traffic_split_node_t *ngx_http_traffic_split_find_node(
    ngx_http_traffic_split_conf_t *scf);
static void ngx_http_traffic_split_sweep(ngx_slab_pool_t *shpool,
    ngx_http_traffic_split_shctx_t *sh);
static ngx_int_t ngx_http_traffic_split_init_node(ngx_shm_zone_t *shm_zone,
    ngx_http_traffic_split_conf_t *scf);

static void *ngx_http_traffic_split_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_traffic_split_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_traffic_split_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_traffic_split_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_traffic_split_postconf(ngx_conf_t *cf);
static ngx_int_t ngx_http_traffic_split_init_process(ngx_cycle_t *cycle);
static void ngx_http_traffic_split_exit_process(ngx_cycle_t *cycle);
static ngx_http_traffic_split_main_conf_t *ngx_http_traffic_split_refs(
    ngx_cycle_t *cycle, ngx_int_t add);


static ngx_command_t  ngx_http_traffic_split_commands[] = {

    { ngx_string("traffic_split"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_BLOCK|NGX_CONF_1MORE,
      ngx_http_traffic_split_block,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("traffic_split_rollout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_traffic_split_rollout,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("traffic_split_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_traffic_split_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_traffic_split_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_traffic_split_postconf,       /* postconfiguration */

    ngx_http_traffic_split_create_main_conf, /* create main configuration */
    ngx_http_traffic_split_init_main_conf, /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_traffic_split_create_loc_conf, /* create location configuration */
    ngx_http_traffic_split_merge_loc_conf  /* merge location configuration */
};


ngx_module_t  ngx_http_traffic_split_module = {
    NGX_MODULE_V1,
    &ngx_http_traffic_split_module_ctx,    /* module context */
    ngx_http_traffic_split_commands,       /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_traffic_split_init_process,   /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_traffic_split_exit_process,   /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* traffic_split NAME zone=NAME:SIZE [state=PATH] { ... } */

static char *
ngx_http_traffic_split_block(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_traffic_split_main_conf_t *mcf = conf;

    char                           *rv;
    ngx_str_t                      *value, vname;
    ngx_conf_t                      save;
    ngx_http_variable_t            *var;
    ngx_http_traffic_split_conf_t  *scf, **scfp;

    value = cf->args->elts;

    if (!ngx_http_traffic_split_valid_name(&value[1], 0)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid split name \"%V\": letters, digits and "
                           "\"_\", at most %d", &value[1],
                           NGX_HTTP_TRAFFIC_SPLIT_NAME_LEN - 1);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_traffic_split_find(mcf, &value[1])) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate traffic split \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    scf = ngx_pcalloc(cf->pool, sizeof(ngx_http_traffic_split_conf_t));
    if (scf == NULL) {
        return NGX_CONF_ERROR;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     scf->key = NULL;
     *     scf->state = { 0, NULL };
     *     scf->rollout = NULL;
     *     scf->shm_zone = NULL;
     */

    scf->name = value[1];
    scf->star = -1;
    scf->key_index = NGX_ERROR;
    scf->file = cf->conf_file->file.name;
    scf->line = cf->conf_file->line;

    if (ngx_array_init(&scf->variants, cf->pool, 4,
                       sizeof(ngx_http_traffic_split_variant_t))
        != NGX_OK
        || ngx_array_init(&scf->matches, cf->pool, 2,
                          sizeof(ngx_http_traffic_split_match_t))
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    rv = ngx_http_traffic_split_params(cf, scf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    scfp = ngx_array_push(&mcf->splits);
    if (scfp == NULL) {
        return NGX_CONF_ERROR;
    }

    *scfp = scf;

    vname.len = sizeof("traffic_split_") - 1 + scf->name.len;
    vname.data = ngx_pnalloc(cf->pool, vname.len);
    if (vname.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(vname.data, "traffic_split_%V", &scf->name);

    var = ngx_http_add_variable(cf, &vname, 0);
    if (var == NULL) {
        return NGX_CONF_ERROR;
    }

    var->get_handler = ngx_http_traffic_split_variable;
    var->data = (uintptr_t) scf;

    save = *cf;
    cf->handler = ngx_http_traffic_split_line;
    cf->handler_conf = (char *) scf;

    rv = ngx_conf_parse(cf, NULL);

    *cf = save;

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    return ngx_http_traffic_split_check(cf, scf);
}


static char *
ngx_http_traffic_split_params(ngx_conf_t *cf,
    ngx_http_traffic_split_conf_t *scf)
{
    ssize_t                              size;
    ngx_str_t                           *value, name;
    ngx_uint_t                           i;
#if (NGX_THREADS)
    ngx_http_traffic_split_main_conf_t  *mcf;
#endif

    value = cf->args->elts;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0 && !scf->shm_zone) {

            if (ngx_meshgate_zone_parse(cf, &value[i], &name, &size)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            scf->shm_zone = ngx_shared_memory_add(cf, &name, size,
                                               &ngx_http_traffic_split_module);
            if (scf->shm_zone == NULL) {
                return NGX_CONF_ERROR;
            }

            scf->shm_zone->init = ngx_http_traffic_split_init_zone;
            scf->shm_zone->data = ngx_http_conf_get_module_main_conf(cf,
                                               ngx_http_traffic_split_module);
            continue;
        }

        if (ngx_strncmp(value[i].data, "state=", 6) == 0
            && scf->state.data == NULL && value[i].len > 6)
        {
            scf->state.data = value[i].data + 6;
            scf->state.len = value[i].len - 6;

            if (ngx_conf_full_name(cf->cycle, &scf->state, 0) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

#if (NGX_THREADS)
            /* the default pool: made with 32 threads if not declared */

            mcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_traffic_split_module);
            mcf->thread_pool = ngx_thread_pool_add(cf, NULL);

            if (mcf->thread_pool == NULL) {
                return NGX_CONF_ERROR;
            }
#endif

            continue;
        }

        goto invalid;
    }

    if (scf->shm_zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "traffic split \"%V\" needs zone=NAME:SIZE",
                           &scf->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid or duplicate parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_traffic_split_line(ngx_conf_t *cf, ngx_command_t *dummy, void *conf)
{
    ngx_http_traffic_split_conf_t *scf = (ngx_http_traffic_split_conf_t *)
                                         cf->handler_conf;

    ngx_str_t  *value;

    value = cf->args->elts;

    if (value[0].len == 3 && ngx_strncmp(value[0].data, "key", 3) == 0) {
        return ngx_http_traffic_split_key(cf, scf);
    }

    if (value[0].len == 5 && ngx_strncmp(value[0].data, "match", 5) == 0) {
        return ngx_http_traffic_split_match(cf, scf);
    }

    return ngx_http_traffic_split_variant(cf, scf);
}


static char *
ngx_http_traffic_split_key(ngx_conf_t *cf, ngx_http_traffic_split_conf_t *scf)
{
    ngx_str_t                         *value, name;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (cf->args->nelts != 2) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"key\" takes one value");
        return NGX_CONF_ERROR;
    }

    if (scf->key) {
        return "is duplicate";
    }

    scf->key = ngx_pcalloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (scf->key == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = scf->key;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    scf->key_source = value[1];

    /* a key that is one variable is read directly, without a script */

    if (ngx_http_traffic_split_is_variable(&value[1])) {
        name.data = value[1].data + 1;
        name.len = value[1].len - 1;

        scf->key_index = ngx_http_get_variable_index(cf, &name);
        if (scf->key_index == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* "$name": one variable, not a capture ($1) and nothing around it */

static ngx_uint_t
ngx_http_traffic_split_is_variable(ngx_str_t *value)
{
    u_char      c;
    ngx_uint_t  i;

    if (value->len < 2 || value->data[0] != '$'
        || (value->data[1] >= '0' && value->data[1] <= '9'))
    {
        return 0;
    }

    for (i = 1; i < value->len; i++) {
        c = value->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_'))
        {
            return 0;
        }
    }

    return 1;
}


/* match VALUE =|!=|~|~*|!~|!~* PATTERN VARIANT */

static char *
ngx_http_traffic_split_match(ngx_conf_t *cf,
    ngx_http_traffic_split_conf_t *scf)
{
    ngx_str_t                         *value, *op;
    ngx_uint_t                         caseless;
    ngx_http_traffic_split_match_t    *m;
    ngx_http_compile_complex_value_t   ccv;
#if (NGX_PCRE)
    u_char                             errstr[NGX_MAX_CONF_ERRSTR];
    ngx_regex_compile_t                rc;
#endif

    value = cf->args->elts;

    if (cf->args->nelts != 5) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"match\" takes a value, an operator, a pattern "
                           "and a variant");
        return NGX_CONF_ERROR;
    }

    m = ngx_array_push(&scf->matches);
    if (m == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(m, sizeof(ngx_http_traffic_split_match_t));

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = &m->value;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    m->source = value[1];
    m->pattern = value[3];

    /* the variant is looked up when the block ends */
    m->variant_name = value[4];

    op = &value[2];
    caseless = 0;

    if (op->len == 1 && op->data[0] == '=') {
        m->op = NGX_HTTP_TRAFFIC_SPLIT_EQ;
        return NGX_CONF_OK;
    }

    if (op->len == 2 && ngx_strncmp(op->data, "!=", 2) == 0) {
        m->op = NGX_HTTP_TRAFFIC_SPLIT_NE;
        return NGX_CONF_OK;
    }

    if ((op->len == 1 && op->data[0] == '~')
        || (op->len == 2 && ngx_strncmp(op->data, "!~", 2) == 0))
    {
        m->op = (op->len == 1) ? NGX_HTTP_TRAFFIC_SPLIT_RE
                               : NGX_HTTP_TRAFFIC_SPLIT_NRE;

    } else if ((op->len == 2 && ngx_strncmp(op->data, "~*", 2) == 0)
               || (op->len == 3 && ngx_strncmp(op->data, "!~*", 3) == 0))
    {
        m->op = (op->len == 2) ? NGX_HTTP_TRAFFIC_SPLIT_RE
                               : NGX_HTTP_TRAFFIC_SPLIT_NRE;
        caseless = 1;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown operator \"%V\" in \"match\": use =, "
                           "!=, ~, ~*, !~ or !~*", op);
        return NGX_CONF_ERROR;
    }

#if (NGX_PCRE)
    ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

    rc.pattern = value[3];
    rc.pool = cf->pool;
    rc.err.len = NGX_MAX_CONF_ERRSTR;
    rc.err.data = errstr;
    rc.options = caseless ? NGX_REGEX_CASELESS : 0;

    if (ngx_regex_compile(&rc) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V", &rc.err);
        return NGX_CONF_ERROR;
    }

    m->regex = rc.regex;

    return NGX_CONF_OK;
#else
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "regular expressions in \"match\" need PCRE");
    return NGX_CONF_ERROR;
#endif
}


/* VARIANT WEIGHT% | VARIANT * */

static char *
ngx_http_traffic_split_variant(ngx_conf_t *cf,
    ngx_http_traffic_split_conf_t *scf)
{
    size_t                             len;
    ngx_int_t                          w;
    ngx_str_t                         *value;
    ngx_http_traffic_split_variant_t  *v;

    value = cf->args->elts;

    if (cf->args->nelts != 2) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid line in traffic split \"%V\": expected "
                           "\"key\", \"match\" or \"VARIANT WEIGHT%%\"",
                           &scf->name);
        return NGX_CONF_ERROR;
    }

    if (!ngx_http_traffic_split_valid_name(&value[0], 1)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid variant name \"%V\": printable, without "
                           "spaces, quotes or backslashes, at most %d bytes",
                           &value[0], NGX_HTTP_TRAFFIC_SPLIT_NAME_LEN - 1);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_traffic_split_find_variant(scf, &value[0]) != NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate variant \"%V\" in traffic split \"%V\"",
                           &value[0], &scf->name);
        return NGX_CONF_ERROR;
    }

    if (scf->variants.nelts == NGX_HTTP_TRAFFIC_SPLIT_VARIANTS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "traffic split \"%V\" has more than %d variants",
                           &scf->name, NGX_HTTP_TRAFFIC_SPLIT_VARIANTS);
        return NGX_CONF_ERROR;
    }

    v = ngx_array_push(&scf->variants);
    if (v == NULL) {
        return NGX_CONF_ERROR;
    }

    v->name = value[0];
    v->weight = 0;
    v->star = 0;

    if (value[1].len == 1 && value[1].data[0] == '*') {

        if (scf->star != -1) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "traffic split \"%V\" has two \"*\" variants",
                               &scf->name);
            return NGX_CONF_ERROR;
        }

        v->star = 1;
        scf->star = scf->variants.nelts - 1;
        return NGX_CONF_OK;
    }

    len = value[1].len;

    if (len && value[1].data[len - 1] == '%') {
        len--;
    }

    w = ngx_atofp(value[1].data, len, 2);

    if (w == NGX_ERROR || w > NGX_HTTP_TRAFFIC_SPLIT_SCALE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid weight \"%V\" of variant \"%V\": a "
                           "percentage from 0 to 100 with at most two "
                           "decimals, or \"*\"", &value[1], &value[0]);
        return NGX_CONF_ERROR;
    }

    v->weight = w;

    return NGX_CONF_OK;
}


static char *
ngx_http_traffic_split_check(ngx_conf_t *cf,
    ngx_http_traffic_split_conf_t *scf)
{
    ngx_int_t                          n;
    ngx_uint_t                         i, sum;
    ngx_http_traffic_split_match_t    *m;
    ngx_http_traffic_split_variant_t  *v;

    v = scf->variants.elts;

    if (scf->variants.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "traffic split \"%V\" has no variants",
                           &scf->name);
        return NGX_CONF_ERROR;
    }

    sum = 0;

    for (i = 0; i < scf->variants.nelts; i++) {
        sum += v[i].weight;
    }

    if (sum > NGX_HTTP_TRAFFIC_SPLIT_SCALE
        || (scf->star == -1 && sum != NGX_HTTP_TRAFFIC_SPLIT_SCALE))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the weights of traffic split \"%V\" sum to "
                           "%ui.%02ui%%, not %s100%%", &scf->name,
                           sum / 100, sum % 100,
                           scf->star == -1 ? "" : "at most ");
        return NGX_CONF_ERROR;
    }

    if (scf->star != -1) {
        v[scf->star].weight = NGX_HTTP_TRAFFIC_SPLIT_SCALE - sum;
    }

    m = scf->matches.elts;

    for (i = 0; i < scf->matches.nelts; i++) {
        n = ngx_http_traffic_split_find_variant(scf, &m[i].variant_name);

        if (n == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown variant \"%V\" in \"match\" of "
                               "traffic split \"%V\"",
                               &m[i].variant_name, &scf->name);
            return NGX_CONF_ERROR;
        }

        m[i].variant = n;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_traffic_split_find_variant(ngx_http_traffic_split_conf_t *scf,
    ngx_str_t *name)
{
    ngx_uint_t                         i;
    ngx_http_traffic_split_variant_t  *v;

    v = scf->variants.elts;

    for (i = 0; i < scf->variants.nelts; i++) {
        if (v[i].name.len == name->len
            && ngx_strncmp(v[i].name.data, name->data, name->len) == 0)
        {
            return i;
        }
    }

    return NGX_ERROR;
}


/*
 * Split names become part of a variable's name and of JSON keys: letters,
 * digits and "_".  Variant names go into proxy_pass, JSON and Prometheus
 * labels: printable, no space, quote or backslash.
 */

static ngx_uint_t
ngx_http_traffic_split_valid_name(ngx_str_t *name, ngx_uint_t variant)
{
    u_char      c;
    ngx_uint_t  i;

    if (name->len == 0 || name->len >= NGX_HTTP_TRAFFIC_SPLIT_NAME_LEN) {
        return 0;
    }

    for (i = 0; i < name->len; i++) {
        c = name->data[i];

        if (variant) {
            if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\'
                || c == '{' || c == '}' || c == ';')
            {
                return 0;
            }

            continue;
        }

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_'))
        {
            return 0;
        }
    }

    if (variant
        && ((name->len == 3 && ngx_strncmp(name->data, "key", 3) == 0)
            || (name->len == 5 && ngx_strncmp(name->data, "match", 5) == 0)))
    {
        return 0;
    }

    return 1;
}


/*
 * traffic_split_rollout NAME canary=VARIANT steps=P,P,... interval=TIME
 *     [max_error_rate=P%] [min_requests=N] [max_p99=TIME]
 */

static char *
ngx_http_traffic_split_rollout(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_traffic_split_main_conf_t *mcf = conf;

    char                              *rv;
    ngx_str_t                         *value;
    ngx_uint_t                         i, others, last;
    ngx_http_traffic_split_conf_t     *scf;
    ngx_http_traffic_split_variant_t  *v;
    ngx_http_traffic_split_rollout_t  *ro;

    value = cf->args->elts;

    scf = ngx_http_traffic_split_find(mcf, &value[1]);

    if (scf == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown traffic split \"%V\" (a rollout follows "
                           "its traffic_split block)", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (scf->rollout) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate rollout of traffic split \"%V\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    ro = ngx_pcalloc(cf->pool, sizeof(ngx_http_traffic_split_rollout_t));
    if (ro == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the parameters' defaults */

    ro->canary = (ngx_uint_t) -1;
    ro->max_error_rate = 100;          /* 1 % */
    ro->min_requests = 20;
    ro->max_p99 = 0;

    for (i = 2; i < cf->args->nelts; i++) {
        rv = ngx_http_traffic_split_rollout_param(cf, scf, ro, &value[i]);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    if (ro->canary == (ngx_uint_t) -1 || ro->nsteps == 0
        || ro->interval == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "a rollout needs canary=, steps= and interval=");
        return NGX_CONF_ERROR;
    }

    if ((ngx_int_t) ro->canary == scf->star || scf->star == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the rollout of traffic split \"%V\" needs a "
                           "\"*\" variant other than its canary to take the "
                           "remaining traffic", &scf->name);
        return NGX_CONF_ERROR;
    }

    v = scf->variants.elts;
    others = 0;

    for (i = 0; i < scf->variants.nelts; i++) {
        if (i != ro->canary && (ngx_int_t) i != scf->star) {
            others += v[i].weight;
        }
    }

    last = ro->steps[ro->nsteps - 1];

    if (others + last > NGX_HTTP_TRAFFIC_SPLIT_SCALE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the last step (%ui%%) and the other variants' "
                           "weights exceed 100%%", last / 100);
        return NGX_CONF_ERROR;
    }

    scf->rollout = ro;

    return NGX_CONF_OK;
}


static char *
ngx_http_traffic_split_rollout_param(ngx_conf_t *cf,
    ngx_http_traffic_split_conf_t *scf, ngx_http_traffic_split_rollout_t *ro,
    ngx_str_t *arg)
{
    size_t      len;
    ngx_int_t   n;
    ngx_str_t   s;
    ngx_msec_t  ms;

    s.data = (u_char *) ngx_strchr(arg->data, '=');

    if (s.data == NULL) {
        goto invalid;
    }

    s.data++;
    s.len = arg->data + arg->len - s.data;
    len = s.data - arg->data;

    if (len == sizeof("canary=") - 1
        && ngx_strncmp(arg->data, "canary=", len) == 0)
    {
        n = ngx_http_traffic_split_find_variant(scf, &s);

        if (n == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "canary \"%V\" is not a variant of traffic "
                               "split \"%V\"", &s, &scf->name);
            return NGX_CONF_ERROR;
        }

        ro->canary = n;
        return NGX_CONF_OK;
    }

    if (len == sizeof("steps=") - 1
        && ngx_strncmp(arg->data, "steps=", len) == 0)
    {
        return ngx_http_traffic_split_steps(cf, ro, &s);
    }

    if ((len == sizeof("interval=") - 1
         && ngx_strncmp(arg->data, "interval=", len) == 0)
        || (len == sizeof("max_p99=") - 1
            && ngx_strncmp(arg->data, "max_p99=", len) == 0))
    {
        ms = ngx_parse_time(&s, 0);

        if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
            goto invalid;
        }

        if (arg->data[0] == 'i') {
            ro->interval = ms;

        } else {
            ro->max_p99 = ms;
        }

        return NGX_CONF_OK;
    }

    if (len == sizeof("max_error_rate=") - 1
        && ngx_strncmp(arg->data, "max_error_rate=", len) == 0)
    {
        if (s.len && s.data[s.len - 1] == '%') {
            s.len--;
        }

        n = ngx_atofp(s.data, s.len, 2);

        if (n == NGX_ERROR || n > NGX_HTTP_TRAFFIC_SPLIT_SCALE) {
            goto invalid;
        }

        ro->max_error_rate = n;
        return NGX_CONF_OK;
    }

    if (len == sizeof("min_requests=") - 1
        && ngx_strncmp(arg->data, "min_requests=", len) == 0)
    {
        n = ngx_atoi(s.data, s.len);

        if (n == NGX_ERROR || n == 0) {
            goto invalid;
        }

        ro->min_requests = n;
        return NGX_CONF_OK;
    }

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid rollout parameter \"%V\"", arg);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_traffic_split_steps(ngx_conf_t *cf,
    ngx_http_traffic_split_rollout_t *ro, ngx_str_t *value)
{
    u_char     *p, *last, *end;
    ngx_int_t   n;

    p = value->data;
    last = value->data + value->len;

    while (p < last) {
        end = ngx_strlchr(p, last, ',');
        if (end == NULL) {
            end = last;
        }

        n = ngx_atofp(p, (end > p && end[-1] == '%') ? end - p - 1 : end - p,
                      2);

        if (n == NGX_ERROR || n == 0 || n > NGX_HTTP_TRAFFIC_SPLIT_SCALE
            || (ro->nsteps && (ngx_uint_t) n <= ro->steps[ro->nsteps - 1])
            || ro->nsteps == NGX_HTTP_TRAFFIC_SPLIT_STEPS)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid steps \"%V\": up to %d rising "
                               "percentages above 0 and at most 100",
                               value, NGX_HTTP_TRAFFIC_SPLIT_STEPS);
            return NGX_CONF_ERROR;
        }

        ro->steps[ro->nsteps++] = n;
        p = end + 1;
    }

    if (ro->nsteps == 0) {
        return "has empty steps=";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_traffic_split_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_traffic_split_loc_conf_t *lcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->api != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    lcf->api = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_traffic_split_api_handler;

    return NGX_CONF_OK;
}


static ngx_http_traffic_split_conf_t *
ngx_http_traffic_split_find(ngx_http_traffic_split_main_conf_t *mcf,
    ngx_str_t *name)
{
    ngx_uint_t                       i;
    ngx_http_traffic_split_conf_t  **scfp;

    scfp = mcf->splits.elts;

    for (i = 0; i < mcf->splits.nelts; i++) {
        if (scfp[i]->name.len == name->len
            && ngx_strncmp(scfp[i]->name.data, name->data, name->len) == 0)
        {
            return scfp[i];
        }
    }

    return NULL;
}


/* what makes a split's shared state and saved weights its own */

static void
ngx_http_traffic_split_checksum(ngx_http_traffic_split_conf_t *scf)
{
    uint32_t                           crc;
    ngx_uint_t                         i;
    ngx_http_traffic_split_variant_t  *v;
    ngx_http_traffic_split_rollout_t  *ro;

    v = scf->variants.elts;
    ro = scf->rollout;

    ngx_crc32_init(crc);
    ngx_crc32_update(&crc, scf->name.data, scf->name.len);

    for (i = 0; i < scf->variants.nelts; i++) {
        ngx_crc32_update(&crc, (u_char *) "\n", 1);
        ngx_crc32_update(&crc, v[i].name.data, v[i].name.len);
        ngx_crc32_update(&crc, (u_char *) &v[i].weight, sizeof(ngx_uint_t));
        ngx_crc32_update(&crc, (u_char *) (v[i].star ? "*" : "-"), 1);
    }

    if (ro) {
        ngx_crc32_update(&crc, (u_char *) &ro->canary, sizeof(ngx_uint_t));
        ngx_crc32_update(&crc, (u_char *) ro->steps,
                         ro->nsteps * sizeof(ngx_uint_t));
    }

    ngx_crc32_final(crc);

    scf->crc = crc;

    /* each variant's own draw: from its name and its split's name */

    for (i = 0; i < scf->variants.nelts; i++) {
        ngx_crc32_init(crc);
        ngx_crc32_update(&crc, scf->name.data, scf->name.len);
        ngx_crc32_update(&crc, (u_char *) "\n", 1);
        ngx_crc32_update(&crc, v[i].name.data, v[i].name.len);
        ngx_crc32_final(crc);

        v[i].hash = ((uint64_t) crc << 32)
                    | ngx_murmur_hash2(v[i].name.data, v[i].name.len);
    }
}


static ngx_int_t
ngx_http_traffic_split_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_traffic_split_main_conf_t *mcf = shm_zone->data;

    size_t                            len;
    ngx_uint_t                        i;
    ngx_slab_pool_t                  *shpool;
    ngx_http_traffic_split_conf_t   **scfp;
    ngx_http_traffic_split_shctx_t   *sh;

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (data || shm_zone->shm.exists) {

        /* reload: the zone with the state of its splits is kept */

        sh = shpool->data;

    } else {
        sh = ngx_slab_calloc(shpool, sizeof(ngx_http_traffic_split_shctx_t));
        if (sh == NULL) {
            return NGX_ERROR;
        }

        ngx_queue_init(&sh->nodes);
        shpool->data = sh;

        len = sizeof(" in traffic split zone \"\"") + shm_zone->shm.name.len;

        shpool->log_ctx = ngx_slab_alloc(shpool, len);
        if (shpool->log_ctx == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(shpool->log_ctx, " in traffic split zone \"%V\"%Z",
                    &shm_zone->shm.name);

        /* a full zone is a configuration error, said once as such */
        shpool->log_nomem = 0;
    }

    /*
     * First the nodes this configuration keeps, then the ones nobody uses
     * any more are freed, then the new ones are made: an edited split
     * takes the place of its state of two reloads ago.
     */

    sh->gen++;

    scfp = mcf->splits.elts;

    for (i = 0; i < mcf->splits.nelts; i++) {
        if (scfp[i]->shm_zone != shm_zone) {
            continue;
        }

        scfp[i]->shpool = shpool;
        scfp[i]->sh = sh;
        scfp[i]->node = ngx_http_traffic_split_find_node(scfp[i]);

        if (scfp[i]->node) {
            scfp[i]->node->gen = sh->gen;
        }
    }

    ngx_http_traffic_split_sweep(shpool, sh);

    for (i = 0; i < mcf->splits.nelts; i++) {
        if (scfp[i]->shm_zone != shm_zone || scfp[i]->node) {
            continue;
        }

        if (ngx_http_traffic_split_init_node(shm_zone, scfp[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* the node of this very configuration of the split, if there is one */

static ngx_http_traffic_split_node_t *
ngx_http_traffic_split_find_node(ngx_http_traffic_split_conf_t *scf)
{
    ngx_uint_t                         i;
    ngx_queue_t                       *q;
    ngx_http_traffic_split_node_t     *node;
    ngx_http_traffic_split_variant_t  *v;

    v = scf->variants.elts;

    for (q = ngx_queue_head(&scf->sh->nodes);
         q != ngx_queue_sentinel(&scf->sh->nodes);
         q = ngx_queue_next(q))
    {
        node = ngx_queue_data(q, ngx_http_traffic_split_node_t, queue);

        if (node->crc != scf->crc || node->name_len != scf->name.len
            || ngx_strncmp(node->name, scf->name.data, scf->name.len) != 0
            || node->nvariants != scf->variants.nelts)
        {
            continue;
        }

        /* the checksum may collide: the variants are compared as well */

        for (i = 0; i < scf->variants.nelts; i++) {
            if (ngx_strlen(node->variants[i]) != v[i].name.len
                || ngx_strncmp(node->variants[i], v[i].name.data,
                               v[i].name.len) != 0)
            {
                break;
            }
        }

        if (i == scf->variants.nelts) {
            return node;
        }
    }

    return NULL;
}


/*
 * In the master, while it loads configuration number sh->gen.  A node is
 * still used by the configuration being loaded, by the one before it (its
 * workers may not have counted themselves yet), or by workers of older
 * ones that still finish their requests (refs).  The rest is freed.  A
 * worker that crashed never uncounts itself: its node stays until the
 * next restart.
 */

static void
ngx_http_traffic_split_sweep(ngx_slab_pool_t *shpool,
    ngx_http_traffic_split_shctx_t *sh)
{
    ngx_queue_t                    *q, *next;
    ngx_http_traffic_split_node_t  *node;

    ngx_shmtx_lock(&shpool->mutex);

    for (q = ngx_queue_head(&sh->nodes);
         q != ngx_queue_sentinel(&sh->nodes);
         q = next)
    {
        next = ngx_queue_next(q);
        node = ngx_queue_data(q, ngx_http_traffic_split_node_t, queue);

        if (node->gen + 1 >= sh->gen || node->refs) {
            continue;
        }

        ngx_log_debug2(NGX_LOG_DEBUG_CORE, ngx_cycle->log, 0,
                       "traffic split \"%*s\": old state freed",
                       node->name_len, node->name);

        ngx_queue_remove(q);
        ngx_slab_free_locked(shpool, node);
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/*
 * A split keeps its node (weights, rollout, counters) across a reload
 * when its checksum is the same; an edited split gets a new node with the
 * weights from the state file, if saved for this very configuration, or
 * else the configured ones.  The old node stays for the old workers
 * (see ngx_http_traffic_split_sweep()).
 */

static ngx_int_t
ngx_http_traffic_split_init_node(ngx_shm_zone_t *shm_zone,
    ngx_http_traffic_split_conf_t *scf)
{
    size_t                             size;
    ngx_uint_t                         i, w[NGX_HTTP_TRAFFIC_SPLIT_VARIANTS];
    ngx_http_traffic_split_node_t     *node;
    ngx_http_traffic_split_variant_t  *v;

    size = sizeof(ngx_http_traffic_split_node_t)
           + (scf->variants.nelts - 1)
             * sizeof(ngx_http_traffic_split_stats_t);

    node = ngx_slab_calloc(scf->shpool, size);

    if (node == NULL) {
        ngx_log_error(NGX_LOG_EMERG, ngx_cycle->log, 0,
                      "zone \"%V\" is too small for traffic split \"%V\" "
                      "(with the state of the previous configuration and of "
                      "old workers still running)",
                      &shm_zone->shm.name, &scf->name);
        return NGX_ERROR;
    }

    ngx_memcpy(node->name, scf->name.data, scf->name.len);
    node->name_len = scf->name.len;
    node->crc = scf->crc;
    node->nvariants = scf->variants.nelts;
    node->gen = scf->sh->gen;

    v = scf->variants.elts;

    for (i = 0; i < scf->variants.nelts; i++) {
        node->weights[i] = v[i].weight;
        ngx_memcpy(node->variants[i], v[i].name.data, v[i].name.len);
    }

    scf->node = node;

    if (scf->state.len) {
        (void) ngx_http_traffic_split_load_state(scf, ngx_cycle->log);
    }

    if (scf->rollout
        && (node->status == NGX_HTTP_TRAFFIC_SPLIT_NONE
            || node->status == NGX_HTTP_TRAFFIC_SPLIT_RUNNING
            || node->status == NGX_HTTP_TRAFFIC_SPLIT_PAUSED))
    {
        ngx_memcpy(w, node->weights, sizeof(w));
        ngx_http_traffic_split_rollout_start(scf, w, ngx_current_msec);
        ngx_memcpy(node->weights, w, sizeof(w));
    }

    ngx_queue_insert_head(&scf->sh->nodes, &node->queue);

    return NGX_OK;
}


static void *
ngx_http_traffic_split_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_traffic_split_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_traffic_split_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&mcf->splits, cf->pool, 4,
                       sizeof(ngx_http_traffic_split_conf_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return mcf;
}


static void *
ngx_http_traffic_split_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_traffic_split_loc_conf_t  *lcf;

    lcf = ngx_palloc(cf->pool, sizeof(ngx_http_traffic_split_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    lcf->api = NGX_CONF_UNSET;

    return lcf;
}


static char *
ngx_http_traffic_split_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_traffic_split_loc_conf_t *prev = parent;
    ngx_http_traffic_split_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    /*
     * a "limit_except" block inside the API's location has a location
     * configuration of its own, without a content handler: the methods
     * it lets through reach the API, as proxy_pass does it; a nested
     * location is no API unless it says so
     */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (conf->api == NGX_CONF_UNSET) {
        conf->api = clcf->lmt_excpt ? prev->api : 0;
    }

    if (conf->api == 1 && clcf->lmt_excpt && clcf->handler == NULL) {
        clcf->handler = ngx_http_traffic_split_api_handler;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_traffic_split_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_traffic_split_main_conf_t *mcf = conf;

    ngx_uint_t                       i, j;
    ngx_http_traffic_split_conf_t  **scfp;

    scfp = mcf->splits.elts;

    for (i = 0; i < mcf->splits.nelts; i++) {
        ngx_http_traffic_split_checksum(scfp[i]);

        for (j = 0; j < i; j++) {
            if (scfp[j]->shm_zone == scfp[i]->shm_zone) {
                scfp[i]->writer = scfp[j]->writer;
                break;
            }
        }

        if (scfp[i]->writer == NULL) {
            scfp[i]->writer = ngx_pcalloc(cf->pool,
                                   sizeof(ngx_http_traffic_split_writer_t));
            if (scfp[i]->writer == NULL) {
                return NGX_CONF_ERROR;
            }
        }

        /*
         * one writer at a time per state file: the splits that share a
         * file share the zone that holds the writer's lock
         */

        for (j = 0; j < i; j++) {
            if (scfp[i]->state.len
                && scfp[i]->state.len == scfp[j]->state.len
                && ngx_strncmp(scfp[i]->state.data, scfp[j]->state.data,
                               scfp[i]->state.len) == 0
                && scfp[i]->shm_zone != scfp[j]->shm_zone)
            {
                ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                              "traffic splits \"%V\" and \"%V\" share the "
                              "state file \"%V\" but not the zone in %V:%ui",
                              &scfp[j]->name, &scfp[i]->name,
                              &scfp[i]->state, &scfp[i]->file,
                              scfp[i]->line);
                return NGX_CONF_ERROR;
            }
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_traffic_split_postconf(ngx_conf_t *cf)
{
    ngx_http_handler_pt                 *h;
    ngx_http_core_main_conf_t           *cmcf;
    ngx_http_traffic_split_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_traffic_split_module);

    if (mcf->splits.nelts == 0) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_traffic_split_log_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_traffic_split_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                           i;
    ngx_http_traffic_split_conf_t      **scfp;
    ngx_http_traffic_split_main_conf_t  *mcf;

    /* the cache manager and loader neither serve nor say when they exit */

    if (ngx_process == NGX_PROCESS_HELPER) {
        return NGX_OK;
    }

    mcf = ngx_http_traffic_split_refs(cycle, 1);

    if (mcf == NULL) {
        return NGX_OK;
    }

    scfp = mcf->splits.elts;

    for (i = 0; i < mcf->splits.nelts; i++) {
        if (scfp[i]->rollout
            && ngx_http_traffic_split_rollout_init(cycle, scfp[i]) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_traffic_split_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_process != NGX_PROCESS_HELPER) {
        (void) ngx_http_traffic_split_refs(cycle, -1);
    }
}


/*
 * A worker counts itself in the nodes of its configuration while it
 * lives, and lets go of the state file's lock when it exits.
 */

static ngx_http_traffic_split_main_conf_t *
ngx_http_traffic_split_refs(ngx_cycle_t *cycle, ngx_int_t add)
{
    ngx_uint_t                           i;
    ngx_http_traffic_split_conf_t      **scfp;
    ngx_http_traffic_split_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_traffic_split_module);

    if (mcf == NULL) {
        return NULL;
    }

    scfp = mcf->splits.elts;

    for (i = 0; i < mcf->splits.nelts; i++) {
        if (scfp[i]->node == NULL) {
            continue;
        }

        (void) ngx_atomic_fetch_add(&scfp[i]->node->refs, add);

        if (add < 0) {
            ngx_http_traffic_split_writer_exit(scfp[i]);
        }
    }

    return mcf;
}
