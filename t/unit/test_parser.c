
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * Unit test of the report parser, without nginx.  Prints TAP; exits 0 only
 * when every check passed.  Memory comes from a small bump allocator over
 * malloc'ed blocks (or one block per allocation, so that ASan sees every
 * overrun), all released at the end.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <yajl/yajl_parse.h>

#include "ngx_tiktok_reports_parser.h"


#define NO_TIME  NGX_TIKTOK_REPORTS_NO_TIME

#define WHOLE    0
#define SPLIT    1
#define BYTES    2


typedef struct {
    unsigned char   **blocks;
    size_t            nblocks;
    size_t            nalloc;
    unsigned char    *last;
    size_t            left;
    int               exact;     /* one malloc per allocation */
    long              limit;     /* allocations allowed, -1: no limit */
    long              count;
} pool_t;


typedef struct {
    pool_t                         pool;
    int                            created;
    int                            rc;
    char                           error[256];
    size_t                         n;
    ngx_tiktok_reports_result_t   *res;
} run_t;


static int  tests;
static int  failures;

/* what run_body() gives set_max_results(); 0: no limit */
static size_t  run_max;


static int
ok(int cond, const char *fmt, ...)
{
    va_list  args;

    tests++;

    if (!cond) {
        failures++;
    }

    printf("%sok %d - ", cond ? "" : "not ", tests);

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");
    fflush(stdout);

    return cond;
}


static void
diag(const char *fmt, ...)
{
    va_list  args;

    printf("# ");

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");
}


static void *
pool_block(pool_t *pool, size_t size)
{
    void            *b;
    unsigned char  **nb;

    if (pool->nblocks == pool->nalloc) {
        pool->nalloc = pool->nalloc ? pool->nalloc * 2 : 64;
        nb = realloc(pool->blocks, pool->nalloc * sizeof(unsigned char *));
        if (nb == NULL) {
            abort();
        }
        pool->blocks = nb;
    }

    b = malloc(size ? size : 1);
    if (b == NULL) {
        abort();
    }

    pool->blocks[pool->nblocks++] = b;

    return b;
}


static void *
pool_alloc(void *ctx, size_t size)
{
    pool_t         *pool = ctx;
    unsigned char  *p;
    size_t          bsize;

    if (pool->limit >= 0 && pool->count >= pool->limit) {
        return NULL;
    }

    pool->count++;

    if (pool->exact) {
        return pool_block(pool, size);
    }

    size = (size + 15) & ~(size_t) 15;

    if (size > pool->left) {
        bsize = size > 65536 ? size : 65536;
        pool->last = pool_block(pool, bsize);
        pool->left = bsize;
    }

    p = pool->last;
    pool->last += size;
    pool->left -= size;

    return p;
}


static void
pool_init(pool_t *pool, int exact)
{
    memset(pool, 0, sizeof(pool_t));
    pool->exact = exact;
    pool->limit = -1;
}


static void
pool_free(pool_t *pool)
{
    size_t  i;

    for (i = 0; i < pool->nblocks; i++) {
        free(pool->blocks[i]);
    }

    free(pool->blocks);
    memset(pool, 0, sizeof(pool_t));
}


/* parses body, fed whole, in two chunks split at k, or a byte at a time */

static void
run_body(run_t *r, const char *body, size_t len, int keep_raw, int mode,
    size_t k, long limit, int exact)
{
    size_t                        i;
    ngx_tiktok_reports_parser_t  *p;

    memset(r, 0, sizeof(run_t));
    pool_init(&r->pool, exact);
    r->pool.limit = limit;

    p = ngx_tiktok_reports_parser_create(pool_alloc, &r->pool, keep_raw);
    if (p == NULL) {
        r->rc = -1;
        snprintf(r->error, sizeof(r->error), "(create failed)");
        return;
    }

    r->created = 1;
    r->rc = 0;

    ngx_tiktok_reports_parser_set_max_results(p, run_max);

    switch (mode) {

    case WHOLE:
        r->rc = ngx_tiktok_reports_parser_feed(p, (const unsigned char *) body,
                                               len);
        break;

    case SPLIT:
        r->rc = ngx_tiktok_reports_parser_feed(p, (const unsigned char *) body,
                                               k);
        if (r->rc == 0) {
            r->rc = ngx_tiktok_reports_parser_feed(p,
                                      (const unsigned char *) body + k,
                                      len - k);
        }
        break;

    case BYTES:
        for (i = 0; i < len && r->rc == 0; i++) {
            r->rc = ngx_tiktok_reports_parser_feed(p,
                                      (const unsigned char *) body + i, 1);

            /* empty chunks change nothing */
            if (r->rc == 0) {
                r->rc = ngx_tiktok_reports_parser_feed(p,
                                      (const unsigned char *) body + i, 0);
            }
        }
        break;
    }

    if (r->rc == 0) {
        r->rc = ngx_tiktok_reports_parser_finish(p);
    }

    if (r->rc != 0) {
        snprintf(r->error, sizeof(r->error), "%s",
                 ngx_tiktok_reports_parser_error(p));
    }

    r->res = ngx_tiktok_reports_parser_results(p, &r->n);

    ngx_tiktok_reports_parser_free(p);
    ngx_tiktok_reports_parser_free(p);
}


static void
run_free(run_t *r)
{
    pool_free(&r->pool);
}


static void
parse(run_t *r, const char *body, int keep_raw)
{
    run_body(r, body, strlen(body), keep_raw, WHOLE, 0, -1, 1);
}


static int
str_eq(ngx_tiktok_reports_str_t *a, ngx_tiktok_reports_str_t *b)
{
    if (a->data == NULL || b->data == NULL) {
        return a->data == b->data && a->len == 0 && b->len == 0;
    }

    return a->len == b->len && memcmp(a->data, b->data, a->len) == 0
           && a->data[a->len] == '\0' && b->data[b->len] == '\0';
}


/* v NULL: absent; otherwise equal bytes and NUL-terminated */

static int
str_is(ngx_tiktok_reports_str_t *s, const char *v)
{
    if (v == NULL) {
        return s->data == NULL && s->len == 0;
    }

    return s->data != NULL && s->len == strlen(v)
           && memcmp(s->data, v, s->len) == 0 && s->data[s->len] == '\0';
}


static int
str_isn(ngx_tiktok_reports_str_t *s, const char *v, size_t len)
{
    return s->data != NULL && s->len == len && memcmp(s->data, v, len) == 0
           && s->data[len] == '\0';
}


static int
result_eq(ngx_tiktok_reports_result_t *a, ngx_tiktok_reports_result_t *b)
{
    if ((a->error == NULL) != (b->error == NULL)) {
        return 0;
    }

    if (a->error && strcmp(a->error, b->error) != 0) {
        return 0;
    }

    return a->kind == b->kind
           && a->group == b->group
           && a->error_permanent == b->error_permanent
           && str_eq(&a->message_id, &b->message_id)
           && str_eq(&a->status_id, &b->status_id)
           && str_eq(&a->status_name, &b->status_name)
           && str_eq(&a->error_name, &b->error_name)
           && str_eq(&a->done_at, &b->done_at)
           && str_eq(&a->seen_at, &b->seen_at)
           && str_eq(&a->callback_data, &b->callback_data)
           && str_eq(&a->raw, &b->raw)
           && a->done_at_ms == b->done_at_ms
           && a->seen_at_ms == b->seen_at_ms;
}


static int
run_eq(run_t *a, run_t *b)
{
    size_t  i;

    if (a->rc != b->rc || strcmp(a->error, b->error) != 0 || a->n != b->n) {
        return 0;
    }

    for (i = 0; i < a->n; i++) {
        if (!result_eq(&a->res[i], &b->res[i])) {
            return 0;
        }
    }

    return 1;
}


static int64_t
utc_ms(int y, int mo, int d, int h, int mi, int s, int ms, int off_min)
{
    struct tm  tm;

    memset(&tm, 0, sizeof(struct tm));

    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;

    return ((int64_t) timegm(&tm) - off_min * 60) * 1000 + ms;
}


static int64_t
ptime(const char *s)
{
    return ngx_tiktok_reports_parse_time((const unsigned char *) s,
                                         strlen(s));
}


/* a body-level error, also with every split and a byte at a time */

static void
expect_error(const char *body, size_t len, const char *error,
    const char *what)
{
    int     same;
    size_t  k;
    run_t   a, b;

    run_body(&a, body, len, 0, WHOLE, 0, -1, 1);

    if (!ok(a.rc == -1 && strcmp(a.error, error) == 0 && a.n == 0,
            "%s: \"%s\"", what, error))
    {
        diag("got rc %d \"%s\"", a.rc, a.error);
    }

    same = 1;

    for (k = 0; k <= len; k++) {
        run_body(&b, body, len, 1, SPLIT, k, -1, 1);
        same = same && run_eq(&a, &b);
        run_free(&b);
    }

    run_body(&b, body, len, 1, BYTES, 0, -1, 1);
    same = same && run_eq(&a, &b);

    if (!ok(same, "%s: same error however the body is split", what)) {
        diag("bytes: rc %d \"%s\"", b.rc, b.error);
    }

    run_free(&b);
    run_free(&a);
}


/* the same results from every 2-chunk split and from one byte at a time */

