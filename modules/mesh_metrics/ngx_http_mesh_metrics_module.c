
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_mesh_metrics.h"
#include "ngx_meshgate_http.h"


static ngx_int_t ngx_http_mesh_metrics_route_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_mesh_metrics_opt_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static void *ngx_http_mesh_metrics_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_mesh_metrics_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_mesh_metrics_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_mesh_metrics_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_mesh_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mesh_metrics_zone(ngx_conf_t *cf, ngx_str_t *value);
static char *ngx_http_mesh_metrics_route(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mesh_metrics_buckets(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_mesh_metrics_export(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mesh_metrics_trace(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_mesh_metrics_trace_export(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_mesh_metrics_otlp_url(ngx_conf_t *cf,
    ngx_http_mesh_metrics_otlp_t *otlp, ngx_str_t *value);
static ngx_int_t ngx_http_mesh_metrics_init_process(ngx_cycle_t *cycle);
static void ngx_http_mesh_metrics_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_mesh_metrics_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_mesh_metrics_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_mesh_metrics_find_splits(ngx_conf_t *cf,
    ngx_http_mesh_metrics_main_conf_t *mmcf);
static ngx_int_t ngx_http_mesh_metrics_find_variable(ngx_conf_t *cf,
    char *name, char *prefix);


static ngx_uint_t  ngx_http_mesh_metrics_default_buckets[] = {
    5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000
};


static ngx_command_t  ngx_http_mesh_metrics_commands[] = {

    { ngx_string("mesh_metrics"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_mesh_metrics,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_metrics_route"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_mesh_metrics_route,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_metrics_buckets"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_mesh_metrics_buckets,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_metrics_export"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_mesh_metrics_export,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_trace"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_mesh_metrics_trace,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_mesh_metrics_loc_conf_t, trace),
      NULL },

    { ngx_string("mesh_trace_export"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_mesh_metrics_trace_export,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_mesh_metrics_module_ctx = {
    ngx_http_mesh_metrics_preconfiguration, /* preconfiguration */
    ngx_http_mesh_metrics_postconfiguration, /* postconfiguration */

    ngx_http_mesh_metrics_create_main_conf, /* create main configuration */
    ngx_http_mesh_metrics_init_main_conf,  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_mesh_metrics_create_loc_conf, /* create location configuration */
    ngx_http_mesh_metrics_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_mesh_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_mesh_metrics_module_ctx,     /* module context */
    ngx_http_mesh_metrics_commands,        /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_mesh_metrics_init_process,    /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_mesh_metrics_exit_process,    /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_mesh_metrics_route_name =
    ngx_string("mesh_metrics_route");
static ngx_str_t  ngx_http_mesh_metrics_opt_prefix = ngx_string("mesh_opt_");
static ngx_str_t  ngx_http_mesh_metrics_split_prefix =
    ngx_string("traffic_split_");


static ngx_int_t
ngx_http_mesh_metrics_route_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_mesh_metrics_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_mesh_metrics_module);

    v->data = lcf->label.data;
    v->len = lcf->label.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * $mesh_opt_NAME: the value of $NAME when some module defines it, else
 * empty; a log format can name variables of modules that may be absent.
 */

static ngx_int_t
ngx_http_mesh_metrics_opt_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t *name = (ngx_str_t *) data;

    ngx_str_t                   s;
    ngx_uint_t                  key;
    ngx_http_variable_value_t  *vv;

    s.data = name->data + ngx_http_mesh_metrics_opt_prefix.len;
    s.len = name->len - ngx_http_mesh_metrics_opt_prefix.len;

    key = ngx_hash_key(s.data, s.len);

    vv = ngx_http_get_variable(r, &s, key);

    if (vv == NULL) {
        return NGX_ERROR;
    }

    if (vv->not_found) {
        v->not_found = 1;
        return NGX_OK;
    }

    *v = *vv;
    v->no_cacheable = 1;

    return NGX_OK;
}


static void *
ngx_http_mesh_metrics_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_mesh_metrics_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mesh_metrics_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mmcf->zone = NULL;
     *     mmcf->buckets = NULL;
     *     mmcf->otlp = NULL;
     *     mmcf->export_file = NULL;
     *     mmcf->export_line = 0;
     *     mmcf->splits = NULL;
     */

    mmcf->trace_used = NGX_CONF_UNSET;
    mmcf->auth_jwt = NGX_ERROR;
    mmcf->auth_key = NGX_ERROR;
    mmcf->auth_introspect = NGX_ERROR;
    mmcf->rate_limit = NGX_ERROR;
    mmcf->aggregate = NGX_ERROR;
    mmcf->retries = NGX_ERROR;
    mmcf->peer_id = NGX_ERROR;
    mmcf->consumer = NGX_ERROR;
    mmcf->subject = NGX_ERROR;

    return mmcf;
}


static char *
ngx_http_mesh_metrics_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_mesh_metrics_main_conf_t  *mmcf = conf;

    ngx_conf_init_value(mmcf->trace_used, 0);

    if (mmcf->otlp) {
        ngx_conf_init_uint_value(mmcf->otlp->batch, 512);
        ngx_conf_init_msec_value(mmcf->otlp->interval, 5000);

        if (mmcf->otlp->service.data == NULL) {
            ngx_str_set(&mmcf->otlp->service, "meshgate");
        }
    }

    if (mmcf->zone == NULL) {
        if (mmcf->export_file) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"mesh_metrics_export\" needs "
                          "\"mesh_metrics zone=name:size\" at http level "
                          "in %s:%ui", mmcf->export_file, mmcf->export_line);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (mmcf->buckets) {
        mmcf->zone->nbuckets = mmcf->buckets->nelts;
        mmcf->zone->bounds = mmcf->buckets->elts;

    } else {
        mmcf->zone->nbuckets = sizeof(ngx_http_mesh_metrics_default_buckets)
                               / sizeof(ngx_uint_t);
        mmcf->zone->bounds = ngx_http_mesh_metrics_default_buckets;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_mesh_metrics_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_mesh_metrics_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_mesh_metrics_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->route = { 0, NULL };
     *     conf->label = { 0, NULL };
     *     conf->export = 0;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->trace = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_mesh_metrics_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_mesh_metrics_loc_conf_t *prev = parent;
    ngx_http_mesh_metrics_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t           *clcf;
    ngx_http_mesh_metrics_main_conf_t  *mmcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_value(conf->trace, prev->trace, 0);
    ngx_conf_merge_str_value(conf->route, prev->route, "");

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_mesh_metrics_module);

    if (conf->enable && mmcf->zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mesh_metrics on\" needs "
                           "\"mesh_metrics zone=name:size\" at http level");
        return NGX_CONF_ERROR;
    }

    if (conf->route.len) {
        conf->label = conf->route;
        return NGX_CONF_OK;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /*
     * A location's name is configuration, never request data: a prefix,
     * an exact name or, for a regex location, its pattern.  Bytes that a
     * label cannot carry are replaced and quotes escaped when the value is
     * stored and exported, as for any label.
     */

    if (clcf->name.len) {
        conf->label = clcf->name;

    } else {
        ngx_str_set(&conf->label, "default");
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_mesh_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mesh_metrics_loc_conf_t *lcf = conf;

    ngx_str_t  *value;

    if (lcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "on") == 0) {
        lcf->enable = 1;
        return NGX_CONF_OK;
    }

    if (ngx_strcmp(value[1].data, "off") == 0) {
        lcf->enable = 0;
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value[1].data, "zone=", 5) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\": expected "
                           "\"zone=name:size\", \"on\" or \"off\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (cf->cmd_type != NGX_HTTP_MAIN_CONF) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mesh_metrics zone=\" is only allowed at "
                           "http level");
        return NGX_CONF_ERROR;
    }

    lcf->enable = 1;

    return ngx_http_mesh_metrics_zone(cf, &value[1]);
}


static char *
ngx_http_mesh_metrics_zone(ngx_conf_t *cf, ngx_str_t *value)
{
    ssize_t                             size;
    ngx_str_t                           name;
    ngx_http_mesh_metrics_zone_t       *zone;
    ngx_http_mesh_metrics_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_mesh_metrics_module);

    if (ngx_meshgate_zone_parse(cf, value, &name, &size) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    /* the series table needs more room than the 8 pages of the parser */

    if (size < (ssize_t) (32 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small: at least %uzk",
                           value, 32 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_mesh_metrics_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->shm_zone = ngx_shared_memory_add(cf, &name, size,
                                           &ngx_http_mesh_metrics_module);
    if (zone->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (zone->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used", &name);
        return NGX_CONF_ERROR;
    }

    zone->shm_zone->init = ngx_http_mesh_metrics_init_zone;
    zone->shm_zone->data = zone;

    mmcf->zone = zone;

    return NGX_CONF_OK;
}


static char *
ngx_http_mesh_metrics_route(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mesh_metrics_loc_conf_t *lcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (lcf->route.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > NGX_HTTP_MESH_METRICS_MAX_VALUE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "route name must be 1 to %d characters",
                           NGX_HTTP_MESH_METRICS_MAX_VALUE);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < value[1].len; i++) {
        if (value[1].data[i] < 0x21 || value[1].data[i] > 0x7e) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid character in route name \"%V\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    lcf->route = value[1];

    return NGX_CONF_OK;
}


static char *
ngx_http_mesh_metrics_buckets(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mesh_metrics_main_conf_t *mmcf = conf;

    ngx_int_t    usec;
    ngx_str_t   *value;
    ngx_uint_t   i, *b, prev;

    if (mmcf->buckets) {
        return "is duplicate";
    }

    if (cf->args->nelts - 1 > NGX_HTTP_MESH_METRICS_MAX_BUCKETS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many buckets: at most %d",
                           NGX_HTTP_MESH_METRICS_MAX_BUCKETS);
        return NGX_CONF_ERROR;
    }

    mmcf->buckets = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                     sizeof(ngx_uint_t));
    if (mmcf->buckets == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;
    prev = 0;

    for (i = 1; i < cf->args->nelts; i++) {
        usec = ngx_atofp(value[i].data, value[i].len, 6);

        if (usec == NGX_ERROR || usec == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid bucket \"%V\": a number of seconds "
                               "above 0 with at most 6 decimals", &value[i]);
            return NGX_CONF_ERROR;
        }

        if ((ngx_uint_t) usec <= prev) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "bucket \"%V\" is not above the previous one",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        b = ngx_array_push(mmcf->buckets);
        if (b == NULL) {
            return NGX_CONF_ERROR;
        }

        *b = usec;
        prev = usec;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_mesh_metrics_export(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mesh_metrics_loc_conf_t *lcf = conf;

    ngx_str_t                          *value;
    ngx_http_core_loc_conf_t           *clcf;
    ngx_http_mesh_metrics_main_conf_t  *mmcf;

    if (lcf->export) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "prometheus") == 0) {
        lcf->export = NGX_HTTP_MESH_METRICS_EXPORT_PROMETHEUS;

    } else if (ngx_strcmp(value[1].data, "graph") == 0) {
        lcf->export = NGX_HTTP_MESH_METRICS_EXPORT_GRAPH;

    } else if (ngx_strcmp(value[1].data, "dashboard") == 0) {
        lcf->export = NGX_HTTP_MESH_METRICS_EXPORT_DASHBOARD;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid format \"%V\": expected \"prometheus\", "
                           "\"graph\" or \"dashboard\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_mesh_metrics_module);

    if (mmcf->export_file == NULL) {
        mmcf->export_file = cf->conf_file->file.name.data;
        mmcf->export_line = cf->conf_file->line;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_mesh_metrics_export_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_mesh_metrics_trace(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_mesh_metrics_loc_conf_t *lcf = conf;

    char                               *rv;
    ngx_http_mesh_metrics_main_conf_t  *mmcf;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (lcf->trace) {
        mmcf = ngx_http_conf_get_module_main_conf(cf,
                                                ngx_http_mesh_metrics_module);
        mmcf->trace_used = 1;
    }

    return NGX_CONF_OK;
}


/*
 * mesh_trace_export otlp=http://host[:port][/path] [batch=n]
 *                   [interval=time] [sampler=parent|ratio:x] [service=name]
 */

static char *
ngx_http_mesh_metrics_trace_export(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_mesh_metrics_main_conf_t *mmcf = conf;

    ngx_int_t                      n;
    ngx_str_t                     *value, s;
    ngx_uint_t                     i;
    ngx_http_mesh_metrics_otlp_t  *otlp;

    if (mmcf->otlp) {
        return "is duplicate";
    }

    otlp = ngx_pcalloc(cf->pool, sizeof(ngx_http_mesh_metrics_otlp_t));
    if (otlp == NULL) {
        return NGX_CONF_ERROR;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     otlp->service = { 0, NULL };
     *
     * an unset ratio is the parent-based sampler
     */

    otlp->batch = NGX_CONF_UNSET_UINT;
    otlp->interval = NGX_CONF_UNSET_MSEC;
    otlp->ratio = NGX_CONF_UNSET_UINT;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "otlp=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (ngx_http_mesh_metrics_otlp_url(cf, otlp, &s)
                != NGX_CONF_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "batch=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);

            if (n < 1 || n > 8192) {
                goto invalid;
            }

            otlp->batch = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "interval=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            n = ngx_parse_time(&s, 0);

            if (n == NGX_ERROR || n < 10 || n > 3600000) {
                goto invalid;
            }

            otlp->interval = n;
            continue;
        }

        if (ngx_strcmp(value[i].data, "sampler=parent") == 0) {
            otlp->ratio = NGX_CONF_UNSET_UINT;
            continue;
        }

        if (ngx_strncmp(value[i].data, "sampler=ratio:", 14) == 0) {
            n = ngx_atofp(value[i].data + 14, value[i].len - 14, 6);

            if (n == NGX_ERROR || n > 1000000) {
                goto invalid;
            }

            otlp->ratio = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "service=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            if (s.len == 0 || s.len > NGX_HTTP_MESH_METRICS_MAX_VALUE
                || !ngx_meshgate_text_is_safe(s.data, s.len)
                || !ngx_meshgate_utf8_is_valid(s.data, s.len))
            {
                goto invalid;
            }

            otlp->service = s;
            continue;
        }

        goto invalid;
    }

    if (otlp->addr.sockaddr == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"mesh_trace_export\" needs "
                           "\"otlp=http://host:port/path\"");
        return NGX_CONF_ERROR;
    }

    mmcf->otlp = otlp;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" (batch=1..8192, "
                       "interval=10ms..1h, sampler=parent|ratio:0..1, "
                       "service=1 to %d printable UTF-8 bytes)",
                       &value[i], NGX_HTTP_MESH_METRICS_MAX_VALUE);

    return NGX_CONF_ERROR;
}


/* the collector's address is resolved once, when the config is loaded */

static char *
ngx_http_mesh_metrics_otlp_url(ngx_conf_t *cf,
    ngx_http_mesh_metrics_otlp_t *otlp, ngx_str_t *value)
{
    ngx_url_t  u;

    if (value->len <= 7 || ngx_strncasecmp(value->data,
                                           (u_char *) "http://", 7) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid OTLP URL \"%V\": only http:// is "
                           "supported", value);
        return NGX_CONF_ERROR;
    }

    if (value->len > 1024 || !ngx_meshgate_text_is_safe(value->data,
                                                        value->len))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid OTLP URL \"%V\"", value);
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.data = value->data + 7;
    u.url.len = value->len - 7;
    u.default_port = 4318;
    u.uri_part = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid OTLP URL \"%V\": %s", value,
                           u.err ? u.err : "cannot parse");
        return NGX_CONF_ERROR;
    }

    if (u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "OTLP collector \"%V\" has no address", value);
        return NGX_CONF_ERROR;
    }

    otlp->addr = u.addrs[0];

    /* "host[:port]" as written, for the Host header */

    otlp->host.data = u.url.data;
    otlp->host.len = u.uri.len ? (size_t) (u.uri.data - u.url.data)
                               : u.url.len;

    if (u.uri.len) {
        otlp->uri = u.uri;

    } else {
        ngx_str_set(&otlp->uri, "/v1/traces");
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_mesh_metrics_init_process(ngx_cycle_t *cycle)
{
    ngx_http_mesh_metrics_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_mesh_metrics_module);

    if (mmcf == NULL) {
        return NGX_OK;
    }

    ngx_http_mesh_metrics_trace_seed();

    return ngx_http_mesh_metrics_otlp_init_process(cycle, mmcf);
}


