
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>
#include <ngx_sha1.h>
#include "ngx_meshgate_redis.h"


#define NGX_MESHGATE_REDIS_BACKOFF_MIN   100
#define NGX_MESHGATE_REDIS_BACKOFF_MAX   1000
#define NGX_MESHGATE_REDIS_READ_SIZE     16384

/* reply limits: see ngx_meshgate_redis_limit_replies() */
#define NGX_MESHGATE_REDIS_MAX_DEPTH     7     /* hiredis 0.14 nests 7 */
#define NGX_MESHGATE_REDIS_MIN_LINE      1024  /* error texts */
#define NGX_MESHGATE_REDIS_MAX_DIGITS    18

#define NGX_MESHGATE_REDIS_SLOTS         16384
#define NGX_MESHGATE_REDIS_MAX_NODES     64    /* per cluster */

#define NGX_MESHGATE_REDIS_SCAN_TYPE     0
#define NGX_MESHGATE_REDIS_SCAN_LINE     1
#define NGX_MESHGATE_REDIS_SCAN_LF       2
#define NGX_MESHGATE_REDIS_SCAN_BULK     3


/*
 * Where the pre-scan of replies stands (ngx_meshgate_redis_scan()): the
 * bytes of a reply are checked against the limits before hiredis sees
 * them, so that hiredis never allocates for a count or a length that the
 * limits refuse.
 */

typedef struct {
    ngx_uint_t                      state;
    u_char                          type;
    unsigned                        neg:1;
    size_t                          line;      /* bytes of the line */
    ngx_uint_t                      digits;
    int64_t                         num;
    int64_t                         bulk;      /* bytes left, CRLF too */
    ngx_uint_t                      depth;
    ngx_uint_t                      values;    /* of the current reply */
    int64_t                         left[NGX_MESHGATE_REDIS_MAX_DEPTH + 1];
} ngx_meshgate_redis_scan_t;


struct ngx_meshgate_redis_script_s {
    ngx_str_t                       text;
    u_char                          sha[40];
};


struct ngx_meshgate_redis_cmd_s {
    ngx_queue_t                     queue;
    ngx_meshgate_redis_t           *rd;
    ngx_meshgate_redis_handler_pt   handler;   /* NULL: cancelled */
    void                           *data;
    ngx_pool_cleanup_t             *cleanup;
    ngx_event_t                     timer;

    /* EVALSHA: the formatted command, kept for the EVAL retry */
    ngx_meshgate_redis_script_t    *script;
    char                           *eval;
    size_t                          eval_len;
    size_t                          args_off;
    ngx_uint_t                      argc;
    unsigned                        retried:1;
    unsigned                        redirected:1;
};


struct ngx_meshgate_redis_s {
    /* configuration */
    ngx_str_t                       name;
    struct sockaddr                *sockaddr;
    socklen_t                       socklen;
    ngx_str_t                       user;
    ngx_str_t                       password;
    ngx_str_t                       password_env;
    ngx_int_t                       db;
    ngx_msec_t                      timeout;
    ngx_msec_t                      connect_timeout;
    ngx_str_t                       host;

    /* Sentinel: sentinel=, master=, sentinel_user=, sentinel_password= */
    ngx_array_t                    *sentinels;   /* of ngx_addr_t */
    ngx_str_t                       master;
    ngx_str_t                       sentinel_user;
    ngx_str_t                       sentinel_password;
    ngx_meshgate_redis_t           *sentinel;    /* the client to them */
    ngx_meshgate_redis_t           *subscriber;  /* +switch-master */
    void                          (*push)(ngx_meshgate_redis_t *rd,
                                          redisReply *reply);
    ngx_meshgate_redis_t           *push_data;

    /* Cluster: cluster= (seed nodes) */
    ngx_array_t                    *cluster;     /* of ngx_addr_t */
    ngx_meshgate_redis_t           *control;     /* CLUSTER SLOTS */
    ngx_meshgate_redis_t           *parent;      /* of a node's client */
    ngx_meshgate_redis_ready_pt     ready;
    void                           *ready_data;

    /* reply limits */
    ngx_uint_t                      max_values;
    ngx_uint_t                      max_depth;
    size_t                          max_bulk;

    /* TLS: tls, tls_verify=, tls_ca=, tls_name=, tls_cert=, tls_key= */
    ngx_ssl_t                      *ssl;
    ngx_int_t                       tls_verify;
    ngx_str_t                       tls_ca;
    ngx_str_t                       tls_name;
    ngx_str_t                       tls_cert;
    ngx_str_t                       tls_key;
    unsigned                        tls:1;

    /* per worker */
    ngx_connection_t               *conn;
    redisReader                    *reader;
    ngx_meshgate_redis_scan_t       scan;
    u_char                         *out;
    size_t                          out_len;
    size_t                          out_sent;
    size_t                          out_size;
    ngx_queue_t                     pending;
    ngx_queue_t                     free;
    ngx_event_t                     connect_timer;
    ngx_meshgate_redis_t          **nodes;
    ngx_uint_t                      nnodes;
    u_char                         *slots;       /* node + 1, or 0 */
    ngx_meshgate_redis_cmd_t       *control_cmd;
    ngx_uint_t                      control_next;
    ngx_uint_t                      control_tries;
    ngx_meshgate_redis_cmd_t       *sentinel_cmd;
    ngx_uint_t                      sentinel_next;   /* to ask first */
    ngx_uint_t                      sentinel_tries;
    ngx_sockaddr_t                  primary;
    socklen_t                       primary_len;
    u_char                          primary_text[NGX_SOCKADDR_STRLEN];
    ngx_meshgate_redis_stats_t      stats;
    ngx_msec_t                      down_until;
    ngx_msec_t                      backoff;
    ngx_uint_t                      generation;
    unsigned                        connecting:1;
    unsigned                        discovering:1;
    unsigned                        primary_known:1;
    unsigned                        map_known:1;
    unsigned                        down:1;
    unsigned                        initialized:1;
};


static ngx_int_t ngx_meshgate_redis_parse_server(ngx_conf_t *cf,
    ngx_meshgate_redis_t *rd, ngx_str_t *value);
static ngx_int_t ngx_meshgate_redis_parse_sentinel(ngx_conf_t *cf,
    ngx_meshgate_redis_t *rd, ngx_str_t *param);
static ngx_array_t *ngx_meshgate_redis_parse_nodes(ngx_conf_t *cf,
    ngx_str_t *list, in_port_t port);
static char *ngx_meshgate_redis_init_sentinel(ngx_conf_t *cf,
    ngx_meshgate_redis_t *rd);
static char *ngx_meshgate_redis_init_cluster(ngx_conf_t *cf,
    ngx_meshgate_redis_t *rd);
static ngx_meshgate_redis_t *ngx_meshgate_redis_cluster_node(
    ngx_meshgate_redis_t *rd, u_char *key, size_t len);
static ngx_int_t ngx_meshgate_redis_cluster_init(ngx_meshgate_redis_t *rd);
static ngx_int_t ngx_meshgate_redis_add_node(ngx_meshgate_redis_t *rd,
    struct sockaddr *sa, socklen_t socklen);
static ngx_int_t ngx_meshgate_redis_ask_slots(ngx_meshgate_redis_t *rd);
static void ngx_meshgate_redis_slots_handler(void *data, ngx_int_t status,
    redisReply *reply);
static ngx_int_t ngx_meshgate_redis_slots(ngx_meshgate_redis_t *rd,
    redisReply *reply);
static ngx_int_t ngx_meshgate_redis_redirect(ngx_meshgate_redis_t *rd,
    ngx_meshgate_redis_cmd_t *cmd, redisReply *reply);
static ngx_int_t ngx_meshgate_redis_parse_addr(u_char *ip, size_t len,
    ngx_int_t port, ngx_sockaddr_t *sa, socklen_t *socklen);
static ngx_uint_t ngx_meshgate_redis_slot(u_char *key, size_t len);
static void ngx_meshgate_redis_close_cluster(ngx_meshgate_redis_t *rd);
static ngx_int_t ngx_meshgate_redis_connect(ngx_meshgate_redis_t *rd);
static ngx_int_t ngx_meshgate_redis_discover(ngx_meshgate_redis_t *rd);
static void ngx_meshgate_redis_sentinel_handler(void *data,
    ngx_int_t status, redisReply *reply);
static ngx_int_t ngx_meshgate_redis_primary(ngx_meshgate_redis_t *rd,
    redisReply *reply);
static void ngx_meshgate_redis_subscribe(ngx_meshgate_redis_t *rd);
static void ngx_meshgate_redis_subscribed(void *data, ngx_int_t status,
    redisReply *reply);
