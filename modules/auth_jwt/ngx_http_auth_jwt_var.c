
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_auth_jwt.h"
#include "ngx_meshgate_http.h"


/*
 * Key sources named with variables: auth_jwt_key_file $var and
 * auth_jwt_key_request /uri/$var.  The name is built per request; what a
 * variable gives may not leave the place the literal text names (no "/",
 * no "..", no control byte).  The key set of each name is kept per worker
 * in a bounded LRU list: a file is read again when it changes (checked at
 * most once a second), a URI is fetched and refreshed like a fixed one.
 */


#define NGX_HTTP_AUTH_JWT_FILES_MAX    100
#define NGX_HTTP_AUTH_JWT_URIS_MAX     100
#define NGX_HTTP_AUTH_JWT_URIS_NEW     32
#define NGX_HTTP_AUTH_JWT_NAME_MAX     1024
#define NGX_HTTP_AUTH_JWT_PARTS_MAX    16


typedef struct {
    ngx_str_t                       text;
    ngx_int_t                       index;    /* a variable's, or -1 */
} ngx_http_auth_jwt_part_t;


typedef struct {
    ngx_queue_t                     queue;
    ngx_str_t                       path;
    ngx_http_auth_jwt_keyset_t     *keyset;
    ngx_file_uniq_t                 uniq;
    time_t                          mtime;
    off_t                           size;
    time_t                          checked;
} ngx_http_auth_jwt_file_entry_t;


typedef struct {
    ngx_queue_t                     queue;
    ngx_http_auth_jwt_source_t      src;
    ngx_pool_t                     *pool;
} ngx_http_auth_jwt_uri_entry_t;


static ngx_int_t ngx_http_auth_jwt_part_safe(ngx_str_t *v, ngx_uint_t uri);
static ngx_int_t ngx_http_auth_jwt_segments_safe(ngx_str_t *name,
    u_char *var, ngx_uint_t uri);
static ngx_http_auth_jwt_keyset_t *ngx_http_auth_jwt_file_load(
    ngx_http_request_t *r, ngx_str_t *path, ngx_uint_t max,
    ngx_file_info_t *fi);
static void ngx_http_auth_jwt_file_drop(ngx_http_auth_jwt_file_entry_t *e);
static ngx_http_auth_jwt_uri_entry_t *ngx_http_auth_jwt_uri_find(
    ngx_queue_t *list, void *server, ngx_str_t *uri);
static ngx_int_t ngx_http_auth_jwt_uri_promote(
    ngx_http_auth_jwt_uri_entry_t *e);
static ngx_int_t ngx_http_auth_jwt_uri_room(ngx_queue_t *list, ngx_uint_t *n,
    ngx_uint_t max, ngx_uint_t promote);
static void ngx_http_auth_jwt_uri_drop(ngx_http_auth_jwt_uri_entry_t *e);
static void ngx_http_auth_jwt_uri_free(ngx_queue_t *list);


/* per worker */
static ngx_queue_t  ngx_http_auth_jwt_files;
static ngx_uint_t   ngx_http_auth_jwt_nfiles;
static ngx_queue_t  ngx_http_auth_jwt_uris;
static ngx_uint_t   ngx_http_auth_jwt_nuris;
static ngx_queue_t  ngx_http_auth_jwt_uris_new;
static ngx_uint_t   ngx_http_auth_jwt_nuris_new;


/*
 * Splits a directive's value into literal text and variables ($name or
 * ${name}).  A relative file name is taken from the configuration prefix,
 * as nginx does for files.
 */

