
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_aggregate.h"
#include "ngx_meshgate_http.h"
#include "ngx_meshgate_json_text.h"


#define NGX_HTTP_AGGREGATE_PREFIX  "aggregate_"


static ngx_int_t ngx_http_aggregate_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_aggregate_not_allowed(ngx_http_request_t *r);
static ngx_http_aggregate_ctx_t *ngx_http_aggregate_create_ctx(
    ngx_http_request_t *r, ngx_http_aggregate_loc_conf_t *alcf);
static void ngx_http_aggregate_wake(ngx_http_request_t *r);
static void ngx_http_aggregate_advance(ngx_http_aggregate_ctx_t *ctx);
static ngx_uint_t ngx_http_aggregate_step(ngx_http_aggregate_ctx_t *ctx);
static void ngx_http_aggregate_start(ngx_http_aggregate_part_t *part);
static ngx_int_t ngx_http_aggregate_done(ngx_meshgate_fetch_t *f);
static void ngx_http_aggregate_judge(ngx_http_aggregate_part_t *part);
static const char *ngx_http_aggregate_status_reason(
    ngx_http_aggregate_part_t *part, ngx_uint_t status);
static void ngx_http_aggregate_fail(ngx_http_aggregate_part_t *part,
    const char *reason);
static void ngx_http_aggregate_cancel(ngx_http_aggregate_part_t *part);
static void ngx_http_aggregate_part_timeout(ngx_event_t *ev);
static void ngx_http_aggregate_timeout(ngx_event_t *ev);
static void ngx_http_aggregate_finish(ngx_http_aggregate_ctx_t *ctx);
static ngx_int_t ngx_http_aggregate_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *body, ngx_uint_t completed);
static void ngx_http_aggregate_cleanup(void *data);
static ngx_int_t ngx_http_aggregate_failed_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_aggregate_field_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_aggregate_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_aggregate_init(ngx_conf_t *cf);
static void *ngx_http_aggregate_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_aggregate_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_aggregate_resolve(ngx_conf_t *cf,
    ngx_array_t *parts);
static ngx_int_t ngx_http_aggregate_scan(ngx_conf_t *cf, ngx_array_t *parts,
    ngx_http_aggregate_part_conf_t *pc);
static ngx_int_t ngx_http_aggregate_cycle(ngx_array_t *parts, ngx_uint_t i,
    u_char *color);
static char *ngx_http_aggregate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_http_aggregate_part_conf_t *ngx_http_aggregate_new_part(
    ngx_conf_t *cf, ngx_http_aggregate_loc_conf_t *alcf, ngx_str_t *name);
static char *ngx_http_aggregate_option(ngx_conf_t *cf,
    ngx_http_aggregate_part_conf_t *pc, ngx_str_t *value);
static char *ngx_http_aggregate_fields(ngx_conf_t *cf,
    ngx_http_aggregate_part_conf_t *pc, ngx_str_t *value);
static ngx_uint_t ngx_http_aggregate_field_is_plain(u_char *p, u_char *last);
static ngx_int_t ngx_http_aggregate_valid_name(ngx_str_t *name);


