
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_meshgate_redis_internal.h"


/*
 * Redis Sentinel: the primary asked of the sentinels, ROLE checked
 * on connect, +switch-master followed on a subscribed connection.
 */


static ngx_int_t ngx_meshgate_redis_sentinel_env(ngx_conf_t *cf,
    ngx_meshgate_redis_t *rd, ngx_str_t *name);
static void ngx_meshgate_redis_sentinel_handler(void *data,
    ngx_int_t status, redisReply *reply);
static ngx_int_t ngx_meshgate_redis_primary(ngx_meshgate_redis_t *rd,
    redisReply *reply);
static void ngx_meshgate_redis_subscribe(ngx_meshgate_redis_t *rd);
static void ngx_meshgate_redis_subscribed(void *data, ngx_int_t status,
    redisReply *reply);
static void ngx_meshgate_redis_switch_master(ngx_meshgate_redis_t *sub,
    redisReply *reply);


/*
 * sentinel=host:port[,host:port...] master= sentinel_user=
 * sentinel_password= | sentinel_password_env=
 */

ngx_int_t
ngx_meshgate_redis_parse_sentinel(ngx_conf_t *cf, ngx_meshgate_redis_t *rd,
    ngx_str_t *param)
{
    ngx_str_t  v;

    if (ngx_strncmp(param->data, "sentinel=", 9) == 0) {
        v.data = param->data + 9;
        v.len = param->len - 9;

        if (rd->sentinels) {
            goto duplicate;
        }

        rd->sentinels = ngx_meshgate_redis_parse_nodes(cf, &v, 26379);

        return rd->sentinels ? NGX_OK : NGX_ERROR;
    }

    if (ngx_strncmp(param->data, "cluster=", 8) == 0) {
        v.data = param->data + 8;
        v.len = param->len - 8;

        if (rd->cluster) {
            goto duplicate;
        }

        rd->cluster = ngx_meshgate_redis_parse_nodes(cf, &v, 6379);

        return rd->cluster ? NGX_OK : NGX_ERROR;
    }

    if (ngx_strncmp(param->data, "master=", 7) == 0) {
        rd->master.data = param->data + 7;
        rd->master.len = param->len - 7;

        if (rd->master.len == 0) {
            goto invalid;
        }

        return NGX_OK;
    }

    if (ngx_strncmp(param->data, "sentinel_user=", 14) == 0) {
        rd->sentinel_user.data = param->data + 14;
        rd->sentinel_user.len = param->len - 14;

        if (rd->sentinel_user.len == 0) {
            goto invalid;
        }

        return NGX_OK;
    }

    if (ngx_strncmp(param->data, "sentinel_password=", 18) == 0) {
        if (rd->sentinel_password.len) {
            goto twice;
        }

        rd->sentinel_password.data = param->data + 18;
        rd->sentinel_password.len = param->len - 18;

        if (rd->sentinel_password.len == 0) {
            goto invalid;
        }

        return NGX_OK;
    }

    if (ngx_strncmp(param->data, "sentinel_password_env=", 22) == 0) {
        if (rd->sentinel_password.len) {
            goto twice;
        }

        v.data = param->data + 22;
        v.len = param->len - 22;

        if (v.len == 0) {
            goto invalid;
        }

        return ngx_meshgate_redis_sentinel_env(cf, rd, &v);
    }

    return NGX_DECLINED;

duplicate:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "duplicate redis parameter \"%V\"", param);
    return NGX_ERROR;

twice:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "redis \"sentinel_password=\" and "
                       "\"sentinel_password_env=\" are given once, one "
                       "of them");
    return NGX_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid redis parameter \"%V\"", param);
    return NGX_ERROR;
}


/*
 * sentinel_password_env=NAME: the variable is read now, in the process
 * that reads the configuration, as password_env= is: the secret stays out
 * of nginx.conf.  The parameters are parsed in order and this one needs
 * nothing else, so it is read at once.
 */

