
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_mesh_identity.h"


/*
 * The X.509-SVID rules: the SPIFFE ID is the certificate's only URI SAN,
 * "spiffe://" + a trust domain of [a-z0-9._-] + a path of non-empty
 * segments of [A-Za-z0-9._-] that are not "." or "..", no query, no
 * fragment, no port, no userinfo, at most 2048 bytes; the leaf is not a
 * CA, its key usage (if any) has digitalSignature and neither
 * keyCertSign nor cRLSign, and an empty subject needs a critical SAN.
 */


#define NGX_HTTP_MESH_IDENTITY_SCHEME      "spiffe://"
#define NGX_HTTP_MESH_IDENTITY_SCHEME_LEN  (sizeof("spiffe://") - 1)


static ngx_uint_t ngx_http_mesh_identity_td_char(u_char ch);
static ngx_uint_t ngx_http_mesh_identity_path_char(u_char ch);
static const char *ngx_http_mesh_identity_check_path(u_char *p, u_char *last);
static const char *ngx_http_mesh_identity_uri_san(X509 *cert,
    GENERAL_NAMES **gens, u_char **uri, size_t *len);


const char *
ngx_http_mesh_identity_check_id(u_char *p, size_t len, size_t *td_len,
    ngx_uint_t root_ok)
{
    u_char  *td, *last;

    if (len > NGX_HTTP_MESH_IDENTITY_ID_MAX) {
        return "longer than 2048 bytes";
    }

    if (len < NGX_HTTP_MESH_IDENTITY_SCHEME_LEN
        || ngx_strncmp(p, NGX_HTTP_MESH_IDENTITY_SCHEME,
                       NGX_HTTP_MESH_IDENTITY_SCHEME_LEN)
           != 0)
    {
        return "the scheme is not \"spiffe://\"";
    }

    last = p + len;
    td = p + NGX_HTTP_MESH_IDENTITY_SCHEME_LEN;

    for (p = td; p < last && *p != '/'; p++) {
        if (!ngx_http_mesh_identity_td_char(*p)) {
            return "invalid character in the trust domain "
                   "(allowed: a-z 0-9 . - _)";
        }
    }

    if (p == td) {
        return "empty trust domain";
    }

    if ((size_t) (p - td) > NGX_HTTP_MESH_IDENTITY_TD_MAX) {
        return "trust domain longer than 255 bytes";
    }

    if (td_len) {
        *td_len = p - td;
    }

    if (p == last) {
        return root_ok ? NULL : "no path";
    }

    return ngx_http_mesh_identity_check_path(p, last);
}


static const char *
ngx_http_mesh_identity_check_path(u_char *p, u_char *last)
{
    u_char  *seg;

    /* *p == '/' */

    while (p < last) {
        seg = ++p;

        while (p < last && *p != '/') {
            if (!ngx_http_mesh_identity_path_char(*p)) {
                return "invalid character in the path "
                       "(allowed: A-Z a-z 0-9 . - _ /)";
            }

            p++;
        }

        if (p == seg) {
            return "empty path segment";
        }

        if ((p - seg == 1 && seg[0] == '.')
            || (p - seg == 2 && seg[0] == '.' && seg[1] == '.'))
        {
            return "\".\" or \"..\" path segment";
        }
    }

    return NULL;
}


static ngx_uint_t
ngx_http_mesh_identity_td_char(u_char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
           || ch == '.' || ch == '-' || ch == '_';
}


static ngx_uint_t
ngx_http_mesh_identity_path_char(u_char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
           || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_';
}


