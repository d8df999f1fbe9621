
/*
 * Copyright (C) meshgate contributors
 */


/*
 * Active health-check answers (ngx_http_upstream_mesh_health.c): a probe
 * sends its request on a fake connection and reads the peer's answer in
 * chunks; the answer is judged complete by Content-Length or at close,
 * then by status line, status range and body pattern.
 *
 * Input: a flags byte (bit 0: a body pattern "ok|UP", bit 1: the peer
 * stays silent after the answer until the timeout, bit 2: statuses
 * 200-399 instead of 200-299), a chunk size byte (0: all at once), then
 * what the peer sends.  Checked: the probe ends exactly once, and a pass
 * has an "HTTP/1.x" status line with a status in range.
 *
 * max_len: 20000
 */


#include "ngx_fuzz.h"
#include "../../modules/upstream_mesh/ngx_http_upstream_mesh_health.c"
#include "ngx_fuzz_peer.h"


static u_char              *ngx_fuzz_health_start;
static ngx_uint_t           ngx_fuzz_health_results;
static ngx_uint_t           ngx_fuzz_health_ok;
static pcre2_code          *ngx_fuzz_health_re;


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                                  status;
    u_char                              *copy;
    size_t                               erroff;
    ngx_uint_t                           flags;
    struct sockaddr_in                   sin;
    ngx_http_upstream_srv_conf_t         uscf;
    ngx_http_upstream_mesh_srv_conf_t    mcf;
    ngx_http_upstream_mesh_peer_conf_t   peer;
    ngx_http_upstream_mesh_sh_t          sh;

    ngx_fuzz_init();

    if (size < 2) {
        return 0;
    }

    if (ngx_fuzz_health_re == NULL) {
        ngx_fuzz_health_re = pcre2_compile((PCRE2_SPTR) "ok|UP",
                                           PCRE2_ZERO_TERMINATED, 0,
                                           &status, &erroff, NULL);
        ngx_fuzz_assert(ngx_fuzz_health_re != NULL, "no pattern");
    }

    flags = data[0];

    copy = malloc(size - 2 + 1);
    ngx_memcpy(copy, data + 2, size - 2);

    ngx_fuzz_health_start = copy;
    ngx_fuzz_peer.in = copy;
    ngx_fuzz_peer.left = size - 2;
    ngx_fuzz_peer.chunk = data[1] ? data[1] : 65536;
    ngx_fuzz_peer.end = (flags & 0x02) ? NGX_AGAIN : 0;
    ngx_fuzz_peer.read_ready = 1;
    ngx_fuzz_peer.conn = NULL;
    ngx_fuzz_health_results = 0;

    ngx_memzero(&sin, sizeof(struct sockaddr_in));
    sin.sin_family = AF_INET;

    ngx_memzero(&peer, sizeof(ngx_http_upstream_mesh_peer_conf_t));
    peer.sockaddr = (struct sockaddr *) &sin;
    peer.socklen = sizeof(struct sockaddr_in);
    ngx_str_set(&peer.name, "127.0.0.1:8080");

    ngx_memzero(&uscf, sizeof(ngx_http_upstream_srv_conf_t));
    ngx_str_set(&uscf.host, "backend");

    ngx_memzero(&mcf, sizeof(ngx_http_upstream_mesh_srv_conf_t));
    mcf.uscf = &uscf;
    mcf.peers.elts = &peer;
    mcf.peers.nelts = 1;

    /* the shared state of a configured (not discovered) peer */
    ngx_memzero(&sh, sizeof(ngx_http_upstream_mesh_sh_t));
    mcf.sh = &sh;
    mcf.hc_type = NGX_HTTP_UPSTREAM_MESH_HC_HTTP;
    ngx_str_set(&mcf.hc_uri, "/health");
    mcf.hc_timeout = 1000;
    mcf.hc_status_min = 200;
    mcf.hc_status_max = (flags & 0x04) ? 399 : 299;
    mcf.hc_body = (flags & 0x01) ? ngx_fuzz_health_re : NULL;

    ngx_http_upstream_mesh_probe_start(&mcf, 0, ngx_fuzz_get_log());

    if (ngx_fuzz_health_results == 0 && ngx_fuzz_peer.conn) {
        ngx_fuzz_peer.conn->read->timedout = 1;
        ngx_fuzz_peer.conn->read->handler(ngx_fuzz_peer.conn->read);
    }

    ngx_fuzz_assert(ngx_fuzz_health_results == 1, "probe did not end once");

    if (ngx_fuzz_health_ok) {
        ngx_fuzz_assert(size - 2 >= 12
                        && ngx_strncmp(copy, "HTTP/1.", 7) == 0,
                        "pass without a status line");
        status = ngx_atoi(copy + 9, 3);
        ngx_fuzz_assert(status >= 200
                        && (ngx_uint_t) status <= mcf.hc_status_max,
                        "pass with a status out of range");
    }

    free(copy);

    return 0;
}


void
ngx_http_upstream_mesh_health_result(ngx_http_upstream_mesh_srv_conf_t *mcf,
    ngx_uint_t i, ngx_uint_t gen, ngx_uint_t ok, ngx_log_t *log)
{
    ngx_fuzz_health_results++;
    ngx_fuzz_health_ok = ok;
}


ngx_int_t
ngx_regex_exec(ngx_regex_t *re, ngx_str_t *s, int *captures, ngx_uint_t size)
{
    int                rc;
    pcre2_match_data  *md;

    md = pcre2_match_data_create(1, NULL);

    rc = pcre2_match(re, s->data, s->len, 0, 0, md, NULL);

    pcre2_match_data_free(md);

    return rc < 0 ? NGX_REGEX_NO_MATCHED : rc;
}
