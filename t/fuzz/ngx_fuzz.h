
/*
 * Copyright (C) meshgate contributors
 */


#ifndef _NGX_FUZZ_H_INCLUDED_
#define _NGX_FUZZ_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* what every harness shares (ngx_fuzz_stubs.c) */

void ngx_fuzz_init(void);
ngx_log_t *ngx_fuzz_get_log(void);
void ngx_fuzz_trap(const char *name);
void ngx_fuzz_heap_start(void);
size_t ngx_fuzz_heap_peak(void);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


/* a harness-detected bug: abort with the reason, libFuzzer saves the input */

#define ngx_fuzz_assert(cond, why)                                           \
    if (!(cond)) {                                                           \
        fprintf(stderr, "fuzz: %s:%d: %s (%s)\n", __FILE__, __LINE__, why,  \
                #cond);                                                      \
        abort();                                                             \
    }


/* splits the input at the first "\n": the head and the rest */

static ngx_inline void
ngx_fuzz_split(const uint8_t *data, size_t size, ngx_str_t *head,
    ngx_str_t *rest)
{
    u_char  *nl;

    nl = memchr(data, '\n', size);

    head->data = (u_char *) data;
    head->len = nl ? (size_t) (nl - data) : size;

    rest->data = nl ? nl + 1 : (u_char *) data + size;
    rest->len = size - (rest->data - data);
}


#endif /* _NGX_FUZZ_H_INCLUDED_ */
