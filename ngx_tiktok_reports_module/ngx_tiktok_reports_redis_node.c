
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * One Redis connection of one worker: connect without blocking, to the
 * address resolved at configuration time or to the one the discovery layer
 * gives (ngx_tiktok_reports_redis_discovery.c), pipeline the handshake
 * (AUTH, SELECT, ROLE where the master must be checked, SCRIPT LOAD)
 * ahead of whatever requests queue behind it, keep the queue of commands
 * (sent and not yet sent) and match replies to them, bound what
 * is outstanding, drop commands whose request was answered before they
 * went out, watch for replies that do not come, and reconnect with a
 * growing delay after a failure.  The socket itself is the connection
 * layer's (ngx_tiktok_reports_redis_conn.c).
 */


#include "ngx_tiktok_reports_redis.h"


#define NGX_TIKTOK_REPORTS_BACKOFF_MIN  100
#define NGX_TIKTOK_REPORTS_BACKOFF_MAX  2000

/* commands the ring holds at first; it doubles when full */
#define NGX_TIKTOK_REPORTS_RING_MIN     64

/* commands handed to one writev() */
#define NGX_TIKTOK_REPORTS_IOV          64


#define ngx_tiktok_reports_node_slot(node, i)                                 \
    (&(node)->ring[((node)->head + (i)) % (node)->ring_size])


static ngx_int_t ngx_tiktok_reports_node_connect(
    ngx_tiktok_reports_node_t *node);
static ngx_int_t ngx_tiktok_reports_node_open(ngx_tiktok_reports_node_t *node);
static ngx_int_t ngx_tiktok_reports_node_handshake(
    ngx_tiktok_reports_node_t *node);
static void ngx_tiktok_reports_node_handshake_reply(
    ngx_tiktok_reports_node_t *node, redisReply *reply, void *data);
static void ngx_tiktok_reports_node_reply(void *data, redisReply *reply);
static void ngx_tiktok_reports_node_failed(void *data, const char *why);
static void ngx_tiktok_reports_node_writable(void *data);
static void ngx_tiktok_reports_node_flush_handler(ngx_event_t *ev);
static void ngx_tiktok_reports_node_flush(ngx_tiktok_reports_node_t *node);
static void ngx_tiktok_reports_node_fail(ngx_tiktok_reports_node_t *node,
    const char *why);
static void ngx_tiktok_reports_node_lost(ngx_tiktok_reports_node_t *node,
    ngx_uint_t reconnect);
static void ngx_tiktok_reports_node_watchdog(ngx_event_t *ev);
static void ngx_tiktok_reports_node_reconnect(ngx_event_t *ev);
static ngx_int_t ngx_tiktok_reports_node_push(ngx_tiktok_reports_node_t *node,
    ngx_tiktok_reports_node_cmd_t *cmd);
static void ngx_tiktok_reports_node_pop(ngx_tiktok_reports_node_t *node);
static u_char *ngx_tiktok_reports_node_format(int argc, const char **argv,
    const size_t *argvlen, size_t *len, ngx_log_t *log);
static void ngx_tiktok_reports_node_ignore(ngx_tiktok_reports_node_t *node,
    redisReply *reply, void *data);
static ngx_int_t ngx_tiktok_reports_node_wait(
    ngx_tiktok_reports_node_t *node);
static void ngx_tiktok_reports_node_wait_reply(
    ngx_tiktok_reports_node_t *node, redisReply *reply, void *data);


