
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_traffic_split.h"
#include "ngx_meshgate_prometheus.h"


ngx_array_t *ngx_http_traffic_split_weights(ngx_pool_t *pool, ngx_log_t *log);


/*
 * The current weights of every split, for the metrics module's dependency
 * map (see ngx_meshgate_prometheus.h): that module may or may not be
 * loaded and finds this function with dlsym(), so neither module knows
 * the other's structures.
 */

ngx_array_t *
ngx_http_traffic_split_weights(ngx_pool_t *pool, ngx_log_t *log)
{
    ngx_uint_t                           i, j;
    ngx_array_t                         *a;
    ngx_meshgate_split_weight_t         *sw;
    ngx_http_traffic_split_conf_t      **scfp;
    ngx_http_traffic_split_variant_t    *v;
    ngx_http_traffic_split_main_conf_t  *mcf;
    ngx_uint_t                           w[NGX_HTTP_TRAFFIC_SPLIT_VARIANTS];

    if (ngx_cycle->conf_ctx == NULL) {
        return NULL;
    }

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                              ngx_http_traffic_split_module);

    if (mcf == NULL || mcf->splits.nelts == 0) {
        return NULL;
    }

    a = ngx_array_create(pool, 8, sizeof(ngx_meshgate_split_weight_t));
    if (a == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0, "traffic split weights: "
                      "no memory");
        return NULL;
    }

    scfp = mcf->splits.elts;

    for (i = 0; i < mcf->splits.nelts; i++) {

        /* the shared state exists in workers only */

        if (scfp[i]->node == NULL) {
            continue;
        }

        ngx_http_traffic_split_read_weights(scfp[i], w);

        v = scfp[i]->variants.elts;

        for (j = 0; j < scfp[i]->variants.nelts; j++) {
            sw = ngx_array_push(a);
            if (sw == NULL) {
                ngx_log_error(NGX_LOG_ERR, log, 0, "traffic split weights: "
                              "no memory");
                return NULL;
            }

            sw->split = scfp[i]->name;
            sw->variant = v[j].name;
            sw->weight = w[j];
        }
    }

    return a;
}