static void
expect_split_invariant(const char *body, const char *what)
{
    int     keep, same;
    size_t  k, len;
    run_t   a, b;

    len = strlen(body);

    for (keep = 0; keep <= 1; keep++) {
        run_body(&a, body, len, keep, WHOLE, 0, -1, 1);

        same = 1;

        for (k = 0; k <= len; k++) {
            run_body(&b, body, len, keep, SPLIT, k, -1, 1);

            if (!run_eq(&a, &b)) {
                if (same) {
                    diag("split at %zu differs", k);
                }
                same = 0;
            }

            run_free(&b);
        }

        ok(same, "%s: every 2-chunk split gives identical results%s",
           what, keep ? " (keep_raw)" : "");

        run_body(&b, body, len, keep, BYTES, 0, -1, 1);
        ok(run_eq(&a, &b), "%s: a byte at a time gives identical results%s",
           what, keep ? " (keep_raw)" : "");
        run_free(&b);

        run_free(&a);
    }
}


static const char  tiktok_dlr[] =
    "{\n"
    "  \"results\": [\n"
    "    {\n"
    "      \"bulkId\": \"a28dd97c-2222-4fcf-99f1-0b557ed381da\",\n"
    "      \"price\": { \"pricePerMessage\": 0.01, \"currency\": \"EUR\" },\n"
    "      \"status\": {\n"
    "        \"groupId\": 3,\n"
    "        \"groupName\": \"DELIVERED\",\n"
    "        \"id\": 5,\n"
    "        \"name\": \"DELIVERED_TO_HANDSET\",\n"
    "        \"description\": \"Message delivered to handset\"\n"
    "      },\n"
    "      \"error\": {\n"
    "        \"groupId\": 0,\n"
    "        \"groupName\": \"OK\",\n"
    "        \"id\": 0,\n"
    "        \"name\": \"NO_ERROR\",\n"
    "        \"description\": \"No Error\",\n"
    "        \"permanent\": false\n"
    "      },\n"
    "      \"messageId\": \"a28dd97c-1ffb-4fcf-99f1-0b557ed381da\",\n"
    "      \"to\": \"u5NkbnslAgxpOelvH01Y+rs7Uw=\",\n"
    "      \"sender\": \"-000pcMJDSDHK-UvK012b10KKXmCvWmVF8o\",\n"
    "      \"sentAt\": \"2023-09-26T10:52:15.457+0000\",\n"
    "      \"doneAt\": \"2023-09-26T10:52:15.799+0000\",\n"
    "      \"messageCount\": 1,\n"
    "      \"platform\": {\n"
    "        \"entityId\": \"promotional-traffic-entity\",\n"
    "        \"applicationId\": \"marketing-automation-application\"\n"
    "      }\n"
    "    }\n"
    "  ]\n"
    "}\n";


static const char  tiktok_dlr_raw[] =
    "{\"bulkId\":\"a28dd97c-2222-4fcf-99f1-0b557ed381da\","
    "\"price\":{\"pricePerMessage\":0.01,\"currency\":\"EUR\"},"
    "\"status\":{\"groupId\":3,\"groupName\":\"DELIVERED\",\"id\":5,"
    "\"name\":\"DELIVERED_TO_HANDSET\","
    "\"description\":\"Message delivered to handset\"},"
    "\"error\":{\"groupId\":0,\"groupName\":\"OK\",\"id\":0,"
    "\"name\":\"NO_ERROR\",\"description\":\"No Error\",\"permanent\":false},"
    "\"messageId\":\"a28dd97c-1ffb-4fcf-99f1-0b557ed381da\","
    "\"to\":\"u5NkbnslAgxpOelvH01Y+rs7Uw=\","
    "\"sender\":\"-000pcMJDSDHK-UvK012b10KKXmCvWmVF8o\","
    "\"sentAt\":\"2023-09-26T10:52:15.457+0000\","
    "\"doneAt\":\"2023-09-26T10:52:15.799+0000\","
    "\"messageCount\":1,"
    "\"platform\":{\"entityId\":\"promotional-traffic-entity\","
    "\"applicationId\":\"marketing-automation-application\"}}";


static const char  tiktok_seen[] =
    "{\n"
    "  \"results\": [\n"
    "    {\n"
    "      \"messageId\": \"45db39c3-7822-4e72-a3ec-c87442c0ffz9\",\n"
    "      \"from\": \"-000pcMJDSDHK-UvK012b10KKXmCvWmVF8o\",\n"
    "      \"to\": \"u5NkbnslAgxpOelvH01Y+rs7Uw=\",\n"
    "      \"sentAt\": \"2019-11-09T16:00:00.000+0000\",\n"
    "      \"seenAt\": \"2019-11-09T16:00:05.000+0000\",\n"
    "      \"applicationId\": \"marketing-automation-application\",\n"
    "      \"entityId\": \"promotional-traffic-entity\"\n"
    "    }\n"
    "  ]\n"
    "}\n";


static const char  messages_dlr[] =
    "{\n"
    "  \"results\": [\n"
    "    {\n"
    "      \"event\": \"DELIVERY\",\n"
    "      \"channel\": \"WHATSAPP\",\n"
    "      \"sender\": \"senderNumber\",\n"
    "      \"destination\": \"41793026727\",\n"
    "      \"sentAt\": \"2024-02-06T14:18:29.797+0000\",\n"
    "      \"doneAt\": \"2024-02-06T17:18:29.797+0000\",\n"
    "      \"bulkId\": \"1688025180464000013\",\n"
    "      \"messageId\": \"ABEGVUGWh3gEAgo-sLTvmQCS5kwjhsy\",\n"
    "      \"messageCount\": 1,\n"
    "      \"status\": { \"groupId\": 3, \"groupName\": \"DELIVERED\", "
    "\"id\": 5, \"name\": \"DELIVERED_TO_HANDSET\", \"description\": "
    "\"Message delivered to handset\" },\n"
    "      \"error\": { \"groupId\": 0, \"groupName\": \"OK\", \"id\": 0, "
    "\"name\": \"NO_ERROR\", \"description\": \"No Error\", "
    "\"permanent\": false },\n"
    "      \"platform\": { \"entityId\": \"my-entity-id\", "
    "\"applicationId\": \"my-application-id\" },\n"
    "      \"deviceDetails\": \"deviceDetails\",\n"
    "      \"networkId\": 1,\n"
    "      \"campaignReferenceId\": \"campaignRef\"\n"
    "    }\n"
    "  ]\n"
    "}\n";


static const char  messages_seen[] =
    "{\n"
    "  \"results\": [\n"
    "    {\n"
    "      \"event\": \"SEEN\",\n"
    "      \"channel\": \"WHATSAPP\",\n"
    "      \"sender\": \"senderNumber\",\n"
    "      \"destination\": \"41793026727\",\n"
    "      \"sentAt\": \"2024-02-06T14:18:29.797+0000\",\n"
    "      \"seenAt\": \"2024-02-06T14:28:29.797+0000\",\n"
    "      \"bulkId\": \"1688025180464000013\",\n"
    "      \"messageId\": \"ABEGVUGWh3gEAgo-sLTvmQCS5kwjhsy\",\n"
    "      \"callbackData\": "
    "\"reference-callback-data-from-outbound-message\",\n"
    "      \"platform\": { \"entityId\": \"my-entity-id\", "
    "\"applicationId\": \"my-application-id\" },\n"
    "      \"campaignReferenceId\": \"campaignRef\"\n"
    "    }\n"
    "  ]\n"
    "}\n";


static const char  whatsapp_dlr[] =
    "{\"results\":[{\"bulkId\":\"\","
    "\"price\":{\"pricePerMessage\":0.21,\"currency\":\"BRL\"},"
    "\"status\":{\"id\":5,\"groupId\":3,\"groupName\":\"DELIVERED\","
    "\"name\":\"DELIVERED_TO_HANDSET\","
    "\"description\":\"Message delivered to handset\"},"
    "\"error\":{\"id\":0,\"name\":\"NO_ERROR\",\"description\":\"No Error\","
    "\"groupId\":0,\"groupName\":\"OK\",\"permanent\":false},"
    "\"messageId\":\"fb469d73-d362-463f-b30f-1e959b53badc\","
    "\"doneAt\":\"2019-04-09T16:01:56.494-0300\",\"messageCount\":1,"
    "\"sentAt\":\"2019-04-09T16:00:58.647-0300\",\"to\":\"41793026731\","
    "\"contact\":{\"name\":\"name\",\"phoneNumber\":\"41793026731\","
    "\"userId\":\"US.1349120865530274191\","
    "\"parentUserId\":\"US.ENT.118157495734\",\"username\":\"username\"}}]}";


/* a batch with a bad entry between good ones; indexes must be kept */

static const char  batch[] =
    "{\"results\":["
    "{\"messageId\":\"b-0\",\"status\":{\"groupName\":\"PENDING\","
    "\"id\":7,\"name\":\"PENDING_ENROUTE\"}},"
    "{\"status\":{\"groupName\":\"DELIVERED\"},\"to\":\"x\"},"
    "{\"messageId\":\"b-2\",\"seenAt\":\"2019-11-09T16:00:05.000Z\"},"
    "{\"foo\":1},"
    "17,"
    "{\"messageId\":\"b-5\",\"to\":\"x\"}"
    "],\"bulkId\":\"b\"}";


static const char  escapes[] =
    "{\"results\":[ {\"messageId\" : \"m\\\"1\\\\\\n\\t\\u0001\\b\\f\\r"
    "\\u001f\\u007f\\u00e9\\/\", \"status\":{\"groupId\":3,"
    "\"groupName\":\"DELIVERED\"},\n \"n\":[1, -2.5e3, true, false, null, "
    "{}, [], {\"a\":[{\"b\":{}}]}], \"x\\u0000\\ud83d\\ude00\":\"\" } ,"
    " 5, {\"messageId\":\"m2\",\"seenAt\":\"2019-11-09T16:00:05.000+0000\","
    "\"k\":[[],[[]],{}]} ]}";


