
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


#define NGX_HTTP_TRAFFIC_SPLIT_STATE_MAX  (1024 * 1024)


/* a state file's new content and how writing it went */

typedef struct {
    ngx_http_traffic_split_conf_t      *split;
    char                               *text;
    size_t                              len;
    u_char                             *tmp;
    const char                         *failed;
    ngx_err_t                           err;
} ngx_http_traffic_split_file_t;


struct ngx_http_traffic_split_job_s {
    ngx_http_traffic_split_file_t      *files;
    ngx_uint_t                          nfiles;
};


/* an API request that waits for the state file before it answers */

struct ngx_http_traffic_split_waiter_s {
    ngx_http_traffic_split_waiter_t    *next;
    ngx_http_request_t                 *r;
    ngx_http_traffic_split_conf_t      *scf;
    ngx_int_t                           rc;
};


static ngx_int_t ngx_http_traffic_split_route(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t **scf, ngx_uint_t *rollout);
static void ngx_http_traffic_split_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_traffic_split_change(ngx_http_request_t *r,
    u_char *data, size_t len);
static ngx_int_t ngx_http_traffic_split_set_weights(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, json_t *body);
static const char *ngx_http_traffic_split_parse_weights(
    ngx_http_traffic_split_conf_t *scf, json_t *weights, ngx_uint_t *w,
    ngx_uint_t *given);
static ngx_int_t ngx_http_traffic_split_action(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, json_t *body);
static ngx_int_t ngx_http_traffic_split_changed(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf);
static ngx_int_t ngx_http_traffic_split_answer(ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf, ngx_int_t saved);
static ngx_int_t ngx_http_traffic_split_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *reason);
static ngx_int_t ngx_http_traffic_split_send(ngx_http_request_t *r,
    ngx_uint_t status, json_t *doc);
static json_t *ngx_http_traffic_split_doc(json_t **splits);
static json_t *ngx_http_traffic_split_json(ngx_http_traffic_split_conf_t *scf);
static json_t *ngx_http_traffic_split_json_rollout(
    ngx_http_traffic_split_conf_t *scf);
static json_t *ngx_http_traffic_split_json_variants(
    ngx_http_traffic_split_conf_t *scf, ngx_uint_t *w);
static json_t *ngx_http_traffic_split_json_weight(ngx_uint_t w);
static json_t *ngx_http_traffic_split_json_str(ngx_str_t *s);
static ngx_http_traffic_split_main_conf_t *ngx_http_traffic_split_mcf(void);
static ngx_uint_t ngx_http_traffic_split_lock(
    ngx_http_traffic_split_shctx_t *sh);
static ngx_int_t ngx_http_traffic_split_write_now(
    ngx_http_traffic_split_conf_t *scf, ngx_log_t *log);
#if (NGX_THREADS)
static ngx_int_t ngx_http_traffic_split_post(
    ngx_http_traffic_split_conf_t *scf, ngx_log_t *log);
static void ngx_http_traffic_split_write_thread(void *data, ngx_log_t *log);
static void ngx_http_traffic_split_written(ngx_event_t *ev);
static ngx_int_t ngx_http_traffic_split_wait(
    ngx_http_traffic_split_waiter_t **list, ngx_http_request_t *r,
    ngx_http_traffic_split_conf_t *scf);
static void ngx_http_traffic_split_answer_all(
    ngx_http_traffic_split_waiter_t *wt, ngx_http_traffic_split_job_t *job);
#endif
static ngx_http_traffic_split_job_t *ngx_http_traffic_split_job(
    ngx_http_traffic_split_conf_t *scf, ngx_log_t *log);
static ngx_uint_t ngx_http_traffic_split_same_file(
    ngx_http_traffic_split_conf_t *a, ngx_http_traffic_split_conf_t *b);
static void ngx_http_traffic_split_free_job(
    ngx_http_traffic_split_job_t *job);
static void ngx_http_traffic_split_write_job(
    ngx_http_traffic_split_job_t *job, ngx_log_t *log);
