
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_HTTP_TRAFFIC_SPLIT_H_INCLUDED_
#define _NGX_HTTP_TRAFFIC_SPLIT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#if (NGX_THREADS)
#include <ngx_thread_pool.h>
#endif
#include <jansson.h>


/* weights are kept in hundredths of a percent: 10000 is 100 % */
#define NGX_HTTP_TRAFFIC_SPLIT_SCALE        10000

#define NGX_HTTP_TRAFFIC_SPLIT_VARIANTS     16
#define NGX_HTTP_TRAFFIC_SPLIT_STEPS        16
#define NGX_HTTP_TRAFFIC_SPLIT_NAME_LEN     64
#define NGX_HTTP_TRAFFIC_SPLIT_BUCKETS      24

/* answers by status: 100..599 each, then one slot for anything else */
#define NGX_HTTP_TRAFFIC_SPLIT_CODES        501

#define NGX_HTTP_TRAFFIC_SPLIT_BODY_MAX     8192

#define NGX_HTTP_TRAFFIC_SPLIT_EQ           1
#define NGX_HTTP_TRAFFIC_SPLIT_NE           2
#define NGX_HTTP_TRAFFIC_SPLIT_RE           3
#define NGX_HTTP_TRAFFIC_SPLIT_NRE          4

#define NGX_HTTP_TRAFFIC_SPLIT_NONE         0
#define NGX_HTTP_TRAFFIC_SPLIT_RUNNING      1
#define NGX_HTTP_TRAFFIC_SPLIT_PAUSED       2
#define NGX_HTTP_TRAFFIC_SPLIT_DONE         3
#define NGX_HTTP_TRAFFIC_SPLIT_ROLLED_BACK  4
#define NGX_HTTP_TRAFFIC_SPLIT_ABORTED      5


typedef struct {
    ngx_atomic_t                        requests;
    ngx_atomic_t                        errors;
    ngx_atomic_t                        codes[NGX_HTTP_TRAFFIC_SPLIT_CODES];
    ngx_atomic_t                        hist[NGX_HTTP_TRAFFIC_SPLIT_BUCKETS];

    /* the same over the current rollout step */
    ngx_atomic_t                        step_requests;
    ngx_atomic_t                        step_errors;
    ngx_atomic_t                        step_hist[
                                            NGX_HTTP_TRAFFIC_SPLIT_BUCKETS];
} ngx_http_traffic_split_stats_t;


/*
 * One split's state in the zone, found by name, config checksum and
 * variant names.  It lives while a configuration loaded by the master
 * (the last two generations) or a live worker uses it.
 */

typedef struct {
    ngx_queue_t                         queue;
    u_char                              name[NGX_HTTP_TRAFFIC_SPLIT_NAME_LEN];
    size_t                              name_len;
    uint32_t                            crc;
    ngx_uint_t                          nvariants;
    u_char                              variants[
                                            NGX_HTTP_TRAFFIC_SPLIT_VARIANTS]
                                            [NGX_HTTP_TRAFFIC_SPLIT_NAME_LEN];

    /* the last configuration (see shctx) and the workers that use it */
    ngx_uint_t                          gen;
    ngx_atomic_t                        refs;

    /* odd while weights[] are being written (a sequence lock) */
    ngx_atomic_t                        seq;
    ngx_uint_t                          weights[
                                            NGX_HTTP_TRAFFIC_SPLIT_VARIANTS];

    /* rollout, under the zone's mutex */
    ngx_uint_t                          status;
    ngx_uint_t                          step;
    ngx_msec_t                          step_start;

    ngx_http_traffic_split_stats_t      stats[1];
} ngx_http_traffic_split_node_t;


typedef struct {
    ngx_queue_t                         nodes;

    /* configurations loaded by the master, counted from 1 */
    ngx_uint_t                          gen;

    /* the state file writer (a pid) and a rewrite request for it */
    ngx_atomic_t                        writer;
    ngx_atomic_t                        dirty;
} ngx_http_traffic_split_shctx_t;


typedef struct ngx_http_traffic_split_job_s     ngx_http_traffic_split_job_t;
typedef struct ngx_http_traffic_split_waiter_s  ngx_http_traffic_split_waiter_t;


/* a worker's writing of its zone's state files, in a thread */

typedef struct {
#if (NGX_THREADS)
    ngx_thread_task_t                  *task;
#endif

    /* the files being written, and the requests that wait for them */
    ngx_http_traffic_split_job_t       *job;
    ngx_http_traffic_split_waiter_t    *running;

    /* requests whose change came while they were written */
    ngx_http_traffic_split_waiter_t    *next;
} ngx_http_traffic_split_writer_t;


typedef struct {
    ngx_str_t                           name;
    ngx_uint_t                          weight;

    /* the variant's draw in rendezvous hashing: of its and its split's name */
    uint64_t                            hash;
    unsigned                            star:1;
} ngx_http_traffic_split_variant_t;


