
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

/*
 * The one parser of "zone=name:size": *name points into arg, *size is at
 * least 8 pages (as limit_req asks).  NGX_CONF_OK, or NGX_CONF_ERROR
 * after logging why with the file and line of cf.
 */
char *ngx_meshgate_zone_parse(ngx_conf_t *cf, ngx_str_t *arg,
    ngx_str_t *name, ssize_t *size);

/*
 * Whether a realm set in the configuration may go into a challenge: no
 * control byte, no '"' and no '\\' (a realm from a variable is escaped
 * instead, see below).
 */
ngx_uint_t ngx_meshgate_realm_is_valid(ngx_str_t *realm);

/*
 * The first argument of auth_key and auth_introspect: "off", or the realm
 * of the module's challenges, refused at configuration time if it is not
 * valid as above.  Sets *enabled (a second time is "is duplicate") and
 * *realm; the caller reads the arguments after it.
 */
char *ngx_meshgate_realm_conf(ngx_conf_t *cf, ngx_str_t *value,
    ngx_flag_t *enabled, ngx_str_t *realm);

/*
 * Adds the challenge of a 401 or 403 answer (RFC 7235, RFC 6750 section 3)
 * to r, and sets r->headers_out.www_authenticate:
 *     scheme realm="realm"[, error="error"][, scope="s1 s2"]
 * The realm is a quoted-string: '"' and '\\' are escaped, control bytes
 * dropped.  error (a token) and scopes (scope-tokens, checked at
 * configuration time) may be NULL.
 */
ngx_int_t ngx_meshgate_www_authenticate(ngx_http_request_t *r,
    const char *scheme, ngx_str_t *realm, const char *error,
    ngx_array_t *scopes);


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_HTTP_H_INCLUDED_ */
