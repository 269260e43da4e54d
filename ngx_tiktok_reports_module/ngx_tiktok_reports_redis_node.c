
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * One Redis connection of one worker: connect without DNS (the address was
 * resolved at configuration time), pipeline the handshake (AUTH, SELECT,
 * SCRIPT LOAD) ahead of whatever requests queue behind it, bound what is
 * outstanding on it, watch for replies that do not come (hiredis 0.14 has
 * no timeouts of its own), and reconnect with a growing delay after a
 * failure.
 */


#include "ngx_tiktok_reports_redis.h"


#define NGX_TIKTOK_REPORTS_BACKOFF_MIN  100
#define NGX_TIKTOK_REPORTS_BACKOFF_MAX  2000

/* commands the ring holds at first; it doubles when full */
#define NGX_TIKTOK_REPORTS_RING_MIN     64


static ngx_int_t ngx_tiktok_reports_node_connect(
    ngx_tiktok_reports_node_t *node);
static void ngx_tiktok_reports_node_fail(ngx_tiktok_reports_node_t *node,
    const char *why);
static void ngx_tiktok_reports_node_connected(const redisAsyncContext *ac,
    int status);
static void ngx_tiktok_reports_node_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_tiktok_reports_node_handshake(redisAsyncContext *ac,
    void *reply, void *data);
static void ngx_tiktok_reports_node_lost(ngx_tiktok_reports_node_t *node);
static void ngx_tiktok_reports_node_watchdog(ngx_event_t *ev);
static void ngx_tiktok_reports_node_reconnect(ngx_event_t *ev);
static ngx_int_t ngx_tiktok_reports_node_push(ngx_tiktok_reports_node_t *node,
    ngx_msec_t timeout, size_t bytes);
static void ngx_tiktok_reports_node_pop(ngx_tiktok_reports_node_t *node);
static void ngx_tiktok_reports_node_forget(ngx_tiktok_reports_node_t *node);


ngx_int_t
ngx_tiktok_reports_node_init(ngx_tiktok_reports_node_t *node,
    ngx_uint_t index, ngx_tiktok_reports_redis_conf_t *conf,
    ngx_str_t *script, ngx_log_t *log)
{
    ngx_memzero(node, sizeof(ngx_tiktok_reports_node_t));

    node->index = index;
    node->conf = conf;
    node->log = log;
    node->script = *script;
    node->backoff = NGX_TIKTOK_REPORTS_BACKOFF_MIN;

    node->watchdog.handler = ngx_tiktok_reports_node_watchdog;
    node->watchdog.data = node;
    node->watchdog.log = log;
    node->watchdog.cancelable = 1;

    node->reconnect.handler = ngx_tiktok_reports_node_reconnect;
    node->reconnect.data = node;
    node->reconnect.log = log;
    node->reconnect.cancelable = 1;

    /* a failure here is not fatal: requests answer 503 until Redis is up */
    (void) ngx_tiktok_reports_node_connect(node);

    return NGX_OK;
}


void
ngx_tiktok_reports_node_close(ngx_tiktok_reports_node_t *node)
{
    redisAsyncContext  *ac;

    if (node->watchdog.timer_set) {
        ngx_del_timer(&node->watchdog);
    }

    if (node->reconnect.timer_set) {
        ngx_del_timer(&node->reconnect);
    }

    ngx_tiktok_reports_metrics_connected(node->index, NGX_TIKTOK_REPORTS_GONE);

    ac = node->ac;

    if (ac) {
        node->ac = NULL;

        /* pending callbacks run now with a NULL reply: requests get 503 */
        ac->onDisconnect = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
    }

    ngx_tiktok_reports_node_forget(node);

    if (node->ring) {
        ngx_free(node->ring);
        node->ring = NULL;
        node->ring_size = 0;
    }
}


/*
 * Whether a request of this many commands and argument bytes may go out
 * now.  The connection is full when what waits on it would pass the
 * location's limits; one request is always let onto an idle connection,
 * however large, or a body bigger than the limits could never be stored.
 */

