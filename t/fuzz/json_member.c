
/*
 * Copyright (C) meshgate contributors
 */


/*
 * ngx_meshgate_json_text.c (the compact-JSON reader that auth_introspect
 * runs over an introspection answer, the scope check over claims and
 * aggregate over its parts).
 *
 * Input: a member name, "\n", a JSON document.  The document is parsed
 * and dumped as the module does; every member the reader finds must be
 * the member jansson finds, every absent name must read as absent, and
 * without regard to case the one member that matches (none when two do
 * and none exactly); a member's text is jansson's text of the member; the
 * whole text skips as one value.  The reader also runs on the raw input,
 * for memory safety only.
 *
 * max_len: 4096
 */


#include "ngx_fuzz.h"
#include "../../modules/common/ngx_meshgate_json.c"
#include "../../modules/common/ngx_meshgate_json_text.c"


static void ngx_fuzz_json_member_check(ngx_pool_t *pool, ngx_str_t *text,
    json_t *root, const char *name, size_t len);
static void ngx_fuzz_json_member_caseless(ngx_str_t *text, json_t *root,
    const char *name, size_t len);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t      *root, *v;
    ngx_str_t    name, doc, text, value;
    ngx_pool_t  *pool;
    const char  *key;

    ngx_fuzz_init();

    ngx_fuzz_split(data, size, &name, &doc);

    pool = ngx_create_pool(4096, ngx_fuzz_get_log());

    (void) ngx_meshgate_json_member(&doc, name.data, name.len, 0, &value);
    (void) ngx_meshgate_json_member(&doc, name.data, name.len, 1, &value);
    (void) ngx_meshgate_json_skip_value(doc.data, doc.data + doc.len);
    (void) ngx_meshgate_json_value_text(pool, &doc, &value);

    root = ngx_meshgate_json_parse(doc.data, doc.len, ngx_fuzz_get_log(),
                                   "fuzz");

    if (root == NULL) {
        goto done;
    }

    if (!json_is_object(root)
        || ngx_meshgate_json_dump(pool, root, &text) != NGX_OK)
    {
        json_decref(root);
        goto done;
    }

    ngx_fuzz_assert(ngx_meshgate_json_skip_value(text.data,
                                                 text.data + text.len)
                    == text.data + text.len,
                    "dumped JSON does not skip as one value");

    json_object_foreach(root, key, v) {
        ngx_fuzz_json_member_check(pool, &text, root, key, strlen(key));
        ngx_fuzz_json_member_caseless(&text, root, key, strlen(key));
    }

    ngx_fuzz_json_member_check(pool, &text, root, (char *) name.data,
                               name.len);
    ngx_fuzz_json_member_caseless(&text, root, (char *) name.data, name.len);

    json_decref(root);

done:

    ngx_destroy_pool(pool);

    return 0;
}


static void
ngx_fuzz_json_member_check(ngx_pool_t *pool, ngx_str_t *text, json_t *root,
    const char *name, size_t len)
{
    json_t     *v;
    ngx_str_t   raw, got, want;
    ngx_int_t   rc;

    rc = ngx_meshgate_json_member(text, (u_char *) name, len, 0, &raw);

    ngx_fuzz_assert(rc != NGX_ERROR, "dumped JSON refused");

    /* names with NUL bytes or escapes cannot be compared byte for byte */

    if (memchr(name, '\0', len) || memchr(name, '"', len)
        || memchr(name, '\\', len))
    {
        return;
    }

    v = json_object_getn(root, name, len);

    if (v == NULL) {
        ngx_fuzz_assert(rc == NGX_DECLINED, "absent member found");
        return;
    }

    /* names jansson escapes when dumping (control bytes, "/" ...) */

    if (rc == NGX_DECLINED) {
        for (size_t i = 0; i < len; i++) {
            if ((u_char) name[i] < 0x20 || (u_char) name[i] >= 0x7f) {
                return;
            }
        }

        ngx_fuzz_assert(0, "present member not found");
    }

    if (ngx_meshgate_json_value_text(pool, &raw, &got) != NGX_OK
        || ngx_meshgate_json_text(pool, v, &want) != NGX_OK)
    {
        ngx_fuzz_assert(0, "member value unreadable");
    }

    ngx_fuzz_assert(got.len == want.len
                    && ngx_memcmp(got.data, want.data, got.len) == 0,
                    "member text differs from jansson's");
}


/*
 * With caseless set: the exact member, else the one member whose name
 * equals without regard to ASCII case, as jansson's members say.  Only
 * names that dump as they are (printable ASCII but the quote and the
 * backslash) are compared.
 */

static void
ngx_fuzz_json_member_caseless(ngx_str_t *text, json_t *root,
    const char *name, size_t len)
{
    json_t      *v, *want;
    size_t       i, n;
    ngx_str_t    raw;
    ngx_int_t    rc;
    const char  *key;
    ngx_uint_t   matched;

    rc = ngx_meshgate_json_member(text, (u_char *) name, len, 1, &raw);

    ngx_fuzz_assert(rc != NGX_ERROR, "dumped JSON refused (caseless)");

    for (i = 0; i < len; i++) {
        if ((u_char) name[i] < 0x20 || (u_char) name[i] >= 0x7f
            || name[i] == '"' || name[i] == '\\')
        {
            return;
        }
    }

    want = json_object_getn(root, name, len);
    matched = 0;

    if (want == NULL) {
        json_object_keylen_foreach(root, key, n, v) {
            if (n == len && strncasecmp(key, name, len) == 0) {
                want = v;
                matched++;
            }
        }

        if (matched != 1) {
            want = NULL;
        }
    }

    if (want == NULL) {
        ngx_fuzz_assert(rc == NGX_DECLINED, "caseless: wrong member found");
        return;
    }

    ngx_fuzz_assert(rc == NGX_OK, "caseless: member not found");
}
