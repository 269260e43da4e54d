
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * A streaming reader of Infobip report bodies ({"results":[...]}) on top of
 * yajl's callback API.  No tree is built: the few members that matter are
 * picked up as they pass, by depth, and everything else is skipped.  With
 * keep_raw each result object is also re-serialized, compactly, into a byte
 * buffer.  Nothing here recurses, so nesting is bounded by memory only.
 */


#include <stdio.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "ngx_tiktok_reports_parser.h"


#define NGX_TIKTOK_REPORTS_PARSER_ERRLEN     200
#define NGX_TIKTOK_REPORTS_PARSER_NRESULTS   16
#define NGX_TIKTOK_REPORTS_PARSER_RAWSIZE    4096

/* value types, as the callbacks see them */
#define NGX_TIKTOK_REPORTS_PARSER_NULL       0
#define NGX_TIKTOK_REPORTS_PARSER_BOOL       1
#define NGX_TIKTOK_REPORTS_PARSER_NUMBER     2
#define NGX_TIKTOK_REPORTS_PARSER_STRING     3
#define NGX_TIKTOK_REPORTS_PARSER_MAP        4
#define NGX_TIKTOK_REPORTS_PARSER_ARRAY      5

/* what the top-level "results" member was, the last time it was seen */
#define NGX_TIKTOK_REPORTS_PARSER_RES_NONE   0
#define NGX_TIKTOK_REPORTS_PARSER_RES_ARRAY  1
#define NGX_TIKTOK_REPORTS_PARSER_RES_BAD    2

/* members of a result object that matter */
#define NGX_TIKTOK_REPORTS_PARSER_F_NONE           0
#define NGX_TIKTOK_REPORTS_PARSER_F_MESSAGE_ID     1
#define NGX_TIKTOK_REPORTS_PARSER_F_STATUS         2
#define NGX_TIKTOK_REPORTS_PARSER_F_ERROR          3
#define NGX_TIKTOK_REPORTS_PARSER_F_DONE_AT        4
#define NGX_TIKTOK_REPORTS_PARSER_F_SEEN_AT        5
#define NGX_TIKTOK_REPORTS_PARSER_F_CALLBACK_DATA  6
#define NGX_TIKTOK_REPORTS_PARSER_F_EVENT          7

/* members of "status" and "error" that matter */
#define NGX_TIKTOK_REPORTS_PARSER_S_NONE           0
#define NGX_TIKTOK_REPORTS_PARSER_S_GROUP_NAME     1
#define NGX_TIKTOK_REPORTS_PARSER_S_GROUP_ID       2
#define NGX_TIKTOK_REPORTS_PARSER_S_ID             3
#define NGX_TIKTOK_REPORTS_PARSER_S_NAME           4
#define NGX_TIKTOK_REPORTS_PARSER_S_PERMANENT      5

/* which object, one level below a result, is being read */
#define NGX_TIKTOK_REPORTS_PARSER_SUB_NONE         0
#define NGX_TIKTOK_REPORTS_PARSER_SUB_STATUS       1
#define NGX_TIKTOK_REPORTS_PARSER_SUB_ERROR        2

/* presence of messageId and status: absent, of the right type, other */
#define NGX_TIKTOK_REPORTS_PARSER_ABSENT           0
#define NGX_TIKTOK_REPORTS_PARSER_GOOD             1
#define NGX_TIKTOK_REPORTS_PARSER_WRONG            2

#define NGX_TIKTOK_REPORTS_PARSER_EV_NONE          0
#define NGX_TIKTOK_REPORTS_PARSER_EV_DELIVERY      1
#define NGX_TIKTOK_REPORTS_PARSER_EV_SEEN          2


struct ngx_tiktok_reports_parser_s {
    ngx_tiktok_reports_alloc_pt    alloc;
    void                          *ctx;
    yajl_handle                    yajl;

    /* containers open right now */
    size_t                         depth;

    /* body bytes fed before the current chunk */
    size_t                         offset;

    ngx_tiktok_reports_result_t   *results;
    size_t                         nresults;
    size_t                         nalloc;
    size_t                         max_results;    /* 0: no limit */

    /* the result object being read */
    ngx_tiktok_reports_result_t    cur;

    /*
     * raw JSON of the results: finished ones stay where they were written,
     * the one being written starts at raw_start
     */
    unsigned char                 *raw;
    size_t                         raw_start;
    size_t                         raw_pos;
    size_t                         raw_size;

    unsigned char                  keep_raw;
    unsigned char                  failed;
    unsigned char                  too_many;
    unsigned char                  no_memory;
    unsigned char                  finished;
    unsigned char                  nonblank;
    unsigned char                  results_key;
    unsigned char                  results_state;
    unsigned char                  in_results;
    unsigned char                  in_object;
    unsigned char                  field;
    unsigned char                  sub;
    unsigned char                  subfield;
    unsigned char                  message_id;
    unsigned char                  status;
    unsigned char                  event;
    unsigned char                  group_name;
    unsigned char                  group_id;

    char                           error[NGX_TIKTOK_REPORTS_PARSER_ERRLEN];
};


static int ngx_tiktok_reports_parser_null(void *ctx);
static int ngx_tiktok_reports_parser_boolean(void *ctx, int value);
static int ngx_tiktok_reports_parser_number(void *ctx, const char *data,
    size_t len);
static int ngx_tiktok_reports_parser_utf8(const unsigned char *s,
    size_t len);
static int ngx_tiktok_reports_parser_string(void *ctx,
    const unsigned char *data, size_t len);
static int ngx_tiktok_reports_parser_start_map(void *ctx);
static int ngx_tiktok_reports_parser_map_key(void *ctx,
    const unsigned char *data, size_t len);
static int ngx_tiktok_reports_parser_end_map(void *ctx);
static int ngx_tiktok_reports_parser_start_array(void *ctx);
static int ngx_tiktok_reports_parser_end_array(void *ctx);

static int ngx_tiktok_reports_parser_value(ngx_tiktok_reports_parser_t *p,
    int type, const unsigned char *data, size_t len);