static const char  escapes_raw0[] =
    "{\"messageId\":\"m\\\"1\\\\\\n\\t\\u0001\\b\\f\\r\\u001f\x7f\xc3\xa9/\","
    "\"status\":{\"groupId\":3,\"groupName\":\"DELIVERED\"},"
    "\"n\":[1,-2.5e3,true,false,null,{},[],{\"a\":[{\"b\":{}}]}],"
    "\"x\\u0000\xf0\x9f\x98\x80\":\"\"}";


static const char  escapes_raw2[] =
    "{\"messageId\":\"m2\",\"seenAt\":\"2019-11-09T16:00:05.000+0000\","
    "\"k\":[[],[[]],{}]}";


static void
test_examples(void)
{
    run_t                         r;
    ngx_tiktok_reports_result_t  *x;

    parse(&r, tiktok_dlr, 0);
    x = r.res;

    ok(r.rc == 0 && r.n == 1, "tiktok DLR: parsed, one result");

    if (r.n == 1) {
        ok(x->error == NULL, "tiktok DLR: accepted");
        ok(x->kind == NGX_TIKTOK_REPORTS_KIND_DELIVERY,
           "tiktok DLR: delivery");
        ok(x->group == NGX_TIKTOK_REPORTS_GROUP_DELIVERED,
           "tiktok DLR: group DELIVERED");
        ok(str_is(&x->message_id, "a28dd97c-1ffb-4fcf-99f1-0b557ed381da"),
           "tiktok DLR: messageId");
        ok(str_is(&x->status_id, "5"), "tiktok DLR: status.id");
        ok(str_is(&x->status_name, "DELIVERED_TO_HANDSET"),
           "tiktok DLR: status.name");
        ok(str_is(&x->error_name, "NO_ERROR"), "tiktok DLR: error.name");
        ok(x->error_permanent == 0, "tiktok DLR: error.permanent false");
        ok(str_is(&x->done_at, "2023-09-26T10:52:15.799+0000"),
           "tiktok DLR: doneAt");
        ok(x->done_at_ms == utc_ms(2023, 9, 26, 10, 52, 15, 799, 0),
           "tiktok DLR: doneAt in ms");
        ok(str_is(&x->seen_at, NULL) && x->seen_at_ms == NO_TIME,
           "tiktok DLR: no seenAt");
        ok(str_is(&x->callback_data, NULL), "tiktok DLR: no callbackData");
        ok(str_is(&x->raw, NULL), "tiktok DLR: no raw without keep_raw");
    }

    run_free(&r);

    parse(&r, tiktok_dlr, 1);
    ok(r.rc == 0 && r.n == 1 && str_is(&r.res[0].raw, tiktok_dlr_raw),
       "tiktok DLR: raw is the compact result object");
    run_free(&r);

    parse(&r, tiktok_seen, 0);
    x = r.res;

    ok(r.rc == 0 && r.n == 1, "tiktok seen: parsed, one result");

    if (r.n == 1) {
        ok(x->error == NULL && x->kind == NGX_TIKTOK_REPORTS_KIND_SEEN,
           "tiktok seen: accepted as seen");
        ok(str_is(&x->message_id, "45db39c3-7822-4e72-a3ec-c87442c0ffz9"),
           "tiktok seen: messageId");
        ok(str_is(&x->seen_at, "2019-11-09T16:00:05.000+0000"),
           "tiktok seen: seenAt");
        ok(x->seen_at_ms == utc_ms(2019, 11, 9, 16, 0, 5, 0, 0),
           "tiktok seen: seenAt in ms");
        ok(x->group == NGX_TIKTOK_REPORTS_GROUP_NONE
           && x->error_permanent == -1
           && str_is(&x->status_id, NULL) && str_is(&x->status_name, NULL)
           && str_is(&x->error_name, NULL) && str_is(&x->done_at, NULL)
           && x->done_at_ms == NO_TIME && str_is(&x->callback_data, NULL)
           && str_is(&x->raw, NULL),
           "tiktok seen: no delivery fields");
    }

    run_free(&r);

    parse(&r, messages_dlr, 0);
    x = r.res;

    ok(r.rc == 0 && r.n == 1 && x->error == NULL
       && x->kind == NGX_TIKTOK_REPORTS_KIND_DELIVERY
       && x->group == NGX_TIKTOK_REPORTS_GROUP_DELIVERED
       && str_is(&x->message_id, "ABEGVUGWh3gEAgo-sLTvmQCS5kwjhsy")
       && str_is(&x->status_id, "5")
       && str_is(&x->status_name, "DELIVERED_TO_HANDSET")
       && str_is(&x->error_name, "NO_ERROR") && x->error_permanent == 0
       && str_is(&x->done_at, "2024-02-06T17:18:29.797+0000")
       && x->done_at_ms == utc_ms(2024, 2, 6, 17, 18, 29, 797, 0)
       && str_is(&x->seen_at, NULL) && str_is(&x->callback_data, NULL),
       "messages API DLR (event, destination): every field");
    run_free(&r);

    parse(&r, messages_seen, 0);
    x = r.res;

    ok(r.rc == 0 && r.n == 1 && x->error == NULL
       && x->kind == NGX_TIKTOK_REPORTS_KIND_SEEN
       && str_is(&x->message_id, "ABEGVUGWh3gEAgo-sLTvmQCS5kwjhsy")
       && str_is(&x->seen_at, "2024-02-06T14:28:29.797+0000")
       && x->seen_at_ms == utc_ms(2024, 2, 6, 14, 28, 29, 797, 0)
       && str_is(&x->callback_data,
                 "reference-callback-data-from-outbound-message")
       && str_is(&x->done_at, NULL) && str_is(&x->status_id, NULL)
       && x->error_permanent == -1,
       "messages API seen: every field");
    run_free(&r);

    parse(&r, whatsapp_dlr, 0);
    x = r.res;

    ok(r.rc == 0 && r.n == 1 && x->error == NULL
       && x->group == NGX_TIKTOK_REPORTS_GROUP_DELIVERED
       && str_is(&x->done_at, "2019-04-09T16:01:56.494-0300")
       && x->done_at_ms == ptime("2019-04-09T19:01:56.494+0000")
       && x->done_at_ms == utc_ms(2019, 4, 9, 19, 1, 56, 494, 0),
       "whatsapp DLR: -0300 doneAt is the same instant as +0000");
    run_free(&r);
}


static void
test_batch(void)
{
    run_t                         r;
    ngx_tiktok_reports_result_t  *x;

    parse(&r, batch, 0);
    x = r.res;

    if (!ok(r.rc == 0 && r.n == 6, "batch: six results")) {
        run_free(&r);
        return;
    }

    ok(x[0].error == NULL && x[0].kind == NGX_TIKTOK_REPORTS_KIND_DELIVERY
       && x[0].group == NGX_TIKTOK_REPORTS_GROUP_PENDING
       && str_is(&x[0].message_id, "b-0") && str_is(&x[0].status_id, "7")
       && str_is(&x[0].status_name, "PENDING_ENROUTE")
       && x[0].done_at_ms == NO_TIME,
       "batch: index 0 accepted");
    ok(x[1].error && strcmp(x[1].error, "missing messageId") == 0
       && x[1].kind == NGX_TIKTOK_REPORTS_KIND_NONE,
       "batch: index 1 missing messageId");
    ok(x[2].error == NULL && x[2].kind == NGX_TIKTOK_REPORTS_KIND_SEEN
       && str_is(&x[2].message_id, "b-2")
       && x[2].seen_at_ms == utc_ms(2019, 11, 9, 16, 0, 5, 0, 0),
       "batch: index 2 accepted");
    ok(x[3].error && strcmp(x[3].error, "missing messageId") == 0,
       "batch: index 3 missing messageId");
    ok(x[4].error && strcmp(x[4].error, "result is not an object") == 0
       && x[4].kind == NGX_TIKTOK_REPORTS_KIND_NONE,
       "batch: index 4 result is not an object");
    ok(x[5].error
       && strcmp(x[5].error, "neither a delivery nor a seen report") == 0,
       "batch: index 5 neither a delivery nor a seen report");

    run_free(&r);

    parse(&r, "{\"results\":[1,\"s\",null,true,[{\"messageId\":\"in\","
              "\"seenAt\":\"x\"}],{}]}", 0);

    ok(r.rc == 0 && r.n == 6
       && strcmp(r.res[0].error, "result is not an object") == 0
       && strcmp(r.res[1].error, "result is not an object") == 0
       && strcmp(r.res[2].error, "result is not an object") == 0
       && strcmp(r.res[3].error, "result is not an object") == 0
       && strcmp(r.res[4].error, "result is not an object") == 0
       && strcmp(r.res[5].error, "missing messageId") == 0,
       "batch: every non-object element is one rejected result");

    run_free(&r);

    parse(&r, "{\"results\":[]}", 0);
    ok(r.rc == 0 && r.n == 0, "empty results array");
    run_free(&r);
}


