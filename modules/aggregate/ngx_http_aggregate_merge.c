
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_aggregate.h"
#include "ngx_meshgate_http.h"


/* a member of the answer of aggregate_merge flat */
typedef struct {
    ngx_str_t                   name;      /* without quotes */
    ngx_str_t                   value;
} ngx_http_aggregate_member_t;


static ngx_int_t ngx_http_aggregate_errors(ngx_http_aggregate_ctx_t *ctx,
    ngx_str_t *out);
static ngx_int_t ngx_http_aggregate_merge_object(
    ngx_http_aggregate_ctx_t *ctx, ngx_str_t *errors, ngx_str_t *out);
static ngx_int_t ngx_http_aggregate_merge_flat(ngx_http_aggregate_ctx_t *ctx,
    ngx_str_t *errors, ngx_str_t *out);
static ngx_uint_t ngx_http_aggregate_flat_members(
    ngx_http_aggregate_ctx_t *ctx, ngx_str_t *errors,
    ngx_http_aggregate_member_t *m);
static void ngx_http_aggregate_flat_dedup(ngx_http_aggregate_ctx_t *ctx,
    ngx_http_aggregate_member_t *m, ngx_uint_t n,
    ngx_http_aggregate_member_t **sorted);
static int ngx_libc_cdecl ngx_http_aggregate_cmp_members(const void *one,
    const void *two);


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
 * cannot hold a dot) through a part's canonical text; an object member is
 * matched exactly first, then without regard to case.  NGX_DECLINED when
 * a member is missing (never another member's value).
 */

ngx_int_t
ngx_http_aggregate_lookup(ngx_str_t *doc, ngx_str_t *path, ngx_str_t *value)
{
    u_char     *p, *last, *sep;
    ngx_str_t   v;

    v = *doc;
    p = path->data;
    last = p + path->len;

    while (p < last) {

        for (sep = p; sep + 1 < last; sep++) {
            if (sep[0] == '_' && sep[1] == '_') {
                break;
            }
        }

        if (sep + 1 >= last) {
            sep = last;
        }

        if (sep == p
            || ngx_http_aggregate_json_get(&v, p, sep - p, 1, &v) != NGX_OK)
        {
            return NGX_DECLINED;
        }

        p = (sep == last) ? last : sep + 2;
    }

    *value = v;

    return NGX_OK;
}


/*
 * Checks and rewrites the collected body of a part in place
 * (part->text), and applies fields= (part->out).  NGX_DECLINED: not JSON.
 */

ngx_int_t
ngx_http_aggregate_part_json(ngx_http_aggregate_part_t *part, ngx_log_t *log)
{
    size_t       offset;
    ngx_int_t    rc;
    ngx_uint_t   level;
    const char  *error;

    part->text.data = part->buf;
    part->text.len = part->len;

    if (part->len >= 3
        && part->buf[0] == 0xef && part->buf[1] == 0xbb
        && part->buf[2] == 0xbf)
    {
        part->text.data += 3;
        part->text.len -= 3;
    }

    rc = ngx_http_aggregate_json_compact(&part->text, log, &error, &offset);

    if (rc == NGX_DECLINED) {
        level = part->conf->optional ? NGX_LOG_WARN : NGX_LOG_ERR;

        ngx_log_error(level, log, 0, "aggregate part \"%V\": invalid JSON "
                      "at offset %uz: %s", &part->conf->name, offset, error);
        return NGX_DECLINED;
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    if (part->conf->fields == NULL) {
        part->out = part->text;
        return NGX_OK;
    }

    return ngx_http_aggregate_json_filter(part->agg->request->pool,
                                          &part->text, part->conf->fields,
                                          &part->out);
}


/*
 * The answer is written from the parts' canonical text: {"name":part,...}
 * with null for a failed part, or with aggregate_merge flat the members
 * of the parts' objects, and "_errors" naming the failed parts.
 */

ngx_int_t
ngx_http_aggregate_merge(ngx_http_aggregate_ctx_t *ctx, ngx_str_t *out)
{
    ngx_str_t  errors;

    if (ngx_http_aggregate_errors(ctx, &errors) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->conf->merge == NGX_HTTP_AGGREGATE_MERGE_FLAT) {
        return ngx_http_aggregate_merge_flat(ctx, &errors, out);
    }

    return ngx_http_aggregate_merge_object(ctx, &errors, out);
}


/* {"part":"reason",...} of the failed parts; reasons need no escapes */

static ngx_int_t
ngx_http_aggregate_errors(ngx_http_aggregate_ctx_t *ctx, ngx_str_t *out)
{
    u_char                     *p;
    size_t                      len;
    ngx_uint_t                  i;
    ngx_http_aggregate_part_t  *part;

    len = 0;

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (part->state != NGX_HTTP_AGGREGATE_OK) {
            len += part->conf->name.len + ngx_strlen(part->reason)
                   + sizeof("\"\":\"\",") - 1;
        }
    }

    ngx_str_null(out);

    if (len == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(ctx->request->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;
    *p++ = '{';

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (part->state == NGX_HTTP_AGGREGATE_OK) {
            continue;
        }

        if (p != out->data + 1) {
            *p++ = ',';
        }

        p = ngx_sprintf(p, "\"%V\":\"%s\"", &part->conf->name, part->reason);
    }

    *p++ = '}';
    out->len = p - out->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_aggregate_merge_object(ngx_http_aggregate_ctx_t *ctx,
    ngx_str_t *errors, ngx_str_t *out)
{
    u_char                     *p;
    size_t                      len;
    ngx_uint_t                  i;
    ngx_http_aggregate_part_t  *part;

    len = sizeof("{}\n") - 1
          + (errors->len ? sizeof(",\"_errors\":") - 1 + errors->len : 0);

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        len += sizeof(",\"\":") - 1 + part->conf->name.len
               + (part->state == NGX_HTTP_AGGREGATE_OK
                  ? part->out.len : sizeof("null") - 1);
    }

    p = ngx_pnalloc(ctx->request->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;
    *p++ = '{';

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (i) {
            *p++ = ',';
        }

        p = ngx_sprintf(p, "\"%V\":", &part->conf->name);

        if (part->state == NGX_HTTP_AGGREGATE_OK) {
            p = ngx_cpymem(p, part->out.data, part->out.len);

        } else {
            p = ngx_cpymem(p, "null", sizeof("null") - 1);
        }
    }

    if (errors->len) {
        p = ngx_cpymem(p, ",\"_errors\":", sizeof(",\"_errors\":") - 1);
        p = ngx_cpymem(p, errors->data, errors->len);
    }

    *p++ = '}';
    *p++ = '\n';

    out->len = p - out->data;

    return NGX_OK;
}


/*
 * aggregate_merge flat: the members of the parts' objects (an array or a
 * scalar under its part's name), then "_errors".  A member of a later
 * part replaces an earlier one of that name in its place, as setting a
 * member of a JSON object does.  The bookkeeping takes 40 bytes a member,
 * and a member takes at least 5 bytes of a part's text.
 */

static ngx_int_t
ngx_http_aggregate_merge_flat(ngx_http_aggregate_ctx_t *ctx,
    ngx_str_t *errors, ngx_str_t *out)
{
    u_char                        *p;
    size_t                         len;
    ngx_uint_t                     i, n;
    ngx_pool_t                    *pool;
    ngx_http_aggregate_member_t   *m, **sorted;

    pool = ctx->request->pool;

    n = ngx_http_aggregate_flat_members(ctx, errors, NULL);

    m = ngx_palloc(pool, (n + 1) * sizeof(ngx_http_aggregate_member_t));
    sorted = ngx_palloc(pool, (n + 1) * sizeof(ngx_http_aggregate_member_t *));

    if (m == NULL || sorted == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_http_aggregate_flat_members(ctx, errors, m);

    ngx_http_aggregate_flat_dedup(ctx, m, n, sorted);

    len = sizeof("{}\n") - 1;

    for (i = 0; i < n; i++) {
        if (m[i].name.data) {
            len += sizeof(",\"\":") - 1 + m[i].name.len + m[i].value.len;
        }
    }

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;
    *p++ = '{';

    for (i = 0; i < n; i++) {
        if (m[i].name.data == NULL) {
            continue;
        }

        if (p != out->data + 1) {
            *p++ = ',';
        }

        *p++ = '"';
        p = ngx_cpymem(p, m[i].name.data, m[i].name.len);
        *p++ = '"';
        *p++ = ':';
        p = ngx_cpymem(p, m[i].value.data, m[i].value.len);
    }

    *p++ = '}';
    *p++ = '\n';

    out->len = p - out->data;

    return NGX_OK;
}


/* counts the members (m NULL), or fills m in order */

static ngx_uint_t
ngx_http_aggregate_flat_members(ngx_http_aggregate_ctx_t *ctx,
    ngx_str_t *errors, ngx_http_aggregate_member_t *m)
{
    u_char                     *p, *last;
    ngx_str_t                   name, value;
    ngx_uint_t                  i, n;
    ngx_http_aggregate_part_t  *part;

    n = 0;

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (part->state != NGX_HTTP_AGGREGATE_OK) {
            continue;
        }

        if (part->out.data[0] != '{') {
            /* arrays and scalars cannot be flattened: kept under the name */

            if (m) {
                m[n].name = part->conf->name;
                m[n].value = part->out;
            }

            n++;
            continue;
        }

        p = part->out.data + 1;
        last = part->out.data + part->out.len;

        while (ngx_http_aggregate_json_member(&p, last, &name, &value)
               == NGX_OK)
        {
            if (m) {
                m[n].name = name;
                m[n].value = value;
            }

            n++;
        }
    }

    if (errors->len) {
        if (m) {
            ngx_str_set(&m[n].name, "_errors");
            m[n].value = *errors;
        }

        n++;
    }

    return n;
}


/*
 * Members of one name keep the place of the first and the value of the
 * last; the others are dropped (name.data NULL).
 */

static void
ngx_http_aggregate_flat_dedup(ngx_http_aggregate_ctx_t *ctx,
    ngx_http_aggregate_member_t *m, ngx_uint_t n,
    ngx_http_aggregate_member_t **sorted)
{
    ngx_uint_t                   i, j, k;
    ngx_http_aggregate_part_t   *part;
    ngx_http_aggregate_member_t  *first;

    for (i = 0; i < n; i++) {
        sorted[i] = &m[i];
    }

    ngx_qsort(sorted, n, sizeof(ngx_http_aggregate_member_t *),
              ngx_http_aggregate_cmp_members);

    for (i = 0; i < n; i = j) {
        first = sorted[i];

        for (j = i + 1;
             j < n
             && ngx_memn2cmp(first->name.data, sorted[j]->name.data,
                             first->name.len, sorted[j]->name.len) == 0;
             j++)
        {
            first->value = sorted[j]->value;

            /* the part whose member this is, to name it in the log */

            for (k = 0; k < ctx->nparts; k++) {
                part = &ctx->parts[k];

                if (part->state == NGX_HTTP_AGGREGATE_OK
                    && sorted[j]->name.data >= part->out.data
                    && sorted[j]->name.data < part->out.data + part->out.len)
                {
                    break;
                }
            }

            if (k < ctx->nparts
                && ngx_meshgate_text_is_safe(sorted[j]->name.data,
                                             sorted[j]->name.len))
            {
                ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log,
                              0, "aggregate: member \"%V\" of part \"%V\" "
                              "replaces an earlier one", &sorted[j]->name,
                              &part->conf->name);
            }

            sorted[j]->name.data = NULL;
        }
    }
}


/* by name, then by place: the first of a name is the earliest */

static int ngx_libc_cdecl
ngx_http_aggregate_cmp_members(const void *one, const void *two)
{
    ngx_int_t                     rc;
    ngx_http_aggregate_member_t  *a, *b;

    a = *(ngx_http_aggregate_member_t **) one;
    b = *(ngx_http_aggregate_member_t **) two;

    rc = ngx_memn2cmp(a->name.data, b->name.data, a->name.len, b->name.len);

    if (rc != 0) {
        return (int) rc;
    }

    return (a < b) ? -1 : (a > b) ? 1 : 0;
}


ngx_int_t
ngx_http_aggregate_error_body(ngx_http_aggregate_ctx_t *ctx,
    ngx_http_aggregate_part_t *part, ngx_str_t *out)
{
    u_char      *p;
    size_t       len;
    const char  *error;

    /* the part's name and the reasons need no escapes */

    error = ctx->timed_out ? "aggregate timeout" : "required part failed";

    len = sizeof("{\"error\":\"\",\"part\":\"\",\"reason\":\"\"}\n") - 1
          + ngx_strlen(error) + part->conf->name.len
          + ngx_strlen(part->reason);

    p = ngx_pnalloc(ctx->request->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;
    p = ngx_sprintf(p, "{\"error\":\"%s\",\"part\":\"%V\",\"reason\":\"%s\"}\n",
                    error, &part->conf->name, part->reason);
    out->len = p - out->data;

    return NGX_OK;
}
