
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_HTTP_AGGREGATE_H_INCLUDED_
#define _NGX_HTTP_AGGREGATE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_meshgate_fetch.h"


#define NGX_HTTP_AGGREGATE_MAX_PARTS    64

#define NGX_HTTP_AGGREGATE_MERGE_OBJECT  0
#define NGX_HTTP_AGGREGATE_MERGE_FLAT    1

#define NGX_HTTP_AGGREGATE_WAITING       0
#define NGX_HTTP_AGGREGATE_RUNNING       1
#define NGX_HTTP_AGGREGATE_OK            2
#define NGX_HTTP_AGGREGATE_FAILED        3


typedef struct {
    ngx_str_t                        name;       /* null-terminated */
    ngx_str_t                        source;     /* uri as written */
    ngx_http_complex_value_t         uri;
    ngx_array_t                     *fields;     /* of ngx_str_t */
    ngx_msec_t                       timeout;    /* 0: none of its own */
    ngx_uint_t                       optional;
    uint64_t                         deps;       /* bit per part index */
    u_char                          *file;
    ngx_uint_t                       line;
} ngx_http_aggregate_part_conf_t;


typedef struct {
    ngx_array_t                     *parts;      /* NULL: no aggregation */
    ngx_msec_t                       timeout;
    size_t                           max_part_size;
    ngx_uint_t                       merge;
} ngx_http_aggregate_loc_conf_t;


typedef struct ngx_http_aggregate_ctx_s  ngx_http_aggregate_ctx_t;


typedef struct {
    ngx_http_aggregate_ctx_t        *agg;
    ngx_http_aggregate_part_conf_t  *conf;
    ngx_meshgate_fetch_t             fetch;
    ngx_uint_t                       state;
    const char                      *reason;
    ngx_str_t                        text;       /* canonical, in fetch */
    ngx_str_t                        out;        /* after fields= */
    ngx_event_t                      timer;
} ngx_http_aggregate_part_t;


struct ngx_http_aggregate_ctx_s {
    ngx_http_request_t              *request;
    ngx_http_aggregate_loc_conf_t   *conf;
    ngx_http_aggregate_part_t       *parts;
    ngx_uint_t                       nparts;
    ngx_list_t                       headers;
    ngx_event_t                      timer;
    ngx_str_t                        failed;

    unsigned                         aggregating:1;
    unsigned                         done:1;
    unsigned                         timed_out:1;
    unsigned                         missing:1;
};


#pragma GCC visibility push(hidden)


/* ngx_http_aggregate_merge.c */

ngx_int_t ngx_http_aggregate_find_part(ngx_array_t *parts, u_char *name,
    size_t len, ngx_str_t *field);
ngx_int_t ngx_http_aggregate_part_json(ngx_http_aggregate_part_t *part,
    ngx_log_t *log);
ngx_int_t ngx_http_aggregate_lookup(ngx_str_t *doc, ngx_str_t *path,
    ngx_str_t *value);
ngx_int_t ngx_http_aggregate_merge(ngx_http_aggregate_ctx_t *ctx,
    ngx_str_t *out);
ngx_int_t ngx_http_aggregate_failed(ngx_http_aggregate_ctx_t *ctx,
    ngx_uint_t json, ngx_str_t *out);
ngx_int_t ngx_http_aggregate_error_body(ngx_http_aggregate_ctx_t *ctx,
    ngx_http_aggregate_part_t *part, ngx_str_t *out);


/* ngx_http_aggregate_json.c: canonical JSON text, never a tree */

ngx_int_t ngx_http_aggregate_json_compact(ngx_str_t *text, ngx_log_t *log,
    const char **error, size_t *offset);
int ngx_http_aggregate_json_cmp_names(u_char *a, u_char *b);
ngx_int_t ngx_http_aggregate_json_filter(ngx_pool_t *pool, ngx_str_t *in,
    ngx_array_t *fields, ngx_str_t *out);


#pragma GCC visibility pop


#endif /* _NGX_HTTP_AGGREGATE_H_INCLUDED_ */
