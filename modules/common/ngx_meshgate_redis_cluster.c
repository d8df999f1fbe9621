
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_meshgate_redis_internal.h"


/*
 * Redis Cluster: the slot map (CLUSTER SLOTS), one client per node,
 * MOVED and ASK redirects, the key slot (CRC16).
 */


static ngx_int_t ngx_meshgate_redis_cluster_init(ngx_meshgate_redis_t *rd);
static ngx_int_t ngx_meshgate_redis_add_node(ngx_meshgate_redis_t *rd,
    struct sockaddr *sa, socklen_t socklen);
static void ngx_meshgate_redis_slots_handler(void *data, ngx_int_t status,
    redisReply *reply);
static ngx_int_t ngx_meshgate_redis_slots(ngx_meshgate_redis_t *rd,
    redisReply *reply);
static ngx_int_t ngx_meshgate_redis_slot_range(ngx_meshgate_redis_t *rd,
    redisReply *r, ngx_sockaddr_t *sa, socklen_t *socklen);
static ngx_int_t ngx_meshgate_redis_new_nodes(ngx_meshgate_redis_t *rd,
    redisReply *reply);
static ngx_int_t ngx_meshgate_redis_node_index(ngx_meshgate_redis_t *rd,
    struct sockaddr *sa, socklen_t socklen);
static ngx_int_t ngx_meshgate_redis_same_host(struct sockaddr *host,
    socklen_t hostlen, ngx_int_t port, ngx_sockaddr_t *sa,
    socklen_t *socklen);
static void ngx_meshgate_redis_asking_handler(void *data, ngx_int_t status,
    redisReply *reply);
static ngx_uint_t ngx_meshgate_redis_unspecified(struct sockaddr *sa);
static ngx_uint_t ngx_meshgate_redis_slot(u_char *key, size_t len);


/*
 * With cluster= each worker learns the slot map (CLUSTER SLOTS) from the
 * nodes, through a client of its own, and opens one connection per
 * primary (a client per node, made in the worker after this one).
 */

char *
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

    cc->limits.max_values = 32768;
    cc->limits.max_depth = 4;
    cc->limits.max_bulk = 256;

    rd->control = cc;

    ngx_str_set(&rd->name, "cluster");

    return NGX_CONF_OK;
}


void
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

ngx_meshgate_redis_t *
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


ngx_uint_t
ngx_meshgate_redis_is_cluster(ngx_meshgate_redis_t *rd)
{
    return rd->cluster != NULL;
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
    ngx_int_t              i;
    ngx_meshgate_redis_t  *node;

    i = ngx_meshgate_redis_node_index(rd, sa, socklen);

    if (i != NGX_DECLINED) {
        return i;
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
    node->limits.max_values = rd->limits.max_values;
    node->limits.max_depth = rd->limits.max_depth;
    node->limits.max_bulk = rd->limits.max_bulk;

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


/* the index of the node's client, NGX_DECLINED if none */

static ngx_int_t
ngx_meshgate_redis_node_index(ngx_meshgate_redis_t *rd, struct sockaddr *sa,
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

    return NGX_DECLINED;
}


/* CLUSTER SLOTS, asked from the nodes in turn; one at a time */

ngx_int_t
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


/*
 * [[start, end, [ip, port, id, ...], replicas...], ...]: the map is made
 * anew from it (a slot it leaves out has no node: its commands go to a
 * node asked first, which answers MOVED); a reply refused in part is
 * refused whole and changes nothing, the nodes it names included.  Nodes
 * once learnt stay (callers hold their clients), 64 at most.
 */

static ngx_int_t
ngx_meshgate_redis_slots(ngx_meshgate_redis_t *rd, redisReply *reply)
{
    size_t           i;
    socklen_t        socklen;
    ngx_int_t        n;
    redisReply      *r;
    ngx_sockaddr_t   sa;

    /* no range at all (a node just reset, or alone): another is asked */

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
        goto invalid;
    }

    n = ngx_meshgate_redis_new_nodes(rd, reply);

    if (n == NGX_ERROR) {
        goto invalid;
    }

    if (rd->nnodes + n > NGX_MESHGATE_REDIS_MAX_NODES) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis cluster: node %V named more than %d nodes "
                      "in all in CLUSTER SLOTS, the slot map is kept",
                      &rd->control->name, NGX_MESHGATE_REDIS_MAX_NODES);
        return NGX_ERROR;
    }

    ngx_memzero(rd->slots, NGX_MESHGATE_REDIS_SLOTS);

    for (i = 0; i < reply->elements; i++) {
        r = reply->element[i];

        (void) ngx_meshgate_redis_slot_range(rd, r, &sa, &socklen);

        n = ngx_meshgate_redis_add_node(rd, &sa.sockaddr, socklen);

        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        ngx_memset(rd->slots + r->element[0]->integer, n + 1,
                   r->element[1]->integer - r->element[0]->integer + 1);
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
 * One range of CLUSTER SLOTS: its slots within 0-16383, start <= end,
 * and the primary's address.  The address is an IP address; NULL (Redis 7,
 * cluster-preferred-endpoint-type unknown-endpoint) or "" (a node that
 * does not know its own address yet) mean the node asked, at the port
 * given.
 */