static void
test_body_errors(void)
{
    static const char  bad_utf8[] =
        "{\"results\":[{\"messageId\":\"a\xff\",\"seenAt\":\"x\"}]}";
    static const char  bad_utf8_key[] = "{\"results\":[],\"\xc3\":1}";
    /* yajl lets these through; the parser refuses them itself */
    static const char  overlong[] =
        "{\"results\":[{\"messageId\":\"a\xc0\xaf\",\"seenAt\":\"x\"}]}";
    static const char  surrogate[] =
        "{\"results\":[{\"messageId\":\"a\xed\xa0\x80\",\"seenAt\":\"x\"}]}";
    static const char  overlong_key[] = "{\"results\":[],\"\xe0\x80\xaf\":1}";

    expect_error("results: yes", 12,
                 "invalid JSON at byte 1: lexical error: invalid char in "
                 "json text.", "not JSON");
    expect_error("", 0, "empty body", "empty body");
    expect_error(" \r\n\t ", 5, "empty body", "blank body");
    expect_error("{\"results\":[{\"messageId\":\"tr", 28,
                 "invalid JSON at byte 28: parse error: premature EOF",
                 "truncated JSON");
    expect_error("{\"results\":[{\"messageId\":\"a\"}]} x", 34,
                 "invalid JSON at byte 33: parse error: trailing garbage",
                 "trailing garbage");
    expect_error("{\"results\":[]}{\"results\":[]}", 28,
                 "invalid JSON at byte 15: parse error: trailing garbage",
                 "two values");
    expect_error("{\"results\":[]} /* x */", 22,
                 "invalid JSON at byte 15: parse error: trailing garbage",
                 "comment");
    /* the literal's own NUL, fed as a 15th byte */
    expect_error("{\"results\":[]}", 15,
                 "invalid JSON at byte 15: parse error: trailing garbage",
                 "NUL after the body");
    expect_error(bad_utf8, sizeof(bad_utf8) - 1,
                 "invalid JSON at byte 28: lexical error: invalid bytes in "
                 "UTF8 string.", "invalid UTF-8 in a string");
    expect_error(bad_utf8_key, sizeof(bad_utf8_key) - 1,
                 "invalid JSON at byte 17: lexical error: invalid bytes in "
                 "UTF8 string.", "invalid UTF-8 in a key");
    expect_error(overlong, sizeof(overlong) - 1, "invalid UTF-8 in a string",
                 "overlong UTF-8 in a string");
    expect_error(surrogate, sizeof(surrogate) - 1, "invalid UTF-8 in a string",
                 "an encoded surrogate in a string");
    expect_error(overlong_key, sizeof(overlong_key) - 1,
                 "invalid UTF-8 in a string", "overlong UTF-8 in a key");
    expect_error("[{\"results\":[]}]", 16, "body is not a JSON object",
                 "top-level array");
    expect_error("\"results\"", 9, "body is not a JSON object",
                 "top-level string");
    expect_error("123", 3, "body is not a JSON object", "top-level number");
    expect_error("null", 4, "body is not a JSON object", "top-level null");
    expect_error("{\"result\":[]}", 13, "no results array",
                 "no results member");
    expect_error("{\"a\":{\"results\":[]},\"b\":[{\"results\":[]}]}", 41,
                 "no results array", "nested results do not count");
    expect_error("{\"results\":{}}", 14, "results is not an array",
                 "results is an object");
    expect_error("{\"results\":null}", 16, "results is not an array",
                 "results is null");
    expect_error("{\"results\":[],\"results\":\"x\"}", 28,
                 "results is not an array", "last results is not an array");
}


static void
test_body_error_details(void)
{
    run_t                         r;
    size_t                        n;
    ngx_tiktok_reports_parser_t  *p;
    pool_t                        pool;

    run_body(&r, "{\"results\":[{\"messageId\":\"a\"}] x", 33, 0, BYTES, 0,
             -1, 1);
    if (!ok(r.rc == -1
            && strcmp(r.error, "invalid JSON at byte 32: lexical error: "
                      "invalid char in json text.") == 0,
            "invalid JSON fed a byte at a time: absolute byte offset"))
    {
        diag("got \"%s\"", r.error);
    }
    ok(strlen(r.error) < 200 && strchr(r.error, '\n') == NULL,
       "error message: one line, under 200 chars");
    run_free(&r);

    /* feeding on after an error changes nothing */

    pool_init(&pool, 1);

    p = ngx_tiktok_reports_parser_create(pool_alloc, &pool, 0);

    ok(p != NULL
       && ngx_tiktok_reports_parser_feed(p, (const unsigned char *) "[", 1)
          == -1
       && ngx_tiktok_reports_parser_feed(p, (const unsigned char *) "{", 1)
          == -1
       && ngx_tiktok_reports_parser_finish(p) == -1
       && strcmp(ngx_tiktok_reports_parser_error(p),
                 "body is not a JSON object") == 0
       && ngx_tiktok_reports_parser_results(p, &n) == NULL && n == 0,
       "after an error every call fails with the first reason");

    ngx_tiktok_reports_parser_free(p);
    ngx_tiktok_reports_parser_free(p);
    pool_free(&pool);

    pool_init(&pool, 1);

    p = ngx_tiktok_reports_parser_create(pool_alloc, &pool, 0);

    ok(p != NULL
       && strcmp(ngx_tiktok_reports_parser_error(p), "") == 0
       && ngx_tiktok_reports_parser_feed(p,
                             (const unsigned char *) "{\"results\":[]}", 14)
          == 0
       && ngx_tiktok_reports_parser_finish(p) == 0
       && ngx_tiktok_reports_parser_finish(p) == 0
       && (ngx_tiktok_reports_parser_results(p, &n), n == 0),
       "finish twice is harmless");

    ngx_tiktok_reports_parser_free(p);
    ngx_tiktok_reports_parser_free(p);
    pool_free(&pool);

    /* the parser never frees: its memory lives until the pool goes */

    pool_init(&pool, 1);

    p = ngx_tiktok_reports_parser_create(pool_alloc, &pool, 0);
    ngx_tiktok_reports_parser_free(p);

    ok(p != NULL && pool.count == 1, "create takes the parser from alloc");

    pool_free(&pool);
}


static void
test_duplicates(void)
{
    run_t                         r;
    ngx_tiktok_reports_result_t  *x;

    /* "results" twice at the top: the last one wins */

    parse(&r, "{\"results\":[{\"messageId\":\"a\",\"seenAt\":\"s\"},"
              "{\"messageId\":\"b\",\"seenAt\":\"s\"}],\"x\":1,"
              "\"results\":[{\"messageId\":\"c\",\"seenAt\":\"s\"}]}", 1);
    ok(r.rc == 0 && r.n == 1 && str_is(&r.res[0].message_id, "c")
       && str_is(&r.res[0].raw, "{\"messageId\":\"c\",\"seenAt\":\"s\"}"),
       "results twice: the last array wins");
    run_free(&r);

    parse(&r, "{\"results\":5,\"results\":[{\"messageId\":\"c\","
              "\"seenAt\":\"s\"}]}", 0);
    ok(r.rc == 0 && r.n == 1 && str_is(&r.res[0].message_id, "c"),
       "results twice: a later array replaces a non-array");
    run_free(&r);

    parse(&r, "{\"results\":[{"
              "\"messageId\":\"first\",\"messageId\":\"second\","
              "\"status\":{\"groupName\":\"DELIVERED\",\"name\":\"N1\","
              "\"id\":5},"
              "\"status\":{\"groupId\":4,\"groupName\":\"EXPIRED\","
              "\"groupName\":\"nonsense\"},"
              "\"error\":{\"name\":\"E1\",\"permanent\":true,"
              "\"permanent\":false},"
              "\"doneAt\":\"2023-01-01T00:00:00Z\",\"doneAt\":7,"
              "\"callbackData\":\"c1\",\"callbackData\":\"c2\""
              "}]}", 0);
    x = r.res;

    ok(r.rc == 0 && r.n == 1 && x->error == NULL
       && str_is(&x->message_id, "second"),
       "duplicate messageId: the last wins");
    ok(r.n == 1 && x->group == NGX_TIKTOK_REPORTS_GROUP_EXPIRED
       && str_is(&x->status_name, NULL) && str_is(&x->status_id, NULL),
       "duplicate status: the last object wins, whole");
    ok(r.n == 1 && str_is(&x->error_name, "E1") && x->error_permanent == 0,
       "duplicate error.permanent: the last wins");
    ok(r.n == 1 && str_is(&x->done_at, NULL) && x->done_at_ms == NO_TIME,
       "duplicate doneAt: a later number makes it absent");
    ok(r.n == 1 && str_is(&x->callback_data, "c2"),
       "duplicate callbackData: the last wins");
    run_free(&r);

    parse(&r, "{\"results\":[{\"messageId\":\"m\",\"status\":{\"groupId\":3},"
              "\"status\":\"x\"},"
              "{\"messageId\":\"m\",\"status\":1,"
              "\"status\":{\"groupId\":3}},"
              "{\"messageId\":\"m\",\"messageId\":5,\"seenAt\":\"s\"},"
              "{\"messageId\":5,\"messageId\":\"m\",\"seenAt\":\"s\"}]}", 0);
    x = r.res;

    ok(r.rc == 0 && r.n == 4
       && strcmp(x[0].error, "status is not an object") == 0
       && x[1].error == NULL && x[1].group == 3
       && strcmp(x[2].error, "messageId is not a string") == 0
       && x[3].error == NULL,
       "duplicate status and messageId of other types: the last wins");
    run_free(&r);
}


