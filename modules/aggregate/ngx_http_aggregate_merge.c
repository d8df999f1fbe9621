
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_aggregate.h"
#include "ngx_meshgate_http.h"
#include "ngx_meshgate_json_text.h"


/*
 * aggregate_merge flat: a member is known by the opening quote of its name
 * in its part's text; an array or a scalar part, and "_errors", by a name
 * of their own.
 */

typedef struct {
    u_char                      *name;      /* "name" */
    ngx_str_t                    value;
    ngx_uint_t                   part;      /* nparts: "_errors" */
} ngx_http_aggregate_own_t;


typedef struct {
    u_char                      *first;     /* in place of this member */
    u_char                      *last;      /* this one's value */
} ngx_http_aggregate_repl_t;


typedef struct {
    ngx_http_aggregate_ctx_t    *ctx;
    ngx_http_aggregate_own_t    *own;
    ngx_uint_t                   nown;
    ngx_http_aggregate_part_t  **objects;   /* by address of their text */
    ngx_uint_t                   nobjects;
    u_char                     **dropped;   /* by address */
    ngx_uint_t                   ndropped;
    ngx_http_aggregate_repl_t   *repl;      /* by first */
    ngx_uint_t                   nrepl;
    u_char                     **names;     /* NULL: count them */
    ngx_uint_t                   nnames;
    u_char                      *p;         /* NULL: count the length */
    size_t                       len;
} ngx_http_aggregate_flat_t;


typedef void (*ngx_http_aggregate_flat_pt)(ngx_http_aggregate_flat_t *fl,
    u_char *name);


static ngx_int_t ngx_http_aggregate_merge_object(
    ngx_http_aggregate_ctx_t *ctx, ngx_str_t *errors, ngx_str_t *out);
static ngx_int_t ngx_http_aggregate_merge_flat(ngx_http_aggregate_ctx_t *ctx,
    ngx_str_t *errors, ngx_str_t *out);
static ngx_int_t ngx_http_aggregate_flat_own(ngx_http_aggregate_flat_t *fl,
    ngx_str_t *errors);
static void ngx_http_aggregate_flat_walk(ngx_http_aggregate_flat_t *fl,
    ngx_http_aggregate_flat_pt visit);
static void ngx_http_aggregate_flat_name_of(ngx_http_aggregate_flat_t *fl,
    u_char *name);
static ngx_int_t ngx_http_aggregate_flat_dedup(ngx_http_aggregate_flat_t *fl,
    u_char **names, ngx_uint_t n);
static void ngx_http_aggregate_flat_log(ngx_http_aggregate_flat_t *fl,
    ngx_uint_t *count, u_char **replaced);
static ngx_uint_t ngx_http_aggregate_flat_part(ngx_http_aggregate_flat_t *fl,
    u_char *name, ngx_http_aggregate_own_t **own);
static void ngx_http_aggregate_flat_value(ngx_http_aggregate_flat_t *fl,
    u_char *name, ngx_str_t *value);
static void ngx_http_aggregate_flat_member(ngx_http_aggregate_flat_t *fl,
    u_char *name);
static size_t ngx_http_aggregate_flat_name(u_char *name);
static int ngx_libc_cdecl ngx_http_aggregate_cmp_names(const void *one,
    const void *two);
static int ngx_libc_cdecl ngx_http_aggregate_cmp_addresses(const void *one,
    const void *two);
static int ngx_libc_cdecl ngx_http_aggregate_cmp_repl(const void *one,
    const void *two);
static int ngx_libc_cdecl ngx_http_aggregate_cmp_parts(const void *one,
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
            || ngx_meshgate_json_member(&v, p, sep - p, 1, &v) != NGX_OK)
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

    part->text = part->fetch.answer;

    if (part->text.len >= 3
        && part->text.data[0] == 0xef && part->text.data[1] == 0xbb
        && part->text.data[2] == 0xbf)
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

    if (ngx_http_aggregate_failed(ctx, 1, &errors) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->conf->merge == NGX_HTTP_AGGREGATE_MERGE_FLAT) {
        return ngx_http_aggregate_merge_flat(ctx, &errors, out);
    }

    return ngx_http_aggregate_merge_object(ctx, &errors, out);
}