ngx_int_t
ngx_tiktok_reports_node_init(ngx_tiktok_reports_node_t *node,
    ngx_uint_t index, ngx_tiktok_reports_redis_conf_t *conf,
    ngx_str_t *script, ngx_log_t *log)
{
    ngx_memzero(node, sizeof(ngx_tiktok_reports_node_t));

    node->index = index;
    node->conf = conf;
    node->target = conf;
    node->log = log;
    node->script = *script;
    node->backoff = NGX_TIKTOK_REPORTS_BACKOFF_MIN;

    node->conn.data = node;
    node->conn.reply = ngx_tiktok_reports_node_reply;
    node->conn.failed = ngx_tiktok_reports_node_failed;
    node->conn.writable = ngx_tiktok_reports_node_writable;

    node->watchdog.handler = ngx_tiktok_reports_node_watchdog;
    node->watchdog.data = node;
    node->watchdog.log = log;
    node->watchdog.cancelable = 1;

    node->reconnect.handler = ngx_tiktok_reports_node_reconnect;
    node->reconnect.data = node;
    node->reconnect.log = log;
    node->reconnect.cancelable = 1;

    node->flush.handler = ngx_tiktok_reports_node_flush_handler;
    node->flush.data = node;
    node->flush.log = log;

    /*
     * A failure here is not fatal: requests answer 503 until Redis is up.
     * Without an address yet, the discovery layer starts the node.
     */
    if (conf->sockaddr) {
        (void) ngx_tiktok_reports_node_connect(node);
    }

    return NGX_OK;
}


/* a command nobody needs the reply of (ASKING) */

static void
ngx_tiktok_reports_node_ignore(ngx_tiktok_reports_node_t *node,
    redisReply *reply, void *data)
{
}


/* connects now, unless connected, connecting, or a reconnect is planned */

void
ngx_tiktok_reports_node_start(ngx_tiktok_reports_node_t *node)
{
    if (node->conn.peer.connection == NULL && !node->discovering
        && !node->reconnect.timer_set && !ngx_exiting && !ngx_quit)
    {
        (void) ngx_tiktok_reports_node_connect(node);
    }
}


/*
 * The discovery layer's answer to node->discover() that said NGX_AGAIN:
 * the target address is ready (why is NULL), or there is none, and why.
 * A node that stopped waiting meanwhile (its watchdog) ignores it.
 */

void
ngx_tiktok_reports_node_discovered(ngx_tiktok_reports_node_t *node,
    const char *why)
{
    if (!node->discovering) {
        return;
    }

    node->discovering = 0;

    if (why) {
        ngx_tiktok_reports_node_failed(node, why);
        return;
    }

    (void) ngx_tiktok_reports_node_open(node);
}


/*
 * The connection no longer reaches what it should (the master moved):
 * drop it; the reconnect asks the discovery layer again.
 */

void
ngx_tiktok_reports_node_drop(ngx_tiktok_reports_node_t *node,
    const char *why)
{
    if (node->conn.peer.connection) {
        ngx_tiktok_reports_node_failed(node, why);
    }
}


