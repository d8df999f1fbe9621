
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_MESHGATE_REDIS_H_INCLUDED_
#define _NGX_MESHGATE_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <hiredis/hiredis.h>


/*
 * An asynchronous Redis client on nginx's event loop.
 *
 * A client (ngx_meshgate_redis_t) is created at configuration time, one
 * per configured Redis server.  In each worker it owns at most one
 * connection (an nginx connection, never a blocking socket), opened
 * lazily by the first command.  Commands are pipelined on it: they are
 * written in the order they are issued and their replies come back in
 * that order (a FIFO of pending commands).  hiredis is used only to
 * format commands and to parse replies.
 *
 * Every command has a timer (timeout=).  A timeout, a closed connection,
 * a failed connect or a failed AUTH/SELECT fails every pending command
 * and puts the client "down" for a backoff period (100 ms, doubling up
 * to 1 s, reset by the first reply): while down, new commands fail at
 * once (ngx_meshgate_redis_command() returns NGX_DECLINED) instead of
 * waiting.  The next command after the backoff reconnects.  A connection
 * closed while no command is pending (Redis's idle "timeout", a proxy)
 * is not an outage: the next command simply reconnects.
 *
 * With "tls", the connection runs TLS (1.2 or 1.3) before any command,
 * within connect_timeout; the server's certificate is verified against
 * tls_ca= and tls_name= (the host of server= by default).
 *
 * On connect the client sends AUTH (password, or user and password) and
 * SELECT (db) when configured, pipelined ahead of the first command.
 *
 * Scripts (ngx_meshgate_redis_script()) run with EVALSHA; a NOSCRIPT reply
 * (script cache flushed, Redis restarted or failed over) makes the client
 * send the same command again as EVAL, once, within the same timeout.
 *
 * Server addresses are resolved at configuration time; the worker never
 * resolves names.  Every module links its own copy of this code; the
 * symbols are hidden.
 */

#pragma GCC visibility push(hidden)


typedef struct ngx_meshgate_redis_s         ngx_meshgate_redis_t;
typedef struct ngx_meshgate_redis_cmd_s     ngx_meshgate_redis_cmd_t;
typedef struct ngx_meshgate_redis_script_s  ngx_meshgate_redis_script_t;


/* per worker, for metrics */
typedef struct {
    ngx_uint_t                      failovers;  /* a new primary named */
    ngx_uint_t                      redirects;  /* MOVED or ASK followed */
} ngx_meshgate_redis_stats_t;


/* with cluster=: the slot map is known (ok 1) or could not be had (0) */
typedef void (*ngx_meshgate_redis_ready_pt)(void *data, ngx_uint_t ok);


/* the status passed to a handler */
#define NGX_MESHGATE_REDIS_OK       0  /* reply set (may be an error reply) */
#define NGX_MESHGATE_REDIS_TIMEOUT  1  /* no reply within timeout= */
#define NGX_MESHGATE_REDIS_ERROR    2  /* connection failed or closed */


/*
 * Called exactly once per command that ngx_meshgate_redis_command()
 * accepted (returned NGX_OK), unless cancelled first; never from inside
 * ngx_meshgate_redis_command() itself.  reply is NULL unless status is
 * NGX_MESHGATE_REDIS_OK, and is freed when the handler returns.  The
 * handler may issue new commands.
 */
typedef void (*ngx_meshgate_redis_handler_pt)(void *data, ngx_int_t status,
    redisReply *reply);


/* --- configuration time ------------------------------------------------ */

/* a client with the defaults: timeout=50ms connect_timeout=500ms db=0 */
ngx_meshgate_redis_t *ngx_meshgate_redis_create(ngx_conf_t *cf);

/*
 * Parses one "name=value" parameter of a directive:
 *   server=host[:port] | server=unix:/path   (port 6379 by default)
 *   password=...  password_env=NAME  user=...  db=N
 *   timeout=time  connect_timeout=time
 *   tls  tls_ca=file  tls_name=name  tls_verify=on|off
 *   tls_cert=file  tls_key=file
 * Returns NGX_OK if it was one of these, NGX_DECLINED if it is another
 * parameter (for the caller to handle), NGX_ERROR after logging why.
 */
ngx_int_t ngx_meshgate_redis_parse(ngx_conf_t *cf, ngx_meshgate_redis_t *rd,
    ngx_str_t *param);

/*
 * Checks the parameters once all are parsed: server= is required; the
 * host is resolved now (first address); password_env is read from the
 * environment of the process reading the configuration.  Returns
 * NGX_CONF_OK or NGX_CONF_ERROR after logging why.
 */
char *ngx_meshgate_redis_init(ngx_conf_t *cf, ngx_meshgate_redis_t *rd);

