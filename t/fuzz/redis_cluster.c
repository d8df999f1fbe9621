
/*
 * Copyright (C) meshgate contributors
 */


/*
 * The shared Redis client in Cluster and Sentinel mode, on what nodes and
 * sentinels answer: CLUSTER SLOTS (ngx_meshgate_redis_slots()), MOVED and
 * ASK (ngx_meshgate_redis_redirect(), _parse_addr()), the sentinel's
 * get-master-addr-by-name answer (ngx_meshgate_redis_primary()), ROLE
 * (ngx_meshgate_redis_not_primary()) and +switch-master messages
 * (ngx_meshgate_redis_switch_master()).  Replies come through the client's
 * read handler on fake connections: its reply pre-scan with the limits
 * production sets for each client, then hiredis's reader, as in a worker.
 *
 * Input: a flags byte (bit 0: Sentinel, else Cluster; bit 1: a password,
 * so AUTH goes first on every connection; bits 2-3: the read chunk size:
 * all, 1, 7 or 64 bytes), then segments separated by "\n===\n", each what
 * one connection sends, in this order:
 *   Cluster:  the CLUSTER SLOTS reply of the seed node; the reply of the
 *             node the map names for a GET (MOVED, ASK...); the reply of
 *             the node it was sent to then; the answer to CLUSTER SLOTS
 *             asked again (after MOVED, or a refresh).
 *   Sentinel: the sentinel's answer; the primary's replies (ROLE, then
 *             the GET's); the subscriber's (SUBSCRIBE's, then messages);
 *             the sentinel's answer when asked again.
 * Checked after each segment: at most 64 nodes, every slot names no node
 * or an existing one, every node and the primary an IPv4 or IPv6 address
 * with a port, neither 0 nor unspecified, and a printable name; a slot map
 * refused changes neither the map nor the nodes; no handshake but AUTH
 * holds a node's connection; every handler runs at most once; a command
 * follows one redirect at most.
 *
 * max_len: 8192
 */


#include "ngx_fuzz.h"
#include <arpa/inet.h>
#include "../../modules/common/ngx_meshgate_redis.c"
#include "../../modules/common/ngx_meshgate_redis_reply.c"
#include "../../modules/common/ngx_meshgate_redis_conf.c"
#include "../../modules/common/ngx_meshgate_redis_cluster.c"
#include "../../modules/common/ngx_meshgate_redis_sentinel.c"
#include "../../modules/common/ngx_meshgate_redis_tls.c"
#include "ngx_fuzz_peer.h"


#define NGX_FUZZ_CL_SEGMENTS  4
#define NGX_FUZZ_CL_CMDS      4


typedef struct {
    ngx_uint_t                   calls;
    ngx_meshgate_redis_cmd_t    *cmd;
} ngx_fuzz_cl_call_t;


static void ngx_fuzz_cl_cluster(ngx_meshgate_redis_t *rd, ngx_str_t *seg);
static void ngx_fuzz_cl_sentinel(ngx_meshgate_redis_t *rd, ngx_str_t *seg);
static ngx_int_t ngx_fuzz_cl_get(ngx_meshgate_redis_t *rd, char *key);
static void ngx_fuzz_cl_handler(void *data, ngx_int_t status,
    redisReply *reply);
static void ngx_fuzz_cl_pump(ngx_meshgate_redis_t *rd, ngx_str_t *seg);
static void ngx_fuzz_cl_pump_map(ngx_meshgate_redis_t *rd, ngx_str_t *seg);
static void ngx_fuzz_cl_ready(void *data, ngx_uint_t ok);
static void ngx_fuzz_cl_check_map(ngx_meshgate_redis_t *rd);
static ngx_uint_t ngx_fuzz_cl_over(u_char *p, size_t n, ngx_uint_t max);
static void ngx_fuzz_cl_check_addr(struct sockaddr *sa, socklen_t socklen,
    ngx_str_t *name);
