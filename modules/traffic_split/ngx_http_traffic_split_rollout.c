
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_traffic_split.h"


static void ngx_http_traffic_split_rollout_handler(ngx_event_t *ev);
static ngx_msec_t ngx_http_traffic_split_tick(
    ngx_http_traffic_split_rollout_t *ro);
static ngx_uint_t ngx_http_traffic_split_rollout_check(
    ngx_http_traffic_split_conf_t *scf, ngx_log_t *log);
static void ngx_http_traffic_split_rollback(ngx_http_traffic_split_conf_t *scf,
    ngx_uint_t requests, ngx_uint_t errors, ngx_uint_t p99, ngx_log_t *log);
static void ngx_http_traffic_split_set_canary(
    ngx_http_traffic_split_conf_t *scf, ngx_uint_t canary);


static const char  *ngx_http_traffic_split_status_names[] = {
    "none", "running", "paused", "done", "rolled_back", "aborted"
};


const char *
ngx_http_traffic_split_status_name(ngx_uint_t status)
{
    if (status > NGX_HTTP_TRAFFIC_SPLIT_ABORTED) {
        status = NGX_HTTP_TRAFFIC_SPLIT_NONE;
    }

    return ngx_http_traffic_split_status_names[status];
}


ngx_int_t
ngx_http_traffic_split_status_value(u_char *p, size_t len)
{
    ngx_uint_t  i;

    for (i = 0; i <= NGX_HTTP_TRAFFIC_SPLIT_ABORTED; i++) {
        if (ngx_strlen(ngx_http_traffic_split_status_names[i]) == len
            && ngx_strncmp(ngx_http_traffic_split_status_names[i], p, len)
               == 0)
        {
            return i;
        }
    }

    return NGX_ERROR;
}


/*
 * The canary gets its weight, the "*" variant what the others leave: the
 * other variants keep theirs, the canary gives way if they need it.
 */

void
ngx_http_traffic_split_rollout_weights(ngx_http_traffic_split_conf_t *scf,
    ngx_uint_t canary, ngx_uint_t *weights)
{
    ngx_uint_t                         i, others;
    ngx_http_traffic_split_rollout_t  *ro;

    ro = scf->rollout;
    others = 0;

    for (i = 0; i < scf->variants.nelts; i++) {
        if (i != ro->canary && (ngx_int_t) i != scf->star) {
            others += weights[i];
        }
    }

    others = ngx_min(others, NGX_HTTP_TRAFFIC_SPLIT_SCALE);
    canary = ngx_min(canary, NGX_HTTP_TRAFFIC_SPLIT_SCALE - others);

    weights[ro->canary] = canary;
    weights[scf->star] = NGX_HTTP_TRAFFIC_SPLIT_SCALE - others - canary;
}


/*
 * A rollout takes over from the canary's weight (configured or saved): it
 * starts at the first step at or above it.  A paused one keeps the
 * weights it was paused with.  The caller writes the weights.
 */

void
ngx_http_traffic_split_rollout_start(ngx_http_traffic_split_conf_t *scf,
    ngx_uint_t *weights, ngx_msec_t now)
{
    ngx_uint_t                         i;
    ngx_http_traffic_split_node_t     *node;
    ngx_http_traffic_split_rollout_t  *ro;

    ro = scf->rollout;
    node = scf->node;

    for (i = 0; i < ro->nsteps; i++) {
        if (ro->steps[i] >= weights[ro->canary]) {
            break;
        }
    }

    node->step_start = now;
    ngx_http_traffic_split_reset_step(scf);

    if (i == ro->nsteps) {
        node->step = ro->nsteps - 1;
        node->status = NGX_HTTP_TRAFFIC_SPLIT_DONE;
        return;
    }

    node->step = i;

    if (node->status == NGX_HTTP_TRAFFIC_SPLIT_PAUSED) {
        return;
    }

    node->status = NGX_HTTP_TRAFFIC_SPLIT_RUNNING;
    ngx_http_traffic_split_rollout_weights(scf, ro->steps[i], weights);
}


void
ngx_http_traffic_split_reset_step(ngx_http_traffic_split_conf_t *scf)
{
    ngx_uint_t                       i, b;
    ngx_http_traffic_split_stats_t  *st;

    for (i = 0; i < scf->variants.nelts; i++) {
        st = &scf->node->stats[i];

        st->step_requests = 0;
        st->step_errors = 0;

        for (b = 0; b < NGX_HTTP_TRAFFIC_SPLIT_BUCKETS; b++) {
            st->step_hist[b] = 0;
        }
    }
}


