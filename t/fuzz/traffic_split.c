
/*
 * Copyright (C) meshgate contributors
 */


/*
 * The traffic_split API's weights (ngx_http_traffic_split_parse_weights()
 * on the "weights" object of a request body, as
 * ngx_http_traffic_split_change() parses it) and the state file
 * (ngx_http_traffic_split_load_state(), read from a file the harness
 * writes), in ngx_http_traffic_split_api.c.
 *
 * Input: a flags byte (bits 0-1: variants - 1, bits 2-3: the "*"
 * variant's index, none if beyond the variants, bit 4: a rollout is
 * configured), then a JSON document, used both as a request body and as
 * the state file (seeds: {"splits": {"web": {"conf": "1234abcd", ...}}}).
 * Checked: weights accepted are in hundredths of a percent from 0 to
 * 10000, the number given to two decimals, only for variants that exist;
 * a state file loaded gives every variant a weight, summing to 100 %, and
 * a known rollout status; one that is not leaves the weights as they were.
 *
 * max_len: 4096
 */


#include "ngx_fuzz.h"
#include <jansson.h>
#include "../../modules/common/ngx_meshgate_escape.c"
#include "../../modules/common/ngx_meshgate_http.c"
#include "../../modules/traffic_split/ngx_http_traffic_split_api.c"
#include "../../modules/traffic_split/ngx_http_traffic_split_state.c"
#include "../../modules/traffic_split/ngx_http_traffic_split_select.c"
#include "../../modules/traffic_split/ngx_http_traffic_split_rollout.c"


#define NGX_FUZZ_TS_CRC  0x1234abcd


static void ngx_fuzz_ts_body(ngx_http_traffic_split_conf_t *scf,
    u_char *data, size_t len);
static void ngx_fuzz_ts_state(ngx_http_traffic_split_conf_t *scf,
    u_char *data, size_t len);


static ngx_str_t  ngx_fuzz_ts_names[] = {
    ngx_string("stable"), ngx_string("canary"), ngx_string("b"),
    ngx_string("c")
};

static char  ngx_fuzz_ts_path[64];


static void
ngx_fuzz_ts_unlink(void)
{
    (void) unlink(ngx_fuzz_ts_path);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                            *copy;
    ngx_uint_t                         i, flags;
    ngx_http_traffic_split_node_t     *node;
    ngx_http_traffic_split_conf_t      scf;
    ngx_http_traffic_split_rollout_t   ro;
    ngx_http_traffic_split_variant_t   v[4];

    ngx_fuzz_init();

    if (size < 1) {
        return 0;
    }

    flags = data[0];

    copy = malloc(size);
    ngx_memcpy(copy, data + 1, size - 1);

    ngx_memzero(&scf, sizeof(ngx_http_traffic_split_conf_t));
    ngx_memzero(&ro, sizeof(ngx_http_traffic_split_rollout_t));
    ngx_memzero(v, sizeof(v));

    ngx_str_set(&scf.name, "web");
    scf.crc = NGX_FUZZ_TS_CRC;
    scf.variants.elts = v;
    scf.variants.nelts = (flags & 0x03) + 1;
    scf.variants.size = sizeof(ngx_http_traffic_split_variant_t);
    scf.star = (flags >> 2) & 0x03;
    scf.rollout = (flags & 0x10) ? &ro : NULL;

    if ((ngx_uint_t) scf.star >= scf.variants.nelts) {
        scf.star = -1;
    }

    for (i = 0; i < scf.variants.nelts; i++) {
        v[i].name = ngx_fuzz_ts_names[i];
        v[i].star = (ngx_int_t) i == scf.star;
    }

    /* the split's state, as its zone holds it: the configured weights */

    node = calloc(1, sizeof(ngx_http_traffic_split_node_t));
    node->nvariants = scf.variants.nelts;
    node->weights[0] = NGX_HTTP_TRAFFIC_SPLIT_SCALE;
    scf.node = node;

    ngx_fuzz_ts_body(&scf, copy, size - 1);
    ngx_fuzz_ts_state(&scf, copy, size - 1);

    free(node);
    free(copy);

    return 0;
}