static void ngx_meshgate_redis_switch_master(ngx_meshgate_redis_t *sub,
    redisReply *reply);
static ngx_int_t ngx_meshgate_redis_prepend_handshake(
    ngx_meshgate_redis_t *rd);
static ngx_uint_t ngx_meshgate_redis_not_primary(ngx_meshgate_redis_t *rd,
    redisReply *reply);
static ngx_uint_t ngx_meshgate_redis_no_socket(ngx_meshgate_redis_t *rd);
static ngx_int_t ngx_meshgate_redis_handshake(ngx_meshgate_redis_t *rd);
static void ngx_meshgate_redis_handshake_handler(void *data,
    ngx_int_t status, redisReply *reply);
static void ngx_meshgate_redis_disconnect(ngx_meshgate_redis_t *rd,
    ngx_int_t status, const char *why);
static ngx_int_t ngx_meshgate_redis_queue(ngx_meshgate_redis_t *rd,
    ngx_pool_t *pool, char *buf, size_t len,
    ngx_meshgate_redis_handler_pt handler, void *data,
    ngx_meshgate_redis_cmd_t **cmdp);
static ngx_int_t ngx_meshgate_redis_append(ngx_meshgate_redis_t *rd,
    const void *buf, size_t len);
static ngx_int_t ngx_meshgate_redis_reserve(ngx_meshgate_redis_t *rd,
    size_t len);
static void ngx_meshgate_redis_post_write(ngx_meshgate_redis_t *rd);
static void ngx_meshgate_redis_close_connection(ngx_meshgate_redis_t *rd);
static void ngx_meshgate_redis_free_cmd(ngx_meshgate_redis_cmd_t *cmd);
static void ngx_meshgate_redis_cleanup(void *data);
static void ngx_meshgate_redis_read_handler(ngx_event_t *rev);
static void ngx_meshgate_redis_write_handler(ngx_event_t *wev);
static ngx_int_t ngx_meshgate_redis_test_connect(ngx_meshgate_redis_t *rd);
static void ngx_meshgate_redis_connected(ngx_meshgate_redis_t *rd);
static ngx_int_t ngx_meshgate_redis_parse_tls(ngx_conf_t *cf,
    ngx_meshgate_redis_t *rd, ngx_str_t *param);
static ngx_int_t ngx_meshgate_redis_cstr(ngx_pool_t *pool, ngx_str_t *src,
    ngx_str_t *dst);
static char *ngx_meshgate_redis_init_tls(ngx_conf_t *cf,
    ngx_meshgate_redis_t *rd);
static ngx_int_t ngx_meshgate_redis_tls_start(ngx_meshgate_redis_t *rd);
static void ngx_meshgate_redis_tls_handshake_handler(ngx_connection_t *c);
static ngx_int_t ngx_meshgate_redis_tls_done(ngx_meshgate_redis_t *rd);
static void ngx_meshgate_redis_dispatch(ngx_meshgate_redis_t *rd,
    ngx_uint_t generation);
static ngx_int_t ngx_meshgate_redis_retry_eval(ngx_meshgate_redis_t *rd,
    ngx_meshgate_redis_cmd_t *cmd);
static void ngx_meshgate_redis_timeout_handler(ngx_event_t *ev);
static void ngx_meshgate_redis_connect_timeout_handler(ngx_event_t *ev);
static ssize_t ngx_meshgate_redis_scan(ngx_meshgate_redis_t *rd, u_char *buf,
    size_t len, const char **why);
static const char *ngx_meshgate_redis_scan_header(ngx_meshgate_redis_t *rd);
static void ngx_meshgate_redis_scan_done(ngx_meshgate_redis_scan_t *sc);


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
    rd->max_values = NGX_CONF_UNSET_UINT;
    rd->max_depth = NGX_CONF_UNSET_UINT;
    rd->max_bulk = NGX_CONF_UNSET_SIZE;

    return rd;
}


void
ngx_meshgate_redis_limit_replies(ngx_meshgate_redis_t *rd, ngx_uint_t values,
    ngx_uint_t depth, size_t bulk)
{
    rd->max_values = ngx_max(values, 1);
    rd->max_depth = ngx_min(depth, NGX_MESHGATE_REDIS_MAX_DEPTH);
    rd->max_bulk = bulk;
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


/* sentinel=host:port[,host:port...] master= sentinel_user= ..._password= */

static ngx_int_t
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
        rd->sentinel_password.data = param->data + 18;
        rd->sentinel_password.len = param->len - 18;
        return NGX_OK;
    }

    return NGX_DECLINED;

duplicate:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "duplicate redis parameter \"%V\"", param);
    return NGX_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid redis parameter \"%V\"", param);
    return NGX_ERROR;
}


/*
 * A list of nodes, host[:port] separated by commas; a host name is
 * resolved now (first address): a worker never resolves.
 */

static ngx_array_t *
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
    ngx_conf_init_uint_value(rd->max_values, 256);
    ngx_conf_init_uint_value(rd->max_depth, 1);
    ngx_conf_init_size_value(rd->max_bulk, 4096);

    if (rd->sentinels) {

        /* ROLE: "master", the offset, then per replica ip, port, offset */

        rd->max_values = ngx_max(rd->max_values, 3 + 4 * 64);
        rd->max_depth = ngx_max(rd->max_depth, 3);
        rd->max_bulk = ngx_max(rd->max_bulk, 64);
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


/*
 * With cluster= each worker learns the slot map (CLUSTER SLOTS) from the
 * nodes, through a client of its own, and opens one connection per
 * primary (a client per node, made in the worker after this one).
 */

static char *
ngx_meshgate_redis_init_cluster(ngx_conf_t *cf, ngx_meshgate_redis_t *rd)
{
    ngx_addr_t            *addr;
    ngx_meshgate_redis_t  *cc;

    if (rd->cluster == NULL) {
        return NGX_CONF_OK;
    }

    if (rd->sockaddr || rd->sentinels) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis \"cluster=\" excludes \"server=\" and "
                           "\"sentinel=\"");
        return NGX_CONF_ERROR;
    }

    if (rd->db != NGX_CONF_UNSET) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis \"db=\" is not supported with "
                           "\"cluster=\" (Redis Cluster has database 0 "
                           "only)");
        return NGX_CONF_ERROR;
    }

    if (rd->tls && rd->tls_name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis \"tls\" with \"cluster=\" needs "
                           "\"tls_name=\": the name in the certificates "
                           "of the nodes");
        return NGX_CONF_ERROR;
    }

    cc = ngx_meshgate_redis_create(cf);
    if (cc == NULL) {
        return NGX_CONF_ERROR;
    }

    addr = rd->cluster->elts;

    cc->sockaddr = addr[0].sockaddr;
    cc->socklen = addr[0].socklen;
    cc->name = addr[0].name;
    cc->user = rd->user;
    cc->password = rd->password;
    cc->db = 0;

    /*
     * CLUSTER SLOTS: per range of slots its bounds, then per node an
     * address, a port, an id and (Redis 7.2) a map of metadata
     */

    cc->max_values = 32768;
    cc->max_depth = 4;
    cc->max_bulk = 256;

    rd->control = cc;

    ngx_str_set(&rd->name, "cluster");

    return NGX_CONF_OK;
}


/*
 * With sentinel= the primary is not configured but asked for, in each
 * worker, from the sentinels (ngx_meshgate_redis_discover()) through a
 * client of their own, to the first sentinel in the list at first.
 */

static char *
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

    sc->max_values = 3;
    sc->max_depth = 1;
    sc->max_bulk = NGX_SOCKADDR_STRLEN;

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
    sub->max_values = 4;
    sub->max_bulk = 512;
    sub->push = ngx_meshgate_redis_switch_master;
    sub->push_data = rd;

    rd->subscriber = sub;

    /* in messages until a primary is known */

    rd->name = rd->master;

    return NGX_CONF_OK;
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


static char *
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