static ngx_int_t ngx_http_traffic_split_job_done(
    ngx_http_traffic_split_job_t *job, ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log);
static ngx_int_t ngx_http_traffic_split_job_result(
    ngx_http_traffic_split_job_t *job, ngx_http_traffic_split_conf_t *scf);
static char *ngx_http_traffic_split_state_text(
    ngx_http_traffic_split_conf_t *scf, size_t *len);
static json_t *ngx_http_traffic_split_read_state(
    ngx_http_traffic_split_conf_t *scf, ngx_log_t *log);

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

static const char *
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


static ngx_int_t
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

static json_t *
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


static json_t *
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


static ngx_http_traffic_split_main_conf_t *
ngx_http_traffic_split_mcf(void)
{
    if (ngx_cycle->conf_ctx == NULL) {
        return NULL;
    }

    return ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                              ngx_http_traffic_split_module);
}


/*
 * The state file is written when the API changes a split and when the
 * rollout moves (a step, done, rolled back): a small file, written once
 * per change, to a temporary name, fsync()ed and renamed, so that a
 * reader sees the old file or the new one.  The content is made on the
 * event loop; the file calls run in a thread of nginx's default thread
 * pool, and the API answers when they are done.  Without thread support
 * in nginx they run on the event loop, as nginx's own file writes do.
 *
 * One worker writes the files of a zone at a time (sh->writer, a pid);
 * a change made while another worker writes asks that writer to write
 * once more (sh->dirty), so that the files end with the last state and
 * nobody waits for another worker.
 */

ngx_int_t
ngx_http_traffic_split_save_state(ngx_http_traffic_split_conf_t *scf,
    ngx_http_request_t *r, ngx_log_t *log)
{
    ngx_int_t                        rc;
    ngx_http_traffic_split_shctx_t  *sh;

    if (scf->state.len == 0) {
        return NGX_OK;
    }

    sh = scf->sh;

    sh->dirty = 1;
    ngx_memory_barrier();

#if (NGX_THREADS)

    if (scf->writer->job) {

        /* this worker writes already: once more after that */

        if (r) {
            return ngx_http_traffic_split_wait(&scf->writer->next, r, scf);
        }

        return NGX_OK;
    }

#endif

    for ( ;; ) {
        if (!ngx_http_traffic_split_lock(sh)) {
            return NGX_BUSY;
        }

#if (NGX_THREADS)

        if (ngx_http_traffic_split_mcf()->thread_pool) {
            rc = ngx_http_traffic_split_post(scf, log);

            if (rc == NGX_AGAIN && r) {
                return ngx_http_traffic_split_wait(&scf->writer->running, r,
                                                   scf);
            }

            return rc;
        }

#endif

        rc = NGX_OK;

        while (sh->dirty) {
            sh->dirty = 0;
            ngx_memory_barrier();
            rc = ngx_http_traffic_split_write_now(scf, log);
        }

        (void) ngx_atomic_cmp_set(&sh->writer, ngx_pid, 0);
        ngx_memory_barrier();

        if (!sh->dirty) {
            return rc;
        }
    }
}


/*
 * An exiting worker's last write ran in the thread pool, which has ended
 * before this module's exit (it comes first), but its completion never
 * will: the job is freed and the lock let go here, as a new process may
 * get this pid.
 */

void
ngx_http_traffic_split_writer_exit(ngx_http_traffic_split_conf_t *scf)
{
    if (scf->writer == NULL || scf->sh == NULL) {
        return;
    }

    if (scf->writer->job) {
        ngx_http_traffic_split_free_job(scf->writer->job);
        scf->writer->job = NULL;
    }

    (void) ngx_atomic_cmp_set(&scf->sh->writer, ngx_pid, 0);
}


/* the zone's writer lock; a writer that died leaves it to us */

