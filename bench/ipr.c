/*
 * Instructions per report for what the module does in the worker before
 * Redis: HMAC-SHA256 over the raw body and the streaming parse.  Run under
 * callgrind by bench/ipr; no I/O, no nginx.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_tiktok_reports_parser.h"
#include "ngx_tiktok_reports_signature.h"


static char  arena[1 << 22];
static size_t  used;


static void *
bump(void *ctx, size_t size)
{
    void  *p;

    size = (size + 15) & ~(size_t) 15;
    if (used + size > sizeof(arena)) {
        return NULL;
    }
    p = arena + used;
    used += size;
    return p;
}


int
main(int argc, char **argv)
{
    int                             i, j, reports, rounds;
    char                            err[256], *body, *p;
    size_t                          n;
    ngx_tiktok_reports_sig_t       *s;
    ngx_tiktok_reports_parser_t    *parser;
    ngx_tiktok_reports_sig_conf_t  *sc;

    reports = argc > 1 ? atoi(argv[1]) : 100;
    rounds = argc > 2 ? atoi(argv[2]) : 100;

    body = malloc(reports * 700 + 64);
    p = body + sprintf(body, "{\"results\":[");
    for (j = 0; j < reports; j++) {
        p += sprintf(p, "%s{\"bulkId\":\"a28dd97c-2222-4fcf-99f1-0b557ed381da\","
            "\"price\":{\"pricePerMessage\":0.01,\"currency\":\"EUR\"},"
            "\"status\":{\"groupId\":3,\"groupName\":\"DELIVERED\",\"id\":5,"
            "\"name\":\"DELIVERED_TO_HANDSET\",\"description\":\"Message "
            "delivered to handset\"},\"error\":{\"groupId\":0,\"groupName\":"
            "\"OK\",\"id\":0,\"name\":\"NO_ERROR\",\"description\":\"No Error\","
            "\"permanent\":false},\"messageId\":\"a28dd97c-1ffb-4fcf-99f1-%012d\","
            "\"to\":\"u5NkbnslAgxpOelvH01Y+rs7Uw=\",\"sender\":"
            "\"-000pcMJDSDHK-UvK012b10KKXmCvWmVF8o\",\"sentAt\":"
            "\"2023-09-26T10:52:15.457+0000\",\"doneAt\":"
            "\"2023-09-26T10:52:15.799+0000\",\"messageCount\":1,\"platform\":"
            "{\"entityId\":\"promotional-traffic-entity\",\"applicationId\":"
            "\"marketing-automation-application\"}}", j ? "," : "", j);
    }
    p += sprintf(p, "]}");
    n = p - body;

    sc = ngx_tiktok_reports_sig_conf_create(NGX_TIKTOK_REPORTS_SIG_HMAC,
                                            "sha256", err);
    if (sc == NULL
        || ngx_tiktok_reports_sig_conf_add_secret(sc,
               (const unsigned char *) "bench-secret", 12, err) != 0)
    {
        fprintf(stderr, "%s\n", err);
        return 1;
    }

    for (i = 0; i < rounds; i++) {
        used = 0;

        s = ngx_tiktok_reports_sig_begin(sc, NULL, 0);
        ngx_tiktok_reports_sig_update(s, (unsigned char *) body, n);
        (void) ngx_tiktok_reports_sig_verify(s, (unsigned char *) "00", 2);
        ngx_tiktok_reports_sig_free(s);

        parser = ngx_tiktok_reports_parser_create(bump, NULL, 0);
        if (ngx_tiktok_reports_parser_feed(parser, (unsigned char *) body, n)
            || ngx_tiktok_reports_parser_finish(parser))
        {
            fprintf(stderr, "%s\n", ngx_tiktok_reports_parser_error(parser));
            return 1;
        }
        (void) ngx_tiktok_reports_parser_results(parser, &n);
        n = p - body;
        ngx_tiktok_reports_parser_free(parser);
    }

    printf("%d reports x %d rounds, body %zu bytes\n", reports, rounds, n);
    return 0;
}
