
/*
 * Copyright (C) meshgate contributors
 */


/*
 * The few nginx core functions the fuzzed parsers call, written from
 * their documented behaviour (no nginx code): the harnesses link module
 * sources without the nginx binary.
 *
 * Pool memory is one malloc() per allocation, so that AddressSanitizer
 * sees the exact end of every block (nginx's pools hide small overruns).
 * Functions a harness never reaches are linked to traps that scripts/fuzz
 * generates: reaching one aborts with its name.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>
#include <sanitizer/allocator_interface.h>


static ngx_log_t       ngx_fuzz_log;
static ngx_cycle_t     ngx_fuzz_cycle;
static ngx_time_t      ngx_fuzz_time;

volatile ngx_cycle_t  *ngx_cycle = &ngx_fuzz_cycle;
volatile ngx_msec_t    ngx_current_msec = 1000000;
volatile ngx_time_t   *ngx_cached_time = &ngx_fuzz_time;
ngx_uint_t             ngx_pagesize = 4096;
ngx_pid_t              ngx_pid = 1;
sig_atomic_t           ngx_quit;
sig_atomic_t           ngx_terminate;
ngx_uint_t             ngx_exiting;
ngx_rbtree_t           ngx_event_timer_rbtree;
ngx_queue_t            ngx_posted_events;
int                    ngx_ssl_connection_index;

ngx_module_t           ngx_http_module;
ngx_module_t           ngx_http_core_module;
ngx_module_t           ngx_http_upstream_module;
ngx_module_t           ngx_http_proxy_module;
ngx_module_t           ngx_http_ssl_module;


void
ngx_fuzz_init(void)
{
    ngx_fuzz_log.log_level = NGX_LOG_DEBUG_ALL;
    ngx_fuzz_cycle.log = &ngx_fuzz_log;

    /* the process-wide pool (the EVP context of ngx_meshgate_sha256()) */

    if (ngx_fuzz_cycle.pool == NULL) {
        ngx_fuzz_cycle.pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE,
                                              &ngx_fuzz_log);
    }
    ngx_fuzz_time.sec = 1764547200;
    ngx_queue_init(&ngx_posted_events);
}


ngx_log_t *
ngx_fuzz_get_log(void)
{
    return &ngx_fuzz_log;
}


void
ngx_fuzz_trap(const char *name)
{
    fprintf(stderr, "fuzz: reached the trap of %s()\n", name);
    abort();
}


/*
 * Heap accounting through the sanitizer's malloc hooks: the peak of live
 * heap bytes between ngx_fuzz_heap_start() and ngx_fuzz_heap_peak(), for
 * harnesses that check that memory stays proportional to the input.
 */

static ngx_uint_t  ngx_fuzz_heap_on;
static ssize_t     ngx_fuzz_heap_live;
static ssize_t     ngx_fuzz_heap_max;


static void
ngx_fuzz_heap_malloc(const volatile void *p, size_t size)
{
    if (ngx_fuzz_heap_on) {
        ngx_fuzz_heap_live += size;
        ngx_fuzz_heap_max = ngx_max(ngx_fuzz_heap_max, ngx_fuzz_heap_live);
    }
}


static void
ngx_fuzz_heap_free(const volatile void *p)
{
    if (ngx_fuzz_heap_on && p) {
        ngx_fuzz_heap_live -= __sanitizer_get_allocated_size((void *) p);
    }
}


void
ngx_fuzz_heap_start(void)
{
    static ngx_uint_t  installed;

    if (!installed) {
        __sanitizer_install_malloc_and_free_hooks(ngx_fuzz_heap_malloc,
                                                  ngx_fuzz_heap_free);
        installed = 1;
    }

    ngx_fuzz_heap_live = 0;
    ngx_fuzz_heap_max = 0;
    ngx_fuzz_heap_on = 1;
}


size_t
ngx_fuzz_heap_peak(void)
{
    ngx_fuzz_heap_on = 0;

    return ngx_fuzz_heap_max;
}


/* memory */

