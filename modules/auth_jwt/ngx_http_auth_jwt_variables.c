
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_auth_jwt.h"
#include "ngx_meshgate_http.h"


/* a member variable: $jwt_claim_NAME or $jwt_header_NAME */

typedef struct {
    ngx_str_t                       prefix;
    const char                     *what;     /* for the log */
} ngx_http_auth_jwt_member_t;


static ngx_int_t ngx_http_auth_jwt_claim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_auth_jwt_header_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_auth_jwt_member_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, ngx_str_t *name, ngx_uint_t header);
static ngx_int_t ngx_http_auth_jwt_json_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, json_t *root, ngx_str_t *name,
    const char *what);
static ngx_int_t ngx_http_auth_jwt_value(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, json_t *value, const char *what,
    ngx_str_t *name);
static void ngx_http_auth_jwt_text(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, const char *what, ngx_str_t *name,
    ngx_str_t *text);
static ngx_int_t ngx_http_auth_jwt_payload_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_auth_jwt_result_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_http_auth_jwt_ctx_t *ngx_http_auth_jwt_lazy(ngx_http_request_t *r);
static ngx_http_auth_jwt_ctx_t *ngx_http_auth_jwt_trusted(
    ngx_http_request_t *r, ngx_http_variable_value_t *v);


static ngx_str_t  ngx_http_auth_jwt_payload_name = ngx_string("jwt_payload");


/* by part: 0 the claims (payload), 1 the header */

static ngx_http_auth_jwt_member_t  ngx_http_auth_jwt_members[] = {
    { ngx_string("jwt_claim_"), "auth_jwt: claim" },
    { ngx_string("jwt_header_"), "auth_jwt: header" }
};


static ngx_http_variable_t  ngx_http_auth_jwt_vars[] = {

    { ngx_string("jwt_claim_"), NULL, ngx_http_auth_jwt_claim_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_PREFIX, 0 },

    { ngx_string("jwt_header_"), NULL, ngx_http_auth_jwt_header_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_PREFIX, 0 },

    { ngx_string("jwt_payload"), NULL, ngx_http_auth_jwt_payload_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("auth_jwt_result"), NULL,
      ngx_http_auth_jwt_result_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/* the header or payload JSON, parsed on first use after a cache hit */

json_t *
ngx_http_auth_jwt_part(ngx_http_auth_jwt_ctx_t *ctx, ngx_uint_t header)
{
    json_t     **v;
    ngx_str_t   *text;

    v = header ? &ctx->header : &ctx->payload;
    text = header ? &ctx->header_text : &ctx->payload_text;

    if (*v == NULL && text->len) {
        (void) ngx_http_auth_jwt_json_object(text, v);
    }

    return *v;
}


/* variables */

static ngx_http_auth_jwt_ctx_t *
ngx_http_auth_jwt_lazy(ngx_http_request_t *r)
{
    ngx_http_auth_jwt_ctx_t       *ctx;
    ngx_http_auth_jwt_loc_conf_t  *jlcf;

    if (r != r->main) {
        ctx = ngx_http_get_module_ctx(r->main, ngx_http_auth_jwt_module);
        return (ctx && ctx->verified) ? ctx : NULL;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_auth_jwt_module);

    if (ctx == NULL || (!ctx->verified && !ctx->waiter.waiting)) {
        jlcf = ngx_http_get_module_loc_conf(r, ngx_http_auth_jwt_module);

        if (jlcf->key_files == NULL && jlcf->sources == NULL) {
            return ctx;
        }

        ctx = ngx_http_auth_jwt_get_ctx(r);
        if (ctx == NULL) {
            return NULL;
        }

        if (!ctx->waiter.waiting) {
            ngx_http_auth_jwt_check(r, ctx, jlcf, 0);
        }
    }

    return ctx;
}


/*
 * The context of a request whose token is verified and good; otherwise
 * NULL, and v reads as not found
 */

static ngx_http_auth_jwt_ctx_t *
ngx_http_auth_jwt_trusted(ngx_http_request_t *r,
    ngx_http_variable_value_t *v)
{
    ngx_http_auth_jwt_ctx_t  *ctx;

    ctx = ngx_http_auth_jwt_lazy(r);

    if (ctx == NULL || !ctx->verified
        || ctx->verdict != NGX_HTTP_AUTH_JWT_OK)
    {
        v->not_found = 1;
        return NULL;
    }

    return ctx;
}


static ngx_int_t
ngx_http_auth_jwt_claim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    return ngx_http_auth_jwt_member_variable(r, v, (ngx_str_t *) data, 0);
}


static ngx_int_t
ngx_http_auth_jwt_header_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    return ngx_http_auth_jwt_member_variable(r, v, (ngx_str_t *) data, 1);
}


/*
 * $jwt_claim_NAME and $jwt_header_NAME: a prefix variable gets its whole
 * name; the member is what follows the prefix
 */