static void
test_nesting_scope(void)
{
    run_t                         r;
    ngx_tiktok_reports_result_t  *x;

    parse(&r, "{\"messageId\":\"top\",\"results\":[{"
              "\"platform\":{\"messageId\":\"nested\","
              "\"status\":{\"groupName\":\"DELIVERED\"},\"seenAt\":\"s\"},"
              "\"list\":[{\"messageId\":\"in-array\"}]},"
              "{\"messageId\":\"real\",\"platform\":{\"messageId\":\"fake\","
              "\"seenAt\":\"s\",\"callbackData\":\"fake\"},"
              "\"status\":{\"groupId\":2,\"x\":{\"groupId\":3,"
              "\"name\":\"fake\",\"id\":9},\"error\":{\"name\":\"fake\"}},"
              "\"error\":{\"status\":{\"name\":\"fake\"},"
              "\"x\":{\"name\":\"fake\",\"permanent\":true}}},"
              "{\"messageId\":\"m\",\"x\":{\"status\":{\"groupId\":1},"
              "\"event\":\"DELIVERY\"}}"
              "],\"status\":{\"groupId\":3}}", 0);
    x = r.res;

    ok(r.rc == 0 && r.n == 3, "nested members: three results");

    if (r.n == 3) {
        ok(strcmp(x[0].error, "missing messageId") == 0,
           "a messageId nested in another member is not the messageId");
        ok(x[1].error == NULL && str_is(&x[1].message_id, "real")
           && x[1].kind == NGX_TIKTOK_REPORTS_KIND_DELIVERY
           && x[1].group == NGX_TIKTOK_REPORTS_GROUP_UNDELIVERABLE
           && str_is(&x[1].status_name, NULL)
           && str_is(&x[1].status_id, NULL)
           && str_is(&x[1].error_name, NULL) && x[1].error_permanent == -1
           && str_is(&x[1].seen_at, NULL)
           && str_is(&x[1].callback_data, NULL),
           "members nested deeper than their place are ignored");
        ok(strcmp(x[2].error, "neither a delivery nor a seen report") == 0,
           "nested status and event do not make a delivery report");
    }

    run_free(&r);
}


static void
test_types(void)
{
    run_t                         r;
    ngx_tiktok_reports_result_t  *x;

    parse(&r, "{\"results\":["
              /* 0 */ "{\"messageId\":5,\"seenAt\":\"s\"},"
              /* 1 */ "{\"messageId\":\"\",\"seenAt\":\"s\"},"
              /* 2 */ "{\"messageId\":null,\"seenAt\":\"s\"},"
              /* 3 */ "{\"messageId\":{\"a\":1},\"seenAt\":\"s\"},"
              /* 4 */ "{\"messageId\":\"m\",\"status\":\"DELIVERED\"},"
              /* 5 */ "{\"messageId\":\"m\",\"status\":[]},"
              /* 6 */ "{\"messageId\":\"m\",\"status\":{\"groupName\":3,"
                      "\"groupId\":\"3\"}},"
              /* 7 */ "{\"messageId\":\"m\",\"status\":{\"groupId\":3,"
                      "\"name\":5,\"id\":\"5\"},\"error\":{\"name\":7,"
                      "\"permanent\":\"true\"},\"doneAt\":5,"
                      "\"callbackData\":{},\"seenAt\":[1]},"
              /* 8 */ "{\"messageId\":\"m\",\"seenAt\":5},"
              /* 9 */ "{\"messageId\":\"m\",\"event\":\"DELIVERY\","
                      "\"seenAt\":\"s\"},"
              /* 10 */ "{\"messageId\":\"m\",\"event\":\"SEEN\"},"
              /* 11 */ "{\"messageId\":\"m\",\"event\":\"SEEN\","
                       "\"seenAt\":\"2024-02-06T14:28:29.797+0000\"},"
              /* 12 */ "{\"messageId\":\"m\",\"event\":5,\"seenAt\":\"s\"},"
              /* 13 */ "{\"messageId\":\"m\",\"event\":\"DELIVERY\","
                       "\"status\":{\"groupId\":5}},"
              /* 14 */ "{\"messageId\":\"m\",\"error\":\"x\","
                       "\"status\":{\"groupId\":1},\"event\":\"SEEN\","
                       "\"seenAt\":\"s\"},"
              /* 15 */ "{\"messageId\":\"m\",\"event\":\"CLICK\"},"
              /* 16 */ "{\"messageId\":\"m\",\"event\":\"seen\","
                       "\"seenAt\":\"s\"}"
              "]}", 0);
    x = r.res;

    if (!ok(r.rc == 0 && r.n == 17, "wrong types: seventeen results")) {
        run_free(&r);
        return;
    }

    ok(strcmp(x[0].error, "messageId is not a string") == 0,
       "messageId a number: messageId is not a string");
    ok(strcmp(x[1].error, "missing messageId") == 0,
       "empty messageId: missing messageId");
    ok(strcmp(x[2].error, "messageId is not a string") == 0,
       "messageId null: messageId is not a string");
    ok(strcmp(x[3].error, "messageId is not a string") == 0,
       "messageId an object: messageId is not a string");
    ok(strcmp(x[4].error, "status is not an object") == 0
       && strcmp(x[5].error, "status is not an object") == 0,
       "status a string or an array: status is not an object");
    ok(strcmp(x[6].error, "unknown status group") == 0,
       "groupName a number, groupId a string: unknown status group");
    ok(x[7].error == NULL && x[7].group == 3
       && str_is(&x[7].status_name, NULL) && str_is(&x[7].status_id, NULL)
       && str_is(&x[7].error_name, NULL) && x[7].error_permanent == -1
       && str_is(&x[7].done_at, NULL) && x[7].done_at_ms == NO_TIME
       && str_is(&x[7].callback_data, NULL) && str_is(&x[7].seen_at, NULL),
       "optional members of wrong types are absent, result accepted");
    ok(strcmp(x[8].error, "neither a delivery nor a seen report") == 0,
       "seenAt a number: neither a delivery nor a seen report");
    ok(strcmp(x[9].error, "delivery report without status") == 0,
       "event DELIVERY without status");
    ok(strcmp(x[10].error, "seen report without seenAt") == 0,
       "event SEEN without seenAt");
    ok(x[11].error == NULL && x[11].kind == NGX_TIKTOK_REPORTS_KIND_SEEN
       && x[11].seen_at_ms == utc_ms(2024, 2, 6, 14, 28, 29, 797, 0),
       "event SEEN with seenAt: seen");
    ok(x[12].error == NULL && x[12].kind == NGX_TIKTOK_REPORTS_KIND_SEEN,
       "event of another type is ignored");
    ok(x[13].error == NULL && x[13].kind == NGX_TIKTOK_REPORTS_KIND_DELIVERY
       && x[13].group == NGX_TIKTOK_REPORTS_GROUP_REJECTED,
       "event DELIVERY with status: delivery");
    ok(x[14].error == NULL && x[14].kind == NGX_TIKTOK_REPORTS_KIND_DELIVERY
       && x[14].group == NGX_TIKTOK_REPORTS_GROUP_PENDING
       && x[14].error_permanent == -1,
       "a status object makes a delivery report, error not an object");
    ok(strcmp(x[15].error, "neither a delivery nor a seen report") == 0
       && x[16].error == NULL && x[16].kind == NGX_TIKTOK_REPORTS_KIND_SEEN,
       "unknown event values are ignored");

    run_free(&r);

    parse(&r, "{\"results\":["
              "{\"messageId\":\"m\",\"status\":{\"groupId\":3,"
              "\"id\":123456789012345678}},"
              "{\"messageId\":\"m\",\"status\":{\"groupId\":3,"
              "\"id\":1234567890123456789}},"
              "{\"messageId\":\"m\",\"status\":{\"groupId\":3,\"id\":-1}},"
              "{\"messageId\":\"m\",\"status\":{\"groupId\":3,\"id\":1.5}},"
              "{\"messageId\":\"m\",\"status\":{\"groupId\":3,\"id\":1e3}},"
              "{\"messageId\":\"m\",\"status\":{\"groupId\":3,\"id\":0}}"
              "]}", 0);
    x = r.res;

    ok(r.rc == 0 && r.n == 6
       && str_is(&x[0].status_id, "123456789012345678")
       && str_is(&x[1].status_id, NULL) && str_is(&x[2].status_id, NULL)
       && str_is(&x[3].status_id, NULL) && str_is(&x[4].status_id, NULL)
       && str_is(&x[5].status_id, "0")
       && x[1].error == NULL && x[2].error == NULL,
       "status.id: up to 18 digits kept, others absent");

    run_free(&r);
}