ngx_http_auth_jwt_template_t *
ngx_http_auth_jwt_template(ngx_conf_t *cf, ngx_str_t *value, ngx_uint_t uri)
{
    u_char                        *p, *last, *start;
    ngx_str_t                      name;
    ngx_uint_t                     brace;
    ngx_http_auth_jwt_part_t      *part;
    ngx_http_auth_jwt_template_t  *t;

    t = ngx_pcalloc(cf->pool, sizeof(ngx_http_auth_jwt_template_t));
    if (t == NULL) {
        return NULL;
    }

    t->uri = uri;
    t->parts = ngx_array_create(cf->pool, 4,
                                sizeof(ngx_http_auth_jwt_part_t));
    if (t->parts == NULL) {
        return NULL;
    }

    if (!uri && value->data[0] != '/') {
        part = ngx_array_push(t->parts);
        if (part == NULL) {
            return NULL;
        }

        part->text = cf->cycle->conf_prefix;
        part->index = -1;
    }

    p = value->data;
    last = p + value->len;

    while (p < last) {
        start = p;

        while (p < last && *p != '$') {
            p++;
        }

        if (p > start) {
            part = ngx_array_push(t->parts);
            if (part == NULL) {
                return NULL;
            }

            part->text.data = start;
            part->text.len = p - start;
            part->index = -1;
            continue;
        }

        /* a variable */

        p++;
        brace = (p < last && *p == '{');
        p += brace;
        name.data = p;

        while (p < last
               && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                   || (*p >= '0' && *p <= '9') || *p == '_'))
        {
            p++;
        }

        name.len = p - name.data;

        if (name.len == 0 || (brace && (p == last || *p != '}'))) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid variable name in \"%V\"", value);
            return NULL;
        }

        p += brace;

        part = ngx_array_push(t->parts);
        if (part == NULL) {
            return NULL;
        }

        part->text = name;
        part->index = ngx_http_get_variable_index(cf, &name);

        if (part->index == NGX_ERROR) {
            return NULL;
        }
    }

    if (t->parts->nelts > NGX_HTTP_AUTH_JWT_PARTS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many variables in \"%V\"", value);
        return NULL;
    }

    return t;
}


/*
 * The name for this request.  NGX_DECLINED (logged) when a variable's
 * value is not a plain name (empty, "/" or ".." in it, a control byte,
 * not UTF-8), or when the joined name has a "." or ".." segment that a
 * variable's bytes are part of: "." next to a literal "." or to another
 * variable's "." would leave the directory all the same.
 */

