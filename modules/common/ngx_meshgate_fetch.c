
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_meshgate_fetch.h"


static ngx_int_t ngx_meshgate_fetch_request(ngx_http_request_t *r,
    ngx_http_request_t *sr, ngx_meshgate_fetch_t *f);
static ngx_int_t ngx_meshgate_fetch_set_headers(ngx_http_request_t *sr,
    ngx_list_t *headers);
static ngx_int_t ngx_meshgate_fetch_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc);
static ngx_meshgate_fetch_t *ngx_meshgate_fetch_get(ngx_http_request_t *r);
static ngx_int_t ngx_meshgate_fetch_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_meshgate_fetch_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static void ngx_meshgate_fetch_collect(ngx_http_request_t *r,
    ngx_meshgate_fetch_t *f, ngx_buf_t *b);
static ngx_int_t ngx_meshgate_fetch_reserve(ngx_pool_t *pool,
    ngx_meshgate_fetch_t *f, size_t size);


static ngx_str_t  ngx_meshgate_fetch_post = ngx_string("POST");


static ngx_http_output_header_filter_pt  ngx_meshgate_fetch_next_header;
static ngx_http_output_body_filter_pt    ngx_meshgate_fetch_next_body;


ngx_int_t
ngx_meshgate_fetch_init(ngx_conf_t *cf)
{
    ngx_meshgate_fetch_next_header = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_meshgate_fetch_header_filter;

    ngx_meshgate_fetch_next_body = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_meshgate_fetch_body_filter;

    return NGX_OK;
}


ngx_int_t
ngx_meshgate_fetch_start(ngx_http_request_t *r, ngx_meshgate_fetch_t *f,
    ngx_str_t *uri, ngx_str_t *args, ngx_uint_t flags)
{
    ngx_http_request_t          *sr;
    ngx_http_post_subrequest_t  *ps;

    f->sr = NULL;
    f->status = 0;
    f->error_rc = 0;
    ngx_str_null(&f->answer);
    f->size = 0;
    f->header = 0;
    f->complete = 0;
    f->too_big = 0;
    f->encoded = 0;
    f->broken = 0;
    f->closed = 0;
    f->done = 0;
    f->ignore = 0;

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_meshgate_fetch_done;
    ps->data = f;

    if (ngx_http_subrequest(r, uri, args, &sr, ps, flags) != NGX_OK) {
        return NGX_ERROR;
    }

    f->sr = sr;

    return ngx_meshgate_fetch_request(r, sr, f);
}


/* the subrequest's method, body and headers: the caller's, nothing else */

