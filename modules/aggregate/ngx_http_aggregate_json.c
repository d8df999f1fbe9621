
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
 * A part's JSON is never built as a tree: a tree costs 20 to 70 times the
 * text ("[]" is 3 bytes, a jansson array about 130), so three parts of
 * "[[],[],...]" within 1 MiB took a worker to 150 MB.  Instead the text is
 * validated and rewritten in place in a canonical compact form: no white
 * space between tokens, strings with escapes only for '"', '\' and control
 * characters, numbers as they were written.  Duplicate member names
 * (compared in that form) are refused, as a jansson parse with
 * JSON_REJECT_DUPLICATES refused them.  Everything later (fields=, the
 * merge, $aggregate_ variables) reads that text with the common reader
 * of compact JSON (ngx_meshgate_json_text.h, which auth_introspect uses
 * on jansson's compact dump, the same form), and needs at most its size
 * again.
 */


typedef struct {
    u_char                      *start;
    u_char                      *p;          /* read */
    u_char                      *last;
    u_char                      *w;          /* write, never past p */
    u_char                     **keys;       /* NULL opens an object */
    ngx_uint_t                   nkeys;
    ngx_uint_t                   nalloc;
    ngx_uint_t                   depth;
    ngx_log_t                   *log;
    const char                  *error;
    u_char                       stack[NGX_MESHGATE_JSON_DEPTH];
} ngx_http_aggregate_json_ctx_t;


typedef struct ngx_http_aggregate_node_s  ngx_http_aggregate_node_t;

struct ngx_http_aggregate_node_s {
    ngx_str_t                    key;
    ngx_str_t                    value;      /* data NULL: an object */
    ngx_http_aggregate_node_t   *child;
    ngx_http_aggregate_node_t   *next;
};


typedef struct {
    ngx_http_aggregate_node_t   *nodes;
    ngx_uint_t                   nnodes;
    ngx_uint_t                   used;
    u_char                      *w;
    u_char                      *end;
} ngx_http_aggregate_filter_t;


static ngx_int_t ngx_http_aggregate_json_parse(
    ngx_http_aggregate_json_ctx_t *ctx);
static ngx_int_t ngx_http_aggregate_json_open(
    ngx_http_aggregate_json_ctx_t *ctx, ngx_uint_t *state);
static ngx_int_t ngx_http_aggregate_json_close(
    ngx_http_aggregate_json_ctx_t *ctx, ngx_uint_t *state);
static ngx_int_t ngx_http_aggregate_json_scalar(
    ngx_http_aggregate_json_ctx_t *ctx);
static ngx_int_t ngx_http_aggregate_json_number(
    ngx_http_aggregate_json_ctx_t *ctx);
static ngx_int_t ngx_http_aggregate_json_string(
    ngx_http_aggregate_json_ctx_t *ctx);
static ngx_int_t ngx_http_aggregate_json_escape(
    ngx_http_aggregate_json_ctx_t *ctx, u_char **pp, u_char **pw);
static ngx_int_t ngx_http_aggregate_json_hex(u_char *p, u_char *last,
    uint32_t *u);
static u_char *ngx_http_aggregate_json_put(u_char *w, uint32_t u);
static ngx_int_t ngx_http_aggregate_json_push_key(
    ngx_http_aggregate_json_ctx_t *ctx, u_char *key);
static ngx_int_t ngx_http_aggregate_json_unique(
    ngx_http_aggregate_json_ctx_t *ctx);
static int ngx_libc_cdecl ngx_http_aggregate_json_cmp_keys(const void *one,
    const void *two);
static ngx_int_t ngx_http_aggregate_json_fail(
    ngx_http_aggregate_json_ctx_t *ctx, const char *error);
static ngx_int_t ngx_http_aggregate_filter_value(
    ngx_http_aggregate_filter_t *f, ngx_str_t *value, ngx_array_t *fields);
static ngx_int_t ngx_http_aggregate_filter_object(
    ngx_http_aggregate_filter_t *f, ngx_str_t *obj, ngx_array_t *fields);
static void ngx_http_aggregate_filter_insert(ngx_http_aggregate_filter_t *f,
    ngx_str_t *field, ngx_str_t *value);
static ngx_int_t ngx_http_aggregate_filter_write(
    ngx_http_aggregate_filter_t *f, ngx_http_aggregate_node_t *node);
static ngx_int_t ngx_http_aggregate_filter_copy(
    ngx_http_aggregate_filter_t *f, u_char *p, size_t len);


enum {
    ngx_http_aggregate_json_st_value = 0,
    ngx_http_aggregate_json_st_member,
    ngx_http_aggregate_json_st_next
};


/*
 * Validates the JSON text in place and rewrites it in the canonical
 * compact form (never longer).  NGX_DECLINED with *error and *offset when
 * it is no JSON, NGX_ERROR without memory.
 */

ngx_int_t
ngx_http_aggregate_json_compact(ngx_str_t *text, ngx_log_t *log,
    const char **error, size_t *offset)
{
    ngx_int_t                       rc;
    ngx_http_aggregate_json_ctx_t  *ctx;

    ctx = ngx_alloc(sizeof(ngx_http_aggregate_json_ctx_t), log);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->start = text->data;
    ctx->p = text->data;
    ctx->last = text->data + text->len;
    ctx->w = text->data;
    ctx->keys = NULL;
    ctx->nkeys = 0;
    ctx->nalloc = 0;
    ctx->depth = 0;
    ctx->log = log;
    ctx->error = NULL;

    rc = ngx_http_aggregate_json_parse(ctx);

    if (rc == NGX_OK) {
        text->len = ctx->w - text->data;

    } else {
        *error = ctx->error;
        *offset = ctx->p - ctx->start;
    }

    if (ctx->keys) {
        ngx_free(ctx->keys);
    }

    ngx_free(ctx);

    return rc;
}


static ngx_int_t
ngx_http_aggregate_json_parse(ngx_http_aggregate_json_ctx_t *ctx)
{
    u_char      c;
    ngx_int_t   rc;
    ngx_uint_t  state;

    state = ngx_http_aggregate_json_st_value;

    for ( ;; ) {

        while (ctx->p < ctx->last
               && (*ctx->p == ' ' || *ctx->p == '\t' || *ctx->p == '\n'
                   || *ctx->p == '\r'))
        {
            ctx->p++;
        }

        switch (state) {

        case ngx_http_aggregate_json_st_value:

            if (ctx->p == ctx->last) {
                return ngx_http_aggregate_json_fail(ctx,
                                                    "unexpected end of text");
            }

            if (*ctx->p == '{' || *ctx->p == '[') {
                rc = ngx_http_aggregate_json_open(ctx, &state);

            } else {
                rc = ngx_http_aggregate_json_scalar(ctx);
                state = ngx_http_aggregate_json_st_next;
            }

            break;

        case ngx_http_aggregate_json_st_member:

            if (ctx->p == ctx->last || *ctx->p != '"') {
                return ngx_http_aggregate_json_fail(ctx,
                                                    "member name expected");
            }

            rc = ngx_http_aggregate_json_push_key(ctx, ctx->w);

            if (rc == NGX_OK) {
                rc = ngx_http_aggregate_json_string(ctx);
            }

            if (rc != NGX_OK) {
                return rc;
            }

            while (ctx->p < ctx->last
                   && (*ctx->p == ' ' || *ctx->p == '\t' || *ctx->p == '\n'
                       || *ctx->p == '\r'))
            {
                ctx->p++;
            }

            if (ctx->p == ctx->last || *ctx->p != ':') {
                return ngx_http_aggregate_json_fail(ctx, "':' expected");
            }

            ctx->p++;
            *ctx->w++ = ':';
            state = ngx_http_aggregate_json_st_value;
            continue;

        default: /* ngx_http_aggregate_json_st_next */

            if (ctx->depth == 0) {
                if (ctx->p != ctx->last) {
                    return ngx_http_aggregate_json_fail(ctx,
                                                 "end of text expected");
                }

                return NGX_OK;
            }

            if (ctx->p == ctx->last) {
                return ngx_http_aggregate_json_fail(ctx,
                                                    "unexpected end of text");
            }

            c = *ctx->p;

            if (c == ',') {
                ctx->p++;
                *ctx->w++ = ',';
                state = (ctx->stack[ctx->depth - 1] == '{')
                        ? ngx_http_aggregate_json_st_member
                        : ngx_http_aggregate_json_st_value;
                continue;
            }

            rc = ngx_http_aggregate_json_close(ctx, &state);
            break;
        }

        if (rc != NGX_OK) {
            return rc;
        }
    }
}


static ngx_int_t
ngx_http_aggregate_json_open(ngx_http_aggregate_json_ctx_t *ctx,
    ngx_uint_t *state)
{
    u_char  c;

    if (ctx->depth == NGX_MESHGATE_JSON_DEPTH) {
        return ngx_http_aggregate_json_fail(ctx, "nested too deeply");
    }

    c = *ctx->p++;
    *ctx->w++ = c;
    ctx->stack[ctx->depth++] = c;

    while (ctx->p < ctx->last
           && (*ctx->p == ' ' || *ctx->p == '\t' || *ctx->p == '\n'
               || *ctx->p == '\r'))
    {
        ctx->p++;
    }

    if (ctx->p < ctx->last && *ctx->p == (c == '{' ? '}' : ']')) {
        ctx->p++;
        *ctx->w++ = (c == '{') ? '}' : ']';
        ctx->depth--;
        *state = ngx_http_aggregate_json_st_next;
        return NGX_OK;
    }

    if (c == '[') {
        *state = ngx_http_aggregate_json_st_value;
        return NGX_OK;
    }

    /* where this object's member names start on the stack of names */

    *state = ngx_http_aggregate_json_st_member;

    return ngx_http_aggregate_json_push_key(ctx, NULL);
}


static ngx_int_t
ngx_http_aggregate_json_close(ngx_http_aggregate_json_ctx_t *ctx,
    ngx_uint_t *state)
{
    u_char  c, open;

    c = *ctx->p;
    open = ctx->stack[ctx->depth - 1];

    if (!((open == '{' && c == '}') || (open == '[' && c == ']'))) {
        return ngx_http_aggregate_json_fail(ctx, (open == '{')
                                                 ? "',' or '}' expected"
                                                 : "',' or ']' expected");
    }

    if (open == '{' && ngx_http_aggregate_json_unique(ctx) != NGX_OK) {
        return NGX_DECLINED;
    }

    ctx->p++;
    *ctx->w++ = c;
    ctx->depth--;
    *state = ngx_http_aggregate_json_st_next;

    return NGX_OK;
}


static ngx_int_t
ngx_http_aggregate_json_scalar(ngx_http_aggregate_json_ctx_t *ctx)
{
    size_t       n;
    const char  *word;

    switch (*ctx->p) {

    case '"':
        return ngx_http_aggregate_json_string(ctx);

    case 't':
        word = "true";
        break;

    case 'f':
        word = "false";
        break;

    case 'n':
        word = "null";
        break;

    default:
        return ngx_http_aggregate_json_number(ctx);
    }

    n = ngx_strlen(word);

    if ((size_t) (ctx->last - ctx->p) < n
        || ngx_strncmp(ctx->p, word, n) != 0)
    {
        return ngx_http_aggregate_json_fail(ctx, "invalid token");
    }

    ngx_memmove(ctx->w, ctx->p, n);
    ctx->p += n;
    ctx->w += n;

    return NGX_OK;
}


/* RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, kept as is */

static ngx_int_t
ngx_http_aggregate_json_number(ngx_http_aggregate_json_ctx_t *ctx)
{
    u_char  *p, *last;

    p = ctx->p;
    last = ctx->last;

    if (p < last && *p == '-') {
        p++;
    }

    if (p < last && *p == '0') {
        p++;

    } else if (p < last && *p >= '1' && *p <= '9') {
        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }

    } else {
        return ngx_http_aggregate_json_fail(ctx, "invalid token");
    }

    if (p < last && *p == '.') {
        if (++p == last || *p < '0' || *p > '9') {
            ctx->p = p;
            return ngx_http_aggregate_json_fail(ctx, "invalid number");
        }

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < last && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < last && (*p == '+' || *p == '-')) {
            p++;
        }

        if (p == last || *p < '0' || *p > '9') {
            ctx->p = p;
            return ngx_http_aggregate_json_fail(ctx, "invalid number");
        }

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    ngx_memmove(ctx->w, ctx->p, p - ctx->p);
    ctx->w += p - ctx->p;
    ctx->p = p;

    return NGX_OK;
}