static void
ngx_fuzz_ts_body(ngx_http_traffic_split_conf_t *scf, u_char *data,
    size_t len)
{
    double         d;
    json_t        *body, *weights, *value;
    ngx_uint_t     i, given;
    const char    *err, *key;
    json_error_t   jerr;
    ngx_uint_t     w[NGX_HTTP_TRAFFIC_SPLIT_VARIANTS];

    /* as ngx_http_traffic_split_change() reads a body */

    body = json_loadb((char *) data, len, JSON_REJECT_DUPLICATES, &jerr);

    if (body == NULL) {
        return;
    }

    weights = json_object_get(body, "weights");

    if (!json_is_object(weights)) {
        json_decref(body);
        return;
    }

    for (i = 0; i < NGX_HTTP_TRAFFIC_SPLIT_VARIANTS; i++) {
        w[i] = 7;
    }

    err = ngx_http_traffic_split_parse_weights(scf, weights, w, &given);

    ngx_fuzz_assert(given < (1u << scf->variants.nelts),
                    "a weight for a variant that does not exist");

    for (i = scf->variants.nelts; i < NGX_HTTP_TRAFFIC_SPLIT_VARIANTS; i++) {
        ngx_fuzz_assert(w[i] == 7, "written beyond the variants");
    }

    if (err != NULL) {
        json_decref(body);
        return;
    }

    ngx_fuzz_assert(given == 0 || json_object_size(weights) > 0,
                    "weights given by an empty object");

    json_object_foreach(weights, key, value) {
        for (i = 0; i < scf->variants.nelts; i++) {
            if (ngx_strcmp(key, ngx_fuzz_ts_names[i].data) == 0) {
                break;
            }
        }

        ngx_fuzz_assert(i < scf->variants.nelts && (given & (1u << i)),
                        "an accepted weight for an unknown variant");
        ngx_fuzz_assert(json_is_number(value), "a weight not a number");

        d = json_number_value(value) * 100;

        ngx_fuzz_assert(w[i] <= NGX_HTTP_TRAFFIC_SPLIT_SCALE
                        && d - (double) w[i] < 1e-3
                        && (double) w[i] - d < 1e-3,
                        "weight differs from the number given");
    }

    json_decref(body);
}


static void
ngx_fuzz_ts_state(ngx_http_traffic_split_conf_t *scf, u_char *data,
    size_t len)
{
    int                             fd;
    ngx_int_t                       rc;
    ngx_uint_t                      i, sum;
    ngx_http_traffic_split_node_t   before;

    if (ngx_fuzz_ts_path[0] == '\0') {
        snprintf(ngx_fuzz_ts_path, sizeof(ngx_fuzz_ts_path),
                 "/tmp/meshgate-fuzz-ts-%d.json", (int) getpid());
        atexit(ngx_fuzz_ts_unlink);
    }

    fd = open(ngx_fuzz_ts_path, O_WRONLY|O_CREAT|O_TRUNC, 0600);
    ngx_fuzz_assert(fd != -1, "cannot write the state file");
    ngx_fuzz_assert(write(fd, data, len) == (ssize_t) len,
                    "cannot write the state file");
    close(fd);

    scf->state.data = (u_char *) ngx_fuzz_ts_path;
    scf->state.len = ngx_strlen(ngx_fuzz_ts_path);

    before = *scf->node;

    rc = ngx_http_traffic_split_load_state(scf, ngx_fuzz_get_log());

    if (rc != NGX_OK) {
        ngx_fuzz_assert(ngx_memcmp(before.weights, scf->node->weights,
                                   sizeof(before.weights)) == 0
                        && before.status == scf->node->status,
                        "a state file refused changed the state");
        return;
    }

    sum = 0;

    for (i = 0; i < scf->variants.nelts; i++) {
        ngx_fuzz_assert(scf->node->weights[i] <= NGX_HTTP_TRAFFIC_SPLIT_SCALE,
                        "a weight over 100 %");
        sum += scf->node->weights[i];
    }

    ngx_fuzz_assert(sum == NGX_HTTP_TRAFFIC_SPLIT_SCALE,
                    "weights loaded do not sum to 100 %");
    ngx_fuzz_assert(scf->node->status <= NGX_HTTP_TRAFFIC_SPLIT_ABORTED
                    && (scf->rollout
                        || scf->node->status == NGX_HTTP_TRAFFIC_SPLIT_NONE),
                    "unknown rollout status loaded");
}