ngx_str_t
ngx_meshgate_redis_error_text(redisReply *reply, u_char *buf)
{
    u_char     *p, *s;
    size_t      i, n;
    ngx_str_t   text;

    s = (u_char *) reply->str;
    n = ngx_min((size_t) reply->len, NGX_MESHGATE_REDIS_ERROR_LEN);

    for (p = buf, i = 0; s && i < n; i++) {
        *p++ = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    }

    text.data = buf;
    text.len = p - buf;

    return text;
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


ngx_uint_t
ngx_meshgate_redis_is_down(ngx_meshgate_redis_t *rd)
{
    return rd->conn == NULL && rd->down
           && (ngx_msec_int_t) (rd->down_until - ngx_current_msec) > 0;
}


ngx_int_t
ngx_meshgate_redis_command(ngx_meshgate_redis_t *rd, ngx_pool_t *pool,
    int argc, const char **argv, const size_t *argvlen,
    ngx_meshgate_redis_handler_pt handler, void *data,
    ngx_meshgate_redis_cmd_t **cmd)
{
    int                        len;
    char                      *buf;
    ngx_int_t                  rc;
    ngx_meshgate_redis_cmd_t  *c;

    if (rd->cluster) {

        /* the node of the slot of the first key */

        rd = ngx_meshgate_redis_cluster_node(rd,
                                  argc > 1 ? (u_char *) argv[1] : NULL,
                                  argc > 1 ? argvlen[1] : 0);
        if (rd == NULL) {
            return NGX_DECLINED;
        }
    }

    if (rd->conn == NULL && !rd->discovering
        && ngx_meshgate_redis_connect(rd) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    len = redisFormatCommandArgv(&buf, argc, argv, argvlen);
    if (len < 0) {
        return NGX_ERROR;
    }

    rc = ngx_meshgate_redis_queue(rd, pool, buf, len, handler, data, &c);

    if (rc != NGX_OK || rd->parent == NULL) {
        redisFreeCommand(buf);

    } else {
        /* kept to send it again where MOVED or ASK says */
        c->eval = buf;
        c->eval_len = len;
    }

    if (rc == NGX_OK && cmd) {
        *cmd = c;
    }

    return rc;
}


ngx_int_t
ngx_meshgate_redis_eval(ngx_meshgate_redis_t *rd, ngx_pool_t *pool,
    ngx_meshgate_redis_script_t *script, int numkeys, int argc,
    const char **argv, const size_t *argvlen,
    ngx_meshgate_redis_handler_pt handler, void *data,
    ngx_meshgate_redis_cmd_t **cmdp)
{
    int                        i, len, n;
    char                      *buf;
    u_char                     nk[NGX_INT_T_LEN];
    size_t                    *lens;
    ngx_int_t                  rc;
    const char               **args;
    ngx_meshgate_redis_cmd_t  *cmd;

    if (rd->cluster) {
        rd = ngx_meshgate_redis_cluster_node(rd,
                                  numkeys ? (u_char *) argv[0] : NULL,
                                  numkeys ? argvlen[0] : 0);
        if (rd == NULL) {
            return NGX_DECLINED;
        }
    }

    if (rd->conn == NULL && !rd->discovering
        && ngx_meshgate_redis_connect(rd) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    n = argc + 3;

    args = ngx_alloc(n * (sizeof(char *) + sizeof(size_t)), ngx_cycle->log);
    if (args == NULL) {
        return NGX_ERROR;
    }

    lens = (size_t *) (args + n);

    args[0] = "EVALSHA";
    lens[0] = 7;
    args[1] = (const char *) script->sha;
    lens[1] = 40;
    args[2] = (const char *) nk;
    lens[2] = ngx_sprintf(nk, "%d", numkeys) - nk;

    for (i = 0; i < argc; i++) {
        args[i + 3] = argv[i];
        lens[i + 3] = argvlen[i];
    }

    len = redisFormatCommandArgv(&buf, n, args, lens);

    ngx_free(args);

    if (len < 0) {
        return NGX_ERROR;
    }

    rc = ngx_meshgate_redis_queue(rd, pool, buf, len, handler, data, &cmd);

    if (rc != NGX_OK) {
        redisFreeCommand(buf);
        return rc;
    }

    /* "*N\r\n" "$7\r\nEVALSHA\r\n" "$40\r\n<sha>\r\n" then the arguments */

    cmd->script = script;
    cmd->eval = buf;
    cmd->eval_len = len;
    cmd->argc = n;
    cmd->args_off = (ngx_strchr(buf, '\n') - buf + 1) + 13 + 47;

    if (cmdp) {
        *cmdp = cmd;
    }

    return NGX_OK;
}


void
ngx_meshgate_redis_cancel(ngx_meshgate_redis_cmd_t *cmd)
{
    cmd->handler = NULL;

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    if (cmd->cleanup) {
        cmd->cleanup->handler = NULL;
        cmd->cleanup = NULL;
    }
}


static void
ngx_meshgate_redis_cleanup(void *data)
{
    ngx_meshgate_redis_cmd_t  *cmd = data;

    cmd->cleanup = NULL;
    ngx_meshgate_redis_cancel(cmd);
}


static ngx_int_t
ngx_meshgate_redis_queue(ngx_meshgate_redis_t *rd, ngx_pool_t *pool,
    char *buf, size_t len, ngx_meshgate_redis_handler_pt handler,
    void *data, ngx_meshgate_redis_cmd_t **cmdp)
{
    ngx_queue_t               *q;
    ngx_pool_cleanup_t        *cln;
    ngx_meshgate_redis_cmd_t  *cmd;

    cln = NULL;

    if (pool) {
        cln = ngx_pool_cleanup_add(pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }
    }

    if (!ngx_queue_empty(&rd->free)) {
        q = ngx_queue_head(&rd->free);
        ngx_queue_remove(q);
        cmd = ngx_queue_data(q, ngx_meshgate_redis_cmd_t, queue);

    } else {
        cmd = ngx_alloc(sizeof(ngx_meshgate_redis_cmd_t), ngx_cycle->log);
        if (cmd == NULL) {
            return NGX_ERROR;
        }
    }

    if (ngx_meshgate_redis_append(rd, buf, len) != NGX_OK) {
        ngx_queue_insert_head(&rd->free, &cmd->queue);
        return NGX_ERROR;
    }

    ngx_memzero(cmd, sizeof(ngx_meshgate_redis_cmd_t));

    cmd->rd = rd;
    cmd->handler = handler;
    cmd->data = data;

    if (cln) {
        cln->handler = ngx_meshgate_redis_cleanup;
        cln->data = cmd;
        cmd->cleanup = cln;
    }

    if (handler != ngx_meshgate_redis_handshake_handler) {
        cmd->timer.handler = ngx_meshgate_redis_timeout_handler;
        cmd->timer.data = cmd;
        cmd->timer.log = ngx_cycle->log;
        ngx_add_timer(&cmd->timer, rd->timeout);
    }

    ngx_queue_insert_tail(&rd->pending, &cmd->queue);

    ngx_meshgate_redis_post_write(rd);

    if (cmdp) {
        *cmdp = cmd;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_meshgate_redis_append(ngx_meshgate_redis_t *rd, const void *buf,
    size_t len)
{
    if (ngx_meshgate_redis_reserve(rd, len) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memcpy(rd->out + rd->out_len, buf, len);
    rd->out_len += len;

    return NGX_OK;
}


/* room for len more bytes in the output buffer */

static ngx_int_t
ngx_meshgate_redis_reserve(ngx_meshgate_redis_t *rd, size_t len)
{
    u_char  *p;
    size_t   size;

    if (rd->out_sent == rd->out_len) {
        rd->out_sent = 0;
        rd->out_len = 0;
    }

    if (rd->out_len + len <= rd->out_size) {
        return NGX_OK;
    }

    if (rd->out_len - rd->out_sent + len <= rd->out_size) {

        /* what is sent makes room: the buffer grows only with the backlog */

        ngx_memmove(rd->out, rd->out + rd->out_sent,
                    rd->out_len - rd->out_sent);
        rd->out_len -= rd->out_sent;
        rd->out_sent = 0;

        return NGX_OK;
    }

    size = ngx_max(rd->out_size * 2, 4096);

    while (size < rd->out_len - rd->out_sent + len) {
        size *= 2;
    }

    p = ngx_alloc(size, ngx_cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (rd->out) {
        ngx_memcpy(p, rd->out + rd->out_sent,
                   rd->out_len - rd->out_sent);
        ngx_free(rd->out);
    }

    rd->out_len -= rd->out_sent;
    rd->out_sent = 0;
    rd->out = p;
    rd->out_size = size;

    return NGX_OK;
}


static void
ngx_meshgate_redis_post_write(ngx_meshgate_redis_t *rd)
{
    ngx_event_t  *wev;

    if (rd->conn == NULL || rd->connecting) {
        return;
    }

    wev = rd->conn->write;

    if (!wev->posted) {
        ngx_post_event(wev, &ngx_posted_events);
    }
}


static ngx_int_t
ngx_meshgate_redis_connect(ngx_meshgate_redis_t *rd)
{
    ngx_int_t              rc;
    ngx_connection_t      *c;
    ngx_peer_connection_t  pc;

    if (!rd->initialized) {
        ngx_queue_init(&rd->pending);
        ngx_queue_init(&rd->free);
        rd->backoff = NGX_MESHGATE_REDIS_BACKOFF_MIN;
        rd->initialized = 1;
    }

    if (ngx_meshgate_redis_is_down(rd)) {
        return NGX_DECLINED;
    }

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return NGX_DECLINED;
    }

    if (rd->sentinels && !rd->primary_known) {
        rd->sentinel_tries = 0;

        rc = ngx_meshgate_redis_discover(rd);

        if (rc == NGX_DECLINED) {
            ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                          "no sentinel could be asked");
        }

        return rc;
    }

    if (ngx_meshgate_redis_no_socket(rd)) {
        ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR, NULL);
        return NGX_DECLINED;
    }

    ngx_memzero(&pc, sizeof(ngx_peer_connection_t));

    pc.sockaddr = rd->sockaddr;
    pc.socklen = rd->socklen;
    pc.name = &rd->name;
    pc.get = ngx_event_get_peer;
    pc.log = ngx_cycle->log;
    pc.log_error = NGX_ERROR_ERR;

    rc = ngx_event_connect_peer(&pc);

    if (rc != NGX_OK && rc != NGX_AGAIN) {
        if (pc.connection) {
            ngx_close_connection(pc.connection);
        }

        rd->generation++;
        ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR, NULL);
        return NGX_DECLINED;
    }

    c = pc.connection;
    c->data = rd;
    c->log = ngx_cycle->log;
    c->read->handler = ngx_meshgate_redis_read_handler;
    c->write->handler = ngx_meshgate_redis_write_handler;

    rd->reader = redisReaderCreate();
    if (rd->reader == NULL) {
        ngx_close_connection(c);
        return NGX_DECLINED;
    }

    ngx_memzero(&rd->scan, sizeof(ngx_meshgate_redis_scan_t));

    rd->conn = c;
    rd->generation++;
    rd->connecting = (rc == NGX_AGAIN || rd->ssl != NULL);

    if (rd->connecting) {
        rd->connect_timer.handler = ngx_meshgate_redis_connect_timeout_handler;
        rd->connect_timer.data = rd;
        rd->connect_timer.log = ngx_cycle->log;
        ngx_add_timer(&rd->connect_timer, rd->connect_timeout);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "redis %V: connecting", &rd->name);

    if (ngx_meshgate_redis_prepend_handshake(rd) != NGX_OK
        || (rc == NGX_OK && rd->ssl
            && ngx_meshgate_redis_tls_start(rd) == NGX_ERROR))
    {
        ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR, NULL);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* nginx logs a failed connect() to a missing socket file at "crit" */

static ngx_uint_t
ngx_meshgate_redis_no_socket(ngx_meshgate_redis_t *rd)
{
#if (NGX_HAVE_UNIX_DOMAIN)

    if (rd->sockaddr->sa_family == AF_UNIX
        && access(((struct sockaddr_un *) rd->sockaddr)->sun_path, F_OK)
           == -1)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, ngx_errno,
                      "redis %V: no socket", &rd->name);
        return 1;
    }

#endif

    return 0;
}


static ngx_int_t
ngx_meshgate_redis_handshake(ngx_meshgate_redis_t *rd)
{
    int          argc, len;
    char        *buf;
    u_char       db[NGX_INT_T_LEN];
    size_t       lens[3];
    ngx_int_t    rc;
    const char  *argv[3];

    if (rd->password.len) {
        argc = 0;
        argv[argc] = "AUTH";
        lens[argc++] = 4;

        if (rd->user.len) {
            argv[argc] = (const char *) rd->user.data;
            lens[argc++] = rd->user.len;
        }

        argv[argc] = (const char *) rd->password.data;
        lens[argc++] = rd->password.len;

        len = redisFormatCommandArgv(&buf, argc, argv, lens);
        if (len < 0) {
            return NGX_ERROR;
        }

        rc = ngx_meshgate_redis_queue(rd, NULL, buf, len,
                                      ngx_meshgate_redis_handshake_handler,
                                      "AUTH", NULL);
        redisFreeCommand(buf);

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (rd->db) {
        argv[0] = "SELECT";
        lens[0] = 6;
        argv[1] = (const char *) db;
        lens[1] = ngx_sprintf(db, "%i", rd->db) - db;

        len = redisFormatCommandArgv(&buf, 2, argv, lens);
        if (len < 0) {
            return NGX_ERROR;
        }

        rc = ngx_meshgate_redis_queue(rd, NULL, buf, len,
                                      ngx_meshgate_redis_handshake_handler,
                                      "SELECT", NULL);
        redisFreeCommand(buf);

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (rd->sentinels) {

        /* what a sentinel named may have been demoted since: ask it */

        static char  role[] = "*1\r\n$4\r\nROLE\r\n";

        if (ngx_meshgate_redis_queue(rd, NULL, role, sizeof(role) - 1,
                                     ngx_meshgate_redis_handshake_handler,
                                     "ROLE", NULL)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * Commands queued while the sentinels were asked go after the handshake
 * of the connection to the primary they named.
 */

static ngx_int_t
ngx_meshgate_redis_prepend_handshake(ngx_meshgate_redis_t *rd)
{
    u_char       *out;
    size_t        sent, len;
    ngx_int_t     rc;
    ngx_queue_t   q;

    if (rd->out_len == rd->out_sent && ngx_queue_empty(&rd->pending)) {
        rd->out_len = 0;
        rd->out_sent = 0;
        return ngx_meshgate_redis_handshake(rd);
    }

    out = rd->out;
    sent = rd->out_sent;
    len = rd->out_len - rd->out_sent;

    ngx_queue_init(&q);

    if (!ngx_queue_empty(&rd->pending)) {
        q = rd->pending;
        q.next->prev = &q;
        q.prev->next = &q;
        ngx_queue_init(&rd->pending);
    }

    rd->out = NULL;
    rd->out_size = 0;
    rd->out_len = 0;
    rd->out_sent = 0;

    rc = ngx_meshgate_redis_handshake(rd);

    if (rc == NGX_OK && len) {
        rc = ngx_meshgate_redis_append(rd, out + sent, len);
    }

    if (out) {
        ngx_free(out);
    }

    if (!ngx_queue_empty(&q)) {
        ngx_queue_add(&rd->pending, &q);
    }

    return rc;
}


/* data is the command name, for messages */

static void
ngx_meshgate_redis_handshake_handler(void *data, ngx_int_t status,
    redisReply *reply)
{
    (void) data;
    (void) status;
    (void) reply;

    /* errors are handled in ngx_meshgate_redis_dispatch() */
}


static void
ngx_meshgate_redis_disconnect(ngx_meshgate_redis_t *rd, ngx_int_t status,
    const char *why)
{
    void                           *data;
    ngx_queue_t                     q, *h;
    ngx_meshgate_redis_cmd_t       *cmd;
    ngx_meshgate_redis_handler_pt   handler;

    if (why) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis %V: %s, failing fast for %M ms",
                      &rd->name, why, rd->backoff);
    }

    ngx_meshgate_redis_close_connection(rd);

    /* with Sentinel, every outage asks the sentinels again */

    if (rd->sentinel_cmd) {
        ngx_meshgate_redis_cancel(rd->sentinel_cmd);
        rd->sentinel_cmd = NULL;
    }

    rd->discovering = 0;
    rd->primary_known = 0;

    /* a node lost: the slot map may have changed (a failover) */

    if (rd->parent && rd->parent->slots && !ngx_exiting && !ngx_quit) {
        rd->parent->control_tries = 0;
        (void) ngx_meshgate_redis_ask_slots(rd->parent);
    }

    rd->down = 1;
    rd->down_until = ngx_current_msec + rd->backoff;
    rd->backoff = ngx_min(rd->backoff * 2, NGX_MESHGATE_REDIS_BACKOFF_MAX);

    if (!rd->initialized || ngx_queue_empty(&rd->pending)) {
        return;
    }

    /* handlers may issue commands: they fail at once while down */

    q = rd->pending;
    q.next->prev = &q;
    q.prev->next = &q;
    ngx_queue_init(&rd->pending);

    while (!ngx_queue_empty(&q)) {
        h = ngx_queue_head(&q);
        cmd = ngx_queue_data(h, ngx_meshgate_redis_cmd_t, queue);
        ngx_queue_remove(h);

        handler = cmd->handler;
        data = cmd->data;

        ngx_meshgate_redis_free_cmd(cmd);

        if (handler && handler != ngx_meshgate_redis_handshake_handler) {
            handler(data, status, NULL);
        }
    }
}


static void
ngx_meshgate_redis_close_connection(ngx_meshgate_redis_t *rd)
{
    ngx_pool_t  *pool;

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    if (rd->conn) {
        if (rd->conn->ssl) {
            rd->conn->ssl->no_wait_shutdown = 1;
            (void) ngx_ssl_shutdown(rd->conn);
        }

        pool = rd->conn->pool;

        ngx_close_connection(rd->conn);
        rd->conn = NULL;

        if (pool) {
            ngx_destroy_pool(pool);
        }
    }

    if (rd->reader) {
        redisReaderFree(rd->reader);
        rd->reader = NULL;
    }

    rd->generation++;
    rd->connecting = 0;
    rd->out_len = 0;
    rd->out_sent = 0;
}


static void
ngx_meshgate_redis_free_cmd(ngx_meshgate_redis_cmd_t *cmd)
{
    ngx_meshgate_redis_cancel(cmd);

    if (cmd->eval) {
        redisFreeCommand(cmd->eval);
        cmd->eval = NULL;
    }

    ngx_queue_insert_head(&cmd->rd->free, &cmd->queue);
}


static void
ngx_meshgate_redis_timeout_handler(ngx_event_t *ev)
{
    ngx_meshgate_redis_cmd_t  *cmd = ev->data;

    void                           *data;
    ngx_meshgate_redis_handler_pt   handler;

    if (cmd->rd->discovering) {

        /*
         * the sentinels are slow, not Redis: this command fails alone,
         * and stays queued for its reply to be discarded
         */

        handler = cmd->handler;
        data = cmd->data;

        ngx_meshgate_redis_cancel(cmd);
        handler(data, NGX_MESHGATE_REDIS_TIMEOUT, NULL);

        return;
    }

    ngx_meshgate_redis_disconnect(cmd->rd, NGX_MESHGATE_REDIS_TIMEOUT,
                                  "command timed out");
}


static void
ngx_meshgate_redis_connect_timeout_handler(ngx_event_t *ev)
{
    ngx_meshgate_redis_t  *rd = ev->data;

    ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_TIMEOUT,
                                  "connect timed out");
}


static ngx_int_t
ngx_meshgate_redis_test_connect(ngx_meshgate_redis_t *rd)
{
    int        err;
    socklen_t  len;

    if (!rd->connecting) {
        return NGX_OK;
    }

    if (rd->conn->ssl) {
        /* the TLS handshake is under way */
        return NGX_AGAIN;
    }

    err = 0;
    len = sizeof(int);

    if (getsockopt(rd->conn->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len)
        == -1)
    {
        err = ngx_socket_errno;
    }

    if (err) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, err,
                      "redis %V: connect() failed", &rd->name);
        ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR, NULL);
        return NGX_ERROR;
    }

    if (rd->ssl == NULL) {
        ngx_meshgate_redis_connected(rd);
        return NGX_OK;
    }

    switch (ngx_meshgate_redis_tls_start(rd)) {

    case NGX_OK:
        return NGX_OK;

    case NGX_AGAIN:
        return NGX_AGAIN;

    default:
        ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                      "TLS handshake failed");
        return NGX_ERROR;
    }
}