/*
 * A string, rewritten: escapes decoded except those of '"', '\' and the
 * control characters (written as jansson writes them), UTF-8 checked.
 * Each step writes at most the bytes it read, so the text shrinks.
 */

static ngx_int_t
ngx_http_aggregate_json_string(ngx_http_aggregate_json_ctx_t *ctx)
{
    u_char  *p, *w, *last;
    size_t   n;

    p = ctx->p + 1;
    w = ctx->w;
    last = ctx->last;

    *w++ = '"';

    while (p < last) {

        if (*p == '"') {
            *w++ = '"';
            ctx->p = p + 1;
            ctx->w = w;
            return NGX_OK;
        }

        if (*p < 0x20) {
            ctx->p = p;
            return ngx_http_aggregate_json_fail(ctx,
                                           "control character in a string");
        }

        if (*p == '\\') {
            if (ngx_http_aggregate_json_escape(ctx, &p, &w) != NGX_OK) {
                return NGX_DECLINED;
            }

            continue;
        }

        if (*p < 0x80) {
            *w++ = *p++;
            continue;
        }

        n = (*p >= 0xc2 && *p <= 0xdf) ? 2
            : (*p >= 0xe0 && *p <= 0xef) ? 3
            : (*p >= 0xf0 && *p <= 0xf4) ? 4 : 0;

        if (n == 0 || (size_t) (last - p) < n
            || !ngx_meshgate_utf8_is_valid(p, n))
        {
            ctx->p = p;
            return ngx_http_aggregate_json_fail(ctx, "invalid UTF-8");
        }

        while (n--) {
            *w++ = *p++;
        }
    }

    ctx->p = p;

    return ngx_http_aggregate_json_fail(ctx, "unterminated string");
}