void
ngx_tiktok_reports_node_close(ngx_tiktok_reports_node_t *node)
{
    if (node->reconnect.timer_set) {
        ngx_del_timer(&node->reconnect);
    }

    /* what waits gets a NULL reply now: its requests get 503 */
    ngx_tiktok_reports_node_lost(node, 0);

    ngx_tiktok_reports_metrics_connected(node->index, NGX_TIKTOK_REPORTS_GONE);

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


/*
 * Queues a command; it goes out with the others of this event loop
 * iteration, in one writev() once the iteration is over.  wanted(data),
 * asked right before the command is sent, may say that nobody waits for it
 * any more: it is then dropped unsent, and handler gets a NULL reply.
 */

ngx_int_t
ngx_tiktok_reports_node_command(ngx_tiktok_reports_node_t *node,
    ngx_tiktok_reports_node_reply_pt handler, void *data,
    ngx_tiktok_reports_node_wanted_pt wanted, ngx_msec_t timeout, int argc,
    const char **argv, const size_t *argvlen)
{
    ngx_tiktok_reports_node_cmd_t  cmd;

    /* while the address is being found, commands wait in the queue */
    if (node->conn.peer.connection == NULL && !node->discovering) {

        /* while a reconnect is planned, requests do not hammer Redis */
        if (node->reconnect.timer_set
            || ngx_tiktok_reports_node_connect(node) != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    cmd.data = data;
    cmd.handler = handler ? handler : ngx_tiktok_reports_node_ignore;
    cmd.wanted = wanted;
    cmd.sent = ngx_current_msec;
    cmd.timeout = timeout;
    cmd.dropped = 0;

    cmd.buf = ngx_tiktok_reports_node_format(argc, argv, argvlen, &cmd.len,
                                             node->log);
    if (cmd.buf == NULL) {
        return NGX_ERROR;
    }

    if (ngx_tiktok_reports_node_push(node, &cmd) != NGX_OK) {
        ngx_free(cmd.buf);
        return NGX_ERROR;
    }

    if (!node->flush.posted) {
        ngx_post_event(&node->flush, &ngx_posted_events);
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


ngx_int_t
ngx_tiktok_reports_node_write(ngx_tiktok_reports_node_t *node,
    ngx_tiktok_reports_node_reply_pt handler, void *data,
    ngx_tiktok_reports_node_wanted_pt wanted, ngx_msec_t timeout, int argc,
    const char **argv, const size_t *argvlen)
{
    ngx_int_t  rc;

    rc = ngx_tiktok_reports_node_command(node, handler, data, wanted,
                                         timeout, argc, argv, argvlen);

    if (rc == NGX_OK && node->conf->wait_replicas) {
        /* the next flush appends a WAIT behind it */
        node->unwaited = 1;
    }

    return rc;
}


/*
 * Replies come in order, so the first WAIT still in the ring is the one
 * that follows the write whose reply is being handled.
 */

ngx_int_t
ngx_tiktok_reports_node_hold(ngx_tiktok_reports_node_t *node,
    ngx_tiktok_reports_node_hold_t *hold)
{
    ngx_tiktok_reports_node_barrier_t  *b;

    b = node->barriers;

    if (b == NULL) {
        return NGX_ERROR;
    }

    hold->next = NULL;
    *b->last = hold;
    b->last = &hold->next;

    return NGX_OK;
}


/*
 * One WAIT behind the writes queued since the last one; it has no request
 * of its own, so it is never dropped: the writes before it may have gone.
 */

static ngx_int_t
ngx_tiktok_reports_node_wait(ngx_tiktok_reports_node_t *node)
{
    u_char                              n[NGX_INT_T_LEN], t[NGX_INT_T_LEN];
    size_t                              argvlen[3];
    const char                         *argv[3];
    ngx_tiktok_reports_node_cmd_t       cmd;
    ngx_tiktok_reports_node_barrier_t  *b;

    b = ngx_alloc(sizeof(ngx_tiktok_reports_node_barrier_t), node->log);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->first = NULL;
    b->last = &b->first;
    b->next = NULL;

    argv[0] = "WAIT";
    argvlen[0] = 4;
    argv[1] = (const char *) n;
    argvlen[1] = ngx_sprintf(n, "%ui", node->conf->wait_replicas) - n;
    argv[2] = (const char *) t;
    argvlen[2] = ngx_sprintf(t, "%M", node->conf->wait_timeout) - t;

    ngx_memzero(&cmd, sizeof(ngx_tiktok_reports_node_cmd_t));

    cmd.handler = ngx_tiktok_reports_node_wait_reply;
    cmd.data = b;
    cmd.sent = ngx_current_msec;

    cmd.buf = ngx_tiktok_reports_node_format(3, argv, argvlen, &cmd.len,
                                             node->log);
    if (cmd.buf == NULL) {
        ngx_free(b);
        return NGX_ERROR;
    }

    if (ngx_tiktok_reports_node_push(node, &cmd) != NGX_OK) {
        ngx_free(cmd.buf);
        ngx_free(b);
        return NGX_ERROR;
    }

    if (node->barriers_last) {
        node->barriers_last->next = b;

    } else {
        node->barriers = b;
    }

    node->barriers_last = b;
    node->unwaited = 0;

    return NGX_OK;
}


/* what WAIT says goes to every outcome held for it */

static void
ngx_tiktok_reports_node_wait_reply(ngx_tiktok_reports_node_t *node,
    redisReply *reply, void *data)
{
    ngx_tiktok_reports_node_barrier_t  *b = data;

    ngx_int_t                        rc;
    ngx_tiktok_reports_node_hold_t  *h, *next;

    /* when the connection was lost, the list was emptied already */
    if (node->barriers == b) {
        node->barriers = b->next;

        if (node->barriers == NULL) {
            node->barriers_last = NULL;
        }
    }

    rc = NGX_ERROR;

    if (reply == NULL) {
        /* the connection failed: logged as such */

    } else if (reply->type == REDIS_REPLY_INTEGER
               && reply->integer >= (long long) node->conf->wait_replicas)
    {
        rc = NGX_OK;

        if (node->wait_logged) {
            node->wait_logged = 0;
            ngx_log_error(NGX_LOG_NOTICE, node->log, 0,
                          "tiktok_reports: redis %V: replicas confirm "
                          "writes again", &node->conf->name);
        }

    } else {
        ngx_tiktok_reports_metrics_redis_error(0);

        /* once until replicas confirm again, not once per flush */
        if (!node->wait_logged) {
            node->wait_logged = 1;

            if (reply->type == REDIS_REPLY_INTEGER) {
                ngx_log_error(NGX_LOG_ERR, node->log, 0,
                              "tiktok_reports: redis %V: WAIT confirmed "
                              "%L of %ui replicas within %M ms, writes get "
                              "503 until enough replicas follow",
                              &node->conf->name, (int64_t) reply->integer,
                              node->conf->wait_replicas,
                              node->conf->wait_timeout);

            } else {
                ngx_log_error(NGX_LOG_ERR, node->log, 0,
                              "tiktok_reports: redis %V refused WAIT: %*s",
                              &node->conf->name,
                              reply->type == REDIS_REPLY_ERROR
                              ? (size_t) reply->len : 0,
                              reply->type == REDIS_REPLY_ERROR
                              ? reply->str : "");
            }
        }
    }

    for (h = b->first; h; h = next) {
        next = h->next;
        h->handler(h->data, rc);
    }

    ngx_free(b);
}


/* the command in Redis's protocol, in memory of its own */

static u_char *
ngx_tiktok_reports_node_format(int argc, const char **argv,
    const size_t *argvlen, size_t *len, ngx_log_t *log)
{
    int      i;
    u_char  *buf, *p;
    size_t   size;

    size = sizeof("*\r\n") - 1 + NGX_INT_T_LEN;

    for (i = 0; i < argc; i++) {
        size += sizeof("$\r\n\r\n") - 1 + NGX_SIZE_T_LEN + argvlen[i];
    }

    buf = ngx_alloc(size, log);
    if (buf == NULL) {
        return NULL;
    }

    p = ngx_sprintf(buf, "*%d\r\n", argc);

    for (i = 0; i < argc; i++) {
        p = ngx_sprintf(p, "$%uz\r\n", argvlen[i]);
        p = ngx_cpymem(p, argv[i], argvlen[i]);
        *p++ = '\r';
        *p++ = '\n';
    }

    *len = p - buf;

    return buf;
}


static ngx_int_t
ngx_tiktok_reports_node_push(ngx_tiktok_reports_node_t *node,
    ngx_tiktok_reports_node_cmd_t *cmd)
{
    ngx_uint_t                      i, size;
    ngx_tiktok_reports_node_cmd_t  *ring;

    if (node->count == node->ring_size) {
        size = node->ring_size ? node->ring_size * 2
                               : NGX_TIKTOK_REPORTS_RING_MIN;

        ring = ngx_alloc(size * sizeof(ngx_tiktok_reports_node_cmd_t),
                         node->log);
        if (ring == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < node->count; i++) {
            ring[i] = *ngx_tiktok_reports_node_slot(node, i);
        }

        if (node->ring) {
            ngx_free(node->ring);
        }

        node->ring = ring;
        node->ring_size = size;
        node->head = 0;
    }

    *ngx_tiktok_reports_node_slot(node, node->count) = *cmd;

    node->count++;
    node->pending++;
    node->pending_bytes += cmd->len;

    return NGX_OK;
}


/* the oldest slot, answered or dropped, leaves the ring */

static void
ngx_tiktok_reports_node_pop(ngx_tiktok_reports_node_t *node)
{
    ngx_tiktok_reports_node_cmd_t  *cmd;

    cmd = &node->ring[node->head];

    if (!cmd->dropped) {
        node->pending_bytes -= cmd->len;
        node->pending--;
        ngx_free(cmd->buf);
    }

    node->head = (node->head + 1) % node->ring_size;
    node->count--;

    if (node->nsent) {
        node->nsent--;
    }

    if (node->pending == 0) {
        node->busy_logged = 0;
    }
}


static ngx_int_t
ngx_tiktok_reports_node_connect(ngx_tiktok_reports_node_t *node)
{
    ngx_int_t    rc;
    const char  *why;

    node->ready = 0;
    node->handshake_failed = 0;
    node->role_pending = 0;
    node->role_sent = 0;

    if (node->discover == NULL) {
        if (ngx_tiktok_reports_node_open(node) != NGX_OK) {
            return NGX_ERROR;
        }

        if (ngx_tiktok_reports_node_handshake(node) != NGX_OK) {
            ngx_tiktok_reports_node_failed(node, "out of memory");
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    /*
     * The address is asked for at each connect (a host name resolved
     * again, the master found again); the handshake and the requests wait
     * in the queue meanwhile.
     */

    node->discovering = 1;

    if (ngx_tiktok_reports_node_handshake(node) != NGX_OK) {
        ngx_tiktok_reports_node_failed(node, "out of memory");
        return NGX_ERROR;
    }

    why = NULL;
    rc = node->discover(node->discover_data, &why);

    if (rc == NGX_AGAIN) {
        /* ngx_tiktok_reports_node_discovered() follows */
        return NGX_OK;
    }

    if (!node->discovering) {
        /* the node failed in there */
        return NGX_ERROR;
    }

    node->discovering = 0;

    if (rc != NGX_OK) {
        ngx_tiktok_reports_node_failed(node,
                                       why ? why : "no address to connect");
        return NGX_ERROR;
    }

    return ngx_tiktok_reports_node_open(node);
}


static ngx_int_t
ngx_tiktok_reports_node_open(ngx_tiktok_reports_node_t *node)
{
    u_char     why[NGX_MAX_ERROR_STR];
    ngx_err_t  err;

    if (ngx_tiktok_reports_conn_open(&node->conn, node->target, node->log,
                                     &err)
        != NGX_OK)
    {
        *ngx_tiktok_reports_conn_reason(why, why + sizeof(why) - 1,
                                        err ? "connect() failed"
                                            : "cannot open a connection",
                                        err)
            = '\0';

        ngx_tiktok_reports_node_failed(node, (char *) why);
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, node->log, 0,
                   "tiktok_reports: connecting to redis %V at %V",
                   &node->conf->name, &node->target->name);

    if (node->conn.connected) {
        /* what waits in the queue goes out with this iteration */
        if (node->count && !node->flush.posted) {
            ngx_post_event(&node->flush, &ngx_posted_events);
        }
    }

    return NGX_OK;
}


/*
 * The handshake is pipelined: commands of requests queue behind it on the
 * same socket and are answered in order, so a request never waits for a
 * separate "ready" step.
 */

static ngx_int_t
ngx_tiktok_reports_node_handshake(ngx_tiktok_reports_node_t *node)
{
    int                               n;
    u_char                            db[NGX_INT_T_LEN];
    const char                       *argv[3];
    size_t                            argvlen[3];
    ngx_tiktok_reports_redis_conf_t  *conf;

    conf = node->conf;

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
                                    ngx_tiktok_reports_node_handshake_reply,
                                    "AUTH", NULL, 0, n, argv, argvlen)
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
                                    ngx_tiktok_reports_node_handshake_reply,
                                    "SELECT", NULL, 0, 2, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (node->check_role) {
        /* a replica, or an old master not yet demoted, is not written to */
        argv[0] = "ROLE";
        argvlen[0] = 4;

        if (ngx_tiktok_reports_node_command(node,
                                    ngx_tiktok_reports_node_handshake_reply,
                                    "ROLE", NULL, 0, 1, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        /*
         * what queues behind waits for the answer: a replica that takes
         * writes would take them before its ROLE reply is read
         */
        node->role_pending = 1;
    }

    argv[0] = "SCRIPT";
    argvlen[0] = 6;
    argv[1] = "LOAD";
    argvlen[1] = 4;
    argv[2] = (const char *) node->script.data;
    argvlen[2] = node->script.len;

    return ngx_tiktok_reports_node_command(node,
                                    ngx_tiktok_reports_node_handshake_reply,
                                    "SCRIPT LOAD", NULL, 0, 3, argv, argvlen);
}


static void
ngx_tiktok_reports_node_handshake_reply(ngx_tiktok_reports_node_t *node,
    redisReply *reply, void *data)
{
    u_char       why[NGX_MAX_ERROR_STR];
    redisReply  *role;

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        *ngx_snprintf(why, sizeof(why) - 1, "%s refused: %*s", (char *) data,
                      (size_t) reply->len, reply->str) = '\0';

        /*
         * what is pipelined behind must not count: after a refused SELECT
         * its replies come from the wrong database
         */
        node->handshake_failed = 1;
        node->ready = 0;
        ngx_tiktok_reports_node_failed(node, (char *) why);
        return;
    }

    if (ngx_strcmp((char *) data, "ROLE") == 0) {
        role = (reply->type == REDIS_REPLY_ARRAY && reply->elements
                && reply->element[0]->type == REDIS_REPLY_STRING)
               ? reply->element[0] : NULL;

        if (role == NULL || role->len != 6
            || ngx_strncmp(role->str, "master", 6) != 0)
        {
            *ngx_snprintf(why, sizeof(why) - 1,
                          "%V is not the master (ROLE: %*s)",
                          &node->target->name,
                          role ? (size_t) role->len : 1,
                          role ? role->str : "?") = '\0';

            node->handshake_failed = 1;
            ngx_tiktok_reports_node_failed(node, (char *) why);
            return;
        }

        node->role_pending = 0;
        node->role_sent = 0;

        if (node->nsent < node->count && !node->flush.posted) {
            ngx_post_event(&node->flush, &ngx_posted_events);
        }

        return;
    }

    if (ngx_strcmp((char *) data, "SCRIPT LOAD") == 0) {
        node->ready = 1;
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


/* a reply from the connection: it answers the oldest command sent */

static void
ngx_tiktok_reports_node_reply(void *data, redisReply *reply)
{
    ngx_tiktok_reports_node_t      *node = data;

    ngx_connection_t               *c;
    ngx_tiktok_reports_node_cmd_t   cmd;

    /* commands dropped unsent are skipped: Redis never saw them */
    while (node->count && node->nsent && node->ring[node->head].dropped) {
        ngx_tiktok_reports_node_pop(node);
    }

    if (node->nsent == 0) {
        ngx_tiktok_reports_node_failed(node, "a reply to no command");
        return;
    }

    cmd = node->ring[node->head];
    cmd.buf = NULL;

    ngx_tiktok_reports_node_pop(node);

    c = node->conn.peer.connection;

    /* the ring may change in there: "cmd" is a copy */
    cmd.handler(node, reply, cmd.data);

    /*
     * READONLY: the server was a master and is a replica now; with a
     * discovery layer, the next connection finds the master again
     */
    if (node->discover && reply->type == REDIS_REPLY_ERROR
        && reply->len >= 8 && ngx_strncmp(reply->str, "READONLY", 8) == 0
        && node->conn.peer.connection == c)
    {
        ngx_tiktok_reports_node_failed(node,
                                       "READONLY: no longer the master");
    }
}


static void
ngx_tiktok_reports_node_failed(void *data, const char *why)
{
    ngx_tiktok_reports_node_t  *node = data;

    ngx_tiktok_reports_node_fail(node, why);
    ngx_tiktok_reports_node_lost(node, !ngx_exiting && !ngx_quit);
}


static void
ngx_tiktok_reports_node_writable(void *data)
{
    ngx_tiktok_reports_node_flush(data);
}


static void
ngx_tiktok_reports_node_flush_handler(ngx_event_t *ev)
{
    ngx_tiktok_reports_node_flush(ev->data);
}


/*
 * Hands the commands not yet sent to the connection, up to 64 a writev(),
 * until all went or the socket is full (the connection's write event calls
 * again).  A command that nobody waits for any more is dropped here, before
 * any byte of it went out; its handler runs after the write, so that the
 * ring does not change under the loop.
 */

static void
ngx_tiktok_reports_node_flush(ngx_tiktok_reports_node_t *node)
{
    size_t                          first;
    ngx_int_t                       rc;
    ngx_uint_t                      i, n, d, k, held,
                                    slot[NGX_TIKTOK_REPORTS_IOV];
    ngx_buf_t                       buf[NGX_TIKTOK_REPORTS_IOV];
    ngx_chain_t                     out[NGX_TIKTOK_REPORTS_IOV];
    ngx_tiktok_reports_node_cmd_t  *cmd, dropped[NGX_TIKTOK_REPORTS_IOV];

    if (node->flush.posted) {
        ngx_delete_posted_event(&node->flush);
    }

    /* a WAIT behind the writes of this flush, once for all of them */
    if (node->unwaited && node->conn.connected
        && ngx_tiktok_reports_node_wait(node) != NGX_OK)
    {
        ngx_tiktok_reports_node_failed(node, "out of memory");
        return;
    }

    for ( ;; ) {

        if (!node->conn.connected) {
            /* the connection calls again once connect(2) is done */
            return;
        }

        if (node->role_sent) {
            /* ROLE's reply posts the flush again */
            return;
        }

        n = 0;
        d = 0;
        held = 0;

        for (i = node->nsent;
             i < node->count && n < NGX_TIKTOK_REPORTS_IOV
                             && d < NGX_TIKTOK_REPORTS_IOV;
             i++)
        {
            cmd = ngx_tiktok_reports_node_slot(node, i);

            if (cmd->dropped) {
                continue;
            }

            first = (i == node->nsent) ? node->partial : 0;

            if (first == 0 && cmd->wanted && !cmd->wanted(cmd->data)) {
                dropped[d++] = *cmd;
                cmd->dropped = 1;
                node->pending--;
                node->pending_bytes -= cmd->len;
                ngx_free(cmd->buf);
                continue;
            }

            ngx_memzero(&buf[n], sizeof(ngx_buf_t));
            buf[n].pos = cmd->buf + first;
            buf[n].last = cmd->buf + cmd->len;
            buf[n].memory = 1;

            out[n].buf = &buf[n];
            out[n].next = NULL;

            if (n) {
                out[n - 1].next = &out[n];
            }

            slot[n++] = i;

            if (node->role_pending
                && cmd->handler == ngx_tiktok_reports_node_handshake_reply
                && ngx_strcmp((char *) cmd->data, "ROLE") == 0)
            {
                /* the rest goes once ROLE said "master" */
                held = 1;
                i++;
                break;
            }
        }

        rc = NGX_OK;

        if (n) {
            rc = ngx_tiktok_reports_conn_send(&node->conn, out);

            if (rc == NGX_ERROR) {
                /* the node was failed and its ring emptied in there */
                for (k = 0; k < d; k++) {
                    dropped[k].handler(node, NULL, dropped[k].data);
                }

                return;
            }

            /* what went whole is sent; the first not whole is partial */

            node->partial = 0;

            for (k = 0; k < n; k++) {
                if (buf[k].pos != buf[k].last) {
                    node->partial = buf[k].pos
                              - ngx_tiktok_reports_node_slot(node,
                                                             slot[k])->buf;
                    break;
                }
            }

            node->nsent = (k == n) ? i : slot[k];

            if (held && k == n) {
                node->role_sent = 1;
            }

        } else {
            node->nsent = i;
        }

        /* nobody waits for these; their handlers may queue new commands */
        for (k = 0; k < d; k++) {
            dropped[k].handler(node, NULL, dropped[k].data);
        }

        if (rc == NGX_AGAIN || node->nsent == node->count || held) {
            break;
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

    if (node->target->name.data == node->conf->name.data) {
        ngx_log_error(level, node->log, 0,
                      "tiktok_reports: redis %V unavailable: %s",
                      &node->conf->name, why);

    } else {
        /* the address the discovery layer gave */
        ngx_log_error(level, node->log, 0,
                      "tiktok_reports: redis %V (at %V) unavailable: %s",
                      &node->conf->name, &node->target->name, why);
    }

    node->down_logged = 1;
}


/*
 * The connection is gone: close it, plan a reconnect, and give every
 * command that waited a NULL reply.  The ring is taken out first, so that
 * whatever the handlers do meets an empty node.
 */

static void
ngx_tiktok_reports_node_lost(ngx_tiktok_reports_node_t *node,
    ngx_uint_t reconnect)
{
    ngx_uint_t                      i, count, head, size;
    ngx_tiktok_reports_node_cmd_t  *ring, *cmd;

    if (node->conn.peer.connection) {
        ngx_tiktok_reports_metrics_connected(node->index, 0);
    }

    node->ready = 0;
    node->role_pending = 0;
    node->role_sent = 0;
    ngx_tiktok_reports_conn_close(&node->conn);

    /* an answer of the discovery layer that comes later is not waited for */
    node->discovering = 0;

    if (node->watchdog.timer_set) {
        ngx_del_timer(&node->watchdog);
    }

    if (node->flush.posted) {
        ngx_delete_posted_event(&node->flush);
    }

    if (reconnect && !node->reconnect.timer_set) {
        ngx_add_timer(&node->reconnect, node->backoff);

        node->backoff *= 2;

        if (node->backoff > NGX_TIKTOK_REPORTS_BACKOFF_MAX) {
            node->backoff = NGX_TIKTOK_REPORTS_BACKOFF_MAX;
        }
    }

    ring = node->ring;
    count = node->count;
    head = node->head;
    size = node->ring_size;

    node->ring = NULL;
    node->ring_size = 0;
    node->count = 0;
    node->head = 0;
    node->nsent = 0;
    node->partial = 0;
    node->pending = 0;
    node->pending_bytes = 0;
    node->busy_logged = 0;
    node->barriers = NULL;
    node->barriers_last = NULL;
    node->unwaited = 0;

    for (i = 0; i < count; i++) {
        cmd = &ring[(head + i) % size];

        if (cmd->dropped) {
            continue;
        }

        ngx_free(cmd->buf);
        cmd->handler(node, NULL, cmd->data);
    }

    if (ring == NULL) {
        return;
    }

    /* keep the larger ring, unless the handlers made a new one */
    if (node->ring == NULL) {
        node->ring = ring;
        node->ring_size = size;

    } else {
        ngx_free(ring);
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
    ngx_uint_t                      i, oldest;
    ngx_msec_t                      waited, limit;
    ngx_tiktok_reports_node_cmd_t  *cmd;
    ngx_tiktok_reports_node_t      *node;

    node = ev->data;

    if (node->pending == 0) {
        return;
    }

    /* the longest a request waiting here waits; the handshake's own bound */
    limit = 0;
    oldest = node->count;

    for (i = 0; i < node->count; i++) {
        cmd = ngx_tiktok_reports_node_slot(node, i);

        if (cmd->dropped) {
            continue;
        }

        if (oldest == node->count) {
            oldest = i;
        }

        if (cmd->timeout > limit) {
            limit = cmd->timeout;
        }
    }

    if (limit == 0) {
        limit = node->conf->timeout;
    }

    cmd = ngx_tiktok_reports_node_slot(node, oldest);
    waited = ngx_current_msec - cmd->sent;

    if (waited < limit) {
        ngx_add_timer(&node->watchdog, limit - waited);
        return;
    }

    ngx_tiktok_reports_node_failed(node, node->discovering
                                         ? "timed out finding the address"
                                         : "timed out");
}


static void
ngx_tiktok_reports_node_reconnect(ngx_event_t *ev)
{
    ngx_tiktok_reports_node_t  *node;

    node = ev->data;

    if (node->conn.peer.connection || node->discovering || ngx_exiting
        || ngx_quit)
    {
        return;
    }

    ngx_tiktok_reports_metrics_reconnect();

    (void) ngx_tiktok_reports_node_connect(node);
}


ngx_int_t
ngx_tiktok_reports_node_state(ngx_tiktok_reports_node_t *node,
    const char **state, ngx_uint_t *outstanding)
{
    *outstanding = node->pending;

    if (node->ready && node->conn.peer.connection) {
        *state = "connected";
        return NGX_OK;
    }

    if (node->handshake_failed) {
        *state = "handshake failed";

    } else if (node->conn.peer.connection) {
        *state = "connecting";

    } else if (node->reconnect.timer_set) {
        *state = "reconnecting";

    } else {
        *state = "disconnected";
    }

    return NGX_DECLINED;
}