static void ngx_fuzz_cl_check_calls(void);


static ngx_uint_t           ngx_fuzz_cl_issued;
static ngx_fuzz_cl_call_t   ngx_fuzz_cl_calls[NGX_FUZZ_CL_CMDS];
static ngx_uint_t           ngx_fuzz_cl_maps;
static u_char               ngx_fuzz_cl_slots[NGX_MESHGATE_REDIS_SLOTS];


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                *copy, *p, *last, *sep;
    ngx_str_t              seg[NGX_FUZZ_CL_SEGMENTS];
    ngx_uint_t             flags, i;
    ngx_addr_t            *addr;
    ngx_conf_t             cf;
    ngx_array_t           *nodes;
    ngx_meshgate_redis_t  *rd;
    struct sockaddr_in    *sin;

    static size_t          chunks[] = { 16384, 1, 7, 64 };

    ngx_fuzz_init();

    if (size < 1) {
        return 0;
    }

    flags = data[0];

    copy = malloc(size);
    ngx_memcpy(copy, data + 1, size - 1);

    p = copy;
    last = copy + size - 1;

    for (i = 0; i < NGX_FUZZ_CL_SEGMENTS; i++) {
        sep = memmem(p, last - p, "\n===\n", 5);
        seg[i].data = p;
        seg[i].len = sep ? (size_t) (sep - p) : (size_t) (last - p);
        p = sep ? sep + 5 : last;
    }

    ngx_fuzz_peer.chunk = chunks[(flags >> 2) & 0x03];
    ngx_fuzz_peer.end = NGX_AGAIN;
    ngx_fuzz_cl_issued = 0;
    ngx_fuzz_cl_maps = 0;
    ngx_memzero(ngx_fuzz_cl_calls, sizeof(ngx_fuzz_cl_calls));

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, ngx_fuzz_get_log());
    cf.log = ngx_fuzz_get_log();

    rd = ngx_meshgate_redis_create(&cf);

    /* three seed nodes, or three sentinels: 127.0.0.1:7000-7002 */

    nodes = ngx_array_create(cf.pool, 3, sizeof(ngx_addr_t));

    for (i = 0; i < 3; i++) {
        addr = ngx_array_push(nodes);
        sin = ngx_pcalloc(cf.pool, sizeof(struct sockaddr_in));
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sin->sin_port = htons(7000 + i);
        addr->sockaddr = (struct sockaddr *) sin;
        addr->socklen = sizeof(struct sockaddr_in);
        addr->name.data = ngx_pnalloc(cf.pool, NGX_SOCKADDR_STRLEN);
        addr->name.len = ngx_sock_ntop(addr->sockaddr, addr->socklen,
                                       addr->name.data, NGX_SOCKADDR_STRLEN,
                                       1);
    }

    if (flags & 0x02) {
        ngx_str_set(&rd->password, "secret");
    }

    if (flags & 0x01) {
        rd->sentinels = nodes;
        ngx_str_set(&rd->master, "mymaster");

    } else {
        rd->cluster = nodes;
    }

    /* what rate_limit asks for: a reply of 64 keys of 16 values at most */

    ngx_meshgate_redis_limit_replies(rd, 1 + 64 * 16, 1, 4096);

    ngx_fuzz_assert(ngx_meshgate_redis_init(&cf, rd) == NGX_CONF_OK,
                    "configuration refused");

    ngx_meshgate_redis_on_ready(rd, ngx_fuzz_cl_ready, NULL);

    if (flags & 0x01) {
        ngx_fuzz_cl_sentinel(rd, seg);

    } else {
        ngx_fuzz_cl_cluster(rd, seg);
    }

    ngx_meshgate_redis_close(rd);

    ngx_fuzz_cl_check_calls();

    ngx_destroy_pool(cf.pool);
    free(copy);

    return 0;
}