/*
 * Every worker looks at the rollout a few times per interval; the one
 * that gets the zone's mutex (never waited for) judges and advances it,
 * and the step's start time in the zone keeps the others from advancing
 * it again.
 */

ngx_int_t
ngx_http_traffic_split_rollout_init(ngx_cycle_t *cycle,
    ngx_http_traffic_split_conf_t *scf)
{
    ngx_event_t  *ev;

    ev = &scf->rollout->timer;

    ev->handler = ngx_http_traffic_split_rollout_handler;
    ev->data = scf;
    ev->log = cycle->log;
    ev->cancelable = 1;

    ngx_add_timer(ev, ngx_http_traffic_split_tick(scf->rollout));

    return NGX_OK;
}


static ngx_msec_t
ngx_http_traffic_split_tick(ngx_http_traffic_split_rollout_t *ro)
{
    ngx_msec_t  t;

    t = ro->interval / 10;

    return ngx_max(ngx_min(t, 1000), 10);
}


static void
ngx_http_traffic_split_rollout_handler(ngx_event_t *ev)
{
    ngx_http_traffic_split_conf_t  *scf = ev->data;

    ngx_uint_t  moved;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    moved = 0;

    if (ngx_shmtx_trylock(&scf->shpool->mutex)) {
        moved = ngx_http_traffic_split_rollout_check(scf, ev->log);
        ngx_shmtx_unlock(&scf->shpool->mutex);
    }

    /*
     * saved like a change through the API: a restart must not bring back
     * a rolled back canary, nor take the keys of a grown one away from it
     */

    if (moved) {
        (void) ngx_http_traffic_split_save_state(scf, NULL, ev->log);
    }

    ngx_add_timer(ev, ngx_http_traffic_split_tick(scf->rollout));
}


/* the caller holds the zone's mutex; 1 when the rollout moved */

static ngx_uint_t
ngx_http_traffic_split_rollout_check(ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log)
{
    ngx_uint_t                         n, e, rate, p99;
    ngx_msec_t                         now;
    ngx_http_traffic_split_node_t     *node;
    ngx_http_traffic_split_stats_t    *st;
    ngx_http_traffic_split_rollout_t  *ro;

    node = scf->node;
    ro = scf->rollout;

    if (node->status != NGX_HTTP_TRAFFIC_SPLIT_RUNNING) {
        return 0;
    }

    st = &node->stats[ro->canary];
    n = st->step_requests;
    e = ngx_min(st->step_errors, n);
    p99 = 0;

    if (n && n >= ro->min_requests) {
        rate = e * NGX_HTTP_TRAFFIC_SPLIT_SCALE / n;
        p99 = ngx_http_traffic_split_quantile(st->step_hist, n, 990);

        if (rate > ro->max_error_rate
            || (ro->max_p99 && p99 > ro->max_p99))
        {
            ngx_http_traffic_split_rollback(scf, n, e, p99, log);
            return 1;
        }
    }

    now = ngx_current_msec;

    if ((ngx_msec_int_t) (now - node->step_start) < (ngx_msec_int_t)
                                                     ro->interval)
    {
        return 0;
    }

    if (n < ro->min_requests) {

        /* too few answers to judge: the step goes on */
        return 0;
    }

    if (node->step + 1 >= ro->nsteps) {
        node->status = NGX_HTTP_TRAFFIC_SPLIT_DONE;

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "traffic split \"%V\": rollout of \"%V\" done at "
                      "%ui.%02ui%%", &scf->name,
                      &((ngx_http_traffic_split_variant_t *)
                        scf->variants.elts)[ro->canary].name,
                      ro->steps[node->step] / 100,
                      ro->steps[node->step] % 100);
        return 1;
    }

    node->step++;
    node->step_start = now;

    ngx_http_traffic_split_set_canary(scf, ro->steps[node->step]);
    ngx_http_traffic_split_reset_step(scf);

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "traffic split \"%V\": rollout step %ui, canary at "
                  "%ui.%02ui%% after %ui requests with %ui errors",
                  &scf->name, node->step + 1, ro->steps[node->step] / 100,
                  ro->steps[node->step] % 100, n, e);

    return 1;
}


