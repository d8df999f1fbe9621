
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_MESHGATE_JSON_TEXT_H_INCLUDED_
#define _NGX_MESHGATE_JSON_TEXT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * Reading compact JSON text without building a tree and without jansson:
 * the text that ngx_meshgate_json_dump() or aggregate's canonical rewrite
 * wrote (no white space between tokens).  Every reader checks its bounds
 * and never reads at or past last, so hostile bytes only read as
 * malformed; on text that is no compact JSON the answers mean nothing.
 */

#pragma GCC visibility push(hidden)


/* as jansson's parser: deeper nesting is refused */
#define NGX_MESHGATE_JSON_DEPTH  2048


/* p is past the opening quote; returns past the closing one, or NULL */
u_char *ngx_meshgate_json_skip_string(u_char *p, u_char *last);

/*
 * Returns past the value that starts at p: a string, an object or an
 * array (nested at most NGX_MESHGATE_JSON_DEPTH deep), or any other token
 * up to the next ',', '}', ']' or last.  NULL when a string or a
 * container does not end before last or nests too deep.
 */
u_char *ngx_meshgate_json_skip_value(u_char *p, u_char *last);

/*
 * The next member of an object: *pp is past its '{' or at a ',' or at a
 * name's opening quote.  Sets the name (its text without the quotes, as
 * written: escapes kept) and the value's text and moves *pp past the
 * value.  NGX_DONE at the end of the members (*pp is at what follows
 * them), NGX_ERROR on a malformed member.
 */
ngx_int_t ngx_meshgate_json_next(u_char **pp, u_char *last, ngx_str_t *name,
    ngx_str_t *value);

/*
 * The value of the member "name" of the object json, the name compared
 * with the member names as written (a name with escapes never matches).
 * An exact match wins; with caseless set, else the one member that
 * matches without regard to case.  NGX_DECLINED when there is no such
 * member or when two match without regard to case (which one is meant
 * cannot be told), NGX_ERROR when json is no object.
 */
ngx_int_t ngx_meshgate_json_member(ngx_str_t *json, u_char *name,
    size_t len, ngx_uint_t caseless, ngx_str_t *value);

/*
 * A value's text as ngx_meshgate_json_text() gives it for the parsed
 * value: a string without its quotes and escapes, null as "", an array
 * as the text of its elements joined with commas (nested arrays
 * flattened), any other value as its compact JSON.  Never longer than
 * the value's text; a string without escapes, a number, true, false and
 * an object point into it (not null-terminated).  NGX_ERROR on text
 * that is no compact JSON.
 */
ngx_int_t ngx_meshgate_json_value_text(ngx_pool_t *pool, ngx_str_t *raw,
    ngx_str_t *out);


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_JSON_TEXT_H_INCLUDED_ */
