
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_MESHGATE_JSON_H_INCLUDED_
#define _NGX_MESHGATE_JSON_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>


/*
 * Small helpers over jansson.  jansson allocates with malloc(): every
 * json_t a caller gets from ngx_meshgate_json_parse() must be released
 * with json_decref(), or registered with ngx_meshgate_json_cleanup().
 */

#pragma GCC visibility push(hidden)


/*
 * Parses a JSON document; rejects duplicate object keys and anything but
 * one value.  Logs the reason at NGX_LOG_ERR with what, and returns NULL
 * on failure.
 */
json_t *ngx_meshgate_json_parse(u_char *data, size_t len, ngx_log_t *log,
    const char *what);

/* json_decref() of v when pool is destroyed; NGX_ERROR without memory */
ngx_int_t ngx_meshgate_json_cleanup(ngx_pool_t *pool, json_t *v);

/*
 * Walks a dotted path ("a.b.c") through nested objects; returns a
 * borrowed reference or NULL.
 */
json_t *ngx_meshgate_json_path(json_t *root, u_char *path, size_t len);

/*
 * The value as text, in pool memory: a string as it is, a number, true,
 * false as JSON writes them, null as "", an array as its elements joined
 * with commas, an object as compact JSON.
 */
ngx_int_t ngx_meshgate_json_text(ngx_pool_t *pool, json_t *v,
    ngx_str_t *out);

/*
 * compact JSON text of v, in pool memory, null-terminated (not in len);
 * ngx_meshgate_json_text.h reads it without parsing
 */
ngx_int_t ngx_meshgate_json_dump(ngx_pool_t *pool, json_t *v,
    ngx_str_t *out);


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_JSON_H_INCLUDED_ */