static void
ngx_http_traffic_split_rollback(ngx_http_traffic_split_conf_t *scf,
    ngx_uint_t requests, ngx_uint_t errors, ngx_uint_t p99, ngx_log_t *log)
{
    ngx_uint_t                         rate;
    ngx_http_traffic_split_node_t     *node;
    ngx_http_traffic_split_rollout_t  *ro;

    node = scf->node;
    ro = scf->rollout;

    ngx_http_traffic_split_set_canary(scf, 0);
    node->status = NGX_HTTP_TRAFFIC_SPLIT_ROLLED_BACK;

    rate = errors * NGX_HTTP_TRAFFIC_SPLIT_SCALE / requests;

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "traffic split \"%V\": rollout of \"%V\" rolled back at "
                  "step %ui (%ui.%02ui%%): %ui errors in %ui requests, "
                  "%ui.%02ui%% (max_error_rate %ui.%02ui%%), p99 %uims "
                  "(max_p99 %Mms)",
                  &scf->name,
                  &((ngx_http_traffic_split_variant_t *)
                    scf->variants.elts)[ro->canary].name,
                  node->step + 1, ro->steps[node->step] / 100,
                  ro->steps[node->step] % 100, errors, requests,
                  rate / 100, rate % 100, ro->max_error_rate / 100,
                  ro->max_error_rate % 100, p99, ro->max_p99);
}


/* the caller holds the zone's mutex */

static void
ngx_http_traffic_split_set_canary(ngx_http_traffic_split_conf_t *scf,
    ngx_uint_t canary)
{
    ngx_uint_t  w[NGX_HTTP_TRAFFIC_SPLIT_VARIANTS];

    ngx_http_traffic_split_read_weights(scf, w);
    ngx_http_traffic_split_rollout_weights(scf, canary, w);
    ngx_http_traffic_split_write_weights(scf, w);
}


/*
 * pause, resume, restart, abort from the API: NGX_OK, NGX_DECLINED when
 * the rollout is in no state for it, NGX_ERROR for an unknown action.
 */

ngx_int_t
ngx_http_traffic_split_rollout_action(ngx_http_traffic_split_conf_t *scf,
    ngx_str_t *action, ngx_log_t *log)
{
    ngx_int_t                          rc;
    ngx_http_traffic_split_node_t     *node;
    ngx_http_traffic_split_rollout_t  *ro;

    node = scf->node;
    ro = scf->rollout;
    rc = NGX_OK;

    ngx_shmtx_lock(&scf->shpool->mutex);

    if (action->len == 5 && ngx_strncmp(action->data, "pause", 5) == 0) {
        if (node->status == NGX_HTTP_TRAFFIC_SPLIT_RUNNING) {
            node->status = NGX_HTTP_TRAFFIC_SPLIT_PAUSED;

        } else {
            rc = NGX_DECLINED;
        }

    } else if (action->len == 6
               && ngx_strncmp(action->data, "resume", 6) == 0)
    {
        if (node->status == NGX_HTTP_TRAFFIC_SPLIT_PAUSED) {
            node->status = NGX_HTTP_TRAFFIC_SPLIT_RUNNING;
            node->step_start = ngx_current_msec;
            ngx_http_traffic_split_set_canary(scf, ro->steps[node->step]);
            ngx_http_traffic_split_reset_step(scf);

        } else {
            rc = NGX_DECLINED;
        }

    } else if (action->len == 7
               && ngx_strncmp(action->data, "restart", 7) == 0)
    {
        node->status = NGX_HTTP_TRAFFIC_SPLIT_RUNNING;
        node->step = 0;
        node->step_start = ngx_current_msec;
        ngx_http_traffic_split_set_canary(scf, ro->steps[0]);
        ngx_http_traffic_split_reset_step(scf);

    } else if (action->len == 5
               && ngx_strncmp(action->data, "abort", 5) == 0)
    {
        node->status = NGX_HTTP_TRAFFIC_SPLIT_ABORTED;
        ngx_http_traffic_split_set_canary(scf, 0);

    } else {
        rc = NGX_ERROR;
    }

    ngx_shmtx_unlock(&scf->shpool->mutex);

    if (rc == NGX_OK) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "traffic split \"%V\": rollout %V by the API",
                      &scf->name, action);
    }

    return rc;
}
