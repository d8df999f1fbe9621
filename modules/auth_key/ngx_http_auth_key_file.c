
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/crypto.h>
#include "ngx_http_auth_key.h"


/*
 * The key file store: "sha256:<hex> consumer [name=value ...]" lines,
 * read once at configuration time into an array sorted by digest, shared
 * by every location that names the same file.
 */


static char *ngx_http_auth_key_parse(ngx_conf_t *cf,
    ngx_http_auth_key_store_t *store, u_char *p, u_char *end);
static char *ngx_http_auth_key_parse_line(ngx_conf_t *cf,
    ngx_http_auth_key_store_t *store, ngx_array_t *entries, ngx_str_t *words,
    ngx_uint_t nwords, ngx_uint_t line);
static int ngx_libc_cdecl ngx_http_auth_key_cmp_entries(const void *one,
    const void *two);


ngx_http_auth_key_store_t *
ngx_http_auth_key_load(ngx_conf_t *cf, ngx_str_t *name)
{
    u_char                         *buf;
    ssize_t                         n;
    ngx_uint_t                      i;
    ngx_file_t                      file;
    ngx_file_info_t                 fi;
    ngx_http_auth_key_store_t      *store;
    ngx_http_auth_key_main_conf_t  *amcf;

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_auth_key_module);

    store = amcf->stores.elts;

    for (i = 0; i < amcf->stores.nelts; i++) {
        if (store[i].name.len == name->len
            && ngx_strncmp(store[i].name.data, name->data, name->len) == 0)
        {
            return &store[i];
        }
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = *name;
    file.log = cf->log;

    file.fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", name);
        return NULL;
    }

    buf = NULL;
    store = NULL;

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", name);
        goto done;
    }

    if (ngx_file_size(&fi) > NGX_HTTP_AUTH_KEY_FILE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "auth_key_file \"%V\" is too large", name);
        goto done;
    }

    buf = ngx_alloc((size_t) ngx_file_size(&fi) + 1, cf->log);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_file(&file, buf, (size_t) ngx_file_size(&fi), 0);

    if (n == NGX_ERROR) {
        goto done;
    }

    store = ngx_array_push(&amcf->stores);
    if (store == NULL) {
        goto done;
    }

    ngx_memzero(store, sizeof(ngx_http_auth_key_store_t));
    store->name = *name;

    if (ngx_http_auth_key_parse(cf, store, buf, buf + n) != NGX_CONF_OK) {
        amcf->stores.nelts--;
        store = NULL;
    }

done:

    if (buf) {
        ngx_free(buf);
    }

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_close_file_n " \"%V\" failed", name);
    }

    return store;
}