static ngx_int_t
ngx_http_auth_jwt_member_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, ngx_str_t *name, ngx_uint_t header)
{
    ngx_str_t                     member;
    ngx_http_auth_jwt_ctx_t      *ctx;
    ngx_http_auth_jwt_member_t   *m;

    ctx = ngx_http_auth_jwt_trusted(r, v);
    if (ctx == NULL) {
        return NGX_OK;
    }

    m = &ngx_http_auth_jwt_members[header];

    member.data = name->data + m->prefix.len;
    member.len = name->len - m->prefix.len;

    return ngx_http_auth_jwt_json_variable(r, v,
                                           ngx_http_auth_jwt_part(ctx, header),
                                           &member, m->what);
}


/*
 * A top-level member.  nginx folds variable names to lower case, so a
 * member whose name matches only without regard to case serves too, but
 * only when it is the one such member: a name that matches nothing (or
 * two members) reads as not found, never as some other member.
 */

static ngx_int_t
ngx_http_auth_jwt_json_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, json_t *root, ngx_str_t *name,
    const char *what)
{
    char        buf[256];
    json_t      *m, *found;
    const char  *k;

    v->not_found = 1;

    if (root == NULL || name->len == 0 || name->len >= sizeof(buf)) {
        return NGX_OK;
    }

    ngx_memcpy(buf, name->data, name->len);
    buf[name->len] = '\0';

    found = json_object_get(root, buf);

    if (found == NULL) {
        json_object_foreach(root, k, m) {
            if (ngx_strlen(k) != name->len
                || ngx_strncasecmp((u_char *) k, name->data, name->len) != 0)
            {
                continue;
            }

            if (found != NULL) {
                return NGX_OK;
            }

            found = m;
        }
    }

    if (found == NULL) {
        return NGX_OK;
    }

    return ngx_http_auth_jwt_value(r, v, found, what, name);
}


/*
 * The text of a JSON value from a token into v: a value that holds a
 * control byte (a decoded "\r\n", say) reads as empty with a warning, so
 * that no claim ever splits a header line or a log line.
 */

static ngx_int_t
ngx_http_auth_jwt_value(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    json_t *value, const char *what, ngx_str_t *name)
{
    ngx_str_t  text;

    if (ngx_meshgate_json_text(r->pool, value, &text) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_auth_jwt_text(r, v, what, name, &text);

    return NGX_OK;
}


/* text from a token into v; not cached: a token can change per request */

static void
ngx_http_auth_jwt_text(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    const char *what, ngx_str_t *name, ngx_str_t *text)
{
    ngx_meshgate_variable_set_text(r, v, what, name, text->data, text->len);
    v->no_cacheable = 1;
}


static ngx_int_t
ngx_http_auth_jwt_payload_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                *text;
    ngx_http_auth_jwt_ctx_t  *ctx;

    ctx = ngx_http_auth_jwt_trusted(r, v);
    if (ctx == NULL) {
        return NGX_OK;
    }

    /*
     * JSON text may hold raw CR LF between its tokens (RFC 7515 A.1); a
     * nested token gives its inner JWS, as Plus does
     */

    text = ctx->inner.len ? &ctx->inner : &ctx->payload_text;

    ngx_http_auth_jwt_text(r, v, "auth_jwt: variable",
                           &ngx_http_auth_jwt_payload_name, text);

    return NGX_OK;
}


static ngx_int_t
ngx_http_auth_jwt_result_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_pool_cleanup_t       *cln;
    ngx_http_auth_jwt_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_auth_jwt_module);

    /*
     * an internal redirect (an error page) clears module contexts: the
     * decision is found again through its pool cleanup, as realip does
     */

    for (cln = r->main->pool->cleanup;
         (ctx == NULL || !ctx->done) && cln;
         cln = cln->next)
    {
        if (cln->handler == ngx_http_auth_jwt_ctx_cleanup) {
            ctx = cln->data;
        }
    }

    if (ctx == NULL || !ctx->done) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = ngx_http_auth_jwt_result_names[ctx->result].data;
    v->len = ngx_http_auth_jwt_result_names[ctx->result].len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


ngx_int_t
ngx_http_auth_jwt_set_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_auth_jwt_var_t  *var = (ngx_http_auth_jwt_var_t *) data;

    json_t                   *m;
    ngx_str_t                *names;
    ngx_uint_t                i;
    ngx_http_auth_jwt_ctx_t  *ctx;

    v->not_found = 1;

    ctx = ngx_http_auth_jwt_trusted(r, v);
    if (ctx == NULL) {
        return NGX_OK;
    }

    m = ngx_http_auth_jwt_part(ctx, var->header);
    names = var->names.elts;

    for (i = 0; m != NULL && i < var->names.nelts; i++) {
        if (!json_is_object(m)) {
            return NGX_OK;
        }

        m = json_object_get(m, (const char *) names[i].data);
    }

    if (m == NULL) {
        return NGX_OK;
    }

    return ngx_http_auth_jwt_value(r, v, m,
                                   var->header ? "auth_jwt: header path"
                                               : "auth_jwt: claim path",
                                   &var->var);
}


/* configuration */

ngx_int_t
ngx_http_auth_jwt_add_variables(ngx_conf_t *cf)
{
    return ngx_meshgate_add_variables(cf, ngx_http_auth_jwt_vars);
}