static int ngx_tiktok_reports_parser_end(ngx_tiktok_reports_parser_t *p,
    unsigned char ch);
static void ngx_tiktok_reports_parser_begin_result(
    ngx_tiktok_reports_parser_t *p);
static int ngx_tiktok_reports_parser_member(ngx_tiktok_reports_parser_t *p,
    int type, const unsigned char *data, size_t len);
static int ngx_tiktok_reports_parser_submember(
    ngx_tiktok_reports_parser_t *p, int type, const unsigned char *data,
    size_t len);
static int ngx_tiktok_reports_parser_field(const unsigned char *key,
    size_t len);
static int ngx_tiktok_reports_parser_subfield(int sub,
    const unsigned char *key, size_t len);
static int ngx_tiktok_reports_parser_group(const unsigned char *data,
    size_t len);
static int ngx_tiktok_reports_parser_caseeq(const unsigned char *data,
    const char *upper, size_t len);
static int ngx_tiktok_reports_parser_end_result(
    ngx_tiktok_reports_parser_t *p);
static const char *ngx_tiktok_reports_parser_classify(
    ngx_tiktok_reports_parser_t *p);
static int ngx_tiktok_reports_parser_push(ngx_tiktok_reports_parser_t *p,
    ngx_tiktok_reports_result_t *r);
static int ngx_tiktok_reports_parser_copy(ngx_tiktok_reports_parser_t *p,
    ngx_tiktok_reports_str_t *dst, const unsigned char *data, size_t len);
static int ngx_tiktok_reports_parser_raw_reserve(
    ngx_tiktok_reports_parser_t *p, size_t need);
static int ngx_tiktok_reports_parser_raw_value(
    ngx_tiktok_reports_parser_t *p, int type, const unsigned char *data,
    size_t len);
static int ngx_tiktok_reports_parser_raw_key(ngx_tiktok_reports_parser_t *p,
    const unsigned char *data, size_t len);
static int ngx_tiktok_reports_parser_raw_end(ngx_tiktok_reports_parser_t *p,
    unsigned char ch);
static size_t ngx_tiktok_reports_parser_escaped_len(const unsigned char *data,
    size_t len);
static unsigned char *ngx_tiktok_reports_parser_escape(unsigned char *dst,
    const unsigned char *data, size_t len);
static int ngx_tiktok_reports_parser_fail(ngx_tiktok_reports_parser_t *p,
    const char *error);
static int ngx_tiktok_reports_parser_too_many(ngx_tiktok_reports_parser_t *p);
static int ngx_tiktok_reports_parser_refused(ngx_tiktok_reports_parser_t *p);
static int ngx_tiktok_reports_parser_json_error(
    ngx_tiktok_reports_parser_t *p, size_t at);
static int ngx_tiktok_reports_parser_digits(const unsigned char *s,
    size_t n);
static int64_t ngx_tiktok_reports_parser_days(int64_t y, int m, int d);


static const yajl_callbacks  ngx_tiktok_reports_parser_callbacks = {
    ngx_tiktok_reports_parser_null,
    ngx_tiktok_reports_parser_boolean,
    NULL,
    NULL,
    ngx_tiktok_reports_parser_number,
    ngx_tiktok_reports_parser_string,
    ngx_tiktok_reports_parser_start_map,
    ngx_tiktok_reports_parser_map_key,
    ngx_tiktok_reports_parser_end_map,
    ngx_tiktok_reports_parser_start_array,
    ngx_tiktok_reports_parser_end_array
};


/* 0: kept as is; otherwise the letter after the backslash */
static const unsigned char  ngx_tiktok_reports_parser_esc[256] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    ['"'] = '"',
    ['\\'] = '\\'
};


static const char  ngx_tiktok_reports_parser_hex[] = "0123456789abcdef";

static const int  ngx_tiktok_reports_parser_mdays[] = {
    31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
};


ngx_tiktok_reports_parser_t *
ngx_tiktok_reports_parser_create(ngx_tiktok_reports_alloc_pt alloc,
    void *ctx, int keep_raw)
{
    ngx_tiktok_reports_parser_t  *p;

    p = alloc(ctx, sizeof(ngx_tiktok_reports_parser_t));
    if (p == NULL) {
        return NULL;
    }

    memset(p, 0, sizeof(ngx_tiktok_reports_parser_t));

    p->alloc = alloc;
    p->ctx = ctx;
    p->keep_raw = keep_raw ? 1 : 0;

    /* yajl's defaults: UTF-8 checked, no comments, one value, no garbage */
    p->yajl = yajl_alloc(&ngx_tiktok_reports_parser_callbacks, NULL, p);
    if (p->yajl == NULL) {
        return NULL;
    }

    return p;
}


void
ngx_tiktok_reports_parser_set_max_results(ngx_tiktok_reports_parser_t *p,
    size_t max)
{
    p->max_results = max;
}


int
ngx_tiktok_reports_parser_feed(ngx_tiktok_reports_parser_t *p,
    const unsigned char *data, size_t len)
{
    size_t       i;
    yajl_status  st;

    if (p->failed) {
        return ngx_tiktok_reports_parser_refused(p);
    }

    if (p->yajl == NULL || p->finished) {
        (void) ngx_tiktok_reports_parser_fail(p, "body fed after its end");
        return -1;
    }

    if (len == 0) {
        return 0;
    }

    /* only to tell a blank body apart; stops at the first real byte */
    if (!p->nonblank) {
        for (i = 0; i < len; i++) {
            if (data[i] != ' ' && data[i] != '\t' && data[i] != '\n'
                && data[i] != '\r')
            {
                p->nonblank = 1;
                break;
            }
        }
    }

    st = yajl_parse(p->yajl, data, len);

    if (st != yajl_status_ok) {
        return ngx_tiktok_reports_parser_json_error(p,
                               p->offset + yajl_get_bytes_consumed(p->yajl));
    }

    p->offset += len;

    return 0;
}