ngx_int_t
ngx_http_auth_jwt_template_value(ngx_http_request_t *r,
    ngx_http_auth_jwt_template_t *t, ngx_str_t *out)
{
    u_char                     *p, *var;
    size_t                      len;
    ngx_str_t                   s;
    ngx_uint_t                  i, n;
    ngx_http_variable_value_t  *vv, *vals[NGX_HTTP_AUTH_JWT_PARTS_MAX];
    ngx_http_auth_jwt_part_t   *part;

    part = t->parts->elts;
    n = t->parts->nelts;
    len = 0;

    for (i = 0; i < n; i++) {
        vals[i] = NULL;

        if (part[i].index == -1) {
            len += part[i].text.len;
            continue;
        }

        vv = ngx_http_get_indexed_variable(r, part[i].index);

        if (vv == NULL || vv->not_found) {
            s.len = 0;

        } else {
            s.data = vv->data;
            s.len = vv->len;
        }

        if (ngx_http_auth_jwt_part_safe(&s, t->uri) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "auth_jwt: the value of \"$%V\" is empty or "
                          "not a plain name, refused as part of a key %s",
                          &part[i].text, t->uri ? "URI" : "file name");
            return NGX_DECLINED;
        }

        vals[i] = vv;
        len += vv->len;
    }

    if (len > NGX_HTTP_AUTH_JWT_NAME_MAX) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_jwt: key %s longer than %d bytes",
                      t->uri ? "URI" : "file name",
                      NGX_HTTP_AUTH_JWT_NAME_MAX);
        return NGX_DECLINED;
    }

    /* the name, then one byte per byte of it: 1 when from a variable */

    out->data = ngx_pnalloc(r->pool, 2 * len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = out->data;
    var = out->data + len + 1;

    for (i = 0; i < n; i++) {
        if (vals[i] == NULL) {
            p = ngx_cpymem(p, part[i].text.data, part[i].text.len);
            ngx_memzero(var, part[i].text.len);
            var += part[i].text.len;

        } else {
            p = ngx_cpymem(p, vals[i]->data, vals[i]->len);
            ngx_memset(var, 1, vals[i]->len);
            var += vals[i]->len;
        }
    }

    *p = '\0';
    out->len = p - out->data;

    if (ngx_http_auth_jwt_segments_safe(out, out->data + len + 1, t->uri)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_jwt: a variable makes a \".\" or \"..\" "
                      "segment, refused as part of a key %s",
                      t->uri ? "URI" : "file name");
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * No segment of the name (between "/", up to the query in a URI) that a
 * variable's bytes are part of is "." or "..".  A variable never makes an
 * empty segment: its value is not empty and has no "/".  A ".." written
 * in the configuration stays allowed.
 */

static ngx_int_t
ngx_http_auth_jwt_segments_safe(ngx_str_t *name, u_char *var, ngx_uint_t uri)
{
    size_t      i, start, len;
    ngx_uint_t  from_var;

    start = 0;
    from_var = 0;

    for (i = 0; i <= name->len; i++) {

        if (i < name->len && name->data[i] != '/'
            && !(uri && name->data[i] == '?'))
        {
            from_var |= var[i];
            continue;
        }

        len = i - start;

        if (from_var
            && ((len == 1 && name->data[start] == '.')
                || (len == 2 && name->data[start] == '.'
                    && name->data[start + 1] == '.')))
        {
            return NGX_DECLINED;
        }

        if (i < name->len && name->data[i] == '?') {
            break;
        }

        start = i + 1;
        from_var = 0;
    }

    return NGX_OK;
}


/*
 * A variable's part of a name stays inside the directory (or the URI
 * path) that the literal text gives: no "/", no "..", no control byte,
 * no NUL; in a URI also no "?", "#", "%" or "\\".  The name can reach
 * a log line ("open() ... failed"): UTF-8 only, and no "\"".
 */

static ngx_int_t
ngx_http_auth_jwt_part_safe(ngx_str_t *v, ngx_uint_t uri)
{
    size_t  i;

    if (v->len == 0 || !ngx_meshgate_text_is_safe(v->data, v->len)
        || !ngx_meshgate_utf8_is_valid(v->data, v->len))
    {
        return NGX_DECLINED;
    }

    for (i = 0; i < v->len; i++) {
        switch (v->data[i]) {

        case '/':
        case '\\':
        case '"':
            return NGX_DECLINED;

        case '.':
            if (i + 1 < v->len && v->data[i + 1] == '.') {
                return NGX_DECLINED;
            }
            break;

        case '?':
        case '#':
        case '%':
        case ' ':
            if (uri) {
                return NGX_DECLINED;
            }
            break;
        }
    }

    return NGX_OK;
}


/*
 * The key set of a file named at run time: read once, kept while the file
 * keeps its inode, size and modification time (looked at once a second at
 * most), the least recently used set dropped beyond
 * NGX_HTTP_AUTH_JWT_FILES_MAX.  NULL (logged) when the file is missing or
 * has no usable key.
 */

ngx_http_auth_jwt_keyset_t *
ngx_http_auth_jwt_file_keyset(ngx_http_request_t *r, ngx_str_t *path,
    ngx_uint_t max)
{
    time_t                           now;
    ngx_queue_t                     *q;
    ngx_file_info_t                  fi;
    ngx_http_auth_jwt_keyset_t      *ks;
    ngx_http_auth_jwt_file_entry_t  *e;

    if (ngx_http_auth_jwt_files.next == NULL) {
        ngx_queue_init(&ngx_http_auth_jwt_files);
    }

    now = ngx_time();

    for (q = ngx_queue_head(&ngx_http_auth_jwt_files);
         q != ngx_queue_sentinel(&ngx_http_auth_jwt_files);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_http_auth_jwt_file_entry_t, queue);

        if (e->path.len != path->len
            || ngx_memcmp(e->path.data, path->data, path->len) != 0)
        {
            continue;
        }

        ngx_queue_remove(q);
        ngx_queue_insert_head(&ngx_http_auth_jwt_files, q);

        if (e->checked == now) {
            return e->keyset;
        }

        if (ngx_file_info(path->data, &fi) != NGX_FILE_ERROR
            && ngx_file_uniq(&fi) == e->uniq
            && ngx_file_mtime(&fi) == e->mtime
            && ngx_file_size(&fi) == e->size)
        {
            e->checked = now;
            return e->keyset;
        }

        /* changed or gone: read again below */

        ngx_http_auth_jwt_file_drop(e);
        break;
    }

    ks = ngx_http_auth_jwt_file_load(r, path, max, &fi);
    if (ks == NULL) {
        return NULL;
    }

    e = ngx_palloc(ks->pool, sizeof(ngx_http_auth_jwt_file_entry_t));
    if (e == NULL) {
        ngx_http_auth_jwt_keyset_free(ks);
        return NULL;
    }

    e->path.data = ngx_pstrdup(ks->pool, path);
    if (e->path.data == NULL) {
        ngx_http_auth_jwt_keyset_free(ks);
        return NULL;
    }

    e->path.len = path->len;
    e->keyset = ks;
    e->uniq = ngx_file_uniq(&fi);
    e->mtime = ngx_file_mtime(&fi);
    e->size = ngx_file_size(&fi);
    e->checked = now;

    if (ngx_http_auth_jwt_nfiles == NGX_HTTP_AUTH_JWT_FILES_MAX) {
        q = ngx_queue_last(&ngx_http_auth_jwt_files);
        ngx_http_auth_jwt_file_drop(
            ngx_queue_data(q, ngx_http_auth_jwt_file_entry_t, queue));
    }

    ngx_queue_insert_head(&ngx_http_auth_jwt_files, &e->queue);
    ngx_http_auth_jwt_nfiles++;

    return ks;
}