static void
ngx_meshgate_redis_connected(ngx_meshgate_redis_t *rd)
{
    rd->connecting = 0;

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "redis %V: connected%s", &rd->name,
                   rd->ssl ? " over TLS" : "");
}


/*
 * TLS runs on the connected socket before any command goes; the connect
 * timer (connect_timeout=) covers the handshake too, and commands wait in
 * the output buffer meanwhile.
 */

static ngx_int_t
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


static void
ngx_meshgate_redis_write_handler(ngx_event_t *wev)
{
    ssize_t                n;
    ngx_connection_t      *c;
    ngx_meshgate_redis_t  *rd;

    c = wev->data;
    rd = c->data;

    if (ngx_meshgate_redis_test_connect(rd) != NGX_OK) {
        return;
    }

    while (rd->out_sent < rd->out_len) {
        n = c->send(c, rd->out + rd->out_sent, rd->out_len - rd->out_sent);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                              "write event failed");
            }

            return;
        }

        if (n == NGX_ERROR) {
            ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                          "connection lost while writing");
            return;
        }

        rd->out_sent += n;
    }

    rd->out_sent = 0;
    rd->out_len = 0;
}


static void
ngx_meshgate_redis_read_handler(ngx_event_t *rev)
{
    u_char                 buf[NGX_MESHGATE_REDIS_READ_SIZE];
    ssize_t                n, size;
    ngx_uint_t             generation;
    const char            *why;
    ngx_connection_t      *c;
    ngx_meshgate_redis_t  *rd;

    c = rev->data;
    rd = c->data;

    if (ngx_meshgate_redis_test_connect(rd) != NGX_OK) {
        return;
    }

    if (rd->out_sent < rd->out_len && !c->write->posted) {
        ngx_post_event(c->write, &ngx_posted_events);
    }

    generation = rd->generation;
    why = NULL;

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                              "read event failed");
            }

            return;
        }

        if ((n == 0 || n == NGX_ERROR) && ngx_queue_empty(&rd->pending)) {

            /*
             * closed while idle (Redis's "timeout", a proxy, CLIENT KILL):
             * not an outage; the next command connects again
             */

            ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                          "redis %V: idle connection closed", &rd->name);
            ngx_meshgate_redis_close_connection(rd);

            /* the primary may have gone: the sentinels know */

            rd->primary_known = 0;
            return;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                          n == 0 ? "connection closed"
                                                 : "connection lost");
            return;
        }

        /* only the bytes within the reply limits reach hiredis */

        size = ngx_meshgate_redis_scan(rd, buf, n, &why);

        if (size && redisReaderFeed(rd->reader, (const char *) buf, size)
                    != REDIS_OK)
        {
            ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                          "out of memory");
            return;
        }

        ngx_meshgate_redis_dispatch(rd, generation);

        if (rd->generation != generation) {
            return;
        }

        if (size < n) {
            ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR, why);
            return;
        }
    }
}