static ngx_int_t
ngx_http_aggregate_json_escape(ngx_http_aggregate_json_ctx_t *ctx,
    u_char **pp, u_char **pw)
{
    u_char    c, *p, *w;
    uint32_t  u, lo;

    p = *pp;
    w = *pw;

    if (ctx->last - p < 2) {
        ctx->p = p;
        return ngx_http_aggregate_json_fail(ctx, "unterminated string");
    }

    c = p[1];

    switch (c) {

    case '"': case '\\': case 'b': case 'f': case 'n': case 'r': case 't':
        *w++ = '\\';
        *w++ = c;
        p += 2;
        break;

    case '/':
        *w++ = '/';
        p += 2;
        break;

    case 'u':
        if (ngx_http_aggregate_json_hex(p + 2, ctx->last, &u) != NGX_OK) {
            goto invalid;
        }

        p += 6;

        if (u >= 0xd800 && u <= 0xdbff) {
            if (ctx->last - p < 6 || p[0] != '\\' || p[1] != 'u'
                || ngx_http_aggregate_json_hex(p + 2, ctx->last, &lo)
                   != NGX_OK
                || lo < 0xdc00 || lo > 0xdfff)
            {
                goto invalid;
            }

            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
            p += 6;

        } else if ((u >= 0xdc00 && u <= 0xdfff) || u == 0) {
            /* a lone low surrogate; jansson refuses \u0000 too */
            goto invalid;
        }

        w = ngx_http_aggregate_json_put(w, u);
        break;

    default:
        goto invalid;
    }

    *pp = p;
    *pw = w;

    return NGX_OK;

invalid:

    ctx->p = p;

    return ngx_http_aggregate_json_fail(ctx, "invalid escape");
}


