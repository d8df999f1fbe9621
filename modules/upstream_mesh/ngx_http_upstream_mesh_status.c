
/*
 * Copyright (C) meshgate contributors
 */


/*
 * mesh_status (JSON), the metrics module's Prometheus provider and the
 * $mesh_* variables.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_upstream_mesh.h"
#include "ngx_meshgate_prometheus.h"
#include "ngx_meshgate_http.h"
#include "ngx_meshgate_escape.h"


static const char *ngx_http_upstream_mesh_peer_state_name(
    ngx_http_upstream_mesh_sh_t *sh, ngx_http_upstream_mesh_peer_sh_t *p);
static ngx_buf_t *ngx_http_upstream_mesh_status_json(ngx_pool_t *pool,
    ngx_http_upstream_mesh_main_conf_t *mmcf);

static ngx_int_t ngx_http_upstream_mesh_escape_str(ngx_conf_t *cf,
    ngx_str_t *src, ngx_uint_t type, ngx_str_t *dst);


static ngx_str_t  ngx_http_upstream_mesh_state_names[] = {
    ngx_string("-"),
    ngx_string("healthy"),
    ngx_string("unhealthy"),
    ngx_string("ejected"),
    ngx_string("panic")
};


/* mesh_status */

ngx_int_t
ngx_http_upstream_mesh_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                            rc;
    ngx_buf_t                           *b;
    ngx_chain_t                          out;
    ngx_http_upstream_mesh_main_conf_t  *mmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_upstream_mesh_module);

    b = ngx_http_upstream_mesh_status_json(r->pool, mmcf);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static const char *
ngx_http_upstream_mesh_peer_state_name(ngx_http_upstream_mesh_sh_t *sh,
    ngx_http_upstream_mesh_peer_sh_t *p)
{
    if (p->cfg_down) {
        return "down";
    }

    if (p->ejected) {
        return "ejected";
    }

    if (p->unhealthy) {
        return "unhealthy";
    }

    return "healthy";
}


static ngx_buf_t *
ngx_http_upstream_mesh_status_json(ngx_pool_t *pool,
    ngx_http_upstream_mesh_main_conf_t *mmcf)
{
    size_t                               len;
    ngx_buf_t                           *b;
    ngx_msec_t                           now, until;
    ngx_uint_t                           i, j, requests, retries, span;
    ngx_uint_t                           allowed, first;
    u_char                              *end;
    u_char     name[NGX_HTTP_UPSTREAM_MESH_ESC * NGX_SOCKADDR_STRLEN];
    ngx_http_upstream_mesh_sh_t         *sh;
    ngx_http_upstream_mesh_peer_sh_t    *p;
    ngx_http_upstream_mesh_srv_conf_t  **mcfp, *mcf;

    mcfp = mmcf->upstreams.elts;

    len = sizeof("{\"upstreams\":[]}\n");

    for (i = 0; i < mmcf->upstreams.nelts; i++) {
        len += 2048 + mcfp[i]->json_name.len
               + mcfp[i]->sh->npeers
                 * (1024 + NGX_HTTP_UPSTREAM_MESH_ESC * NGX_SOCKADDR_STRLEN)
               + (mcfp[i]->disc ? mcfp[i]->disc->json_name.len : 0);
    }

    b = ngx_create_temp_buf(pool, len);
    if (b == NULL) {
        return NULL;
    }

    now = ngx_http_upstream_mesh_now();

    b->last = ngx_cpymem(b->last, "{\"upstreams\":[", 14);

    for (i = 0; i < mmcf->upstreams.nelts; i++) {
        mcf = mcfp[i];
        sh = mcf->sh;

        ngx_shmtx_lock(&mcf->shpool->mutex);

        if (sh->next_expiry && now >= sh->next_expiry) {
            ngx_http_upstream_mesh_apply(mcf, ngx_cycle->log);
        }

        span = ngx_http_upstream_mesh_budget_window(sh, &requests, &retries);
        allowed = requests * mcf->budget_percent / 100
                  + mcf->budget_min * span;

        b->last = ngx_sprintf(b->last,
                     "%s{\"name\":\"%V\",\"panic\":%s,\"tier\":\"%s\","
                     "\"active\":%uA,"
                     "\"requests\":%uA,\"retries\":%uA,"
                     "\"budget_exhausted\":%uA,"
                     "\"circuit_breaker_rejected\":%uA,"
                     "\"max_requests\":%ui,"
                     "\"budget\":{\"percent\":%ui,\"min_per_second\":%ui,"
                     "\"window_requests\":%ui,\"window_retries\":%ui,"
                     "\"allowed\":%ui}",
                     i ? "," : "", &mcf->json_name,
                     sh->panic ? "true" : "false",
                     sh->tier == NGX_HTTP_UPSTREAM_MESH_PANIC ? "panic"
                     : sh->tier == NGX_HTTP_UPSTREAM_MESH_BACKUP ? "backup"
                     : "primary",
                     sh->active, sh->requests,
                     sh->retries, sh->budget_exhausted, sh->cb_rejected,
                     mcf->cb_max, mcf->budget_percent, mcf->budget_min,
                     requests, retries, allowed);

        b->last = ngx_http_upstream_mesh_disc_status(b->last, mcf);
        b->last = ngx_cpymem(b->last, ",\"peers\":[", 10);

        for (j = 0, first = 1; j < sh->npeers; j++) {
            p = &sh->peers[j];
            until = p->ejected ? p->eject_until : 0;

            if (p->dyn && !p->used) {
                continue;
            }

            ngx_http_upstream_mesh_decay(mcf, p, now);

            end = ngx_meshgate_escape(name, p->name, p->name_len,
                                      NGX_MESHGATE_ESCAPE_JSON);

            b->last = ngx_sprintf(b->last,
                     "%s{\"name\":\"%*s\",\"backup\":%s,\"state\":\"%s\","
                     "\"health\":\"%s\",\"ejected\":%s,"
                     "\"ejected_until_ms\":%M,\"ejections\":%ui,"
                     "\"ejection_multiplier\":%ui,"
                     "\"requests\":%uA,\"failures\":%uA,"
                     "\"consecutive_failures\":%ui,"
                     "\"consecutive_5xx\":%ui,\"consecutive_gateway\":%ui,"
                     "\"checks\":%ui,\"check_failures\":%ui,"
                     "\"source\":\"%s\"}",
                     first ? "" : ",", end - name, name,
                     p->backup ? "true" : "false",
                     ngx_http_upstream_mesh_peer_state_name(sh, p),
                     mcf->hc_type ? (p->unhealthy ? "unhealthy" : "healthy")
                                  : "unchecked",
                     p->ejected ? "true" : "false", until, p->ejections,
                     p->multiplier, p->requests, p->failures, p->cons_fail,
                     p->cons_5xx, p->cons_gw,
                     p->hc_checks, p->hc_failed,
                     p->dyn ? "dns" : "static");

            first = 0;
        }

        ngx_shmtx_unlock(&mcf->shpool->mutex);

        b->last = ngx_cpymem(b->last, "]}", 2);
    }

    b->last = ngx_cpymem(b->last, "]}\n", 3);

    return b;
}


