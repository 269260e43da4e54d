
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * The webhook: read the whole body, check its signature over the raw bytes,
 * parse it, send one transition per result to Redis, and answer only when
 * Redis has confirmed every one of them.
 */


#include "ngx_tiktok_reports_module.h"
#include "ngx_tiktok_reports_redis.h"


/*
 * Bodies from this size on read nginx's clock again before the Redis
 * timeout starts: about 100 reports, a few hundred microseconds of work.
 */
#ifndef NGX_TIKTOK_REPORTS_CLOCK_BODY
#define NGX_TIKTOK_REPORTS_CLOCK_BODY  65536
#endif


/* rejected results named in the one log line of a body */
#define NGX_TIKTOK_REPORTS_REJECTED_SHOWN  3


/* the answer's counts; in the request pool, touched only while it lives */

typedef struct {
    ngx_tiktok_reports_result_t   *results;
    size_t                         nresults;
    ngx_uint_t                     accepted;
    ngx_uint_t                     duplicates;
} ngx_tiktok_reports_batch_t;


static void ngx_tiktok_reports_webhook_body(ngx_http_request_t *r);
static ngx_int_t ngx_tiktok_reports_webhook_json(ngx_http_request_t *r);
static off_t ngx_tiktok_reports_webhook_body_size(ngx_http_request_t *r);
static ngx_int_t ngx_tiktok_reports_webhook_verify(ngx_http_request_t *r,
    ngx_tiktok_reports_loc_conf_t *tlcf, const char **error);
static ngx_int_t ngx_tiktok_reports_webhook_sig_chunk(void *data, u_char *p,
    size_t len);
static ngx_int_t ngx_tiktok_reports_webhook_parse_chunk(void *data, u_char *p,
    size_t len);
static ngx_int_t ngx_tiktok_reports_webhook_parsed(int rc);
static ngx_int_t ngx_tiktok_reports_webhook_too_many(ngx_http_request_t *r,
    ngx_tiktok_reports_loc_conf_t *tlcf);
static ngx_table_elt_t *ngx_tiktok_reports_webhook_header(
    ngx_http_request_t *r, u_char *name, size_t len);
static void *ngx_tiktok_reports_webhook_alloc(void *ctx, size_t size);
static ngx_int_t ngx_tiktok_reports_webhook_store(ngx_http_request_t *r,
    ngx_tiktok_reports_loc_conf_t *tlcf, ngx_tiktok_reports_result_t *res,
    size_t n);
static void ngx_tiktok_reports_webhook_rejected(
    ngx_tiktok_reports_result_t *res, size_t i);
static void ngx_tiktok_reports_webhook_log_rejected(ngx_http_request_t *r,
    ngx_tiktok_reports_batch_t *batch);
static void ngx_tiktok_reports_webhook_done(void *data, ngx_uint_t index,
    ngx_int_t rc, redisReply *reply);
static ngx_int_t ngx_tiktok_reports_webhook_answer(ngx_http_request_t *r,
    ngx_tiktok_reports_wait_t *w);


