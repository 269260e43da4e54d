
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * The lookup location: one messageId from the last path part, or many from
 * repeated "id=" arguments or a POSTed {"ids":[...]}, each an HGETALL of
 * the message's hash, all pipelined, answered as JSON in request order.
 */


#include "ngx_tiktok_reports_module.h"
#include "ngx_tiktok_reports_redis.h"

#include <yajl/yajl_parse.h>


#define NGX_TIKTOK_REPORTS_MAX_IDS  1000


typedef struct {
    ngx_str_t                      *ids;
    ngx_str_t                      *items;     /* rendered; NULL: unknown */
    ngx_uint_t                      n;
    unsigned                        batch:1;
} ngx_tiktok_reports_lookup_t;


/* the POSTed {"ids":[...]}, read with yajl's callbacks */
typedef struct {
    ngx_pool_t                     *pool;
    ngx_array_t                    *ids;
    ngx_uint_t                      depth;
    const char                     *error;
    unsigned                        in_ids:1;
    unsigned                        ids_key:1;
    unsigned                        seen_ids:1;
    unsigned                        no_memory:1;  /* not the body's fault */
} ngx_tiktok_reports_ids_parser_t;


static void ngx_tiktok_reports_status_body(ngx_http_request_t *r);
static ngx_int_t ngx_tiktok_reports_status_args(ngx_http_request_t *r,
    ngx_array_t *ids, const char **err);
static ngx_int_t ngx_tiktok_reports_status_path(ngx_http_request_t *r,
    ngx_array_t *ids, const char **err);
static ngx_int_t ngx_tiktok_reports_status_unescape(ngx_http_request_t *r,
    ngx_uint_t form,
    u_char *s, size_t len, ngx_array_t *ids, const char **err);
static ngx_int_t ngx_tiktok_reports_status_lookup(ngx_http_request_t *r,
    ngx_array_t *ids, ngx_uint_t batch);
static void ngx_tiktok_reports_status_done(void *data, ngx_uint_t index,
    ngx_int_t rc, redisReply *reply);
static ngx_int_t ngx_tiktok_reports_status_render(ngx_pool_t *pool,
    ngx_str_t *id, redisReply *reply, ngx_str_t *out);
static ngx_int_t ngx_tiktok_reports_status_answer(ngx_http_request_t *r,
    ngx_tiktok_reports_wait_t *w);
static ngx_int_t ngx_tiktok_reports_status_parse_chunk(void *data, u_char *p,
    size_t len);


