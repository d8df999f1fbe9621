
/*
 * Copyright (C) meshgate contributors
 */


/*
 * upstream_mesh: directives, shared state, configuration and process
 * hooks.  The balancer, retries and status live in their own files.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_upstream_mesh.h"
#include "ngx_meshgate_prometheus.h"
#include "ngx_meshgate_http.h"


static ngx_int_t ngx_http_upstream_mesh_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_upstream_mesh_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_upstream_mesh_init_state(
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_http_upstream_mesh_sh_t *sh);
static ngx_int_t ngx_http_upstream_mesh_add_zone(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf);
static ngx_int_t ngx_http_upstream_mesh_collect_peers(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf);
static void ngx_http_upstream_mesh_init_defaults(
    ngx_http_upstream_mesh_srv_conf_t *mcf);
static char *ngx_http_upstream_mesh_mark(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf);
static ngx_str_t ngx_http_upstream_mesh_arg_value(ngx_str_t *arg);
static ngx_int_t ngx_http_upstream_mesh_printable(ngx_conf_t *cf,
    ngx_str_t *arg);
static ngx_int_t ngx_http_upstream_mesh_hc_status(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_str_t *arg);
static ngx_int_t ngx_http_upstream_mesh_hc_body(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_str_t *arg);
static char *ngx_http_upstream_mesh_health_check(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_upstream_mesh_outlier(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_upstream_mesh_budget(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_upstream_mesh_breaker(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_upstream_mesh_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_upstream_mesh_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_upstream_mesh_postconf(ngx_conf_t *cf);
static void *ngx_http_upstream_mesh_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_upstream_mesh_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_upstream_mesh_create_srv_conf(ngx_conf_t *cf);
static void *ngx_http_upstream_mesh_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_upstream_mesh_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_upstream_mesh_init_process(ngx_cycle_t *cycle);
static void ngx_http_upstream_mesh_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_upstream_mesh_rr_index(ngx_cycle_t *cycle,
    ngx_http_upstream_mesh_srv_conf_t *mcf);
ngx_chain_t *ngx_http_upstream_mesh_prometheus(ngx_pool_t *pool,
    ngx_log_t *log);


static ngx_command_t  ngx_http_upstream_mesh_commands[] = {

    { ngx_string("mesh_health_check"),
      NGX_HTTP_UPS_CONF|NGX_CONF_ANY,
      ngx_http_upstream_mesh_health_check,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_outlier_detection"),
      NGX_HTTP_UPS_CONF|NGX_CONF_ANY,
      ngx_http_upstream_mesh_outlier,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_retry_budget"),
      NGX_HTTP_UPS_CONF|NGX_CONF_1MORE,
      ngx_http_upstream_mesh_budget,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_discovery"),
      NGX_HTTP_UPS_CONF|NGX_CONF_1MORE,
      ngx_http_upstream_mesh_discovery,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_circuit_breaker"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_http_upstream_mesh_breaker,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_retry"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_upstream_mesh_retry,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("mesh_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_upstream_mesh_loc_conf_t, timeout),
      NULL },

    { ngx_string("mesh_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_upstream_mesh_status,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_upstream_mesh_module_ctx = {
    ngx_http_upstream_mesh_add_variables,  /* preconfiguration */
    ngx_http_upstream_mesh_postconf,       /* postconfiguration */

    ngx_http_upstream_mesh_create_main_conf, /* create main configuration */
    ngx_http_upstream_mesh_init_main_conf, /* init main configuration */

    ngx_http_upstream_mesh_create_srv_conf, /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_upstream_mesh_create_loc_conf, /* create location configuration */
    ngx_http_upstream_mesh_merge_loc_conf  /* merge location configuration */
};


