
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_MESHGATE_PROMETHEUS_H_INCLUDED_
#define _NGX_MESHGATE_PROMETHEUS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * How one meshgate module hands its state metrics (peer health, ejections,
 * budgets: things that are not counted per request) to the metrics module,
 * which lives in another .so and may or may not be loaded.
 *
 * A provider exports, with default visibility, a function of this type
 * under a name listed in NGX_MESHGATE_PROMETHEUS_PROVIDERS.  nginx loads
 * modules with RTLD_GLOBAL, so the metrics module finds loaded providers
 * with dlsym(RTLD_DEFAULT, name) when it exports.
 *
 * The function returns a chain of buffers in pool memory holding complete
 * metric families in the Prometheus text format 0.0.4 ("# HELP", "# TYPE",
 * then samples, each line ending in "\n"), every metric name beginning
 * with "meshgate_"; or NULL when it has nothing to report or fails (it
 * logs why).
 */

typedef ngx_chain_t *(*ngx_meshgate_prometheus_pt)(ngx_pool_t *pool,
    ngx_log_t *log);


#define NGX_MESHGATE_PROMETHEUS_PROVIDERS                                     \
    "ngx_http_upstream_mesh_prometheus",                                      \
    "ngx_http_rate_limit_prometheus",                                         \
    "ngx_http_traffic_split_prometheus"


/*
 * How the traffic_split module hands the current weights of its splits to
 * the metrics module's dependency map (graph and dashboard exports).
 *
 * The provider, exported with default visibility under the name
 * NGX_MESHGATE_SPLITS_PROVIDER and found with dlsym() like the ones above,
 * returns an array in pool memory of ngx_meshgate_split_weight_t, one
 * element per variant of every split of the running configuration, the
 * variants of a split next to each other in their configured order; or
 * NULL when there are no splits or it fails (it logs why).  The names
 * point to configuration memory: valid as long as the request that asked.
 * The weights are the ones the split applies now (API changes and rollout
 * steps included), in hundredths of a percent: 0 to 10000.
 */

typedef struct {
    ngx_str_t                       split;
    ngx_str_t                       variant;
    ngx_uint_t                      weight;
} ngx_meshgate_split_weight_t;


typedef ngx_array_t *(*ngx_meshgate_splits_pt)(ngx_pool_t *pool,
    ngx_log_t *log);


#define NGX_MESHGATE_SPLITS_PROVIDER  "ngx_http_traffic_split_weights"


#endif /* _NGX_MESHGATE_PROMETHEUS_H_INCLUDED_ */