/*
 * Checks the bytes of replies against the limits before they reach
 * hiredis, which would otherwise allocate for any element count it reads
 * (calloc of 16 GiB for "*2147483647") and buffer any line or bulk string
 * whole, however long.  Each reply may hold at most max_values values in
 * all, arrays nested max_depth deep, bulk strings of max_bulk bytes and
 * lines of max(max_bulk, 1024) bytes.  Returns how many bytes are within
 * the limits; if fewer than len, *why says what was exceeded.
 */

static ssize_t
ngx_meshgate_redis_scan(ngx_meshgate_redis_t *rd, u_char *buf, size_t len,
    const char **why)
{
    u_char                     *p, *end, c;
    size_t                      max_line;
    ngx_meshgate_redis_scan_t  *sc;

    sc = &rd->scan;
    max_line = ngx_max(rd->max_bulk, NGX_MESHGATE_REDIS_MIN_LINE);

    for (p = buf, end = buf + len; p < end; /* void */) {

        switch (sc->state) {

        case NGX_MESHGATE_REDIS_SCAN_TYPE:
            c = *p++;

            if (c != '+' && c != '-' && c != ':' && c != '$' && c != '*') {
                *why = "protocol error (unknown reply type)";
                return p - 1 - buf;
            }

            if (++sc->values > rd->max_values) {
                *why = "reply with too many values";
                return p - 1 - buf;
            }

            sc->type = c;
            sc->line = 0;
            sc->digits = 0;
            sc->num = 0;
            sc->neg = 0;
            sc->state = NGX_MESHGATE_REDIS_SCAN_LINE;
            break;

        case NGX_MESHGATE_REDIS_SCAN_LINE:
            c = *p++;

            if (c == '\r') {
                sc->state = NGX_MESHGATE_REDIS_SCAN_LF;
                break;
            }

            if (++sc->line > max_line) {
                *why = "reply line too long";
                return p - 1 - buf;
            }

            if (sc->type != '$' && sc->type != '*') {
                break;
            }

            if (c == '-' && sc->line == 1) {
                sc->neg = 1;
                break;
            }

            if (c < '0' || c > '9'
                || ++sc->digits > NGX_MESHGATE_REDIS_MAX_DIGITS)
            {
                *why = "protocol error (bad length)";
                return p - 1 - buf;
            }

            sc->num = sc->num * 10 + (c - '0');
            break;

        case NGX_MESHGATE_REDIS_SCAN_LF:
            if (*p++ != '\n') {
                *why = "protocol error (no LF after CR)";
                return p - 1 - buf;
            }

            *why = ngx_meshgate_redis_scan_header(rd);

            if (*why) {
                return p - 1 - buf;
            }

            break;

        default: /* NGX_MESHGATE_REDIS_SCAN_BULK */

            if (end - p < sc->bulk) {
                sc->bulk -= end - p;
                p = end;
                break;
            }

            p += sc->bulk;
            ngx_meshgate_redis_scan_done(sc);
        }
    }

    return len;
}


/* the line of a value is complete: NULL, or what the value exceeds */