static ngx_uint_t
ngx_http_traffic_split_lock(ngx_http_traffic_split_shctx_t *sh)
{
    ngx_pid_t  pid;

    if (ngx_atomic_cmp_set(&sh->writer, 0, ngx_pid)) {
        return 1;
    }

    pid = (ngx_pid_t) sh->writer;

    if (pid == 0 || kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH) {
        return 0;
    }

    return ngx_atomic_cmp_set(&sh->writer, pid, ngx_pid);
}


/* every state file of the zone, on the event loop; scf's result */

static ngx_int_t
ngx_http_traffic_split_write_now(ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log)
{
    ngx_int_t                      rc;
    ngx_http_traffic_split_job_t  *job;

    job = ngx_http_traffic_split_job(scf, log);

    if (job == NULL) {
        return NGX_ERROR;
    }

    ngx_http_traffic_split_write_job(job, log);

    rc = ngx_http_traffic_split_job_done(job, scf, log);

    ngx_http_traffic_split_free_job(job);

    return rc;
}


#if (NGX_THREADS)

/*
 * The caller holds the zone's writer lock: the files go to a thread.
 * NGX_AGAIN while it writes, or the result when it could not be posted
 * and was written here; the lock is released unless NGX_AGAIN.
 */

static ngx_int_t
ngx_http_traffic_split_post(ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log)
{
    ngx_int_t                           rc;
    ngx_thread_task_t                  *task;
    ngx_http_traffic_split_writer_t    *wr;
    ngx_http_traffic_split_job_t       *job;
    ngx_http_traffic_split_main_conf_t *mcf;

    mcf = ngx_http_traffic_split_mcf();
    wr = scf->writer;

    if (wr->task == NULL) {
        wr->task = ngx_thread_task_alloc(ngx_cycle->pool, 0);
        if (wr->task == NULL) {
            goto sync;
        }
    }

    scf->sh->dirty = 0;
    ngx_memory_barrier();

    job = ngx_http_traffic_split_job(scf, log);

    if (job == NULL) {
        (void) ngx_atomic_cmp_set(&scf->sh->writer, ngx_pid, 0);
        return NGX_ERROR;
    }

    task = wr->task;
    task->ctx = job;
    task->handler = ngx_http_traffic_split_write_thread;
    task->event.handler = ngx_http_traffic_split_written;
    task->event.data = scf;
    task->event.log = ngx_cycle->log;

    if (ngx_thread_task_post(mcf->thread_pool, task) != NGX_OK) {
        ngx_http_traffic_split_free_job(job);
        goto sync;
    }

    wr->job = job;

    return NGX_AGAIN;

sync:

    rc = NGX_OK;

    do {
        scf->sh->dirty = 0;
        ngx_memory_barrier();
        rc = ngx_http_traffic_split_write_now(scf, log);
    } while (scf->sh->dirty);

    (void) ngx_atomic_cmp_set(&scf->sh->writer, ngx_pid, 0);

    return rc;
}


static void
ngx_http_traffic_split_write_thread(void *data, ngx_log_t *log)
{
    ngx_http_traffic_split_write_job(data, log);
}


/*
 * Back on the event loop: the results are logged, the requests that
 * waited for this write are answered, and a change made meanwhile is
 * written again (by this worker, still holding the lock) with the
 * requests that wait for it.
 */

static void
ngx_http_traffic_split_written(ngx_event_t *ev)
{
    ngx_http_traffic_split_conf_t *scf = ev->data;

    ngx_int_t                          rc;
    ngx_http_traffic_split_job_t      *job;
    ngx_http_traffic_split_waiter_t   *done, *wt;
    ngx_http_traffic_split_writer_t   *wr;
    ngx_http_traffic_split_shctx_t    *sh;

    wr = scf->writer;
    sh = scf->sh;
    job = wr->job;

    (void) ngx_http_traffic_split_job_done(job, scf, ev->log);

    done = wr->running;
    wr->running = NULL;
    wr->job = NULL;

    for ( ;; ) {
        ngx_memory_barrier();

        if (sh->dirty) {
            rc = ngx_http_traffic_split_post(scf, ev->log);

            if (rc == NGX_AGAIN) {
                wr->running = wr->next;
                wr->next = NULL;
                break;
            }

            /* written here, or failed: those waiting get this result */

            for (wt = wr->next; wt; wt = wt->next) {
                wt->rc = rc;
            }

            ngx_http_traffic_split_answer_all(wr->next, NULL);
            wr->next = NULL;
            break;
        }

        (void) ngx_atomic_cmp_set(&sh->writer, ngx_pid, 0);
        ngx_memory_barrier();

        if (!sh->dirty || !ngx_http_traffic_split_lock(sh)) {
            break;
        }
    }

    ngx_http_traffic_split_answer_all(done, job);

    ngx_http_traffic_split_free_job(job);
}