static void
ngx_http_auth_jwt_file_drop(ngx_http_auth_jwt_file_entry_t *e)
{
    ngx_queue_remove(&e->queue);
    ngx_http_auth_jwt_nfiles--;

    /* the entry lives in the key set's pool */

    ngx_http_auth_jwt_keyset_free(e->keyset);
}


static ngx_http_auth_jwt_keyset_t *
ngx_http_auth_jwt_file_load(ngx_http_request_t *r, ngx_str_t *path,
    ngx_uint_t max, ngx_file_info_t *fi)
{
    u_char                      *buf;
    ssize_t                      n;
    ngx_fd_t                     fd;
    ngx_file_t                   file;
    const char                  *err;
    ngx_http_auth_jwt_keyset_t  *ks;

    /*
     * non-blocking: a FIFO put where a key file should be must not hang
     * the worker in open() or read(); it is refused below
     */

    fd = ngx_open_file(path->data, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK,
                       NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, ngx_errno,
                      "auth_jwt: key file " ngx_open_file_n " \"%V\" failed",
                      path);
        return NULL;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.fd = fd;
    file.name = *path;
    file.log = r->connection->log;

    buf = NULL;
    n = NGX_ERROR;

    if (ngx_fd_info(fd, fi) != NGX_FILE_ERROR
        && ngx_is_file(fi)
        && ngx_file_size(fi) <= 1024 * 1024)
    {
        buf = ngx_pnalloc(r->pool, ngx_file_size(fi) + 1);
        if (buf) {
            n = ngx_read_file(&file, buf, ngx_file_size(fi), 0);
        }
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, ngx_errno,
                      ngx_close_file_n " \"%V\" failed", path);
    }

    if (n == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_jwt: cannot read key file \"%V\" "
                      "(not a regular file, or over 1 MB)", path);
        return NULL;
    }

    ks = ngx_http_auth_jwt_keyset_create(NULL, ngx_cycle->log);
    if (ks == NULL) {
        return NULL;
    }

    err = "invalid key";

    if (ngx_http_auth_jwt_keyset_load(ks, buf, n, max, r->connection->log,
                                      &err)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_jwt: invalid key file \"%V\": %s", path, err);
        ngx_http_auth_jwt_keyset_free(ks);
        return NULL;
    }

    return ks;
}