ngx_module_t  ngx_http_upstream_mesh_module = {
    NGX_MODULE_V1,
    &ngx_http_upstream_mesh_module_ctx,    /* module context */
    ngx_http_upstream_mesh_commands,       /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_upstream_mesh_init_process,   /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_upstream_mesh_exit_process,   /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_upstream_mesh_vars[] = {

    { ngx_string("mesh_attempts"), NULL, ngx_http_upstream_mesh_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("mesh_retries"), NULL, ngx_http_upstream_mesh_variable,
      1, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("mesh_peer_state"), NULL, ngx_http_upstream_mesh_variable,
      2, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


/*
 * When a Retry-After longer than max_backoff stops the retries, nginx
 * answers with the peer's status itself; the client gets the Retry-After
 */

static ngx_int_t
ngx_http_upstream_mesh_header_filter(ngx_http_request_t *r)
{
    ngx_table_elt_t               *h;
    ngx_http_upstream_mesh_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_upstream_mesh_module);

    if (ctx == NULL || ctx->final_status == 0
        || r->headers_out.status != ctx->final_status)
    {
        return ngx_http_next_header_filter(r);
    }

    ctx->final_status = 0;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");

    h->value.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (h->value.data == NULL) {
        return NGX_ERROR;
    }

    h->value.len = ngx_sprintf(h->value.data, "%i", ctx->final_retry_after)
                   - h->value.data;

    return ngx_http_next_header_filter(r);
}


/* shared state */

static ngx_int_t
ngx_http_upstream_mesh_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_upstream_mesh_srv_conf_t  *omcf = data;

    size_t                               len;
    ngx_uint_t                           i, n, same;
    ngx_slab_pool_t                     *shpool;
    ngx_http_upstream_mesh_sh_t         *sh;
    ngx_http_upstream_mesh_peer_conf_t  *pcf;
    ngx_http_upstream_mesh_srv_conf_t   *mcf;

    mcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    mcf->shpool = shpool;

    pcf = mcf->peers.elts;
    n = mcf->peers.nelts;

    if (shm_zone->shm.exists) {
        mcf->sh = shpool->data;
        return NGX_OK;
    }

    if (omcf && omcf->sh) {

        /* reload: keep the state when the peers are the same */

        sh = omcf->sh;
        same = (sh->npeers == n);

        for (i = 0; same && i < n; i++) {

            /* a discovery slot keeps its discovered peer */

            if (pcf[i].dyn) {
                same = (sh->peers[i].dyn
                        && sh->peers[i].backup == pcf[i].backup);
                continue;
            }

            same = (!sh->peers[i].dyn
                    && sh->peers[i].name_len == pcf[i].name.len
                    && ngx_memcmp(sh->peers[i].name, pcf[i].name.data,
                                  pcf[i].name.len) == 0
                    && sh->peers[i].backup == pcf[i].backup);
        }

        if (same) {
            for (i = 0; i < n; i++) {
                sh->peers[i].cfg_down = pcf[i].dyn ? 0 : pcf[i].down;
            }

            mcf->sh = sh;
            return NGX_OK;
        }

        /*
         * other peers (the zone name has a checksum of the peer list, so
         * this is a checksum collision): fresh state, beside the old one,
         * which the old workers use until they exit
         */

    } else {
        len = sizeof(" in upstream mesh zone \"\"") + shm_zone->shm.name.len;

        shpool->log_ctx = ngx_slab_alloc(shpool, len);
        if (shpool->log_ctx == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(shpool->log_ctx, " in upstream mesh zone \"%V\"%Z",
                    &shm_zone->shm.name);
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_upstream_mesh_sh_t)
                         + n * sizeof(ngx_http_upstream_mesh_peer_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_http_upstream_mesh_init_state(mcf, sh);

    return NGX_OK;
}


static void
ngx_http_upstream_mesh_init_state(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_http_upstream_mesh_sh_t *sh)
{
    ngx_uint_t                           i;
    ngx_http_upstream_mesh_peer_sh_t    *p;
    ngx_http_upstream_mesh_peer_conf_t  *pcf;

    pcf = mcf->peers.elts;

    sh->npeers = mcf->peers.nelts;

    for (i = 0; i < sh->npeers; i++) {
        p = &sh->peers[i];
        p->name_len = ngx_min(pcf[i].name.len, NGX_SOCKADDR_STRLEN);
        ngx_memcpy(p->name, pcf[i].name.data, p->name_len);
        p->backup = pcf[i].backup;
        p->dyn = pcf[i].dyn;

        /* an empty discovery slot is out by being empty, not down */

        p->cfg_down = pcf[i].dyn ? 0 : pcf[i].down;
        p->unhealthy = (mcf->hc_type && mcf->hc_initial_unhealthy);
    }

    mcf->shpool->data = sh;
    mcf->sh = sh;
}


static ngx_int_t
ngx_http_upstream_mesh_add_zone(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    size_t                               size;
    uint32_t                             crc;
    ngx_str_t                            name;
    ngx_uint_t                           i;
    ngx_shm_zone_t                      *shm_zone;
    ngx_http_upstream_mesh_peer_conf_t  *pcf;

    /*
     * The zone is kept on reload only for the same peer list, whose
     * checksum is in its name.  Another list gets a new zone: the old
     * workers keep theirs until they exit, and their requests in flight,
     * probes and outcomes never touch the state of the new peers.
     */

    pcf = mcf->peers.elts;

    ngx_crc32_init(crc);

    for (i = 0; i < mcf->peers.nelts; i++) {
        ngx_crc32_update(&crc, pcf[i].name.data, pcf[i].name.len);
        ngx_crc32_update(&crc, (u_char *) (pcf[i].backup ? "+" : "-"), 1);
    }

    ngx_crc32_final(crc);

    name.len = sizeof("upstream_mesh::") - 1 + mcf->uscf->host.len + 8;
    name.data = ngx_pnalloc(cf->pool, name.len);
    if (name.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(name.data, "upstream_mesh:%V:%08xD", &mcf->uscf->host, crc);

    size = sizeof(ngx_http_upstream_mesh_sh_t)
           + mcf->peers.nelts * sizeof(ngx_http_upstream_mesh_peer_sh_t);
    size = ngx_align(size, ngx_pagesize) + 8 * ngx_pagesize;

    shm_zone = ngx_shared_memory_add(cf, &name, size,
                                     &ngx_http_upstream_mesh_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    if (shm_zone->data) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "shared memory zone \"%V\" is already used in %V:%ui",
                      &name, &mcf->file, mcf->line);
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_upstream_mesh_init_zone;
    shm_zone->data = mcf;

    mcf->shm_zone = shm_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_mesh_collect_peers(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    ngx_uint_t                           backup;
    ngx_http_upstream_rr_peer_t         *peer;
    ngx_http_upstream_rr_peers_t        *peers;
    ngx_http_upstream_mesh_peer_conf_t  *pcf;

    peers = mcf->uscf->peer.data;

    if (peers == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "the balancer of upstream \"%V\" does not work with "
                      "mesh directives in %V:%ui",
                      &mcf->uscf->host, &mcf->file, mcf->line);
        return NGX_ERROR;
    }

    if (ngx_array_init(&mcf->peers, cf->pool, 4,
                       sizeof(ngx_http_upstream_mesh_peer_conf_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (backup = 0; peers; peers = peers->next, backup++) {
        for (peer = peers->peer; peer; peer = peer->next) {
            pcf = ngx_array_push(&mcf->peers);
            if (pcf == NULL) {
                return NGX_ERROR;
            }

            pcf->sockaddr = peer->sockaddr;
            pcf->socklen = peer->socklen;
            pcf->name = peer->name;
            pcf->backup = backup;
            pcf->down = peer->down;
            pcf->dyn = 0;
        }
    }

    return NGX_OK;
}


static void
ngx_http_upstream_mesh_init_defaults(ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    /* upstream blocks have no merge: the defaults of mesh_* live here */

    ngx_conf_init_uint_value(mcf->hc_type, 0);
    ngx_conf_init_msec_value(mcf->hc_interval, 5000);
    ngx_conf_init_msec_value(mcf->hc_timeout, 1000);
    ngx_conf_init_uint_value(mcf->hc_fails, 2);
    ngx_conf_init_uint_value(mcf->hc_passes, 2);
    ngx_conf_init_uint_value(mcf->hc_status_min, 200);
    ngx_conf_init_uint_value(mcf->hc_status_max, 399);
    ngx_conf_init_uint_value(mcf->hc_initial_unhealthy, 0);

    if (mcf->hc_uri.data == NULL) {
        ngx_str_set(&mcf->hc_uri, "/");
    }

    ngx_conf_init_uint_value(mcf->od_enabled, 0);
    ngx_conf_init_uint_value(mcf->od_5xx, 5);
    ngx_conf_init_uint_value(mcf->od_gw, 0);
    ngx_conf_init_msec_value(mcf->od_base, 30000);
    ngx_conf_init_msec_value(mcf->od_max, ngx_max(300000, mcf->od_base));
    ngx_conf_init_uint_value(mcf->od_max_percent, 10);

    ngx_conf_init_uint_value(mcf->budget_percent, 20);
    ngx_conf_init_uint_value(mcf->budget_min, 10);

    ngx_conf_init_uint_value(mcf->cb_max, 0);
}


/* directives */

static char *
ngx_http_upstream_mesh_mark(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    if (!mcf->enabled) {
        mcf->enabled = 1;
        mcf->file = cf->conf_file->file.name;
        mcf->line = cf->conf_file->line;
    }

    return NGX_CONF_OK;
}


/*
 * The value of a "name=value" parameter whose name was matched with
 * ngx_http_upstream_mesh_key(): what follows the first "=".
 */

static ngx_str_t
ngx_http_upstream_mesh_arg_value(ngx_str_t *arg)
{
    u_char     *eq;
    ngx_str_t   v;

    eq = ngx_strlchr(arg->data, arg->data + arg->len, '=');

    v.data = eq ? eq + 1 : arg->data + arg->len;
    v.len = arg->data + arg->len - v.data;

    return v;
}


ngx_int_t
ngx_http_upstream_mesh_uint_arg(ngx_conf_t *cf, ngx_str_t *arg,
    ngx_uint_t *out)
{
    ngx_int_t  n;
    ngx_str_t  s;

    s = ngx_http_upstream_mesh_arg_value(arg);
    n = ngx_atoi(s.data, s.len);

    if (n == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number in \"%V\"", arg);
        return NGX_ERROR;
    }

    *out = n;

    return NGX_OK;
}


ngx_int_t
ngx_http_upstream_mesh_msec_arg(ngx_conf_t *cf, ngx_str_t *arg,
    ngx_msec_t *out)
{
    ngx_str_t  s;
    ngx_int_t  n;

    s = ngx_http_upstream_mesh_arg_value(arg);
    n = ngx_parse_time(&s, 0);

    if (n == NGX_ERROR || n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid time in \"%V\"", arg);
        return NGX_ERROR;
    }

    *out = (ngx_msec_t) n;

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_mesh_printable(ngx_conf_t *cf, ngx_str_t *arg)
{
    u_char  *p;

    for (p = arg->data; p < arg->data + arg->len; p++) {
        if (*p <= ' ' || *p == 0x7f) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid character in \"%V\"", arg);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_mesh_hc_status(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_str_t *arg)
{
    u_char     *dash, *p, *last;
    ngx_int_t   min, max;

    /* status=nnn or status=nnn-nnn */

    p = arg->data + 7;
    last = arg->data + arg->len;
    dash = ngx_strlchr(p, last, '-');

    if (dash) {
        min = ngx_atoi(p, dash - p);
        max = ngx_atoi(dash + 1, last - dash - 1);

    } else {
        min = ngx_atoi(p, last - p);
        max = min;
    }

    if (min == NGX_ERROR || max == NGX_ERROR || min < 100 || max > 599
        || min > max)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid status range \"%V\"", arg);
        return NGX_ERROR;
    }

    mcf->hc_status_min = min;
    mcf->hc_status_max = max;

    return NGX_OK;
}


static ngx_int_t
ngx_http_upstream_mesh_hc_body(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf, ngx_str_t *arg)
{
    u_char               errstr[NGX_MAX_CONF_ERRSTR];
    ngx_str_t            s;
    ngx_regex_compile_t  rc;

    /* body=~regex (the tilde is optional), PCRE2 through ngx_regex */

    s.data = arg->data + 5;
    s.len = arg->len - 5;

    if (s.len && s.data[0] == '~') {
        s.data++;
        s.len--;
    }

    if (s.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "empty regex in \"%V\"", arg);
        return NGX_ERROR;
    }

    ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

    rc.pattern = s;
    rc.pool = cf->pool;
    rc.err.len = NGX_MAX_CONF_ERRSTR;
    rc.err.data = errstr;

    if (ngx_regex_compile(&rc) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V", &rc.err);
        return NGX_ERROR;
    }

    mcf->hc_body = rc.regex;

    return NGX_OK;
}


static char *
ngx_http_upstream_mesh_health_check(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_mesh_srv_conf_t  *mcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i, port;

    if (mcf->hc_type != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    mcf->hc_type = NGX_HTTP_UPSTREAM_MESH_HC_HTTP;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "type=http") == 0) {
            mcf->hc_type = NGX_HTTP_UPSTREAM_MESH_HC_HTTP;

        } else if (ngx_strcmp(value[i].data, "type=tcp") == 0) {
            mcf->hc_type = NGX_HTTP_UPSTREAM_MESH_HC_TCP;

        } else if (ngx_http_upstream_mesh_key(&value[i], "uri=")) {
            mcf->hc_uri.data = value[i].data + 4;
            mcf->hc_uri.len = value[i].len - 4;

            if (mcf->hc_uri.len == 0 || mcf->hc_uri.data[0] != '/') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"uri\" must start with \"/\" in \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            if (ngx_http_upstream_mesh_printable(cf, &value[i]) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "host=")) {
            mcf->hc_host.data = value[i].data + 5;
            mcf->hc_host.len = value[i].len - 5;

            if (ngx_http_upstream_mesh_printable(cf, &value[i]) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "interval=")) {
            if (ngx_http_upstream_mesh_msec_arg(cf, &value[i],
                                                &mcf->hc_interval)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "timeout=")) {
            if (ngx_http_upstream_mesh_msec_arg(cf, &value[i],
                                                &mcf->hc_timeout)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "fails=")) {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->hc_fails)
                != NGX_OK || mcf->hc_fails == 0)
            {
                return "has invalid \"fails\"";
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "passes=")) {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->hc_passes)
                != NGX_OK || mcf->hc_passes == 0)
            {
                return "has invalid \"passes\"";
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "port=")) {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i], &port)
                != NGX_OK || port == 0 || port > 65535)
            {
                return "has invalid \"port\"";
            }

            mcf->hc_port = (in_port_t) port;

        } else if (ngx_http_upstream_mesh_key(&value[i], "status=")) {
            if (ngx_http_upstream_mesh_hc_status(cf, mcf, &value[i])
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "body=")) {
            if (ngx_http_upstream_mesh_hc_body(cf, mcf, &value[i])
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_strcmp(value[i].data, "initial=unhealthy") == 0) {
            mcf->hc_initial_unhealthy = 1;

        } else if (ngx_strcmp(value[i].data, "initial=healthy") == 0) {
            mcf->hc_initial_unhealthy = 0;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (mcf->hc_timeout != NGX_CONF_UNSET_MSEC
        && mcf->hc_interval != NGX_CONF_UNSET_MSEC
        && mcf->hc_timeout > mcf->hc_interval)
    {
        return "has \"timeout\" longer than \"interval\"";
    }

    if (mcf->hc_type == NGX_HTTP_UPSTREAM_MESH_HC_TCP
        && (mcf->hc_body || mcf->hc_uri.data))
    {
        return "has \"uri\" or \"body\" with \"type=tcp\"";
    }

    return ngx_http_upstream_mesh_mark(cf, mcf);
}


static char *
ngx_http_upstream_mesh_outlier(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_mesh_srv_conf_t  *mcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (mcf->od_enabled != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    mcf->od_enabled = 1;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_http_upstream_mesh_key(&value[i], "consecutive_5xx=")) {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->od_5xx)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i],
                                              "consecutive_gateway_errors="))
        {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->od_gw)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i],
                                              "base_ejection_time="))
        {
            if (ngx_http_upstream_mesh_msec_arg(cf, &value[i],
                                                &mcf->od_base)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i],
                                              "max_ejection_time="))
        {
            if (ngx_http_upstream_mesh_msec_arg(cf, &value[i],
                                                &mcf->od_max)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_upstream_mesh_key(&value[i],
                                              "max_ejection_percent="))
        {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->od_max_percent)
                != NGX_OK || mcf->od_max_percent > 100)
            {
                return "has invalid \"max_ejection_percent\"";
            }

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (mcf->od_5xx == 0
        && (mcf->od_gw == 0 || mcf->od_gw == NGX_CONF_UNSET_UINT))
    {
        return "disables both consecutive_5xx and "
               "consecutive_gateway_errors";
    }

    return ngx_http_upstream_mesh_mark(cf, mcf);
}