static ngx_int_t
ngx_meshgate_redis_sentinel_env(ngx_conf_t *cf, ngx_meshgate_redis_t *rd,
    ngx_str_t *name)
{
    char       *env;
    ngx_str_t   var;

    var.data = ngx_pnalloc(cf->pool, name->len + 1);
    if (var.data == NULL) {
        return NGX_ERROR;
    }

    var.len = name->len;
    ngx_memcpy(var.data, name->data, name->len);
    var.data[var.len] = '\0';

    env = getenv((char *) var.data);

    if (env == NULL || *env == '\0') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis sentinel password environment variable "
                           "\"%V\" is not set", &var);
        return NGX_ERROR;
    }

    rd->sentinel_password.len = ngx_strlen(env);
    rd->sentinel_password.data = ngx_pnalloc(cf->pool,
                                             rd->sentinel_password.len);
    if (rd->sentinel_password.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(rd->sentinel_password.data, env, rd->sentinel_password.len);

    return NGX_OK;
}


/*
 * With sentinel= the primary is not configured but asked for, in each
 * worker, from the sentinels (ngx_meshgate_redis_discover()) through a
 * client of their own, to the first sentinel in the list at first.
 */

char *
ngx_meshgate_redis_init_sentinel(ngx_conf_t *cf, ngx_meshgate_redis_t *rd)
{
    ngx_addr_t            *addr;
    ngx_meshgate_redis_t  *sc, *sub;

    if (rd->sentinels == NULL) {
        if (rd->master.len || rd->sentinel_user.len
            || rd->sentinel_password.len)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "redis \"master=\", \"sentinel_user=\" and "
                               "\"sentinel_password=\" need \"sentinel=\"");
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (rd->sockaddr) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis \"server=\" and \"sentinel=\" are "
                           "mutually exclusive");
        return NGX_CONF_ERROR;
    }

    if (rd->master.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis \"sentinel=\" needs \"master=\" (the name "
                           "the sentinels monitor)");
        return NGX_CONF_ERROR;
    }

    if (rd->sentinel_user.len && rd->sentinel_password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis \"sentinel_user=\" needs "
                           "\"sentinel_password=\"");
        return NGX_CONF_ERROR;
    }

    if (rd->tls && rd->tls_name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis \"tls\" with \"sentinel=\" needs "
                           "\"tls_name=\": the name in the certificates "
                           "of the primaries and sentinels");
        return NGX_CONF_ERROR;
    }

    sc = ngx_meshgate_redis_create(cf);
    if (sc == NULL) {
        return NGX_CONF_ERROR;
    }

    addr = rd->sentinels->elts;

    sc->sockaddr = addr[0].sockaddr;
    sc->socklen = addr[0].socklen;
    sc->name = addr[0].name;
    sc->user = rd->sentinel_user;
    sc->password = rd->sentinel_password;
    sc->db = 0;

    /* SENTINEL get-master-addr-by-name: an address and a port, or nil */

    sc->limits.max_values = 3;
    sc->limits.max_depth = 1;
    sc->limits.max_bulk = NGX_SOCKADDR_STRLEN;

    rd->sentinel = sc;

    /*
     * the subscriber: SUBSCRIBE +switch-master on a sentinel, then
     * messages of three strings ("message", the channel, the text)
     */

    sub = ngx_meshgate_redis_create(cf);
    if (sub == NULL) {
        return NGX_CONF_ERROR;
    }

    *sub = *sc;
    sub->limits.max_values = 4;
    sub->limits.max_bulk = 512;
    sub->push = ngx_meshgate_redis_switch_master;
    sub->push_data = rd;

    rd->subscriber = sub;

    /* in messages until a primary is known */

    rd->name = rd->master;

    return NGX_CONF_OK;
}


/* asks the sentinels in turn, from the one that answered last */

ngx_int_t
ngx_meshgate_redis_discover(ngx_meshgate_redis_t *rd)
{
    size_t                 lens[3];
    ngx_int_t              rc;
    ngx_uint_t             i;
    ngx_addr_t            *addr;
    const char            *argv[3];
    ngx_meshgate_redis_t  *sc;

    sc = rd->sentinel;
    addr = rd->sentinels->elts;

    argv[0] = "SENTINEL";
    lens[0] = sizeof("SENTINEL") - 1;
    argv[1] = "get-master-addr-by-name";
    lens[1] = sizeof("get-master-addr-by-name") - 1;
    argv[2] = (const char *) rd->master.data;
    lens[2] = rd->master.len;

    while (rd->sentinel_tries++ < rd->sentinels->nelts) {
        i = rd->sentinel_next;

        if (sc->sockaddr != addr[i].sockaddr) {
            ngx_meshgate_redis_close_connection(sc);
            sc->sockaddr = addr[i].sockaddr;
            sc->socklen = addr[i].socklen;
            sc->name = addr[i].name;
        }

        /* the backoff is the data connection's, not the sentinels' */

        sc->down = 0;
        sc->backoff = NGX_MESHGATE_REDIS_BACKOFF_MIN;

        rc = ngx_meshgate_redis_command(sc, NULL, 3, argv, lens,
                                        ngx_meshgate_redis_sentinel_handler,
                                        rd, &rd->sentinel_cmd);

        if (rc == NGX_OK) {
            rd->discovering = 1;
            return NGX_OK;
        }

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        rd->sentinel_next = (i + 1) % rd->sentinels->nelts;
    }

    return NGX_DECLINED;
}