ngx_int_t
ngx_tiktok_reports_webhook_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (r->method != NGX_HTTP_POST) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_tiktok_reports_send_not_allowed(r, "POST");
    }

    if (ngx_tiktok_reports_webhook_json(r) != NGX_OK) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_tiktok_reports_send_error(r,
                                 NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                 "Content-Type must be application/json");
    }

    rc = ngx_http_read_client_request_body(r,
                                           ngx_tiktok_reports_webhook_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* no Content-Type is taken as JSON; any other than JSON is refused */

static ngx_int_t
ngx_tiktok_reports_webhook_json(ngx_http_request_t *r)
{
    u_char           *p, *last;
    size_t            len;
    ngx_table_elt_t  *ct;

    ct = r->headers_in.content_type;

    if (ct == NULL) {
        return NGX_OK;
    }

    p = ct->value.data;
    last = p + ct->value.len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    len = 0;
    while (p + len < last && p[len] != ';' && p[len] != ' '
           && p[len] != '\t')
    {
        len++;
    }

    if (len == sizeof("application/json") - 1
        && ngx_strncasecmp(p, (u_char *) "application/json", len) == 0)
    {
        return NGX_OK;
    }

    /* application/vnd.something+json */
    if (len > sizeof("application/+json") - 1
        && ngx_strncasecmp(p, (u_char *) "application/", 12) == 0
        && ngx_strncasecmp(p + len - 5, (u_char *) "+json", 5) == 0)
    {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static void
ngx_tiktok_reports_webhook_body(ngx_http_request_t *r)
{
    size_t                          n;
    u_char                          text[256];
    ngx_int_t                       rc;
    const char                     *error;
    ngx_tiktok_reports_parser_t    *parser;
    ngx_tiktok_reports_result_t    *results;
    ngx_tiktok_reports_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_tiktok_reports_module);

    if (tlcf->sig_mode != NGX_TIKTOK_REPORTS_SIG_OFF) {
        error = "invalid signature";

        rc = ngx_tiktok_reports_webhook_verify(r, tlcf, &error);

        if (rc == NGX_ERROR) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        if (rc != NGX_OK) {
            ngx_tiktok_reports_metrics_signature_failure();

            ngx_log_error(tlcf->log_level, r->connection->log, 0,
                          "tiktok_reports: webhook refused: %s", error);

            ngx_http_finalize_request(r,
                  ngx_tiktok_reports_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                                error));
            return;
        }
    }

    /* parsed only once authenticated: nobody else makes us parse */

    parser = ngx_tiktok_reports_parser_create(ngx_tiktok_reports_webhook_alloc,
                                              r->pool,
                                              tlcf->keep_reports == 1);
    if (parser == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* the parser stops at the first result past the limit (413) */
    ngx_tiktok_reports_parser_set_max_results(parser,
                                              (size_t) tlcf->max_results);

    rc = ngx_tiktok_reports_body_each(r,
                                        ngx_tiktok_reports_webhook_parse_chunk,
                                        parser);

    if (rc == NGX_OK) {
        rc = ngx_tiktok_reports_webhook_parsed(
                                   ngx_tiktok_reports_parser_finish(parser));
    }

    if (rc != NGX_OK) {
        if (rc == NGX_DECLINED || rc == NGX_ABORT) {
            error = ngx_tiktok_reports_parser_error(parser);

            n = ngx_tiktok_reports_log_escape(text, sizeof(text),
                                              (u_char *) error,
                                              ngx_strlen(error));

            ngx_log_error(tlcf->log_level, r->connection->log, 0,
                          "tiktok_reports: webhook body refused: %*s",
                          n, text);

            if (rc == NGX_ABORT) {
                rc = ngx_tiktok_reports_webhook_too_many(r, tlcf);

            } else {
                rc = ngx_tiktok_reports_send_error(r, NGX_HTTP_BAD_REQUEST,
                                                   error);
            }

        } else {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_tiktok_reports_parser_free(parser);
        ngx_http_finalize_request(r, rc);
        return;
    }

    results = ngx_tiktok_reports_parser_results(parser, &n);
    ngx_tiktok_reports_parser_free(parser);

    /*
     * Timers count from nginx's cached clock, read when this loop iteration
     * began.  Verifying and parsing a big body can take long enough that
     * the Redis timeout would start in the past, so the clock is read again
     * then; a small body is not worth the microsecond.
     */
    if (ngx_tiktok_reports_webhook_body_size(r)
        >= NGX_TIKTOK_REPORTS_CLOCK_BODY)
    {
        ngx_time_update();
    }

    rc = ngx_tiktok_reports_webhook_store(r, tlcf, results, n);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static off_t
ngx_tiktok_reports_webhook_body_size(ngx_http_request_t *r)
{
    off_t         size;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    size = 0;

    for (cl = r->request_body ? r->request_body->bufs : NULL;
         cl;
         cl = cl->next)
    {
        b = cl->buf;
        size += ngx_buf_in_memory(b) ? b->last - b->pos
                                     : b->file_last - b->file_pos;
    }

    return size;
}


static ngx_int_t
ngx_tiktok_reports_webhook_verify(ngx_http_request_t *r,
    ngx_tiktok_reports_loc_conf_t *tlcf, const char **error)
{
    u_char                    *prefix, *p;
    size_t                     prefix_len;
    time_t                     ts;
    ngx_int_t                  rc;
    ngx_table_elt_t           *sig_h, *id_h, *ts_h;
    ngx_tiktok_reports_sig_t  *sig;

    prefix = NULL;
    prefix_len = 0;

    if (tlcf->sig_mode == NGX_TIKTOK_REPORTS_SIG_STANDARD) {
        id_h = ngx_tiktok_reports_webhook_header(r, (u_char *) "webhook-id",
                                                 sizeof("webhook-id") - 1);
        ts_h = ngx_tiktok_reports_webhook_header(r,
                                            (u_char *) "webhook-timestamp",
                                            sizeof("webhook-timestamp") - 1);
        sig_h = ngx_tiktok_reports_webhook_header(r,
                                            (u_char *) "webhook-signature",
                                            sizeof("webhook-signature") - 1);

        if (id_h == NULL || ts_h == NULL || sig_h == NULL
            || id_h->value.len == 0
            || ngx_strlchr(id_h->value.data,
                           id_h->value.data + id_h->value.len, '.'))
        {
            return NGX_DECLINED;
        }

        ts = ngx_atotm(ts_h->value.data, ts_h->value.len);

        if (ts == NGX_ERROR
            || ts < ngx_time() - tlcf->tolerance
            || ts > ngx_time() + tlcf->tolerance)
        {
            *error = "timestamp outside tolerance";
            return NGX_DECLINED;
        }

        prefix_len = id_h->value.len + ts_h->value.len + 2;

        prefix = ngx_pnalloc(r->pool, prefix_len);
        if (prefix == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(prefix, id_h->value.data, id_h->value.len);
        *p++ = '.';
        p = ngx_cpymem(p, ts_h->value.data, ts_h->value.len);
        *p++ = '.';

    } else {
        sig_h = ngx_tiktok_reports_webhook_header(r, tlcf->sig_header.data,
                                                  tlcf->sig_header.len);
        if (sig_h == NULL) {
            return NGX_DECLINED;
        }
    }

    sig = ngx_tiktok_reports_sig_begin(tlcf->sig, prefix, prefix_len);
    if (sig == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_tiktok_reports_body_each(r,
                                          ngx_tiktok_reports_webhook_sig_chunk,
                                          sig);

    if (rc == NGX_OK) {
        rc = ngx_tiktok_reports_sig_verify(sig, sig_h->value.data,
                                           sig_h->value.len)
             ? NGX_OK : NGX_DECLINED;
    }

    ngx_tiktok_reports_sig_free(sig);

    return rc;
}


static ngx_int_t
ngx_tiktok_reports_webhook_sig_chunk(void *data, u_char *p, size_t len)
{
    return ngx_tiktok_reports_sig_update(data, p, len) == 0 ? NGX_OK
                                                             : NGX_ERROR;
}


static ngx_int_t
ngx_tiktok_reports_webhook_parse_chunk(void *data, u_char *p, size_t len)
{
    return ngx_tiktok_reports_webhook_parsed(
                                ngx_tiktok_reports_parser_feed(data, p, len));
}


/* the parser's answer: NGX_OK, NGX_DECLINED (400) or NGX_ABORT (413) */

static ngx_int_t
ngx_tiktok_reports_webhook_parsed(int rc)
{
    if (rc == 0) {
        return NGX_OK;
    }

    if (rc == NGX_TIKTOK_REPORTS_PARSER_NO_MEMORY) {
        return NGX_ERROR;
    }

    return rc == NGX_TIKTOK_REPORTS_PARSER_TOO_MANY ? NGX_ABORT
                                                    : NGX_DECLINED;
}


static ngx_int_t
ngx_tiktok_reports_webhook_too_many(ngx_http_request_t *r,
    ngx_tiktok_reports_loc_conf_t *tlcf)
{
    u_char  *body, *p;

    body = ngx_pnalloc(r->pool,
                       sizeof("{\"error\":\"too many results\",\"max\":}") - 1
                       + NGX_INT_T_LEN);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "{\"error\":\"too many results\",\"max\":%i}",
                    tlcf->max_results);

    return ngx_tiktok_reports_send_json(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        body, p - body);
}


static ngx_table_elt_t *
ngx_tiktok_reports_webhook_header(ngx_http_request_t *r, u_char *name,
    size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, name, len) == 0)
        {
            return &h[i];
        }
    }
}


static void *
ngx_tiktok_reports_webhook_alloc(void *ctx, size_t size)
{
    return ngx_palloc(ctx, size);
}


static ngx_int_t
ngx_tiktok_reports_webhook_store(ngx_http_request_t *r,
    ngx_tiktok_reports_loc_conf_t *tlcf, ngx_tiktok_reports_result_t *res,
    size_t n)
{
    size_t                       i, sent;
    int64_t                      now;
    ngx_int_t                    rc;
    ngx_time_t                  *tp;
    ngx_tiktok_reports_ctx_t    *ctx;
    ngx_tiktok_reports_wait_t   *w;
    ngx_tiktok_reports_batch_t  *batch;

    batch = ngx_pcalloc(r->pool, sizeof(ngx_tiktok_reports_batch_t));
    if (batch == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_tiktok_reports_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    batch->results = res;
    batch->nresults = n;

    w = ngx_tiktok_reports_wait_create(r, ngx_tiktok_reports_webhook_answer,
                                       batch);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    tp = ngx_timeofday();
    now = (int64_t) tp->sec * 1000 + tp->msec;

    for (i = 0; i < n; i++) {
        if (res[i].error) {
            ngx_tiktok_reports_webhook_rejected(res, i);
        }
    }

    /* the calls go out in one pipeline; replies come back in order */

    ctx->redis_start = ngx_tiktok_reports_usec();

    rc = ngx_tiktok_reports_store_transitions(tlcf->store, &tlcf->transition,
                                              &tlcf->limits, now, res, n,
                                              ngx_tiktok_reports_webhook_done,
                                              w, &sent);
    if (rc != NGX_OK) {
        w->failed = 1;
    }

    w->outstanding += sent;
    ctx->redis = (sent > 0);

    return ngx_tiktok_reports_wait_start(w, tlcf->limits.timeout);
}


/*
 * A result that is not stored: counted here, listed in the answer, and
 * logged with the others of its body in one line when the answer is built.
 */

static void
ngx_tiktok_reports_webhook_rejected(ngx_tiktok_reports_result_t *res,
    size_t i)
{
    ngx_tiktok_reports_metrics_result(res[i].kind,
                                      NGX_TIKTOK_REPORTS_REJECTED);
}


/*
 * One line per body however many results it has rejected: their number and
 * the first few, so that a body of thousands cannot flood the log.
 */

static void
ngx_tiktok_reports_webhook_log_rejected(ngx_http_request_t *r,
    ngx_tiktok_reports_batch_t *batch)
{
    size_t                          i, n, len;
    u_char                         *p, *last;
    u_char                          line[512], id[80];
    ngx_tiktok_reports_result_t    *res;
    ngx_tiktok_reports_loc_conf_t  *tlcf;

    res = batch->results;

    n = 0;
    p = line;
    last = line + sizeof(line);

    for (i = 0; i < batch->nresults; i++) {
        if (res[i].error == NULL) {
            continue;
        }

        if (++n > NGX_TIKTOK_REPORTS_REJECTED_SHOWN) {
            continue;
        }

        p = ngx_slprintf(p, last, "%s result %uz: %s",
                         n > 1 ? ";" : "", i, res[i].error);

        if (res[i].message_id.len) {
            len = ngx_tiktok_reports_log_escape(id, sizeof(id),
                                                res[i].message_id.data,
                                                res[i].message_id.len);

            p = ngx_slprintf(p, last, ", messageId \"%*s\"", len, id);
        }
    }

    if (n == 0) {
        return;
    }

    if (n > NGX_TIKTOK_REPORTS_REJECTED_SHOWN) {
        p = ngx_slprintf(p, last, "; ...");
    }

    tlcf = ngx_http_get_module_loc_conf(r, ngx_tiktok_reports_module);

    ngx_log_error(tlcf->log_level, r->connection->log, 0,
                  "tiktok_reports: %uz of %uz results rejected:%*s",
                  n, batch->nresults, (size_t) (p - line), line);
}


static void
ngx_tiktok_reports_webhook_done(void *data, ngx_uint_t index, ngx_int_t rc,
    redisReply *reply)
{
    ngx_tiktok_reports_wait_t   *w = data;
    ngx_tiktok_reports_batch_t  *batch;

    if (w->request) {
        batch = w->data;

        if (rc == NGX_OK) {
            batch->accepted++;
            ngx_tiktok_reports_metrics_result(batch->results[index].kind,
                                              NGX_TIKTOK_REPORTS_ACCEPTED);

        } else if (rc == NGX_DECLINED) {
            batch->duplicates++;
            ngx_tiktok_reports_metrics_result(batch->results[index].kind,
                                              NGX_TIKTOK_REPORTS_DUPLICATE);

        } else if (rc == NGX_ABORT) {
            /* listed in "rejected" by the answer, like a parser refusal */
            batch->results[index].error =
                                       "the message's Redis key is not a hash";
            ngx_tiktok_reports_webhook_rejected(batch->results, index);
        }
    }

    ngx_tiktok_reports_wait_done(w, rc == NGX_ERROR);
}


static ngx_int_t
ngx_tiktok_reports_webhook_answer(ngx_http_request_t *r,
    ngx_tiktok_reports_wait_t *w)
{
    size_t                        i, len;
    u_char                       *body, *p;
    ngx_uint_t                    rejected;
    ngx_tiktok_reports_ctx_t     *ctx;
    ngx_tiktok_reports_batch_t   *batch;
    ngx_tiktok_reports_result_t  *res;

    batch = w->data;
    res = batch->results;

    /* the last reply came, or the timeout: what Redis took of the request */
    ctx = ngx_http_get_module_ctx(r, ngx_tiktok_reports_module);

    if (ctx && ctx->redis) {
        ctx->redis_time = ngx_tiktok_reports_usec() - ctx->redis_start;
    }

    /* the parser's refusals and those of Redis's replies that came */
    ngx_tiktok_reports_webhook_log_rejected(r, batch);

    if (w->failed) {
        return ngx_tiktok_reports_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "status store unavailable");
    }

    len = sizeof("{\"accepted\":,\"duplicates\":,\"rejected\":[]}") - 1
          + 2 * NGX_INT_T_LEN;
    rejected = 0;

    for (i = 0; i < batch->nresults; i++) {
        if (res[i].error) {
            rejected++;
            len += sizeof("{\"index\":,\"error\":},") - 1 + NGX_SIZE_T_LEN
                   + ngx_tiktok_reports_json_string_len(
                         (u_char *) res[i].error, ngx_strlen(res[i].error));
        }
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx) {
        ctx->counted = 1;
        ctx->accepted = batch->accepted;
        ctx->duplicates = batch->duplicates;
        ctx->rejected = rejected;
    }

    p = ngx_sprintf(body,
                    "{\"accepted\":%ui,\"duplicates\":%ui,\"rejected\":[",
                    batch->accepted, batch->duplicates);

    for (i = 0; i < batch->nresults; i++) {
        if (res[i].error == NULL) {
            continue;
        }

        if (p[-1] == '}') {
            *p++ = ',';
        }

        p = ngx_sprintf(p, "{\"index\":%uz,\"error\":", i);
        p = ngx_tiktok_reports_json_string(p, (u_char *) res[i].error,
                                           ngx_strlen(res[i].error));
        *p++ = '}';
    }

    *p++ = ']';
    *p++ = '}';

    return ngx_tiktok_reports_send_json(r, NGX_HTTP_OK, body, p - body);
}
