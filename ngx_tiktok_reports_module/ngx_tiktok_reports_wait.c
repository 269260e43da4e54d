
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * A request waiting for Redis.  Replies can arrive after the request is gone
 * (the timeout answered it, or the client left), so the waiting state lives
 * outside the request pool: the pool cleanup only clears "request", and
 * whichever of the two finishes last frees it.  Redis callbacks get this
 * object, never the request.
 */


#include "ngx_tiktok_reports_module.h"


static void ngx_tiktok_reports_wait_timeout(ngx_event_t *ev);
static void ngx_tiktok_reports_wait_finish(ngx_tiktok_reports_wait_t *w);
static void ngx_tiktok_reports_wait_cleanup(void *data);
static void ngx_tiktok_reports_wait_release(ngx_tiktok_reports_wait_t *w);


ngx_tiktok_reports_wait_t *
ngx_tiktok_reports_wait_create(ngx_http_request_t *r,
    ngx_tiktok_reports_answer_pt answer, void *data)
{
    ngx_pool_cleanup_t         *cln;
    ngx_tiktok_reports_wait_t  *w;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    w = ngx_calloc(sizeof(ngx_tiktok_reports_wait_t), r->connection->log);
    if (w == NULL) {
        return NULL;
    }

    w->request = r;
    w->answer = answer;
    w->data = data;

    w->timer.handler = ngx_tiktok_reports_wait_timeout;
    w->timer.data = w;
    w->timer.log = r->connection->log;

    cln->handler = ngx_tiktok_reports_wait_cleanup;
    cln->data = w;

    return w;
}


/* after the commands went out: NGX_DONE, or the answer's code right away */

ngx_int_t
ngx_tiktok_reports_wait_start(ngx_tiktok_reports_wait_t *w,
    ngx_msec_t timeout)
{
    if (w->outstanding == 0) {
        w->answered = 1;
        return w->answer(w->request, w);
    }

    ngx_add_timer(&w->timer, timeout);

    return NGX_DONE;
}


void
ngx_tiktok_reports_wait_done(ngx_tiktok_reports_wait_t *w, ngx_uint_t failed)
{
    if (failed) {
        w->failed = 1;
    }

    if (--w->outstanding == 0) {
        ngx_tiktok_reports_wait_finish(w);
    }
}


static void
ngx_tiktok_reports_wait_timeout(ngx_event_t *ev)
{
    ngx_tiktok_reports_wait_t  *w;

    w = ev->data;

    if (w->request) {
        ngx_log_error(NGX_LOG_ERR, w->request->connection->log, 0,
                      "tiktok_reports: redis did not answer in time");
    }

    ngx_tiktok_reports_metrics_redis_error(1);

    w->failed = 1;
    ngx_tiktok_reports_wait_finish(w);
}


/* the answer goes out once: when the last reply came, or at the timeout */

static void
ngx_tiktok_reports_wait_finish(ngx_tiktok_reports_wait_t *w)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    r = w->request;

    if (w->answered || r == NULL) {
        ngx_tiktok_reports_wait_release(w);
        return;
    }

    w->answered = 1;

    c = r->connection;

    rc = w->answer(r, w);

    /* the request may be freed in there, and "w" with it */
    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_tiktok_reports_wait_cleanup(void *data)
{
    ngx_tiktok_reports_wait_t  *w = data;

    w->request = NULL;

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    ngx_tiktok_reports_wait_release(w);
}


static void
ngx_tiktok_reports_wait_release(ngx_tiktok_reports_wait_t *w)
{
    if (w->outstanding || w->request) {
        return;
    }

    ngx_free(w);
}
