
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>
#include "ngx_http_traffic_split.h"
#include "ngx_meshgate_escape.h"
#include "ngx_meshgate_http.h"
#include "ngx_meshgate_prometheus.h"


static ngx_int_t ngx_http_traffic_split_route(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t **scf, ngx_uint_t *rollout);
static void ngx_http_traffic_split_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_traffic_split_change(ngx_http_request_t *r,
    u_char *data, size_t len);
static ngx_int_t ngx_http_traffic_split_set_weights(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, json_t *body);
static ngx_int_t ngx_http_traffic_split_action(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, json_t *body);
static ngx_int_t ngx_http_traffic_split_changed(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf);
static ngx_int_t ngx_http_traffic_split_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *reason);
static ngx_int_t ngx_http_traffic_split_send(ngx_http_request_t *r,
    ngx_uint_t status, json_t *doc);
static json_t *ngx_http_traffic_split_json(ngx_http_traffic_split_conf_t *scf);
static json_t *ngx_http_traffic_split_json_rollout(
    ngx_http_traffic_split_conf_t *scf);
static json_t *ngx_http_traffic_split_json_variants(
    ngx_http_traffic_split_conf_t *scf, ngx_uint_t *w);
static json_t *ngx_http_traffic_split_json_str(ngx_str_t *s);
static u_char *ngx_http_traffic_split_series(u_char *p, char *metric,
    ngx_http_traffic_split_conf_t *scf, ngx_str_t *variant);

ngx_chain_t *ngx_http_traffic_split_prometheus(ngx_pool_t *pool,
    ngx_log_t *log);


/*
 * The API, in a prefix location:
 *
 *     GET   PREFIX                 every split
 *     GET   PREFIX/NAME            one split
 *     PUT   PREFIX/NAME            {"weights": {VARIANT: PERCENT, ...}}
 *     PATCH PREFIX/NAME            the same, for some variants
 *     POST  PREFIX/NAME/rollout    {"action": "pause|resume|restart|abort"}
 */

