
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_sha1.h>
#include "ngx_meshgate_redis_internal.h"


/*
 * Configuration time: the client's parameters, their checks, the
 * address resolved once, scripts.
 */


static ngx_int_t ngx_meshgate_redis_parse_server(ngx_conf_t *cf,
    ngx_meshgate_redis_t *rd, ngx_str_t *value);


ngx_meshgate_redis_t *
ngx_meshgate_redis_create(ngx_conf_t *cf)
{
    ngx_meshgate_redis_t  *rd;

    rd = ngx_pcalloc(cf->pool, sizeof(ngx_meshgate_redis_t));
    if (rd == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     rd->name = { 0, NULL };
     *     rd->user = { 0, NULL };
     *     rd->password = { 0, NULL };
     *     rd->password_env = { 0, NULL };
     *     rd->conn = NULL;
     */

    rd->db = NGX_CONF_UNSET;
    rd->timeout = NGX_CONF_UNSET_MSEC;
    rd->connect_timeout = NGX_CONF_UNSET_MSEC;
    rd->tls_verify = NGX_CONF_UNSET;
    rd->limits.max_values = NGX_CONF_UNSET_UINT;
    rd->limits.max_depth = NGX_CONF_UNSET_UINT;
    rd->limits.max_bulk = NGX_CONF_UNSET_SIZE;

    return rd;
}


void
ngx_meshgate_redis_limit_replies(ngx_meshgate_redis_t *rd, ngx_uint_t values,
    ngx_uint_t depth, size_t bulk)
{
    rd->limits.max_values = ngx_max(values, 1);
    rd->limits.max_depth = ngx_min(depth, NGX_MESHGATE_REDIS_MAX_DEPTH);
    rd->limits.max_bulk = bulk;
}


ngx_int_t
ngx_meshgate_redis_parse(ngx_conf_t *cf, ngx_meshgate_redis_t *rd,
    ngx_str_t *param)
{
    ngx_str_t  v;

    if (ngx_strncmp(param->data, "server=", 7) == 0) {
        v.data = param->data + 7;
        v.len = param->len - 7;
        return ngx_meshgate_redis_parse_server(cf, rd, &v);
    }

    switch (ngx_meshgate_redis_parse_sentinel(cf, rd, param)) {
    case NGX_OK:
        return NGX_OK;
    case NGX_ERROR:
        return NGX_ERROR;
    default:
        break;
    }

    if (ngx_strncmp(param->data, "password=", 9) == 0) {
        rd->password.data = param->data + 9;
        rd->password.len = param->len - 9;

        /* empty: no AUTH at all, surely not what was meant */

        if (rd->password.len == 0) {
            goto invalid;
        }

        return NGX_OK;
    }

    if (ngx_strncmp(param->data, "password_env=", 13) == 0) {
        rd->password_env.data = param->data + 13;
        rd->password_env.len = param->len - 13;

        if (rd->password_env.len == 0) {
            goto invalid;
        }

        return NGX_OK;
    }

    if (ngx_strncmp(param->data, "user=", 5) == 0) {
        rd->user.data = param->data + 5;
        rd->user.len = param->len - 5;

        if (rd->user.len == 0) {
            goto invalid;
        }

        return NGX_OK;
    }

    if (ngx_strncmp(param->data, "db=", 3) == 0) {
        rd->db = ngx_atoi(param->data + 3, param->len - 3);

        if (rd->db == NGX_ERROR) {
            goto invalid;
        }

        return NGX_OK;
    }

    if (ngx_strncmp(param->data, "timeout=", 8) == 0) {
        v.data = param->data + 8;
        v.len = param->len - 8;
        rd->timeout = ngx_parse_time(&v, 0);

        if (rd->timeout == (ngx_msec_t) NGX_ERROR || rd->timeout == 0) {
            goto invalid;
        }

        return NGX_OK;
    }

    if (ngx_strncmp(param->data, "connect_timeout=", 16) == 0) {
        v.data = param->data + 16;
        v.len = param->len - 16;
        rd->connect_timeout = ngx_parse_time(&v, 0);

        if (rd->connect_timeout == (ngx_msec_t) NGX_ERROR
            || rd->connect_timeout == 0)
        {
            goto invalid;
        }

        return NGX_OK;
    }

    return ngx_meshgate_redis_parse_tls(cf, rd, param);

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid redis parameter \"%V\"", param);
    return NGX_ERROR;
}


/*
 * A list of nodes, host[:port] separated by commas; a host name is
 * resolved now (first address): a worker never resolves.
 */

ngx_array_t *
ngx_meshgate_redis_parse_nodes(ngx_conf_t *cf, ngx_str_t *list,
    in_port_t port)
{
    u_char       *p, *last, *comma;
    ngx_url_t     u;
    ngx_addr_t   *addr;
    ngx_array_t  *nodes;

    nodes = ngx_array_create(cf->pool, 3, sizeof(ngx_addr_t));
    if (nodes == NULL) {
        return NULL;
    }

    p = list->data;
    last = list->data + list->len;

    for ( ;; ) {
        comma = ngx_strlchr(p, last, ',');

        if (comma == NULL) {
            comma = last;
        }

        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url.data = p;
        u.url.len = comma - p;
        u.default_port = port;
        u.no_resolve = 0;

        if (u.url.len == 0
            || (u.url.len > 5 && ngx_strncmp(p, "unix:", 5) == 0)
            || ngx_parse_url(cf->pool, &u) != NGX_OK
            || u.naddrs == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid redis node \"%V\" in \"%V\"%s%s",
                               &u.url, list, u.err ? ": " : "",
                               u.err ? u.err : "");
            return NULL;
        }

        addr = ngx_array_push(nodes);
        if (addr == NULL) {
            return NULL;
        }

        *addr = u.addrs[0];

        if (comma == last) {
            return nodes;
        }

        p = comma + 1;
    }
}