ngx_int_t
ngx_tiktok_reports_status_handler(ngx_http_request_t *r)
{
    ngx_int_t     rc;
    const char   *err;
    ngx_array_t  *ids;

    if (r->method == NGX_HTTP_POST) {
        rc = ngx_http_read_client_request_body(r,
                                               ngx_tiktok_reports_status_body);

        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_tiktok_reports_send_not_allowed(r, "GET, HEAD, POST");
    }

    ids = ngx_array_create(r->pool, 4, sizeof(ngx_str_t));
    if (ids == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    err = "no messageId";

    rc = ngx_tiktok_reports_status_args(r, ids, &err);

    if (rc == NGX_OK) {
        rc = ngx_tiktok_reports_status_lookup(r, ids, 1);

    } else if (rc == NGX_DECLINED) {
        rc = ngx_tiktok_reports_status_path(r, ids, &err);

        if (rc == NGX_OK) {
            rc = ngx_tiktok_reports_status_lookup(r, ids, 0);
        }
    }

    if (rc == NGX_DECLINED || rc == NGX_HTTP_BAD_REQUEST) {
        return ngx_tiktok_reports_send_error(r, NGX_HTTP_BAD_REQUEST, err);
    }

    if (rc == NGX_DONE) {
        /* no body read took a reference for us: waiting for Redis does */
        r->main->count++;
    }

    return rc;
}


/* every "id=" argument; NGX_DECLINED when there is none */

static ngx_int_t
ngx_tiktok_reports_status_args(ngx_http_request_t *r, ngx_array_t *ids,
    const char **err)
{
    u_char     *p, *last, *end, *v;
    ngx_int_t   rc;

    p = r->args.data;
    last = p + r->args.len;

    while (p < last) {
        end = ngx_strlchr(p, last, '&');
        if (end == NULL) {
            end = last;
        }

        if (end - p >= 3 && p[0] == 'i' && p[1] == 'd' && p[2] == '=') {
            if (ids->nelts == NGX_TIKTOK_REPORTS_MAX_IDS) {
                *err = "more than 1000 ids";
                return NGX_HTTP_BAD_REQUEST;
            }

            v = p + 3;

            rc = ngx_tiktok_reports_status_unescape(r, 1, v, end - v, ids,
                                                    err);
            if (rc != NGX_OK) {
                return rc;
            }
        }

        p = end + 1;
    }

    return ids->nelts ? NGX_OK : NGX_DECLINED;
}


/*
 * The last part of the path.  While the request line still holds the URI,
 * it is taken from there and decoded here: nginx's decoded $uri has turned
 * "%2F" into "/", and a messageId may contain any byte.  A rewrite (or an
 * internal redirect) leaves only the decoded $uri, taken as it is: decoding
 * it again would make an id's "%41" an "A".  An id with a "/" is then
 * reached with "?id=".
 */

static ngx_int_t
ngx_tiktok_reports_status_path(ngx_http_request_t *r, ngx_array_t *ids,
    const char **err)
{
    u_char     *p, *last, *start;
    ngx_str_t  *id;

    if (r->valid_unparsed_uri) {
        p = r->unparsed_uri.data;
        last = p + r->unparsed_uri.len;

        start = ngx_strlchr(p, last, '?');
        if (start) {
            last = start;
        }

    } else {
        p = r->uri.data;
        last = p + r->uri.len;
    }

    start = p;

    for ( /* void */ ; p < last; p++) {
        if (*p == '/') {
            start = p + 1;
        }
    }

    if (start == last) {
        return NGX_DECLINED;
    }

    if (r->valid_unparsed_uri) {
        return ngx_tiktok_reports_status_unescape(r, 0, start, last - start,
                                                  ids, err);
    }

    id = ngx_array_push(ids);
    if (id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    id->data = start;
    id->len = last - start;

    return NGX_OK;
}


/*
 * A percent-encoded id; in the query string ("form"), "+" is a space as
 * HTML forms and URL libraries send it, and "%2B" is a plus.
 */

static ngx_int_t
ngx_tiktok_reports_status_unescape(ngx_http_request_t *r, ngx_uint_t form,
    u_char *s, size_t len, ngx_array_t *ids, const char **err)
{
    u_char     *dst, *src;
    size_t      i;
    ngx_str_t  *id;

    if (len == 0) {
        *err = "empty messageId";
        return NGX_HTTP_BAD_REQUEST;
    }

    id = ngx_array_push(ids);
    if (id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    id->data = ngx_pnalloc(r->pool, len);
    if (id->data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    dst = id->data;
    src = s;

    if (form) {
        /* decoded in place: pluses first, so that "%2B" stays a plus */
        for (i = 0; i < len; i++) {
            dst[i] = (s[i] == '+') ? ' ' : s[i];
        }

        src = dst;
    }

    ngx_unescape_uri(&dst, &src, len, 0);

    id->len = dst - id->data;

    return NGX_OK;
}


/* any value that is not a string: wrong as "ids", wrong inside "ids" */

static int
ngx_tiktok_reports_ids_null(void *ctx)
{
    ngx_tiktok_reports_ids_parser_t  *ip = ctx;

    if (ip->depth == 1 && ip->ids_key) {
        ip->error = "ids is not an array";
        return 0;
    }

    if (ip->in_ids && ip->depth == 2) {
        ip->error = "ids must be strings";
        return 0;
    }

    ip->ids_key = 0;

    return 1;
}


static int
ngx_tiktok_reports_ids_bool(void *ctx, int v)
{
    return ngx_tiktok_reports_ids_null(ctx);
}


static int
ngx_tiktok_reports_ids_number(void *ctx, const char *s, size_t len)
{
    return ngx_tiktok_reports_ids_null(ctx);
}


static int
ngx_tiktok_reports_ids_string(void *ctx, const unsigned char *s, size_t len)
{
    ngx_str_t                        *id;
    ngx_tiktok_reports_ids_parser_t  *ip = ctx;

    if (!(ip->in_ids && ip->depth == 2)) {
        return ngx_tiktok_reports_ids_null(ctx);
    }

    if (ip->ids->nelts == NGX_TIKTOK_REPORTS_MAX_IDS) {
        ip->error = "more than 1000 ids";
        return 0;
    }

    if (len == 0) {
        ip->error = "empty messageId";
        return 0;
    }

    id = ngx_array_push(ip->ids);
    if (id == NULL) {
        ip->error = "out of memory";
        ip->no_memory = 1;
        return 0;
    }

    id->data = ngx_pnalloc(ip->pool, len);
    if (id->data == NULL) {
        ip->error = "out of memory";
        ip->no_memory = 1;
        return 0;
    }

    ngx_memcpy(id->data, s, len);
    id->len = len;

    return 1;
}


static int
ngx_tiktok_reports_ids_start_map(void *ctx)
{
    ngx_tiktok_reports_ids_parser_t  *ip = ctx;

    /* an object is refused where a scalar is */
    if (!ngx_tiktok_reports_ids_null(ctx)) {
        return 0;
    }

    ip->depth++;

    return 1;
}


static int
ngx_tiktok_reports_ids_map_key(void *ctx, const unsigned char *s, size_t len)
{
    ngx_tiktok_reports_ids_parser_t  *ip = ctx;

    ip->ids_key = (ip->depth == 1 && len == 3
                   && ngx_strncmp(s, "ids", 3) == 0);

    return 1;
}


static int
ngx_tiktok_reports_ids_end(void *ctx)
{
    ngx_tiktok_reports_ids_parser_t  *ip = ctx;

    ip->depth--;

    if (ip->depth == 1) {
        ip->in_ids = 0;
    }

    return 1;
}


static int
ngx_tiktok_reports_ids_start_array(void *ctx)
{
    ngx_tiktok_reports_ids_parser_t  *ip = ctx;

    if (ip->depth == 0) {
        ip->error = "body is not a JSON object";
        return 0;
    }

    if (ip->in_ids && ip->depth == 2) {
        ip->error = "ids must be strings";
        return 0;
    }

    if (ip->depth == 1 && ip->ids_key) {
        /* a repeated "ids" starts over */
        ip->ids->nelts = 0;
        ip->in_ids = 1;
        ip->seen_ids = 1;
    }

    ip->ids_key = 0;
    ip->depth++;

    return 1;
}


static yajl_callbacks  ngx_tiktok_reports_ids_callbacks = {
    ngx_tiktok_reports_ids_null,
    ngx_tiktok_reports_ids_bool,
    NULL,
    NULL,
    ngx_tiktok_reports_ids_number,
    ngx_tiktok_reports_ids_string,
    ngx_tiktok_reports_ids_start_map,
    ngx_tiktok_reports_ids_map_key,
    ngx_tiktok_reports_ids_end,
    ngx_tiktok_reports_ids_start_array,
    ngx_tiktok_reports_ids_end
};


static void
ngx_tiktok_reports_status_body(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    yajl_handle                       h;
    yajl_status                       st;
    ngx_array_t                      *ids;
    ngx_tiktok_reports_ids_parser_t   ip;

    ids = ngx_array_create(r->pool, 16, sizeof(ngx_str_t));
    if (ids == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memzero(&ip, sizeof(ngx_tiktok_reports_ids_parser_t));
    ip.pool = r->pool;
    ip.ids = ids;

    h = yajl_alloc(&ngx_tiktok_reports_ids_callbacks, NULL, &ip);
    if (h == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_tiktok_reports_body_each(r,
                                      ngx_tiktok_reports_status_parse_chunk,
                                      h);

    if (rc == NGX_OK) {
        st = yajl_complete_parse(h);
        rc = (st == yajl_status_ok) ? NGX_OK : NGX_DECLINED;
    }

    yajl_free(h);

    if (rc == NGX_OK && !ip.seen_ids) {
        ip.error = "no ids array";
        rc = NGX_DECLINED;
    }

    if (rc == NGX_DECLINED && ip.no_memory) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    } else if (rc == NGX_DECLINED) {
        rc = ngx_tiktok_reports_send_error(r, NGX_HTTP_BAD_REQUEST,
                                           ip.error ? ip.error
                                           : "body must be {\"ids\":[...]}");

    } else if (rc == NGX_OK) {
        rc = ngx_tiktok_reports_status_lookup(r, ids, 1);
    }

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_tiktok_reports_status_parse_chunk(void *data, u_char *p, size_t len)
{
    return yajl_parse(data, p, len) == yajl_status_ok ? NGX_OK : NGX_DECLINED;
}


static ngx_int_t
ngx_tiktok_reports_status_lookup(ngx_http_request_t *r, ngx_array_t *ids,
    ngx_uint_t batch)
{
    size_t                          len;
    u_char                         *key, *p;
    ngx_str_t                      *id;
    ngx_uint_t                      i;
    const char                     *argv[2];
    size_t                          argvlen[2];
    ngx_tiktok_reports_ctx_t       *ctx;
    ngx_tiktok_reports_wait_t      *w;
    ngx_tiktok_reports_lookup_t    *lk;
    ngx_tiktok_reports_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_tiktok_reports_module);

    ctx = ngx_tiktok_reports_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lk = ngx_pcalloc(r->pool, sizeof(ngx_tiktok_reports_lookup_t));
    if (lk == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lk->ids = ids->elts;
    lk->n = ids->nelts;
    lk->batch = batch;

    lk->items = ngx_pcalloc(r->pool, (lk->n + 1) * sizeof(ngx_str_t));
    if (lk->items == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    w = ngx_tiktok_reports_wait_create(r, ngx_tiktok_reports_status_answer,
                                       lk);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    id = lk->ids;

    /* all or nothing: no half of a batch goes out on a full connection */

    len = 0;

    for (i = 0; i < lk->n; i++) {
        len += sizeof("HGETALL") - 1 + tlcf->key_prefix.len
               + sizeof("msg:{}") - 1 + id[i].len;
    }

    if (ngx_tiktok_reports_store_admit(tlcf->store, &tlcf->limits, lk->n,
                                       len)
        != NGX_OK)
    {
        w->failed = 1;
        return ngx_tiktok_reports_wait_start(w, tlcf->limits.timeout);
    }

    /* $tiktok_reports_redis_time: from the first HGETALL sent */

    ctx->redis_start = ngx_tiktok_reports_usec();

    for (i = 0; i < lk->n; i++) {
        len = tlcf->key_prefix.len + sizeof("msg:{}") - 1 + id[i].len;

        key = ngx_pnalloc(r->pool, len);
        if (key == NULL) {
            /* commands may be out already: answer through the wait */
            w->failed = 1;
            break;
        }

        p = ngx_cpymem(key, tlcf->key_prefix.data, tlcf->key_prefix.len);
        p = ngx_cpymem(p, "msg:{", 5);
        p = ngx_cpymem(p, id[i].data, id[i].len);
        *p = '}';

        argv[0] = "HGETALL";
        argvlen[0] = 7;
        argv[1] = (const char *) key;
        argvlen[1] = len;

        if (ngx_tiktok_reports_store_command(tlcf->store, key, len,
                                             ngx_tiktok_reports_status_done,
                                             w, i, tlcf->limits.timeout, 2,
                                             argv, argvlen)
            != NGX_OK)
        {
            w->failed = 1;
            break;
        }

        w->outstanding++;
    }

    ctx->redis = (w->outstanding > 0);

    return ngx_tiktok_reports_wait_start(w, tlcf->limits.timeout);
}


static void
ngx_tiktok_reports_status_done(void *data, ngx_uint_t index, ngx_int_t rc,
    redisReply *reply)
{
    ngx_tiktok_reports_wait_t    *w = data;
    ngx_tiktok_reports_lookup_t  *lk;

    if (rc == NGX_ABORT) {
        /*
         * something else than this module wrote another type at the key:
         * no message is known by that id, as the webhook refuses it too;
         * its item stays NULL
         */
        ngx_tiktok_reports_wait_done(w, 0);
        return;
    }

    if (rc == NGX_OK && w->request && !w->failed) {
        lk = w->data;

        if (reply->type != REDIS_REPLY_ARRAY
            || ngx_tiktok_reports_status_render(w->request->pool,
                                                &lk->ids[index], reply,
                                                &lk->items[index])
               != NGX_OK)
        {
            rc = NGX_ERROR;
        }
    }

    ngx_tiktok_reports_wait_done(w, rc == NGX_ERROR);
}


/* the fields readers know, in the order the contract lists them */

enum {
    ngx_tr_status = 0,
    ngx_tr_status_name,
    ngx_tr_error_name,
    ngx_tr_error_permanent,
    ngx_tr_done_at,
    ngx_tr_seen_at,
    ngx_tr_callback_data,
    ngx_tr_updated_at,
    ngx_tr_timeline,
    ngx_tr_delivery,
    ngx_tr_seen,
    ngx_tr_nfields
};


static ngx_str_t  ngx_tiktok_reports_fields[] = {
    ngx_string("status"),
    ngx_string("statusName"),
    ngx_string("errorName"),
    ngx_string("errorPermanent"),
    ngx_string("doneAt"),
    ngx_string("seenAt"),
    ngx_string("callbackData"),
    ngx_string("updatedAt"),
    ngx_string("timeline"),
    ngx_string("delivery"),
    ngx_string("seen")
};


/*
 * An event stored as a field of its own: "@d<id>[ <doneAt>]" or
 * "@s[ <seenAt>]", valued "<n>|<group letter>|<receivedAt>[|<statusName>]"
 * (ngx_tiktok_reports_redis_store.c); its parts, or NGX_DECLINED when the
 * field is not one.
 */

typedef struct {
    ngx_uint_t    n;
    ngx_uint_t    delivery;
    ngx_str_t     id;           /* data NULL: null */
    ngx_str_t     at;           /* data NULL: null */
    int64_t       ms;           /* at is ms for this instant ("timed") */
    ngx_uint_t    timed;
    ngx_str_t     status;
    ngx_str_t     received;
    ngx_str_t     status_name;  /* data NULL: null */
} ngx_tiktok_reports_event_t;


static ngx_str_t  ngx_tiktok_reports_event_groups[] = {
    ngx_string("PENDING"),
    ngx_string("UNDELIVERABLE"),
    ngx_string("DELIVERED"),
    ngx_string("EXPIRED"),
    ngx_string("REJECTED"),
    ngx_string("SEEN")
};


static ngx_int_t
ngx_tiktok_reports_status_event(redisReply *k, redisReply *v,
    ngx_tiktok_reports_event_t *e)
{
    u_char   *p, *last, *bar, *letter;
    size_t    i;
    int64_t   ms;

    p = (u_char *) k->str;
    last = p + k->len;

    if (k->len < 2 || p[0] != '@' || (p[1] != 'd' && p[1] != 's')) {
        return NGX_DECLINED;
    }

    e->delivery = (p[1] == 'd');
    p += 2;

    ngx_str_null(&e->id);

    if (e->delivery) {
        e->id.data = p;

        while (p < last && *p != ' ') {
            if (ngx_strchr("-+.eE0123456789", *p) == NULL) {
                return NGX_DECLINED;
            }

            p++;
        }

        e->id.len = p - e->id.data;

        if (e->id.len == 0) {
            return NGX_DECLINED;
        }

        if (e->id.len == 1 && e->id.data[0] == '-') {
            ngx_str_null(&e->id);
        }
    }

    ngx_str_null(&e->at);
    e->timed = 0;

    if (p < last) {
        if (*p != ' ') {
            return NGX_DECLINED;
        }

        e->at.data = p + 1;
        e->at.len = last - p - 1;

        if (e->at.len && e->at.data[0] == '=') {
            /* a text that could be taken for ms */
            e->at.data++;
            e->at.len--;

        } else if (e->at.len && e->at.len <= 16) {
            /* ms for a time in Infobip's own form */
            ms = 0;

            for (i = 0; i < e->at.len; i++) {
                if (e->at.data[i] < '0' || e->at.data[i] > '9') {
                    break;
                }

                ms = ms * 10 + (e->at.data[i] - '0');
            }

            if (i == e->at.len && ms <= 253402300799999LL) {
                e->ms = ms;
                e->timed = 1;
            }
        }
    }

    /* the value: n|G|receivedAt[|statusName] */

    p = (u_char *) v->str;
    last = p + v->len;

    bar = ngx_strlchr(p, last, '|');
    if (bar == NULL || bar == p || bar + 2 >= last || bar[2] != '|') {
        return NGX_DECLINED;
    }

    e->n = 0;

    for ( /* void */ ; p < bar; p++) {
        if (*p < '0' || *p > '9' || e->n > 100000000) {
            return NGX_DECLINED;
        }

        e->n = e->n * 10 + (*p - '0');
    }

    letter = (u_char *) ngx_strchr("PUDERS", bar[1]);
    if (letter == NULL || bar[1] == '\0') {
        return NGX_DECLINED;
    }

    e->status = ngx_tiktok_reports_event_groups[letter - (u_char *) "PUDERS"];

    p = bar + 3;
    e->received.data = p;

    while (p < last && *p != '|') {
        if (*p < '0' || *p > '9') {
            return NGX_DECLINED;
        }

        p++;
    }

    e->received.len = p - e->received.data;

    if (e->received.len == 0 || e->received.len > 19) {
        return NGX_DECLINED;
    }

    ngx_str_null(&e->status_name);

    if (p < last) {
        e->status_name.data = p + 1;
        e->status_name.len = last - p - 1;
    }

    for (i = 0; i < e->id.len; i++) {
        /* a number token: at least one digit */
        if (e->id.data[i] >= '0' && e->id.data[i] <= '9') {
            return NGX_OK;
        }
    }

    return e->id.data ? NGX_DECLINED : NGX_OK;
}


/* whether a value holds these bytes */

static ngx_uint_t
ngx_tiktok_reports_status_has(redisReply *v, u_char *s, size_t len)
{
    u_char  *p, *last;

    p = (u_char *) v->str;
    last = p + v->len;

    while ((size_t) (last - p) >= len) {
        p = ngx_strlchr(p, last - len + 1, s[0]);

        if (p == NULL) {
            return 0;
        }

        if (ngx_memcmp(p, s, len) == 0) {
            return 1;
        }

        p++;
    }

    return 0;
}


/* an upper bound of an event's JSON object */

static size_t
ngx_tiktok_reports_status_event_len(ngx_tiktok_reports_event_t *e)
{
    return sizeof("{\"kind\":\"delivery\",\"id\":,\"at\":,\"status\":\"\","
                  "\"statusName\":,\"receivedAt\":},") + 16
           + e->id.len + e->status.len + e->received.len
           + NGX_TIKTOK_REPORTS_TIME_LEN
           + ngx_tiktok_reports_json_string_len(e->at.data, e->at.len)
           + ngx_tiktok_reports_json_string_len(e->status_name.data,
                                                e->status_name.len);
}


/* as the older timeline form wrote the event: its start, then the rest */

static u_char *
ngx_tiktok_reports_status_event_start(u_char *p, ngx_tiktok_reports_event_t *e)
{
    u_char  *at, text[NGX_TIKTOK_REPORTS_TIME_LEN];

    at = e->at.data;

    if (e->timed) {
        at = text;
        (void) ngx_tiktok_reports_time_text(text, e->ms);
    }

    return ngx_tiktok_reports_event_start(p, e->delivery, e->id.data,
                                          e->id.len, at,
                                          e->timed ? sizeof(text)
                                                   : e->at.len);
}


static u_char *
ngx_tiktok_reports_status_event_json(u_char *p, ngx_tiktok_reports_event_t *e)
{
    p = ngx_tiktok_reports_status_event_start(p, e);
    p = ngx_sprintf(p, "\"status\":\"%V\"", &e->status);

    if (e->delivery) {
        p = ngx_cpymem(p, ",\"statusName\":", 14);

        if (e->status_name.data) {
            p = ngx_tiktok_reports_json_string(p, e->status_name.data,
                                               e->status_name.len);

        } else {
            p = ngx_cpymem(p, "null", 4);
        }
    }

    return ngx_sprintf(p, ",\"receivedAt\":%V}", &e->received);
}


/*
 * An event of a field of its own, after a comma unless first; one that an
 * older version wrote again as a line of "timeline" (during a rolling
 * upgrade) is shown once, as that line.
 */

static u_char *
ngx_tiktok_reports_status_event_out(u_char *p, ngx_tiktok_reports_event_t *e,
    redisReply *timeline)
{
    u_char  *start, *s;

    start = p;

    if (p[-1] != '[') {
        *p++ = ',';
    }

    s = p;
    p = ngx_tiktok_reports_status_event_start(p, e);

    if (timeline && ngx_tiktok_reports_status_has(timeline, s, p - s)) {
        return start;
    }

    return ngx_tiktok_reports_status_event_json(s, e);
}


/* whether the event came before the timeline line [s, last) */

static ngx_uint_t
ngx_tiktok_reports_status_sooner(ngx_tiktok_reports_event_t *e, u_char *s,
    u_char *last)
{
    u_char  *p, *d;

    static u_char  name[] = "\"receivedAt\":";

    p = s;

    for ( ;; ) {
        p = ngx_strlchr(p, last, '"');

        if (p == NULL || (size_t) (last - p) < sizeof(name) - 1) {
            /* a line without one: the events wait for the end */
            return 0;
        }

        if (ngx_strncmp(p, name, sizeof(name) - 1) == 0) {
            break;
        }

        p++;
    }

    p += sizeof(name) - 1;

    for (d = p; d < last && *d >= '0' && *d <= '9'; d++) {
        /* void */
    }

    /* digits: the shorter number is the smaller */
    if (e->received.len != (size_t) (d - p)) {
        return e->received.len < (size_t) (d - p);
    }

    return ngx_memcmp(e->received.data, p, d - p) < 0;
}


/* our own JSON objects are passed through; anything else becomes a string */

static ngx_uint_t
ngx_tiktok_reports_status_is_object(u_char *s, size_t len)
{
    return len >= 2 && s[0] == '{' && s[len - 1] == '}';
}


static ngx_int_t
ngx_tiktok_reports_status_render(ngx_pool_t *pool, ngx_str_t *id,
    redisReply *reply, ngx_str_t *out)
{
    size_t                       len, i, j, f, nev;
    u_char                      *p, *s, *last, *nl;
    redisReply                  *k, *v, *fields[ngx_tr_nfields];
    ngx_tiktok_reports_event_t  *ev, e;

    if (reply->elements == 0) {
        out->data = NULL;
        return NGX_OK;
    }

    ngx_memzero(fields, sizeof(fields));

    ev = ngx_palloc(pool, (reply->elements / 2 + 1)
                          * sizeof(ngx_tiktok_reports_event_t));
    if (ev == NULL) {
        return NGX_ERROR;
    }

    nev = 0;
    len = 0;

    for (i = 0; i + 1 < reply->elements; i += 2) {
        k = reply->element[i];
        v = reply->element[i + 1];

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (k->len && k->str[0] == '@') {
            /* an event: in order of their numbers, oldest first */
            if (ngx_tiktok_reports_status_event(k, v, &e) != NGX_OK) {
                continue;
            }

            len += ngx_tiktok_reports_status_event_len(&e);

            for (j = nev; j > 0 && ev[j - 1].n > e.n; j--) {
                ev[j] = ev[j - 1];
            }

            ev[j] = e;
            nev++;
            continue;
        }

        for (f = 0; f < ngx_tr_nfields; f++) {
            if ((size_t) k->len == ngx_tiktok_reports_fields[f].len
                && ngx_strncmp(k->str, ngx_tiktok_reports_fields[f].data,
                               k->len) == 0)
            {
                fields[f] = v;
                break;
            }
        }
    }

    /* an upper bound: every value escaped, plus names and punctuation */

    len += sizeof("{\"messageId\":,\"found\":true,\"timeline\":[]}")
           + ngx_tiktok_reports_json_string_len(id->data, id->len);

    for (f = 0; f < ngx_tr_nfields; f++) {
        if (fields[f]) {
            len += ngx_tiktok_reports_fields[f].len + 4
                   + ngx_tiktok_reports_json_string_len(
                         (u_char *) fields[f]->str, fields[f]->len);
        }
    }

    /* timeline lines that are not objects each get quotes and a comma */
    if (fields[ngx_tr_timeline]) {
        len += 2 * fields[ngx_tr_timeline]->len;
    }

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;

    p = ngx_cpymem(p, "{\"messageId\":", 13);
    p = ngx_tiktok_reports_json_string(p, id->data, id->len);

    for (f = 0; f < ngx_tr_nfields; f++) {
        v = fields[f];

        if (f == ngx_tr_timeline && v == NULL && nev) {
            p = ngx_cpymem(p, ",\"timeline\":[", 13);
            j = 0;
            goto events;
        }

        if (v == NULL) {
            continue;
        }

        s = (u_char *) v->str;
        last = s + v->len;

        *p++ = ',';
        *p++ = '"';
        p = ngx_cpymem(p, ngx_tiktok_reports_fields[f].data,
                       ngx_tiktok_reports_fields[f].len);
        *p++ = '"';
        *p++ = ':';

        switch (f) {

        case ngx_tr_error_permanent:
            if (v->len == 4 && ngx_strncmp(s, "true", 4) == 0) {
                p = ngx_cpymem(p, "true", 4);
                continue;
            }

            if (v->len == 5 && ngx_strncmp(s, "false", 5) == 0) {
                p = ngx_cpymem(p, "false", 5);
                continue;
            }

            break;

        case ngx_tr_updated_at:
            if (v->len > 0 && v->len <= 19) {
                for (i = 0; i < (size_t) v->len; i++) {
                    if (s[i] < '0' || s[i] > '9') {
                        break;
                    }
                }

                if (i == (size_t) v->len) {
                    p = ngx_cpymem(p, s, v->len);
                    continue;
                }
            }

            break;

        case ngx_tr_timeline:
            /*
             * one JSON object per line, oldest first; the events stored
             * each in a field go among them by receivedAt
             */
            *p++ = '[';
            j = 0;

            while (s < last) {
                nl = ngx_strlchr(s, last, '\n');
                if (nl == NULL) {
                    nl = last;
                }

                if (nl > s) {
                    while (j < nev
                           && ngx_tiktok_reports_status_sooner(&ev[j], s, nl))
                    {
                        p = ngx_tiktok_reports_status_event_out(p, &ev[j++],
                                                                v);
                    }

                    if (p[-1] != '[') {
                        *p++ = ',';
                    }

                    if (ngx_tiktok_reports_status_is_object(s, nl - s)) {
                        p = ngx_cpymem(p, s, nl - s);

                    } else {
                        p = ngx_tiktok_reports_json_string(p, s, nl - s);
                    }
                }

                s = nl + 1;
            }

        events:

            while (j < nev) {
                p = ngx_tiktok_reports_status_event_out(p, &ev[j++], v);
            }

            *p++ = ']';
            continue;

        case ngx_tr_delivery:
        case ngx_tr_seen:
            if (ngx_tiktok_reports_status_is_object(s, v->len)) {
                p = ngx_cpymem(p, s, v->len);
                continue;
            }

            break;
        }

        p = ngx_tiktok_reports_json_string(p, s, v->len);
    }

    *p++ = '}';

    out->len = p - out->data;

    return NGX_OK;
}


static ngx_int_t
ngx_tiktok_reports_status_answer(ngx_http_request_t *r,
    ngx_tiktok_reports_wait_t *w)
{
    size_t                        len;
    u_char                       *body, *p;
    ngx_uint_t                    i;
    ngx_tiktok_reports_ctx_t     *ctx;
    ngx_tiktok_reports_lookup_t  *lk;

    /* the last reply came, or the timeout: what Redis took of the lookup */
    ctx = ngx_http_get_module_ctx(r, ngx_tiktok_reports_module);

    if (ctx && ctx->redis) {
        ctx->redis_time = ngx_tiktok_reports_usec() - ctx->redis_start;
    }

    if (w->failed) {
        return ngx_tiktok_reports_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "status store unavailable");
    }

    lk = w->data;

    if (!lk->batch) {
        if (lk->items[0].data) {
            return ngx_tiktok_reports_send_json(r, NGX_HTTP_OK,
                                                lk->items[0].data,
                                                lk->items[0].len);
        }

        len = sizeof("{\"error\":\"unknown messageId\",\"messageId\":}") - 1
              + ngx_tiktok_reports_json_string_len(lk->ids[0].data,
                                                   lk->ids[0].len);

        body = ngx_pnalloc(r->pool, len);
        if (body == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_cpymem(body, "{\"error\":\"unknown messageId\",\"messageId\":",
                       sizeof("{\"error\":\"unknown messageId\","
                              "\"messageId\":") - 1);
        p = ngx_tiktok_reports_json_string(p, lk->ids[0].data,
                                           lk->ids[0].len);
        *p++ = '}';

        return ngx_tiktok_reports_send_json(r, NGX_HTTP_NOT_FOUND, body,
                                            p - body);
    }

    len = sizeof("{\"results\":[]}") - 1;

    for (i = 0; i < lk->n; i++) {
        len += 1 + (lk->items[i].data
                    ? lk->items[i].len + sizeof(",\"found\":true") - 1
                    : sizeof("{\"messageId\":,\"found\":false}") - 1
                      + ngx_tiktok_reports_json_string_len(lk->ids[i].data,
                                                           lk->ids[i].len));
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"results\":[", 12);

    for (i = 0; i < lk->n; i++) {
        if (i) {
            *p++ = ',';
        }

        if (lk->items[i].data) {
            /* the object without its closing brace, then found:true */
            p = ngx_cpymem(p, lk->items[i].data, lk->items[i].len - 1);
            p = ngx_cpymem(p, ",\"found\":true}", 14);
            continue;
        }

        p = ngx_cpymem(p, "{\"messageId\":", 13);
        p = ngx_tiktok_reports_json_string(p, lk->ids[i].data,
                                           lk->ids[i].len);
        p = ngx_cpymem(p, ",\"found\":false}", 15);
    }

    *p++ = ']';
    *p++ = '}';

    return ngx_tiktok_reports_send_json(r, NGX_HTTP_OK, body, p - body);
}