/* the metrics module's provider (see ngx_meshgate_prometheus.h) */

static const char  *ngx_http_upstream_mesh_peer_metrics[] = {
    "# HELP meshgate_upstream_peer_healthy Whether the peer gets traffic "
    "(1) or is unhealthy, ejected or down (0).\n"
    "# TYPE meshgate_upstream_peer_healthy gauge\n",
    "# HELP meshgate_upstream_peer_ejections_total Outlier ejections of "
    "the peer.\n"
    "# TYPE meshgate_upstream_peer_ejections_total counter\n",
    "# HELP meshgate_upstream_peer_requests_total Answers from the "
    "peer.\n"
    "# TYPE meshgate_upstream_peer_requests_total counter\n",
    "# HELP meshgate_upstream_peer_failures_total Failed tries "
    "(5xx, errors, timeouts) against the peer.\n"
    "# TYPE meshgate_upstream_peer_failures_total counter\n"
};


static const char  *ngx_http_upstream_mesh_ups_metrics[] = {
    "# HELP meshgate_upstream_retries_total Retries performed.\n"
    "# TYPE meshgate_upstream_retries_total counter\n",
    "# HELP meshgate_upstream_retry_budget_exhausted_total Requests not "
    "retried because the retry budget was used up.\n"
    "# TYPE meshgate_upstream_retry_budget_exhausted_total counter\n",
    "# HELP meshgate_upstream_circuit_breaker_rejected_total Requests "
    "answered 503 by the circuit breaker.\n"
    "# TYPE meshgate_upstream_circuit_breaker_rejected_total counter\n",
    "# HELP meshgate_upstream_active_requests Requests in flight.\n"
    "# TYPE meshgate_upstream_active_requests gauge\n",
    "# HELP meshgate_upstream_panic Whether every peer is out and "
    "traffic goes to all of them.\n"
    "# TYPE meshgate_upstream_panic gauge\n"
};