static ngx_int_t
ngx_http_aggregate_json_hex(u_char *p, u_char *last, uint32_t *u)
{
    ngx_int_t  n;

    if (last - p < 4) {
        return NGX_ERROR;
    }

    n = ngx_hextoi(p, 4);

    if (n == NGX_ERROR) {
        return NGX_ERROR;
    }

    *u = (uint32_t) n;

    return NGX_OK;
}


/* a decoded \u escape, written as jansson writes it */

static u_char *
ngx_http_aggregate_json_put(u_char *w, uint32_t u)
{
    static u_char  hex[] = "0123456789ABCDEF";

    if (u < 0x20 || u == '"' || u == '\\') {
        *w++ = '\\';

        switch (u) {
        case '"':  *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '\b': *w++ = 'b'; break;
        case '\f': *w++ = 'f'; break;
        case '\n': *w++ = 'n'; break;
        case '\r': *w++ = 'r'; break;
        case '\t': *w++ = 't'; break;
        default:
            w = ngx_cpymem(w, "u00", 3);
            *w++ = hex[u >> 4];
            *w++ = hex[u & 0xf];
        }

        return w;
    }

    if (u < 0x80) {
        *w++ = (u_char) u;

    } else if (u < 0x800) {
        *w++ = (u_char) (0xc0 | (u >> 6));
        *w++ = (u_char) (0x80 | (u & 0x3f));

    } else if (u < 0x10000) {
        *w++ = (u_char) (0xe0 | (u >> 12));
        *w++ = (u_char) (0x80 | ((u >> 6) & 0x3f));
        *w++ = (u_char) (0x80 | (u & 0x3f));

    } else {
        *w++ = (u_char) (0xf0 | (u >> 18));
        *w++ = (u_char) (0x80 | ((u >> 12) & 0x3f));
        *w++ = (u_char) (0x80 | ((u >> 6) & 0x3f));
        *w++ = (u_char) (0x80 | (u & 0x3f));
    }

    return w;
}


