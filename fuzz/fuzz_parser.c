/*
 * libFuzzer target: the report parser over arbitrary bytes, fed in two
 * chunks split where the first input byte says, with and without keeping
 * the raw reports, with no limit on the number of results or one of 1-3.
 * Every result must be consistent with what it claims.
 */

#include <stdlib.h>
#include <string.h>

#include "ngx_tiktok_reports_parser.h"


typedef struct {
    void  **blocks;
    size_t  n;
    size_t  cap;
} arena_t;


static void *
arena_alloc(void *ctx, size_t size)
{
    arena_t  *a = ctx;
    void     *p, **nb;

    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        nb = realloc(a->blocks, a->cap * sizeof(void *));
        if (nb == NULL) {
            return NULL;
        }
        a->blocks = nb;
    }

    p = malloc(size ? size : 1);
    if (p) {
        a->blocks[a->n++] = p;
    }

    return p;
}


static void
arena_free(arena_t *a)
{
    size_t  i;

    for (i = 0; i < a->n; i++) {
        free(a->blocks[i]);
    }

    free(a->blocks);
}


static void
run(const unsigned char *data, size_t size, size_t split, int keep,
    size_t max)
{
    int                           rc;
    size_t                        i, n;
    arena_t                       a;
    ngx_tiktok_reports_parser_t  *p;
    ngx_tiktok_reports_result_t  *res;

    memset(&a, 0, sizeof(a));

    p = ngx_tiktok_reports_parser_create(arena_alloc, &a, keep);
    if (p == NULL) {
        arena_free(&a);
        return;
    }

    ngx_tiktok_reports_parser_set_max_results(p, max);

    rc = ngx_tiktok_reports_parser_feed(p, data, split);
    if (rc == 0) {
        rc = ngx_tiktok_reports_parser_feed(p, data + split, size - split);
    }
    if (rc == 0) {
        rc = ngx_tiktok_reports_parser_finish(p);
    }

    if (rc != 0) {
        if (strlen(ngx_tiktok_reports_parser_error(p)) == 0
            || (rc == NGX_TIKTOK_REPORTS_PARSER_TOO_MANY && max == 0)
            || (rc != NGX_TIKTOK_REPORTS_PARSER_TOO_MANY && rc != -1)
            || ngx_tiktok_reports_parser_finish(p) != rc)
        {
            abort();
        }

    } else {
        res = ngx_tiktok_reports_parser_results(p, &n);

        if (max && n > max) {
            abort();
        }

        for (i = 0; i < n; i++) {
            if (res[i].error == NULL) {
                if (res[i].message_id.data == NULL
                    || res[i].message_id.len == 0)
                {
                    abort();
                }

                if (res[i].kind == NGX_TIKTOK_REPORTS_KIND_DELIVERY
                    && (res[i].group < 1 || res[i].group > 5))
                {
                    abort();
                }

                if (res[i].kind != NGX_TIKTOK_REPORTS_KIND_DELIVERY
                    && res[i].kind != NGX_TIKTOK_REPORTS_KIND_SEEN)
                {
                    abort();
                }

                /* touch every byte so ASan checks the lengths */
                if (res[i].raw.data) {
                    volatile unsigned char x = 0;
                    size_t j;
                    for (j = 0; j < res[i].raw.len; j++) {
                        x ^= res[i].raw.data[j];
                    }
                    (void) x;
                }
            }
        }
    }

    ngx_tiktok_reports_parser_free(p);
    ngx_tiktok_reports_parser_free(p);
    arena_free(&a);
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    size_t  split;

    if (size == 0) {
        run(data, 0, 0, 0, 0);
        return 0;
    }

    split = data[0] % size;

    run(data + 1, size - 1, split > size - 1 ? size - 1 : split, data[0] & 1,
        (data[0] >> 1) & 3);

    return 0;
}