static const char *
ngx_meshgate_redis_scan_header(ngx_meshgate_redis_t *rd)
{
    ngx_meshgate_redis_scan_t  *sc;

    sc = &rd->scan;

    if (sc->type != '$' && sc->type != '*') {
        ngx_meshgate_redis_scan_done(sc);
        return NULL;
    }

    if (sc->digits == 0 || (sc->neg && sc->num != 1)) {
        return "protocol error (bad length)";
    }

    if (sc->neg) {
        /* a nil bulk string or array */
        ngx_meshgate_redis_scan_done(sc);
        return NULL;
    }

    if (sc->type == '$') {
        if ((uint64_t) sc->num > rd->max_bulk) {
            return "reply with a too long bulk string";
        }

        sc->bulk = sc->num + 2;
        sc->state = NGX_MESHGATE_REDIS_SCAN_BULK;
        return NULL;
    }

    if ((uint64_t) sc->num > rd->max_values - sc->values) {
        return "reply with too many values";
    }

    if (sc->num == 0) {
        ngx_meshgate_redis_scan_done(sc);
        return NULL;
    }

    if (sc->depth == rd->max_depth) {
        return "reply nested too deep";
    }

    sc->left[++sc->depth] = sc->num;
    sc->state = NGX_MESHGATE_REDIS_SCAN_TYPE;

    return NULL;
}


/* a value is complete: so may be the arrays around it and the reply */

static void
ngx_meshgate_redis_scan_done(ngx_meshgate_redis_scan_t *sc)
{
    sc->state = NGX_MESHGATE_REDIS_SCAN_TYPE;

    while (sc->depth) {
        if (--sc->left[sc->depth]) {
            return;
        }

        sc->depth--;
    }

    sc->values = 0;
}


static void
ngx_meshgate_redis_dispatch(ngx_meshgate_redis_t *rd, ngx_uint_t generation)
{
    void                           *data;
    redisReply                     *reply;
    u_char                          buf[NGX_MESHGATE_REDIS_ERROR_LEN];
    ngx_str_t                       text;
    ngx_uint_t                      demoted;
    ngx_queue_t                    *q;
    ngx_meshgate_redis_cmd_t       *cmd;
    ngx_meshgate_redis_handler_pt   handler;

    while (rd->generation == generation) {

        reply = NULL;

        if (redisReaderGetReply(rd->reader, (void **) &reply) != REDIS_OK) {
            ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                          "protocol error");
            return;
        }

        if (reply == NULL) {
            return;
        }

        if (ngx_queue_empty(&rd->pending) && rd->push) {
            rd->push(rd, reply);
            freeReplyObject(reply);
            continue;
        }

        if (ngx_queue_empty(&rd->pending)) {
            freeReplyObject(reply);
            ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                          "unexpected reply");
            return;
        }

        rd->backoff = NGX_MESHGATE_REDIS_BACKOFF_MIN;
        rd->down = 0;

        q = ngx_queue_head(&rd->pending);
        ngx_queue_remove(q);
        cmd = ngx_queue_data(q, ngx_meshgate_redis_cmd_t, queue);

        handler = cmd->handler;
        data = cmd->data;

        if (handler == ngx_meshgate_redis_handshake_handler) {
            ngx_meshgate_redis_free_cmd(cmd);

            if (reply->type == REDIS_REPLY_ERROR) {
                text = ngx_meshgate_redis_error_text(reply, buf);

                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "redis %V: %s failed: %V", &rd->name,
                              (char *) data, &text);
                freeReplyObject(reply);
                ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                              NULL);
                return;
            }

            if (ngx_meshgate_redis_not_primary(rd, reply)) {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "redis %V: not the primary (any more)",
                              &rd->name);
                freeReplyObject(reply);
                ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                              NULL);
                return;
            }

            freeReplyObject(reply);
            continue;
        }

        if (handler
            && rd->parent
            && cmd->eval
            && !cmd->redirected
            && reply->type == REDIS_REPLY_ERROR
            && ngx_meshgate_redis_redirect(rd, cmd, reply) == NGX_OK)
        {
            freeReplyObject(reply);
            continue;
        }

        if (handler
            && cmd->script
            && !cmd->retried
            && reply->type == REDIS_REPLY_ERROR
            && reply->len >= 8
            && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
        {
            freeReplyObject(reply);

            if (ngx_meshgate_redis_retry_eval(rd, cmd) == NGX_OK) {
                continue;
            }

            ngx_meshgate_redis_free_cmd(cmd);
            handler(data, NGX_MESHGATE_REDIS_ERROR, NULL);
            continue;
        }

        ngx_meshgate_redis_free_cmd(cmd);

        demoted = rd->sentinels
                  && reply->type == REDIS_REPLY_ERROR
                  && ((reply->len >= 8
                       && ngx_strncmp(reply->str, "READONLY", 8) == 0)
                      || (reply->len >= 10
                          && ngx_strncmp(reply->str, "MASTERDOWN", 10)
                             == 0));

        if (handler) {
            handler(data, NGX_MESHGATE_REDIS_OK, reply);
        }

        freeReplyObject(reply);

        if (demoted && rd->generation == generation) {
            ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                          "READONLY or MASTERDOWN, asking "
                                          "the sentinels again");
            return;
        }
    }
}


static ngx_int_t
ngx_meshgate_redis_retry_eval(ngx_meshgate_redis_t *rd,
    ngx_meshgate_redis_cmd_t *cmd)
{
    u_char                       head[NGX_INT_T_LEN * 2 + 32], *p;
    ngx_meshgate_redis_script_t  *script;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "redis %V: NOSCRIPT, sending EVAL", &rd->name);

    script = cmd->script;

    p = ngx_sprintf(head, "*%ui\r\n$4\r\nEVAL\r\n$%uz\r\n",
                    cmd->argc, script->text.len);

    /* room for the whole command first: never half a command in the pipe */

    if (ngx_meshgate_redis_reserve(rd, (p - head) + script->text.len + 2
                                       + cmd->eval_len - cmd->args_off)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    (void) ngx_meshgate_redis_append(rd, head, p - head);
    (void) ngx_meshgate_redis_append(rd, script->text.data,
                                     script->text.len);
    (void) ngx_meshgate_redis_append(rd, "\r\n", 2);
    (void) ngx_meshgate_redis_append(rd, cmd->eval + cmd->args_off,
                                     cmd->eval_len - cmd->args_off);

    cmd->retried = 1;
    ngx_queue_insert_tail(&rd->pending, &cmd->queue);
    ngx_meshgate_redis_post_write(rd);

    return NGX_OK;
}


void
ngx_meshgate_redis_close(ngx_meshgate_redis_t *rd)
{
    ngx_queue_t               *q;
    ngx_meshgate_redis_cmd_t  *cmd;

    if (rd->sentinel) {
        ngx_meshgate_redis_close(rd->sentinel);
        ngx_meshgate_redis_close(rd->subscriber);
    }

    ngx_meshgate_redis_close_cluster(rd);

    if (!rd->initialized) {
        return;
    }

    /* the worker is exiting: no handler runs any more */

    for (q = ngx_queue_head(&rd->pending);
         q != ngx_queue_sentinel(&rd->pending);
         q = ngx_queue_next(q))
    {
        cmd = ngx_queue_data(q, ngx_meshgate_redis_cmd_t, queue);
        ngx_meshgate_redis_cancel(cmd);
    }

    ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR, NULL);

    while (!ngx_queue_empty(&rd->free)) {
        q = ngx_queue_head(&rd->free);
        ngx_queue_remove(q);
        cmd = ngx_queue_data(q, ngx_meshgate_redis_cmd_t, queue);
        ngx_free(cmd);
    }

    if (rd->out) {
        ngx_free(rd->out);
        rd->out = NULL;
        rd->out_size = 0;
    }

    rd->initialized = 0;
}


static void
ngx_meshgate_redis_close_cluster(ngx_meshgate_redis_t *rd)
{
    ngx_uint_t  i;

    /* first: a node's client closed does not ask for the map then */

    if (rd->slots) {
        ngx_free(rd->slots);
        rd->slots = NULL;
    }

    for (i = 0; i < rd->nnodes; i++) {
        ngx_meshgate_redis_close(rd->nodes[i]);
        ngx_free(rd->nodes[i]);
    }

    rd->nnodes = 0;

    if (rd->nodes) {
        ngx_free(rd->nodes);
        rd->nodes = NULL;
    }

    if (rd->control) {
        ngx_meshgate_redis_close(rd->control);
    }
}


/*
 * The client of the node that serves the slot of key, or a node asked
 * first if the slot map is not known yet (it answers MOVED if it is not
 * the one); learning the map is under way then.
 */

