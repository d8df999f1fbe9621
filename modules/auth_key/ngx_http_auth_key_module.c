
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_auth_key.h"
#include "ngx_meshgate_http.h"
#include "ngx_meshgate_sha256.h"


static ngx_int_t ngx_http_auth_key_handler(ngx_http_request_t *r);
static ngx_http_auth_key_ctx_t *ngx_http_auth_key_get_ctx(
    ngx_http_request_t *r);
static void ngx_http_auth_key_ctx_cleanup(void *data);
static ngx_int_t ngx_http_auth_key_find(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf, ngx_str_t *key);
static ngx_int_t ngx_http_auth_key_from_headers(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf, ngx_str_t *key);
static ngx_int_t ngx_http_auth_key_from_query(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf, ngx_str_t *key);
static ngx_int_t ngx_http_auth_key_add(ngx_str_t *key, ngx_str_t *value);
static u_char *ngx_http_auth_key_arg(u_char *p, u_char *end, u_char **eq);
static ngx_uint_t ngx_http_auth_key_arg_is(u_char *p, u_char *end,
    ngx_str_t *name);
static ngx_int_t ngx_http_auth_key_hide_headers(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf);
static void ngx_http_auth_key_fix_header_refs(ngx_http_request_t *r,
    ngx_table_elt_t *from, ngx_table_elt_t *to);
static ngx_int_t ngx_http_auth_key_hide_query(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf);
static ngx_int_t ngx_http_auth_key_answer(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf, ngx_http_auth_key_ctx_t *ctx);
static ngx_int_t ngx_http_auth_key_reject(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf, ngx_http_auth_key_ctx_t *ctx);