static char *
ngx_http_auth_key_parse(ngx_conf_t *cf, ngx_http_auth_key_store_t *store,
    u_char *p, u_char *end)
{
    u_char                     *eol, *w;
    ngx_str_t                   words[64];
    ngx_uint_t                  line, nwords, i;
    ngx_array_t                 entries;
    ngx_http_auth_key_entry_t  *e;

    if (ngx_array_init(&entries, cf->pool, 16,
                       sizeof(ngx_http_auth_key_entry_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (line = 1; p < end; line++, p = eol + 1) {

        eol = ngx_strlchr(p, end, '\n');
        if (eol == NULL) {
            eol = end;
        }

        nwords = 0;
        w = p;

        while (w < eol) {
            while (w < eol && (*w == ' ' || *w == '\t' || *w == '\r')) {
                w++;
            }

            if (w == eol || *w == '#') {
                break;
            }

            if (nwords == 64) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "auth_key_file \"%V\" line %ui: "
                                   "too many fields", &store->name, line);
                return NGX_CONF_ERROR;
            }

            words[nwords].data = w;

            while (w < eol && *w != ' ' && *w != '\t' && *w != '\r') {
                w++;
            }

            words[nwords].len = w - words[nwords].data;
            nwords++;
        }

        if (nwords == 0) {
            continue;
        }

        if (ngx_http_auth_key_parse_line(cf, store, &entries, words, nwords,
                                         line)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    e = entries.elts;

    ngx_qsort(e, entries.nelts, sizeof(ngx_http_auth_key_entry_t),
              ngx_http_auth_key_cmp_entries);

    for (i = 1; i < entries.nelts; i++) {
        if (ngx_memcmp(e[i].digest, e[i - 1].digest,
                       NGX_HTTP_AUTH_KEY_DIGEST_LEN) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "auth_key_file \"%V\" line %ui: duplicate "
                               "API key (same as line %ui)", &store->name,
                               ngx_max(e[i].line, e[i - 1].line),
                               ngx_min(e[i].line, e[i - 1].line));
            return NGX_CONF_ERROR;
        }
    }

    store->entries = e;
    store->nentries = entries.nelts;

    return NGX_CONF_OK;
}


static char *
ngx_http_auth_key_parse_line(ngx_conf_t *cf, ngx_http_auth_key_store_t *store,
    ngx_array_t *entries, ngx_str_t *words, ngx_uint_t nwords,
    ngx_uint_t line)
{
    u_char                     *p, *eq;
    ngx_int_t                   hi, lo;
    ngx_uint_t                  i, j, k;
    const char                 *reason;
    ngx_keyval_t               *kv;
    ngx_http_auth_key_entry_t  *e;

    if (words[0].len != sizeof("sha256:") - 1 + 64
        || ngx_strncmp(words[0].data, "sha256:", 7) != 0)
    {
        reason = "expected \"sha256:<64 hex digits>\"";
        goto failed;
    }

    e = ngx_array_push(entries);
    if (e == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(e, sizeof(ngx_http_auth_key_entry_t));
    e->line = line;

    p = words[0].data + 7;

    for (i = 0; i < NGX_HTTP_AUTH_KEY_DIGEST_LEN; i++) {
        hi = ngx_hextoi(p + 2 * i, 1);
        lo = ngx_hextoi(p + 2 * i + 1, 1);

        if (hi == NGX_ERROR || lo == NGX_ERROR) {
            reason = "expected \"sha256:<64 hex digits>\"";
            goto failed;
        }

        e->digest[i] = (u_char) (hi * 16 + lo);
    }

    if (nwords < 2) {
        reason = "no consumer name after the hash";
        goto failed;
    }

    for (j = 1; j < nwords; j++) {
        for (p = words[j].data; p < words[j].data + words[j].len; p++) {
            if (*p < 0x20 || *p == 0x7f) {
                reason = "control character";
                goto failed;
            }
        }
    }

    e->consumer.len = words[1].len;
    e->consumer.data = ngx_pstrdup(cf->pool, &words[1]);
    if (e->consumer.data == NULL) {
        return NGX_CONF_ERROR;
    }

    e->nmeta = nwords - 2;

    if (e->nmeta == 0) {
        return NGX_CONF_OK;
    }

    kv = ngx_pcalloc(cf->pool, e->nmeta * sizeof(ngx_keyval_t));
    if (kv == NULL) {
        return NGX_CONF_ERROR;
    }

    e->meta = kv;

    for (j = 2; j < nwords; j++) {
        eq = ngx_strlchr(words[j].data, words[j].data + words[j].len, '=');

        if (eq == NULL || eq == words[j].data) {
            reason = "expected \"name=value\" after the consumer name";
            goto failed;
        }

        kv->key.len = eq - words[j].data;
        kv->key.data = ngx_pnalloc(cf->pool, kv->key.len);
        if (kv->key.data == NULL) {
            return NGX_CONF_ERROR;
        }

        for (k = 0; k < kv->key.len; k++) {
            p = &words[j].data[k];

            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                  || (*p >= '0' && *p <= '9') || *p == '_'))
            {
                reason = "metadata names are letters, digits and \"_\"";
                goto failed;
            }

            kv->key.data[k] = ngx_tolower(*p);
        }

        if ((kv->key.len == 8
             && ngx_strncmp(kv->key.data, "consumer", 8) == 0)
            || (kv->key.len == 6
                && ngx_strncmp(kv->key.data, "result", 6) == 0))
        {
            reason = "metadata names \"consumer\" and \"result\" are reserved";
            goto failed;
        }

        for (k = 0; k < (ngx_uint_t) (kv - e->meta); k++) {
            if (e->meta[k].key.len == kv->key.len
                && ngx_strncmp(e->meta[k].key.data, kv->key.data,
                               kv->key.len) == 0)
            {
                reason = "duplicate metadata name";
                goto failed;
            }
        }

        kv->value.len = words[j].data + words[j].len - eq - 1;
        kv->value.data = ngx_pnalloc(cf->pool, kv->value.len + 1);
        if (kv->value.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(kv->value.data, eq + 1, kv->value.len);

        kv++;
    }

    return NGX_CONF_OK;

failed:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "auth_key_file \"%V\" line %ui: %s",
                       &store->name, line, reason);

    return NGX_CONF_ERROR;
}


static int ngx_libc_cdecl
ngx_http_auth_key_cmp_entries(const void *one, const void *two)
{
    const ngx_http_auth_key_entry_t  *a = one;
    const ngx_http_auth_key_entry_t  *b = two;

    return ngx_memcmp(a->digest, b->digest, NGX_HTTP_AUTH_KEY_DIGEST_LEN);
}


ngx_http_auth_key_entry_t *
ngx_http_auth_key_lookup(ngx_http_auth_key_store_t *store, u_char *digest)
{
    ngx_int_t                   rc;
    ngx_uint_t                  lo, hi, mid;
    ngx_http_auth_key_entry_t  *e;

    lo = 0;
    hi = store->nentries;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        e = &store->entries[mid];

        rc = ngx_memcmp(digest, e->digest, NGX_HTTP_AUTH_KEY_DIGEST_LEN);

        if (rc < 0) {
            hi = mid;

        } else if (rc > 0) {
            lo = mid + 1;

        } else {
            /* the final word is a constant-time compare */

            if (CRYPTO_memcmp(digest, e->digest,
                              NGX_HTTP_AUTH_KEY_DIGEST_LEN) == 0)
            {
                return e;
            }

            return NULL;
        }
    }

    return NULL;
}
