
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_MESHGATE_FETCH_H_INCLUDED_
#define _NGX_MESHGATE_FETCH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/*
 * Fetching a body from a location through a subrequest, never a blocking
 * call: a JWKS, an introspection answer, an aggregated part.
 *
 * The subrequest carries exactly the headers the caller lists (nothing of
 * the client's request travels by default) and, for a POST, the caller's
 * body.  Its answer never reaches the client: a header and a body filter
 * keep its status and up to f->max bytes of its body in memory and drop
 * the rest.  They find the fetch through the subrequest's post_subrequest
 * data, not a module context, so an internal redirect of the subrequest
 * (error_page, try_files, auth_request) keeps it.  A body with a
 * Content-Encoding other than identity is refused (nothing reads it
 * decoded).  A failed fetch never takes the client's request down.
 *
 * Every module that fetches calls ngx_meshgate_fetch_init() from its
 * postconfiguration handler: the filter pair is its own private copy, and
 * sees only the fetches that copy started.
 */

#pragma GCC visibility push(hidden)


typedef struct ngx_meshgate_fetch_s  ngx_meshgate_fetch_t;

/*
 * Called once per fetch when its answer is complete or failed, from the
 * subrequest's finalization (f->sr is still valid), unless f->ignore is
 * set by then.  NGX_ERROR makes nginx terminate the client's request.
 */
typedef ngx_int_t (*ngx_meshgate_fetch_handler_pt)(ngx_meshgate_fetch_t *f);


struct ngx_meshgate_fetch_s {
    /* set by the caller before ngx_meshgate_fetch_start() */
    ngx_meshgate_fetch_handler_pt    handler;
    void                            *data;
    ngx_uint_t                       method;     /* NGX_HTTP_GET or POST */
    ngx_list_t                      *headers;    /* ngx_table_elt_t, or NULL */
    ngx_str_t                        body;       /* a POST's body */
    size_t                           max;        /* 0: the location's
                                                    subrequest_output_
                                                    buffer_size */

    /* results */
    ngx_http_request_t              *sr;
    ngx_uint_t                       status;     /* 0: no answer */
    ngx_int_t                        error_rc;   /* nginx's own error page */
    ngx_str_t                        answer;     /* the body kept */
    size_t                           size;       /* of answer's buffer */

    unsigned                         header:1;
    unsigned                         complete:1;
    unsigned                         too_big:1;
    unsigned                         encoded:1;
    unsigned                         broken:1;   /* an error in the answer */
    unsigned                         closed:1;   /* the client went away */
    unsigned                         done:1;
    unsigned                         ignore:1;   /* set by the caller: the
                                                    answer is not wanted */
};


/* installs the filter pair: from a postconfiguration handler */
ngx_int_t ngx_meshgate_fetch_init(ngx_conf_t *cf);

/*
 * Starts a subrequest of r to uri?args (args NULL: none) with flags
 * (NGX_HTTP_SUBREQUEST_WAITED, _BACKGROUND).  NGX_OK or NGX_ERROR.
 */
ngx_int_t ngx_meshgate_fetch_start(ngx_http_request_t *r,
    ngx_meshgate_fetch_t *f, ngx_str_t *uri, ngx_str_t *args,
    ngx_uint_t flags);

/* whether a finished fetch has no usable answer: nginx failed, or none */
#define ngx_meshgate_fetch_failed(f)                                         \
    ((f)->broken || !(f)->header || (f)->closed)

/*
 * Why the body of a fetch that did not fail cannot be used: "too_big",
 * "truncated", "encoded"; NULL when it can.  The status is the caller's
 * to judge (check it first: an error page's body may be too big).
 */
const char *ngx_meshgate_fetch_error(ngx_meshgate_fetch_t *f);

/*
 * Fills out (initialized here) with copies of r's request headers: those
 * named in names (keep set), or all but those (keep clear).  names ends
 * with a null string; names match without regard to case.
 */
ngx_int_t ngx_meshgate_fetch_headers(ngx_http_request_t *r, ngx_list_t *out,
    ngx_str_t *names, ngx_uint_t keep);

/* adds a header to a list for f->headers; key and value must live on */
ngx_int_t ngx_meshgate_fetch_add_header(ngx_list_t *list, char *key,
    char *lowcase_key, ngx_str_t *value);


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_FETCH_H_INCLUDED_ */