static ngx_int_t
ngx_http_traffic_split_wait(ngx_http_traffic_split_waiter_t **list,
    ngx_http_request_t *r, ngx_http_traffic_split_conf_t *scf)
{
    ngx_http_traffic_split_waiter_t  *wt;

    wt = ngx_palloc(r->pool, sizeof(ngx_http_traffic_split_waiter_t));
    if (wt == NULL) {
        return NGX_ERROR;
    }

    wt->r = r;
    wt->scf = scf;
    wt->rc = NGX_ERROR;
    wt->next = *list;
    *list = wt;

    return NGX_AGAIN;
}


/* with a job: each request gets the result of its split's file */

static void
ngx_http_traffic_split_answer_all(ngx_http_traffic_split_waiter_t *wt,
    ngx_http_traffic_split_job_t *job)
{
    ngx_int_t             rc;
    ngx_connection_t     *c;
    ngx_http_request_t   *r;
    ngx_http_traffic_split_waiter_t  *next;

    for ( /* void */ ; wt; wt = next) {
        next = wt->next;
        r = wt->r;
        c = r->connection;

        rc = job ? ngx_http_traffic_split_job_result(job, wt->scf) : wt->rc;

        ngx_http_finalize_request(r,
                                  ngx_http_traffic_split_answer(r, wt->scf,
                                                                rc));
        ngx_http_run_posted_requests(c);
    }
}

#endif


/* the content of every state file of scf's zone, made on the event loop */

static ngx_http_traffic_split_job_t *
ngx_http_traffic_split_job(ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log)
{
    ngx_uint_t                           i, j;
    ngx_http_traffic_split_job_t        *job;
    ngx_http_traffic_split_file_t       *f;
    ngx_http_traffic_split_conf_t      **scfp, *s;
    ngx_http_traffic_split_main_conf_t  *mcf;

    mcf = ngx_http_traffic_split_mcf();
    scfp = mcf->splits.elts;

    job = ngx_alloc(sizeof(ngx_http_traffic_split_job_t)
                    + mcf->splits.nelts
                      * sizeof(ngx_http_traffic_split_file_t), log);
    if (job == NULL) {
        return NULL;
    }

    job->files = (ngx_http_traffic_split_file_t *) &job[1];
    job->nfiles = 0;

    for (i = 0; i < mcf->splits.nelts; i++) {
        s = scfp[i];

        if (s->shm_zone != scf->shm_zone || s->state.len == 0) {
            continue;
        }

        /* each file once: the first split that names it */

        for (j = 0; j < job->nfiles; j++) {
            if (ngx_http_traffic_split_same_file(job->files[j].split, s)) {
                break;
            }
        }

        if (j < job->nfiles) {
            continue;
        }

        f = &job->files[job->nfiles++];
        ngx_memzero(f, sizeof(ngx_http_traffic_split_file_t));
        f->split = s;

        f->text = ngx_http_traffic_split_state_text(s, &f->len);
        f->tmp = ngx_alloc(s->state.len + sizeof(".tmp.") + NGX_INT64_LEN,
                           log);

        if (f->text == NULL || f->tmp == NULL) {
            ngx_http_traffic_split_free_job(job);
            return NULL;
        }

        ngx_sprintf(f->tmp, "%V.tmp.%P%Z", &s->state, ngx_pid);
    }

    return job;
}