int
ngx_tiktok_reports_parser_finish(ngx_tiktok_reports_parser_t *p)
{
    yajl_status  st;

    if (p->failed) {
        return ngx_tiktok_reports_parser_refused(p);
    }

    if (p->finished) {
        return 0;
    }

    if (p->yajl == NULL) {
        (void) ngx_tiktok_reports_parser_fail(p, "body fed after its end");
        return -1;
    }

    if (!p->nonblank) {
        (void) ngx_tiktok_reports_parser_fail(p, "empty body");
        return -1;
    }

    st = yajl_complete_parse(p->yajl);

    if (st != yajl_status_ok) {
        /* what is missing is at the end */
        return ngx_tiktok_reports_parser_json_error(p, p->offset);
    }

    switch (p->results_state) {

    case NGX_TIKTOK_REPORTS_PARSER_RES_NONE:
        (void) ngx_tiktok_reports_parser_fail(p, "no results array");
        return -1;

    case NGX_TIKTOK_REPORTS_PARSER_RES_BAD:
        (void) ngx_tiktok_reports_parser_fail(p, "results is not an array");
        return -1;
    }

    p->finished = 1;

    return 0;
}


const char *
ngx_tiktok_reports_parser_error(ngx_tiktok_reports_parser_t *p)
{
    return p->error;
}


ngx_tiktok_reports_result_t *
ngx_tiktok_reports_parser_results(ngx_tiktok_reports_parser_t *p, size_t *n)
{
    if (p->failed) {
        *n = 0;
        return NULL;
    }

    *n = p->nresults;

    return p->results;
}


void
ngx_tiktok_reports_parser_free(ngx_tiktok_reports_parser_t *p)
{
    if (p != NULL && p->yajl != NULL) {
        yajl_free(p->yajl);
        p->yajl = NULL;
    }
}


static int
ngx_tiktok_reports_parser_null(void *ctx)
{
    return ngx_tiktok_reports_parser_value(ctx, NGX_TIKTOK_REPORTS_PARSER_NULL,
                                           (const unsigned char *) "null", 4);
}


static int
ngx_tiktok_reports_parser_boolean(void *ctx, int value)
{
    if (value) {
        return ngx_tiktok_reports_parser_value(ctx,
                                           NGX_TIKTOK_REPORTS_PARSER_BOOL,
                                           (const unsigned char *) "true", 4);
    }

    return ngx_tiktok_reports_parser_value(ctx, NGX_TIKTOK_REPORTS_PARSER_BOOL,
                                           (const unsigned char *) "false", 5);
}


static int
ngx_tiktok_reports_parser_number(void *ctx, const char *data, size_t len)
{
    return ngx_tiktok_reports_parser_value(ctx,
                                           NGX_TIKTOK_REPORTS_PARSER_NUMBER,
                                           (const unsigned char *) data, len);
}


/*
 * yajl checks the shape of UTF-8 sequences but lets overlong forms and
 * encoded surrogates through; such bytes are refused here, so that nothing
 * stored can make a later JSON answer invalid.
 */

size_t
ngx_tiktok_reports_utf8_seq(const unsigned char *s, const unsigned char *last)
{
    size_t    n, k;
    uint32_t  u, min;

    if (*s < 0x80) {
        return 1;
    }

    if (*s >= 0xc2 && *s <= 0xdf) {
        n = 2; u = *s & 0x1f; min = 0x80;

    } else if (*s >= 0xe0 && *s <= 0xef) {
        n = 3; u = *s & 0x0f; min = 0x800;

    } else if (*s >= 0xf0 && *s <= 0xf4) {
        n = 4; u = *s & 0x07; min = 0x10000;

    } else {
        return 0;
    }

    if ((size_t) (last - s) < n) {
        return 0;
    }

    for (k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80) {
            return 0;
        }

        u = (u << 6) | (s[k] & 0x3f);
    }

    if (u < min || u > 0x10ffff || (u >= 0xd800 && u <= 0xdfff)) {
        return 0;
    }

    return n;
}


static int
ngx_tiktok_reports_parser_utf8(const unsigned char *s, size_t len)
{
    size_t                n;
    const unsigned char  *last;

    last = s + len;

    while (s < last) {
        if (*s < 0x80) {
            /* the common case, without a call per byte */
            s++;
            continue;
        }

        n = ngx_tiktok_reports_utf8_seq(s, last);

        if (n == 0) {
            return 0;
        }

        s += n;
    }

    return 1;
}


static int
ngx_tiktok_reports_parser_string(void *ctx, const unsigned char *data,
    size_t len)
{
    if (!ngx_tiktok_reports_parser_utf8(data, len)) {
        return ngx_tiktok_reports_parser_fail(ctx, "invalid UTF-8 in a string");
    }

    return ngx_tiktok_reports_parser_value(ctx,
                                           NGX_TIKTOK_REPORTS_PARSER_STRING,
                                           data, len);
}


static int
ngx_tiktok_reports_parser_start_map(void *ctx)
{
    return ngx_tiktok_reports_parser_value(ctx, NGX_TIKTOK_REPORTS_PARSER_MAP,
                                           (const unsigned char *) "{", 1);
}


static int
ngx_tiktok_reports_parser_start_array(void *ctx)
{
    return ngx_tiktok_reports_parser_value(ctx,
                                           NGX_TIKTOK_REPORTS_PARSER_ARRAY,
                                           (const unsigned char *) "[", 1);
}


static int
ngx_tiktok_reports_parser_end_map(void *ctx)
{
    return ngx_tiktok_reports_parser_end(ctx, '}');
}


static int
ngx_tiktok_reports_parser_end_array(void *ctx)
{
    return ngx_tiktok_reports_parser_end(ctx, ']');
}


static int
ngx_tiktok_reports_parser_map_key(void *ctx, const unsigned char *data,
    size_t len)
{
    ngx_tiktok_reports_parser_t  *p = ctx;

    if (!ngx_tiktok_reports_parser_utf8(data, len)) {
        return ngx_tiktok_reports_parser_fail(p, "invalid UTF-8 in a string");
    }

    if (p->depth == 1) {
        p->results_key = (len == 7 && memcmp(data, "results", 7) == 0);
        return 1;
    }

    if (!p->in_object) {
        return 1;
    }

    if (p->keep_raw && !ngx_tiktok_reports_parser_raw_key(p, data, len)) {
        return 0;
    }

    if (p->depth == 3) {
        p->field = ngx_tiktok_reports_parser_field(data, len);

    } else if (p->depth == 4 && p->sub != NGX_TIKTOK_REPORTS_PARSER_SUB_NONE) {
        p->subfield = ngx_tiktok_reports_parser_subfield(p->sub, data, len);
    }

    return 1;
}