static ngx_int_t ngx_http_auth_key_consumer_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_auth_key_result_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_auth_key_meta_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static char *ngx_http_auth_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_key_source(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_key_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_auth_key_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void ngx_http_auth_key_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_auth_key_add_variables(ngx_conf_t *cf);
static void *ngx_http_auth_key_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_auth_key_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_auth_key_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_auth_key_init(ngx_conf_t *cf);


static ngx_str_t  ngx_http_auth_key_results[] = {
    ngx_string(""),
    ngx_string("ok"),
    ngx_string("missing"),
    ngx_string("invalid"),
    ngx_string("conflict"),
    ngx_string("unavailable")
};


static ngx_command_t  ngx_http_auth_key_commands[] = {

    { ngx_string("auth_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_TAKE1,
      ngx_http_auth_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_key_source"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF
                        |NGX_CONF_1MORE,
      ngx_http_auth_key_source,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_TAKE1,
      ngx_http_auth_key_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_key_redis"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_HTTP_LMT_CONF
                        |NGX_CONF_1MORE,
      ngx_http_auth_key_redis,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("auth_key_hide"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF
                        |NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_auth_key_loc_conf_t, hide),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_auth_key_module_ctx = {
    ngx_http_auth_key_add_variables,       /* preconfiguration */
    ngx_http_auth_key_init,                /* postconfiguration */

    ngx_http_auth_key_create_main_conf,    /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_auth_key_create_loc_conf,     /* create location configuration */
    ngx_http_auth_key_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_auth_key_module = {
    NGX_MODULE_V1,
    &ngx_http_auth_key_module_ctx,         /* module context */
    ngx_http_auth_key_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_auth_key_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_auth_key_vars[] = {

    { ngx_string("auth_key_consumer"), NULL,
      ngx_http_auth_key_consumer_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("auth_key_result"), NULL,
      ngx_http_auth_key_result_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("auth_key_"), NULL,
      ngx_http_auth_key_meta_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_PREFIX, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_auth_key_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_str_t                      key;
    ngx_http_auth_key_ctx_t       *ctx;
    ngx_http_auth_key_entry_t     *entry;
    ngx_http_auth_key_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_auth_key_module);

    if (!alcf->enabled) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_auth_key_module);

    if (ctx) {
        if (ctx->state == NGX_HTTP_AUTH_KEY_WAIT) {
            return NGX_AGAIN;
        }

        return ngx_http_auth_key_answer(r, alcf, ctx);
    }

    ctx = ngx_http_auth_key_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_auth_key_find(r, alcf, &key);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * after an internal redirect, the key that an earlier location hid
     * is checked again, against this location's stores
     */

    if (ctx->hidden.len && rc != NGX_BUSY) {
        if (rc == NGX_DECLINED) {
            key = ctx->hidden;
            rc = NGX_OK;

        } else if (ngx_http_auth_key_add(&key, &ctx->hidden) != NGX_OK) {
            rc = NGX_BUSY;
        }
    }

    if (alcf->hide && rc != NGX_DECLINED) {
        if (rc == NGX_OK && ctx->hidden.len == 0) {
            ctx->hidden.data = ngx_pstrdup(r->pool, &key);
            if (ctx->hidden.data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ctx->hidden.len = key.len;
        }

        if (ngx_http_auth_key_hide_headers(r, alcf) != NGX_OK
            || ngx_http_auth_key_hide_query(r, alcf) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (rc == NGX_DECLINED) {
        ctx->result = NGX_HTTP_AUTH_KEY_MISSING;
        return ngx_http_auth_key_answer(r, alcf, ctx);
    }

    if (rc == NGX_BUSY) {
        ctx->result = NGX_HTTP_AUTH_KEY_CONFLICT;
        return ngx_http_auth_key_answer(r, alcf, ctx);
    }

    if (ngx_meshgate_sha256(&key, 1, ctx->digest) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    entry = alcf->store ? ngx_http_auth_key_lookup(alcf->store, ctx->digest)
                        : NULL;

    if (entry) {
        ctx->result = NGX_HTTP_AUTH_KEY_OK;
        ctx->consumer = entry->consumer;
        ctx->meta = entry->meta;
        ctx->nmeta = entry->nmeta;

        return ngx_http_auth_key_answer(r, alcf, ctx);
    }

    ctx->result = NGX_HTTP_AUTH_KEY_INVALID;

    if (alcf->redis) {
        rc = ngx_http_auth_key_redis_lookup(r, alcf->redis, ctx,
                                            ctx->digest);

        if (rc == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_auth_key_answer(r, alcf, ctx);
}


/*
 * The context of this request, or a fresh one.  An internal redirect
 * clears module contexts: the one of an earlier location is found again
 * through its pool cleanup (the realip module's way), for the key it hid.
 */

static ngx_http_auth_key_ctx_t *
ngx_http_auth_key_get_ctx(ngx_http_request_t *r)
{
    ngx_str_t                 hidden;
    ngx_pool_cleanup_t       *cln;
    ngx_http_auth_key_ctx_t  *ctx;

    ngx_str_null(&hidden);

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_auth_key_ctx_cleanup) {
            ctx = cln->data;
            hidden = ctx->hidden;
            break;
        }
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_auth_key_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_auth_key_ctx_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ctx->hidden = hidden;

    ngx_http_set_ctx(r, ctx, ngx_http_auth_key_module);

    return ctx;
}


static void
ngx_http_auth_key_ctx_cleanup(void *data)
{
    /* nothing to free: the cleanup marks the context */
}


static ngx_int_t
ngx_http_auth_key_answer(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf, ngx_http_auth_key_ctx_t *ctx)
{
    ctx->state = NGX_HTTP_AUTH_KEY_DONE;

    switch (ctx->result) {

    case NGX_HTTP_AUTH_KEY_OK:
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "auth_key: consumer \"%V\"", &ctx->consumer);
        return NGX_OK;

    case NGX_HTTP_AUTH_KEY_MISSING:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "auth_key: no API key in the request");
        break;

    case NGX_HTTP_AUTH_KEY_CONFLICT:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_key: two different API keys in the request");
        break;

    case NGX_HTTP_AUTH_KEY_UNAVAILABLE:
        return NGX_HTTP_SERVICE_UNAVAILABLE;

    default: /* NGX_HTTP_AUTH_KEY_INVALID */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_key: unknown API key (sha256 prefix %*xs)",
                      (size_t) 4, ctx->digest);
    }

    return ngx_http_auth_key_reject(r, alcf, ctx);
}


static ngx_int_t
ngx_http_auth_key_reject(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf, ngx_http_auth_key_ctx_t *ctx)
{
    if (ngx_meshgate_www_authenticate(r, "ApiKey", &alcf->realm, NULL, NULL)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_HTTP_UNAUTHORIZED;
}


/*
 * Collects the key from every configured place.  Returns NGX_OK with the
 * key, NGX_DECLINED when there is none, NGX_BUSY when two places hold
 * different keys.
 */

static ngx_int_t
ngx_http_auth_key_find(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf, ngx_str_t *key)
{
    ngx_int_t  rc;

    key->len = 0;
    key->data = NULL;

    rc = ngx_http_auth_key_from_headers(r, alcf, key);

    if (rc == NGX_OK) {
        rc = ngx_http_auth_key_from_query(r, alcf, key);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    return (key->data == NULL) ? NGX_DECLINED : NGX_OK;
}


/* NGX_OK, or NGX_BUSY when value differs from a key already seen */

static ngx_int_t
ngx_http_auth_key_add(ngx_str_t *key, ngx_str_t *value)
{
    if (value->len == 0) {
        return NGX_OK;
    }

    if (key->data == NULL) {
        *key = *value;
        return NGX_OK;
    }

    if (key->len != value->len
        || ngx_memcmp(key->data, value->data, key->len) != 0)
    {
        return NGX_BUSY;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_key_from_headers(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf, ngx_str_t *key)
{
    ngx_str_t        *name;
    ngx_uint_t        i, n;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    if (alcf->headers == NULL) {
        return NGX_OK;
    }

    name = alcf->headers->elts;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        for (n = 0; n < alcf->headers->nelts; n++) {
            if (h[i].key.len == name[n].len
                && ngx_strncasecmp(h[i].key.data, name[n].data,
                                   name[n].len) == 0)
            {
                if (ngx_http_auth_key_add(key, &h[i].value) != NGX_OK) {
                    return NGX_BUSY;
                }
            }
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_key_from_query(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf, ngx_str_t *key)
{
    u_char      *p, *end, *amp, *eq, *dst, *src;
    ngx_str_t   *name, value;
    ngx_uint_t   n;

    if (alcf->query == NULL || r->args.len == 0) {
        return NGX_OK;
    }

    name = alcf->query->elts;

    p = r->args.data;
    end = p + r->args.len;

    while (p < end) {
        amp = ngx_http_auth_key_arg(p, end, &eq);

        for (n = 0; n < alcf->query->nelts; n++) {
            if (!ngx_http_auth_key_arg_is(p, eq, &name[n])) {
                continue;
            }

            value.len = 0;
            value.data = NULL;

            if (eq < amp) {
                value.data = ngx_pnalloc(r->pool, amp - eq);
                if (value.data == NULL) {
                    return NGX_ERROR;
                }

                src = eq + 1;
                dst = value.data;
                ngx_unescape_uri(&dst, &src, amp - eq - 1, 0);
                value.len = dst - value.data;
            }

            if (ngx_http_auth_key_add(key, &value) != NGX_OK) {
                return NGX_BUSY;
            }
        }

        p = amp + 1;
    }

    return NGX_OK;
}


/*
 * The argument of the query string at p: returns its end (the next '&',
 * or end) and sets *eq to its '=' (to its end when it has none).
 */

static u_char *
ngx_http_auth_key_arg(u_char *p, u_char *end, u_char **eq)
{
    u_char  *amp;

    amp = ngx_strlchr(p, end, '&');
    if (amp == NULL) {
        amp = end;
    }

    *eq = ngx_strlchr(p, amp, '=');
    if (*eq == NULL) {
        *eq = amp;
    }

    return amp;
}


/*
 * Whether the argument name p..end is name: case-insensitive, after
 * percent-decoding, so that "ApiKey" or "api%6Bey" cannot slip by.
 */

static ngx_uint_t
ngx_http_auth_key_arg_is(u_char *p, u_char *end, ngx_str_t *name)
{
    u_char  *dst, *src, buf[64];

    if ((size_t) (end - p) == name->len
        && ngx_strncasecmp(p, name->data, name->len) == 0)
    {
        return 1;
    }

    if ((size_t) (end - p) > sizeof(buf)
        || ngx_strlchr(p, end, '%') == NULL)
    {
        return 0;
    }

    src = p;
    dst = buf;
    ngx_unescape_uri(&dst, &src, end - p, 0);

    return (size_t) (dst - buf) == name->len
           && ngx_strncasecmp(buf, name->data, name->len) == 0;
}


/*
 * Removes the key headers from the request so that they are not proxied.
 * nginx lists cannot drop elements: later elements of the same part move
 * down, and references of nginx's known headers to them are updated.
 */

static ngx_int_t
ngx_http_auth_key_hide_headers(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf)
{
    ngx_str_t        *name;
    ngx_uint_t        i, j, n, hit;
    ngx_list_part_t  *part, *prev;
    ngx_table_elt_t  *h;

    if (alcf->headers == NULL) {
        return NGX_OK;
    }

    name = alcf->headers->elts;

    prev = NULL;
    part = &r->headers_in.headers.part;

    while (part) {
        h = part->elts;
        i = 0;

        while (i < part->nelts) {
            hit = 0;

            for (n = 0; n < alcf->headers->nelts; n++) {
                if (h[i].key.len == name[n].len
                    && ngx_strncasecmp(h[i].key.data, name[n].data,
                                       name[n].len) == 0)
                {
                    hit = 1;
                    break;
                }
            }

            if (!hit) {
                i++;
                continue;
            }

            ngx_http_auth_key_fix_header_refs(r, &h[i], NULL);

            for (j = i + 1; j < part->nelts; j++) {
                h[j - 1] = h[j];
                ngx_http_auth_key_fix_header_refs(r, &h[j], &h[j - 1]);
            }

            part->nelts--;
        }

        if (part->nelts == 0 && prev) {

            /* list walkers expect no empty part after the first one */

            prev->next = part->next;

            if (r->headers_in.headers.last == part) {
                r->headers_in.headers.last = prev;
            }

            part = prev->next;
            continue;
        }

        prev = part;
        part = part->next;
    }

    return NGX_OK;
}


static void
ngx_http_auth_key_fix_header_refs(ngx_http_request_t *r,
    ngx_table_elt_t *from, ngx_table_elt_t *to)
{
    ngx_uint_t                  i;
    ngx_array_t                *a;
    ngx_table_elt_t           **ph;
    ngx_http_header_t          *hh;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_core_module);

    hh = ngx_hash_find(&cmcf->headers_in_hash, from->hash,
                       from->lowcase_key, from->key.len);

    if (hh == NULL || hh->offset == 0) {
        return;
    }

    if ((from->key.len == sizeof("Cookie") - 1
         && ngx_strncasecmp(from->key.data, (u_char *) "Cookie",
                            from->key.len) == 0)
        || (from->key.len == sizeof("X-Forwarded-For") - 1
            && ngx_strncasecmp(from->key.data, (u_char *) "X-Forwarded-For",
                               from->key.len) == 0))
    {
        /* nginx 1.22 keeps these two as arrays of references */

        a = (ngx_array_t *) ((char *) &r->headers_in + hh->offset);
        ph = a->elts;

        for (i = 0; i < a->nelts; i++) {
            if (ph[i] == from) {
                if (to) {
                    ph[i] = to;
                    continue;
                }

                ngx_memmove(&ph[i], &ph[i + 1],
                            (a->nelts - i - 1) * sizeof(ngx_table_elt_t *));
                a->nelts--;
                i--;
            }
        }

        return;
    }

    ph = (ngx_table_elt_t **) ((char *) &r->headers_in + hh->offset);

    if (*ph == from) {
        *ph = to;
    }
}


static ngx_int_t
ngx_http_auth_key_hide_query(ngx_http_request_t *r,
    ngx_http_auth_key_loc_conf_t *alcf)
{
    u_char      *p, *end, *amp, *eq, *out, *q;
    ngx_str_t   *name;
    ngx_uint_t   n, hit, changed;

    if (alcf->query == NULL || r->args.len == 0) {
        return NGX_OK;
    }

    name = alcf->query->elts;

    out = ngx_pnalloc(r->pool, r->args.len);
    if (out == NULL) {
        return NGX_ERROR;
    }

    q = out;
    changed = 0;

    p = r->args.data;
    end = p + r->args.len;

    while (p < end) {
        amp = ngx_http_auth_key_arg(p, end, &eq);

        hit = 0;

        for (n = 0; n < alcf->query->nelts; n++) {
            if (ngx_http_auth_key_arg_is(p, eq, &name[n])) {
                hit = 1;
                break;
            }
        }

        if (hit) {
            changed = 1;

        } else {
            if (q != out) {
                *q++ = '&';
            }

            q = ngx_cpymem(q, p, amp - p);
        }

        p = amp + 1;
    }

    if (changed) {
        r->args.data = out;
        r->args.len = q - out;
        r->valid_unparsed_uri = 0;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_key_consumer_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_auth_key_ctx_t  *ctx;

    static ngx_str_t  name = ngx_string("consumer");

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_auth_key_module);

    if (ctx == NULL || ctx->result != NGX_HTTP_AUTH_KEY_OK) {
        v->not_found = 1;
        return NGX_OK;
    }

    /* a key file refuses control bytes; a Redis entry or a cached one is
     * checked here too, where the value becomes a variable */

    ngx_meshgate_variable_set_text(r, v, "API key", &name,
                                   ctx->consumer.data, ctx->consumer.len);
    v->no_cacheable = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_key_result_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                *s;
    ngx_http_auth_key_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_auth_key_module);

    s = &ngx_http_auth_key_results[ctx ? ctx->result
                                       : NGX_HTTP_AUTH_KEY_NONE];

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_key_meta_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t *var = (ngx_str_t *) data;

    ngx_str_t                 name;
    ngx_uint_t                i;
    ngx_keyval_t             *kv;
    ngx_http_auth_key_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_auth_key_module);

    if (ctx == NULL || ctx->result != NGX_HTTP_AUTH_KEY_OK) {
        v->not_found = 1;
        return NGX_OK;
    }

    name.data = var->data + sizeof("auth_key_") - 1;
    name.len = var->len - (sizeof("auth_key_") - 1);

    kv = NULL;

    for (i = 0; i < ctx->nmeta; i++) {
        if (ctx->meta[i].key.len == name.len
            && ngx_strncasecmp(ctx->meta[i].key.data, name.data, name.len)
               == 0)
        {
            kv = &ctx->meta[i];
            break;
        }
    }

    if (kv == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    ngx_meshgate_variable_set_text(r, v, "API key metadata", &name,
                                   kv->value.data, kv->value.len);
    v->no_cacheable = 1;

    return NGX_OK;
}


static char *
ngx_http_auth_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_key_loc_conf_t *alcf = conf;

    ngx_str_t  *value;

    value = cf->args->elts;

    return ngx_meshgate_realm_conf(cf, &value[1], &alcf->enabled,
                                   &alcf->realm);
}


static char *
ngx_http_auth_key_source(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_key_loc_conf_t *alcf = conf;

    u_char        *p;
    ngx_str_t     *value, *s, name;
    ngx_uint_t     i;
    ngx_array_t  **a;

    if (alcf->headers != NGX_CONF_UNSET_PTR
        || alcf->query != NGX_CONF_UNSET_PTR)
    {
        return "is duplicate";
    }

    alcf->headers = NULL;
    alcf->query = NULL;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "header=", 7) == 0) {
            name.data = value[i].data + 7;
            name.len = value[i].len - 7;

            for (p = name.data; p < name.data + name.len; p++) {
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                      || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
                {
                    goto invalid;
                }
            }

            a = &alcf->headers;

        } else if (ngx_strncmp(value[i].data, "query=", 6) == 0) {
            name.data = value[i].data + 6;
            name.len = value[i].len - 6;

            for (p = name.data; p < name.data + name.len; p++) {
                if (*p <= 0x20 || *p >= 0x7f || *p == '&' || *p == '='
                    || *p == '%' || *p == '+')
                {
                    goto invalid;
                }
            }

            a = &alcf->query;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\", expected "
                               "\"header=name\" or \"query=name\"",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        if (name.len == 0) {
            goto invalid;
        }

        if (*a == NULL) {
            *a = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
            if (*a == NULL) {
                return NGX_CONF_ERROR;
            }
        }

        s = ngx_array_push(*a);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = name;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid name in \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_auth_key_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_key_loc_conf_t *alcf = conf;

    ngx_str_t  *value, name;

    if (alcf->store != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        alcf->store = NULL;
        return NGX_CONF_OK;
    }

    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    alcf->store = ngx_http_auth_key_load(cf, &name);
    if (alcf->store == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_key_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_auth_key_loc_conf_t *alcf = conf;

    if (alcf->redis != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    return ngx_http_auth_key_redis_conf(cf, alcf);
}


static ngx_int_t
ngx_http_auth_key_add_variables(ngx_conf_t *cf)
{
    return ngx_meshgate_add_variables(cf, ngx_http_auth_key_vars);
}


static void *
ngx_http_auth_key_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_auth_key_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_key_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&amcf->stores, cf->pool, 4,
                       sizeof(ngx_http_auth_key_store_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&amcf->redis, cf->pool, 1,
                       sizeof(ngx_http_auth_key_redis_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return amcf;
}


static void *
ngx_http_auth_key_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_auth_key_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_key_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->realm = { 0, NULL };
     */

    conf->headers = NGX_CONF_UNSET_PTR;
    conf->query = NGX_CONF_UNSET_PTR;
    conf->store = NGX_CONF_UNSET_PTR;
    conf->redis = NGX_CONF_UNSET_PTR;
    conf->enabled = NGX_CONF_UNSET;
    conf->hide = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_auth_key_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_auth_key_loc_conf_t *prev = parent;
    ngx_http_auth_key_loc_conf_t *conf = child;

    ngx_str_t  *h;

    if (conf->enabled == NGX_CONF_UNSET) {
        conf->enabled = prev->enabled;
        conf->realm = prev->realm;
    }

    ngx_conf_merge_value(conf->enabled, prev->enabled, 0);
    ngx_conf_merge_value(conf->hide, prev->hide, 1);
    ngx_conf_merge_ptr_value(conf->store, prev->store, NULL);
    ngx_conf_merge_ptr_value(conf->redis, prev->redis, NULL);

    if (conf->headers == NGX_CONF_UNSET_PTR
        && conf->query == NGX_CONF_UNSET_PTR)
    {
        conf->headers = prev->headers;
        conf->query = prev->query;
    }

    if (conf->headers == NGX_CONF_UNSET_PTR) {
        conf->headers = ngx_array_create(cf->pool, 1, sizeof(ngx_str_t));
        if (conf->headers == NULL) {
            return NGX_CONF_ERROR;
        }

        h = ngx_array_push(conf->headers);
        if (h == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_str_set(h, "X-API-Key");
    }

    ngx_conf_merge_ptr_value(conf->query, prev->query, NULL);

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_auth_key_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_auth_key_handler;

    return NGX_OK;
}


static void
ngx_http_auth_key_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_auth_key_redis_exit(cycle);
}