static ngx_int_t
ngx_meshgate_redis_slot_range(ngx_meshgate_redis_t *rd, redisReply *r,
    ngx_sockaddr_t *sa, socklen_t *socklen)
{
    redisReply  *m, *ip;
    long long    start, end, port;

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3
        || r->element[0]->type != REDIS_REPLY_INTEGER
        || r->element[1]->type != REDIS_REPLY_INTEGER
        || r->element[2]->type != REDIS_REPLY_ARRAY
        || r->element[2]->elements < 2)
    {
        return NGX_ERROR;
    }

    start = r->element[0]->integer;
    end = r->element[1]->integer;
    m = r->element[2];
    ip = m->element[0];

    if (start < 0 || end < start || end >= NGX_MESHGATE_REDIS_SLOTS
        || m->element[1]->type != REDIS_REPLY_INTEGER)
    {
        return NGX_ERROR;
    }

    port = m->element[1]->integer;

    if (port < 1 || port > 65535) {
        return NGX_ERROR;
    }

    if (ip->type == REDIS_REPLY_NIL
        || (ip->type == REDIS_REPLY_STRING && ip->len == 0))
    {
        return ngx_meshgate_redis_same_host(rd->control->sockaddr,
                                            rd->control->socklen,
                                            (ngx_int_t) port, sa, socklen);
    }

    if (ip->type != REDIS_REPLY_STRING) {
        return NGX_ERROR;
    }

    return ngx_meshgate_redis_parse_addr((u_char *) ip->str, ip->len,
                                         (ngx_int_t) port, sa, socklen);
}


/*
 * How many nodes a CLUSTER SLOTS reply names that are new (counted up to
 * one over the most there can be), NGX_ERROR if a range is not one.
 */