typedef struct {
    ngx_http_complex_value_t            value;
    ngx_str_t                           source;
    ngx_uint_t                          op;
    ngx_str_t                           pattern;
#if (NGX_PCRE)
    ngx_regex_t                        *regex;
#endif
    ngx_str_t                           variant_name;
    ngx_uint_t                          variant;
} ngx_http_traffic_split_match_t;


typedef struct {
    ngx_uint_t                          canary;
    ngx_uint_t                          steps[NGX_HTTP_TRAFFIC_SPLIT_STEPS];
    ngx_uint_t                          nsteps;
    ngx_msec_t                          interval;
    ngx_uint_t                          max_error_rate;
    ngx_uint_t                          min_requests;
    ngx_msec_t                          max_p99;
    ngx_event_t                         timer;
} ngx_http_traffic_split_rollout_t;


typedef struct {
    ngx_str_t                           name;
    ngx_http_complex_value_t           *key;
    ngx_int_t                           key_index;    /* "$name" alone */
    ngx_str_t                           key_source;
    ngx_array_t                         variants;
    ngx_array_t                         matches;
    ngx_int_t                           star;

    uint32_t                            crc;
    ngx_str_t                           state;
    ngx_str_t                           file;
    ngx_uint_t                          line;

    ngx_http_traffic_split_rollout_t   *rollout;

    ngx_shm_zone_t                     *shm_zone;
    ngx_slab_pool_t                    *shpool;
    ngx_http_traffic_split_shctx_t     *sh;
    ngx_http_traffic_split_node_t      *node;

    /* one per zone, shared by its splits */
    ngx_http_traffic_split_writer_t    *writer;
} ngx_http_traffic_split_conf_t;


typedef struct {
    ngx_array_t                         splits;
#if (NGX_THREADS)
    ngx_thread_pool_t                  *thread_pool;
#endif
} ngx_http_traffic_split_main_conf_t;


typedef struct {
    ngx_flag_t                          api;
} ngx_http_traffic_split_loc_conf_t;


extern ngx_module_t  ngx_http_traffic_split_module;


#pragma GCC visibility push(hidden)

/* selection */
ngx_int_t ngx_http_traffic_split_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
ngx_int_t ngx_http_traffic_split_log_handler(ngx_http_request_t *r);
void ngx_http_traffic_split_read_weights(ngx_http_traffic_split_conf_t *scf,
    ngx_uint_t *weights);
void ngx_http_traffic_split_write_weights(ngx_http_traffic_split_conf_t *scf,
    ngx_uint_t *weights);
ngx_uint_t ngx_http_traffic_split_quantile(ngx_atomic_t *hist,
    ngx_uint_t total, ngx_uint_t permille);

/* state file and API */
ngx_int_t ngx_http_traffic_split_load_state(ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log);
ngx_int_t ngx_http_traffic_split_api_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_traffic_split_save_state(ngx_http_traffic_split_conf_t *scf,
    ngx_http_request_t *r, ngx_log_t *log);
void ngx_http_traffic_split_writer_exit(ngx_http_traffic_split_conf_t *scf);

/* the API's pieces that the state file code uses too */
ngx_http_traffic_split_main_conf_t *ngx_http_traffic_split_mcf(void);
const char *ngx_http_traffic_split_parse_weights(
    ngx_http_traffic_split_conf_t *scf, json_t *weights, ngx_uint_t *w,
    ngx_uint_t *given);
ngx_int_t ngx_http_traffic_split_answer(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, ngx_int_t saved);
json_t *ngx_http_traffic_split_doc(json_t **splits);
json_t *ngx_http_traffic_split_json_weight(ngx_uint_t w);

/* rollout */
void ngx_http_traffic_split_rollout_start(ngx_http_traffic_split_conf_t *scf,
    ngx_uint_t *weights, ngx_msec_t now);
ngx_int_t ngx_http_traffic_split_rollout_init(ngx_cycle_t *cycle,
    ngx_http_traffic_split_conf_t *scf);
void ngx_http_traffic_split_rollout_weights(
    ngx_http_traffic_split_conf_t *scf, ngx_uint_t canary,
    ngx_uint_t *weights);
void ngx_http_traffic_split_reset_step(ngx_http_traffic_split_conf_t *scf);
ngx_int_t ngx_http_traffic_split_rollout_action(
    ngx_http_traffic_split_conf_t *scf, ngx_str_t *action, ngx_log_t *log);
const char *ngx_http_traffic_split_status_name(ngx_uint_t status);
ngx_int_t ngx_http_traffic_split_status_value(u_char *p, size_t len);

#pragma GCC visibility pop


#endif /* _NGX_HTTP_TRAFFIC_SPLIT_H_INCLUDED_ */