static void
test_groups(void)
{
    size_t                        i;
    run_t                         r;
    ngx_tiktok_reports_result_t  *x;

    static const int  expect[] = {
        NGX_TIKTOK_REPORTS_GROUP_PENDING,
        NGX_TIKTOK_REPORTS_GROUP_PENDING,
        NGX_TIKTOK_REPORTS_GROUP_UNDELIVERABLE,
        NGX_TIKTOK_REPORTS_GROUP_DELIVERED,
        NGX_TIKTOK_REPORTS_GROUP_EXPIRED,
        NGX_TIKTOK_REPORTS_GROUP_REJECTED,
        NGX_TIKTOK_REPORTS_GROUP_DELIVERED,
        NGX_TIKTOK_REPORTS_GROUP_REJECTED,
        NGX_TIKTOK_REPORTS_GROUP_PENDING,
        NGX_TIKTOK_REPORTS_GROUP_EXPIRED,
        NGX_TIKTOK_REPORTS_GROUP_UNDELIVERABLE,
        NGX_TIKTOK_REPORTS_GROUP_DELIVERED,
        NGX_TIKTOK_REPORTS_GROUP_REJECTED
    };

    parse(&r, "{\"results\":["
              "{\"messageId\":\"m\",\"status\":{\"groupName\":\"ACCEPTED\"}},"
              "{\"messageId\":\"m\",\"status\":{\"groupName\":\"PENDING\"}},"
              "{\"messageId\":\"m\",\"status\":{\"groupName\":"
              "\"UNDELIVERABLE\"}},"
              "{\"messageId\":\"m\",\"status\":{\"groupName\":\"DELIVERED\","
              "\"groupId\":5}},"
              "{\"messageId\":\"m\",\"status\":{\"groupName\":\"EXPIRED\"}},"
              "{\"messageId\":\"m\",\"status\":{\"groupName\":\"REJECTED\"}},"
              "{\"messageId\":\"m\",\"status\":{\"groupName\":\"delivered\"}},"
              "{\"messageId\":\"m\",\"status\":{\"groupName\":\"Rejected\"}},"
              "{\"messageId\":\"m\",\"status\":{\"groupName\":\"aCcEpTeD\"}},"
              "{\"messageId\":\"m\",\"status\":{\"groupName\":\"SOMETHING\","
              "\"groupId\":4}},"
              "{\"messageId\":\"m\",\"status\":{\"groupId\":2}},"
              "{\"messageId\":\"m\",\"status\":{\"groupId\":5,"
              "\"groupName\":\"DELIVERED\"}},"
              "{\"messageId\":\"m\",\"status\":{\"groupName\":null,"
              "\"groupId\":5}},"
              "{\"messageId\":\"m\",\"status\":{\"groupName\":\"OK\"}},"
              "{\"messageId\":\"m\",\"status\":{\"groupId\":0}},"
              "{\"messageId\":\"m\",\"status\":{\"groupId\":6}},"
              "{\"messageId\":\"m\",\"status\":{\"groupId\":3.0}},"
              "{\"messageId\":\"m\",\"status\":{}},"
              "{\"messageId\":\"m\",\"status\":{\"groupName\":\"DELIVERE\"}}"
              "]}", 0);
    x = r.res;

    if (!ok(r.rc == 0 && r.n == 19, "groups: nineteen results")) {
        run_free(&r);
        return;
    }

    for (i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        if (x[i].error != NULL || x[i].group != expect[i]
            || x[i].kind != NGX_TIKTOK_REPORTS_KIND_DELIVERY)
        {
            break;
        }
    }

    ok(i == sizeof(expect) / sizeof(expect[0]),
       "groupName (any case, ACCEPTED as PENDING) then groupId fallback");

    if (i != sizeof(expect) / sizeof(expect[0])) {
        diag("result %zu: group %d error %s", i, x[i].group,
             x[i].error ? x[i].error : "-");
    }

    ok(x[0].group == NGX_TIKTOK_REPORTS_GROUP_PENDING,
       "ACCEPTED is PENDING");

    for (i = 13; i < 19; i++) {
        if (x[i].error == NULL
            || strcmp(x[i].error, "unknown status group") != 0
            || x[i].kind != NGX_TIKTOK_REPORTS_KIND_NONE)
        {
            break;
        }
    }

    ok(i == 19, "unknown groupName and groupId: unknown status group");

    run_free(&r);
}


static void
test_unicode(void)
{
    run_t  r;

    parse(&r, "{\"results\":["
              "{\"messageId\":\"a\\u00e9b\",\"seenAt\":\"s\"},"
              "{\"messageId\":\"\\ud83d\\ude00\",\"seenAt\":\"s\"},"
              "{\"messageId\":\"x\\u0000y\",\"seenAt\":\"s\"},"
              "{\"messageId\":\"\xc3\xa9\xe2\x82\xac\",\"seenAt\":\"s\"},"
              "{\"messageId\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\","
              "\"seenAt\":\"s\"}"
              "]}", 0);

    if (!ok(r.rc == 0 && r.n == 5, "unicode: five results")) {
        run_free(&r);
        return;
    }

    ok(str_isn(&r.res[0].message_id, "a\xc3\xa9" "b", 4),
       "\\u00e9 decoded to UTF-8");
    ok(str_isn(&r.res[1].message_id, "\xf0\x9f\x98\x80", 4),
       "surrogate pair decoded to one 4-byte character");
    ok(str_isn(&r.res[2].message_id, "x\0y", 3)
       && r.res[2].error == NULL,
       "\\u0000 decoded to a NUL byte, length kept");
    ok(str_isn(&r.res[3].message_id, "\xc3\xa9\xe2\x82\xac", 5),
       "raw UTF-8 kept as is");
    ok(str_isn(&r.res[4].message_id, "\"\\/\b\f\n\r\t", 8),
       "short escapes decoded");

    run_free(&r);
}


/* raw must parse back to the same result, and re-serialize to itself */

static int
raw_round_trip(ngx_tiktok_reports_result_t *x)
{
    int     same;
    char   *body;
    size_t  len;
    run_t   r;

    len = x->raw.len + sizeof("{\"results\":[]}") - 1;
    body = malloc(len + 1);
    if (body == NULL) {
        abort();
    }

    memcpy(body, "{\"results\":[", 12);
    memcpy(body + 12, x->raw.data, x->raw.len);
    memcpy(body + 12 + x->raw.len, "]}", 3);

    run_body(&r, body, len, 1, WHOLE, 0, -1, 1);

    same = (r.rc == 0 && r.n == 1 && result_eq(x, &r.res[0]));

    run_free(&r);
    free(body);

    return same;
}


static void
test_raw(void)
{
    run_t  r;

    parse(&r, escapes, 1);

    if (!ok(r.rc == 0 && r.n == 3, "raw: three results")) {
        diag("rc %d \"%s\" n %zu", r.rc, r.error, r.n);
        run_free(&r);
        return;
    }

    ok(str_is(&r.res[0].raw, escapes_raw0),
       "raw: compact, escapes redone, numbers as sent, nesting kept");

    if (!str_is(&r.res[0].raw, escapes_raw0)) {
        diag("got %.*s", (int) r.res[0].raw.len, r.res[0].raw.data);
    }

    ok(str_is(&r.res[1].raw, NULL), "raw: none for a non-object element");
    ok(str_is(&r.res[2].raw, escapes_raw2), "raw: second object result");
    ok(r.res[0].error == NULL && r.res[0].group == 3
       && str_isn(&r.res[0].message_id,
                  "m\"1\\\n\t\x01\b\f\r\x1f\x7f\xc3\xa9/", 15),
       "raw: the escaped messageId is read unescaped");
    ok(raw_round_trip(&r.res[0]) && raw_round_trip(&r.res[2]),
       "raw: parses back to the same result and the same raw");

    run_free(&r);

    parse(&r, escapes, 0);
    ok(r.rc == 0 && r.n == 3 && str_is(&r.res[0].raw, NULL)
       && str_is(&r.res[2].raw, NULL),
       "raw: not built without keep_raw");
    run_free(&r);

    parse(&r, tiktok_dlr, 1);
    ok(r.n == 1 && raw_round_trip(&r.res[0]),
       "raw: the tiktok DLR parses back the same");
    run_free(&r);
}


/*
 * 10 000 nested arrays and objects inside a result: yajl keeps its own
 * stack and the parser only counts depth, so this parses fine (and raw
 * keeps every level); it must not crash either way.
 */

static void
test_deep(void)
{
    int     levels;
    char   *body, *expect, *b, *e;
    size_t  i, len;
    run_t   r, s;

    levels = 10000;

    body = malloc(levels * 16 + 256);
    expect = malloc(levels * 16 + 256);
    if (body == NULL || expect == NULL) {
        abort();
    }

    b = body;
    e = expect;

    b += sprintf(b, "{\"results\":[{\"messageId\":\"deep\",\"x\":");
    e += sprintf(e, "{\"messageId\":\"deep\",\"x\":");

    for (i = 0; i < (size_t) levels; i++) {
        if (i % 2) {
            b += sprintf(b, "{\"messageId\" : ");
            e += sprintf(e, "{\"messageId\":");
        } else {
            *b++ = '[';
            *e++ = '[';
        }
    }

    /* the innermost messageId is a string, still not the result's */
    b += sprintf(b, "\"in\"");
    e += sprintf(e, "\"in\"");

    for (i = levels; i-- > 0; ) {
        if (i % 2) {
            *b++ = '}';
            *e++ = '}';
        } else {
            *b++ = ']';
            *e++ = ']';
        }
    }

    b += sprintf(b, ",\"seenAt\":\"s\"}]}");
    e += sprintf(e, ",\"seenAt\":\"s\"}");

    len = b - body;

    run_body(&r, body, len, 1, WHOLE, 0, -1, 0);

    ok(r.rc == 0 && r.n == 1 && r.res[0].error == NULL
       && str_is(&r.res[0].message_id, "deep")
       && r.res[0].kind == NGX_TIKTOK_REPORTS_KIND_SEEN,
       "10000 levels inside a result: parsed, inner messageIds ignored");
    ok(r.n == 1 && str_isn(&r.res[0].raw, expect, e - expect),
       "10000 levels inside a result: raw keeps every level");

    run_body(&s, body, len, 1, BYTES, 0, -1, 0);
    ok(run_eq(&r, &s), "10000 levels: a byte at a time, the same");
    run_free(&s);
    run_free(&r);

    /* and outside the results, where nothing is read */

    b = body;
    b += sprintf(b, "{\"x\":");

    for (i = 0; i < (size_t) levels; i++) {
        *b++ = '[';
    }

    for (i = 0; i < (size_t) levels; i++) {
        *b++ = ']';
    }

    b += sprintf(b, ",\"results\":[]}");

    run_body(&r, body, b - body, 0, WHOLE, 0, -1, 0);
    ok(r.rc == 0 && r.n == 0, "10000 levels beside the results: parsed");
    run_free(&r);

    /* unclosed: an error, not a crash */

    run_body(&r, body, len / 2, 1, WHOLE, 0, -1, 0);
    ok(r.rc == -1 && strncmp(r.error, "invalid JSON at byte ", 21) == 0,
       "10000 levels, truncated: invalid JSON");
    run_free(&r);

    free(expect);
    free(body);
}