static ngx_int_t
ngx_meshgate_redis_new_nodes(ngx_meshgate_redis_t *rd, redisReply *reply)
{
    size_t          i;
    socklen_t       socklen, lens[NGX_MESHGATE_REDIS_MAX_NODES + 1];
    ngx_uint_t      n, k;
    ngx_sockaddr_t  sa, seen[NGX_MESHGATE_REDIS_MAX_NODES + 1];

    n = 0;

    for (i = 0; i < reply->elements; i++) {
        if (ngx_meshgate_redis_slot_range(rd, reply->element[i], &sa,
                                          &socklen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ngx_meshgate_redis_node_index(rd, &sa.sockaddr, socklen)
            != NGX_DECLINED)
        {
            continue;
        }

        for (k = 0; k < n; k++) {
            if (lens[k] == socklen
                && ngx_memcmp(&seen[k], &sa, socklen) == 0)
            {
                break;
            }
        }

        if (k < n) {
            continue;
        }

        /* one over the most there can be is enough to refuse */

        if (n == NGX_MESHGATE_REDIS_MAX_NODES + 1) {
            continue;
        }

        seen[n] = sa;
        lens[n++] = socklen;
    }

    return n;
}


/*
 * "MOVED <slot> <ip>:<port>": the slot lives there now; the map is asked
 * for again and the command goes there, once.  "ASK <slot> <ip>:<port>":
 * this key is being migrated there; the command goes there after
 * ASKING, once.
 */

ngx_int_t
ngx_meshgate_redis_redirect(ngx_meshgate_redis_t *rd,
    ngx_meshgate_redis_cmd_t *cmd, redisReply *reply)
{
    u_char                *p, *last, *colon, *sp;
    socklen_t              socklen;
    ngx_int_t              slot, port, n, rc;
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

    /* the last ':' (an IPv6 address has more) */

    for (colon = last; colon > p && colon[-1] != ':'; colon--) {
        /* void */
    }

    if (slot == NGX_ERROR || slot >= NGX_MESHGATE_REDIS_SLOTS
        || colon == p)
    {
        return NGX_DECLINED;
    }

    colon--;
    port = ngx_atoi(colon + 1, last - colon - 1);

    /* ":port" (an unknown endpoint, Redis 7): the node that answered */

    rc = (colon == p)
         ? ngx_meshgate_redis_same_host(rd->sockaddr, rd->socklen, port, &sa,
                                        &socklen)
         : ngx_meshgate_redis_parse_addr(p, colon - p, port, &sa, &socklen);

    if (rc != NGX_OK) {
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

    /*
     * ASKING is a command of its own, not a handshake: a node that does
     * not answer it times out as with any command instead of holding the
     * connection as still opening, and an error answer fails nothing but
     * the command after it
     */

    if (ask
        && ngx_meshgate_redis_queue(target, NULL, asking, sizeof(asking) - 1,
                                    ngx_meshgate_redis_asking_handler,
                                    NULL, NULL)
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


static void
ngx_meshgate_redis_asking_handler(void *data, ngx_int_t status,
    redisReply *reply)
{
    /* the command sent after ASKING has the answer that matters */
}


/*
 * An IP address (no name: the worker never resolves) and a port, both
 * usable: neither the unspecified address (0.0.0.0, ::), which Linux
 * connects to this host, nor port 0.
 */

ngx_int_t
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

    if (ngx_meshgate_redis_unspecified(&sa->sockaddr)) {
        return NGX_ERROR;
    }

    ngx_inet_set_port(&sa->sockaddr, (in_port_t) port);

    return NGX_OK;
}


/* the IP address of host, with another port */

static ngx_int_t
ngx_meshgate_redis_same_host(struct sockaddr *host, socklen_t hostlen,
    ngx_int_t port, ngx_sockaddr_t *sa, socklen_t *socklen)
{
    if (port < 1 || port > 65535
        || (host->sa_family != AF_INET
#if (NGX_HAVE_INET6)
            && host->sa_family != AF_INET6
#endif
           )
        || hostlen > sizeof(ngx_sockaddr_t))
    {
        return NGX_ERROR;
    }

    ngx_memzero(sa, sizeof(ngx_sockaddr_t));
    ngx_memcpy(sa, host, hostlen);
    *socklen = hostlen;

    ngx_inet_set_port(&sa->sockaddr, (in_port_t) port);

    return NGX_OK;
}


static ngx_uint_t
ngx_meshgate_redis_unspecified(struct sockaddr *sa)
{
#if (NGX_HAVE_INET6)
    struct in6_addr  *a6;

    if (sa->sa_family == AF_INET6) {
        a6 = &((struct sockaddr_in6 *) sa)->sin6_addr;

        /* "::ffff:0.0.0.0" is 0.0.0.0 too */

        return IN6_IS_ADDR_UNSPECIFIED(a6)
               || (IN6_IS_ADDR_V4MAPPED(a6)
                   && ngx_memcmp(&a6->s6_addr[12], "\0\0\0\0", 4) == 0);
    }
#endif

    return ((struct sockaddr_in *) sa)->sin_addr.s_addr == INADDR_ANY;
}


/* Redis Cluster's key slot: CRC16 (XMODEM) of the key or its {hash tag} */

static ngx_uint_t
ngx_meshgate_redis_slot(u_char *key, size_t len)
{
    u_char    *p, *last, *open, *close;
    uint16_t   crc;

    static const uint16_t  nibble[16] = {
        0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
        0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef
    };

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

    /* four bits at a time */

    for (p = key; p < last; p++) {
        crc = (uint16_t) (crc << 4) ^ nibble[(crc >> 12) ^ (*p >> 4)];
        crc = (uint16_t) (crc << 4) ^ nibble[(crc >> 12) ^ (*p & 0x0f)];
    }

    return crc & (NGX_MESHGATE_REDIS_SLOTS - 1);
}