static char *
ngx_http_upstream_mesh_budget(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_mesh_srv_conf_t  *mcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (mcf->budget_percent != NGX_CONF_UNSET_UINT
        || mcf->budget_min != NGX_CONF_UNSET_UINT)
    {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_http_upstream_mesh_key(&value[i], "percent=")) {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->budget_percent)
                != NGX_OK || mcf->budget_percent > 1000)
            {
                return "has invalid \"percent\"";
            }

        } else if (ngx_http_upstream_mesh_key(&value[i], "min_per_second=")) {
            if (ngx_http_upstream_mesh_uint_arg(cf, &value[i],
                                                &mcf->budget_min)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    return ngx_http_upstream_mesh_mark(cf, mcf);
}


static char *
ngx_http_upstream_mesh_breaker(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_upstream_mesh_srv_conf_t  *mcf = conf;

    ngx_str_t  *value;

    if (mcf->cb_max != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (!ngx_http_upstream_mesh_key(&value[1], "max_requests=")) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_upstream_mesh_uint_arg(cf, &value[1], &mcf->cb_max)
        != NGX_OK || mcf->cb_max == 0)
    {
        return "has invalid \"max_requests\"";
    }

    return ngx_http_upstream_mesh_mark(cf, mcf);
}


static char *
ngx_http_upstream_mesh_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_upstream_mesh_status_handler;

    return NGX_CONF_OK;
}