/* the names of the open objects, for the duplicate check */

static ngx_int_t
ngx_http_aggregate_json_push_key(ngx_http_aggregate_json_ctx_t *ctx,
    u_char *key)
{
    u_char      **keys;
    ngx_uint_t    n;

    if (ctx->nkeys == ctx->nalloc) {
        n = ctx->nalloc ? 2 * ctx->nalloc : 64;

        keys = ngx_alloc(n * sizeof(u_char *), ctx->log);
        if (keys == NULL) {
            return NGX_ERROR;
        }

        if (ctx->keys) {
            ngx_memcpy(keys, ctx->keys, ctx->nkeys * sizeof(u_char *));
            ngx_free(ctx->keys);
        }

        ctx->keys = keys;
        ctx->nalloc = n;
    }

    ctx->keys[ctx->nkeys++] = key;

    return NGX_OK;
}


/* at the end of an object: its names sorted, neighbours compared */

static ngx_int_t
ngx_http_aggregate_json_unique(ngx_http_aggregate_json_ctx_t *ctx)
{
    ngx_uint_t   i, first;
    u_char     **keys;

    keys = ctx->keys;

    for (first = ctx->nkeys; keys[first - 1] != NULL; first--) {
        /* void */
    }

    if (ctx->nkeys - first > 1) {
        ngx_qsort(&keys[first], ctx->nkeys - first, sizeof(u_char *),
                  ngx_http_aggregate_json_cmp_keys);

        for (i = first + 1; i < ctx->nkeys; i++) {
            if (ngx_http_aggregate_json_cmp_keys(&keys[i - 1], &keys[i])
                == 0)
            {
                return ngx_http_aggregate_json_fail(ctx,
                                                    "duplicate member name");
            }
        }
    }

    ctx->nkeys = first - 1;

    return NGX_OK;
}