/*
 * Every value, scalar or the start of a container, goes through here; the
 * depth before it is opened says what it is.  Depth 1 is the body object,
 * 2 the results array, 3 a result object, 4 its status or error object.
 */

static int
ngx_tiktok_reports_parser_value(ngx_tiktok_reports_parser_t *p, int type,
    const unsigned char *data, size_t len)
{
    ngx_tiktok_reports_result_t  r;

    if (p->in_object) {
        if (p->keep_raw
            && !ngx_tiktok_reports_parser_raw_value(p, type, data, len))
        {
            return 0;
        }

        if (p->depth == 3) {
            if (!ngx_tiktok_reports_parser_member(p, type, data, len)) {
                return 0;
            }

        } else if (p->depth == 4
                   && p->sub != NGX_TIKTOK_REPORTS_PARSER_SUB_NONE)
        {
            if (!ngx_tiktok_reports_parser_submember(p, type, data, len)) {
                return 0;
            }
        }

    } else {
        switch (p->depth) {

        case 0:
            if (type != NGX_TIKTOK_REPORTS_PARSER_MAP) {
                return ngx_tiktok_reports_parser_fail(p,
                                                  "body is not a JSON object");
            }

            break;

        case 1:
            if (!p->results_key) {
                break;
            }

            /* a repeated "results": the last one wins */

            if (type == NGX_TIKTOK_REPORTS_PARSER_ARRAY) {
                p->results_state = NGX_TIKTOK_REPORTS_PARSER_RES_ARRAY;
                p->in_results = 1;
                p->nresults = 0;

            } else {
                p->results_state = NGX_TIKTOK_REPORTS_PARSER_RES_BAD;
            }

            break;

        case 2:
            if (!p->in_results) {
                break;
            }

            /* counted as each starts: one too many is never read */
            if (p->max_results && p->nresults == p->max_results) {
                return ngx_tiktok_reports_parser_too_many(p);
            }

            if (type == NGX_TIKTOK_REPORTS_PARSER_MAP) {
                ngx_tiktok_reports_parser_begin_result(p);

                if (p->keep_raw
                    && !ngx_tiktok_reports_parser_raw_value(p, type, data,
                                                            len))
                {
                    return 0;
                }

                break;
            }

            memset(&r, 0, sizeof(ngx_tiktok_reports_result_t));
            r.error = "result is not an object";
            r.error_permanent = -1;
            r.done_at_ms = NGX_TIKTOK_REPORTS_NO_TIME;
            r.seen_at_ms = NGX_TIKTOK_REPORTS_NO_TIME;

            if (!ngx_tiktok_reports_parser_push(p, &r)) {
                return 0;
            }

            break;
        }
    }

    if (type == NGX_TIKTOK_REPORTS_PARSER_MAP
        || type == NGX_TIKTOK_REPORTS_PARSER_ARRAY)
    {
        p->depth++;
    }

    return 1;
}


static int
ngx_tiktok_reports_parser_end(ngx_tiktok_reports_parser_t *p,
    unsigned char ch)
{
    p->depth--;

    if (p->in_object) {
        if (p->keep_raw && !ngx_tiktok_reports_parser_raw_end(p, ch)) {
            return 0;
        }

        if (p->depth == 3) {
            p->sub = NGX_TIKTOK_REPORTS_PARSER_SUB_NONE;

        } else if (p->depth == 2) {
            return ngx_tiktok_reports_parser_end_result(p);
        }

    } else if (p->depth == 1) {
        p->in_results = 0;
    }

    return 1;
}


static void
ngx_tiktok_reports_parser_begin_result(ngx_tiktok_reports_parser_t *p)
{
    memset(&p->cur, 0, sizeof(ngx_tiktok_reports_result_t));

    p->cur.error_permanent = -1;

    p->in_object = 1;
    p->field = NGX_TIKTOK_REPORTS_PARSER_F_NONE;
    p->sub = NGX_TIKTOK_REPORTS_PARSER_SUB_NONE;
    p->message_id = NGX_TIKTOK_REPORTS_PARSER_ABSENT;
    p->status = NGX_TIKTOK_REPORTS_PARSER_ABSENT;
    p->event = NGX_TIKTOK_REPORTS_PARSER_EV_NONE;
    p->group_name = NGX_TIKTOK_REPORTS_GROUP_NONE;
    p->group_id = NGX_TIKTOK_REPORTS_GROUP_NONE;

    p->raw_start = p->raw_pos;
}


/* a member of the result object itself; a repeated member replaces */

