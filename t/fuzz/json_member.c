
/*
 * Copyright (C) meshgate contributors
 */


/*
 * ngx_meshgate_json_member() and ngx_meshgate_json_member_text(): the
 * scanner that auth_introspect runs over an introspection answer.
 *
 * Input: a member name, "\n", a JSON document.  The document is parsed
 * and dumped as the module does; every member the scanner finds must be
 * the member jansson finds, every absent name must read as absent.  The
 * scanner also runs on the raw input, for memory safety only.
 *
 * max_len: 4096
 */


#include "ngx_fuzz.h"
#include "../../modules/common/ngx_meshgate_json.c"


static void ngx_fuzz_json_member_check(ngx_pool_t *pool, ngx_str_t *text,
    json_t *root, const char *name, size_t len);


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

    (void) ngx_meshgate_json_member(&doc, name.data, name.len, &value);

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

    json_object_foreach(root, key, v) {
        ngx_fuzz_json_member_check(pool, &text, root, key, strlen(key));
    }

    ngx_fuzz_json_member_check(pool, &text, root, (char *) name.data,
                               name.len);

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

    rc = ngx_meshgate_json_member(text, (u_char *) name, len, &raw);

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

    if (ngx_meshgate_json_member_text(pool, &raw, &got, ngx_fuzz_get_log())
        != NGX_OK
        || ngx_meshgate_json_text(pool, v, &want) != NGX_OK)
    {
        ngx_fuzz_assert(0, "member value unreadable");
    }

    ngx_fuzz_assert(got.len == want.len
                    && ngx_memcmp(got.data, want.data, got.len) == 0,
                    "member text differs from jansson's");
}