static ngx_conf_enum_t  ngx_http_aggregate_merge_modes[] = {
    { ngx_string("object"), NGX_HTTP_AGGREGATE_MERGE_OBJECT },
    { ngx_string("flat"), NGX_HTTP_AGGREGATE_MERGE_FLAT },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_aggregate_commands[] = {

    { ngx_string("aggregate"),
      NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_aggregate,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("aggregate_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_aggregate_loc_conf_t, timeout),
      NULL },

    { ngx_string("aggregate_max_part_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_aggregate_loc_conf_t, max_part_size),
      NULL },

    { ngx_string("aggregate_merge"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_aggregate_loc_conf_t, merge),
      &ngx_http_aggregate_merge_modes },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_aggregate_module_ctx = {
    ngx_http_aggregate_add_variables,      /* preconfiguration */
    ngx_http_aggregate_init,               /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_aggregate_create_loc_conf,    /* create location configuration */
    ngx_http_aggregate_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_aggregate_module = {
    NGX_MODULE_V1,
    &ngx_http_aggregate_module_ctx,        /* module context */
    ngx_http_aggregate_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_aggregate_vars[] = {

    { ngx_string("aggregate_failed_parts"), NULL,
      ngx_http_aggregate_failed_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string(NGX_HTTP_AGGREGATE_PREFIX), NULL,
      ngx_http_aggregate_field_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_PREFIX, 0 },

      ngx_http_null_variable
};


/* request headers that parts never see */

static ngx_str_t  ngx_http_aggregate_hidden[] = {
    ngx_string("Accept-Encoding"),
    ngx_string("Content-Length"),
    ngx_string("Transfer-Encoding"),
    ngx_string("Expect"),
    ngx_string("Range"),
    ngx_string("If-Range"),
    ngx_string("If-Match"),
    ngx_string("If-None-Match"),
    ngx_string("If-Modified-Since"),
    ngx_string("If-Unmodified-Since"),
    ngx_null_string
};




static ngx_int_t
ngx_http_aggregate_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_http_aggregate_ctx_t       *ctx;
    ngx_http_aggregate_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_aggregate_module);

    if (alcf->parts == NULL) {
        return NGX_DECLINED;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_aggregate_not_allowed(r);
    }

    if (r == r->main) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    ctx = ngx_http_aggregate_create_ctx(r, alcf);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "aggregate: %ui parts", ctx->nparts);

    ngx_add_timer(&ctx->timer, alcf->timeout);

    r->main->count++;
    r->write_event_handler = ngx_http_aggregate_wake;

    if (r == r->main && !r->discard_body) {
        r->read_event_handler = ngx_http_test_reading;
    }

    ngx_http_aggregate_advance(ctx);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_aggregate_not_allowed(ngx_http_request_t *r)
{
    ngx_int_t         rc;
    ngx_str_t         body = ngx_string("{\"error\":\"method not allowed\"}\n");
    ngx_table_elt_t  *h;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    ngx_str_set(&h->value, "GET, HEAD");

    return ngx_http_aggregate_send(r, NGX_HTTP_NOT_ALLOWED, &body, 0);
}


static ngx_http_aggregate_ctx_t *
ngx_http_aggregate_create_ctx(ngx_http_request_t *r,
    ngx_http_aggregate_loc_conf_t *alcf)
{
    ngx_uint_t                       i;
    ngx_http_cleanup_t              *cln;
    ngx_http_aggregate_ctx_t        *ctx;
    ngx_http_aggregate_part_t       *part;
    ngx_http_aggregate_part_conf_t  *pc;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_aggregate_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_aggregate_module);

    ctx->request = r;
    ctx->conf = alcf;
    ctx->nparts = alcf->parts->nelts;

    ctx->parts = ngx_pcalloc(r->pool,
                             ctx->nparts * sizeof(ngx_http_aggregate_part_t));
    if (ctx->parts == NULL) {
        return NULL;
    }

    pc = alcf->parts->elts;

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];
        part->agg = ctx;
        part->conf = &pc[i];
        part->timer.handler = ngx_http_aggregate_part_timeout;
        part->timer.data = part;
        part->timer.log = r->connection->log;
    }

    if (ngx_meshgate_fetch_headers(r, &ctx->headers, ngx_http_aggregate_hidden,
                                   0)
        != NGX_OK)
    {
        return NULL;
    }

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_aggregate_cleanup;
    cln->data = ctx;

    ctx->timer.handler = ngx_http_aggregate_timeout;
    ctx->timer.data = ctx;
    ctx->timer.log = r->connection->log;

    ctx->aggregating = 1;

    return ctx;
}


static void
ngx_http_aggregate_wake(ngx_http_request_t *r)
{
    ngx_http_aggregate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aggregate_module);

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "aggregate: wake");

    if (ctx != NULL && ctx->aggregating && !ctx->done) {
        ngx_http_aggregate_advance(ctx);
    }
}


