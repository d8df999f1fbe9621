
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_meshgate_redis_internal.h"
#include "ngx_meshgate_escape.h"


/*
 * The connection and the command pipeline: connect, AUTH/SELECT,
 * write, read (through the reply limits), dispatch, timeouts, backoff.
 */


static ngx_int_t ngx_meshgate_redis_usable(ngx_meshgate_redis_t *rd);
static ngx_int_t ngx_meshgate_redis_prepend_handshake(
    ngx_meshgate_redis_t *rd);
static ngx_uint_t ngx_meshgate_redis_no_socket(ngx_meshgate_redis_t *rd);
static ngx_int_t ngx_meshgate_redis_handshake(ngx_meshgate_redis_t *rd);
static ngx_int_t ngx_meshgate_redis_reserve(ngx_meshgate_redis_t *rd,
    size_t len);
static void ngx_meshgate_redis_free_cmd(ngx_meshgate_redis_cmd_t *cmd);
static void ngx_meshgate_redis_cleanup(void *data);
static ngx_int_t ngx_meshgate_redis_test_connect(ngx_meshgate_redis_t *rd);
static void ngx_meshgate_redis_dispatch(ngx_meshgate_redis_t *rd,
    ngx_uint_t generation);
static ngx_int_t ngx_meshgate_redis_retry_eval(ngx_meshgate_redis_t *rd,
    ngx_meshgate_redis_cmd_t *cmd);
static void ngx_meshgate_redis_opened(ngx_meshgate_redis_t *rd);
static void ngx_meshgate_redis_timeout_handler(ngx_event_t *ev);
static void ngx_meshgate_redis_connect_timeout_handler(ngx_event_t *ev);
static int ngx_meshgate_redis_format(char **target, int argc,
    const char **argv, const size_t *argvlen);