static void
ngx_meshgate_redis_sentinel_handler(void *data, ngx_int_t status,
    redisReply *reply)
{
    ngx_meshgate_redis_t  *rd = data;

    rd->sentinel_cmd = NULL;

    if (status == NGX_MESHGATE_REDIS_OK
        && ngx_meshgate_redis_primary(rd, reply) == NGX_OK)
    {
        rd->discovering = 0;
        rd->primary_known = 1;

        ngx_meshgate_redis_subscribe(rd);

        if (ngx_meshgate_redis_connect(rd) != NGX_OK
            && !ngx_queue_empty(&rd->pending))
        {
            ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                          NULL);
        }

        return;
    }

    rd->sentinel_next = (rd->sentinel_next + 1) % rd->sentinels->nelts;

    switch (ngx_meshgate_redis_discover(rd)) {

    case NGX_OK:
        return;

    default:
        rd->discovering = 0;
        ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                      "no sentinel named the primary");
    }
}


/*
 * Listens to the sentinel that answered for +switch-master: a failover
 * then makes the worker ask again before its next command, even if the
 * old primary still answers.  The subscription follows the sentinel that
 * answered: another one answers only when the one asked before failed,
 * and a sentinel that stopped answering (a hung process, a partition)
 * keeps its idle connection open, silent, with no event ever again.
 */

static void
ngx_meshgate_redis_subscribe(ngx_meshgate_redis_t *rd)
{
    ngx_meshgate_redis_t  *sub, *sc;

    static const char     *argv[] = { "SUBSCRIBE", "+switch-master" };
    static const size_t    lens[] = { 9, 14 };

    sub = rd->subscriber;
    sc = rd->sentinel;

    if (sub->conn) {
        if (sub->sockaddr == sc->sockaddr) {
            return;
        }

        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "redis master \"%V\": listening to sentinel %V "
                      "instead of %V", &rd->master, &sc->name, &sub->name);

        /* a SUBSCRIBE still unanswered fails with the old connection */

        ngx_meshgate_redis_disconnect(sub, NGX_MESHGATE_REDIS_ERROR, NULL);
    }

    sub->sockaddr = sc->sockaddr;
    sub->socklen = sc->socklen;
    sub->name = sc->name;
    sub->down = 0;
    sub->backoff = NGX_MESHGATE_REDIS_BACKOFF_MIN;

    (void) ngx_meshgate_redis_command(sub, NULL, 2, argv, lens,
                                      ngx_meshgate_redis_subscribed, rd,
                                      NULL);
}


static void
ngx_meshgate_redis_subscribed(void *data, ngx_int_t status,
    redisReply *reply)
{
    ngx_meshgate_redis_t  *rd = data;

    u_char     buf[NGX_MESHGATE_REDIS_ERROR_LEN];
    ngx_str_t  text;

    if (status == NGX_MESHGATE_REDIS_OK
        && reply->type == REDIS_REPLY_ARRAY)
    {
        return;
    }

    /* e.g. "NOPERM": the sentinel user may not read the channel */

    if (status != NGX_MESHGATE_REDIS_OK) {
        ngx_str_set(&text, "no answer");

    } else if (reply->type == REDIS_REPLY_ERROR) {
        text = ngx_meshgate_redis_error_text(reply, buf);

    } else {
        ngx_str_set(&text, "unexpected reply");
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "redis sentinel %V: SUBSCRIBE +switch-master failed: %V; "
                  "a failover is noticed by its errors only",
                  &rd->subscriber->name, &text);
}