/*
 * Starts the parts whose dependencies have succeeded, fails those whose
 * dependencies have failed, and answers once everything is decided or a
 * required part has failed.  The request may be finalized on return.
 */

static void
ngx_http_aggregate_advance(ngx_http_aggregate_ctx_t *ctx)
{
    ngx_uint_t                  i, settled;
    ngx_http_aggregate_part_t  *part;

    while (ngx_http_aggregate_step(ctx)) { /* void */ }

    settled = 1;

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (part->state == NGX_HTTP_AGGREGATE_FAILED
            && !part->conf->optional)
        {
            ngx_http_aggregate_finish(ctx);
            return;
        }

        if (part->state < NGX_HTTP_AGGREGATE_OK) {
            settled = 0;
        }
    }

    if (settled) {
        ngx_http_aggregate_finish(ctx);
    }
}


static ngx_uint_t
ngx_http_aggregate_step(ngx_http_aggregate_ctx_t *ctx)
{
    uint64_t                    ok, failed, deps;
    ngx_uint_t                  i, progress;
    ngx_http_aggregate_part_t  *part;

    ok = 0;
    failed = 0;

    for (i = 0; i < ctx->nparts; i++) {
        if (ctx->parts[i].state == NGX_HTTP_AGGREGATE_OK) {
            ok |= (uint64_t) 1 << i;

        } else if (ctx->parts[i].state == NGX_HTTP_AGGREGATE_FAILED) {
            failed |= (uint64_t) 1 << i;
        }
    }

    progress = 0;

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];
        deps = part->conf->deps;

        if (part->state != NGX_HTTP_AGGREGATE_WAITING) {
            continue;
        }

        if (deps & failed) {
            ngx_http_aggregate_fail(part, "dependency");
            progress = 1;

        } else if ((deps & ok) == deps) {
            ngx_http_aggregate_start(part);
            progress = 1;
        }
    }

    return progress;
}


static void
ngx_http_aggregate_start(ngx_http_aggregate_part_t *part)
{
    ngx_str_t                  uri, args;
    ngx_uint_t                 flags;
    ngx_http_request_t        *r;
    ngx_meshgate_fetch_t      *f;
    ngx_http_aggregate_ctx_t  *ctx;

    ctx = part->agg;
    r = ctx->request;

    ctx->missing = 0;

    if (ngx_http_complex_value(r, &part->conf->uri, &uri) != NGX_OK) {
        ngx_http_aggregate_fail(part, "error");
        return;
    }

    if (ctx->missing) {
        ngx_http_aggregate_fail(part, "dependency");
        return;
    }

    ngx_str_null(&args);
    flags = NGX_HTTP_LOG_UNSAFE;

    if (ngx_http_parse_unsafe_uri(r, &uri, &args, &flags) != NGX_OK) {
        ngx_http_aggregate_fail(part, "bad_uri");
        return;
    }

    if (args.data == NULL) {
        args = r->args;
    }

    /* a GET with the client's headers but those in ..._hidden */

    f = &part->fetch;
    f->handler = ngx_http_aggregate_done;
    f->data = part;
    f->method = NGX_HTTP_GET;
    f->headers = &ctx->headers;
    f->max = ctx->conf->max_part_size;

    if (ngx_meshgate_fetch_start(r, f, &uri, &args,
                                 NGX_HTTP_SUBREQUEST_BACKGROUND)
        != NGX_OK)
    {
        ngx_http_aggregate_fail(part, "error");
        return;
    }

    part->state = NGX_HTTP_AGGREGATE_RUNNING;

    if (part->conf->timeout) {
        ngx_add_timer(&part->timer, part->conf->timeout);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "aggregate: part \"%V\" started: \"%V?%V\"",
                   &part->conf->name, &uri, &args);
}