static u_char *ngx_meshgate_redis_number(u_char *p, size_t n);


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

    if (ngx_meshgate_redis_usable(rd) != NGX_OK) {
        return NGX_DECLINED;
    }

    len = ngx_meshgate_redis_format(&buf, argc, argv, argvlen);
    if (len < 0) {
        return NGX_ERROR;
    }

    rc = ngx_meshgate_redis_queue(rd, pool, buf, len, handler, data, &c);

    if (rc != NGX_OK || rd->parent == NULL) {
        ngx_free(buf);

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

    if (ngx_meshgate_redis_usable(rd) != NGX_OK) {
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

    len = ngx_meshgate_redis_format(&buf, n, args, lens);

    ngx_free(args);

    if (len < 0) {
        return NGX_ERROR;
    }

    rc = ngx_meshgate_redis_queue(rd, pool, buf, len, handler, data, &cmd);

    if (rc != NGX_OK) {
        ngx_free(buf);
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


/*
 * A command may be queued: the connection is open or being opened
 * (connected to when needed).  Once a command has timed out while it is
 * being opened, the next ones fail at once until it is open or dropped by
 * connect_timeout=: the queue then holds what one timeout= brings, as
 * on an open connection, not what a whole connect_timeout= does.
 */

static ngx_int_t
ngx_meshgate_redis_usable(ngx_meshgate_redis_t *rd)
{
    if (rd->late) {
        return NGX_DECLINED;
    }

    if (rd->conn == NULL && !rd->discovering) {
        return ngx_meshgate_redis_connect(rd) == NGX_OK ? NGX_OK
                                                        : NGX_DECLINED;
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


ngx_int_t
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

    if (handler == ngx_meshgate_redis_handshake_handler) {
        /* the connection is open when their replies are in */
        rd->handshakes++;

    } else {
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


ngx_int_t
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


void
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


ngx_int_t
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

    /*
     * a worker that quits gracefully (a reload, nginx -s quit) still
     * answers the requests it took, and their checks may need a
     * connection it has not made yet: connect_timeout= and timeout= bound
     * how long that keeps it; one told to terminate opens nothing
     */

    if (ngx_terminate) {
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

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "redis %V: connecting", &rd->name);

    if (ngx_meshgate_redis_prepend_handshake(rd) != NGX_OK) {
        goto failed;
    }

    /*
     * connect_timeout= bounds the whole opening: TCP, TLS, and the
     * replies to AUTH, SELECT and ROLE; timeout= bounds each command
     */

    if (rd->connecting || rd->handshakes) {
        rd->connect_timer.handler = ngx_meshgate_redis_connect_timeout_handler;
        rd->connect_timer.data = rd;
        rd->connect_timer.log = ngx_cycle->log;
        ngx_add_timer(&rd->connect_timer, rd->connect_timeout);
    }

    if (rc == NGX_OK && rd->ssl
        && ngx_meshgate_redis_tls_start(rd) == NGX_ERROR)
    {
        goto failed;
    }

    return NGX_OK;

failed:

    ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR, NULL);
    return NGX_DECLINED;
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

        len = ngx_meshgate_redis_format(&buf, argc, argv, lens);
        if (len < 0) {
            return NGX_ERROR;
        }

        rc = ngx_meshgate_redis_queue(rd, NULL, buf, len,
                                      ngx_meshgate_redis_handshake_handler,
                                      "AUTH", NULL);
        ngx_free(buf);

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (rd->db) {
        argv[0] = "SELECT";
        lens[0] = 6;
        argv[1] = (const char *) db;
        lens[1] = ngx_sprintf(db, "%i", rd->db) - db;

        len = ngx_meshgate_redis_format(&buf, 2, argv, lens);
        if (len < 0) {
            return NGX_ERROR;
        }

        rc = ngx_meshgate_redis_queue(rd, NULL, buf, len,
                                      ngx_meshgate_redis_handshake_handler,
                                      "SELECT", NULL);
        ngx_free(buf);

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

void
ngx_meshgate_redis_handshake_handler(void *data, ngx_int_t status,
    redisReply *reply)
{
    (void) data;
    (void) status;
    (void) reply;

    /* errors are handled in ngx_meshgate_redis_dispatch() */
}


void
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


void
ngx_meshgate_redis_close_connection(ngx_meshgate_redis_t *rd)
{
    ngx_pool_t                *pool;
    ngx_queue_t               *q, *next;
    ngx_meshgate_redis_cmd_t  *cmd;

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    /*
     * the replies that nobody waits for any more (a handshake's, a
     * command's that timed out while the connection was being opened)
     * will not come: their places go with the connection
     */

    for (q = rd->initialized ? ngx_queue_head(&rd->pending) : NULL;
         q && q != ngx_queue_sentinel(&rd->pending);
         q = next)
    {
        next = ngx_queue_next(q);
        cmd = ngx_queue_data(q, ngx_meshgate_redis_cmd_t, queue);

        if (cmd->handler == NULL
            || cmd->handler == ngx_meshgate_redis_handshake_handler)
        {
            ngx_queue_remove(q);
            ngx_meshgate_redis_free_cmd(cmd);
        }
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
    rd->handshakes = 0;
    rd->late = 0;
    rd->out_len = 0;
    rd->out_sent = 0;
}


static void
ngx_meshgate_redis_free_cmd(ngx_meshgate_redis_cmd_t *cmd)
{
    ngx_meshgate_redis_cancel(cmd);

    if (cmd->eval) {
        ngx_free(cmd->eval);
        cmd->eval = NULL;
    }

    ngx_queue_insert_head(&cmd->rd->free, &cmd->queue);
}


static void
ngx_meshgate_redis_timeout_handler(ngx_event_t *ev)
{
    ngx_meshgate_redis_cmd_t  *cmd = ev->data;

    void                           *data;
    ngx_meshgate_redis_t           *rd;
    ngx_meshgate_redis_handler_pt   handler;

    rd = cmd->rd;

    if (rd->discovering || rd->connecting || rd->handshakes) {

        /*
         * the sentinels are slow, or the connection is still being opened
         * (connect_timeout= is its limit, not timeout=): this command
         * fails alone, and stays queued for its reply to be discarded
         */

        if (!rd->discovering && !rd->late) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "redis %V: command timed out, the connection "
                          "still opening", &rd->name);
            rd->late = 1;
        }

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


void
ngx_meshgate_redis_connected(ngx_meshgate_redis_t *rd)
{
    rd->connecting = 0;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "redis %V: connected%s", &rd->name,
                   rd->ssl ? " over TLS" : "");

    if (rd->handshakes == 0) {
        ngx_meshgate_redis_opened(rd);
    }
}


/* connected, and AUTH, SELECT and ROLE answered: commands go as usual */

static void
ngx_meshgate_redis_opened(ngx_meshgate_redis_t *rd)
{
    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    rd->late = 0;
}


void
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


void
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

        size = ngx_meshgate_redis_scan(&rd->limits, &rd->scan, buf, n,
                                       &why);

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

            /* data names the command: "AUTH", "SELECT" or "ROLE" */

            if (ngx_strcmp(data, "ROLE") == 0
                && ngx_meshgate_redis_not_primary(reply))
            {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "redis %V: not the primary (any more)",
                              &rd->name);
                freeReplyObject(reply);
                ngx_meshgate_redis_disconnect(rd, NGX_MESHGATE_REDIS_ERROR,
                                              NULL);
                return;
            }

            freeReplyObject(reply);

            if (--rd->handshakes == 0) {
                ngx_meshgate_redis_opened(rd);
            }

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

    /*
     * a discovery under way: its command belongs to the sentinels' client,
     * which frees it when closed; disconnect() below would cancel it then
     */

    if (rd->sentinel_cmd) {
        ngx_meshgate_redis_cancel(rd->sentinel_cmd);
        rd->sentinel_cmd = NULL;
    }

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


ngx_meshgate_redis_stats_t *
ngx_meshgate_redis_stats(ngx_meshgate_redis_t *rd)
{
    return &rd->stats;
}


/*
 * A command in RESP, as redisFormatCommandArgv() makes it, without its
 * sprintf() per argument: a rate-limit batch has two or three arguments
 * per request, and formatting them was a tenth of the gateway's work per
 * request.  Freed with ngx_free().
 */

static int
ngx_meshgate_redis_format(char **target, int argc, const char **argv,
    const size_t *argvlen)
{
    int      i;
    size_t   size;
    u_char  *buf, *p;

    size = 1 + NGX_SIZE_T_LEN + 2;

    for (i = 0; i < argc; i++) {
        size += 1 + NGX_SIZE_T_LEN + 2 + argvlen[i] + 2;
    }

    if (size > NGX_MAX_INT32_VALUE) {
        return -1;
    }

    buf = ngx_alloc(size, ngx_cycle->log);
    if (buf == NULL) {
        return -1;
    }

    p = buf;
    *p++ = '*';
    p = ngx_meshgate_redis_number(p, argc);

    for (i = 0; i < argc; i++) {
        *p++ = '$';
        p = ngx_meshgate_redis_number(p, argvlen[i]);
        p = ngx_cpymem(p, argv[i], argvlen[i]);
        *p++ = CR;
        *p++ = LF;
    }

    *target = (char *) buf;

    return p - buf;
}


/* n in decimal, then CRLF */

static u_char *
ngx_meshgate_redis_number(u_char *p, size_t n)
{
    p = ngx_meshgate_decimal(p, n);
    *p++ = CR;
    *p++ = LF;

    return p;
}
