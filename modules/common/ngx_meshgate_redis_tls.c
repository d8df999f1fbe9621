
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_meshgate_redis_internal.h"


/*
 * TLS to Redis: the tls* parameters, the SSL context, and the
 * handshake run before any command within connect_timeout.
 */


static ngx_int_t ngx_meshgate_redis_cstr(ngx_pool_t *pool, ngx_str_t *src,
    ngx_str_t *dst);
static void ngx_meshgate_redis_tls_handshake_handler(ngx_connection_t *c);
static ngx_int_t ngx_meshgate_redis_tls_done(ngx_meshgate_redis_t *rd);


ngx_int_t
ngx_meshgate_redis_parse_tls(ngx_conf_t *cf, ngx_meshgate_redis_t *rd,
    ngx_str_t *param)
{
    u_char      *eq;
    ngx_str_t    name, v, *dst;
    ngx_uint_t   i;

    static struct {
        ngx_str_t   name;
        size_t      offset;
    }  files[] = {
        { ngx_string("tls_ca"), offsetof(ngx_meshgate_redis_t, tls_ca) },
        { ngx_string("tls_name"), offsetof(ngx_meshgate_redis_t, tls_name) },
        { ngx_string("tls_cert"), offsetof(ngx_meshgate_redis_t, tls_cert) },
        { ngx_string("tls_key"), offsetof(ngx_meshgate_redis_t, tls_key) }
    };

    if (param->len == 3 && ngx_strncmp(param->data, "tls", 3) == 0) {
        rd->tls = 1;
        return NGX_OK;
    }

    eq = ngx_strlchr(param->data, param->data + param->len, '=');

    if (eq == NULL) {
        return NGX_DECLINED;
    }

    name.data = param->data;
    name.len = eq - param->data;
    v.data = eq + 1;
    v.len = param->data + param->len - v.data;

    if (name.len == 10 && ngx_strncmp(name.data, "tls_verify", 10) == 0) {
        if (v.len == 2 && ngx_strncmp(v.data, "on", 2) == 0) {
            rd->tls_verify = 1;
            return NGX_OK;
        }

        if (v.len == 3 && ngx_strncmp(v.data, "off", 3) == 0) {
            rd->tls_verify = 0;
            return NGX_OK;
        }

        goto invalid;
    }

    for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (name.len != files[i].name.len
            || ngx_strncmp(name.data, files[i].name.data, name.len) != 0)
        {
            continue;
        }

        if (v.len == 0) {
            goto invalid;
        }

        /* null-terminated: file names and the SNI name */

        dst = (ngx_str_t *) ((u_char *) rd + files[i].offset);

        return ngx_meshgate_redis_cstr(cf->pool, &v, dst);
    }

    return NGX_DECLINED;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid redis parameter \"%V\"", param);
    return NGX_ERROR;
}


/*
 * TLS to Redis: the server's certificate is verified against tls_ca= and
 * tls_name= (by default the host of server=) unless tls_verify=off says
 * otherwise; tls_cert=/tls_key= for Redis's tls-auth-clients.
 */

static ngx_int_t
ngx_meshgate_redis_cstr(ngx_pool_t *pool, ngx_str_t *src, ngx_str_t *dst)
{
    dst->data = ngx_pnalloc(pool, src->len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src->data, src->len);
    dst->data[src->len] = '\0';
    dst->len = src->len;

    return NGX_OK;
}