static ngx_int_t
ngx_http_aggregate_done(ngx_meshgate_fetch_t *f)
{
    ngx_http_aggregate_part_t *part = f->data;

    ngx_http_aggregate_ctx_t  *ctx;

    ctx = part->agg;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, f->sr->connection->log, 0,
                   "aggregate: part \"%V\" done, status %ui",
                   &part->conf->name, f->status);

    if (f->closed || part->state != NGX_HTTP_AGGREGATE_RUNNING || ctx->done)
    {
        return NGX_OK;
    }

    if (part->timer.timer_set) {
        ngx_del_timer(&part->timer);
    }

    ngx_http_aggregate_judge(part);

    return ngx_http_post_request(ctx->request, NULL);
}


static void
ngx_http_aggregate_judge(ngx_http_aggregate_part_t *part)
{
    ngx_int_t              prc;
    ngx_log_t             *log;
    const char            *error;
    ngx_meshgate_fetch_t  *f;

    log = part->agg->request->connection->log;
    f = &part->fetch;

    if (ngx_meshgate_fetch_failed(f)) {
        ngx_http_aggregate_fail(part, "error");
        return;
    }

    if (f->status < 200 || f->status > 299) {
        ngx_http_aggregate_fail(part,
                           ngx_http_aggregate_status_reason(part, f->status));
        return;
    }

    error = ngx_meshgate_fetch_error(f);

    if (error) {
        /* "too_big", "truncated"; an encoded body is no JSON we read */
        ngx_http_aggregate_fail(part, f->encoded ? "invalid_json" : error);
        return;
    }

    prc = ngx_http_aggregate_part_json(part, log);

    if (prc == NGX_DECLINED) {
        ngx_http_aggregate_fail(part, "invalid_json");
        return;
    }

    if (prc != NGX_OK) {
        ngx_http_aggregate_fail(part, "error");
        return;
    }

    part->state = NGX_HTTP_AGGREGATE_OK;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                   "aggregate: part \"%V\" ok", &part->conf->name);
}


static const char *
ngx_http_aggregate_status_reason(ngx_http_aggregate_part_t *part,
    ngx_uint_t status)
{
    u_char  *p;

    /* an error nginx itself answered for the part's upstream */

    if ((ngx_int_t) status == part->fetch.error_rc) {
        if (status == NGX_HTTP_GATEWAY_TIME_OUT) {
            return "timeout";
        }

        if (status == NGX_HTTP_BAD_GATEWAY) {
            return "unavailable";
        }
    }

    p = ngx_pnalloc(part->agg->request->pool, sizeof("status_999"));
    if (p == NULL) {
        return "error";
    }

    ngx_sprintf(p, "status_%03ui%Z", status % 1000);

    return (const char *) p;
}


static void
ngx_http_aggregate_fail(ngx_http_aggregate_part_t *part, const char *reason)
{
    ngx_uint_t           level;
    ngx_http_request_t  *r;

    r = part->agg->request;
    level = part->conf->optional ? NGX_LOG_WARN : NGX_LOG_ERR;

    part->state = NGX_HTTP_AGGREGATE_FAILED;
    part->reason = reason;
    part->fetch.ignore = 1;

    if (part->timer.timer_set) {
        ngx_del_timer(&part->timer);
    }

    ngx_log_error(level, r->connection->log, 0,
                  "aggregate: %s part \"%V\" failed: %s",
                  part->conf->optional ? "optional" : "required",
                  &part->conf->name, reason);
}


/*
 * Stops a running part.  A part waiting on its upstream is finalized
 * through the upstream's own cleanup; any other part runs to its end in
 * the background, and what it returns is ignored.
 */

static void
ngx_http_aggregate_cancel(ngx_http_aggregate_part_t *part)
{
    ngx_http_request_t   *sr;
    ngx_http_upstream_t  *u;

    part->fetch.ignore = 1;
    sr = part->fetch.sr;

    if (sr == NULL) {
        return;
    }

    part->fetch.sr = NULL;
    u = sr->upstream;

    if (u == NULL || u->cleanup == NULL || *u->cleanup == NULL) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, sr->connection->log, 0,
                   "aggregate: cancel part \"%V\"", &part->conf->name);

    (*u->cleanup)(sr);
}


