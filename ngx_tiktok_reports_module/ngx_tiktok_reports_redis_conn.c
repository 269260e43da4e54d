
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * One Redis socket on nginx's own connection machinery, I/O only: connect
 * without blocking, send what the node hands over, read until the socket is
 * drained and cut what came into replies with hiredis's reader, close once.
 * nginx owns the fd: ngx_close_connection() is its only close().  What to
 * send, and what a reply or a failure means, is the node's business.
 *
 * With TLS, the connection counts as connected only once the handshake is
 * done and the certificate verified; nginx's SSL layer then sits behind
 * c->recv and c->send_chain, so reading and sending do not change.
 */


#include "ngx_tiktok_reports_redis.h"


/* bytes read per recv(); the socket is read until it has nothing left */
#define NGX_TIKTOK_REPORTS_READ_BUF  16384


static void ngx_tiktok_reports_conn_read(ngx_event_t *rev);
static void ngx_tiktok_reports_conn_write(ngx_event_t *wev);
static ngx_int_t ngx_tiktok_reports_conn_ready(ngx_tiktok_reports_conn_t *conn,
    ngx_connection_t *c);
static ngx_err_t ngx_tiktok_reports_conn_test_connect(ngx_connection_t *c);
static void ngx_tiktok_reports_conn_fail(ngx_tiktok_reports_conn_t *conn,
    const char *why, ngx_err_t err);
static void ngx_tiktok_reports_conn_io_fail(ngx_tiktok_reports_conn_t *conn,
    const char *why, ngx_err_t err);
#if (NGX_SSL)
static ngx_int_t ngx_tiktok_reports_conn_ssl_init(
    ngx_tiktok_reports_conn_t *conn, ngx_connection_t *c);
static void ngx_tiktok_reports_conn_ssl_start(ngx_tiktok_reports_conn_t *conn,
    ngx_connection_t *c);
static void ngx_tiktok_reports_conn_ssl_handshaked(ngx_connection_t *c);
static ngx_int_t ngx_tiktok_reports_conn_ssl_name(ngx_connection_t *c,
    ngx_str_t *name);
static ngx_int_t ngx_tiktok_reports_conn_ssl_flush(
    ngx_tiktok_reports_conn_t *conn, ngx_connection_t *c);
static void ngx_tiktok_reports_conn_ssl_close(ngx_tiktok_reports_conn_t *conn,
    ngx_connection_t *c);
static void ngx_tiktok_reports_conn_ssl_log(ngx_log_t *log, ngx_uint_t level,
    u_char *buf, size_t len);
#endif


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
    conn->io_failed = 0;
    conn->log = log;
    conn->pool = NULL;
    conn->ssl = conf->ssl;
    conn->ssl_error[0] = '\0';

    if (conf->ssl) {
        conn->ssl_name = conf->ssl->name.len ? conf->ssl->name
                                             : conf->host_name;
    }

    rc = ngx_event_connect_peer(&conn->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        /*
         * only a failed connect() leaves its errno; NGX_ERROR may be no
         * free connection, with errno from some earlier call (nginx logs
         * why itself)
         */
        *err = (rc == NGX_DECLINED) ? ngx_socket_errno : 0;

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

    /* a reset is the node's to log, once per outage, not nginx's each time */
    c->log_error = NGX_ERROR_INFO;

#if (NGX_SSL)
    if (conn->ssl) {
        if (ngx_tiktok_reports_conn_ssl_init(conn, c) != NGX_OK) {
            ngx_tiktok_reports_conn_close(conn);
            return NGX_ERROR;
        }

        if (rc == NGX_OK) {
            /* the handshake starts from the event loop, not in here */
            ngx_post_event(c->write, &ngx_posted_events);
        }

        return NGX_OK;
    }
#endif

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
#if (NGX_SSL)
        if (conn->peer.connection->ssl) {
            ngx_tiktok_reports_conn_ssl_close(conn, conn->peer.connection);
        }
#endif

        ngx_close_connection(conn->peer.connection);
        conn->peer.connection = NULL;
    }

    /* what nginx's SSL layer allocated, once the connection is closed */
    if (conn->pool) {
        ngx_destroy_pool(conn->pool);
        conn->pool = NULL;
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

#if (NGX_SSL)
    if (c->ssl) {
        /*
         * The SSL layer gathers small buffers into records of up to 16k and
         * writes at a flush: the whole chain goes now.  What it took but
         * could not write yet is c->buffered, flushed by the write event.
         */
        for (cl = out; cl->next; cl = cl->next) { /* void */ }

        cl->buf->flush = 1;
        conn->ssl_error[0] = '\0';
    }
#endif

    cl = c->send_chain(c, out, 0);

    if (cl == NGX_CHAIN_ERROR) {
        ngx_tiktok_reports_conn_io_fail(conn, "send() failed",
                                        ngx_socket_errno);
        return NGX_ERROR;
    }

    if (cl == NULL && !c->buffered) {
        return NGX_OK;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_tiktok_reports_conn_fail(conn, "cannot add a write event", 0);
        return NGX_ERROR;
    }

    return NGX_AGAIN;
}


