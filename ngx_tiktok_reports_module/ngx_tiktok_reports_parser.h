
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


#ifndef _NGX_TIKTOK_REPORTS_PARSER_H_INCLUDED_
#define _NGX_TIKTOK_REPORTS_PARSER_H_INCLUDED_


/*
 * The report parser depends on libc and yajl only (no nginx headers), so
 * that the fuzzer in fuzz/ can build it without an nginx tree.  Memory for
 * results comes from the caller's allocator (an nginx pool in the module),
 * yajl's own state from malloc, released by ngx_tiktok_reports_parser_free().
 */

#include <stddef.h>
#include <stdint.h>


#define NGX_TIKTOK_REPORTS_KIND_NONE       0
#define NGX_TIKTOK_REPORTS_KIND_DELIVERY   1
#define NGX_TIKTOK_REPORTS_KIND_SEEN       2

/* status groups, numbered as Infobip numbers them */
#define NGX_TIKTOK_REPORTS_GROUP_NONE           0
#define NGX_TIKTOK_REPORTS_GROUP_PENDING        1
#define NGX_TIKTOK_REPORTS_GROUP_UNDELIVERABLE  2
#define NGX_TIKTOK_REPORTS_GROUP_DELIVERED      3
#define NGX_TIKTOK_REPORTS_GROUP_EXPIRED        4
#define NGX_TIKTOK_REPORTS_GROUP_REJECTED       5

/* an instant that is absent or could not be read */
#define NGX_TIKTOK_REPORTS_NO_TIME  INT64_MIN


typedef struct {
    size_t                      len;
    unsigned char              *data;      /* NULL: member absent */
} ngx_tiktok_reports_str_t;


typedef struct {
    int                         kind;
    const char                 *error;     /* non-NULL: rejected, why */

    int                         group;     /* delivery: GROUP_* */
    int                         error_permanent;  /* -1 absent, 0, 1 */

    ngx_tiktok_reports_str_t    message_id;
    ngx_tiktok_reports_str_t    status_id;     /* digits as sent */
    ngx_tiktok_reports_str_t    status_name;
    ngx_tiktok_reports_str_t    error_name;
    ngx_tiktok_reports_str_t    done_at;
    ngx_tiktok_reports_str_t    seen_at;
    ngx_tiktok_reports_str_t    callback_data;
    ngx_tiktok_reports_str_t    raw;       /* compact JSON, keep_raw only */

    int64_t                     done_at_ms;
    int64_t                     seen_at_ms;
} ngx_tiktok_reports_result_t;


typedef void *(*ngx_tiktok_reports_alloc_pt)(void *ctx, size_t size);


typedef struct ngx_tiktok_reports_parser_s  ngx_tiktok_reports_parser_t;


/* NULL on allocation failure */
ngx_tiktok_reports_parser_t *ngx_tiktok_reports_parser_create(
    ngx_tiktok_reports_alloc_pt alloc, void *ctx, int keep_raw);

/*
 * More than max results in the body is refused as soon as the next one
 * starts, before it is read; 0 (the default): no limit.  Set it before the
 * first feed.
 */
void ngx_tiktok_reports_parser_set_max_results(
    ngx_tiktok_reports_parser_t *p, size_t max);

/*
 * 0: fine so far; -1: the body is refused, see parser_error();
 * NGX_TIKTOK_REPORTS_PARSER_TOO_MANY: refused for its number of results.
 * Once refused, every later call returns the same.
 */
#define NGX_TIKTOK_REPORTS_PARSER_TOO_MANY  (-2)
/* out of memory while parsing: a server error, not the body's */
#define NGX_TIKTOK_REPORTS_PARSER_NO_MEMORY  (-3)

int ngx_tiktok_reports_parser_feed(ngx_tiktok_reports_parser_t *p,
    const unsigned char *data, size_t len);
int ngx_tiktok_reports_parser_finish(ngx_tiktok_reports_parser_t *p);

/* a NUL-terminated reason, including a byte offset where one applies */
const char *ngx_tiktok_reports_parser_error(ngx_tiktok_reports_parser_t *p);

ngx_tiktok_reports_result_t *ngx_tiktok_reports_parser_results(
    ngx_tiktok_reports_parser_t *p, size_t *n);

/* releases yajl's state; safe to call twice */
void ngx_tiktok_reports_parser_free(ngx_tiktok_reports_parser_t *p);

/* length of the valid UTF-8 sequence at s (strict: no overlong forms, no
 * surrogates), or 0 */
size_t ngx_tiktok_reports_utf8_seq(const unsigned char *s,
    const unsigned char *last);

/* "2023-09-26T10:52:15.457+0000" (also "+00:00", "Z", no fraction) to ms */
int64_t ngx_tiktok_reports_parse_time(const unsigned char *s, size_t len);


#endif /* _NGX_TIKTOK_REPORTS_PARSER_H_INCLUDED_ */