void *
ngx_alloc(size_t size, ngx_log_t *log)
{
    return malloc(size ? size : 1);
}


void *
ngx_calloc(size_t size, ngx_log_t *log)
{
    return calloc(1, size ? size : 1);
}


ngx_pool_t *
ngx_create_pool(size_t size, ngx_log_t *log)
{
    ngx_pool_t  *p;

    p = calloc(1, sizeof(ngx_pool_t));
    if (p == NULL) {
        return NULL;
    }

    p->log = log;

    return p;
}


void
ngx_destroy_pool(ngx_pool_t *pool)
{
    ngx_pool_large_t    *l, *next;
    ngx_pool_cleanup_t  *c;

    for (c = pool->cleanup; c; c = c->next) {
        if (c->handler) {
            c->handler(c->data);
        }
    }

    for (l = pool->large; l; l = next) {
        next = l->next;
        free(l->alloc);
        free(l);
    }

    free(pool);
}


static void *
ngx_fuzz_palloc(ngx_pool_t *pool, size_t size, ngx_uint_t zero)
{
    ngx_pool_large_t  *l;

    l = malloc(sizeof(ngx_pool_large_t));
    if (l == NULL) {
        return NULL;
    }

    l->alloc = zero ? calloc(1, size ? size : 1) : malloc(size ? size : 1);
    if (l->alloc == NULL) {
        free(l);
        return NULL;
    }

    l->next = pool->large;
    pool->large = l;

    return l->alloc;
}


void *
ngx_palloc(ngx_pool_t *pool, size_t size)
{
    return ngx_fuzz_palloc(pool, size, 0);
}


void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    return ngx_fuzz_palloc(pool, size, 0);
}


void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    return ngx_fuzz_palloc(pool, size, 1);
}


void *
ngx_pmemalign(ngx_pool_t *pool, size_t size, size_t alignment)
{
    return ngx_fuzz_palloc(pool, size, 0);
}