static int
ngx_tiktok_reports_parser_member(ngx_tiktok_reports_parser_t *p, int type,
    const unsigned char *data, size_t len)
{
    int                        is_string;
    ngx_tiktok_reports_str_t  *s;

    is_string = (type == NGX_TIKTOK_REPORTS_PARSER_STRING);

    switch (p->field) {

    case NGX_TIKTOK_REPORTS_PARSER_F_MESSAGE_ID:
        p->message_id = is_string ? NGX_TIKTOK_REPORTS_PARSER_GOOD
                                  : NGX_TIKTOK_REPORTS_PARSER_WRONG;
        s = &p->cur.message_id;
        break;

    case NGX_TIKTOK_REPORTS_PARSER_F_STATUS:
        p->cur.status_id.data = NULL;
        p->cur.status_id.len = 0;
        p->cur.status_name.data = NULL;
        p->cur.status_name.len = 0;
        p->group_name = NGX_TIKTOK_REPORTS_GROUP_NONE;
        p->group_id = NGX_TIKTOK_REPORTS_GROUP_NONE;

        if (type == NGX_TIKTOK_REPORTS_PARSER_MAP) {
            p->status = NGX_TIKTOK_REPORTS_PARSER_GOOD;
            p->sub = NGX_TIKTOK_REPORTS_PARSER_SUB_STATUS;
            p->subfield = NGX_TIKTOK_REPORTS_PARSER_S_NONE;

        } else {
            p->status = NGX_TIKTOK_REPORTS_PARSER_WRONG;
        }

        return 1;

    case NGX_TIKTOK_REPORTS_PARSER_F_ERROR:
        p->cur.error_name.data = NULL;
        p->cur.error_name.len = 0;
        p->cur.error_permanent = -1;

        if (type == NGX_TIKTOK_REPORTS_PARSER_MAP) {
            p->sub = NGX_TIKTOK_REPORTS_PARSER_SUB_ERROR;
            p->subfield = NGX_TIKTOK_REPORTS_PARSER_S_NONE;
        }

        return 1;

    case NGX_TIKTOK_REPORTS_PARSER_F_DONE_AT:
        s = &p->cur.done_at;
        break;

    case NGX_TIKTOK_REPORTS_PARSER_F_SEEN_AT:
        s = &p->cur.seen_at;
        break;

    case NGX_TIKTOK_REPORTS_PARSER_F_CALLBACK_DATA:
        s = &p->cur.callback_data;
        break;

    case NGX_TIKTOK_REPORTS_PARSER_F_EVENT:
        p->event = NGX_TIKTOK_REPORTS_PARSER_EV_NONE;

        if (!is_string) {
            return 1;
        }

        if (len == 8 && memcmp(data, "DELIVERY", 8) == 0) {
            p->event = NGX_TIKTOK_REPORTS_PARSER_EV_DELIVERY;

        } else if (len == 4 && memcmp(data, "SEEN", 4) == 0) {
            p->event = NGX_TIKTOK_REPORTS_PARSER_EV_SEEN;
        }

        return 1;

    default:
        return 1;
    }

    if (!is_string) {
        s->data = NULL;
        s->len = 0;
        return 1;
    }

    return ngx_tiktok_reports_parser_copy(p, s, data, len);
}


/* a member of "status" or "error"; wrong types count as absent */

static int
ngx_tiktok_reports_parser_submember(ngx_tiktok_reports_parser_t *p,
    int type, const unsigned char *data, size_t len)
{
    size_t                     i;
    ngx_tiktok_reports_str_t  *s;

    switch (p->subfield) {

    case NGX_TIKTOK_REPORTS_PARSER_S_GROUP_NAME:
        p->group_name = (type == NGX_TIKTOK_REPORTS_PARSER_STRING)
                        ? ngx_tiktok_reports_parser_group(data, len)
                        : NGX_TIKTOK_REPORTS_GROUP_NONE;
        return 1;

    case NGX_TIKTOK_REPORTS_PARSER_S_GROUP_ID:
        p->group_id = NGX_TIKTOK_REPORTS_GROUP_NONE;

        if (type == NGX_TIKTOK_REPORTS_PARSER_NUMBER
            && len == 1 && data[0] >= '1' && data[0] <= '5')
        {
            p->group_id = data[0] - '0';
        }

        return 1;

    case NGX_TIKTOK_REPORTS_PARSER_S_ID:
        p->cur.status_id.data = NULL;
        p->cur.status_id.len = 0;

        if (type != NGX_TIKTOK_REPORTS_PARSER_NUMBER || len == 0 || len > 18)
        {
            return 1;
        }

        for (i = 0; i < len; i++) {
            if (data[i] < '0' || data[i] > '9') {
                return 1;
            }
        }

        return ngx_tiktok_reports_parser_copy(p, &p->cur.status_id, data,
                                              len);

    case NGX_TIKTOK_REPORTS_PARSER_S_NAME:
        s = (p->sub == NGX_TIKTOK_REPORTS_PARSER_SUB_STATUS)
            ? &p->cur.status_name : &p->cur.error_name;

        if (type != NGX_TIKTOK_REPORTS_PARSER_STRING) {
            s->data = NULL;
            s->len = 0;
            return 1;
        }

        return ngx_tiktok_reports_parser_copy(p, s, data, len);

    case NGX_TIKTOK_REPORTS_PARSER_S_PERMANENT:
        p->cur.error_permanent = (type == NGX_TIKTOK_REPORTS_PARSER_BOOL)
                                 ? (data[0] == 't') : -1;
        return 1;
    }

    return 1;
}


static int
ngx_tiktok_reports_parser_field(const unsigned char *key, size_t len)
{
    switch (len) {

    case 5:
        if (memcmp(key, "error", 5) == 0) {
            return NGX_TIKTOK_REPORTS_PARSER_F_ERROR;
        }

        if (memcmp(key, "event", 5) == 0) {
            return NGX_TIKTOK_REPORTS_PARSER_F_EVENT;
        }

        break;

    case 6:
        if (memcmp(key, "status", 6) == 0) {
            return NGX_TIKTOK_REPORTS_PARSER_F_STATUS;
        }

        if (memcmp(key, "doneAt", 6) == 0) {
            return NGX_TIKTOK_REPORTS_PARSER_F_DONE_AT;
        }

        if (memcmp(key, "seenAt", 6) == 0) {
            return NGX_TIKTOK_REPORTS_PARSER_F_SEEN_AT;
        }

        break;

    case 9:
        if (memcmp(key, "messageId", 9) == 0) {
            return NGX_TIKTOK_REPORTS_PARSER_F_MESSAGE_ID;
        }

        break;

    case 12:
        if (memcmp(key, "callbackData", 12) == 0) {
            return NGX_TIKTOK_REPORTS_PARSER_F_CALLBACK_DATA;
        }

        break;
    }

    return NGX_TIKTOK_REPORTS_PARSER_F_NONE;
}