static void
ngx_http_aggregate_part_timeout(ngx_event_t *ev)
{
    ngx_connection_t           *c;
    ngx_http_aggregate_part_t  *part;

    part = ev->data;
    c = part->agg->request->connection;

    if (part->state != NGX_HTTP_AGGREGATE_RUNNING || part->agg->done) {
        return;
    }

    ngx_http_aggregate_fail(part, "timeout");
    ngx_http_aggregate_cancel(part);
    ngx_http_aggregate_advance(part->agg);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_aggregate_timeout(ngx_event_t *ev)
{
    ngx_uint_t                  i;
    ngx_connection_t           *c;
    ngx_http_aggregate_ctx_t   *ctx;
    ngx_http_aggregate_part_t  *part;

    ctx = ev->data;
    c = ctx->request->connection;

    if (ctx->done) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, c->log, 0, "aggregate: timed out");

    ctx->timed_out = 1;

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (part->state < NGX_HTTP_AGGREGATE_OK) {
            ngx_http_aggregate_fail(part, "timeout");
            ngx_http_aggregate_cancel(part);
        }
    }

    ngx_http_aggregate_advance(ctx);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_aggregate_finish(ngx_http_aggregate_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_str_t                   body;
    ngx_uint_t                  i, status;
    ngx_http_request_t         *r;
    ngx_http_aggregate_part_t  *part, *failed;

    r = ctx->request;
    ctx->done = 1;

    if (ctx->timer.timer_set) {
        ngx_del_timer(&ctx->timer);
    }

    failed = NULL;

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (failed == NULL && part->state == NGX_HTTP_AGGREGATE_FAILED
            && !part->conf->optional)
        {
            failed = part;
        }
    }

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (part->state < NGX_HTTP_AGGREGATE_OK) {
            part->state = NGX_HTTP_AGGREGATE_FAILED;
            part->reason = "cancelled";

            if (part->timer.timer_set) {
                ngx_del_timer(&part->timer);
            }

            ngx_http_aggregate_cancel(part);
        }
    }

    if (ngx_http_aggregate_failed(ctx, 0, &ctx->failed) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (failed) {
        status = ngx_strcmp(failed->reason, "timeout") == 0
                 ? NGX_HTTP_GATEWAY_TIME_OUT : NGX_HTTP_BAD_GATEWAY;
        rc = ngx_http_aggregate_error_body(ctx, failed, &body);

    } else {
        status = NGX_HTTP_OK;
        rc = ngx_http_aggregate_merge(ctx, &body);
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_http_aggregate_send(r, status, &body, ctx->failed.len == 0);

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_http_aggregate_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body, ngx_uint_t completed)
{
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_chain_t       out;
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Aggregate-Completed");

    if (completed) {
        ngx_str_set(&h->value, "true");

    } else {
        ngx_str_set(&h->value, "false");
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = body->len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static void
ngx_http_aggregate_cleanup(void *data)
{
    ngx_http_aggregate_ctx_t *ctx = data;

    ngx_uint_t  i;

    ctx->done = 1;

    if (ctx->timer.timer_set) {
        ngx_del_timer(&ctx->timer);
    }

    for (i = 0; i < ctx->nparts; i++) {
        if (ctx->parts[i].timer.timer_set) {
            ngx_del_timer(&ctx->parts[i].timer);
        }
    }
}


static ngx_int_t
ngx_http_aggregate_failed_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_aggregate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aggregate_module);

    if (ctx == NULL || !ctx->aggregating) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ctx->failed.len;
    v->data = ctx->failed.data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * $aggregate_<part>_<field>: the field of a finished part's JSON,
 * percent-encoded for use in a URI ("__" separates nested members).  A
 * value with control bytes reads as empty, and a part whose URI needs it
 * is not started ("dependency"), as for a missing field.
 */

static ngx_int_t
ngx_http_aggregate_field_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t *name = (ngx_str_t *) data;

    u_char                     *p;
    ngx_int_t                   i;
    ngx_str_t                   field, raw, text, what;
    ngx_uint_t                  n;
    ngx_http_aggregate_ctx_t   *ctx;
    ngx_http_aggregate_part_t  *part;

    v->not_found = 1;

    ctx = ngx_http_get_module_ctx(r, ngx_http_aggregate_module);

    if (ctx == NULL || !ctx->aggregating) {
        return NGX_OK;
    }

    n = sizeof(NGX_HTTP_AGGREGATE_PREFIX) - 1;

    what.data = name->data + n;
    what.len = name->len - n;

    i = ngx_http_aggregate_find_part(ctx->conf->parts, what.data, what.len,
                                     &field);
    if (i == NGX_ERROR) {
        ctx->missing = 1;
        return NGX_OK;
    }

    part = &ctx->parts[i];

    if (part->state != NGX_HTTP_AGGREGATE_OK
        || ngx_http_aggregate_lookup(&part->text, &field, &raw) != NGX_OK
        || (raw.len == 4 && ngx_strncmp(raw.data, "null", 4) == 0))
    {
        ctx->missing = 1;
        return NGX_OK;
    }

    if (ngx_meshgate_json_value_text(r->pool, &raw, &text) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_meshgate_variable_set_text(r, v, "aggregate field", &what,
                                   text.data, text.len);
    v->no_cacheable = 1;

    if (v->len != text.len) {
        ctx->missing = 1;
        return NGX_OK;
    }

    n = ngx_escape_uri(NULL, text.data, text.len, NGX_ESCAPE_URI_COMPONENT);

    if (n == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, text.len + 2 * n);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = (u_char *) ngx_escape_uri(p, text.data, text.len,
                                       NGX_ESCAPE_URI_COMPONENT) - p;
    v->data = p;

    return NGX_OK;
}


static ngx_int_t
ngx_http_aggregate_add_variables(ngx_conf_t *cf)
{
    return ngx_meshgate_add_variables(cf, ngx_http_aggregate_vars);
}


static ngx_int_t
ngx_http_aggregate_init(ngx_conf_t *cf)
{
    return ngx_meshgate_fetch_init(cf);
}


static void *
ngx_http_aggregate_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_aggregate_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_aggregate_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->parts = NULL;
     */

    conf->timeout = NGX_CONF_UNSET_MSEC;
    conf->max_part_size = NGX_CONF_UNSET_SIZE;
    conf->merge = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_aggregate_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_aggregate_loc_conf_t *prev = parent;
    ngx_http_aggregate_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_aggregate_part_conf_t  *pc;

    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 10000);
    ngx_conf_merge_size_value(conf->max_part_size, prev->max_part_size,
                              1024 * 1024);
    ngx_conf_merge_uint_value(conf->merge, prev->merge,
                              NGX_HTTP_AGGREGATE_MERGE_OBJECT);

    /* parts belong to the location that declares them: not inherited */

    if (conf->parts == NULL) {
        return NGX_CONF_OK;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler != ngx_http_aggregate_handler) {
        pc = conf->parts->elts;
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"aggregate\" and another content handler "
                      "(such as proxy_pass) in one location in %s:%ui",
                      pc[0].file, pc[0].line);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_aggregate_resolve(cf, conf->parts) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_aggregate_resolve(ngx_conf_t *cf, ngx_array_t *parts)
{
    u_char                           color[NGX_HTTP_AGGREGATE_MAX_PARTS];
    ngx_uint_t                       i;
    ngx_http_aggregate_part_conf_t  *pc;

    pc = parts->elts;

    for (i = 0; i < parts->nelts; i++) {
        if (ngx_http_aggregate_scan(cf, parts, &pc[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    ngx_memzero(color, sizeof(color));

    for (i = 0; i < parts->nelts; i++) {
        if (ngx_http_aggregate_cycle(parts, i, color) != NGX_OK) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "aggregate part \"%V\" depends on itself "
                          "through $aggregate_ variables in %s:%ui",
                          &pc[i].name, pc[i].file, pc[i].line);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* finds the parts whose $aggregate_<part>_<field> the uri uses */

static ngx_int_t
ngx_http_aggregate_scan(ngx_conf_t *cf, ngx_array_t *parts,
    ngx_http_aggregate_part_conf_t *pc)
{
    u_char     *p, *last, *name;
    size_t      n;
    ngx_int_t   i;
    ngx_str_t   field;

    n = sizeof(NGX_HTTP_AGGREGATE_PREFIX) - 1;
    p = pc->source.data;
    last = p + pc->source.len;

    while (p < last) {

        if (*p++ != '$') {
            continue;
        }

        if (p < last && *p == '{') {
            p++;
        }

        name = p;

        while (p < last && (isalnum(*p) || *p == '_')) {
            p++;
        }

        if ((size_t) (p - name) <= n
            || ngx_strncasecmp(name, (u_char *) NGX_HTTP_AGGREGATE_PREFIX, n)
               != 0
            || ((size_t) (p - name) == sizeof("aggregate_failed_parts") - 1
                && ngx_strncasecmp(name, (u_char *) "aggregate_failed_parts",
                                   p - name) == 0))
        {
            continue;
        }

        i = ngx_http_aggregate_find_part(parts, name + n, p - name - n,
                                         &field);
        if (i == NGX_ERROR) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown aggregate part in variable \"$%*s\" "
                          "in %s:%ui", p - name, name, pc->file, pc->line);
            return NGX_ERROR;
        }

        pc->deps |= (uint64_t) 1 << i;
    }

    return NGX_OK;
}


/* depth-first search: 1 on the path, 2 done */

static ngx_int_t
ngx_http_aggregate_cycle(ngx_array_t *parts, ngx_uint_t i, u_char *color)
{
    ngx_uint_t                       j;
    ngx_http_aggregate_part_conf_t  *pc;

    if (color[i] == 2) {
        return NGX_OK;
    }

    if (color[i] == 1) {
        return NGX_ERROR;
    }

    color[i] = 1;
    pc = parts->elts;

    for (j = 0; j < parts->nelts; j++) {
        if ((pc[i].deps & ((uint64_t) 1 << j))
            && ngx_http_aggregate_cycle(parts, j, color) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    color[i] = 2;

    return NGX_OK;
}


static char *
ngx_http_aggregate(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_aggregate_loc_conf_t *alcf = conf;

    char                              *rv;
    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_aggregate_part_conf_t    *pc;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (ngx_http_aggregate_valid_name(&value[1]) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid aggregate part name \"%V\": letters, "
                           "digits and \"_\", not first, up to 64",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    pc = ngx_http_aggregate_new_part(cf, alcf, &value[1]);
    if (pc == NULL) {
        return NGX_CONF_ERROR;
    }

    pc->name.len = value[1].len;
    pc->name.data = ngx_pnalloc(cf->pool, value[1].len + 1);
    if (pc->name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_cpystrn(pc->name.data, value[1].data, value[1].len + 1);

    pc->source = value[2];
    pc->file = cf->conf_file->file.name.data;
    pc->line = cf->conf_file->line;

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[2];
    ccv.complex_value = &pc->uri;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 3; i < cf->args->nelts; i++) {
        rv = ngx_http_aggregate_option(cf, pc, &value[i]);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler && clcf->handler != ngx_http_aggregate_handler) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"aggregate\" and another content handler "
                           "(such as proxy_pass) in one location");
        return NGX_CONF_ERROR;
    }

    clcf->handler = ngx_http_aggregate_handler;

    return NGX_CONF_OK;
}


/* a zeroed part conf for a new, unique name (NULL after logging why) */

static ngx_http_aggregate_part_conf_t *
ngx_http_aggregate_new_part(ngx_conf_t *cf,
    ngx_http_aggregate_loc_conf_t *alcf, ngx_str_t *name)
{
    ngx_uint_t                       i;
    ngx_http_aggregate_part_conf_t  *pc;

    if (alcf->parts == NULL) {
        alcf->parts = ngx_array_create(cf->pool, 4,
                                      sizeof(ngx_http_aggregate_part_conf_t));
        if (alcf->parts == NULL) {
            return NULL;
        }
    }

    pc = alcf->parts->elts;

    for (i = 0; i < alcf->parts->nelts; i++) {
        if (pc[i].name.len == name->len
            && ngx_strncasecmp(pc[i].name.data, name->data, name->len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate aggregate part \"%V\"", name);
            return NULL;
        }
    }

    if (alcf->parts->nelts == NGX_HTTP_AGGREGATE_MAX_PARTS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many aggregate parts, at most %d",
                           NGX_HTTP_AGGREGATE_MAX_PARTS);
        return NULL;
    }

    pc = ngx_array_push(alcf->parts);
    if (pc == NULL) {
        return NULL;
    }

    ngx_memzero(pc, sizeof(ngx_http_aggregate_part_conf_t));

    return pc;
}


static char *
ngx_http_aggregate_option(ngx_conf_t *cf, ngx_http_aggregate_part_conf_t *pc,
    ngx_str_t *value)
{
    ngx_str_t  s;

    if (value->len == 8 && ngx_strncmp(value->data, "optional", 8) == 0) {
        pc->optional = 1;
        return NGX_CONF_OK;
    }

    if (value->len > 7 && ngx_strncmp(value->data, "fields=", 7) == 0) {
        return ngx_http_aggregate_fields(cf, pc, value);
    }

    if (value->len > 8 && ngx_strncmp(value->data, "timeout=", 8) == 0) {
        s.data = value->data + 8;
        s.len = value->len - 8;

        pc->timeout = ngx_parse_time(&s, 0);

        if (pc->timeout == (ngx_msec_t) NGX_ERROR || pc->timeout == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid aggregate timeout \"%V\"", value);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid aggregate parameter \"%V\"", value);

    return NGX_CONF_ERROR;
}


static char *
ngx_http_aggregate_fields(ngx_conf_t *cf, ngx_http_aggregate_part_conf_t *pc,
    ngx_str_t *value)
{
    u_char     *p, *last, *comma;
    ngx_str_t  *f;

    if (pc->fields) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate aggregate parameter \"%V\"", value);
        return NGX_CONF_ERROR;
    }

    pc->fields = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
    if (pc->fields == NULL) {
        return NGX_CONF_ERROR;
    }

    p = value->data + 7;
    last = value->data + value->len;

    while (p <= last) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        if (comma == p || *p == '.' || comma[-1] == '.'
            || ngx_strlcasestrn(p, comma, (u_char *) "..", 2 - 1) != NULL
            || comma - p >= 256
            || !ngx_http_aggregate_field_is_plain(p, comma))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid field in \"%V\"", value);
            return NGX_CONF_ERROR;
        }

        f = ngx_array_push(pc->fields);
        if (f == NULL) {
            return NGX_CONF_ERROR;
        }

        f->data = p;
        f->len = comma - p;

        p = comma + 1;
    }

    return NGX_CONF_OK;
}


/*
 * Field names are compared with the parts' member names as JSON writes
 * them: a name that JSON would escape could never match.
 */

static ngx_uint_t
ngx_http_aggregate_field_is_plain(u_char *p, u_char *last)
{
    for ( /* void */ ; p < last; p++) {
        if (*p == '"' || *p == '\\' || *p < 0x20) {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_aggregate_valid_name(ngx_str_t *name)
{
    size_t  i;

    if (name->len == 0 || name->len > 64 || name->data[0] == '_') {
        return NGX_ERROR;
    }

    for (i = 0; i < name->len; i++) {
        if (!isalnum(name->data[i]) && name->data[i] != '_') {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}