ngx_int_t
ngx_pfree(ngx_pool_t *pool, void *p)
{
    ngx_pool_large_t  *l;

    for (l = pool->large; l; l = l->next) {
        if (l->alloc == p) {
            free(l->alloc);
            l->alloc = NULL;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


ngx_pool_cleanup_t *
ngx_pool_cleanup_add(ngx_pool_t *p, size_t size)
{
    ngx_pool_cleanup_t  *c;

    c = ngx_palloc(p, sizeof(ngx_pool_cleanup_t));
    if (c == NULL) {
        return NULL;
    }

    c->data = NULL;

    if (size) {
        c->data = ngx_palloc(p, size);
        if (c->data == NULL) {
            return NULL;
        }
    }

    c->handler = NULL;
    c->next = p->cleanup;
    p->cleanup = c;

    return c;
}


ngx_array_t *
ngx_array_create(ngx_pool_t *p, ngx_uint_t n, size_t size)
{
    ngx_array_t  *a;

    a = ngx_palloc(p, sizeof(ngx_array_t));
    if (a == NULL || ngx_array_init(a, p, n, size) != NGX_OK) {
        return NULL;
    }

    return a;
}


void *
ngx_array_push_n(ngx_array_t *a, ngx_uint_t n)
{
    void        *elts;
    ngx_uint_t   nalloc;

    if (a->nelts + n > a->nalloc) {
        nalloc = 2 * ngx_max(n, a->nalloc);

        elts = ngx_palloc(a->pool, nalloc * a->size);
        if (elts == NULL) {
            return NULL;
        }

        ngx_memcpy(elts, a->elts, a->nelts * a->size);
        a->elts = elts;
        a->nalloc = nalloc;
    }

    elts = (u_char *) a->elts + a->size * a->nelts;
    a->nelts += n;

    return elts;
}


void *
ngx_array_push(ngx_array_t *a)
{
    return ngx_array_push_n(a, 1);
}


ngx_list_t *
ngx_list_create(ngx_pool_t *pool, ngx_uint_t n, size_t size)
{
    ngx_list_t  *list;

    list = ngx_palloc(pool, sizeof(ngx_list_t));
    if (list == NULL || ngx_list_init(list, pool, n, size) != NGX_OK) {
        return NULL;
    }

    return list;
}


void *
ngx_list_push(ngx_list_t *l)
{
    void             *elt;
    ngx_list_part_t  *last;

    last = l->last;

    if (last->nelts == l->nalloc) {
        last = ngx_palloc(l->pool, sizeof(ngx_list_part_t));
        if (last == NULL) {
            return NULL;
        }

        last->elts = ngx_palloc(l->pool, l->nalloc * l->size);
        if (last->elts == NULL) {
            return NULL;
        }

        last->nelts = 0;
        last->next = NULL;

        l->last->next = last;
        l->last = last;
    }

    elt = (u_char *) last->elts + l->size * last->nelts;
    last->nelts++;

    return elt;
}


ngx_buf_t *
ngx_create_temp_buf(ngx_pool_t *pool, size_t size)
{
    ngx_buf_t  *b;

    b = ngx_pcalloc(pool, sizeof(ngx_buf_t));
    if (b == NULL) {
        return NULL;
    }

    b->start = ngx_palloc(pool, size);
    if (b->start == NULL) {
        return NULL;
    }

    b->pos = b->start;
    b->last = b->start;
    b->end = b->start + size;
    b->temporary = 1;

    return b;
}


void
ngx_explicit_memzero(void *buf, size_t n)
{
    explicit_bzero(buf, n);
}


/* strings */

ngx_int_t
ngx_strncasecmp(u_char *s1, u_char *s2, size_t n)
{
    ngx_uint_t  c1, c2;

    while (n--) {
        c1 = ngx_tolower(*s1);
        c2 = ngx_tolower(*s2);
        s1++;
        s2++;

        if (c1 != c2) {
            return c1 - c2;
        }

        if (c1 == 0) {
            return 0;
        }
    }

    return 0;
}


ngx_int_t
ngx_strcasecmp(u_char *s1, u_char *s2)
{
    return ngx_strncasecmp(s1, s2, (size_t) -1);
}


/* s2 is lowercase, n + 1 bytes long; a match within s1..last */

u_char *
ngx_strlcasestrn(u_char *s1, u_char *last, u_char *s2, size_t n)
{
    for ( /* void */ ; last - s1 > (ssize_t) n; s1++) {
        if (ngx_strncasecmp(s1, s2, n + 1) == 0) {
            return s1;
        }
    }

    return NULL;
}


u_char *
ngx_cpystrn(u_char *dst, u_char *src, size_t n)
{
    if (n == 0) {
        return dst;
    }

    while (--n) {
        *dst = *src;

        if (*dst == '\0') {
            return dst;
        }

        dst++;
        src++;
    }

    *dst = '\0';

    return dst;
}


u_char *
ngx_pstrdup(ngx_pool_t *pool, ngx_str_t *src)
{
    u_char  *dst;

    dst = ngx_pnalloc(pool, src->len);
    if (dst == NULL) {
        return NULL;
    }

    ngx_memcpy(dst, src->data, src->len);

    return dst;
}


void
ngx_strlow(u_char *dst, u_char *src, size_t n)
{
    while (n--) {
        *dst++ = ngx_tolower(*src);
        src++;
    }
}


/* decimal digits only, NGX_ERROR when empty, on other bytes or overflow */

ngx_int_t
ngx_atoi(u_char *line, size_t n)
{
    ngx_int_t  value;

    if (n == 0) {
        return NGX_ERROR;
    }

    for (value = 0; n--; line++) {
        if (*line < '0' || *line > '9') {
            return NGX_ERROR;
        }

        if (value > (NGX_MAX_INT_T_VALUE - (*line - '0')) / 10) {
            return NGX_ERROR;
        }

        value = value * 10 + (*line - '0');
    }

    return value;
}


ngx_int_t
ngx_hextoi(u_char *line, size_t n)
{
    u_char     c;
    ngx_int_t  value, d;

    if (n == 0) {
        return NGX_ERROR;
    }

    for (value = 0; n--; line++) {
        c = ngx_tolower(*line);

        if (c >= '0' && c <= '9') {
            d = c - '0';

        } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;

        } else {
            return NGX_ERROR;
        }

        if (value > (NGX_MAX_INT_T_VALUE - d) / 16) {
            return NGX_ERROR;
        }

        value = value * 16 + d;
    }

    return value;
}


u_char *
ngx_hex_dump(u_char *dst, u_char *src, size_t len)
{
    static u_char  hex[] = "0123456789abcdef";

    while (len--) {
        *dst++ = hex[*src >> 4];
        *dst++ = hex[*src++ & 0xf];
    }

    return dst;
}


ngx_uint_t
ngx_hash_key(u_char *data, size_t len)
{
    ngx_uint_t  i, key;

    key = 0;

    for (i = 0; i < len; i++) {
        key = ngx_hash(key, data[i]);
    }

    return key;
}


ngx_uint_t
ngx_hash_key_lc(u_char *data, size_t len)
{
    ngx_uint_t  i, key;

    key = 0;

    for (i = 0; i < len; i++) {
        key = ngx_hash(key, ngx_tolower(data[i]));
    }

    return key;
}


/*
 * Multi-byte UTF-8 as nginx documents ngx_utf8_decode(): a lead byte
 * below 0xc2 is an error (one byte consumed); a sequence longer than n
 * is incomplete (0xfffffffe, nothing consumed); a following byte below
 * 0x80 is an error; an overlong form is an error; other values,
 * surrogates and values above 0x10ffff included, are returned as they
 * decode.  Following bytes are not checked against 0xc0: callers must
 * not rely on this function for strict validation.
 */

uint32_t
ngx_utf8_decode(u_char **p, size_t n)
{
    size_t    len;
    uint32_t  u, c, min;

    u = **p;

    if (u >= 0xf0) {
        u &= 0x07;
        len = 3;
        min = 0x10000;

    } else if (u >= 0xe0) {
        u &= 0x0f;
        len = 2;
        min = 0x800;

    } else if (u >= 0xc2) {
        u &= 0x1f;
        len = 1;
        min = 0x80;

    } else {
        (*p)++;
        return 0xffffffff;
    }

    if (n - 1 < len) {
        return 0xfffffffe;
    }

    (*p)++;

    while (len--) {
        c = *(*p)++;

        if (c < 0x80) {
            return 0xffffffff;
        }

        u = (u << 6) | (c & 0x3f);
    }

    return (u >= min) ? u : 0xffffffff;
}


static ngx_int_t
ngx_fuzz_hex_value(u_char c)
{
    c = ngx_tolower(c);

    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/*
 * Percent-decoding of all of src (type 0): "%XX" becomes its byte; a '%'
 * not followed by a hex digit is dropped, "%X" and a non-hex byte are
 * dropped.  Never writes more than size bytes.
 */

void
ngx_unescape_uri(u_char **dst, u_char **src, size_t size, ngx_uint_t type)
{
    u_char     *d, *s, *last;
    ngx_int_t   h, l;

    d = *dst;
    s = *src;
    last = s + size;

    while (s < last) {
        if (*s != '%') {
            *d++ = *s++;
            continue;
        }

        s++;

        if (s == last) {
            break;
        }

        h = ngx_fuzz_hex_value(*s);

        if (h < 0) {
            *d++ = *s++;
            continue;
        }

        s++;

        if (s == last) {
            break;
        }

        l = ngx_fuzz_hex_value(*s++);

        if (l >= 0) {
            *d++ = (u_char) (h * 16 + l);
        }
    }

    *dst = d;
    *src = s;
}


/* formatted output: the nginx formats the modules use */

static u_char *
ngx_fuzz_number(u_char *buf, u_char *last, uint64_t ui64, u_char zero,
    ngx_uint_t hex, ngx_uint_t width)
{
    u_char   tmp[NGX_INT64_LEN + 1], *p;
    size_t   len;
    const char  *digits;

    digits = (hex == 2) ? "0123456789ABCDEF" : "0123456789abcdef";
    p = tmp + sizeof(tmp);

    do {
        *--p = digits[hex ? ui64 % 16 : ui64 % 10];
        ui64 = hex ? ui64 / 16 : ui64 / 10;
    } while (ui64);

    len = tmp + sizeof(tmp) - p;

    while (len++ < width && buf < last) {
        *buf++ = zero;
    }

    len = tmp + sizeof(tmp) - p;

    if ((size_t) (last - buf) < len) {
        len = last - buf;
    }

    return ngx_cpymem(buf, p, len);
}


u_char *
ngx_vslprintf(u_char *buf, u_char *last, const char *fmt, va_list args)
{
    u_char                *p, zero;
    size_t                 len, slen;
    int64_t                i64;
    uint64_t               ui64;
    ngx_str_t             *v;
    ngx_uint_t             width, sign, hex, frac, n;
    ngx_variable_value_t  *vv;

    while (*fmt && buf < last) {

        if (*fmt != '%') {
            *buf++ = *fmt++;
            continue;
        }

        fmt++;

        zero = (u_char) ((*fmt == '0') ? '0' : ' ');
        width = 0;
        sign = 1;
        hex = 0;
        frac = 0;
        slen = (size_t) -1;

        while (*fmt >= '0' && *fmt <= '9') {
            width = width * 10 + (*fmt++ - '0');
        }

        for ( ;; ) {
            switch (*fmt) {
            case 'u':
                sign = 0;
                fmt++;
                continue;
            case 'm':
                fmt++;
                continue;
            case 'X':
                hex = 2;
                sign = 0;
                fmt++;
                continue;
            case 'x':
                hex = 1;
                sign = 0;
                fmt++;
                continue;
            case '.':
                fmt++;
                while (*fmt >= '0' && *fmt <= '9') {
                    frac = frac * 10 + (*fmt++ - '0');
                }
                continue;
            case '*':
                slen = va_arg(args, size_t);
                fmt++;
                continue;
            }

            break;
        }

        switch (*fmt) {

        case 'V':
            v = va_arg(args, ngx_str_t *);
            len = ngx_min((size_t) (last - buf), v->len);
            buf = ngx_cpymem(buf, v->data, len);
            fmt++;
            continue;

        case 'v':
            vv = va_arg(args, ngx_variable_value_t *);
            len = ngx_min((size_t) (last - buf), vv->len);
            buf = ngx_cpymem(buf, vv->data, len);
            fmt++;
            continue;

        case 's':
            p = va_arg(args, u_char *);

            if (slen == (size_t) -1) {
                while (*p && buf < last) {
                    *buf++ = *p++;
                }

            } else {
                len = ngx_min((size_t) (last - buf), slen);
                buf = ngx_cpymem(buf, p, len);
            }

            fmt++;
            continue;

        case 'O':
            i64 = (int64_t) va_arg(args, off_t);
            sign = 1;
            break;

        case 'P':
            i64 = (int64_t) va_arg(args, ngx_pid_t);
            sign = 1;
            break;

        case 'T':
            i64 = (int64_t) va_arg(args, time_t);
            sign = 1;
            break;

        case 'M':
            i64 = (int64_t) (ngx_msec_int_t) va_arg(args, ngx_msec_t);
            sign = 1;
            break;

        case 'z':
            i64 = sign ? (int64_t) va_arg(args, ssize_t)
                       : (int64_t) va_arg(args, size_t);
            break;

        case 'i':
            i64 = sign ? (int64_t) va_arg(args, ngx_int_t)
                       : (int64_t) va_arg(args, ngx_uint_t);
            break;

        case 'd':
            i64 = sign ? (int64_t) va_arg(args, int)
                       : (int64_t) va_arg(args, u_int);
            break;

        case 'l':
            i64 = sign ? (int64_t) va_arg(args, long)
                       : (int64_t) va_arg(args, u_long);
            break;

        case 'D':
            i64 = sign ? (int64_t) va_arg(args, int32_t)
                       : (int64_t) va_arg(args, uint32_t);
            break;

        case 'L':
            i64 = va_arg(args, int64_t);
            break;

        case 'A':
            i64 = sign ? (int64_t) va_arg(args, ngx_atomic_int_t)
                       : (int64_t) va_arg(args, ngx_atomic_uint_t);
            break;

        case 'f':
            {
            double  f = va_arg(args, double);

            if (f < 0) {
                *buf++ = '-';
                f = -f;
            }

            ui64 = (uint64_t) f;
            buf = ngx_fuzz_number(buf, last, ui64, zero, 0, width);

            if (frac && buf < last) {
                *buf++ = '.';
                f -= (double) ui64;

                for (n = 0; n < frac; n++) {
                    f *= 10;
                }

                buf = ngx_fuzz_number(buf, last, (uint64_t) (f + 0.5), '0',
                                      0, frac);
            }
            }
            fmt++;
            continue;

        case 'p':
            ui64 = (uintptr_t) va_arg(args, void *);
            buf = ngx_fuzz_number(buf, last, ui64, '0', 1, 0);
            fmt++;
            continue;

        case 'c':
            *buf++ = (u_char) va_arg(args, int);
            fmt++;
            continue;

        case 'Z':
            *buf++ = '\0';
            fmt++;
            continue;

        case 'N':
            *buf++ = LF;
            fmt++;
            continue;

        default:
            *buf++ = *fmt++;
            continue;
        }

        if (sign && i64 < 0) {
            *buf++ = '-';
            ui64 = (uint64_t) -(i64 + 1) + 1;

        } else {
            ui64 = (uint64_t) i64;
        }

        buf = ngx_fuzz_number(buf, last, ui64, zero, hex, width);
        fmt++;
    }

    return buf;
}


u_char * ngx_cdecl
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, (void *) -1, fmt, args);
    va_end(args);

    return p;
}


u_char * ngx_cdecl
ngx_snprintf(u_char *buf, size_t max, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + max, fmt, args);
    va_end(args);

    return p;
}