static ngx_meshgate_redis_t *
ngx_meshgate_redis_cluster_node(ngx_meshgate_redis_t *rd, u_char *key,
    size_t len)
{
    ngx_uint_t  n;

    if (rd->slots == NULL && ngx_meshgate_redis_cluster_init(rd) != NGX_OK) {
        return NULL;
    }

    n = key ? rd->slots[ngx_meshgate_redis_slot(key, len)] : 0;

    if (n) {
        return rd->nodes[n - 1];
    }

    if (rd->control_cmd == NULL) {
        rd->control_tries = 0;
        (void) ngx_meshgate_redis_ask_slots(rd);
    }

    /* the first node not known to be down */

    for (n = 0; n < rd->nnodes; n++) {
        if (!ngx_meshgate_redis_is_down(rd->nodes[n])) {
            return rd->nodes[n];
        }
    }

    return rd->nodes[0];
}


void
ngx_meshgate_redis_refresh(ngx_meshgate_redis_t *rd)
{
    if (rd->cluster && rd->slots && rd->control_cmd == NULL) {
        rd->control_tries = 0;
        (void) ngx_meshgate_redis_ask_slots(rd);
    }
}


ngx_meshgate_redis_t *
ngx_meshgate_redis_route(ngx_meshgate_redis_t *rd, u_char *key, size_t len)
{
    if (rd->cluster == NULL) {
        return rd;
    }

    return ngx_meshgate_redis_cluster_node(rd, key, len);
}


static ngx_int_t
ngx_meshgate_redis_cluster_init(ngx_meshgate_redis_t *rd)
{
    ngx_uint_t   i;
    ngx_addr_t  *addr;

    rd->nodes = ngx_alloc(NGX_MESHGATE_REDIS_MAX_NODES
                          * sizeof(ngx_meshgate_redis_t *), ngx_cycle->log);
    if (rd->nodes == NULL) {
        return NGX_ERROR;
    }

    rd->slots = ngx_calloc(NGX_MESHGATE_REDIS_SLOTS, ngx_cycle->log);
    if (rd->slots == NULL) {
        ngx_free(rd->nodes);
        rd->nodes = NULL;
        return NGX_ERROR;
    }

    addr = rd->cluster->elts;

    for (i = 0; i < rd->cluster->nelts; i++) {
        if (ngx_meshgate_redis_add_node(rd, addr[i].sockaddr,
                                        addr[i].socklen)
            == NGX_ERROR)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* the index of the node's client, made if new */

static ngx_int_t
ngx_meshgate_redis_add_node(ngx_meshgate_redis_t *rd, struct sockaddr *sa,
    socklen_t socklen)
{
    ngx_uint_t             i;
    ngx_meshgate_redis_t  *node;

    for (i = 0; i < rd->nnodes; i++) {
        node = rd->nodes[i];

        if (node->socklen == socklen
            && ngx_memcmp(node->sockaddr, sa, socklen) == 0)
        {
            return i;
        }
    }

    if (rd->nnodes == NGX_MESHGATE_REDIS_MAX_NODES) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis cluster: more than %d nodes",
                      NGX_MESHGATE_REDIS_MAX_NODES);
        return NGX_ERROR;
    }

    node = ngx_calloc(sizeof(ngx_meshgate_redis_t), ngx_cycle->log);
    if (node == NULL) {
        return NGX_ERROR;
    }

    node->parent = rd;
    node->user = rd->user;
    node->password = rd->password;
    node->timeout = rd->timeout;
    node->connect_timeout = rd->connect_timeout;
    node->ssl = rd->ssl;
    node->tls = rd->tls;
    node->tls_verify = rd->tls_verify;
    node->tls_name = rd->tls_name;
    node->max_values = rd->max_values;
    node->max_depth = rd->max_depth;
    node->max_bulk = rd->max_bulk;

    ngx_memcpy(&node->primary, sa, socklen);
    node->primary_len = socklen;
    node->sockaddr = &node->primary.sockaddr;
    node->socklen = socklen;
    node->name.data = node->primary_text;
    node->name.len = ngx_sock_ntop(sa, socklen, node->primary_text,
                                   NGX_SOCKADDR_STRLEN, 1);

    rd->nodes[rd->nnodes] = node;

    return rd->nnodes++;
}


/* CLUSTER SLOTS, asked from the nodes in turn; one at a time */

static ngx_int_t
ngx_meshgate_redis_ask_slots(ngx_meshgate_redis_t *rd)
{
    ngx_int_t              rc;
    ngx_uint_t             i;
    ngx_meshgate_redis_t  *cc, *node;

    static const char     *argv[] = { "CLUSTER", "SLOTS" };
    static const size_t    lens[] = { 7, 5 };

    if (rd->control_cmd) {
        return NGX_OK;
    }

    cc = rd->control;

    while (rd->control_tries++ < rd->nnodes) {
        i = rd->control_next % rd->nnodes;
        node = rd->nodes[i];

        if (cc->socklen != node->socklen
            || ngx_memcmp(cc->sockaddr, node->sockaddr, node->socklen) != 0)
        {
            ngx_meshgate_redis_close_connection(cc);
            cc->sockaddr = node->sockaddr;
            cc->socklen = node->socklen;
            cc->name = node->name;
        }

        cc->down = 0;
        cc->backoff = NGX_MESHGATE_REDIS_BACKOFF_MIN;

        rc = ngx_meshgate_redis_command(cc, NULL, 2, argv, lens,
                                        ngx_meshgate_redis_slots_handler,
                                        rd, &rd->control_cmd);
        if (rc == NGX_OK) {
            return NGX_OK;
        }

        rd->control_cmd = NULL;

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        rd->control_next = i + 1;
    }

    return NGX_DECLINED;
}


static void
ngx_meshgate_redis_slots_handler(void *data, ngx_int_t status,
    redisReply *reply)
{
    ngx_meshgate_redis_t  *rd = data;

    rd->control_cmd = NULL;

    if (status == NGX_MESHGATE_REDIS_OK
        && ngx_meshgate_redis_slots(rd, reply) == NGX_OK)
    {
        rd->map_known = 1;

        if (rd->ready) {
            rd->ready(rd->ready_data, 1);
        }

        return;
    }

    rd->control_next++;

    /* what waits for the map waits for one node at most */

    if (!rd->map_known && rd->ready) {
        rd->ready(rd->ready_data, 0);
    }

    if (ngx_meshgate_redis_ask_slots(rd) == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis cluster: no node told the slot map");
    }
}


void
ngx_meshgate_redis_on_ready(ngx_meshgate_redis_t *rd,
    ngx_meshgate_redis_ready_pt handler, void *data)
{
    rd->ready = handler;
    rd->ready_data = data;
}


ngx_uint_t
ngx_meshgate_redis_ready(ngx_meshgate_redis_t *rd)
{
    if (rd->cluster == NULL || rd->map_known) {
        return 1;
    }

    if (rd->slots == NULL && ngx_meshgate_redis_cluster_init(rd) != NGX_OK) {
        return 1;
    }

    if (rd->control_cmd) {
        return 0;
    }

    rd->control_tries = 0;

    /* no node to ask at all: go on, and fail as usual */

    return ngx_meshgate_redis_ask_slots(rd) == NGX_OK ? 0 : 1;
}


/* [[start, end, [ip, port, id, ...], replicas...], ...] */

static ngx_int_t
ngx_meshgate_redis_slots(ngx_meshgate_redis_t *rd, redisReply *reply)
{
    size_t           i;
    socklen_t        socklen;
    ngx_int_t        n;
    redisReply      *r, *m;
    ngx_sockaddr_t   sa;
    long long        start, end;

    if (reply->type != REDIS_REPLY_ARRAY) {
        goto invalid;
    }

    for (i = 0; i < reply->elements; i++) {
        r = reply->element[i];

        if (r->type != REDIS_REPLY_ARRAY || r->elements < 3
            || r->element[0]->type != REDIS_REPLY_INTEGER
            || r->element[1]->type != REDIS_REPLY_INTEGER
            || r->element[2]->type != REDIS_REPLY_ARRAY
            || r->element[2]->elements < 2)
        {
            goto invalid;
        }

        start = r->element[0]->integer;
        end = r->element[1]->integer;
        m = r->element[2];

        if (start < 0 || end < start || end >= NGX_MESHGATE_REDIS_SLOTS
            || m->element[0]->type != REDIS_REPLY_STRING
            || m->element[1]->type != REDIS_REPLY_INTEGER)
        {
            goto invalid;
        }

        if (m->element[0]->len == 0) {

            /* "" (Redis 7): the node asked */

            ngx_memcpy(&sa, rd->control->sockaddr, rd->control->socklen);
            socklen = rd->control->socklen;

        } else if (ngx_meshgate_redis_parse_addr(
                       (u_char *) m->element[0]->str, m->element[0]->len,
                       (ngx_int_t) m->element[1]->integer, &sa, &socklen)
                   != NGX_OK)
        {
            goto invalid;
        }

        n = ngx_meshgate_redis_add_node(rd, &sa.sockaddr, socklen);

        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        ngx_memset(rd->slots + start, n + 1, end - start + 1);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "redis cluster: %uz slot ranges, %ui nodes",
                   reply->elements, rd->nnodes);

    return NGX_OK;

invalid:

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "redis cluster: node %V answered CLUSTER SLOTS with "
                  "something else than a slot map (IP addresses expected)",
                  &rd->control->name);

    return NGX_ERROR;
}