static ngx_uint_t
ngx_http_traffic_split_same_file(ngx_http_traffic_split_conf_t *a,
    ngx_http_traffic_split_conf_t *b)
{
    return a->state.len == b->state.len
           && ngx_strncmp(a->state.data, b->state.data, a->state.len) == 0;
}


static void
ngx_http_traffic_split_free_job(ngx_http_traffic_split_job_t *job)
{
    ngx_uint_t  i;

    for (i = 0; i < job->nfiles; i++) {
        if (job->files[i].text) {
            free(job->files[i].text);
        }

        if (job->files[i].tmp) {
            ngx_free(job->files[i].tmp);
        }
    }

    ngx_free(job);
}


/*
 * The file calls only (a thread may run them): a new file, never one
 * that is there, since a link left at its name must not make the workers
 * write through it; what failed is kept for the event loop to log.
 */

static void
ngx_http_traffic_split_write_job(ngx_http_traffic_split_job_t *job,
    ngx_log_t *log)
{
    ngx_fd_t                        fd;
    ngx_uint_t                      i;
    ngx_http_traffic_split_file_t  *f;

    for (i = 0; i < job->nfiles; i++) {
        f = &job->files[i];
        f->failed = NULL;

        if (ngx_delete_file(f->tmp) == NGX_FILE_ERROR
            && ngx_errno != NGX_ENOENT)
        {
            f->failed = ngx_delete_file_n;
            f->err = ngx_errno;
            continue;
        }

        fd = ngx_open_file(f->tmp, NGX_FILE_WRONLY,
                           NGX_FILE_CREATE_OR_OPEN|O_EXCL,
                           NGX_FILE_DEFAULT_ACCESS);

        if (fd == NGX_INVALID_FILE) {
            f->failed = ngx_open_file_n;
            f->err = ngx_errno;
            continue;
        }

        if (ngx_write_fd(fd, f->text, f->len) != (ssize_t) f->len
            || ngx_write_fd(fd, "\n", 1) != 1
            || fsync(fd) == -1)
        {
            f->failed = "writing";
            f->err = ngx_errno;
            (void) ngx_close_file(fd);
            (void) ngx_delete_file(f->tmp);
            continue;
        }

        (void) ngx_close_file(fd);

        if (ngx_rename_file(f->tmp, f->split->state.data) == NGX_FILE_ERROR) {
            f->failed = ngx_rename_file_n;
            f->err = ngx_errno;
            (void) ngx_delete_file(f->tmp);
        }
    }
}


/* logs each file's result; the result of scf's file */

static ngx_int_t
ngx_http_traffic_split_job_done(ngx_http_traffic_split_job_t *job,
    ngx_http_traffic_split_conf_t *scf, ngx_log_t *log)
{
    ngx_uint_t                      i;
    ngx_http_traffic_split_file_t  *f;

    for (i = 0; i < job->nfiles; i++) {
        f = &job->files[i];

        if (f->failed) {
            ngx_log_error(NGX_LOG_ERR, log, f->err,
                          "%s \"%s\" failed (traffic split state \"%V\")",
                          f->failed, f->tmp, &f->split->state);
            continue;
        }

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                       "traffic split state \"%V\" written",
                       &f->split->state);
    }

    return ngx_http_traffic_split_job_result(job, scf);
}


static ngx_int_t
ngx_http_traffic_split_job_result(ngx_http_traffic_split_job_t *job,
    ngx_http_traffic_split_conf_t *scf)
{
    ngx_uint_t  i;

    for (i = 0; i < job->nfiles; i++) {
        if (ngx_http_traffic_split_same_file(job->files[i].split, scf)) {
            return job->files[i].failed ? NGX_ERROR : NGX_OK;
        }
    }

    return NGX_ERROR;
}


/* the state file's text: the splits that share it; free() it */