/*
 * Either event may be the first after connect(2): NGX_OK when the
 * connection is up and its handler may go on; otherwise it failed (the node
 * was told), or the TLS handshake has just begun and calls back itself.
 */

static ngx_int_t
ngx_tiktok_reports_conn_ready(ngx_tiktok_reports_conn_t *conn,
    ngx_connection_t *c)
{
    ngx_err_t  err;

    if (c->close) {
        /* worker_shutdown_timeout: nginx closes what is still open */
        ngx_tiktok_reports_conn_fail(conn, "worker is shutting down", 0);
        return NGX_DECLINED;
    }

    if (conn->connected) {
        return NGX_OK;
    }

    err = ngx_tiktok_reports_conn_test_connect(c);

    if (err) {
        ngx_tiktok_reports_conn_fail(conn, "connect() failed", err);
        return NGX_DECLINED;
    }

#if (NGX_SSL)
    if (conn->ssl) {
        ngx_tiktok_reports_conn_ssl_start(conn, c);
        return NGX_DECLINED;
    }
#endif

    conn->connected = 1;

    return NGX_OK;
}


static void
ngx_tiktok_reports_conn_write(ngx_event_t *wev)
{
    ngx_connection_t           *c;
    ngx_tiktok_reports_conn_t  *conn;

    c = wev->data;
    conn = c->data;

    if (ngx_tiktok_reports_conn_ready(conn, c) != NGX_OK) {
        return;
    }

#if (NGX_SSL)
    if (c->buffered
        && ngx_tiktok_reports_conn_ssl_flush(conn, c) != NGX_OK)
    {
        return;
    }
#endif

    conn->writable(conn->data);
}