static void
test_many(void)
{
    int     good;
    char   *body, *b, item[256];
    size_t  i, n, len, k, chunk;
    run_t   r, s;
    ngx_tiktok_reports_parser_t  *p;

    n = 2000;

    body = malloc(n * 256 + 64);
    if (body == NULL) {
        abort();
    }

    b = body + sprintf(body, "{\"results\":[");

    for (i = 0; i < n; i++) {
        if (i % 2) {
            sprintf(item, "{\"messageId\":\"m-%zu\",\"seenAt\":"
                    "\"2024-02-06T14:28:29.%03zu+0000\",\"n\":%zu}",
                    i, i % 1000, i);
        } else {
            sprintf(item, "{\"messageId\":\"m-%zu\",\"status\":{\"groupId\":"
                    "%zu,\"id\":%zu},\"doneAt\":\"2024-02-06T14:28:29Z\"}",
                    i, i % 5 + 1, i);
        }

        b += sprintf(b, "%s%s", i ? "," : "", item);
    }

    b += sprintf(b, "]}");
    len = b - body;

    run_body(&r, body, len, 1, WHOLE, 0, -1, 0);

    good = (r.rc == 0 && r.n == n);

    for (i = 0; good && i < n; i++) {
        if (i % 2) {
            sprintf(item, "{\"messageId\":\"m-%zu\",\"seenAt\":"
                    "\"2024-02-06T14:28:29.%03zu+0000\",\"n\":%zu}",
                    i, i % 1000, i);
            good = r.res[i].kind == NGX_TIKTOK_REPORTS_KIND_SEEN
                   && r.res[i].seen_at_ms
                      == utc_ms(2024, 2, 6, 14, 28, 29, i % 1000, 0);
        } else {
            sprintf(item, "{\"messageId\":\"m-%zu\",\"status\":{\"groupId\":"
                    "%zu,\"id\":%zu},\"doneAt\":\"2024-02-06T14:28:29Z\"}",
                    i, i % 5 + 1, i);
            good = r.res[i].kind == NGX_TIKTOK_REPORTS_KIND_DELIVERY
                   && r.res[i].group == (int) (i % 5 + 1);
        }

        good = good && r.res[i].error == NULL && str_is(&r.res[i].raw, item);

        sprintf(item, "m-%zu", i);
        good = good && str_is(&r.res[i].message_id, item);
    }

    ok(good, "2000 results: all in order, every field and raw right");

    /* in 4 KB chunks, as nginx buffers would bring them */

    memset(&s, 0, sizeof(run_t));
    pool_init(&s.pool, 0);

    p = ngx_tiktok_reports_parser_create(pool_alloc, &s.pool, 1);
    s.rc = (p == NULL) ? -1 : 0;

    for (k = 0; s.rc == 0 && k < len; k += chunk) {
        chunk = len - k < 4096 ? len - k : 4096;
        s.rc = ngx_tiktok_reports_parser_feed(p,
                                      (const unsigned char *) body + k, chunk);
    }

    if (s.rc == 0) {
        s.rc = ngx_tiktok_reports_parser_finish(p);
    }

    if (p != NULL) {
        s.res = ngx_tiktok_reports_parser_results(p, &s.n);
        ngx_tiktok_reports_parser_free(p);
    }

    ok(run_eq(&r, &s), "2000 results in 4 KB chunks: the same");

    run_free(&s);
    run_free(&r);
    free(body);
}


static void
test_huge_string(void)
{
    char    *body, *b;
    size_t   i, n, len;
    run_t    r;
    int      good;

    n = 4 * 1024 * 1024;

    body = malloc(n * 2 + 256);
    if (body == NULL) {
        abort();
    }

    b = body + sprintf(body, "{\"results\":[{\"messageId\":\"big\","
                       "\"seenAt\":\"s\",\"callbackData\":\"");

    for (i = 0; i < n; i++) {
        if (i % 1000 == 999) {
            *b++ = '\\';
            *b++ = 'n';
        } else {
            *b++ = 'a' + i % 26;
        }
    }

    b += sprintf(b, "\"}]}");
    len = b - body;

    run_body(&r, body, len, 1, SPLIT, len / 3, -1, 0);

    good = (r.rc == 0 && r.n == 1 && r.res[0].callback_data.len == n
            && r.res[0].callback_data.data[n] == '\0');

    for (i = 0; good && i < n; i++) {
        good = r.res[0].callback_data.data[i]
               == (i % 1000 == 999 ? '\n' : 'a' + i % 26);
    }

    ok(good, "4 MB callbackData with escapes: kept whole");
    ok(r.n == 1 && r.res[0].raw.len == len - 14
       && memcmp(r.res[0].raw.data, body + 12, len - 14) == 0,
       "4 MB callbackData: raw re-escaped the same");

    run_free(&r);
    free(body);
}


/* every allocation failure is reported as such, never a crash */

static void
test_out_of_memory(void)
{
    int    good;
    long   limit;
    run_t  r, whole;

    parse(&whole, escapes, 1);

    good = 1;

    for (limit = 0; limit < 1000; limit++) {
        run_body(&r, escapes, sizeof(escapes) - 1, 1, BYTES, 0, limit, 1);

        if (r.rc == 0) {
            good = good && run_eq(&whole, &r);
            run_free(&r);
            break;
        }

        if (!(strcmp(r.error, "out of memory") == 0
              || (!r.created && strcmp(r.error, "(create failed)") == 0)))
        {
            diag("limit %ld: \"%s\"", limit, r.error);
            good = 0;
        }

        run_free(&r);
    }

    ok(good && limit > 5 && limit < 1000,
       "allocation failures: \"out of memory\", then the same results");

    run_free(&whole);
}