static ngx_int_t
ngx_meshgate_redis_parse_server(ngx_conf_t *cf, ngx_meshgate_redis_t *rd,
    ngx_str_t *value)
{
    ngx_url_t  u;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *value;
    u.default_port = 6379;

    if (value->len == 0
        || ngx_parse_url(cf->pool, &u) != NGX_OK
        || u.naddrs == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis server \"%V\"%s%s", value,
                           u.err ? ": " : "", u.err ? u.err : "");
        return NGX_ERROR;
    }

    rd->sockaddr = u.addrs[0].sockaddr;
    rd->socklen = u.addrs[0].socklen;
    rd->name = u.addrs[0].name;
    rd->host = u.host;

    return NGX_OK;
}


char *
ngx_meshgate_redis_init(ngx_conf_t *cf, ngx_meshgate_redis_t *rd)
{
    char  *env;

    if (ngx_meshgate_redis_init_sentinel(cf, rd) != NGX_CONF_OK
        || ngx_meshgate_redis_init_cluster(cf, rd) != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (rd->sockaddr == NULL && rd->sentinels == NULL && rd->cluster == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis \"server=\", \"sentinel=\" or "
                           "\"cluster=\" parameter is required");
        return NGX_CONF_ERROR;
    }

    if (rd->password.len && rd->password_env.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis \"password=\" and \"password_env=\" "
                           "are mutually exclusive");
        return NGX_CONF_ERROR;
    }

    if (rd->password_env.len) {
        env = getenv((char *) rd->password_env.data);

        if (env == NULL || *env == '\0') {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "redis password environment variable "
                               "\"%V\" is not set", &rd->password_env);
            return NGX_CONF_ERROR;
        }

        rd->password.len = ngx_strlen(env);
        rd->password.data = ngx_pnalloc(cf->pool, rd->password.len);
        if (rd->password.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(rd->password.data, env, rd->password.len);
    }

    if (rd->user.len && rd->password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis \"user=\" needs a password");
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_value(rd->db, 0);
    ngx_conf_init_msec_value(rd->timeout, 50);
    ngx_conf_init_msec_value(rd->connect_timeout, 500);
    ngx_conf_init_uint_value(rd->limits.max_values, 256);
    ngx_conf_init_uint_value(rd->limits.max_depth, 1);
    ngx_conf_init_size_value(rd->limits.max_bulk, 4096);

    if (rd->sentinels) {

        /* ROLE: "master", the offset, then per replica ip, port, offset */

        rd->limits.max_values = ngx_max(rd->limits.max_values, 3 + 4 * 64);
        rd->limits.max_depth = ngx_max(rd->limits.max_depth, 3);
        rd->limits.max_bulk = ngx_max(rd->limits.max_bulk, 64);
    }

    if (ngx_meshgate_redis_init_tls(cf, rd) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (rd->control) {
        rd->control->user = rd->user;
        rd->control->password = rd->password;
        rd->control->timeout = rd->timeout;
        rd->control->connect_timeout = rd->connect_timeout;
        rd->control->ssl = rd->ssl;
        rd->control->tls = rd->tls;
        rd->control->tls_verify = rd->tls_verify;
        rd->control->tls_name = rd->tls_name;
    }

    if (rd->sentinels == NULL) {
        return NGX_CONF_OK;
    }

    /* the client to the sentinels: the same timeouts and TLS */

    rd->sentinel->timeout = rd->timeout;
    rd->sentinel->connect_timeout = rd->connect_timeout;
    rd->sentinel->ssl = rd->ssl;
    rd->sentinel->tls = rd->tls;
    rd->sentinel->tls_verify = rd->tls_verify;
    rd->sentinel->tls_name = rd->tls_name;

    rd->subscriber->timeout = rd->timeout;
    rd->subscriber->connect_timeout = rd->connect_timeout;
    rd->subscriber->ssl = rd->ssl;
    rd->subscriber->tls = rd->tls;
    rd->subscriber->tls_verify = rd->tls_verify;
    rd->subscriber->tls_name = rd->tls_name;

    return NGX_CONF_OK;
}


ngx_str_t *
ngx_meshgate_redis_name(ngx_meshgate_redis_t *rd)
{
    return &rd->name;
}


ngx_meshgate_redis_script_t *
ngx_meshgate_redis_script(ngx_conf_t *cf, ngx_str_t *text)
{
    u_char                        hash[20];
    ngx_sha1_t                    sha1;
    ngx_meshgate_redis_script_t  *script;

    script = ngx_pcalloc(cf->pool, sizeof(ngx_meshgate_redis_script_t));
    if (script == NULL) {
        return NULL;
    }

    script->text = *text;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, text->data, text->len);
    ngx_sha1_final(hash, &sha1);

    ngx_hex_dump(script->sha, hash, 20);

    return script;
}