static void
ngx_http_mesh_metrics_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_mesh_metrics_otlp_exit_process(cycle);
    ngx_http_mesh_metrics_trace_exit_process();
}


static ngx_int_t
ngx_http_mesh_metrics_preconfiguration(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_mesh_metrics_route_name,
                                NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_mesh_metrics_route_variable;

    var = ngx_http_add_variable(cf, &ngx_http_mesh_metrics_opt_prefix,
                                NGX_HTTP_VAR_PREFIX|NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_mesh_metrics_opt_variable;

    return ngx_http_mesh_metrics_trace_add_variables(cf);
}


static ngx_int_t
ngx_http_mesh_metrics_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt                *h;
    ngx_http_core_main_conf_t          *cmcf;
    ngx_http_mesh_metrics_main_conf_t  *mmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_mesh_metrics_module);

    if (mmcf->trace_used) {
        h = ngx_array_push(&cmcf->phases[NGX_HTTP_REWRITE_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_mesh_metrics_trace_handler;
    }

    if (mmcf->trace_used || mmcf->zone) {
        if (ngx_http_mesh_metrics_trace_wrap_upstreams(cf) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (mmcf->otlp) {
        if (!mmcf->trace_used) {
            ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                          "\"mesh_trace_export\" exports nothing "
                          "without \"mesh_trace on\"");
        }

        h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_mesh_metrics_otlp_log_handler;
    }

    if (mmcf->zone == NULL) {
        return NGX_OK;
    }

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_mesh_metrics_log_handler;

    /* other modules' variables, used only when some module defines them */

    mmcf->auth_jwt = ngx_http_mesh_metrics_find_variable(cf,
                                                   "auth_jwt_result", NULL);
    mmcf->auth_key = ngx_http_mesh_metrics_find_variable(cf,
                                                   "auth_key_result", NULL);
    mmcf->auth_introspect = ngx_http_mesh_metrics_find_variable(cf,
                                            "auth_introspect_result", NULL);
    mmcf->rate_limit = ngx_http_mesh_metrics_find_variable(cf,
                                                 "rate_limit_status", NULL);
    mmcf->aggregate = ngx_http_mesh_metrics_find_variable(cf,
                                            "aggregate_failed_parts", NULL);
    mmcf->retries = ngx_http_mesh_metrics_find_variable(cf, "mesh_retries",
                                                        NULL);
    mmcf->peer_id = ngx_http_mesh_metrics_find_variable(cf, "mesh_peer_id",
                                                        NULL);
    mmcf->consumer = ngx_http_mesh_metrics_find_variable(cf,
                                                 "auth_key_consumer", NULL);
    mmcf->subject = ngx_http_mesh_metrics_find_variable(cf, "jwt_claim_sub",
                                                        "jwt_claim_");

    return ngx_http_mesh_metrics_find_splits(cf, mmcf);
}


/*
 * The $traffic_split_<name> variables that the configuration uses (those
 * with an index: proxy_pass, map, set, log_format...).  A variable that
 * nothing uses is never computed, so it has nothing to show.
 */

static ngx_int_t
ngx_http_mesh_metrics_find_splits(ngx_conf_t *cf,
    ngx_http_mesh_metrics_main_conf_t *mmcf)
{
    size_t                          len;
    ngx_uint_t                      i;
    ngx_http_variable_t            *v;
    ngx_http_core_main_conf_t      *cmcf;
    ngx_http_mesh_metrics_split_t  *split;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    len = ngx_http_mesh_metrics_split_prefix.len;
    v = cmcf->variables.elts;

    for (i = 0; i < cmcf->variables.nelts; i++) {

        if (v[i].name.len <= len
            || ngx_strncasecmp(v[i].name.data,
                               ngx_http_mesh_metrics_split_prefix.data, len)
               != 0)
        {
            continue;
        }

        if (mmcf->splits == NULL) {
            mmcf->splits = ngx_array_create(cf->pool, 2,
                                         sizeof(ngx_http_mesh_metrics_split_t));
            if (mmcf->splits == NULL) {
                return NGX_ERROR;
            }
        }

        split = ngx_array_push(mmcf->splits);
        if (split == NULL) {
            return NGX_ERROR;
        }

        split->name.data = v[i].name.data + len;
        split->name.len = v[i].name.len - len;
        split->index = i;
    }

    return NGX_OK;
}


/*
 * The index of a variable that a loaded module (or map, set, ...) has
 * declared, or NGX_ERROR: asking for an index of an undeclared variable
 * would fail the configuration with "unknown variable".
 */

static ngx_int_t
ngx_http_mesh_metrics_find_variable(ngx_conf_t *cf, char *name,
    char *prefix)
{
    size_t                      len;
    ngx_str_t                   s;
    ngx_uint_t                  i, found;
    ngx_hash_key_t             *key;
    ngx_http_variable_t        *pv;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    s.data = (u_char *) name;
    s.len = ngx_strlen(name);
    found = 0;

    key = cmcf->variables_keys->keys.elts;

    for (i = 0; i < cmcf->variables_keys->keys.nelts; i++) {
        if (key[i].key.len == s.len
            && ngx_strncasecmp(key[i].key.data, s.data, s.len) == 0)
        {
            found = 1;
            break;
        }
    }

    if (!found && prefix) {
        len = ngx_strlen(prefix);
        pv = cmcf->prefix_variables.elts;

        for (i = 0; i < cmcf->prefix_variables.nelts; i++) {
            if (pv[i].name.len == len
                && ngx_strncasecmp(pv[i].name.data, (u_char *) prefix, len)
                   == 0)
            {
                found = 1;
                break;
            }
        }
    }

    if (!found) {
        return NGX_ERROR;
    }

    return ngx_http_get_variable_index(cf, &s);
}