static void
test_parse_time(void)
{
    int64_t  base;

    base = utc_ms(2023, 9, 26, 10, 52, 15, 457, 0);

    ok(ptime("2023-09-26T10:52:15.457+0000") == base, "time: +0000");
    ok(ptime("2023-09-26T10:52:15.457+00:00") == base, "time: +00:00");
    ok(ptime("2023-09-26T10:52:15.457Z") == base, "time: Z");
    ok(ptime("2023-09-26T10:52:15.457") == base, "time: no offset is UTC");
    ok(ptime("2023-09-26T10:52:15Z") == base - 457, "time: no fraction");
    ok(ptime("2023-09-26T10:52:15") == base - 457,
       "time: no fraction, no offset");
    ok(ptime("2023-09-26T10:52:15.457-0000") == base, "time: -0000");
    ok(ptime("2019-04-09T16:01:56.494-0300")
       == ptime("2019-04-09T19:01:56.494+0000")
       && ptime("2019-04-09T16:01:56.494-03:00")
          == utc_ms(2019, 4, 9, 19, 1, 56, 494, 0),
       "time: -0300 is three hours later in UTC");
    ok(ptime("2023-09-26T16:22:15.457+05:30") == base
       && ptime("2023-09-26T16:22:15.457+0530") == base,
       "time: +05:30 and +0530");
    ok(ptime("2023-09-26T00:00:00+2359")
       == utc_ms(2023, 9, 25, 0, 1, 0, 0, 0),
       "time: +2359 crosses the day");
    ok(ptime("2023-09-26T10:52:15.4Z") == base - 57
       && ptime("2023-09-26T10:52:15.45Z") == base - 7
       && ptime("2023-09-26T10:52:15.4579Z") == base
       && ptime("2023-09-26T10:52:15.457999999Z") == base
       && ptime("2023-09-26T10:52:15.000000001Z") == base - 457,
       "time: 1 to 9 fraction digits, milliseconds truncated");
    ok(ptime("1970-01-01T00:00:00Z") == 0
       && ptime("1970-01-01T00:00:00.001Z") == 1
       && ptime("1969-12-31T23:59:59.999Z") == -1
       && ptime("1970-01-01T01:00:00+0100") == 0,
       "time: the epoch and around it");
    ok(ptime("2000-02-29T00:00:00Z") == utc_ms(2000, 2, 29, 0, 0, 0, 0, 0)
       && ptime("2024-02-29T12:00:00Z") == utc_ms(2024, 2, 29, 12, 0, 0, 0, 0)
       && ptime("2400-02-29T00:00:00Z") == utc_ms(2400, 2, 29, 0, 0, 0, 0, 0),
       "time: leap days");
    ok(ptime("2023-12-31T23:59:60Z") == utc_ms(2024, 1, 1, 0, 0, 0, 0, 0),
       "time: a leap second is the next second");
    ok(ptime("0000-01-01T00:00:00Z") == -62167219200000LL
       && ptime("9999-12-31T23:59:59.999Z") == 253402300799999LL,
       "time: years 0000 and 9999");
    ok(ngx_tiktok_reports_parse_time(
           (const unsigned char *) "2023-09-26T10:52:15.457+0000xyz", 28)
       == base,
       "time: only len bytes are read");

    ok(ptime("") == NO_TIME
       && ngx_tiktok_reports_parse_time(NULL, 0) == NO_TIME
       && ptime("2023-09-26") == NO_TIME
       && ptime("2023-09-26T10:52") == NO_TIME
       && ptime("2023-09-26 10:52:15Z") == NO_TIME
       && ptime("2023-09-26t10:52:15Z") == NO_TIME
       && ptime("2023-09-26T10:52:15z") == NO_TIME
       && ptime("2023/09/26T10:52:15Z") == NO_TIME
       && ptime("2O23-09-26T10:52:15Z") == NO_TIME
       && ptime("+023-09-26T10:52:15Z") == NO_TIME
       && ptime("2023-9-26T10:52:15Z") == NO_TIME
       && ptime(" 2023-09-26T10:52:15Z") == NO_TIME
       && ptime("2023-09-26T10:52:15Z ") == NO_TIME
       && ptime("2023-09-26T10:52:15ZZ") == NO_TIME,
       "time: malformed layouts are refused");
    ok(ptime("2023-00-26T10:52:15Z") == NO_TIME
       && ptime("2023-13-26T10:52:15Z") == NO_TIME
       && ptime("2023-09-00T10:52:15Z") == NO_TIME
       && ptime("2023-09-32T10:52:15Z") == NO_TIME
       && ptime("2023-09-31T10:52:15Z") == NO_TIME
       && ptime("2023-02-29T10:52:15Z") == NO_TIME
       && ptime("2100-02-29T10:52:15Z") == NO_TIME
       && ptime("2023-09-26T24:00:00Z") == NO_TIME
       && ptime("2023-09-26T10:60:15Z") == NO_TIME
       && ptime("2023-09-26T10:52:61Z") == NO_TIME,
       "time: out-of-range fields are refused");
    ok(ptime("2023-09-26T10:52:15.Z") == NO_TIME
       && ptime("2023-09-26T10:52:15.") == NO_TIME
       && ptime("2023-09-26T10:52:15.1234567890Z") == NO_TIME
       && ptime("2023-09-26T10:52:15.12a") == NO_TIME
       && ptime("2023-09-26T10:52:15,457Z") == NO_TIME,
       "time: bad fractions are refused");
    ok(ptime("2023-09-26T10:52:15+00") == NO_TIME
       && ptime("2023-09-26T10:52:15+000") == NO_TIME
       && ptime("2023-09-26T10:52:15+00:0") == NO_TIME
       && ptime("2023-09-26T10:52:15+00000") == NO_TIME
       && ptime("2023-09-26T10:52:15+2400") == NO_TIME
       && ptime("2023-09-26T10:52:15+0060") == NO_TIME
       && ptime("2023-09-26T10:52:15+5:30") == NO_TIME
       && ptime("2023-09-26T10:52:15+05-30") == NO_TIME
       && ptime("2023-09-26T10:52:15 +0000") == NO_TIME
       && ptime("2023-09-26T10:52:15+0000Z") == NO_TIME
       && ptime("2023-09-26T10:52:15Z+0000") == NO_TIME
       && ptime("2023-09-26T10:52:15UTC") == NO_TIME,
       "time: bad offsets are refused");

    ok(ngx_tiktok_reports_parse_time(
           (const unsigned char *) "2023-09-26T10:52:15\0Z", 21) == NO_TIME,
       "time: a NUL inside is refused");
}


static void
test_splits(void)
{
    expect_split_invariant(tiktok_dlr, "tiktok DLR");
    expect_split_invariant(tiktok_seen, "tiktok seen");
    expect_split_invariant(messages_dlr, "messages API DLR");
    expect_split_invariant(messages_seen, "messages API seen");
    expect_split_invariant(batch, "batch");
    expect_split_invariant(escapes, "escapes and nesting");
    expect_split_invariant("{\"results\":[{\"messageId\":\"\\ud83d\\ude00"
                           "\\u00e9\\u0000\",\"seenAt\":\"s\"}],"
                           "\"results\":[{\"messageId\":\"2\","
                           "\"status\":{\"groupId\":-1.5e-3,"
                           "\"groupName\":\"delivered\"}}]}",
                           "unicode escapes and numbers");
}


/* a body of n results "0", or of n seen reports */

static char *
results_body(size_t n, int objects, size_t *len)
{
    char    *body, *b;
    size_t   i;

    body = malloc(n * 64 + 64);
    if (body == NULL) {
        abort();
    }

    b = body + sprintf(body, "{\"results\":[");

    for (i = 0; i < n; i++) {
        if (objects) {
            b += sprintf(b, "%s{\"messageId\":\"m-%zu\",\"seenAt\":\"s\"}",
                         i ? "," : "", i);

        } else {
            b += sprintf(b, "%s0", i ? "," : "");
        }
    }

    b += sprintf(b, "]}");
    *len = b - body;

    return body;
}


static void
test_max_results(void)
{
    int                           same;
    char                         *body;
    size_t                        len, k, n;
    run_t                         a, b;
    pool_t                        pool;
    ngx_tiktok_reports_parser_t  *p;

    run_max = 3;

    body = results_body(3, 1, &len);
    run_body(&a, body, len, 1, WHOLE, 0, -1, 1);
    ok(a.rc == 0 && a.n == 3, "max 3: three results pass");
    run_free(&a);
    free(body);

    body = results_body(4, 1, &len);
    run_body(&a, body, len, 0, WHOLE, 0, -1, 1);

    if (!ok(a.rc == NGX_TIKTOK_REPORTS_PARSER_TOO_MANY
            && strcmp(a.error, "more than 3 results") == 0 && a.n == 0,
            "max 3: four results are refused as too many"))
    {
        diag("got rc %d \"%s\" n %zu", a.rc, a.error, a.n);
    }

    same = 1;

    for (k = 0; k <= len; k++) {
        run_body(&b, body, len, 1, SPLIT, k, -1, 1);
        same = same && run_eq(&a, &b);
        run_free(&b);
    }

    run_body(&b, body, len, 1, BYTES, 0, -1, 1);
    same = same && run_eq(&a, &b);
    run_free(&b);

    ok(same, "max 3: the same refusal however the body is split");
    run_free(&a);
    free(body);

    /* refused when the fourth starts: what follows is never read */

    parse(&a, "{\"results\":[0,0,0,0,x", 0);
    ok(a.rc == NGX_TIKTOK_REPORTS_PARSER_TOO_MANY,
       "max 3: invalid JSON after the limit: too many");
    run_free(&a);

    parse(&a, "{\"results\":[0,0,0,{", 0);
    ok(a.rc == NGX_TIKTOK_REPORTS_PARSER_TOO_MANY,
       "max 3: a fourth result only begun: too many");
    run_free(&a);

    parse(&a, "{\"results\":[0,0,x", 0);
    ok(a.rc == -1 && strncmp(a.error, "invalid JSON", 12) == 0,
       "max 3: invalid JSON before the limit: invalid");
    run_free(&a);

    parse(&a, "{\"results\":[0,0,0],\"results\":[0,0,0],"
              "\"x\":[0,0,0,0,0,{\"y\":[0,0,0,0]}]}", 0);
    ok(a.rc == 0 && a.n == 3,
       "max 3: each results array on its own, other arrays not counted");
    run_free(&a);

    /* after the refusal every call says the same */

    pool_init(&pool, 1);
    p = ngx_tiktok_reports_parser_create(pool_alloc, &pool, 0);
    ngx_tiktok_reports_parser_set_max_results(p, 1);

    ok(p != NULL
       && ngx_tiktok_reports_parser_feed(p,
                                   (const unsigned char *) "{\"results\":[0,",
                                   14) == 0
       && ngx_tiktok_reports_parser_feed(p, (const unsigned char *) "0]}", 3)
          == NGX_TIKTOK_REPORTS_PARSER_TOO_MANY
       && ngx_tiktok_reports_parser_feed(p, (const unsigned char *) "x", 1)
          == NGX_TIKTOK_REPORTS_PARSER_TOO_MANY
       && ngx_tiktok_reports_parser_finish(p)
          == NGX_TIKTOK_REPORTS_PARSER_TOO_MANY
       && ngx_tiktok_reports_parser_results(p, &n) == NULL && n == 0,
       "max 1: refused at the second result, and from then on");

    ngx_tiktok_reports_parser_free(p);
    pool_free(&pool);

    /* half a million results cost what the limit allows, not more */

    run_max = 1000;

    body = results_body(500000, 0, &len);
    run_body(&a, body, len, 0, WHOLE, 0, -1, 1);
    ok(a.rc == NGX_TIKTOK_REPORTS_PARSER_TOO_MANY && a.pool.count <= 12,
       "max 1000: 500 000 results refused after %ld allocations",
       a.pool.count);
    run_free(&a);

    run_max = 0;

    run_body(&a, body, len, 0, WHOLE, 0, -1, 0);
    ok(a.rc == 0 && a.n == 500000, "no limit: 500 000 results");
    run_free(&a);
    free(body);
}


int
main(void)
{
    test_examples();
    test_splits();
    test_batch();
    test_body_errors();
    test_body_error_details();
    test_duplicates();
    test_nesting_scope();
    test_types();
    test_groups();
    test_unicode();
    test_raw();
    test_deep();
    test_many();
    test_max_results();
    test_huge_string();
    test_out_of_memory();
    test_parse_time();

    printf("1..%d\n", tests);

    if (failures) {
        diag("%d of %d failed", failures, tests);
        return 1;
    }

    return 0;
}
