
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * hiredis's async context on nginx's event loop: the socket hiredis opened
 * is wrapped in an ngx_connection_t and hiredis's add/del hooks become
 * nginx events.  Nothing here knows about commands or requests.
 */


#include "ngx_tiktok_reports_redis.h"


static void ngx_tiktok_reports_redis_event(ngx_event_t *ev);
static void ngx_tiktok_reports_redis_flush(ngx_event_t *ev);
static void ngx_tiktok_reports_redis_add_read(void *data);
static void ngx_tiktok_reports_redis_del_read(void *data);
static void ngx_tiktok_reports_redis_add_write(void *data);
static void ngx_tiktok_reports_redis_del_write(void *data);
static void ngx_tiktok_reports_redis_cleanup(void *data);


ngx_int_t
ngx_tiktok_reports_redis_attach(redisAsyncContext *ac, ngx_log_t *log)
{
    ngx_connection_t  *c;

    if (ac->ev.data != NULL) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(ac->c.fd, log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->log = log;
    c->read->log = log;
    c->write->log = log;
    c->data = ac;

    /* nginx may call it before hiredis adds any event (shutdown timeout) */
    c->read->handler = ngx_tiktok_reports_redis_event;
    c->write->handler = ngx_tiktok_reports_redis_event;

    ac->ev.data = c;
    ac->ev.addRead = ngx_tiktok_reports_redis_add_read;
    ac->ev.delRead = ngx_tiktok_reports_redis_del_read;
    ac->ev.addWrite = ngx_tiktok_reports_redis_add_write;
    ac->ev.delWrite = ngx_tiktok_reports_redis_del_write;
    ac->ev.cleanup = ngx_tiktok_reports_redis_cleanup;

    return NGX_OK;
}


/*
 * Events are level-triggered on purpose: hiredis reads at most 16 KiB per
 * call, and with edge-triggered epoll the rest of a large reply would sit
 * in the socket with no further event.  A level event fires again on the
 * next loop while bytes remain, so the socket is always drained, and the
 * handler never touches the connection after hiredis returns (hiredis may
 * have freed the context, and the connection with it, inside the call).
 */

static void
ngx_tiktok_reports_redis_event(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;

    if (c->close) {
        /*
         * worker_shutdown_timeout: the node closes it at worker exit; until
         * then a level event with bytes pending would fire on every loop
         */
        if (ev->active) {
            (void) ngx_del_event(ev, ev->write ? NGX_WRITE_EVENT
                                               : NGX_READ_EVENT, 0);
        }

        return;
    }

    if (ev->write) {
        redisAsyncHandleWrite(c->data);

    } else {
        redisAsyncHandleRead(c->data);
    }
}


/*
 * Commands issued while this loop iteration handles its events are sent
 * together once it is over: the write event is posted, not added to epoll,
 * so a busy worker makes one write() for many requests and no epoll_ctl()
 * at all.  Only a write that the kernel cannot take whole waits for epoll.
 */

static void
ngx_tiktok_reports_redis_flush(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;

    if (c->close) {
        return;
    }

    /* hiredis asks for the write event again only if it could not finish */
    ev->handler = ngx_tiktok_reports_redis_event;

    redisAsyncHandleWrite(c->data);
}


static void
ngx_tiktok_reports_redis_add_read(void *data)
{
    ngx_connection_t  *c = data;

    if (c == NULL || c->read->active) {
        return;
    }

    if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "tiktok_reports: cannot add redis read event");
    }
}


static void
ngx_tiktok_reports_redis_del_read(void *data)
{
    ngx_connection_t  *c = data;

    if (c == NULL || !c->read->active) {
        return;
    }

    if (ngx_del_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "tiktok_reports: cannot delete redis read event");
    }
}


static void
ngx_tiktok_reports_redis_add_write(void *data)
{
    ngx_connection_t  *c = data;

    if (c == NULL || c->write->active || c->write->posted) {
        return;
    }

    /*
     * The flush handler is set only once hiredis finished a write, so the
     * socket is connected; until then (connect(2) in progress, or a write
     * the kernel did not take whole) only epoll can tell when to write.
     */
    if (c->write->handler == ngx_tiktok_reports_redis_flush) {
        ngx_post_event(c->write, &ngx_posted_events);
        return;
    }

    c->write->handler = ngx_tiktok_reports_redis_event;

    if (ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "tiktok_reports: cannot add redis write event");
    }
}


static void
ngx_tiktok_reports_redis_del_write(void *data)
{
    ngx_connection_t  *c = data;

    if (c == NULL) {
        return;
    }

    /* everything was written: the next command is flushed after the loop */
    c->write->handler = ngx_tiktok_reports_redis_flush;

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    if (!c->write->active) {
        return;
    }

    if (ngx_del_event(c->write, NGX_WRITE_EVENT, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "tiktok_reports: cannot delete redis write event");
    }
}


/*
 * hiredis calls this once, right before it closes the socket itself: take
 * the fd out of epoll and give the connection back without closing it, so
 * that the fd is closed exactly once, by hiredis.
 */

static void
ngx_tiktok_reports_redis_cleanup(void *data)
{
    ngx_connection_t   *c = data;
    redisAsyncContext  *ac;

    if (c == NULL) {
        return;
    }

    ac = c->data;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (ac) {
        ac->ev.data = NULL;
    }

    /* c->data now links the free list; fd -1 marks stale events */
    ngx_free_connection(c);

    c->fd = (ngx_socket_t) -1;
}
