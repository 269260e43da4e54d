
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * One Redis socket on nginx's own connection machinery, I/O only: connect
 * without blocking, send what the node hands over, read until the socket is
 * drained and cut what came into replies with hiredis's reader, close once.
 * nginx owns the fd: ngx_close_connection() is its only close().  What to
 * send, and what a reply or a failure means, is the node's business.
 */


#include "ngx_tiktok_reports_redis.h"


/* bytes read per recv(); the socket is read until it has nothing left */
#define NGX_TIKTOK_REPORTS_READ_BUF  16384


static void ngx_tiktok_reports_conn_read(ngx_event_t *rev);
static void ngx_tiktok_reports_conn_write(ngx_event_t *wev);
static ngx_err_t ngx_tiktok_reports_conn_test_connect(ngx_connection_t *c);
static void ngx_tiktok_reports_conn_fail(ngx_tiktok_reports_conn_t *conn,
    const char *why, ngx_err_t err);


ngx_int_t
ngx_tiktok_reports_conn_open(ngx_tiktok_reports_conn_t *conn,
    ngx_tiktok_reports_redis_conf_t *conf, ngx_log_t *log, ngx_err_t *err)
{
    ngx_int_t          rc;
    ngx_log_t          quiet;
    ngx_connection_t  *c;

    *err = 0;

    conn->reader = redisReaderCreate();
    if (conn->reader == NULL) {
        return NGX_ERROR;
    }

    /*
     * A refused connect is the node's to log, once per outage: nginx's own
     * line for it (at "crit" for a missing unix socket) is kept quiet.
     */
    quiet = *log;
    quiet.log_level = NGX_LOG_ALERT;

    ngx_memzero(&conn->peer, sizeof(ngx_peer_connection_t));

    conn->peer.sockaddr = conf->sockaddr;
    conn->peer.socklen = conf->socklen;
    conn->peer.name = &conf->name;
    conn->peer.get = ngx_event_get_peer;
    conn->peer.log = &quiet;
    conn->peer.log_error = NGX_ERROR_ERR;
    conn->connected = 0;

    rc = ngx_event_connect_peer(&conn->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        *err = ngx_socket_errno;

        /* nginx closed the socket, if it had one */
        conn->peer.connection = NULL;
        redisReaderFree(conn->reader);
        conn->reader = NULL;
        return NGX_ERROR;
    }

    c = conn->peer.connection;

    c->data = conn;
    c->log = log;
    c->pool = NULL;
    c->read->log = log;
    c->write->log = log;
    c->read->handler = ngx_tiktok_reports_conn_read;
    c->write->handler = ngx_tiktok_reports_conn_write;
    conn->peer.log = log;

    if (rc == NGX_OK) {
        conn->connected = 1;
    }

    /* NGX_AGAIN: the write event tells when connect(2) is done */

    return NGX_OK;
}


void
ngx_tiktok_reports_conn_close(ngx_tiktok_reports_conn_t *conn)
{
    if (conn->peer.connection) {
        ngx_close_connection(conn->peer.connection);
        conn->peer.connection = NULL;
    }

    if (conn->reader) {
        redisReaderFree(conn->reader);
        conn->reader = NULL;
    }

    conn->connected = 0;
}


/*
 * Sends as much of the chain as the socket takes and moves the buffers'
 * pos past what went; when the socket is full, the write event brings the
 * node back.  NGX_OK: all sent; NGX_AGAIN: not all; NGX_ERROR: the
 * connection failed (the node has been told).
 */

ngx_int_t
ngx_tiktok_reports_conn_send(ngx_tiktok_reports_conn_t *conn,
    ngx_chain_t *out)
{
    ngx_chain_t       *cl;
    ngx_connection_t  *c;

    c = conn->peer.connection;

    if (c == NULL || !conn->connected) {
        return NGX_AGAIN;
    }

    cl = c->send_chain(c, out, 0);

    if (cl == NGX_CHAIN_ERROR) {
        ngx_tiktok_reports_conn_fail(conn, "send() failed", ngx_socket_errno);
        return NGX_ERROR;
    }

    if (cl == NULL) {
        return NGX_OK;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_tiktok_reports_conn_fail(conn, "cannot add a write event", 0);
        return NGX_ERROR;
    }

    return NGX_AGAIN;
}


static void
ngx_tiktok_reports_conn_write(ngx_event_t *wev)
{
    ngx_err_t                   err;
    ngx_connection_t           *c;
    ngx_tiktok_reports_conn_t  *conn;

    c = wev->data;
    conn = c->data;

    if (c->close) {
        /* worker_shutdown_timeout: nginx closes what is still open */
        ngx_tiktok_reports_conn_fail(conn, "worker is shutting down", 0);
        return;
    }

    if (!conn->connected) {
        err = ngx_tiktok_reports_conn_test_connect(c);

        if (err) {
            ngx_tiktok_reports_conn_fail(conn, "connect() failed", err);
            return;
        }

        conn->connected = 1;
    }

    conn->writable(conn->data);
}


static void
ngx_tiktok_reports_conn_read(ngx_event_t *rev)
{
    u_char                      buf[NGX_TIKTOK_REPORTS_READ_BUF];
    void                       *reply;
    ssize_t                     n;
    ngx_err_t                   err;
    ngx_connection_t           *c;
    ngx_tiktok_reports_conn_t  *conn;

    c = rev->data;
    conn = c->data;

    if (c->close) {
        ngx_tiktok_reports_conn_fail(conn, "worker is shutting down", 0);
        return;
    }

    if (!conn->connected) {
        err = ngx_tiktok_reports_conn_test_connect(c);

        if (err) {
            ngx_tiktok_reports_conn_fail(conn, "connect() failed", err);
            return;
        }

        conn->connected = 1;
    }

    /*
     * Read until the socket has nothing left: events are edge-triggered,
     * and what stays unread gets no second event.  A reply handler may
     * close the connection; then nothing of it is touched again.
     */

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0) {
            ngx_tiktok_reports_conn_fail(conn, "Server closed the connection",
                                         0);
            return;
        }

        if (n == NGX_ERROR) {
            ngx_tiktok_reports_conn_fail(conn, "recv() failed",
                                         ngx_socket_errno);
            return;
        }

        if (redisReaderFeed(conn->reader, (char *) buf, n) != REDIS_OK) {
            ngx_tiktok_reports_conn_fail(conn, "out of memory", 0);
            return;
        }

        for ( ;; ) {
            reply = NULL;

            if (redisReaderGetReply(conn->reader, &reply) != REDIS_OK) {
                ngx_tiktok_reports_conn_fail(conn, "protocol error", 0);
                return;
            }

            if (reply == NULL) {
                break;
            }

            conn->reply(conn->data, reply);

            freeReplyObject(reply);

            if (conn->peer.connection != c) {
                return;
            }
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_tiktok_reports_conn_fail(conn, "cannot add a read event", 0);
    }
}


static ngx_err_t
ngx_tiktok_reports_conn_test_connect(ngx_connection_t *c)
{
    int        err;
    socklen_t  len;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    return err;
}


/* the node learns why; it closes the connection and fails what waits */

static void
ngx_tiktok_reports_conn_fail(ngx_tiktok_reports_conn_t *conn,
    const char *why, ngx_err_t err)
{
    u_char  text[NGX_MAX_ERROR_STR], *p;

    if (err) {
        p = ngx_snprintf(text, sizeof(text) - 1, "%s (%d: ", why, err);
        p = ngx_strerror(err, p, text + sizeof(text) - 2 - p);
        *p++ = ')';
        *p = '\0';
        why = (const char *) text;
    }

    conn->failed(conn->data, why);
}