/* configuration */

static ngx_int_t
ngx_http_upstream_mesh_add_variables(ngx_conf_t *cf)
{
    return ngx_meshgate_add_variables(cf, ngx_http_upstream_mesh_vars);
}


static ngx_int_t
ngx_http_upstream_mesh_postconf(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_upstream_mesh_preaccess;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_upstream_mesh_header_filter;

    return NGX_OK;
}


static void *
ngx_http_upstream_mesh_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_upstream_mesh_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_upstream_mesh_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&mmcf->upstreams, cf->pool, 4,
                       sizeof(ngx_http_upstream_mesh_srv_conf_t *))
        != NGX_OK)
    {
        return NULL;
    }

    mmcf->proxy_index = NGX_CONF_UNSET;
    mmcf->grpc_index = NGX_CONF_UNSET;

    return mmcf;
}


static char *
ngx_http_upstream_mesh_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_upstream_mesh_main_conf_t  *mmcf = conf;

    ngx_uint_t                           i;
    ngx_module_t                        *m;
    ngx_http_upstream_srv_conf_t       **uscfp, *uscf;
    ngx_http_upstream_rr_peers_t        *peers;
    ngx_http_upstream_main_conf_t       *umcf;
    ngx_http_upstream_mesh_srv_conf_t   *mcf, **mcfp;

    mmcf->proxy_index = -1;
    mmcf->grpc_index = -1;

    for (i = 0; cf->cycle->modules[i]; i++) {
        m = cf->cycle->modules[i];

        if (ngx_strcmp(m->name, "ngx_http_proxy_module") == 0) {
            mmcf->proxy_index = m->ctx_index;

        } else if (ngx_strcmp(m->name, "ngx_http_grpc_module") == 0) {
            mmcf->grpc_index = m->ctx_index;
        }
    }

    /*
     * the upstream module has run init_upstream for every upstream, so
     * every other balancer (keepalive, hash, ...) has set its peer.init:
     * ours wraps whatever is there
     */

    umcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_upstream_module);
    uscfp = umcf->upstreams.elts;

    for (i = 0; i < umcf->upstreams.nelts; i++) {
        uscf = uscfp[i];

        if (uscf->srv_conf == NULL || uscf->peer.init == NULL) {
            continue;
        }

        mcf = ngx_http_conf_upstream_srv_conf(uscf,
                                              ngx_http_upstream_mesh_module);

        ngx_http_upstream_mesh_init_defaults(mcf);

        mcf->uscf = uscf;
        mcf->original_init_peer = uscf->peer.init;
        uscf->peer.init = ngx_http_upstream_mesh_init_peer;

        /* the balancers of nginx keep round robin's peers in peer.data */

        peers = uscf->peer.data;
        mcf->single = (peers != NULL && peers->single);

        if (!mcf->enabled) {
            continue;
        }

        if (uscf->shm_zone == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "upstream \"%V\" uses mesh directives, which keep "
                          "their state shared by all workers, but has no "
                          "\"zone\": add \"zone <name> 256k;\" to it "
                          "in %V:%ui",
                          &uscf->host, &mcf->file, mcf->line);
            return NGX_CONF_ERROR;
        }

        if (ngx_http_upstream_mesh_collect_peers(cf, mcf) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        if (mcf->disc && ngx_http_upstream_mesh_disc_conf(cf, mcf) != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (ngx_http_upstream_mesh_add_zone(cf, mcf) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        if (ngx_http_upstream_mesh_escape_names(cf, mcf) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        mcfp = ngx_array_push(&mmcf->upstreams);
        if (mcfp == NULL) {
            return NGX_CONF_ERROR;
        }

        *mcfp = mcf;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_upstream_mesh_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_upstream_mesh_srv_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_upstream_mesh_srv_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->hc_uri = { 0, NULL };
     *     mcf->hc_host = { 0, NULL };
     *     mcf->hc_body = NULL;
     *     mcf->hc_port = 0;
     *     mcf->enabled = 0;
     *     mcf->uscf = NULL;
     *     mcf->sh = NULL;
     */

    mcf->hc_type = NGX_CONF_UNSET_UINT;
    mcf->hc_interval = NGX_CONF_UNSET_MSEC;
    mcf->hc_timeout = NGX_CONF_UNSET_MSEC;
    mcf->hc_fails = NGX_CONF_UNSET_UINT;
    mcf->hc_passes = NGX_CONF_UNSET_UINT;
    mcf->hc_status_min = NGX_CONF_UNSET_UINT;
    mcf->hc_status_max = NGX_CONF_UNSET_UINT;
    mcf->hc_initial_unhealthy = NGX_CONF_UNSET_UINT;

    mcf->od_enabled = NGX_CONF_UNSET_UINT;
    mcf->od_5xx = NGX_CONF_UNSET_UINT;
    mcf->od_gw = NGX_CONF_UNSET_UINT;
    mcf->od_base = NGX_CONF_UNSET_MSEC;
    mcf->od_max = NGX_CONF_UNSET_MSEC;
    mcf->od_max_percent = NGX_CONF_UNSET_UINT;

    mcf->budget_percent = NGX_CONF_UNSET_UINT;
    mcf->budget_min = NGX_CONF_UNSET_UINT;

    mcf->cb_max = NGX_CONF_UNSET_UINT;

    return mcf;
}


static void *
ngx_http_upstream_mesh_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_upstream_mesh_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_upstream_mesh_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    lcf->retry_attempts = NGX_CONF_UNSET_UINT;
    lcf->retry_mask = NGX_CONF_UNSET_UINT;
    lcf->retry_non_idempotent = NGX_CONF_UNSET;
    lcf->retry_connect_only = NGX_CONF_UNSET;
    lcf->retry_per_try_timeout = NGX_CONF_UNSET_MSEC;
    lcf->retry_backoff = NGX_CONF_UNSET_MSEC;
    lcf->retry_max_backoff = NGX_CONF_UNSET_MSEC;
    lcf->timeout = NGX_CONF_UNSET_MSEC;

    return lcf;
}


static char *
ngx_http_upstream_mesh_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_upstream_mesh_loc_conf_t  *prev = parent;
    ngx_http_upstream_mesh_loc_conf_t  *conf = child;

    ngx_msec_t  timeout;

    /* mesh_retry is merged as a whole, mesh_timeout on its own */

    if (conf->retry_attempts == NGX_CONF_UNSET_UINT) {
        timeout = conf->timeout;
        *conf = *prev;
        conf->timeout = timeout;
    }

    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 0);

    ngx_conf_merge_uint_value(conf->retry_attempts, prev->retry_attempts, 0);
    ngx_conf_merge_uint_value(conf->retry_mask, prev->retry_mask,
                              (NGX_HTTP_UPSTREAM_MESH_RETRY_GW));
    ngx_conf_merge_value(conf->retry_non_idempotent,
                         prev->retry_non_idempotent, 0);
    ngx_conf_merge_value(conf->retry_connect_only, prev->retry_connect_only,
                         0);
    ngx_conf_merge_msec_value(conf->retry_per_try_timeout,
                              prev->retry_per_try_timeout, 0);
    ngx_conf_merge_msec_value(conf->retry_backoff, prev->retry_backoff, 25);
    ngx_conf_merge_msec_value(conf->retry_max_backoff,
                              prev->retry_max_backoff,
                              10 * conf->retry_backoff);

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_upstream_mesh_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                           i;
    ngx_http_upstream_mesh_srv_conf_t  **mcfp;
    ngx_http_upstream_mesh_main_conf_t  *mmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_upstream_mesh_module);
    if (mmcf == NULL) {
        return NGX_OK;
    }

    /* the upstream zone is new after a reload: apply the kept state */

    mcfp = mmcf->upstreams.elts;

    for (i = 0; i < mmcf->upstreams.nelts; i++) {
        if (ngx_http_upstream_mesh_rr_index(cycle, mcfp[i]) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_shmtx_lock(&mcfp[i]->shpool->mutex);
        ngx_http_upstream_mesh_apply(mcfp[i], cycle->log);
        ngx_shmtx_unlock(&mcfp[i]->shpool->mutex);
    }

    if (ngx_http_upstream_mesh_health_init(cycle, mmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_upstream_mesh_disc_init(cycle, mmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_upstream_mesh_ka_init(cycle, mmcf);
}


static void
ngx_http_upstream_mesh_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_upstream_mesh_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_upstream_mesh_module);
    if (mmcf) {
        ngx_http_upstream_mesh_disc_exit(cycle, mmcf);
    }
}


/* the zone's round-robin peers by slot, in the order of the shared state */

static ngx_int_t
ngx_http_upstream_mesh_rr_index(ngx_cycle_t *cycle,
    ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    ngx_uint_t                     i;
    ngx_http_upstream_rr_peer_t   *peer;
    ngx_http_upstream_rr_peers_t  *peers;

    mcf->rr = ngx_pcalloc(cycle->pool, mcf->sh->npeers * sizeof(void *));
    if (mcf->rr == NULL) {
        return NGX_ERROR;
    }

    i = 0;

    for (peers = mcf->uscf->peer.data; peers; peers = peers->next) {
        for (peer = peers->peer; peer && i < mcf->sh->npeers;
             peer = peer->next)
        {
            mcf->rr[i++] = peer;
        }
    }

    if (i != mcf->sh->npeers) {
        mcf->rr = NULL;
    }

    return NGX_OK;
}
