
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_MESHGATE_HTTP_H_INCLUDED_
#define _NGX_MESHGATE_HTTP_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* HTTP helpers every module needs; private copies, hidden symbols */

#pragma GCC visibility push(hidden)


/*
 * Adds the variables of a module's table (ended by ngx_http_null_variable)
 * with their handlers and data: the body of a preconfiguration handler.
 */
ngx_int_t ngx_meshgate_add_variables(ngx_conf_t *cf,
    ngx_http_variable_t *vars);

/*
 * Whether bytes from outside (a claim, an introspection answer, a Redis
 * value, a key file's metadata, an upstream's JSON) may go into a header,
 * a log line or a label as they are: no byte below 0x20 and no 0x7f.
 */
ngx_uint_t ngx_meshgate_text_is_safe(u_char *p, size_t len);

/* Whether p..p+len is well-formed UTF-8 (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF). */
ngx_uint_t ngx_meshgate_utf8_is_valid(u_char *p, size_t len);

/*
 * Sets v to the outside value data..data+len when it is safe text, and to
 * the empty string otherwise, with one warn line that names what the value
 * is ("JWT claim \"name\"") and never the value itself.
 */
void ngx_meshgate_variable_set_text(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, const char *what, ngx_str_t *name,
    u_char *data, size_t len);


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_HTTP_H_INCLUDED_ */