static void
ngx_tiktok_reports_conn_read(ngx_event_t *rev)
{
    u_char                      buf[NGX_TIKTOK_REPORTS_READ_BUF];
    void                       *reply;
    ssize_t                     n;
    ngx_connection_t           *c;
    ngx_tiktok_reports_conn_t  *conn;

    c = rev->data;
    conn = c->data;

    if (ngx_tiktok_reports_conn_ready(conn, c) != NGX_OK) {
        return;
    }

    /*
     * Read until the socket has nothing left: events are edge-triggered,
     * and what stays unread gets no second event.  With TLS, OpenSSL may
     * hold records it decrypted already, which epoll knows nothing about:
     * the SSL layer's recv returns NGX_AGAIN only once SSL_read() needs
     * more from the socket, so the same loop drains both.  A reply handler
     * may close the connection; then nothing of it is touched again.
     */

    for ( ;; ) {
        conn->ssl_error[0] = '\0';

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
            ngx_tiktok_reports_conn_io_fail(conn, "recv() failed",
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
    u_char  text[NGX_MAX_ERROR_STR];

    *ngx_tiktok_reports_conn_reason(text, text + sizeof(text) - 1, why, err)
        = '\0';

    conn->failed(conn->data, (char *) text);
}


/* "why", and the system's reason after it when there is one */

u_char *
ngx_tiktok_reports_conn_reason(u_char *p, u_char *last, const char *why,
    ngx_err_t err)
{
    p = ngx_slprintf(p, last - 1, "%s", why);

    if (err) {
        p = ngx_slprintf(p, last - 1, " (%d: ", err);
        p = ngx_strerror(err, p, last - 1 - p);
        *p++ = ')';
    }

    return p;
}


/*
 * A failed recv or send: with TLS, nginx's SSL layer said why with
 * OpenSSL's reason (caught by the connection's log), and that is the
 * reason the node gets.
 */

static void
ngx_tiktok_reports_conn_io_fail(ngx_tiktok_reports_conn_t *conn,
    const char *why, ngx_err_t err)
{
    u_char  text[sizeof(conn->ssl_error)];

    conn->io_failed = 1;

    if (conn->ssl && conn->ssl_error[0]) {
        ngx_cpystrn(text, conn->ssl_error, sizeof(text));
        conn->failed(conn->data, (const char *) text);
        return;
    }

    ngx_tiktok_reports_conn_fail(conn, why, err);
}


#if (NGX_SSL)

/*
 * A TLS connection gets a pool (nginx's SSL layer allocates from it) and a
 * log of its own, so that what the SSL layer logs becomes the reason the
 * node logs once per outage; the SSL layer's own line goes on at "info".
 */

static ngx_int_t
ngx_tiktok_reports_conn_ssl_init(ngx_tiktok_reports_conn_t *conn,
    ngx_connection_t *c)
{
    conn->pool = ngx_create_pool(1024, conn->log);
    if (conn->pool == NULL) {
        return NGX_ERROR;
    }

    c->pool = conn->pool;

    conn->ssl_log = *conn->log;
    conn->ssl_log.writer = ngx_tiktok_reports_conn_ssl_log;
    conn->ssl_log.wdata = conn;
    conn->ssl_log.handler = NULL;
    conn->ssl_log.data = NULL;
    conn->ssl_log.connection = 0;
    conn->ssl_log.next = NULL;

    /* failures the SSL layer logs at "info" are reasons too */
    if (conn->ssl_log.log_level < NGX_LOG_INFO) {
        conn->ssl_log.log_level = NGX_LOG_INFO;
    }

    c->log = &conn->ssl_log;
    c->read->log = c->log;
    c->write->log = c->log;
    conn->peer.log = c->log;

    return NGX_OK;
}


static void
ngx_tiktok_reports_conn_ssl_start(ngx_tiktok_reports_conn_t *conn,
    ngx_connection_t *c)
{
    ngx_int_t   rc;
    ngx_str_t  *name;

    if (ngx_ssl_create_connection(conn->ssl->ctx, c,
                                  NGX_SSL_BUFFER|NGX_SSL_CLIENT)
        != NGX_OK)
    {
        ngx_tiktok_reports_conn_io_fail(conn, "cannot start TLS", 0);
        return;
    }

    name = &conn->ssl_name;

    /* SNI carries host names only, never an address (RFC 6066) */

    if (conn->ssl->server_name
        && name->len
        && ngx_strlchr(name->data, name->data + name->len, ':') == NULL
        && ngx_inet_addr(name->data, name->len) == INADDR_NONE)
    {
        if (SSL_set_tlsext_host_name(c->ssl->connection,
                                     (char *) name->data)
            == 0)
        {
            ngx_ssl_error(NGX_LOG_ERR, c->log, 0,
                          "SSL_set_tlsext_host_name(\"%V\") failed", name);
            ngx_tiktok_reports_conn_io_fail(conn, "cannot set SNI", 0);
            return;
        }
    }

    conn->ssl_error[0] = '\0';

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        /* the node's watchdog bounds the handshake like any reply */
        c->ssl->handler = ngx_tiktok_reports_conn_ssl_handshaked;
        return;
    }

    ngx_tiktok_reports_conn_ssl_handshaked(c);
}


static void
ngx_tiktok_reports_conn_ssl_handshaked(ngx_connection_t *c)
{
    u_char                      why[NGX_MAX_ERROR_STR];
    long                        rc;
    ngx_tiktok_reports_conn_t  *conn;

    conn = c->data;

    if (c->close) {
        ngx_tiktok_reports_conn_fail(conn, "worker is shutting down", 0);
        return;
    }

    if (!c->ssl->handshaked) {
        ngx_tiktok_reports_conn_io_fail(conn, "TLS handshake failed", 0);
        return;
    }

    if (conn->ssl->verify) {
        rc = SSL_get_verify_result(c->ssl->connection);

        if (rc != X509_V_OK) {
            *ngx_snprintf(why, sizeof(why) - 1,
                          "TLS certificate verify error: (%l:%s)",
                          rc, X509_verify_cert_error_string(rc)) = '\0';

            conn->io_failed = 1;
            ngx_tiktok_reports_conn_fail(conn, (char *) why, 0);
            return;
        }

        if (ngx_tiktok_reports_conn_ssl_name(c, &conn->ssl_name) != NGX_OK) {
            *ngx_snprintf(why, sizeof(why) - 1,
                          "TLS certificate does not match \"%V\"",
                          &conn->ssl_name) = '\0';

            conn->io_failed = 1;
            ngx_tiktok_reports_conn_fail(conn, (char *) why, 0);
            return;
        }
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, c->log, 0,
                   "tiktok_reports: TLS to redis %V is up",
                   conn->peer.name);

    c->read->handler = ngx_tiktok_reports_conn_read;
    c->write->handler = ngx_tiktok_reports_conn_write;

    conn->connected = 1;

    conn->writable(conn->data);
}


/*
 * The certificate against the name: an address against the certificate's
 * IP entries (as Sentinel and Cluster announce nodes), a host name as
 * nginx checks one.
 */

static ngx_int_t
ngx_tiktok_reports_conn_ssl_name(ngx_connection_t *c, ngx_str_t *name)
{
    int    rc;
    X509  *cert;

    if (name->len == 0) {
        return NGX_ERROR;
    }

    cert = SSL_get1_peer_certificate(c->ssl->connection);
    if (cert == NULL) {
        return NGX_ERROR;
    }

    /* -2: not an address */
    rc = X509_check_ip_asc(cert, (char *) name->data, 0);

    X509_free(cert);

    if (rc == -2) {
        return ngx_ssl_check_host(c, name);
    }

    return (rc == 1) ? NGX_OK : NGX_ERROR;
}


/* the records the SSL layer keeps from an earlier send */

static ngx_int_t
ngx_tiktok_reports_conn_ssl_flush(ngx_tiktok_reports_conn_t *conn,
    ngx_connection_t *c)
{
    conn->ssl_error[0] = '\0';

    if (c->send_chain(c, NULL, 0) == NGX_CHAIN_ERROR) {
        ngx_tiktok_reports_conn_io_fail(conn, "send() failed",
                                        ngx_socket_errno);
        return NGX_ERROR;
    }

    if (!c->buffered) {
        return NGX_OK;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_tiktok_reports_conn_fail(conn, "cannot add a write event", 0);
        return NGX_ERROR;
    }

    return NGX_AGAIN;
}


/*
 * close_notify when the connection is fine, nothing after a failure; never
 * a wait for the server's own close_notify: the connection goes now, like
 * nginx's upstream connections on an abrupt close.
 */

static void
ngx_tiktok_reports_conn_ssl_close(ngx_tiktok_reports_conn_t *conn,
    ngx_connection_t *c)
{
    c->ssl->no_wait_shutdown = 1;

    if (conn->io_failed || !conn->connected) {
        c->ssl->no_send_shutdown = 1;
    }

    if (ngx_ssl_shutdown(c) == NGX_AGAIN) {
        /* close_notify did not fit: give up on it, free the SSL object */
        c->ssl->no_send_shutdown = 1;
        (void) ngx_ssl_shutdown(c);
    }
}


/*
 * The writer of a TLS connection's log: keeps the line's text as the
 * latest reason, and hands it on to the real log, failures at "info".
 */

static void
ngx_tiktok_reports_conn_ssl_log(ngx_log_t *log, ngx_uint_t level,
    u_char *buf, size_t len)
{
    u_char                     *p, *last, *msg;
    size_t                      n;
    ngx_tiktok_reports_conn_t  *conn;

    conn = log->wdata;
    last = buf + len;

    while (last > buf && (last[-1] == LF || last[-1] == CR)) {
        last--;
    }

    /* the text after "time [level] pid#tid: " */
    msg = buf;
    p = ngx_strlchr(buf, last, ']');

    if (p) {
        for (p++; p + 1 < last; p++) {
            if (p[0] == ':' && p[1] == ' ') {
                msg = p + 2;
                break;
            }
        }
    }

    if (level < NGX_LOG_DEBUG) {
        n = ngx_min((size_t) (last - msg), sizeof(conn->ssl_error) - 1);
        ngx_memcpy(conn->ssl_error, msg, n);
        conn->ssl_error[n] = '\0';

        if (level < NGX_LOG_INFO) {
            level = NGX_LOG_INFO;
        }
    }

    ngx_log_error(level, conn->log, 0, "%*s", (size_t) (last - msg), msg);
}

#endif