ngx_int_t
ngx_http_mesh_identity_svid(X509 *cert, ngx_pool_t *pool, ngx_str_t *id,
    ngx_str_t *td, const char **reason)
{
    size_t          len, td_len;
    u_char         *uri;
    uint32_t        flags, usage;
    ngx_int_t       rc;
    GENERAL_NAMES  *gens;

    flags = X509_get_extension_flags(cert);

    if (flags & EXFLAG_CA) {
        *reason = "the certificate is a CA";
        return NGX_DECLINED;
    }

    if (flags & EXFLAG_KUSAGE) {
        usage = X509_get_key_usage(cert);

        if (usage & (KU_KEY_CERT_SIGN|KU_CRL_SIGN)) {
            *reason = "the key usage allows signing certificates or CRLs";
            return NGX_DECLINED;
        }

        if (!(usage & KU_DIGITAL_SIGNATURE)) {
            *reason = "the key usage lacks digitalSignature";
            return NGX_DECLINED;
        }
    }

    gens = NULL;

    *reason = ngx_http_mesh_identity_uri_san(cert, &gens, &uri, &len);

    if (*reason == NULL) {
        *reason = ngx_http_mesh_identity_check_id(uri, len, &td_len, 0);
    }

    if (*reason) {
        rc = NGX_DECLINED;
        goto done;
    }

    id->data = ngx_pnalloc(pool, len);
    if (id->data == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    ngx_memcpy(id->data, uri, len);
    id->len = len;

    td->data = id->data + NGX_HTTP_MESH_IDENTITY_SCHEME_LEN;
    td->len = td_len;

    rc = NGX_OK;

done:

    if (gens) {
        GENERAL_NAMES_free(gens);
    }

    return rc;
}


/* the only URI SAN; uri points into *gens, which the caller frees */

static const char *
ngx_http_mesh_identity_uri_san(X509 *cert, GENERAL_NAMES **gens,
    u_char **uri, size_t *len)
{
    int            i, crit;
    ngx_uint_t     n;
    ASN1_STRING   *s;
    GENERAL_NAME  *gen;

    *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);

    if (*gens == NULL) {
        return (crit == -2) ? "more than one subjectAltName extension"
                            : "no subjectAltName";
    }

    if (!crit && X509_NAME_entry_count(X509_get_subject_name(cert)) == 0) {
        return "empty subject with a non-critical subjectAltName";
    }

    n = 0;

    for (i = 0; i < sk_GENERAL_NAME_num(*gens); i++) {
        gen = sk_GENERAL_NAME_value(*gens, i);

        if (gen->type != GEN_URI) {
            continue;
        }

        n++;
        s = gen->d.uniformResourceIdentifier;
        *uri = (u_char *) ASN1_STRING_get0_data(s);
        *len = ASN1_STRING_length(s);
    }

    if (n == 0) {
        return "no URI SAN";
    }

    if (n > 1) {
        return "more than one URI SAN";
    }

    return NULL;
}


char *
ngx_http_mesh_identity_parse_patterns(ngx_conf_t *cf,
    ngx_array_t **patterns)
{
    const char                        *reason;
    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_mesh_identity_pattern_t  *p;

    if (*patterns == NULL || *patterns == NGX_CONF_UNSET_PTR) {
        *patterns = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                     sizeof(ngx_http_mesh_identity_pattern_t));
        if (*patterns == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        p = ngx_array_push(*patterns);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(p, sizeof(ngx_http_mesh_identity_pattern_t));
        p->value = value[i];

        if (value[i].len == 1 && value[i].data[0] == '*') {
            p->any = 1;
            continue;
        }

        if (value[i].len > 2
            && value[i].data[value[i].len - 1] == '*'
            && value[i].data[value[i].len - 2] == '/')
        {
            p->prefix = 1;
            p->value.len--;
            reason = ngx_http_mesh_identity_check_id(value[i].data,
                                                     value[i].len - 2,
                                                     NULL, 1);

        } else {
            reason = ngx_http_mesh_identity_check_id(value[i].data,
                                                     value[i].len, NULL, 0);
        }

        if (reason) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid SPIFFE ID pattern \"%V\" in \"%V\": "
                               "%s (use an ID, \"spiffe://td/path/*\" "
                               "or \"*\")", &value[i], &value[0], reason);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


ngx_uint_t
ngx_http_mesh_identity_match(ngx_array_t *patterns, ngx_str_t *id)
{
    ngx_uint_t                         i;
    ngx_http_mesh_identity_pattern_t  *p;

    if (id->len == 0) {
        return 0;
    }

    p = patterns->elts;

    for (i = 0; i < patterns->nelts; i++) {

        if (p[i].any) {
            return 1;
        }

        if (p[i].prefix) {
            if (id->len > p[i].value.len
                && ngx_strncmp(id->data, p[i].value.data, p[i].value.len)
                   == 0)
            {
                return 1;
            }

            continue;
        }

        if (id->len == p[i].value.len
            && ngx_strncmp(id->data, p[i].value.data, id->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}