/*
 * What the caller can use of a reply: at most values values in all (an
 * array counts as one, plus its elements), arrays nested at most depth
 * deep (0: no arrays), bulk strings of at most bulk bytes.  A reply beyond
 * these fails its command (NGX_MESHGATE_REDIS_ERROR) and the connection is
 * dropped, before hiredis allocates anything for it.  By default: 256
 * values, depth 1, 4096 bytes.
 */
void ngx_meshgate_redis_limit_replies(ngx_meshgate_redis_t *rd,
    ngx_uint_t values, ngx_uint_t depth, size_t bulk);

/*
 * An error reply's text for a log line: printable ASCII only (other bytes
 * become "?"), at most NGX_MESHGATE_REDIS_ERROR_LEN bytes; buf must hold
 * that many.
 */
#define NGX_MESHGATE_REDIS_ERROR_LEN  256

ngx_str_t ngx_meshgate_redis_error_text(redisReply *reply, u_char *buf);

/* "host:port" or "unix:/path", for messages */
ngx_str_t *ngx_meshgate_redis_name(ngx_meshgate_redis_t *rd);

/* a Lua script for ngx_meshgate_redis_eval(); its SHA1 is computed now */
ngx_meshgate_redis_script_t *ngx_meshgate_redis_script(ngx_conf_t *cf,
    ngx_str_t *text);


/* --- in a worker ------------------------------------------------------- */

/*
 * Sends a command (argv as in redisCommandArgv()).  Returns
 *   NGX_OK        accepted: handler will be called later;
 *   NGX_DECLINED  Redis is known to be unreachable (down state) or the
 *                 connect failed at once: handler will not be called;
 *   NGX_ERROR     out of memory: handler will not be called.
 * If pool is not NULL (e.g. r->pool), the command is cancelled when the
 * pool is destroyed, so the handler never sees freed memory.  If cmd is
 * not NULL it receives the command, for ngx_meshgate_redis_cancel().
 */
ngx_int_t ngx_meshgate_redis_command(ngx_meshgate_redis_t *rd,
    ngx_pool_t *pool, int argc, const char **argv, const size_t *argvlen,
    ngx_meshgate_redis_handler_pt handler, void *data,
    ngx_meshgate_redis_cmd_t **cmd);

/*
 * EVALSHA script numkeys argv... with the EVAL fallback on NOSCRIPT;
 * argv holds the keys, then the other arguments.  Same contract as
 * ngx_meshgate_redis_command().
 */
ngx_int_t ngx_meshgate_redis_eval(ngx_meshgate_redis_t *rd, ngx_pool_t *pool,
    ngx_meshgate_redis_script_t *script, int numkeys, int argc,
    const char **argv, const size_t *argvlen,
    ngx_meshgate_redis_handler_pt handler, void *data,
    ngx_meshgate_redis_cmd_t **cmd);

/*
 * The client that serves key: with cluster=, the client of the node of
 * the key's slot (NULL if none can be made); otherwise rd itself.  For
 * sending the commands of several keys of one node together.
 */
ngx_meshgate_redis_t *ngx_meshgate_redis_route(ngx_meshgate_redis_t *rd,
    u_char *key, size_t len);

/* 1 with cluster=, else 0 */
ngx_uint_t ngx_meshgate_redis_is_cluster(ngx_meshgate_redis_t *rd);

/*
 * With cluster=, commands are sent where the slot map says once it is
 * known.  ngx_meshgate_redis_ready() returns 1 if it is (or there is no
 * cluster), else 0 and the map is being asked for: the handler given to
 * ngx_meshgate_redis_on_ready() (at configuration time) is called when it
 * is known or could not be had.
 */
void ngx_meshgate_redis_on_ready(ngx_meshgate_redis_t *rd,
    ngx_meshgate_redis_ready_pt handler, void *data);
ngx_uint_t ngx_meshgate_redis_ready(ngx_meshgate_redis_t *rd);

/*
 * With cluster=: asks for the slot map again (a command failed in a way
 * that says keys moved without saying where, as scripts do).
 */
void ngx_meshgate_redis_refresh(ngx_meshgate_redis_t *rd);

/* the handler of cmd will not be called; its reply is discarded */
void ngx_meshgate_redis_cancel(ngx_meshgate_redis_cmd_t *cmd);

/*
 * The client's counters in this worker; its name (ngx_meshgate_redis_name())
 * is the address of the node that served last.
 */
ngx_meshgate_redis_stats_t *ngx_meshgate_redis_stats(ngx_meshgate_redis_t *rd);

/* non-zero while new commands would fail at once */
ngx_uint_t ngx_meshgate_redis_is_down(ngx_meshgate_redis_t *rd);

/*
 * Closes the connection and frees the client's per-worker memory; the
 * handlers of pending commands are not called.  The module that created the
 * client must call this from its exit_process handler (nginx alerts
 * about sockets left open when a worker exits).
 */
void ngx_meshgate_redis_close(ngx_meshgate_redis_t *rd);


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_REDIS_H_INCLUDED_ */