static ngx_int_t
ngx_meshgate_fetch_request(ngx_http_request_t *r, ngx_http_request_t *sr,
    ngx_meshgate_fetch_t *f)
{
    ngx_buf_t                *b;
    ngx_chain_t              *cl;
    ngx_http_request_body_t  *rb;

    /* file buffers (a static file, a temp file) are read into memory */
    sr->filter_need_in_memory = 1;
    sr->header_only = 0;

    rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    if (rb == NULL) {
        return NGX_ERROR;
    }

    sr->request_body = rb;

    if (ngx_meshgate_fetch_set_headers(sr, f->headers) != NGX_OK) {
        return NGX_ERROR;
    }

    if (f->method != NGX_HTTP_POST) {
        sr->method = NGX_HTTP_GET;
        sr->method_name = ngx_http_core_get_method;
        return NGX_OK;
    }

    sr->method = NGX_HTTP_POST;
    sr->method_name = ngx_meshgate_fetch_post;
    sr->headers_in.content_length_n = f->body.len;

    if (f->body.len == 0) {
        return NGX_OK;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = f->body.data;
    b->last = f->body.data + f->body.len;
    b->memory = 1;
    b->last_buf = 1;

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = b;
    cl->next = NULL;
    rb->bufs = cl;

    return NGX_OK;
}


/*
 * The subrequest's headers_in, rebuilt from the list alone through nginx's
 * own header handlers, so that $http_host, $cookie_*, Content-Type and the
 * rest say what the list says, and nothing the list lacks (the client's
 * Authorization, Range, Accept-Encoding) survives in a pointer.
 */

static ngx_int_t
ngx_meshgate_fetch_set_headers(ngx_http_request_t *sr, ngx_list_t *headers)
{
    ngx_uint_t                  i;
    ngx_list_part_t            *part;
    ngx_table_elt_t            *h, *copy;
    ngx_http_header_t          *hh;
    ngx_http_core_main_conf_t  *cmcf;

    ngx_memzero(&sr->headers_in, sizeof(ngx_http_headers_in_t));

    /*
     * the parent's virtual server stays: with it set, a Host header in
     * the list does not pick a server again
     */

    sr->headers_in.server = sr->parent->headers_in.server;
    sr->headers_in.content_length_n = -1;
    sr->headers_in.keep_alive_n = -1;

    if (ngx_list_init(&sr->headers_in.headers, sr->pool, 8,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (headers == NULL) {
        return NGX_OK;
    }

    cmcf = ngx_http_get_module_main_conf(sr, ngx_http_core_module);

    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        copy = ngx_list_push(&sr->headers_in.headers);
        if (copy == NULL) {
            return NGX_ERROR;
        }

        *copy = h[i];

        hh = ngx_hash_find(&cmcf->headers_in_hash, copy->hash,
                           copy->lowcase_key, copy->key.len);

        if (hh && hh->handler(sr, copy, hh->offset) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_meshgate_fetch_done(ngx_http_request_t *sr, void *data, ngx_int_t rc)
{
    ngx_meshgate_fetch_t *f = data;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, sr->connection->log, 0,
                   "meshgate fetch done: %i, status %ui, %uz bytes",
                   rc, f->status, f->answer.len);

    if (f->done) {
        goto done;
    }

    if (rc == NGX_HTTP_CLIENT_CLOSED_REQUEST || sr->connection->error) {
        f->done = 1;
        f->closed = 1;

        if (!f->ignore) {
            (void) f->handler(f);
        }

        return rc;
    }

    if (!f->header
        && ((rc >= NGX_HTTP_SPECIAL_RESPONSE
             && rc != NGX_HTTP_CLOSE
             && rc != NGX_HTTP_REQUEST_TIME_OUT)
            || rc == NGX_HTTP_CREATED
            || rc == NGX_HTTP_NO_CONTENT))
    {
        /*
         * nginx makes the answer (an error_page of the location, or its
         * own page) and finalizes the subrequest again once it is sent
         */

        if (f->error_rc == 0) {
            f->error_rc = rc;
        }

        return rc;
    }

    f->done = 1;

    if (rc == NGX_ERROR) {
        f->broken = 1;
    }

    if (!f->ignore && f->handler(f) != NGX_OK) {
        return NGX_ERROR;
    }

done:

    /*
     * A failed fetch is the caller's to report: an error code or
     * NGX_ERROR (say, an upstream that gave up on a broken body) must not
     * make nginx terminate the client's request, as it does for NGX_ERROR.
     */

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE || rc == NGX_ERROR) {
        return NGX_OK;
    }

    return rc;
}


const char *
ngx_meshgate_fetch_error(ngx_meshgate_fetch_t *f)
{
    if (f->too_big) {
        return "too_big";
    }

    if (!f->complete) {
        return "truncated";
    }

    if (f->encoded) {
        return "encoded";
    }

    return NULL;
}


/*
 * The fetch a request answers, found through its post_subrequest handler
 * rather than a module context, which an internal redirect would clear.
 * The handler is this file's private copy: a module sees its own fetches.
 */

static ngx_meshgate_fetch_t *
ngx_meshgate_fetch_get(ngx_http_request_t *r)
{
    if (r == r->main
        || r->post_subrequest == NULL
        || r->post_subrequest->handler != ngx_meshgate_fetch_done)
    {
        return NULL;
    }

    return r->post_subrequest->data;
}


static ngx_int_t
ngx_meshgate_fetch_header_filter(ngx_http_request_t *r)
{
    off_t                      len;
    ngx_table_elt_t           *ce;
    ngx_meshgate_fetch_t      *f;
    ngx_http_core_loc_conf_t  *clcf;

    f = ngx_meshgate_fetch_get(r);

    if (f == NULL) {
        return ngx_meshgate_fetch_next_header(r);
    }

    if (f->header) {
        return NGX_OK;
    }

    f->header = 1;
    f->status = r->headers_out.status;

    /*
     * A buffered upstream writes only for the request that owns the
     * client connection, which a background subrequest never does:
     * without a cache to feed, the body is read unbuffered (this filter
     * runs before the upstream looks at u->buffering).
     */

    if (r->upstream && !r->upstream->cacheable) {
        r->upstream->buffering = 0;
    }

    if (f->max == 0) {
        clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
        f->max = clcf->subrequest_output_buffer_size;
    }

    ce = r->headers_out.content_encoding;

    if (ce && ce->hash && ce->value.len
        && !(ce->value.len == 8
             && ngx_strncasecmp(ce->value.data, (u_char *) "identity", 8)
                == 0))
    {
        f->encoded = 1;
    }

    len = r->headers_out.content_length_n;

    if (len > (off_t) f->max) {
        f->too_big = 1;

    } else if (len > 0 && !f->ignore) {
        (void) ngx_meshgate_fetch_reserve(r->pool, f, (size_t) len);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_meshgate_fetch_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t           *cl;
    ngx_meshgate_fetch_t  *f;

    f = ngx_meshgate_fetch_get(r);

    if (f == NULL) {
        return ngx_meshgate_fetch_next_body(r, in);
    }

    for (cl = in; cl; cl = cl->next) {

        if (!f->ignore && !f->done) {
            ngx_meshgate_fetch_collect(r, f, cl->buf);
        }

        /* consumed: the upstream may reuse the buffer */

        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;

        if (cl->buf->last_buf || cl->buf->last_in_chain) {
            f->complete = 1;
        }
    }

    return NGX_OK;
}


static void
ngx_meshgate_fetch_collect(ngx_http_request_t *r, ngx_meshgate_fetch_t *f,
    ngx_buf_t *b)
{
    size_t  size;

    if (f->too_big || f->broken || ngx_buf_special(b)) {
        return;
    }

    if (!ngx_buf_in_memory(b)) {
        f->broken = 1;
        return;
    }

    size = b->last - b->pos;

    if (size == 0) {
        return;
    }

    if (size > f->max - f->answer.len) {
        f->too_big = 1;
        return;
    }

    if (ngx_meshgate_fetch_reserve(r->pool, f, f->answer.len + size)
        != NGX_OK)
    {
        f->broken = 1;
        return;
    }

    ngx_memcpy(f->answer.data + f->answer.len, b->pos, size);
    f->answer.len += size;
}


/* grows the answer's buffer to at least size, doubling, at most f->max */

static ngx_int_t
ngx_meshgate_fetch_reserve(ngx_pool_t *pool, ngx_meshgate_fetch_t *f,
    size_t size)
{
    u_char  *p;

    if (size <= f->size) {
        return NGX_OK;
    }

    if (size < f->size * 2) {
        size = f->size * 2;
    }

    if (size < 4096) {
        size = 4096;
    }

    if (size > f->max) {
        size = f->max;
    }

    p = ngx_pnalloc(pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (f->answer.len) {
        ngx_memcpy(p, f->answer.data, f->answer.len);
    }

    if (f->answer.data) {
        /* a large allocation goes back at once: no garbage up to 2x max */
        (void) ngx_pfree(pool, f->answer.data);
    }

    f->answer.data = p;
    f->size = size;

    return NGX_OK;
}


ngx_int_t
ngx_meshgate_fetch_headers(ngx_http_request_t *r, ngx_list_t *out,
    ngx_str_t *names, ngx_uint_t keep)
{
    ngx_str_t        *n;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *copy;

    if (ngx_list_init(out, r->pool, 8, sizeof(ngx_table_elt_t)) != NGX_OK) {
        return NGX_ERROR;
    }

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        for (n = names; n->len; n++) {
            if (h[i].key.len == n->len
                && ngx_strncasecmp(h[i].key.data, n->data, n->len) == 0)
            {
                break;
            }
        }

        if ((n->len != 0) != (keep != 0)) {
            continue;
        }

        copy = ngx_list_push(out);
        if (copy == NULL) {
            return NGX_ERROR;
        }

        *copy = h[i];
    }

    return NGX_OK;
}


ngx_int_t
ngx_meshgate_fetch_add_header(ngx_list_t *list, char *key,
    char *lowcase_key, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(list);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value = *value;
    h->lowcase_key = (u_char *) lowcase_key;
    h->hash = ngx_hash_key(h->lowcase_key, h->key.len);

    return NGX_OK;
}