ngx_int_t
ngx_tiktok_reports_node_admit(ngx_tiktok_reports_node_t *node,
    ngx_tiktok_reports_redis_limits_t *limits, ngx_uint_t commands,
    size_t bytes)
{
    if (node->pending == 0
        || (node->pending + commands <= limits->commands
            && node->pending_bytes + bytes <= limits->bytes))
    {
        return NGX_OK;
    }

    /* once until the connection is idle again, not once per request */
    if (!node->busy_logged) {
        node->busy_logged = 1;

        ngx_log_error(NGX_LOG_WARN, node->log, 0,
                      "tiktok_reports: redis %V has %ui commands (%uz bytes) "
                      "outstanding, requests get 503 until it catches up",
                      &node->conf->name, node->pending, node->pending_bytes);
    }

    return NGX_BUSY;
}


ngx_int_t
ngx_tiktok_reports_node_command(ngx_tiktok_reports_node_t *node,
    redisCallbackFn *fn, void *data, ngx_msec_t timeout, int argc,
    const char **argv, const size_t *argvlen)
{
    int     i;
    size_t  bytes;

    if (node->ac == NULL) {

        /* while a reconnect is planned, requests do not hammer Redis */
        if (node->reconnect.timer_set
            || ngx_tiktok_reports_node_connect(node) != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    bytes = 0;

    for (i = 0; i < argc; i++) {
        bytes += argvlen[i];
    }

    /* the slot first: a command hiredis took must be accounted for */
    if (ngx_tiktok_reports_node_push(node, timeout, bytes) != NGX_OK) {
        return NGX_ERROR;
    }

    if (redisAsyncCommandArgv(node->ac, fn, data, argc, argv, argvlen)
        != REDIS_OK)
    {
        /* the newest slot is the one just taken */
        node->pending--;
        node->pending_bytes -= bytes;
        return NGX_ERROR;
    }

    /* a shorter timeout than the one the watchdog runs for brings it on */
    if (timeout == 0) {
        timeout = node->conf->timeout;
    }

    if (!node->watchdog.timer_set
        || (ngx_msec_int_t) (node->watchdog.timer.key - ngx_current_msec)
           > (ngx_msec_int_t) timeout)
    {
        ngx_add_timer(&node->watchdog, timeout);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_tiktok_reports_node_push(ngx_tiktok_reports_node_t *node,
    ngx_msec_t timeout, size_t bytes)
{
    ngx_uint_t                      i, size;
    ngx_tiktok_reports_node_cmd_t  *ring, *cmd;

    if (node->pending == node->ring_size) {
        size = node->ring_size ? node->ring_size * 2
                               : NGX_TIKTOK_REPORTS_RING_MIN;

        ring = ngx_alloc(size * sizeof(ngx_tiktok_reports_node_cmd_t),
                         node->log);
        if (ring == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < node->pending; i++) {
            ring[i] = node->ring[(node->head + i) % node->ring_size];
        }

        if (node->ring) {
            ngx_free(node->ring);
        }

        node->ring = ring;
        node->ring_size = size;
        node->head = 0;
    }

    cmd = &node->ring[(node->head + node->pending) % node->ring_size];
    cmd->sent = ngx_current_msec;
    cmd->timeout = timeout;
    cmd->bytes = bytes;

    node->pending++;
    node->pending_bytes += bytes;

    return NGX_OK;
}


static void
ngx_tiktok_reports_node_pop(ngx_tiktok_reports_node_t *node)
{
    if (node->pending == 0) {
        return;
    }

    node->pending_bytes -= node->ring[node->head].bytes;
    node->head = (node->head + 1) % node->ring_size;

    if (--node->pending == 0) {
        node->busy_logged = 0;
    }
}


/* the connection is gone, and what was outstanding on it with it */

static void
ngx_tiktok_reports_node_forget(ngx_tiktok_reports_node_t *node)
{
    node->pending = 0;
    node->pending_bytes = 0;
    node->head = 0;
    node->busy_logged = 0;
}


/*
 * Every reply callback of this node's commands starts here.  The reply to
 * use, or NULL: the connection was lost, is being closed, or its handshake
 * was refused (then even a reply that looks fine is not to be trusted: after
 * a refused SELECT it came from the wrong database).
 */

redisReply *
ngx_tiktok_reports_node_replied(redisAsyncContext *ac, void *reply)
{
    ngx_tiktok_reports_node_t  *node;

    node = ac->data;

    if (node == NULL) {
        return NULL;
    }

    /* a context already forgotten (the watchdog) has nothing in the ring */
    if (ac == node->ac) {
        ngx_tiktok_reports_node_pop(node);
    }

    return node->handshake_failed ? NULL : reply;
}


static ngx_int_t
ngx_tiktok_reports_node_connect(ngx_tiktok_reports_node_t *node)
{
    int                               n;
    u_char                            db[NGX_INT_T_LEN];
    const char                       *argv[3];
    size_t                            argvlen[3];
    redisAsyncContext                *ac;
    ngx_tiktok_reports_redis_conf_t  *conf;

    conf = node->conf;

    if (conf->path.len) {
        ac = redisAsyncConnectUnix((char *) conf->path.data);

    } else {
        ac = redisAsyncConnect((char *) conf->host.data, (int) conf->port);
    }

    if (ac == NULL) {
        ngx_tiktok_reports_node_fail(node, "out of memory");
        ngx_tiktok_reports_node_lost(node);
        return NGX_ERROR;
    }

    if (ac->err) {
        ngx_tiktok_reports_node_fail(node, ac->errstr);
        redisAsyncFree(ac);
        ngx_tiktok_reports_node_lost(node);
        return NGX_ERROR;
    }

    if (ngx_tiktok_reports_redis_attach(ac, node->log) != NGX_OK) {
        ngx_tiktok_reports_node_fail(node, "no free connection");
        redisAsyncFree(ac);
        ngx_tiktok_reports_node_lost(node);
        return NGX_ERROR;
    }

    ac->data = node;
    node->ac = ac;
    node->handshake_failed = 0;
    ngx_tiktok_reports_node_forget(node);

    redisAsyncSetConnectCallback(ac, ngx_tiktok_reports_node_connected);
    redisAsyncSetDisconnectCallback(ac, ngx_tiktok_reports_node_disconnected);

    /*
     * The handshake is pipelined: commands of requests queue behind it on
     * the same socket and are answered in order, so a request never waits
     * for a separate "ready" step.
     */

    if (conf->password.len) {
        n = 0;
        argv[n] = "AUTH";
        argvlen[n++] = 4;

        if (conf->user.len) {
            argv[n] = (const char *) conf->user.data;
            argvlen[n++] = conf->user.len;
        }

        argv[n] = (const char *) conf->password.data;
        argvlen[n++] = conf->password.len;

        if (ngx_tiktok_reports_node_command(node,
                                            ngx_tiktok_reports_node_handshake,
                                            "AUTH", 0, n, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (conf->db) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", conf->db) - db;

        if (ngx_tiktok_reports_node_command(node,
                                            ngx_tiktok_reports_node_handshake,
                                            "SELECT", 0, 2, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    argv[0] = "SCRIPT";
    argvlen[0] = 6;
    argv[1] = "LOAD";
    argvlen[1] = 4;
    argv[2] = (const char *) node->script.data;
    argvlen[2] = node->script.len;

    if (ngx_tiktok_reports_node_command(node,
                                        ngx_tiktok_reports_node_handshake,
                                        "SCRIPT LOAD", 0, 3, argv, argvlen)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, node->log, 0,
                   "tiktok_reports: connecting to redis %V", &conf->name);

    return NGX_OK;
}


static void
ngx_tiktok_reports_node_connected(const redisAsyncContext *ac, int status)
{
    ngx_tiktok_reports_node_t  *node;

    node = ac->data;

    if (node == NULL || status == REDIS_OK) {
        return;
    }

    /* hiredis frees the context after this callback */
    ngx_tiktok_reports_node_fail(node, ac->errstr);
    ngx_tiktok_reports_node_lost(node);
}


static void
ngx_tiktok_reports_node_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_tiktok_reports_node_t  *node;

    node = ac->data;

    if (node == NULL) {
        return;
    }

    ngx_tiktok_reports_node_fail(node, ac->err ? ac->errstr
                                               : "connection closed");
    ngx_tiktok_reports_node_lost(node);
}


static void
ngx_tiktok_reports_node_handshake(redisAsyncContext *ac, void *reply,
    void *data)
{
    u_char                      why[NGX_MAX_ERROR_STR];
    redisReply                 *rr;
    ngx_tiktok_reports_node_t  *node;

    node = ac->data;
    rr = ngx_tiktok_reports_node_replied(ac, reply);

    if (rr == NULL) {
        return;
    }

    if (rr->type == REDIS_REPLY_ERROR) {
        *ngx_snprintf(why, sizeof(why) - 1, "%s refused: %*s", (char *) data,
                      (size_t) rr->len, rr->str) = '\0';
        ngx_tiktok_reports_node_fail(node, (char *) why);

        /* what is pipelined behind gets NULL replies; then drop it */
        node->handshake_failed = 1;
        redisAsyncDisconnect(ac);
        return;
    }

    if (ngx_strcmp((char *) data, "SCRIPT LOAD") == 0) {
        ngx_tiktok_reports_metrics_connected(node->index, 1);
        node->backoff = NGX_TIKTOK_REPORTS_BACKOFF_MIN;

        if (node->down_logged) {
            node->down_logged = 0;
            ngx_log_error(NGX_LOG_NOTICE, node->log, 0,
                          "tiktok_reports: redis %V is up again",
                          &node->conf->name);
        }
    }
}


static void
ngx_tiktok_reports_node_fail(ngx_tiktok_reports_node_t *node,
    const char *why)
{
    ngx_uint_t  level;

    /* one line per outage, not one per reconnect attempt */
    level = node->down_logged ? NGX_LOG_INFO : NGX_LOG_ERR;

    ngx_log_error(level, node->log, 0,
                  "tiktok_reports: redis %V unavailable: %s",
                  &node->conf->name, why);

    node->down_logged = 1;
}


/* the context is being freed by hiredis: forget it, plan a reconnect */

static void
ngx_tiktok_reports_node_lost(ngx_tiktok_reports_node_t *node)
{
    ngx_tiktok_reports_metrics_connected(node->index, 0);

    node->ac = NULL;
    ngx_tiktok_reports_node_forget(node);

    if (node->watchdog.timer_set) {
        ngx_del_timer(&node->watchdog);
    }

    if (!node->reconnect.timer_set && !ngx_exiting && !ngx_quit) {
        ngx_add_timer(&node->reconnect, node->backoff);
    }

    node->backoff *= 2;

    if (node->backoff > NGX_TIKTOK_REPORTS_BACKOFF_MAX) {
        node->backoff = NGX_TIKTOK_REPORTS_BACKOFF_MAX;
    }
}


/*
 * Replies come in order, so the oldest command outstanding tells how far
 * behind Redis is.  Once it has waited longer than any request waiting on
 * this connection would wait, Redis is stuck or far too slow: drop the
 * connection, so that every waiting request gets its 503 now, and a new
 * connection starts without the backlog.  A reply now and then does not
 * keep a backlog alive; each location keeps its own timeout.
 */

static void
ngx_tiktok_reports_node_watchdog(ngx_event_t *ev)
{
    ngx_uint_t                  i;
    ngx_msec_t                  waited, limit, t;
    redisAsyncContext          *ac;
    ngx_tiktok_reports_node_t  *node;

    node = ev->data;

    if (node->ac == NULL || node->pending == 0) {
        return;
    }

    /* the longest a request waiting here waits; the handshake's own bound */
    limit = 0;

    for (i = 0; i < node->pending; i++) {
        t = node->ring[(node->head + i) % node->ring_size].timeout;

        if (t > limit) {
            limit = t;
        }
    }

    if (limit == 0) {
        limit = node->conf->timeout;
    }

    waited = ngx_current_msec - node->ring[node->head].sent;

    if (waited < limit) {
        ngx_add_timer(&node->watchdog, limit - waited);
        return;
    }

    ngx_tiktok_reports_node_fail(node, "timed out");

    ac = node->ac;
    ac->onDisconnect = NULL;
    ngx_tiktok_reports_node_lost(node);

    /* callbacks now run with a NULL reply; ac->data is still the node */
    redisAsyncFree(ac);
}


static void
ngx_tiktok_reports_node_reconnect(ngx_event_t *ev)
{
    ngx_tiktok_reports_node_t  *node;

    node = ev->data;

    if (node->ac || ngx_exiting || ngx_quit) {
        return;
    }

    (void) ngx_tiktok_reports_node_connect(node);
}
