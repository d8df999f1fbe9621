
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_aggregate.h"


#define NGX_HTTP_AGGREGATE_KEY_LEN  256


static ngx_int_t ngx_http_aggregate_key(u_char *p, size_t len, char *key);
static json_t *ngx_http_aggregate_get(json_t *obj, char *key);
static json_t *ngx_http_aggregate_filter(json_t *v, ngx_array_t *fields);
static json_t *ngx_http_aggregate_filter_object(json_t *v,
    ngx_array_t *fields);
static ngx_int_t ngx_http_aggregate_set_path(json_t *obj, ngx_str_t *path,
    json_t *v);
static ngx_int_t ngx_http_aggregate_merge_flat(ngx_http_aggregate_ctx_t *ctx,
    json_t *root, ngx_http_aggregate_part_t *part);
static ngx_int_t ngx_http_aggregate_errors(ngx_http_aggregate_ctx_t *ctx,
    json_t *root);
static ngx_int_t ngx_http_aggregate_dump(ngx_pool_t *pool, json_t *root,
    ngx_str_t *out);


/*
 * Finds the part a variable name ("<part>_<field>", without the
 * "aggregate_" prefix) refers to: the longest part name followed by "_"
 * and a non-empty field, compared without regard to case (nginx lowers
 * variable names).
 */

ngx_int_t
ngx_http_aggregate_find_part(ngx_array_t *parts, u_char *name, size_t len,
    ngx_str_t *field)
{
    size_t                           best;
    ngx_int_t                        found;
    ngx_uint_t                       i;
    ngx_http_aggregate_part_conf_t  *pc;

    if (parts == NULL) {
        return NGX_ERROR;
    }

    pc = parts->elts;
    found = NGX_ERROR;
    best = 0;

    for (i = 0; i < parts->nelts; i++) {
        if (len <= pc[i].name.len + 1
            || pc[i].name.len <= best
            || name[pc[i].name.len] != '_'
            || ngx_strncasecmp(name, pc[i].name.data, pc[i].name.len) != 0)
        {
            continue;
        }

        best = pc[i].name.len;
        found = i;
    }

    if (found != NGX_ERROR) {
        field->data = name + best + 1;
        field->len = len - best - 1;
    }

    return found;
}


/*
 * Walks a path whose segments are separated by "__" (a variable name
 * cannot hold a dot); an object member is matched exactly first, then
 * without regard to case.
 */

json_t *
ngx_http_aggregate_lookup(json_t *root, ngx_str_t *path)
{
    u_char  *p, *last, *sep;
    char     key[NGX_HTTP_AGGREGATE_KEY_LEN];
    json_t  *v;

    v = root;
    p = path->data;
    last = p + path->len;

    while (p < last) {
        if (!json_is_object(v)) {
            return NULL;
        }

        for (sep = p; sep + 1 < last; sep++) {
            if (sep[0] == '_' && sep[1] == '_') {
                break;
            }
        }

        if (sep + 1 >= last) {
            sep = last;
        }

        if (ngx_http_aggregate_key(p, sep - p, key) != NGX_OK) {
            return NULL;
        }

        v = ngx_http_aggregate_get(v, key);
        if (v == NULL) {
            return NULL;
        }

        p = (sep == last) ? last : sep + 2;
    }

    return v;
}


static ngx_int_t
ngx_http_aggregate_key(u_char *p, size_t len, char *key)
{
    if (len == 0 || len >= NGX_HTTP_AGGREGATE_KEY_LEN) {
        return NGX_ERROR;
    }

    ngx_memcpy(key, p, len);
    key[len] = '\0';

    return NGX_OK;
}


static json_t *
ngx_http_aggregate_get(json_t *obj, char *key)
{
    json_t      *v;
    const char  *k;

    v = json_object_get(obj, key);
    if (v != NULL) {
        return v;
    }

    json_object_foreach(obj, k, v) {
        if (strcasecmp(k, key) == 0) {
            return v;
        }
    }

    return NULL;
}


/*
 * Parses the collected body of a part into part->json, and applies
 * fields= into part->out.  NGX_DECLINED: not JSON.
 */

ngx_int_t
ngx_http_aggregate_part_json(ngx_http_aggregate_part_t *part, ngx_log_t *log)
{
    u_char        *p;
    size_t         len;
    json_t        *v;
    ngx_uint_t     level;
    ngx_pool_t    *pool;
    json_error_t   err;

    p = part->buf;
    len = part->len;
    pool = part->agg->request->pool;

    if (len >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) {
        p += 3;
        len -= 3;
    }

    v = json_loadb((const char *) p, len,
                   JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);

    if (v == NULL) {
        level = part->conf->optional ? NGX_LOG_WARN : NGX_LOG_ERR;

        ngx_log_error(level, log, 0, "aggregate part \"%V\": invalid JSON "
                      "at offset %d: %s", &part->conf->name, err.position,
                      err.text);
        return NGX_DECLINED;
    }

    if (ngx_meshgate_json_cleanup(pool, v) != NGX_OK) {
        return NGX_ERROR;
    }

    part->json = v;
    part->out = v;

    if (part->conf->fields == NULL) {
        return NGX_OK;
    }

    v = ngx_http_aggregate_filter(v, part->conf->fields);
    if (v == NULL) {
        return NGX_ERROR;
    }

    if (ngx_meshgate_json_cleanup(pool, v) != NGX_OK) {
        return NGX_ERROR;
    }

    part->out = v;

    return NGX_OK;
}