ngx_int_t
ngx_http_traffic_split_api_handler(ngx_http_request_t *r)
{
    json_t                              *doc, *splits, *one;
    ngx_int_t                            rc;
    ngx_uint_t                           i, rollout;
    ngx_http_traffic_split_conf_t       *scf, **scfp;
    ngx_http_traffic_split_main_conf_t  *mcf;

    if (r->method & (NGX_HTTP_PUT|NGX_HTTP_PATCH|NGX_HTTP_POST)) {

        /*
         * nginx skips the access phase (allow, deny, auth modules) for
         * subrequests, and a mirror subrequest keeps the client's method:
         * changes come from main requests only
         */

        if (r != r->main) {
            return ngx_http_traffic_split_error(r, NGX_HTTP_FORBIDDEN,
                                                "no changes from a "
                                                "subrequest");
        }

        if (r->headers_in.content_length_n
            > NGX_HTTP_TRAFFIC_SPLIT_BODY_MAX)
        {
            ngx_http_discard_request_body(r);
            return ngx_http_traffic_split_error(r, NGX_HTTP_BAD_REQUEST,
                                                "request body too large");
        }

        rc = ngx_http_read_client_request_body(r,
                                               ngx_http_traffic_split_body);

        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_traffic_split_route(r, &scf, &rollout) != NGX_OK) {
        return ngx_http_traffic_split_error(r, NGX_HTTP_NOT_FOUND,
                                            "no such split");
    }

    if (scf) {
        return ngx_http_traffic_split_send(r, NGX_HTTP_OK,
                                           ngx_http_traffic_split_json(scf));
    }

    mcf = ngx_http_traffic_split_mcf();

    doc = ngx_http_traffic_split_doc(&splits);
    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    scfp = mcf->splits.elts;

    for (i = 0; i < mcf->splits.nelts; i++) {
        one = ngx_http_traffic_split_json(scfp[i]);

        if (one == NULL) {
            json_decref(doc);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        (void) json_object_setn_new(splits, (char *) scfp[i]->name.data,
                                    scfp[i]->name.len, one);
    }

    return ngx_http_traffic_split_send(r, NGX_HTTP_OK, doc);
}


/* the split and whether ".../rollout" follows it, from the URI */

static ngx_int_t
ngx_http_traffic_split_route(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t **scf, ngx_uint_t *rollout)
{
    u_char                              *p, *last, *slash;
    ngx_str_t                            name, rest;
    ngx_uint_t                           i;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_traffic_split_conf_t      **scfp;
    ngx_http_traffic_split_main_conf_t  *mcf;

    *scf = NULL;
    *rollout = 0;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    p = r->uri.data;
    last = r->uri.data + r->uri.len;

    if (r->uri.len >= clcf->name.len
        && ngx_strncmp(r->uri.data, clcf->name.data, clcf->name.len) == 0)
    {
        p += clcf->name.len;
    }

    while (p < last && *p == '/') {
        p++;
    }

    while (last > p && last[-1] == '/') {
        last--;
    }

    if (p == last) {
        return NGX_OK;
    }

    slash = ngx_strlchr(p, last, '/');

    name.data = p;
    name.len = (slash ? slash : last) - p;

    if (slash) {
        rest.data = slash + 1;
        rest.len = last - rest.data;

        if (rest.len != 7 || ngx_strncmp(rest.data, "rollout", 7) != 0) {
            return NGX_DECLINED;
        }

        *rollout = 1;
    }

    mcf = ngx_http_traffic_split_mcf();
    scfp = mcf->splits.elts;

    for (i = 0; i < mcf->splits.nelts; i++) {
        if (scfp[i]->name.len == name.len
            && ngx_strncmp(scfp[i]->name.data, name.data, name.len) == 0)
        {
            *scf = scfp[i];
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


static void
ngx_http_traffic_split_body(ngx_http_request_t *r)
{
    u_char       *data, *p;
    size_t        len;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (r->request_body == NULL || r->request_body->temp_file) {
        ngx_http_finalize_request(r,
            ngx_http_traffic_split_error(r, NGX_HTTP_BAD_REQUEST,
                                         r->request_body
                                         ? "request body too large"
                                         : "no request body"));
        return;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file && !ngx_buf_in_memory(b)) {
            len = NGX_HTTP_TRAFFIC_SPLIT_BODY_MAX + 1;
            break;
        }

        len += b->last - b->pos;
    }

    if (len > NGX_HTTP_TRAFFIC_SPLIT_BODY_MAX) {
        ngx_http_finalize_request(r,
            ngx_http_traffic_split_error(r, NGX_HTTP_BAD_REQUEST,
                                         "request body too large"));
        return;
    }

    data = ngx_pnalloc(r->pool, len + 1);
    if (data == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = data;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    *p = '\0';

    ngx_http_finalize_request(r, ngx_http_traffic_split_change(r, data, len));
}


static ngx_int_t
ngx_http_traffic_split_change(ngx_http_request_t *r, u_char *data, size_t len)
{
    json_t                         *body;
    json_error_t                    jerr;
    ngx_int_t                       rc;
    ngx_uint_t                      rollout;
    ngx_http_traffic_split_conf_t  *scf;

    if (ngx_http_traffic_split_route(r, &scf, &rollout) != NGX_OK
        || scf == NULL)
    {
        return ngx_http_traffic_split_error(r, NGX_HTTP_BAD_REQUEST,
                                            "unknown split: name one in the "
                                            "URI");
    }

    if (len == 0) {
        return ngx_http_traffic_split_error(r, NGX_HTTP_BAD_REQUEST,
                                            "no request body");
    }

    /*
     * not ngx_meshgate_json_parse(): its error line quotes jansson's text,
     * which quotes the client's bytes; the one line here is our reason
     */

    body = json_loadb((char *) data, len, JSON_REJECT_DUPLICATES, &jerr);

    if (body == NULL) {
        return ngx_http_traffic_split_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid JSON");
    }

    if (!json_is_object(body)) {
        json_decref(body);
        return ngx_http_traffic_split_error(r, NGX_HTTP_BAD_REQUEST,
                                            "the body is no JSON object");
    }

    if (rollout) {
        rc = ngx_http_traffic_split_action(r, scf, body);

    } else if (r->method == NGX_HTTP_POST) {
        rc = NGX_HTTP_NOT_ALLOWED;

    } else {
        rc = ngx_http_traffic_split_set_weights(r, scf, body);
    }

    json_decref(body);

    return rc;
}


static ngx_int_t
ngx_http_traffic_split_set_weights(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, json_t *body)
{
    json_t                         *weights;
    ngx_uint_t                      i, sum, given;
    const char                     *err;
    ngx_http_traffic_split_node_t  *node;
    ngx_uint_t                      w[NGX_HTTP_TRAFFIC_SPLIT_VARIANTS];

    weights = json_object_get(body, "weights");

    if (!json_is_object(weights) || json_object_size(body) != 1) {
        return ngx_http_traffic_split_error(r, NGX_HTTP_BAD_REQUEST,
                       "the body must be {\"weights\": {VARIANT: PERCENT}}");
    }

    node = scf->node;

    ngx_shmtx_lock(&scf->shpool->mutex);

    ngx_http_traffic_split_read_weights(scf, w);

    err = ngx_http_traffic_split_parse_weights(scf, weights, w, &given);

    if (err == NULL && r->method == NGX_HTTP_PUT
        && given != (1u << scf->variants.nelts) - 1)
    {
        err = "PUT names every variant (PATCH changes some)";
    }

    if (err == NULL) {

        /* a "*" variant not named takes what the others leave */

        if (scf->star != -1 && !(given & (1u << scf->star))) {
            sum = 0;

            for (i = 0; i < scf->variants.nelts; i++) {
                if ((ngx_int_t) i != scf->star) {
                    sum += w[i];
                }
            }

            w[scf->star] = (sum <= NGX_HTTP_TRAFFIC_SPLIT_SCALE)
                           ? NGX_HTTP_TRAFFIC_SPLIT_SCALE - sum : 0;
        }

        sum = 0;

        for (i = 0; i < scf->variants.nelts; i++) {
            sum += w[i];
        }

        if (sum != NGX_HTTP_TRAFFIC_SPLIT_SCALE) {
            err = "the weights do not sum to 100";
        }
    }

    if (err) {
        ngx_shmtx_unlock(&scf->shpool->mutex);
        return ngx_http_traffic_split_error(r, NGX_HTTP_BAD_REQUEST, err);
    }

    ngx_http_traffic_split_write_weights(scf, w);

    /* an operator's weights stop a running rollout */

    if (node->status == NGX_HTTP_TRAFFIC_SPLIT_RUNNING) {
        node->status = NGX_HTTP_TRAFFIC_SPLIT_PAUSED;
    }

    ngx_shmtx_unlock(&scf->shpool->mutex);

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "traffic split \"%V\": weights changed by the API",
                  &scf->name);

    return ngx_http_traffic_split_changed(r, scf);
}


/* JSON weights into w[] (hundredths of a percent); a reason on error */

const char *
ngx_http_traffic_split_parse_weights(ngx_http_traffic_split_conf_t *scf,
    json_t *weights, ngx_uint_t *w, ngx_uint_t *given)
{
    double                             d;
    json_t                            *value;
    ngx_uint_t                         i;
    const char                        *key;
    long long                          n;
    ngx_http_traffic_split_variant_t  *v;

    v = scf->variants.elts;
    *given = 0;

    json_object_foreach(weights, key, value) {

        for (i = 0; i < scf->variants.nelts; i++) {
            if (ngx_strlen(key) == v[i].name.len
                && ngx_strncmp(key, v[i].name.data, v[i].name.len) == 0)
            {
                break;
            }
        }

        if (i == scf->variants.nelts) {
            return "unknown variant";
        }

        if (!json_is_number(value)) {
            return "a weight is a number from 0 to 100";
        }

        d = json_number_value(value) * 100;

        if (!(d >= 0 && d <= NGX_HTTP_TRAFFIC_SPLIT_SCALE)) {
            return "a weight is a number from 0 to 100";
        }

        /* d >= 0: rounded without libm */
        n = (long long) (d + 0.5);

        if (d - (double) n > 1e-6 || (double) n - d > 1e-6) {
            return "a weight has at most two decimals";
        }

        w[i] = (ngx_uint_t) n;
        *given |= 1u << i;
    }

    return NULL;
}


static ngx_int_t
ngx_http_traffic_split_action(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, json_t *body)
{
    json_t     *action;
    ngx_int_t   rc;
    ngx_str_t   name;

    if (scf->rollout == NULL) {
        return ngx_http_traffic_split_error(r, NGX_HTTP_BAD_REQUEST,
                                            "the split has no rollout");
    }

    action = json_object_get(body, "action");

    if (!json_is_string(action) || json_object_size(body) != 1) {
        return ngx_http_traffic_split_error(r, NGX_HTTP_BAD_REQUEST,
                   "the body must be {\"action\": \"pause\", \"resume\", "
                   "\"restart\" or \"abort\"}");
    }

    name.data = (u_char *) json_string_value(action);
    name.len = json_string_length(action);

    rc = ngx_http_traffic_split_rollout_action(scf, &name,
                                               r->connection->log);

    if (rc == NGX_ERROR) {
        return ngx_http_traffic_split_error(r, NGX_HTTP_BAD_REQUEST,
                                            "unknown action");
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_traffic_split_error(r, NGX_HTTP_CONFLICT,
                                            "the rollout is in no state for "
                                            "this action");
    }

    return ngx_http_traffic_split_changed(r, scf);
}


/*
 * The answer to a change, once the state file is written: the split,
 * with "saved": true or false, or "pending" when another worker writes
 * the file (it writes it once more for this change).  The change applies
 * either way.
 */

static ngx_int_t
ngx_http_traffic_split_changed(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf)
{
    ngx_int_t  rc;

    rc = ngx_http_traffic_split_save_state(scf, r, r->connection->log);

    if (rc == NGX_AGAIN) {

        /* answered by ngx_http_traffic_split_written() */

        r->main->count++;
        return NGX_DONE;
    }

    return ngx_http_traffic_split_answer(r, scf, rc);
}


ngx_int_t
ngx_http_traffic_split_answer(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, ngx_int_t saved)
{
    json_t  *doc;

    doc = ngx_http_traffic_split_json(scf);

    if (doc && scf->state.len) {
        json_object_set_new(doc, "saved",
                            saved == NGX_BUSY ? json_string("pending")
                                              : json_boolean(saved == NGX_OK));
    }

    return ngx_http_traffic_split_send(r, NGX_HTTP_OK, doc);
}


static ngx_int_t
ngx_http_traffic_split_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *reason)
{
    json_t  *doc;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "traffic split API: %s", reason);

    doc = json_pack("{ss}", "error", reason);

    return ngx_http_traffic_split_send(r, status, doc);
}


/* sends doc as the answer and releases it */

static ngx_int_t
ngx_http_traffic_split_send(ngx_http_request_t *r, ngx_uint_t status,
    json_t *doc)
{
    char         *text;
    size_t        len;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    text = json_dumps(doc, JSON_INDENT(1) | JSON_REAL_PRECISION(10));
    json_decref(doc);

    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(text);

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        free(text);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, text, len);
    *b->last++ = '\n';
    free(text);

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* {"splits": {}}, and its "splits" object in *splits */

json_t *
ngx_http_traffic_split_doc(json_t **splits)
{
    json_t  *doc;

    doc = json_object();
    *splits = json_object();

    if (doc == NULL || *splits == NULL) {
        json_decref(doc);
        json_decref(*splits);
        return NULL;
    }

    /* json_object_set_new() takes the reference even when it fails */

    if (json_object_set_new(doc, "splits", *splits) != 0) {
        json_decref(doc);
        return NULL;
    }

    return doc;
}


static json_t *
ngx_http_traffic_split_json(ngx_http_traffic_split_conf_t *scf)
{
    json_t                            *doc, *weights, *matches, *m;
    ngx_uint_t                         i;
    ngx_http_traffic_split_match_t    *mt;
    ngx_http_traffic_split_variant_t  *v;
    ngx_uint_t                         w[NGX_HTTP_TRAFFIC_SPLIT_VARIANTS];
    static const char                 *ops[] = { "", "=", "!=", "~", "!~" };

    ngx_http_traffic_split_read_weights(scf, w);

    v = scf->variants.elts;
    mt = scf->matches.elts;

    doc = json_object();
    weights = json_object();
    matches = json_array();

    if (doc == NULL || weights == NULL || matches == NULL) {
        goto failed;
    }

    for (i = 0; i < scf->variants.nelts; i++) {
        json_object_setn_new(weights, (char *) v[i].name.data,
                             v[i].name.len,
                             ngx_http_traffic_split_json_weight(w[i]));
    }

    for (i = 0; i < scf->matches.nelts; i++) {
        m = json_object();
        if (m == NULL) {
            goto failed;
        }

        json_object_set_new(m, "value",
                            ngx_http_traffic_split_json_str(&mt[i].source));
        json_object_set_new(m, "op", json_string(ops[mt[i].op]));
        json_object_set_new(m, "pattern",
                            ngx_http_traffic_split_json_str(&mt[i].pattern));
        json_object_set_new(m, "variant",
                            ngx_http_traffic_split_json_str(
                                &v[mt[i].variant].name));
        json_array_append_new(matches, m);
    }

    json_object_set_new(doc, "key", scf->key
                        ? ngx_http_traffic_split_json_str(&scf->key_source)
                        : json_null());
    json_object_set_new(doc, "weights", weights);
    json_object_set_new(doc, "matches", matches);
    json_object_set_new(doc, "rollout",
                        ngx_http_traffic_split_json_rollout(scf));
    json_object_set_new(doc, "variants",
                        ngx_http_traffic_split_json_variants(scf, w));

    return doc;

failed:

    json_decref(doc);
    json_decref(weights);
    json_decref(matches);

    return NULL;
}


static json_t *
ngx_http_traffic_split_json_rollout(ngx_http_traffic_split_conf_t *scf)
{
    json_t                            *ro, *steps;
    ngx_uint_t                         i;
    ngx_http_traffic_split_node_t     *node;
    ngx_http_traffic_split_stats_t    *st;
    ngx_http_traffic_split_variant_t  *v;
    ngx_http_traffic_split_rollout_t  *rcf;

    rcf = scf->rollout;

    if (rcf == NULL) {
        return json_null();
    }

    node = scf->node;
    v = scf->variants.elts;
    st = &node->stats[rcf->canary];

    steps = json_array();

    for (i = 0; i < rcf->nsteps; i++) {
        json_array_append_new(steps,
                      ngx_http_traffic_split_json_weight(rcf->steps[i]));
    }

    ro = json_pack("{s:o,s:s,s:I,s:o,s:I,s:o,s:I,s:I,s:I}",
                   "canary",
                   ngx_http_traffic_split_json_str(&v[rcf->canary].name),
                   "status", ngx_http_traffic_split_status_name(node->status),
                   "step", (json_int_t) node->step + 1,
                   "steps", steps,
                   "interval_ms", (json_int_t) rcf->interval,
                   "max_error_rate",
                   ngx_http_traffic_split_json_weight(rcf->max_error_rate),
                   "min_requests", (json_int_t) rcf->min_requests,
                   "step_requests", (json_int_t) st->step_requests,
                   "step_errors", (json_int_t) st->step_errors);

    if (ro) {
        json_object_set_new(ro, "max_p99_ms", rcf->max_p99
                            ? json_integer(rcf->max_p99) : json_null());
    }

    return ro;
}


static json_t *
ngx_http_traffic_split_json_variants(ngx_http_traffic_split_conf_t *scf,
    ngx_uint_t *w)
{
    json_t                            *all, *one;
    ngx_uint_t                         i, c, total, fives;
    ngx_http_traffic_split_stats_t    *st;
    ngx_http_traffic_split_variant_t  *v;

    all = json_object();
    if (all == NULL) {
        return NULL;
    }

    v = scf->variants.elts;

    for (i = 0; i < scf->variants.nelts; i++) {
        st = &scf->node->stats[i];

        fives = 0;
        for (c = 400; c < 500; c++) {
            fives += st->codes[c];
        }

        total = 0;
        for (c = 0; c < NGX_HTTP_TRAFFIC_SPLIT_BUCKETS; c++) {
            total += st->hist[c];
        }

        one = json_pack("{s:o,s:I,s:I,s:I,s:I,s:I}",
                        "weight", ngx_http_traffic_split_json_weight(w[i]),
                        "requests", (json_int_t) st->requests,
                        "5xx", (json_int_t) fives,
                        "errors", (json_int_t) st->errors,
                        "p50_ms", (json_int_t)
                        ngx_http_traffic_split_quantile(st->hist, total, 500),
                        "p99_ms", (json_int_t)
                        ngx_http_traffic_split_quantile(st->hist, total, 990));

        json_object_setn_new(all, (char *) v[i].name.data, v[i].name.len,
                             one);
    }

    return all;
}


json_t *
ngx_http_traffic_split_json_weight(ngx_uint_t w)
{
    if (w % 100 == 0) {
        return json_integer(w / 100);
    }

    return json_real((double) w / 100);
}


static json_t *
ngx_http_traffic_split_json_str(ngx_str_t *s)
{
    if (!ngx_meshgate_utf8_is_valid(s->data, s->len)) {
        return json_string("(not UTF-8)");
    }

    return json_stringn((char *) s->data, s->len);
}


ngx_http_traffic_split_main_conf_t *
ngx_http_traffic_split_mcf(void)
{
    if (ngx_cycle->conf_ctx == NULL) {
        return NULL;
    }

    return ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                              ngx_http_traffic_split_module);
}