/*
 * The source of a URI named at run time in the request's server, made on
 * first use and then fetched and refreshed like a fixed one.  A name is
 * first kept in a short list of its own (NGX_HTTP_AUTH_JWT_URIS_NEW):
 * any client can make up names whose fetch fails, and these must not
 * push out the loaded key sets.  Once its fetch has given keys, it moves
 * to the main list (NGX_HTTP_AUTH_JWT_URIS_MAX).  In both, the least
 * recently used source that is neither fetched nor awaited makes room;
 * NULL (logged) when there is none.
 */

ngx_http_auth_jwt_source_t *
ngx_http_auth_jwt_uri_source(ngx_http_request_t *r, ngx_str_t *uri,
    ngx_uint_t max)
{
    void                           *server;
    ngx_pool_t                     *pool;
    ngx_http_auth_jwt_source_t     *src;
    ngx_http_auth_jwt_uri_entry_t  *e;

    if (ngx_http_auth_jwt_uris.next == NULL) {
        ngx_queue_init(&ngx_http_auth_jwt_uris);
        ngx_queue_init(&ngx_http_auth_jwt_uris_new);
    }

    server = ngx_http_get_module_srv_conf(r, ngx_http_core_module);

    e = ngx_http_auth_jwt_uri_find(&ngx_http_auth_jwt_uris, server, uri);
    if (e != NULL) {
        return &e->src;
    }

    e = ngx_http_auth_jwt_uri_find(&ngx_http_auth_jwt_uris_new, server, uri);
    if (e != NULL) {
        if (e->src.keyset != NULL) {
            (void) ngx_http_auth_jwt_uri_promote(e);
        }

        return &e->src;
    }

    if (ngx_http_auth_jwt_uri_room(&ngx_http_auth_jwt_uris_new,
                                   &ngx_http_auth_jwt_nuris_new,
                                   NGX_HTTP_AUTH_JWT_URIS_NEW, 1)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "auth_jwt: %d new key URIs in use at once",
                      NGX_HTTP_AUTH_JWT_URIS_NEW);
        return NULL;
    }

    pool = ngx_create_pool(512, ngx_cycle->log);
    if (pool == NULL) {
        return NULL;
    }

    e = ngx_pcalloc(pool, sizeof(ngx_http_auth_jwt_uri_entry_t));
    if (e == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    e->pool = pool;
    src = &e->src;

    src->uri.data = ngx_pstrdup(pool, uri);
    if (src->uri.data == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    src->uri.len = uri->len;
    src->server = server;
    src->keys_max = max;
    src->named = 1;
    ngx_queue_init(&src->waiters);

    ngx_queue_insert_head(&ngx_http_auth_jwt_uris_new, &e->queue);
    ngx_http_auth_jwt_nuris_new++;

    return src;
}


/* the entry of a URI in a list, made the most recently used */

static ngx_http_auth_jwt_uri_entry_t *
ngx_http_auth_jwt_uri_find(ngx_queue_t *list, void *server, ngx_str_t *uri)
{
    ngx_queue_t                    *q;
    ngx_http_auth_jwt_source_t     *src;
    ngx_http_auth_jwt_uri_entry_t  *e;

    for (q = ngx_queue_head(list);
         q != ngx_queue_sentinel(list);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_http_auth_jwt_uri_entry_t, queue);
        src = &e->src;

        if (src->server == server && src->uri.len == uri->len
            && ngx_memcmp(src->uri.data, uri->data, uri->len) == 0)
        {
            ngx_queue_remove(q);
            ngx_queue_insert_head(list, q);
            return e;
        }
    }

    return NULL;
}