static char *
ngx_http_traffic_split_state_text(ngx_http_traffic_split_conf_t *scf,
    size_t *len)
{
    char                                *text;
    json_t                              *doc, *splits, *one, *weights;
    ngx_uint_t                           i, j;
    ngx_http_traffic_split_conf_t      **scfp, *s;
    ngx_http_traffic_split_variant_t    *v;
    ngx_http_traffic_split_main_conf_t  *mcf;
    ngx_uint_t                           w[NGX_HTTP_TRAFFIC_SPLIT_VARIANTS];
    u_char                               crc[8];

    mcf = ngx_http_traffic_split_mcf();

    doc = ngx_http_traffic_split_doc(&splits);
    if (doc == NULL) {
        return NULL;
    }

    json_object_set_new(doc, "version", json_integer(1));

    scfp = mcf->splits.elts;

    for (i = 0; i < mcf->splits.nelts; i++) {
        s = scfp[i];

        if (!ngx_http_traffic_split_same_file(s, scf)) {
            continue;
        }

        ngx_http_traffic_split_read_weights(s, w);
        v = s->variants.elts;

        weights = json_object();

        for (j = 0; j < s->variants.nelts; j++) {
            json_object_setn_new(weights, (char *) v[j].name.data,
                                 v[j].name.len,
                                 ngx_http_traffic_split_json_weight(w[j]));
        }

        ngx_sprintf(crc, "%08xD", s->crc);

        one = json_pack("{s:s%,s:o,s:s}", "conf", crc, (size_t) 8,
                        "weights", weights, "rollout",
                        ngx_http_traffic_split_status_name(s->node->status));

        json_object_setn_new(splits, (char *) s->name.data, s->name.len,
                             one);
    }

    text = json_dumps(doc, JSON_INDENT(1) | JSON_REAL_PRECISION(10));
    json_decref(doc);

    if (text) {
        *len = ngx_strlen(text);
    }

    return text;
}


/*
 * At start and when an edited split gets new shared state (in the master,
 * before the workers): the weights saved for this very configuration of
 * the split, or the configured ones with a warning.
 */

ngx_int_t
ngx_http_traffic_split_load_state(ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log)
{
    json_t                         *doc, *one, *conf, *weights, *status;
    ngx_int_t                       rc, st;
    ngx_uint_t                      i, sum, given;
    const char                     *err;
    ngx_http_traffic_split_node_t  *node;
    u_char                          crc[9];
    ngx_uint_t                      w[NGX_HTTP_TRAFFIC_SPLIT_VARIANTS];

    doc = ngx_http_traffic_split_read_state(scf, log);

    if (doc == NULL) {
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;
    err = NULL;
    node = scf->node;

    one = json_object_getn(json_object_get(doc, "splits"),
                           (char *) scf->name.data, scf->name.len);

    if (one == NULL) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "traffic split \"%V\": not in the state file \"%V\", "
                      "configured weights", &scf->name, &scf->state);
        goto done;
    }

    conf = json_object_get(one, "conf");
    weights = json_object_get(one, "weights");
    status = json_object_get(one, "rollout");

    ngx_sprintf(crc, "%08xD%Z", scf->crc);

    if (!json_is_string(conf) || ngx_strcmp(json_string_value(conf), crc)) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "traffic split \"%V\": the state file \"%V\" holds "
                      "weights for another configuration of it, configured "
                      "weights", &scf->name, &scf->state);
        goto done;
    }

    ngx_memzero(w, sizeof(w));

    if (!json_is_object(weights)) {
        err = "no weights";

    } else {
        err = ngx_http_traffic_split_parse_weights(scf, weights, w, &given);

        sum = 0;
        for (i = 0; i < scf->variants.nelts; i++) {
            sum += w[i];
        }

        if (err == NULL
            && (given != (1u << scf->variants.nelts) - 1
                || sum != NGX_HTTP_TRAFFIC_SPLIT_SCALE))
        {
            err = "weights of some variants missing or not summing to 100";
        }
    }

    st = json_is_string(status)
         ? ngx_http_traffic_split_status_value(
               (u_char *) json_string_value(status),
               json_string_length(status))
         : NGX_ERROR;

    if (err == NULL && st == NGX_ERROR) {
        err = "bad rollout status";
    }

    if (err) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "traffic split \"%V\": bad state in \"%V\" (%s), "
                      "configured weights", &scf->name, &scf->state, err);
        goto done;
    }

    ngx_memcpy(node->weights, w, sizeof(ngx_uint_t) * scf->variants.nelts);
    node->status = scf->rollout ? (ngx_uint_t) st
                                : NGX_HTTP_TRAFFIC_SPLIT_NONE;
    rc = NGX_OK;

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "traffic split \"%V\": weights from \"%V\"",
                  &scf->name, &scf->state);

