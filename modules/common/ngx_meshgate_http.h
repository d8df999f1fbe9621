
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


#pragma GCC visibility pop


#endif /* _NGX_MESHGATE_HTTP_H_INCLUDED_ */