static int
ngx_tiktok_reports_parser_subfield(int sub, const unsigned char *key,
    size_t len)
{
    if (len == 4 && memcmp(key, "name", 4) == 0) {
        return NGX_TIKTOK_REPORTS_PARSER_S_NAME;
    }

    if (sub == NGX_TIKTOK_REPORTS_PARSER_SUB_ERROR) {
        if (len == 9 && memcmp(key, "permanent", 9) == 0) {
            return NGX_TIKTOK_REPORTS_PARSER_S_PERMANENT;
        }

        return NGX_TIKTOK_REPORTS_PARSER_S_NONE;
    }

    switch (len) {

    case 2:
        if (key[0] == 'i' && key[1] == 'd') {
            return NGX_TIKTOK_REPORTS_PARSER_S_ID;
        }

        break;

    case 7:
        if (memcmp(key, "groupId", 7) == 0) {
            return NGX_TIKTOK_REPORTS_PARSER_S_GROUP_ID;
        }

        break;

    case 9:
        if (memcmp(key, "groupName", 9) == 0) {
            return NGX_TIKTOK_REPORTS_PARSER_S_GROUP_NAME;
        }

        break;
    }

    return NGX_TIKTOK_REPORTS_PARSER_S_NONE;
}


static int
ngx_tiktok_reports_parser_group(const unsigned char *data, size_t len)
{
    switch (len) {

    case 7:
        if (ngx_tiktok_reports_parser_caseeq(data, "PENDING", 7)) {
            return NGX_TIKTOK_REPORTS_GROUP_PENDING;
        }

        if (ngx_tiktok_reports_parser_caseeq(data, "EXPIRED", 7)) {
            return NGX_TIKTOK_REPORTS_GROUP_EXPIRED;
        }

        break;

    case 8:
        /* ACCEPTED is not a final state: as good as PENDING */
        if (ngx_tiktok_reports_parser_caseeq(data, "ACCEPTED", 8)) {
            return NGX_TIKTOK_REPORTS_GROUP_PENDING;
        }

        if (ngx_tiktok_reports_parser_caseeq(data, "REJECTED", 8)) {
            return NGX_TIKTOK_REPORTS_GROUP_REJECTED;
        }

        break;

    case 9:
        if (ngx_tiktok_reports_parser_caseeq(data, "DELIVERED", 9)) {
            return NGX_TIKTOK_REPORTS_GROUP_DELIVERED;
        }

        break;

    case 13:
        if (ngx_tiktok_reports_parser_caseeq(data, "UNDELIVERABLE", 13)) {
            return NGX_TIKTOK_REPORTS_GROUP_UNDELIVERABLE;
        }

        break;
    }

    return NGX_TIKTOK_REPORTS_GROUP_NONE;
}


static int
ngx_tiktok_reports_parser_caseeq(const unsigned char *data, const char *upper,
    size_t len)
{
    size_t         i;
    unsigned char  c;

    for (i = 0; i < len; i++) {
        c = data[i];

        if (c >= 'a' && c <= 'z') {
            c -= 'a' - 'A';
        }

        if (c != (unsigned char) upper[i]) {
            return 0;
        }
    }

    return 1;
}


static int
ngx_tiktok_reports_parser_end_result(ngx_tiktok_reports_parser_t *p)
{
    ngx_tiktok_reports_result_t  *r;

    r = &p->cur;

    p->in_object = 0;

    r->error = ngx_tiktok_reports_parser_classify(p);

    if (r->error != NULL) {
        r->kind = NGX_TIKTOK_REPORTS_KIND_NONE;
        r->group = NGX_TIKTOK_REPORTS_GROUP_NONE;
    }

    r->done_at_ms = NGX_TIKTOK_REPORTS_NO_TIME;
    r->seen_at_ms = NGX_TIKTOK_REPORTS_NO_TIME;

    if (r->done_at.data != NULL) {
        r->done_at_ms = ngx_tiktok_reports_parse_time(r->done_at.data,
                                                      r->done_at.len);
    }

    if (r->seen_at.data != NULL) {
        r->seen_at_ms = ngx_tiktok_reports_parse_time(r->seen_at.data,
                                                      r->seen_at.len);
    }

    if (p->keep_raw) {
        /* the NUL is room reserved by the closing brace */
        r->raw.data = p->raw + p->raw_start;
        r->raw.len = p->raw_pos - p->raw_start;
        p->raw[p->raw_pos++] = '\0';
        p->raw_start = p->raw_pos;
    }

    return ngx_tiktok_reports_parser_push(p, r);
}


static const char *
ngx_tiktok_reports_parser_classify(ngx_tiktok_reports_parser_t *p)
{
    ngx_tiktok_reports_result_t  *r;

    r = &p->cur;

    if (p->message_id == NGX_TIKTOK_REPORTS_PARSER_WRONG) {
        return "messageId is not a string";
    }

    if (p->message_id == NGX_TIKTOK_REPORTS_PARSER_ABSENT
        || r->message_id.len == 0)
    {
        return "missing messageId";
    }

    if (p->status == NGX_TIKTOK_REPORTS_PARSER_GOOD) {
        r->kind = NGX_TIKTOK_REPORTS_KIND_DELIVERY;
        r->group = p->group_name ? p->group_name : p->group_id;

        if (r->group == NGX_TIKTOK_REPORTS_GROUP_NONE) {
            return "unknown status group";
        }

        return NULL;
    }

    if (p->status == NGX_TIKTOK_REPORTS_PARSER_WRONG) {
        return "status is not an object";
    }

    if (p->event == NGX_TIKTOK_REPORTS_PARSER_EV_DELIVERY) {
        return "delivery report without status";
    }

    if (r->seen_at.data != NULL) {
        r->kind = NGX_TIKTOK_REPORTS_KIND_SEEN;
        return NULL;
    }

    if (p->event == NGX_TIKTOK_REPORTS_PARSER_EV_SEEN) {
        return "seen report without seenAt";
    }

    return "neither a delivery nor a seen report";
}