/*
 * "message", "+switch-master", "<master> <old ip> <old port> <ip> <port>":
 * only the master's name is read; the sentinels are asked for the new
 * primary, as at first
 */

static void
ngx_meshgate_redis_switch_master(ngx_meshgate_redis_t *sub,
    redisReply *reply)
{
    redisReply            *kind, *channel;
    ngx_meshgate_redis_t  *rd;

    rd = sub->push_data;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) {
        return;
    }

    kind = reply->element[0];
    channel = reply->element[1];

    if (kind->type != REDIS_REPLY_STRING
        || kind->len != sizeof("message") - 1
        || ngx_strncmp(kind->str, "message", kind->len) != 0
        || channel->type != REDIS_REPLY_STRING
        || channel->len != sizeof("+switch-master") - 1
        || ngx_strncmp(channel->str, "+switch-master", channel->len) != 0
        || reply->element[2]->type != REDIS_REPLY_STRING
        || reply->element[2]->len <= rd->master.len
        || ngx_strncmp(reply->element[2]->str, rd->master.data,
                       rd->master.len) != 0
        || reply->element[2]->str[rd->master.len] != ' ')
    {
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "redis master \"%V\": +switch-master from sentinel %V",
                  &rd->master, &sub->name);

    /* news: the next command asks the sentinels, backoff or not */

    rd->down = 0;
    rd->backoff = NGX_MESHGATE_REDIS_BACKOFF_MIN;

    if (rd->conn == NULL) {
        rd->primary_known = 0;
        return;
    }

    if (ngx_queue_empty(&rd->pending)) {
        ngx_meshgate_redis_close_connection(rd);
        rd->primary_known = 0;
        return;
    }

    ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                  "+switch-master, asking the sentinels "
                                  "again");
}


/* the sentinel's answer: an IP address and a port, or nil if unknown */

static ngx_int_t
ngx_meshgate_redis_primary(ngx_meshgate_redis_t *rd, redisReply *reply)
{
    u_char                 text[NGX_SOCKADDR_STRLEN];
    size_t                 len;
    ngx_int_t              port;
    ngx_sockaddr_t         sa;
    socklen_t              socklen;
    ngx_meshgate_redis_t  *sc;

    sc = rd->sentinel;

    if (reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis sentinel %V does not know master \"%V\"",
                      &sc->name, &rd->master);
        return NGX_ERROR;
    }

    port = ngx_atoi((u_char *) reply->element[1]->str,
                    reply->element[1]->len);

    if (ngx_meshgate_redis_parse_addr((u_char *) reply->element[0]->str,
                                      reply->element[0]->len, port, &sa,
                                      &socklen)
        != NGX_OK)
    {
        /* host names are not resolved here: the worker would block */

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis sentinel %V names no IP address and port for "
                      "master \"%V\" (resolve-hostnames?)",
                      &sc->name, &rd->master);
        return NGX_ERROR;
    }

    if (rd->primary_len
        && (rd->primary_len != socklen
            || ngx_memcmp(&rd->primary, &sa, socklen) != 0))
    {
        rd->stats.failovers++;

        len = ngx_sock_ntop(&sa.sockaddr, socklen, text, NGX_SOCKADDR_STRLEN,
                            1);

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "redis master \"%V\": the primary is now %*s "
                      "(was %V)", &rd->master, len, text, &rd->name);
    }

    rd->primary = sa;
    rd->primary_len = socklen;
    rd->sockaddr = &rd->primary.sockaddr;
    rd->socklen = socklen;
    rd->name.data = rd->primary_text;
    rd->name.len = ngx_sock_ntop(&sa.sockaddr, socklen, rd->primary_text,
                                 NGX_SOCKADDR_STRLEN, 1);

    return NGX_OK;
}


/*
 * Judges the reply to ROLE, sent on connect after AUTH and SELECT (the
 * dispatcher hands it nothing else): an array whose first element is
 * "master" on a primary.  Anything else refuses the node, a status reply
 * ("+OK") included: ROLE never answers one.
 */

ngx_uint_t
ngx_meshgate_redis_not_primary(redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY) {
        return 1;
    }

    return reply->elements == 0
           || reply->element[0]->type != REDIS_REPLY_STRING
           || reply->element[0]->len != 6
           || ngx_strncmp(reply->element[0]->str, "master", 6) != 0;
}