done:

    json_decref(doc);

    return rc;
}


static json_t *
ngx_http_traffic_split_read_state(ngx_http_traffic_split_conf_t *scf,
    ngx_log_t *log)
{
    u_char           *buf;
    json_t           *doc;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_err_t         err;
    json_error_t      jerr;
    ngx_file_info_t   fi;

    /*
     * the workers' user may write in the file's directory: a FIFO there
     * must not block the master, nor a device feed it
     */

    fd = ngx_open_file(scf->state.data, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK,
                       NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        err = ngx_errno;
        ngx_log_error(NGX_LOG_WARN, log, err == NGX_ENOENT ? 0 : err,
                      "traffic split \"%V\": %s state file \"%V\", "
                      "configured weights", &scf->name,
                      err == NGX_ENOENT ? "no" : "cannot open the",
                      &scf->state);
        return NULL;
    }

    buf = NULL;
    doc = NULL;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "traffic split \"%V\": state file \"%V\" unreadable, "
                      "configured weights", &scf->name, &scf->state);
        goto done;
    }

    if (!ngx_is_file(&fi)) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "traffic split \"%V\": state file \"%V\" is not a "
                      "regular file, configured weights", &scf->name,
                      &scf->state);
        goto done;
    }

    if (ngx_file_size(&fi) > NGX_HTTP_TRAFFIC_SPLIT_STATE_MAX) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "traffic split \"%V\": state file \"%V\" is over 1m, "
                      "configured weights", &scf->name,
                      &scf->state);
        goto done;
    }

    buf = ngx_alloc(ngx_file_size(&fi) + 1, log);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_fd(fd, buf, ngx_file_size(&fi));

    if (n != (ssize_t) ngx_file_size(&fi)) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "traffic split \"%V\": reading the state file \"%V\" "
                      "failed, configured weights", &scf->name, &scf->state);
        goto done;
    }

    /* our own line: jansson's error text would quote the file's bytes */

    doc = json_loadb((char *) buf, n, JSON_REJECT_DUPLICATES, &jerr);

    if (doc == NULL || !json_is_object(doc)) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "traffic split \"%V\": state file \"%V\" is no JSON "
                      "object (at offset %d), configured weights",
                      &scf->name, &scf->state, doc ? 0 : jerr.position);
        json_decref(doc);
        doc = NULL;
    }

done:

    if (buf) {
        ngx_free(buf);
    }

    (void) ngx_close_file(fd);

    return doc;
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

                b->last = ngx_sprintf(b->last,
                                 "meshgate_split_requests_total{split=\"");
                b->last = ngx_meshgate_escape(b->last, scf->name.data,
                                              scf->name.len,
                                              NGX_MESHGATE_ESCAPE_LABEL);
                b->last = ngx_sprintf(b->last, "\",variant=\"");
                b->last = ngx_meshgate_escape(b->last, v[j].name.data,
                                              v[j].name.len,
                                              NGX_MESHGATE_ESCAPE_LABEL);

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
            b->last = ngx_sprintf(b->last,
                                  "meshgate_split_weight_percent{split=\"");
            b->last = ngx_meshgate_escape(b->last, scf->name.data,
                                          scf->name.len,
                                          NGX_MESHGATE_ESCAPE_LABEL);
            b->last = ngx_sprintf(b->last, "\",variant=\"");
            b->last = ngx_meshgate_escape(b->last, v[j].name.data,
                                          v[j].name.len,
                                          NGX_MESHGATE_ESCAPE_LABEL);
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