ngx_chain_t *
ngx_http_upstream_mesh_prometheus(ngx_pool_t *pool, ngx_log_t *log)
{
    size_t                               len;
    ngx_buf_t                           *b;
    u_char                              *end;
    ngx_uint_t                           i, j, k;
    const char                          *help;
    u_char     name[NGX_HTTP_UPSTREAM_MESH_ESC * NGX_SOCKADDR_STRLEN];
    ngx_chain_t                         *cl;
    ngx_http_upstream_mesh_sh_t         *sh;
    ngx_http_upstream_mesh_peer_sh_t    *p;
    ngx_http_upstream_mesh_srv_conf_t  **mcfp, *mcf;
    ngx_http_upstream_mesh_main_conf_t  *mmcf;

    if (ngx_cycle->conf_ctx == NULL) {
        return NULL;
    }

    mmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_upstream_mesh_module);

    if (mmcf == NULL || mmcf->upstreams.nelts == 0) {
        return NULL;
    }

    mcfp = mmcf->upstreams.elts;

    len = 4096;

    for (i = 0; i < mmcf->upstreams.nelts; i++) {
        len += 8 * (128 + mcfp[i]->prom_name.len)
               + 4 * mcfp[i]->sh->npeers
                 * (128 + mcfp[i]->prom_name.len
                    + NGX_HTTP_UPSTREAM_MESH_ESC * NGX_SOCKADDR_STRLEN);
    }

    b = ngx_create_temp_buf(pool, len);
    if (b == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0, "mesh metrics: no memory");
        return NULL;
    }

    for (k = 0; k < 4; k++) {
        help = ngx_http_upstream_mesh_peer_metrics[k];
        b->last = ngx_cpymem(b->last, help, ngx_strlen(help));

        for (i = 0; i < mmcf->upstreams.nelts; i++) {
            mcf = mcfp[i];
            sh = mcf->sh;

            for (j = 0; j < sh->npeers; j++) {
                p = &sh->peers[j];

                if (p->dyn && !p->used) {
                    continue;
                }

                end = ngx_meshgate_escape(name, p->name, p->name_len,
                                          NGX_MESHGATE_ESCAPE_LABEL);

                b->last = ngx_sprintf(b->last,
                              "meshgate_upstream_peer_%s"
                              "{upstream=\"%V\",peer=\"%*s\"} %uA\n",
                              k == 0 ? "healthy"
                              : k == 1 ? "ejections_total"
                              : k == 2 ? "requests_total"
                              : "failures_total",
                              &mcf->prom_name, end - name, name,
                              k == 0 ? (ngx_atomic_uint_t)
                                       (!p->cfg_down && !p->ejected
                                        && !p->unhealthy)
                              : k == 1 ? (ngx_atomic_uint_t) p->ejections
                              : k == 2 ? p->requests : p->failures);
            }
        }
    }

    for (k = 0; k < 5; k++) {
        help = ngx_http_upstream_mesh_ups_metrics[k];
        b->last = ngx_cpymem(b->last, help, ngx_strlen(help));

        for (i = 0; i < mmcf->upstreams.nelts; i++) {
            mcf = mcfp[i];
            sh = mcf->sh;

            b->last = ngx_sprintf(b->last,
                              "meshgate_upstream_%s{upstream=\"%V\"} %uA\n",
                              k == 0 ? "retries_total"
                              : k == 1 ? "retry_budget_exhausted_total"
                              : k == 2 ? "circuit_breaker_rejected_total"
                              : k == 3 ? "active_requests" : "panic",
                              &mcf->prom_name,
                              k == 0 ? sh->retries
                              : k == 1 ? sh->budget_exhausted
                              : k == 2 ? sh->cb_rejected
                              : k == 3 ? sh->active
                              : (ngx_atomic_uint_t) sh->panic);
        }
    }

    b->last = ngx_http_upstream_mesh_disc_metrics(b->last, mmcf);

    cl = ngx_alloc_chain_link(pool);
    if (cl == NULL) {
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;

    return cl;
}


/* variables */

ngx_int_t
ngx_http_upstream_mesh_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                        *p;
    ngx_uint_t                     n;
    ngx_http_upstream_mesh_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_upstream_mesh_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    if (data == 2) {
        v->data = ngx_http_upstream_mesh_state_names[ctx->peer_state].data;
        v->len = ngx_http_upstream_mesh_state_names[ctx->peer_state].len;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    n = ctx->attempts;

    if (data == 1) {
        n = n ? n - 1 : 0;
    }

    v->data = p;
    v->len = ngx_sprintf(p, "%ui", n) - p;

    return NGX_OK;
}


/*
 * Names from the configuration (upstreams, peers, discovery) as JSON
 * strings and Prometheus label values, through the one escaper of
 * common (control bytes and bytes that are not UTF-8 never reach either).
 */

ngx_int_t
ngx_http_upstream_mesh_escape_names(ngx_conf_t *cf,
    ngx_http_upstream_mesh_srv_conf_t *mcf)
{
    if (ngx_http_upstream_mesh_escape_str(cf, &mcf->uscf->host,
                                          NGX_MESHGATE_ESCAPE_JSON,
                                          &mcf->json_name)
        != NGX_OK
        || ngx_http_upstream_mesh_escape_str(cf, &mcf->uscf->host,
                                             NGX_MESHGATE_ESCAPE_LABEL,
                                             &mcf->prom_name)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (mcf->disc == NULL) {
        return NGX_OK;
    }

    return ngx_http_upstream_mesh_escape_str(cf, &mcf->disc->name,
                                             NGX_MESHGATE_ESCAPE_JSON,
                                             &mcf->disc->json_name);
}


static ngx_int_t
ngx_http_upstream_mesh_escape_str(ngx_conf_t *cf, ngx_str_t *src,
    ngx_uint_t type, ngx_str_t *dst)
{
    dst->data = ngx_pnalloc(cf->pool,
                            ngx_meshgate_escape_len(src->data, src->len, type));
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    dst->len = ngx_meshgate_escape(dst->data, src->data, src->len, type)
               - dst->data;

    return NGX_OK;
}