static void
ngx_fuzz_cl_cluster(ngx_meshgate_redis_t *rd, ngx_str_t *seg)
{
    ngx_uint_t             i;
    ngx_meshgate_redis_t  *node;

    /* the map, from the first seed node */

    if (ngx_meshgate_redis_ready(rd) == 0) {
        ngx_fuzz_cl_pump_map(rd, &seg[0]);
    }

    ngx_fuzz_cl_check_map(rd);

    /* a command to the node of its slot, and where it is redirected */

    if (ngx_fuzz_cl_get(rd, "user:1") == NGX_OK) {
        node = ngx_fuzz_cl_calls[0].cmd->rd;
        ngx_fuzz_cl_pump(node, &seg[1]);
        ngx_fuzz_cl_check_map(rd);

        if (ngx_fuzz_cl_calls[0].calls == 0) {
            node = ngx_fuzz_cl_calls[0].cmd->rd;
            ngx_fuzz_cl_pump(node, &seg[2]);
            ngx_fuzz_cl_check_map(rd);
        }
    }

    /* the map asked again (MOVED), or refreshed */

    ngx_meshgate_redis_refresh(rd);

    if (rd->control_cmd) {
        ngx_fuzz_cl_pump_map(rd, &seg[3]);
        ngx_fuzz_cl_check_map(rd);
    }

    /* the map as it is now routes every slot somewhere */

    if (ngx_fuzz_cl_get(rd, "{user:1}:2") == NGX_OK) {
        ngx_fuzz_cl_check_map(rd);
    }

    ngx_fuzz_assert(rd->stats.redirects <= ngx_fuzz_cl_issued,
                    "more redirects than commands");

    for (i = 0; i < rd->nnodes; i++) {
        ngx_fuzz_assert(rd->nodes[i]->parent == rd, "node of no cluster");
    }
}


static void
ngx_fuzz_cl_sentinel(ngx_meshgate_redis_t *rd, ngx_str_t *seg)
{
    /* the first command asks the sentinels */

    (void) ngx_fuzz_cl_get(rd, "user:1");

    if (rd->sentinel->conn) {
        ngx_fuzz_cl_pump(rd->sentinel, &seg[0]);
    }

    ngx_fuzz_cl_check_map(rd);

    if (rd->conn) {
        ngx_fuzz_cl_pump(rd, &seg[1]);
        ngx_fuzz_cl_check_map(rd);
    }

    if (rd->subscriber->conn) {
        ngx_fuzz_cl_pump(rd->subscriber, &seg[2]);
        ngx_fuzz_cl_check_map(rd);
    }

    /* after a failover or a refused ROLE: asked again */

    rd->down = 0;
    (void) ngx_fuzz_cl_get(rd, "user:2");

    if (rd->sentinel->conn && rd->sentinel_cmd) {
        ngx_fuzz_cl_pump(rd->sentinel, &seg[3]);
        ngx_fuzz_cl_check_map(rd);
    }
}