/*
 * "MOVED <slot> <ip>:<port>": the slot lives there now; the map is asked
 * for again and the command goes there, once.  "ASK <slot> <ip>:<port>":
 * this key is being migrated there; the command goes there after
 * ASKING, once.
 */

static ngx_int_t
ngx_meshgate_redis_redirect(ngx_meshgate_redis_t *rd,
    ngx_meshgate_redis_cmd_t *cmd, redisReply *reply)
{
    u_char                *p, *last, *colon, *sp;
    socklen_t              socklen;
    ngx_int_t              slot, port, n;
    ngx_uint_t             ask;
    ngx_sockaddr_t         sa;
    ngx_meshgate_redis_t  *parent, *target;

    static char  asking[] = "*1\r\n$6\r\nASKING\r\n";

    p = (u_char *) reply->str;
    last = p + reply->len;

    if (reply->len > 6 && ngx_strncmp(p, "MOVED ", 6) == 0) {
        ask = 0;
        p += 6;

    } else if (reply->len > 4 && ngx_strncmp(p, "ASK ", 4) == 0) {
        ask = 1;
        p += 4;

    } else {
        return NGX_DECLINED;
    }

    sp = ngx_strlchr(p, last, ' ');

    if (sp == NULL) {
        return NGX_DECLINED;
    }

    slot = ngx_atoi(p, sp - p);
    p = sp + 1;

    for (colon = last - 1; colon > p && *colon != ':'; colon--) {
        /* void */
    }

    port = ngx_atoi(colon + 1, last - colon - 1);

    if (slot < 0 || slot >= NGX_MESHGATE_REDIS_SLOTS || colon == p
        || ngx_meshgate_redis_parse_addr(p, colon - p, port, &sa, &socklen)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    parent = rd->parent;

    n = ngx_meshgate_redis_add_node(parent, &sa.sockaddr, socklen);
    if (n == NGX_ERROR) {
        return NGX_DECLINED;
    }

    target = parent->nodes[n];
    parent->stats.redirects++;

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "redis cluster: %s slot %i to %V",
                   ask ? "ASK" : "MOVED", slot, &target->name);

    if (!ask) {
        parent->slots[slot] = (u_char) (n + 1);
        parent->control_tries = 0;
        (void) ngx_meshgate_redis_ask_slots(parent);
    }

    if (target->conn == NULL && ngx_meshgate_redis_connect(target) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (ask
        && ngx_meshgate_redis_queue(target, NULL, asking, sizeof(asking) - 1,
                                    ngx_meshgate_redis_handshake_handler,
                                    "ASKING", NULL)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (ngx_meshgate_redis_append(target, cmd->eval, cmd->eval_len)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    cmd->rd = target;
    cmd->redirected = 1;
    ngx_queue_insert_tail(&target->pending, &cmd->queue);
    ngx_meshgate_redis_post_write(target);

    return NGX_OK;
}


/* an IP address (no name: the worker never resolves) and a port */

static ngx_int_t
ngx_meshgate_redis_parse_addr(u_char *ip, size_t len, ngx_int_t port,
    ngx_sockaddr_t *sa, socklen_t *socklen)
{
    in_addr_t  inaddr;

    if (port < 1 || port > 65535) {
        return NGX_ERROR;
    }

    ngx_memzero(sa, sizeof(ngx_sockaddr_t));

    inaddr = ngx_inet_addr(ip, len);

    if (inaddr != INADDR_NONE) {
        sa->sockaddr_in.sin_family = AF_INET;
        sa->sockaddr_in.sin_addr.s_addr = inaddr;
        *socklen = sizeof(struct sockaddr_in);

#if (NGX_HAVE_INET6)
    } else if (ngx_inet6_addr(ip, len, sa->sockaddr_in6.sin6_addr.s6_addr)
               == NGX_OK)
    {
        sa->sockaddr_in6.sin6_family = AF_INET6;
        *socklen = sizeof(struct sockaddr_in6);
#endif

    } else {
        return NGX_ERROR;
    }

    ngx_inet_set_port(&sa->sockaddr, (in_port_t) port);

    return NGX_OK;
}


/* Redis Cluster's key slot: CRC16 (XMODEM) of the key or its {hash tag} */

static ngx_uint_t
ngx_meshgate_redis_slot(u_char *key, size_t len)
{
    u_char    *p, *last, *open, *close;
    uint16_t   crc;
    ngx_uint_t i;

    last = key + len;
    open = ngx_strlchr(key, last, '{');

    if (open) {
        close = ngx_strlchr(open + 1, last, '}');

        if (close && close > open + 1) {
            key = open + 1;
            last = close;
        }
    }

    crc = 0;

    for (p = key; p < last; p++) {
        crc ^= (uint16_t) *p << 8;

        for (i = 0; i < 8; i++) {
            crc = (crc & 0x8000) ? (uint16_t) ((crc << 1) ^ 0x1021)
                                 : (uint16_t) (crc << 1);
        }
    }

    return crc & (NGX_MESHGATE_REDIS_SLOTS - 1);
}


/* asks the sentinels in turn, from the one that answered last */

static ngx_int_t
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
 * Listens to the sentinel that answered for +switch-master, unless
 * already listening to one: a failover then makes the worker ask again
 * before its next command, even if the old primary still answers.
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
        return;
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

    if (status != NGX_MESHGATE_REDIS_OK
        || reply->type != REDIS_REPLY_ARRAY)
    {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "redis sentinel %V: SUBSCRIBE +switch-master failed",
                      &rd->subscriber->name);
    }
}


/* "message", "+switch-master", "<master> <old ip> <old port> <ip> <port>" */

static void
ngx_meshgate_redis_switch_master(ngx_meshgate_redis_t *sub,
    redisReply *reply)
{
    ngx_meshgate_redis_t  *rd;

    rd = sub->push_data;

    if (reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 3
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
    u_char                *ip, text[NGX_SOCKADDR_STRLEN];
    size_t                 len;
    in_addr_t              inaddr;
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

    ip = (u_char *) reply->element[0]->str;
    len = reply->element[0]->len;

    port = ngx_atoi((u_char *) reply->element[1]->str,
                    reply->element[1]->len);

    ngx_memzero(&sa, sizeof(ngx_sockaddr_t));

    inaddr = ngx_inet_addr(ip, len);

    if (inaddr != INADDR_NONE) {
        sa.sockaddr_in.sin_family = AF_INET;
        sa.sockaddr_in.sin_addr.s_addr = inaddr;
        socklen = sizeof(struct sockaddr_in);

#if (NGX_HAVE_INET6)
    } else if (ngx_inet6_addr(ip, len, sa.sockaddr_in6.sin6_addr.s6_addr)
               == NGX_OK)
    {
        sa.sockaddr_in6.sin6_family = AF_INET6;
        socklen = sizeof(struct sockaddr_in6);
#endif

    } else {
        port = NGX_ERROR;
        socklen = 0;
    }

    if (port < 1 || port > 65535) {

        /* host names are not resolved here: the worker would block */

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis sentinel %V names no IP address and port for "
                      "master \"%V\" (resolve-hostnames?)",
                      &sc->name, &rd->master);
        return NGX_ERROR;
    }

    ngx_inet_set_port(&sa.sockaddr, (in_port_t) port);

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


/* the ROLE reply of a primary starts with "master" */

static ngx_uint_t
ngx_meshgate_redis_not_primary(ngx_meshgate_redis_t *rd, redisReply *reply)
{
    if (!rd->sentinels || reply->type != REDIS_REPLY_ARRAY) {
        return rd->sentinels != NULL;
    }

    return reply->elements == 0
           || reply->element[0]->type != REDIS_REPLY_STRING
           || reply->element[0]->len != 6
           || ngx_strncmp(reply->element[0]->str, "master", 6) != 0;
}


ngx_meshgate_redis_stats_t *
ngx_meshgate_redis_stats(ngx_meshgate_redis_t *rd)
{
    return &rd->stats;
}