/* the metrics module's provider (see ngx_meshgate_prometheus.h) */

ngx_chain_t *
ngx_http_traffic_split_prometheus(ngx_pool_t *pool, ngx_log_t *log)
{
    size_t                               len, line;
    ngx_buf_t                           *b;
    ngx_uint_t                           i, j, c, k, nvariants;
    ngx_chain_t                         *cl;
    ngx_atomic_uint_t                   *codes, *cp;
    ngx_http_traffic_split_conf_t      **scfp, *scf;
    ngx_http_traffic_split_variant_t    *v;
    ngx_http_traffic_split_main_conf_t  *mcf;
    ngx_uint_t                           w[NGX_HTTP_TRAFFIC_SPLIT_VARIANTS];

    static u_char  help_requests[] =
        "# HELP meshgate_split_requests_total Answers by traffic split, "
        "variant and status code.\n"
        "# TYPE meshgate_split_requests_total counter\n";
    static u_char  help_weight[] =
        "# HELP meshgate_split_weight_percent The variant's share of the "
        "split's traffic.\n"
        "# TYPE meshgate_split_weight_percent gauge\n";

    mcf = ngx_http_traffic_split_mcf();

    if (mcf == NULL || mcf->splits.nelts == 0) {
        return NULL;
    }

    scfp = mcf->splits.elts;

    nvariants = 0;
    for (i = 0; i < mcf->splits.nelts; i++) {
        nvariants += scfp[i]->variants.nelts;
    }

    /* a copy of the counters first: they may grow while we write */

    codes = ngx_palloc(pool, nvariants * NGX_HTTP_TRAFFIC_SPLIT_CODES
                             * sizeof(ngx_atomic_uint_t));
    if (codes == NULL) {
        return NULL;
    }

    line = sizeof("meshgate_split_requests_total{split=\"\",variant=\"\","
                  "code=\"other\"} \n") + NGX_ATOMIC_T_LEN
           + 2 * 2 * NGX_HTTP_TRAFFIC_SPLIT_NAME_LEN;

    len = sizeof(help_requests) + sizeof(help_weight) + nvariants * line;
    cp = codes;

    for (i = 0; i < mcf->splits.nelts; i++) {
        for (j = 0; j < scfp[i]->variants.nelts; j++) {
            for (c = 0; c < NGX_HTTP_TRAFFIC_SPLIT_CODES; c++) {
                cp[c] = scfp[i]->node->stats[j].codes[c];
                len += cp[c] ? line : 0;
            }

            cp += NGX_HTTP_TRAFFIC_SPLIT_CODES;
        }
    }

    b = ngx_create_temp_buf(pool, len);
    if (b == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0, "traffic split metrics: no memory");
        return NULL;
    }

    b->last = ngx_cpymem(b->last, help_requests, sizeof(help_requests) - 1);
    cp = codes;

    for (i = 0; i < mcf->splits.nelts; i++) {
        scf = scfp[i];
        v = scf->variants.elts;

        for (j = 0; j < scf->variants.nelts; j++) {
            for (c = 0; c < NGX_HTTP_TRAFFIC_SPLIT_CODES; c++) {
                if (cp[c] == 0) {
                    continue;
                }

                b->last = ngx_http_traffic_split_series(b->last,
                                              "meshgate_split_requests_total",
                                              scf, &v[j].name);

                k = c + 100;

                if (c == NGX_HTTP_TRAFFIC_SPLIT_CODES - 1) {
                    b->last = ngx_sprintf(b->last, "\",code=\"other\"} %uA\n",
                                          cp[c]);

                } else {
                    b->last = ngx_sprintf(b->last, "\",code=\"%ui\"} %uA\n",
                                          k, cp[c]);
                }
            }

            cp += NGX_HTTP_TRAFFIC_SPLIT_CODES;
        }
    }

    b->last = ngx_cpymem(b->last, help_weight, sizeof(help_weight) - 1);

    for (i = 0; i < mcf->splits.nelts; i++) {
        scf = scfp[i];
        v = scf->variants.elts;

        ngx_http_traffic_split_read_weights(scf, w);

        for (j = 0; j < scf->variants.nelts; j++) {
            b->last = ngx_http_traffic_split_series(b->last,
                                              "meshgate_split_weight_percent",
                                              scf, &v[j].name);
            b->last = ngx_sprintf(b->last, "\"} %ui.%02ui\n",
                                  w[j] / 100, w[j] % 100);
        }
    }

    cl = ngx_alloc_chain_link(pool);
    if (cl == NULL) {
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;

    return cl;
}


/* "metric{split="name",variant="name": the labels still open */

static u_char *
ngx_http_traffic_split_series(u_char *p, char *metric,
    ngx_http_traffic_split_conf_t *scf, ngx_str_t *variant)
{
    p = ngx_sprintf(p, "%s{split=\"", metric);
    p = ngx_meshgate_escape(p, scf->name.data, scf->name.len,
                            NGX_MESHGATE_ESCAPE_LABEL);
    p = ngx_cpymem(p, "\",variant=\"", sizeof("\",variant=\"") - 1);

    return ngx_meshgate_escape(p, variant->data, variant->len,
                               NGX_MESHGATE_ESCAPE_LABEL);
}