static ngx_int_t
ngx_fuzz_cl_get(ngx_meshgate_redis_t *rd, char *key)
{
    const char          *argv[2];
    size_t               lens[2];
    ngx_fuzz_cl_call_t  *call;

    if (ngx_fuzz_cl_issued == NGX_FUZZ_CL_CMDS) {
        return NGX_DECLINED;
    }

    argv[0] = "GET";
    lens[0] = 3;
    argv[1] = key;
    lens[1] = ngx_strlen(key);

    call = &ngx_fuzz_cl_calls[ngx_fuzz_cl_issued];

    if (ngx_meshgate_redis_command(rd, NULL, 2, argv, lens,
                                   ngx_fuzz_cl_handler, call, &call->cmd)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    ngx_fuzz_cl_issued++;

    return NGX_OK;
}


static void
ngx_fuzz_cl_handler(void *data, ngx_int_t status, redisReply *reply)
{
    ngx_fuzz_cl_call_t  *call = data;

    call->calls++;

    ngx_fuzz_assert((status == NGX_MESHGATE_REDIS_OK) == (reply != NULL),
                    "reply and status disagree");
}


/* what nginx's event loop does for a connection: write, then read */

static void
ngx_fuzz_cl_pump(ngx_meshgate_redis_t *rd, ngx_str_t *seg)
{
    ngx_fuzz_peer.in = seg->data;
    ngx_fuzz_peer.left = seg->len;

    if (rd->conn) {
        rd->conn->write->handler(rd->conn->write);
    }

    if (rd->conn) {
        rd->conn->read->handler(rd->conn->read);
    }

    ngx_fuzz_peer.left = 0;
}


/* CLUSTER SLOTS answered: a map refused changes nothing */

static void
ngx_fuzz_cl_pump_map(ngx_meshgate_redis_t *rd, ngx_str_t *seg)
{
    ngx_uint_t  maps, nnodes;

    maps = ngx_fuzz_cl_maps;
    nnodes = rd->nnodes;
    ngx_memcpy(ngx_fuzz_cl_slots, rd->slots, NGX_MESHGATE_REDIS_SLOTS);

    ngx_fuzz_cl_pump(rd->control, seg);

    if (ngx_fuzz_cl_maps == maps) {
        ngx_fuzz_assert(rd->nnodes == nnodes, "a refused map added nodes");
        ngx_fuzz_assert(ngx_memcmp(ngx_fuzz_cl_slots, rd->slots,
                                   NGX_MESHGATE_REDIS_SLOTS) == 0,
                        "a refused map changed the slots");
    }
}


static void
ngx_fuzz_cl_ready(void *data, ngx_uint_t ok)
{
    if (ok) {
        ngx_fuzz_cl_maps++;
    }
}


static void
ngx_fuzz_cl_check_map(ngx_meshgate_redis_t *rd)
{
    ngx_uint_t  i;

    if (rd->sentinels) {
        if (rd->primary_known) {
            ngx_fuzz_assert(rd->sockaddr == &rd->primary.sockaddr,
                            "primary not the one named");
            ngx_fuzz_cl_check_addr(rd->sockaddr, rd->socklen, &rd->name);
        }

        return;
    }

    ngx_fuzz_assert(rd->nnodes <= NGX_MESHGATE_REDIS_MAX_NODES,
                    "too many nodes");

    ngx_fuzz_assert(rd->slots == NULL
                    || !ngx_fuzz_cl_over(rd->slots, NGX_MESHGATE_REDIS_SLOTS,
                                         rd->nnodes),
                    "a slot names no node");

    for (i = 0; i < rd->nnodes; i++) {
        ngx_fuzz_cl_check_addr(rd->nodes[i]->sockaddr,
                               rd->nodes[i]->socklen, &rd->nodes[i]->name);

        /* AUTH at most: ASKING is no handshake (it held the connection) */

        ngx_fuzz_assert(rd->nodes[i]->handshakes
                        <= (rd->password.len ? 1 : 0),
                        "a handshake beyond AUTH");
    }
}


/*
 * Whether a byte of p is over max (at most 127), 8 bytes at a time: a
 * loop over every slot was most of the run time (coverage tracing)
 */

static ngx_uint_t
ngx_fuzz_cl_over(u_char *p, size_t n, ngx_uint_t max)
{
    size_t     i;
    uint64_t   w, ones, highs;

    ones = 0x0101010101010101ULL;
    highs = ones * 0x80;

    for (i = 0; i + 8 <= n; i += 8) {
        ngx_memcpy(&w, p + i, 8);

        /* a byte over max gets its high bit from the sum or has it */

        if (((w + ones * (127 - max)) | w) & highs) {
            return 1;
        }
    }

    return 0;
}


static void
ngx_fuzz_cl_check_addr(struct sockaddr *sa, socklen_t socklen,
    ngx_str_t *name)
{
    size_t                i;
    struct sockaddr_in   *sin;
    struct sockaddr_in6  *sin6;

    for (i = 0; i < name->len; i++) {
        ngx_fuzz_assert(name->data[i] > 0x20 && name->data[i] < 0x7f,
                        "node name not printable");
    }

    switch (sa->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) sa;
        ngx_fuzz_assert(socklen == sizeof(struct sockaddr_in),
                        "IPv4 address length");
        ngx_fuzz_assert(sin->sin_port != 0, "port 0");
        ngx_fuzz_assert(sin->sin_addr.s_addr != INADDR_ANY,
                        "unspecified IPv4 address");
        break;

    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) sa;
        ngx_fuzz_assert(socklen == sizeof(struct sockaddr_in6),
                        "IPv6 address length");
        ngx_fuzz_assert(sin6->sin6_port != 0, "port 0");
        ngx_fuzz_assert(!IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr)
                        && !(IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)
                             && ngx_memcmp(&sin6->sin6_addr.s6_addr[12],
                                           "\0\0\0\0", 4) == 0),
                        "unspecified IPv6 address");
        break;

    default:
        ngx_fuzz_assert(0, "not an IP address");
    }
}