char *
ngx_meshgate_redis_init_tls(ngx_conf_t *cf, ngx_meshgate_redis_t *rd)
{
    ngx_pool_cleanup_t  *cln;

    if (!rd->tls) {
        if (rd->tls_ca.len || rd->tls_name.len || rd->tls_cert.len
            || rd->tls_key.len || rd->tls_verify != NGX_CONF_UNSET)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "redis \"tls_*\" parameters need \"tls\"");
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (rd->sockaddr && rd->sockaddr->sa_family == AF_UNIX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis \"tls\" needs a TCP server");
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_value(rd->tls_verify, 1);

    if (rd->tls_verify && rd->tls_ca.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis \"tls\" verifies the server with the CAs "
                           "of \"tls_ca=\", which is missing (or say "
                           "\"tls_verify=off\")");
        return NGX_CONF_ERROR;
    }

    if ((rd->tls_cert.len == 0) != (rd->tls_key.len == 0)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis \"tls_cert=\" and \"tls_key=\" go "
                           "together");
        return NGX_CONF_ERROR;
    }

    if (rd->tls_name.len == 0
        && ngx_meshgate_redis_cstr(cf->pool, &rd->host, &rd->tls_name)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    rd->ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (rd->ssl == NULL) {
        return NGX_CONF_ERROR;
    }

    rd->ssl->log = cf->log;

    if (ngx_ssl_create(rd->ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(rd->ssl);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = rd->ssl;

    /* commands queue up behind a write that waits: the buffer may move */

    SSL_CTX_set_mode(rd->ssl->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

    if ((rd->tls_cert.len
         && ngx_ssl_certificate(cf, rd->ssl, &rd->tls_cert, &rd->tls_key,
                                NULL)
            != NGX_OK)
        || (rd->tls_verify
            && ngx_ssl_trusted_certificate(cf, rd->ssl, &rd->tls_ca, 9)
               != NGX_OK))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis TLS: cannot load the certificates");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * TLS runs on the connected socket before any command goes; the connect
 * timer (connect_timeout=) covers the handshake too, and commands wait in
 * the output buffer meanwhile.
 */

ngx_int_t
ngx_meshgate_redis_tls_start(ngx_meshgate_redis_t *rd)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    c = rd->conn;

    /* the TLS state lives in the connection's pool, freed on close */

    c->pool = ngx_create_pool(128, ngx_cycle->log);
    if (c->pool == NULL) {
        return NGX_ERROR;
    }

    if (ngx_ssl_create_connection(rd->ssl, c, NGX_SSL_BUFFER|NGX_SSL_CLIENT)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (SSL_set_tlsext_host_name(c->ssl->connection,
                                 (char *) rd->tls_name.data)
        == 0)
    {
        ngx_ssl_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis %V: SSL_set_tlsext_host_name(\"%V\") failed",
                      &rd->name, &rd->tls_name);
        return NGX_ERROR;
    }

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        c->ssl->handler = ngx_meshgate_redis_tls_handshake_handler;
        return NGX_AGAIN;
    }

    return ngx_meshgate_redis_tls_done(rd);
}


static void
ngx_meshgate_redis_tls_handshake_handler(ngx_connection_t *c)
{
    ngx_meshgate_redis_t  *rd;

    rd = c->data;

    if (ngx_meshgate_redis_tls_done(rd) != NGX_OK) {
        ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                      "TLS handshake failed");
    }
}


static ngx_int_t
ngx_meshgate_redis_tls_done(ngx_meshgate_redis_t *rd)
{
    long               rc;
    ngx_connection_t  *c;

    c = rd->conn;

    if (!c->ssl->handshaked) {
        return NGX_ERROR;
    }

    if (rd->tls_verify) {
        rc = SSL_get_verify_result(c->ssl->connection);

        if (rc != X509_V_OK) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "redis %V: TLS certificate verify error: (%l:%s)",
                          &rd->name, rc, X509_verify_cert_error_string(rc));
            return NGX_ERROR;
        }

        if (ngx_ssl_check_host(c, &rd->tls_name) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "redis %V: TLS certificate does not match \"%V\"",
                          &rd->name, &rd->tls_name);
            return NGX_ERROR;
        }
    }

    c->read->handler = ngx_meshgate_redis_read_handler;
    c->write->handler = ngx_meshgate_redis_write_handler;

    ngx_meshgate_redis_connected(rd);
    ngx_meshgate_redis_post_write(rd);

    return NGX_OK;
}