static int ngx_libc_cdecl
ngx_http_aggregate_json_cmp_keys(const void *one, const void *two)
{
    return ngx_http_aggregate_json_cmp_names(*(u_char **) one,
                                             *(u_char **) two);
}


/*
 * Orders two canonical strings (at their opening quotes) by their bytes up
 * to the closing quote; in that form two strings are equal exactly when
 * their bytes are.
 */

int
ngx_http_aggregate_json_cmp_names(u_char *a, u_char *b)
{
    a++;
    b++;

    for ( ;; ) {
        if (*a != *b) {
            return (int) *a - (int) *b;
        }

        if (*a == '"') {
            return 0;
        }

        if (*a == '\\') {
            a++;
            b++;

            if (*a != *b) {
                return (int) *a - (int) *b;
            }
        }

        a++;
        b++;
    }
}


static ngx_int_t
ngx_http_aggregate_json_fail(ngx_http_aggregate_json_ctx_t *ctx,
    const char *error)
{
    ctx->error = error;

    return NGX_DECLINED;
}


/*
 * fields=: a part's object keeps only the listed members (dotted paths,
 * matched exactly), an array its objects' listed members.  The result is
 * made of the part's own member names and values: never longer than the
 * part's text.
 */

ngx_int_t
ngx_http_aggregate_json_filter(ngx_pool_t *pool, ngx_str_t *in,
    ngx_array_t *fields, ngx_str_t *out)
{
    u_char                       *p, *last;
    ngx_str_t                    *f, v;
    ngx_uint_t                    i, n;
    ngx_http_aggregate_filter_t   flt;

    f = fields->elts;
    n = 1;

    for (i = 0; i < fields->nelts; i++) {
        n += 1 + f[i].len / 2;     /* at most one node per segment */
    }

    flt.nodes = ngx_palloc(pool, n * sizeof(ngx_http_aggregate_node_t));
    out->data = ngx_pnalloc(pool, in->len);

    if (flt.nodes == NULL || out->data == NULL) {
        return NGX_ERROR;
    }

    flt.nnodes = n;
    flt.w = out->data;
    flt.end = out->data + in->len;

    if (in->data[0] != '[') {
        if (ngx_http_aggregate_filter_value(&flt, in, fields) != NGX_OK) {
            return NGX_ERROR;
        }

        out->len = flt.w - out->data;
        return NGX_OK;
    }

    p = in->data;
    last = in->data + in->len;

    while (p < last && *p != ']') {

        /* the '[' and the commas */

        if (ngx_http_aggregate_filter_copy(&flt, p++, 1) != NGX_OK) {
            return NGX_ERROR;
        }

        v.data = p;
        p = ngx_meshgate_json_skip_value(p, last);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v.len = p - v.data;

        if (ngx_http_aggregate_filter_value(&flt, &v, fields) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_aggregate_filter_copy(&flt, (u_char *) "]", 1) != NGX_OK) {
        return NGX_ERROR;
    }

    out->len = flt.w - out->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_aggregate_filter_value(ngx_http_aggregate_filter_t *f,
    ngx_str_t *value, ngx_array_t *fields)
{
    if (value->len == 0 || value->data[0] != '{') {
        return ngx_http_aggregate_filter_copy(f, value->data, value->len);
    }

    return ngx_http_aggregate_filter_object(f, value, fields);
}


static ngx_int_t
ngx_http_aggregate_filter_object(ngx_http_aggregate_filter_t *f,
    ngx_str_t *obj, ngx_array_t *fields)
{
    u_char      *p, *last, *dot;
    ngx_str_t   *field, v;
    ngx_uint_t   i;

    field = fields->elts;

    f->nodes[0].child = NULL;
    f->used = 1;

    for (i = 0; i < fields->nelts; i++) {
        v = *obj;
        p = field[i].data;
        last = p + field[i].len;

        while (p < last) {
            dot = ngx_strlchr(p, last, '.');
            if (dot == NULL) {
                dot = last;
            }

            if (ngx_meshgate_json_member(&v, p, dot - p, 0, &v)
                != NGX_OK)
            {
                break;
            }

            p = dot + 1;
        }

        if (p >= last) {
            ngx_http_aggregate_filter_insert(f, &field[i], &v);
        }
    }

    return ngx_http_aggregate_filter_write(f, &f->nodes[0]);
}


/*
 * Puts a found value at its path in the result.  A path under a member
 * already taken whole is in it already; a member taken whole replaces
 * what was taken under it, in its place.
 */

static void
ngx_http_aggregate_filter_insert(ngx_http_aggregate_filter_t *f,
    ngx_str_t *field, ngx_str_t *value)
{
    u_char                     *p, *last, *dot;
    ngx_http_aggregate_node_t  *parent, *node, **link;

    parent = &f->nodes[0];
    p = field->data;
    last = p + field->len;

    for ( ;; ) {
        dot = ngx_strlchr(p, last, '.');
        if (dot == NULL) {
            dot = last;
        }

        for (link = &parent->child; *link; link = &(*link)->next) {
            node = *link;

            if (node->key.len == (size_t) (dot - p)
                && ngx_strncmp(node->key.data, p, dot - p) == 0)
            {
                break;
            }
        }

        node = *link;

        if (node == NULL) {
            if (f->used == f->nnodes) {
                return;
            }

            node = &f->nodes[f->used++];
            node->key.data = p;
            node->key.len = dot - p;
            ngx_str_null(&node->value);
            node->child = NULL;
            node->next = NULL;
            *link = node;

        } else if (node->value.data) {
            return;
        }

        if (dot == last) {
            node->value = *value;
            node->child = NULL;
            return;
        }

        parent = node;
        p = dot + 1;
    }
}


static ngx_int_t
ngx_http_aggregate_filter_write(ngx_http_aggregate_filter_t *f,
    ngx_http_aggregate_node_t *node)
{
    ngx_http_aggregate_node_t  *c;

    if (ngx_http_aggregate_filter_copy(f, (u_char *) "{", 1) != NGX_OK) {
        return NGX_ERROR;
    }

    for (c = node->child; c; c = c->next) {

        if ((c != node->child
             && ngx_http_aggregate_filter_copy(f, (u_char *) ",", 1)
                != NGX_OK)
            || ngx_http_aggregate_filter_copy(f, (u_char *) "\"", 1)
               != NGX_OK
            || ngx_http_aggregate_filter_copy(f, c->key.data, c->key.len)
               != NGX_OK
            || ngx_http_aggregate_filter_copy(f, (u_char *) "\":", 2)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (c->value.data) {
            if (ngx_http_aggregate_filter_copy(f, c->value.data,
                                               c->value.len)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (ngx_http_aggregate_filter_write(f, c) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_http_aggregate_filter_copy(f, (u_char *) "}", 1);
}


static ngx_int_t
ngx_http_aggregate_filter_copy(ngx_http_aggregate_filter_t *f, u_char *p,
    size_t len)
{
    /* the result is never longer than the part: checked all the same */

    if ((size_t) (f->end - f->w) < len) {
        return NGX_ERROR;
    }

    f->w = ngx_cpymem(f->w, p, len);

    return NGX_OK;
}