/* a new name whose keys are loaded: a known name from now on */

static ngx_int_t
ngx_http_auth_jwt_uri_promote(ngx_http_auth_jwt_uri_entry_t *e)
{
    if (ngx_http_auth_jwt_uri_room(&ngx_http_auth_jwt_uris,
                                   &ngx_http_auth_jwt_nuris,
                                   NGX_HTTP_AUTH_JWT_URIS_MAX, 0)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    ngx_queue_remove(&e->queue);
    ngx_http_auth_jwt_nuris_new--;
    ngx_queue_insert_head(&ngx_http_auth_jwt_uris, &e->queue);
    ngx_http_auth_jwt_nuris++;

    return NGX_OK;
}


/*
 * Room for one more entry in a list: the least recently used entry that
 * no request fetches or waits for leaves when the list is full, dropped,
 * or (promote, the list of new names) moved to the main list when its
 * keys are loaded.
 */

static ngx_int_t
ngx_http_auth_jwt_uri_room(ngx_queue_t *list, ngx_uint_t *n, ngx_uint_t max,
    ngx_uint_t promote)
{
    ngx_queue_t                    *q;
    ngx_http_auth_jwt_source_t     *src;
    ngx_http_auth_jwt_uri_entry_t  *e;

    if (*n < max) {
        return NGX_OK;
    }

    for (q = ngx_queue_last(list);
         q != ngx_queue_sentinel(list);
         q = ngx_queue_prev(q))
    {
        e = ngx_queue_data(q, ngx_http_auth_jwt_uri_entry_t, queue);
        src = &e->src;

        if (src->fetching || !ngx_queue_empty(&src->waiters)) {
            continue;
        }

        if (promote && src->keyset != NULL
            && ngx_http_auth_jwt_uri_promote(e) == NGX_OK)
        {
            return NGX_OK;
        }

        ngx_queue_remove(q);
        (*n)--;
        ngx_http_auth_jwt_uri_drop(e);
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static void
ngx_http_auth_jwt_uri_drop(ngx_http_auth_jwt_uri_entry_t *e)
{
    ngx_http_auth_jwt_keyset_free(e->src.keyset);
    ngx_destroy_pool(e->pool);
}


/* exit_process: the key sets of this worker */

void
ngx_http_auth_jwt_var_free(void)
{
    ngx_queue_t                     *q;
    ngx_http_auth_jwt_file_entry_t  *f;

    if (ngx_http_auth_jwt_files.next != NULL) {
        while (!ngx_queue_empty(&ngx_http_auth_jwt_files)) {
            q = ngx_queue_head(&ngx_http_auth_jwt_files);
            f = ngx_queue_data(q, ngx_http_auth_jwt_file_entry_t, queue);
            ngx_http_auth_jwt_file_drop(f);
        }
    }

    if (ngx_http_auth_jwt_uris.next != NULL) {
        ngx_http_auth_jwt_uri_free(&ngx_http_auth_jwt_uris);
        ngx_http_auth_jwt_uri_free(&ngx_http_auth_jwt_uris_new);
        ngx_http_auth_jwt_nuris = 0;
        ngx_http_auth_jwt_nuris_new = 0;
    }
}


static void
ngx_http_auth_jwt_uri_free(ngx_queue_t *list)
{
    ngx_queue_t                    *q;
    ngx_http_auth_jwt_uri_entry_t  *e;

    while (!ngx_queue_empty(list)) {
        q = ngx_queue_head(list);
        e = ngx_queue_data(q, ngx_http_auth_jwt_uri_entry_t, queue);
        ngx_queue_remove(q);
        ngx_http_auth_jwt_uri_drop(e);
    }
}