static int
ngx_tiktok_reports_parser_push(ngx_tiktok_reports_parser_t *p,
    ngx_tiktok_reports_result_t *r)
{
    size_t                        n;
    ngx_tiktok_reports_result_t  *results;

    if (p->nresults == p->nalloc) {
        n = p->nalloc ? p->nalloc * 2 : NGX_TIKTOK_REPORTS_PARSER_NRESULTS;

        if (n > (size_t) -1 / sizeof(ngx_tiktok_reports_result_t)) {
            p->no_memory = 1;
        return ngx_tiktok_reports_parser_fail(p, "out of memory");
        }

        results = p->alloc(p->ctx, n * sizeof(ngx_tiktok_reports_result_t));
        if (results == NULL) {
            p->no_memory = 1;
        return ngx_tiktok_reports_parser_fail(p, "out of memory");
        }

        if (p->nresults) {
            memcpy(results, p->results,
                   p->nresults * sizeof(ngx_tiktok_reports_result_t));
        }

        /* the old array is the pool's to reclaim */
        p->results = results;
        p->nalloc = n;
    }

    p->results[p->nresults++] = *r;

    return 1;
}


static int
ngx_tiktok_reports_parser_copy(ngx_tiktok_reports_parser_t *p,
    ngx_tiktok_reports_str_t *dst, const unsigned char *data, size_t len)
{
    unsigned char  *d;

    d = p->alloc(p->ctx, len + 1);
    if (d == NULL) {
        p->no_memory = 1;
        return ngx_tiktok_reports_parser_fail(p, "out of memory");
    }

    if (len) {
        memcpy(d, data, len);
    }

    d[len] = '\0';

    dst->data = d;
    dst->len = len;

    return 1;
}


/*
 * Room for need more bytes.  A new buffer takes over only the result being
 * written: finished results keep pointing into the old one.
 */

static int
ngx_tiktok_reports_parser_raw_reserve(ngx_tiktok_reports_parser_t *p,
    size_t need)
{
    size_t          used, size;
    unsigned char  *raw;

    if (p->raw_size - p->raw_pos >= need) {
        return 1;
    }

    used = p->raw_pos - p->raw_start;

    if (need > (size_t) -1 / 4 - used) {
        p->no_memory = 1;
        return ngx_tiktok_reports_parser_fail(p, "out of memory");
    }

    size = p->raw_size ? p->raw_size : NGX_TIKTOK_REPORTS_PARSER_RAWSIZE;

    while (size < used + need) {
        size *= 2;
    }

    raw = p->alloc(p->ctx, size);
    if (raw == NULL) {
        p->no_memory = 1;
        return ngx_tiktok_reports_parser_fail(p, "out of memory");
    }

    if (used) {
        memcpy(raw, p->raw + p->raw_start, used);
    }

    p->raw = raw;
    p->raw_start = 0;
    p->raw_pos = used;
    p->raw_size = size;

    return 1;
}


static int
ngx_tiktok_reports_parser_raw_value(ngx_tiktok_reports_parser_t *p, int type,
    const unsigned char *data, size_t len)
{
    size_t          need;
    unsigned char  *d, c;

    if (type == NGX_TIKTOK_REPORTS_PARSER_STRING) {
        need = ngx_tiktok_reports_parser_escaped_len(data, len) + 3;

    } else {
        need = len + 1;
    }

    if (!ngx_tiktok_reports_parser_raw_reserve(p, need)) {
        return 0;
    }

    d = p->raw + p->raw_pos;

    /* a comma unless first in its container or after a key */
    if (p->raw_pos > p->raw_start) {
        c = d[-1];

        if (c != '{' && c != '[' && c != ':') {
            *d++ = ',';
        }
    }

    if (type == NGX_TIKTOK_REPORTS_PARSER_STRING) {
        d = ngx_tiktok_reports_parser_escape(d, data, len);

    } else {
        memcpy(d, data, len);
        d += len;
    }

    p->raw_pos = d - p->raw;

    return 1;
}


static int
ngx_tiktok_reports_parser_raw_key(ngx_tiktok_reports_parser_t *p,
    const unsigned char *data, size_t len)
{
    unsigned char  *d;

    if (!ngx_tiktok_reports_parser_raw_reserve(p,
                        ngx_tiktok_reports_parser_escaped_len(data, len) + 4))
    {
        return 0;
    }

    d = p->raw + p->raw_pos;

    if (d[-1] != '{') {
        *d++ = ',';
    }

    d = ngx_tiktok_reports_parser_escape(d, data, len);
    *d++ = ':';

    p->raw_pos = d - p->raw;

    return 1;
}


static int
ngx_tiktok_reports_parser_raw_end(ngx_tiktok_reports_parser_t *p,
    unsigned char ch)
{
    /* one more for the NUL after a result's closing brace */
    if (!ngx_tiktok_reports_parser_raw_reserve(p, 2)) {
        return 0;
    }

    p->raw[p->raw_pos++] = ch;

    return 1;
}


/* the size of the string as a JSON string, quotes included */

static size_t
ngx_tiktok_reports_parser_escaped_len(const unsigned char *data, size_t len)
{
    size_t  i, n;

    n = len + 2;

    for (i = 0; i < len; i++) {
        switch (ngx_tiktok_reports_parser_esc[data[i]]) {
        case 0:
            break;
        case 'u':
            n += 5;
            break;
        default:
            n++;
        }
    }

    return n;
}


static unsigned char *
ngx_tiktok_reports_parser_escape(unsigned char *dst,
    const unsigned char *data, size_t len)
{
    size_t          i, start;
    unsigned char   e;

    *dst++ = '"';

    start = 0;

    for (i = 0; i < len; i++) {
        e = ngx_tiktok_reports_parser_esc[data[i]];

        if (e == 0) {
            continue;
        }

        if (i > start) {
            memcpy(dst, data + start, i - start);
            dst += i - start;
        }

        start = i + 1;

        *dst++ = '\\';
        *dst++ = e;

        if (e == 'u') {
            *dst++ = '0';
            *dst++ = '0';
            *dst++ = ngx_tiktok_reports_parser_hex[data[i] >> 4];
            *dst++ = ngx_tiktok_reports_parser_hex[data[i] & 0xf];
        }
    }

    if (len > start) {
        memcpy(dst, data + start, len - start);
        dst += len - start;
    }

    *dst++ = '"';

    return dst;
}


/* the first reason stays; 0 is what a callback returns to stop yajl */