static void
ngx_fuzz_cl_check_calls(void)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_FUZZ_CL_CMDS; i++) {
        ngx_fuzz_assert(ngx_fuzz_cl_calls[i].calls <= 1,
                        "handler called twice");
    }
}


/*
 * nginx's address functions (ngx_inet.c), from their documented
 * behaviour: a dotted quad of decimal octets; IPv6 text; "addr:port",
 * "[addr]:port".
 */

in_addr_t
ngx_inet_addr(u_char *text, size_t len)
{
    u_char      *p, c;
    in_addr_t    addr;
    ngx_uint_t   octet, n;

    addr = 0;
    octet = 0;
    n = 0;

    for (p = text; p < text + len; p++) {
        c = *p;

        if (c >= '0' && c <= '9') {
            octet = octet * 10 + (c - '0');

            if (octet > 255) {
                return INADDR_NONE;
            }

            continue;
        }

        if (c == '.') {
            addr = (addr << 8) + octet;
            octet = 0;
            n++;
            continue;
        }

        return INADDR_NONE;
    }

    if (n == 3) {
        addr = (addr << 8) + octet;
        return htonl(addr);
    }

    return INADDR_NONE;
}


ngx_int_t
ngx_inet6_addr(u_char *p, size_t len, u_char *addr)
{
    char  text[64];

    if (len == 0 || len >= sizeof(text) || memchr(p, '\0', len)) {
        return NGX_ERROR;
    }

    ngx_memcpy(text, p, len);
    text[len] = '\0';

    return inet_pton(AF_INET6, text, addr) == 1 ? NGX_OK : NGX_ERROR;
}


void
ngx_inet_set_port(struct sockaddr *sa, in_port_t port)
{
    if (sa->sa_family == AF_INET6) {
        ((struct sockaddr_in6 *) sa)->sin6_port = htons(port);

    } else {
        ((struct sockaddr_in *) sa)->sin_port = htons(port);
    }
}


size_t
ngx_sock_ntop(struct sockaddr *sa, socklen_t socklen, u_char *text,
    size_t len, ngx_uint_t port)
{
    char                  ip[INET6_ADDRSTRLEN];
    u_char               *p;
    struct sockaddr_in   *sin;
    struct sockaddr_in6  *sin6;

    switch (sa->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) sa;
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        p = port ? ngx_snprintf(text, len, "%s:%d", ip,
                                ntohs(sin->sin_port))
                 : ngx_snprintf(text, len, "%s", ip);
        return p - text;

    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        p = port ? ngx_snprintf(text, len, "[%s]:%d", ip,
                                ntohs(sin6->sin6_port))
                 : ngx_snprintf(text, len, "%s", ip);
        return p - text;

    default:
        return 0;
    }
}