static json_t *
ngx_http_aggregate_filter(json_t *v, ngx_array_t *fields)
{
    size_t   i;
    json_t  *a, *e;

    if (!json_is_array(v)) {
        return ngx_http_aggregate_filter_object(v, fields);
    }

    a = json_array();
    if (a == NULL) {
        return NULL;
    }

    for (i = 0; i < json_array_size(v); i++) {
        e = ngx_http_aggregate_filter_object(json_array_get(v, i), fields);

        if (e == NULL || json_array_append_new(a, e) != 0) {
            json_decref(a);
            return NULL;
        }
    }

    return a;
}


static json_t *
ngx_http_aggregate_filter_object(json_t *v, ngx_array_t *fields)
{
    json_t      *o, *x;
    ngx_str_t   *f;
    ngx_uint_t   i;

    if (!json_is_object(v)) {
        return json_incref(v);
    }

    o = json_object();
    if (o == NULL) {
        return NULL;
    }

    f = fields->elts;

    for (i = 0; i < fields->nelts; i++) {
        x = ngx_meshgate_json_path(v, f[i].data, f[i].len);
        if (x == NULL) {
            continue;
        }

        if (ngx_http_aggregate_set_path(o, &f[i], x) != NGX_OK) {
            json_decref(o);
            return NULL;
        }
    }

    return o;
}


static ngx_int_t
ngx_http_aggregate_set_path(json_t *obj, ngx_str_t *path, json_t *v)
{
    u_char  *p, *last, *dot;
    char     key[NGX_HTTP_AGGREGATE_KEY_LEN];
    json_t  *child;

    p = path->data;
    last = p + path->len;

    for ( ;; ) {
        dot = ngx_strlchr(p, last, '.');

        if (ngx_http_aggregate_key(p, (dot ? dot : last) - p, key) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (dot == NULL) {
            return json_object_set(obj, key, v) == 0 ? NGX_OK : NGX_ERROR;
        }

        child = json_object_get(obj, key);

        if (!json_is_object(child)) {
            child = json_object();
            if (child == NULL || json_object_set_new(obj, key, child) != 0) {
                return NGX_ERROR;
            }
        }

        obj = child;
        p = dot + 1;
    }
}


ngx_int_t
ngx_http_aggregate_merge(ngx_http_aggregate_ctx_t *ctx, ngx_str_t *out)
{
    json_t                     *root, *v;
    ngx_int_t                   rc;
    ngx_uint_t                  i;
    ngx_http_aggregate_part_t  *part;

    root = json_object();
    if (root == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (ctx->conf->merge == NGX_HTTP_AGGREGATE_MERGE_FLAT) {
            rc = ngx_http_aggregate_merge_flat(ctx, root, part);

        } else {
            v = (part->state == NGX_HTTP_AGGREGATE_OK) ? part->out : NULL;
            rc = json_object_set_new(root, (char *) part->conf->name.data,
                                     v ? json_incref(v) : json_null());
        }

        if (rc != NGX_OK) {
            json_decref(root);
            return NGX_ERROR;
        }
    }

    rc = ngx_http_aggregate_errors(ctx, root);

    if (rc == NGX_OK) {
        rc = ngx_http_aggregate_dump(ctx->request->pool, root, out);
    }

    json_decref(root);

    return rc;
}


static ngx_int_t
ngx_http_aggregate_merge_flat(ngx_http_aggregate_ctx_t *ctx, json_t *root,
    ngx_http_aggregate_part_t *part)
{
    json_t      *v;
    const char  *key;

    if (part->state != NGX_HTTP_AGGREGATE_OK) {
        return NGX_OK;
    }

    if (!json_is_object(part->out)) {
        /* arrays and scalars cannot be flattened: kept under the name */
        return json_object_set(root, (char *) part->conf->name.data,
                               part->out) == 0 ? NGX_OK : NGX_ERROR;
    }

    json_object_foreach(part->out, key, v) {

        if (json_object_get(root, key) != NULL) {
            ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                          "aggregate: member \"%s\" of part \"%V\" "
                          "replaces an earlier one", key,
                          &part->conf->name);
        }

        if (json_object_set(root, key, v) != 0) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_aggregate_errors(ngx_http_aggregate_ctx_t *ctx, json_t *root)
{
    json_t                     *errors;
    ngx_uint_t                  i;
    ngx_http_aggregate_part_t  *part;

    errors = NULL;

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (part->state == NGX_HTTP_AGGREGATE_OK) {
            continue;
        }

        if (errors == NULL) {
            errors = json_object();
            if (errors == NULL
                || json_object_set_new(root, "_errors", errors) != 0)
            {
                return NGX_ERROR;
            }
        }

        if (json_object_set_new(errors, (char *) part->conf->name.data,
                                json_string(part->reason))
            != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_aggregate_error_body(ngx_http_aggregate_ctx_t *ctx,
    ngx_http_aggregate_part_t *part, ngx_str_t *out)
{
    json_t     *root;
    ngx_int_t   rc;

    root = json_pack("{s:s,s:s,s:s}",
                     "error", ctx->timed_out ? "aggregate timeout"
                                             : "required part failed",
                     "part", (char *) part->conf->name.data,
                     "reason", part->reason);
    if (root == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_aggregate_dump(ctx->request->pool, root, out);

    json_decref(root);

    return rc;
}


/* compact JSON and a newline */

static ngx_int_t
ngx_http_aggregate_dump(ngx_pool_t *pool, json_t *root, ngx_str_t *out)
{
    if (ngx_meshgate_json_dump(pool, root, out) != NGX_OK) {
        return NGX_ERROR;
    }

    /* the terminating null becomes the newline */

    out->data[out->len++] = '\n';

    return NGX_OK;
}