static int
ngx_tiktok_reports_parser_fail(ngx_tiktok_reports_parser_t *p,
    const char *error)
{
    if (!p->failed) {
        p->failed = 1;
        snprintf(p->error, NGX_TIKTOK_REPORTS_PARSER_ERRLEN, "%s", error);
    }

    return 0;
}


static int
ngx_tiktok_reports_parser_too_many(ngx_tiktok_reports_parser_t *p)
{
    if (!p->failed) {
        p->failed = 1;
        p->too_many = 1;
        snprintf(p->error, NGX_TIKTOK_REPORTS_PARSER_ERRLEN,
                 "more than %zu results", p->max_results);
    }

    return 0;
}


/* what feed() and finish() return once the body is refused */

static int
ngx_tiktok_reports_parser_refused(ngx_tiktok_reports_parser_t *p)
{
    if (p->no_memory) {
        /* not the body's fault: the sender should try again */
        return NGX_TIKTOK_REPORTS_PARSER_NO_MEMORY;
    }

    return p->too_many ? NGX_TIKTOK_REPORTS_PARSER_TOO_MANY : -1;
}


static int
ngx_tiktok_reports_parser_json_error(ngx_tiktok_reports_parser_t *p,
    size_t at)
{
    size_t          len;
    unsigned char  *msg, *c;

    if (p->failed) {
        /* a callback refused the body and said why */
        return ngx_tiktok_reports_parser_refused(p);
    }

    p->failed = 1;

    msg = yajl_get_error(p->yajl, 0, NULL, 0);

    snprintf(p->error, NGX_TIKTOK_REPORTS_PARSER_ERRLEN,
             "invalid JSON at byte %zu: %s", at,
             msg ? (char *) msg : "parse error");

    if (msg != NULL) {
        yajl_free_error(p->yajl, msg);
    }

    /* yajl ends its messages with a newline: one line, no trailing blanks */

    for (c = (unsigned char *) p->error; *c; c++) {
        if (*c < 0x20) {
            *c = ' ';
        }
    }

    len = c - (unsigned char *) p->error;

    while (len && p->error[len - 1] == ' ') {
        p->error[--len] = '\0';
    }

    return -1;
}


int64_t
ngx_tiktok_reports_parse_time(const unsigned char *s, size_t len)
{
    int                   year, month, day, hour, min, sec, mdays, n,
                          oh, om;
    int64_t               ms, off;
    const unsigned char  *p, *end;

    if (s == NULL || len < 19
        || s[4] != '-' || s[7] != '-' || s[10] != 'T'
        || s[13] != ':' || s[16] != ':')
    {
        return NGX_TIKTOK_REPORTS_NO_TIME;
    }

    year = ngx_tiktok_reports_parser_digits(s, 4);
    month = ngx_tiktok_reports_parser_digits(s + 5, 2);
    day = ngx_tiktok_reports_parser_digits(s + 8, 2);
    hour = ngx_tiktok_reports_parser_digits(s + 11, 2);
    min = ngx_tiktok_reports_parser_digits(s + 14, 2);
    sec = ngx_tiktok_reports_parser_digits(s + 17, 2);

    if (year < 0 || month < 1 || month > 12 || day < 1
        || hour < 0 || hour > 23 || min < 0 || min > 59
        || sec < 0 || sec > 60)
    {
        return NGX_TIKTOK_REPORTS_NO_TIME;
    }

    mdays = ngx_tiktok_reports_parser_mdays[month - 1];

    if (month == 2
        && year % 4 == 0 && (year % 100 != 0 || year % 400 == 0))
    {
        mdays = 29;
    }

    if (day > mdays) {
        return NGX_TIKTOK_REPORTS_NO_TIME;
    }

    p = s + 19;
    end = s + len;

    ms = 0;

    if (p < end && *p == '.') {
        p++;

        /* milliseconds: the first three digits, the rest truncated */

        for (n = 0; p < end && *p >= '0' && *p <= '9'; n++, p++) {
            if (n == 9) {
                return NGX_TIKTOK_REPORTS_NO_TIME;
            }

            if (n < 3) {
                ms = ms * 10 + (*p - '0');
            }
        }

        if (n == 0) {
            return NGX_TIKTOK_REPORTS_NO_TIME;
        }

        for ( /* void */ ; n < 3; n++) {
            ms *= 10;
        }
    }

    off = 0;

    if (p < end && *p == 'Z') {
        p++;

    } else if (p < end && (*p == '+' || *p == '-')) {

        /* +HHMM or +HH:MM */

        if (end - p < 5) {
            return NGX_TIKTOK_REPORTS_NO_TIME;
        }

        oh = ngx_tiktok_reports_parser_digits(p + 1, 2);

        if (p[3] == ':') {
            if (end - p < 6) {
                return NGX_TIKTOK_REPORTS_NO_TIME;
            }

            om = ngx_tiktok_reports_parser_digits(p + 4, 2);
            n = 6;

        } else {
            om = ngx_tiktok_reports_parser_digits(p + 3, 2);
            n = 5;
        }

        if (oh < 0 || oh > 23 || om < 0 || om > 59) {
            return NGX_TIKTOK_REPORTS_NO_TIME;
        }

        off = oh * 3600 + om * 60;

        if (*p == '-') {
            off = -off;
        }

        p += n;
    }

    if (p != end) {
        return NGX_TIKTOK_REPORTS_NO_TIME;
    }

    return (ngx_tiktok_reports_parser_days(year, month, day) * 86400
            + hour * 3600 + min * 60 + sec - off) * 1000 + ms;
}


/* n decimal digits as a number, -1 if any is not a digit */

static int
ngx_tiktok_reports_parser_digits(const unsigned char *s, size_t n)
{
    int     v;
    size_t  i;

    v = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        v = v * 10 + (s[i] - '0');
    }

    return v;
}


/* days since 1970-01-01 of a proleptic Gregorian date */

static int64_t
ngx_tiktok_reports_parser_days(int64_t y, int m, int d)
{
    int64_t  era, yoe, doy, doe;

    /* years start in March, so that the leap day comes last */
    if (m <= 2) {
        y--;
    }

    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}
