
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * Answers as JSON, shared by the locations: the status, its body, and every
 * string escaped, so that what a request sent can never break the JSON.
 */


#include "ngx_tiktok_reports_module.h"


ngx_int_t
ngx_tiktok_reports_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len)
{
    static ngx_str_t  type = ngx_string("application/json");

    return ngx_tiktok_reports_send(r, status, &type, body, len);
}


ngx_int_t
ngx_tiktok_reports_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *body, size_t len)
{
    ngx_int_t    rc;
    ngx_buf_t   *b;
    ngx_chain_t  out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;

    if (len == 0 || r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_tiktok_reports_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *error)
{
    size_t            len;
    u_char           *body, *p;
    ngx_table_elt_t  *h;

    len = ngx_strlen(error);

    body = ngx_pnalloc(r->pool, sizeof("{\"error\":}") - 1
                       + ngx_tiktok_reports_json_string_len((u_char *) error,
                                                            len));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"error\":", 9);
    p = ngx_tiktok_reports_json_string(p, (u_char *) error, len);
    *p++ = '}';

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        ngx_str_set(&h->value, "1");
    }

    return ngx_tiktok_reports_send_json(r, status, body, p - body);
}


ngx_int_t
ngx_tiktok_reports_send_not_allowed(ngx_http_request_t *r, char *allow)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    h->value.data = (u_char *) allow;
    h->value.len = ngx_strlen(allow);

    return ngx_tiktok_reports_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                         "method not allowed");
}


/*
 * JSON strings that are always valid: quotes, backslashes and control
 * characters escaped, valid UTF-8 kept as it is, and any byte that is not
 * part of a valid UTF-8 sequence (Redis values are bytes) replaced with
 * U+FFFD, so that no answer is ever unparsable.
 */

size_t
ngx_tiktok_reports_json_string_len(u_char *s, size_t len)
{
    u_char  *last;
    size_t   size, n;

    size = 2;
    last = s + len;

    while (s < last) {
        if (*s == '"' || *s == '\\' || *s == '\n' || *s == '\r'
            || *s == '\t')
        {
            size += 2;
            s++;
            continue;
        }

        if (*s < 0x20) {
            size += 6;
            s++;
            continue;
        }

        if (*s < 0x80) {
            size++;
            s++;
            continue;
        }

        n = ngx_tiktok_reports_utf8_seq(s, last);

        if (n == 0) {
            size += 6;
            s++;
            continue;
        }

        size += n;
        s += n;
    }

    return size;
}


u_char *
ngx_tiktok_reports_json_string(u_char *p, u_char *s, size_t len)
{
    u_char         *last;
    size_t          n;
    static u_char   hex[] = "0123456789abcdef";

    last = s + len;

    *p++ = '"';

    while (s < last) {

        switch (*s) {

        case '"':
        case '\\':
            *p++ = '\\';
            *p++ = *s++;
            continue;

        case '\n':
            *p++ = '\\'; *p++ = 'n'; s++;
            continue;

        case '\r':
            *p++ = '\\'; *p++ = 'r'; s++;
            continue;

        case '\t':
            *p++ = '\\'; *p++ = 't'; s++;
            continue;
        }

        if (*s < 0x20) {
            p = ngx_cpymem(p, "\\u00", 4);
            *p++ = hex[*s >> 4];
            *p++ = hex[*s & 0xf];
            s++;
            continue;
        }

        if (*s < 0x80) {
            *p++ = *s++;
            continue;
        }

        n = ngx_tiktok_reports_utf8_seq(s, last);

        if (n == 0) {
            p = ngx_cpymem(p, "\\ufffd", 6);
            s++;
            continue;
        }

        while (n--) {
            *p++ = *s++;
        }
    }

    *p++ = '"';

    return p;
}


/*
 * An instant (ms since the epoch, 0 up to the year 9999) as Infobip writes
 * it: "2023-09-26T10:52:15.799+0000", 28 bytes; NULL when out of range.
 */

u_char *
ngx_tiktok_reports_time_text(u_char *p, int64_t ms)
{
    ngx_tm_t  tm;

    if (ms < 0 || ms > 253402300799999LL) {
        return NULL;
    }

    ngx_gmtime((time_t) (ms / 1000), &tm);

    return ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02d.%03d+0000",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       (int) (ms % 1000));
}


/*
 * The start of an event's line in the older timeline form, which is also
 * what identifies it there: {"kind":"delivery","id":<id>,"at":<at>, or
 * {"kind":"seen","at":<at>, (data NULL: null).  Written when storing and
 * searched for when rendering, so the two must be the same bytes.
 */

u_char *
ngx_tiktok_reports_event_start(u_char *p, ngx_uint_t delivery, u_char *id,
    size_t id_len, u_char *at, size_t at_len)
{
    if (delivery) {
        p = ngx_cpymem(p, "{\"kind\":\"delivery\",\"id\":",
                       sizeof("{\"kind\":\"delivery\",\"id\":") - 1);
        p = id ? ngx_cpymem(p, id, id_len) : ngx_cpymem(p, "null", 4);
        p = ngx_cpymem(p, ",\"at\":", 6);

    } else {
        p = ngx_cpymem(p, "{\"kind\":\"seen\",\"at\":",
                       sizeof("{\"kind\":\"seen\",\"at\":") - 1);
    }

    p = at ? ngx_tiktok_reports_json_string(p, at, at_len)
           : ngx_cpymem(p, "null", 4);
    *p++ = ',';

    return p;
}