/*
 * The failed parts with their reasons, as $aggregate_failed shows them
 * ("part:reason part:reason") or as the JSON of "_errors"
 * ({"part":"reason",...}: part names and reasons need no escapes).  An
 * empty string when no part failed.
 */

ngx_int_t
ngx_http_aggregate_failed(ngx_http_aggregate_ctx_t *ctx, ngx_uint_t json,
    ngx_str_t *out)
{
    u_char                     *p;
    size_t                      len;
    ngx_uint_t                  i;
    ngx_http_aggregate_part_t  *part;

    len = 0;

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (part->state == NGX_HTTP_AGGREGATE_FAILED) {
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

    if (json) {
        *p++ = '{';
    }

    for (i = 0; i < ctx->nparts; i++) {
        part = &ctx->parts[i];

        if (part->state != NGX_HTTP_AGGREGATE_FAILED) {
            continue;
        }

        if (p != out->data + (json ? 1 : 0)) {
            *p++ = json ? ',' : ' ';
        }

        p = json ? ngx_sprintf(p, "\"%V\":\"%s\"", &part->conf->name,
                               part->reason)
                 : ngx_sprintf(p, "%V:%s", &part->conf->name, part->reason);
    }

    if (json) {
        *p++ = '}';
    }

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
 * member of a JSON object does.  Names are sorted to find those met twice:
 * 8 bytes a member (which takes at least 5 bytes of a part), 16 more for
 * each name met more than once.
 */

static ngx_int_t
ngx_http_aggregate_merge_flat(ngx_http_aggregate_ctx_t *ctx,
    ngx_str_t *errors, ngx_str_t *out)
{
    u_char                     **names;
    ngx_uint_t                   n;
    ngx_http_aggregate_flat_t    fl;

    ngx_memzero(&fl, sizeof(ngx_http_aggregate_flat_t));
    fl.ctx = ctx;

    if (ngx_http_aggregate_flat_own(&fl, errors) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_aggregate_flat_walk(&fl, ngx_http_aggregate_flat_name_of);
    n = fl.nnames;

    names = ngx_palloc(ctx->request->pool, (n + 1) * sizeof(u_char *));
    if (names == NULL) {
        return NGX_ERROR;
    }

    fl.names = names;
    fl.nnames = 0;
    ngx_http_aggregate_flat_walk(&fl, ngx_http_aggregate_flat_name_of);

    if (ngx_http_aggregate_flat_dedup(&fl, names, n) != NGX_OK) {
        return NGX_ERROR;
    }

    fl.len = sizeof("{}\n") - 1;
    ngx_http_aggregate_flat_walk(&fl, ngx_http_aggregate_flat_member);

    out->data = ngx_pnalloc(ctx->request->pool, fl.len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    fl.p = out->data;
    *fl.p++ = '{';
    ngx_http_aggregate_flat_walk(&fl, ngx_http_aggregate_flat_member);
    *fl.p++ = '}';
    *fl.p++ = '\n';

    out->len = fl.p - out->data;

    return NGX_OK;
}


/* the names and values of the members that are not in a part's object */

static ngx_int_t
ngx_http_aggregate_flat_own(ngx_http_aggregate_flat_t *fl, ngx_str_t *errors)
{
    u_char                     *p;
    ngx_uint_t                  i;
    ngx_http_aggregate_ctx_t   *ctx;
    ngx_http_aggregate_part_t  *part;

    ctx = fl->ctx;

    fl->own = ngx_palloc(ctx->request->pool,
                         (ctx->nparts + 1) * sizeof(ngx_http_aggregate_own_t));
    fl->objects = ngx_palloc(ctx->request->pool, (ctx->nparts + 1)
                             * sizeof(ngx_http_aggregate_part_t *));

    if (fl->own == NULL || fl->objects == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i <= ctx->nparts; i++) {
        part = (i < ctx->nparts) ? &ctx->parts[i] : NULL;

        if (part && part->state != NGX_HTTP_AGGREGATE_OK) {
            continue;
        }

        if (part && part->out.data[0] == '{') {
            fl->objects[fl->nobjects++] = part;
            continue;
        }

        if (part == NULL && errors->len == 0) {
            break;
        }

        p = ngx_pnalloc(ctx->request->pool, part ? part->conf->name.len + 2
                                                 : sizeof("\"_errors\""));
        if (p == NULL) {
            return NGX_ERROR;
        }

        fl->own[fl->nown].name = p;
        fl->own[fl->nown].part = i;

        if (part) {
            ngx_sprintf(p, "\"%V\"", &part->conf->name);
            fl->own[fl->nown].value = part->out;

        } else {
            ngx_memcpy(p, "\"_errors\"", sizeof("\"_errors\"") - 1);
            fl->own[fl->nown].value = *errors;
        }

        fl->nown++;
    }

    ngx_qsort(fl->objects, fl->nobjects, sizeof(ngx_http_aggregate_part_t *),
              ngx_http_aggregate_cmp_parts);

    return NGX_OK;
}


/*
 * Calls visit with each member's name in the answer's order: the members
 * of the parts' objects, and in their parts' places the members that are
 * not in one (an array or a scalar part, then "_errors").
 */

static void
ngx_http_aggregate_flat_walk(ngx_http_aggregate_flat_t *fl,
    ngx_http_aggregate_flat_pt visit)
{
    u_char                     *p, *last;
    ngx_str_t                   name, value;
    ngx_uint_t                  i, j;
    ngx_http_aggregate_ctx_t   *ctx;
    ngx_http_aggregate_part_t  *part;

    ctx = fl->ctx;
    j = 0;

    for (i = 0; i <= ctx->nparts; i++) {

        if (j < fl->nown && fl->own[j].part == i) {
            visit(fl, fl->own[j].name);
            j++;
            continue;
        }

        if (i == ctx->nparts) {
            break;
        }

        part = &ctx->parts[i];

        if (part->state != NGX_HTTP_AGGREGATE_OK) {
            continue;
        }

        p = part->out.data + 1;
        last = part->out.data + part->out.len;

        while (ngx_meshgate_json_next(&p, last, &name, &value) == NGX_OK) {
            visit(fl, name.data - 1);
        }
    }
}


/* counts the names (fl->names NULL) or keeps them */

static void
ngx_http_aggregate_flat_name_of(ngx_http_aggregate_flat_t *fl, u_char *name)
{
    if (fl->names) {
        fl->names[fl->nnames] = name;
    }

    fl->nnames++;
}


/*
 * Of the members of one name the first keeps its place and takes the
 * value of the last; the others are dropped.
 */

static ngx_int_t
ngx_http_aggregate_flat_dedup(ngx_http_aggregate_flat_t *fl, u_char **names,
    ngx_uint_t n)
{
    u_char                     *first, *last, **replaced;
    ngx_uint_t                  i, j, k, part, min, max, groups, *count;
    ngx_http_aggregate_ctx_t   *ctx;

    ctx = fl->ctx;

    ngx_qsort(names, n, sizeof(u_char *), ngx_http_aggregate_cmp_names);

    groups = 0;

    for (i = 1; i < n; i++) {
        if (ngx_http_aggregate_json_cmp_names(names[i - 1], names[i]) == 0
            && (i == 1
                || ngx_http_aggregate_json_cmp_names(names[i - 2], names[i])
                   != 0))
        {
            groups++;
        }
    }

    if (groups == 0) {
        return NGX_OK;
    }

    fl->repl = ngx_palloc(ctx->request->pool,
                          groups * sizeof(ngx_http_aggregate_repl_t));

    /* per part: how many of its members replace earlier ones, and one */

    count = ngx_pcalloc(ctx->request->pool,
                        (ctx->nparts + 1) * sizeof(ngx_uint_t));
    replaced = ngx_pcalloc(ctx->request->pool,
                           (ctx->nparts + 1) * sizeof(u_char *));

    if (fl->repl == NULL || count == NULL || replaced == NULL) {
        return NGX_ERROR;
    }

    /* the dropped names are written over the sorted ones, never ahead */

    fl->dropped = names;

    for (i = 0; i < n; i = j) {

        for (j = i + 1;
             j < n
             && ngx_http_aggregate_json_cmp_names(names[i], names[j]) == 0;
             j++)
        {
            /* void */
        }

        if (j - i == 1) {
            continue;
        }

        /* the first and the last in the answer's order: by part */

        first = NULL;
        last = NULL;
        min = ctx->nparts + 1;
        max = 0;

        for (k = i; k < j; k++) {
            part = ngx_http_aggregate_flat_part(fl, names[k], NULL);

            if (part < min) {
                min = part;
                first = names[k];
            }

            if (part >= max) {
                max = part;
                last = names[k];
            }
        }

        fl->repl[fl->nrepl].first = first;
        fl->repl[fl->nrepl].last = last;
        fl->nrepl++;

        for (k = i; k < j; k++) {
            part = ngx_http_aggregate_flat_part(fl, names[k], NULL);

            if (names[k] == first) {
                continue;
            }

            if (count[part]++ == 0) {
                replaced[part] = names[k];
            }

            fl->dropped[fl->ndropped++] = names[k];
        }
    }

    ngx_http_aggregate_flat_log(fl, count, replaced);

    ngx_qsort(fl->dropped, fl->ndropped, sizeof(u_char *),
              ngx_http_aggregate_cmp_addresses);
    ngx_qsort(fl->repl, fl->nrepl, sizeof(ngx_http_aggregate_repl_t),
              ngx_http_aggregate_cmp_repl);

    return NGX_OK;
}


/*
 * One info line per part whose members replace earlier ones (members of
 * an object part only, as a JSON object's set would replace them).
 */

static void
ngx_http_aggregate_flat_log(ngx_http_aggregate_flat_t *fl,
    ngx_uint_t *count, u_char **replaced)
{
    ngx_str_t                   name;
    ngx_uint_t                  i;
    ngx_http_aggregate_own_t   *own;
    ngx_http_aggregate_part_t  *part;

    for (i = 0; i < fl->ctx->nparts; i++) {
        part = &fl->ctx->parts[i];

        if (count[i] == 0) {
            continue;
        }

        (void) ngx_http_aggregate_flat_part(fl, replaced[i], &own);

        if (own) {
            continue;
        }

        name.data = replaced[i] + 1;
        name.len = ngx_http_aggregate_flat_name(replaced[i]) - 2;

        if (!ngx_meshgate_text_is_safe(name.data, name.len)) {
            ngx_str_set(&name, "(a name with control bytes)");
        }

        ngx_log_error(NGX_LOG_INFO, fl->ctx->request->connection->log, 0,
                      "aggregate: member \"%V\" of part \"%V\" replaces an "
                      "earlier one (%ui members of the part do)", &name,
                      &part->conf->name, count[i]);
    }
}


/* the index of the part a member's name is in; nparts for "_errors" */

static ngx_uint_t
ngx_http_aggregate_flat_part(ngx_http_aggregate_flat_t *fl, u_char *name,
    ngx_http_aggregate_own_t **own)
{
    ngx_uint_t                  i, lo, hi;
    ngx_http_aggregate_part_t  *part;

    if (own) {
        *own = NULL;
    }

    /* a binary search: this runs for each member of a repeated name */

    lo = 0;
    hi = fl->nobjects;

    while (lo < hi) {
        i = lo + (hi - lo) / 2;
        part = fl->objects[i];

        if (name < part->out.data) {
            hi = i;

        } else if (name >= part->out.data + part->out.len) {
            lo = i + 1;

        } else {
            return part - fl->ctx->parts;
        }
    }

    for (i = 0; i < fl->nown; i++) {
        if (fl->own[i].name == name) {
            if (own) {
                *own = &fl->own[i];
            }

            return fl->own[i].part;
        }
    }

    return fl->ctx->nparts;
}


static void
ngx_http_aggregate_flat_value(ngx_http_aggregate_flat_t *fl, u_char *name,
    ngx_str_t *value)
{
    u_char                     *p, *last;
    ngx_str_t                   key;
    ngx_uint_t                  i;
    ngx_http_aggregate_own_t   *own;
    ngx_http_aggregate_part_t  *part;

    i = ngx_http_aggregate_flat_part(fl, name, &own);

    if (own) {
        *value = own->value;
        return;
    }

    part = &fl->ctx->parts[i];
    last = part->out.data + part->out.len;

    p = name;

    if (ngx_meshgate_json_next(&p, last, &key, value) != NGX_OK) {
        /* never: the part's canonical text holds the member */
        ngx_str_set(value, "null");
    }
}


/* adds up the member's length (fl->p NULL) or writes it */

static void
ngx_http_aggregate_flat_member(ngx_http_aggregate_flat_t *fl, u_char *name)
{
    size_t                      len;
    ngx_str_t                   value;
    ngx_http_aggregate_repl_t  *r, key;

    if (fl->ndropped
        && bsearch(&name, fl->dropped, fl->ndropped, sizeof(u_char *),
                   ngx_http_aggregate_cmp_addresses))
    {
        return;
    }

    key.first = name;

    r = fl->nrepl ? bsearch(&key, fl->repl, fl->nrepl,
                            sizeof(ngx_http_aggregate_repl_t),
                            ngx_http_aggregate_cmp_repl)
                  : NULL;

    ngx_http_aggregate_flat_value(fl, r ? r->last : name, &value);

    len = ngx_http_aggregate_flat_name(name);

    if (fl->p == NULL) {
        fl->len += 2 + len + value.len;
        return;
    }

    if (fl->p[-1] != '{') {
        *fl->p++ = ',';
    }

    fl->p = ngx_cpymem(fl->p, name, len);
    *fl->p++ = ':';
    fl->p = ngx_cpymem(fl->p, value.data, value.len);
}


/* the length of a canonical name with its quotes */

static size_t
ngx_http_aggregate_flat_name(u_char *name)
{
    u_char  *p;

    /* up to the first quote that no '\\' escapes */

    p = name + 1;

    while (*p != '"') {
        p += (*p == '\\') ? 2 : 1;
    }

    return p + 1 - name;
}


static int ngx_libc_cdecl
ngx_http_aggregate_cmp_names(const void *one, const void *two)
{
    return ngx_http_aggregate_json_cmp_names(*(u_char **) one,
                                             *(u_char **) two);
}


static int ngx_libc_cdecl
ngx_http_aggregate_cmp_addresses(const void *one, const void *two)
{
    u_char  *a, *b;

    a = *(u_char **) one;
    b = *(u_char **) two;

    return (a < b) ? -1 : (a > b) ? 1 : 0;
}


static int ngx_libc_cdecl
ngx_http_aggregate_cmp_repl(const void *one, const void *two)
{
    const ngx_http_aggregate_repl_t  *a = one;
    const ngx_http_aggregate_repl_t  *b = two;

    return (a->first < b->first) ? -1 : (a->first > b->first) ? 1 : 0;
}


static int ngx_libc_cdecl
ngx_http_aggregate_cmp_parts(const void *one, const void *two)
{
    u_char  *a, *b;

    a = (*(ngx_http_aggregate_part_t **) one)->out.data;
    b = (*(ngx_http_aggregate_part_t **) two)->out.data;

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