u_char * ngx_cdecl
ngx_slprintf(u_char *buf, u_char *last, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, last, fmt, args);
    va_end(args);

    return p;
}


/*
 * Log lines are formatted (so that every argument is read, as nginx
 * would) and dropped; NGX_FUZZ_LOG=1 prints them.
 */

void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    u_char   line[NGX_MAX_ERROR_STR], *p;
    va_list  args;

    va_start(args, fmt);
    p = ngx_vslprintf(line, line + sizeof(line), fmt, args);
    va_end(args);

    if (getenv("NGX_FUZZ_LOG")) {
        fprintf(stderr, "log[%d]: %.*s\n", (int) level,
                (int) (p - line), line);
    }
}


void ngx_cdecl
ngx_conf_log_error(ngx_uint_t level, ngx_conf_t *cf, ngx_err_t err,
    const char *fmt, ...)
{
    u_char   line[NGX_MAX_CONF_ERRSTR], *p;
    va_list  args;

    va_start(args, fmt);
    p = ngx_vslprintf(line, line + sizeof(line), fmt, args);
    va_end(args);

    if (getenv("NGX_FUZZ_LOG")) {
        fprintf(stderr, "conf[%d]: %.*s\n", (int) level,
                (int) (p - line), line);
    }
}


/* events: timers are flags only; the harness drives every handler */

void
ngx_rbtree_insert(ngx_rbtree_t *tree, ngx_rbtree_node_t *node)
{
}


void
ngx_rbtree_delete(ngx_rbtree_t *tree, ngx_rbtree_node_t *node)
{
}


ngx_int_t
ngx_handle_read_event(ngx_event_t *rev, ngx_uint_t flags)
{
    return NGX_OK;
}


ngx_int_t
ngx_handle_write_event(ngx_event_t *wev, size_t lowat)
{
    return NGX_OK;
}
