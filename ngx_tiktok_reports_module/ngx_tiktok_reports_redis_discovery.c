
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * Where a node connects, when the configuration cannot say it once for
 * all: a host name resolved at each connect through nginx's resolver
 * (asynchronous, never the system's), or the master that Sentinel names.
 * The node asks before each connect (node->discover) and is told the
 * answer (ngx_tiktok_reports_node_discovered); when the master moves while
 * the node is connected, its connection is dropped, and the reconnect asks
 * again.
 *
 * Sentinel: the sentinels are asked in turn, "SENTINEL
 * get-master-addr-by-name", on one connection that then stays subscribed
 * to "+switch-master"; the master is asked again every few seconds (with
 * jitter, so that workers do not ask together), and the node confirms it
 * with ROLE before writing (a READONLY reply drops its connection too).
 * Sentinel connections are plain connections of the conn layer.
 */


#include "ngx_tiktok_reports_redis.h"


/* how often the master is asked for while all is well, and the jitter */
#define NGX_TIKTOK_REPORTS_RECHECK         5000
#define NGX_TIKTOK_REPORTS_RECHECK_JITTER  1000


struct ngx_tiktok_reports_discovery_s {
    ngx_tiktok_reports_node_t        *node;
    ngx_tiktok_reports_redis_conf_t  *conf;        /* the store's */
    ngx_log_t                        *log;

    /* the store's configuration with the address found: node->target */
    ngx_tiktok_reports_redis_conf_t   target;
    ngx_sockaddr_t                    sockaddr;
    u_char                            addr_text[NGX_SOCKADDR_STRLEN];
    u_char                            host_text[NGX_SOCKADDR_STRLEN + 1];

    /* a host name */
    ngx_resolver_ctx_t               *resolving;

    /* Sentinel */
    ngx_tiktok_reports_conn_t         sconn;
    ngx_tiktok_reports_redis_conf_t   sconf;       /* the one asked */
    u_char                            shost[NGX_SOCKADDR_STRLEN + 1];
    ngx_uint_t                        current;     /* its index */
    ngx_uint_t                        tried;       /* in this round */
    ngx_uint_t                        replies;     /* on sconn */
    ngx_buf_t                         out;         /* the two commands */
    u_char                           *request;
    size_t                            request_len;
    ngx_event_t                       timer;       /* no answer in time */
    ngx_event_t                       recheck;
    ngx_event_t                       next;        /* posted */

    u_char                            why[NGX_MAX_ERROR_STR];
    ngx_int_t                         rc;          /* of a round */

    unsigned                          asking:1;    /* a round is on */
    unsigned                          waiting:1;   /* the node waits */
    unsigned                          in_discover:1;
    unsigned                          found:1;     /* target is set */
    unsigned                          down_logged:1;
};


static ngx_int_t ngx_tiktok_reports_discovery_discover(void *data,
    const char **why);
static void ngx_tiktok_reports_discovery_finish(
    ngx_tiktok_reports_discovery_t *d, ngx_int_t rc);
static ngx_int_t ngx_tiktok_reports_discovery_set(
    ngx_tiktok_reports_discovery_t *d, u_char *ip, size_t len,
    ngx_int_t port, const char *moved);

static ngx_int_t ngx_tiktok_reports_resolve(ngx_tiktok_reports_discovery_t *d);
static void ngx_tiktok_reports_resolve_handler(ngx_resolver_ctx_t *ctx);

static void ngx_tiktok_reports_sentinel_ask(ngx_tiktok_reports_discovery_t *d);
static void ngx_tiktok_reports_sentinel_next(
    ngx_tiktok_reports_discovery_t *d);
static void ngx_tiktok_reports_sentinel_next_handler(ngx_event_t *ev);
static void ngx_tiktok_reports_sentinel_reply(void *data, redisReply *reply);
static void ngx_tiktok_reports_sentinel_failed(void *data, const char *why);
static void ngx_tiktok_reports_sentinel_writable(void *data);
static void ngx_tiktok_reports_sentinel_timeout(ngx_event_t *ev);
static void ngx_tiktok_reports_sentinel_recheck(ngx_event_t *ev);
static void ngx_tiktok_reports_sentinel_switch(
    ngx_tiktok_reports_discovery_t *d, redisReply *msg);


ngx_tiktok_reports_discovery_t *
ngx_tiktok_reports_discovery_create(ngx_tiktok_reports_node_t *node,
    ngx_log_t *log)
{
    u_char                           *p;
    ngx_tiktok_reports_discovery_t   *d;
    ngx_tiktok_reports_redis_conf_t  *conf;

    conf = node->conf;

    if (conf->master.len == 0 && conf->resolver == NULL) {
        return NULL;
    }

    d = ngx_calloc(sizeof(ngx_tiktok_reports_discovery_t), log);
    if (d == NULL) {
        return NULL;
    }

    d->node = node;
    d->conf = conf;
    d->log = log;
    d->target = *conf;

    if (conf->master.len) {
        /*
         * SENTINEL get-master-addr-by-name NAME, then SUBSCRIBE
         * +switch-master, pipelined
         */
        d->request_len = sizeof("*3\r\n$8\r\nSENTINEL\r\n$23\r\n"
                                "get-master-addr-by-name\r\n$\r\n\r\n") - 1
                         + NGX_SIZE_T_LEN + conf->master.len
                         + sizeof("*2\r\n$9\r\nSUBSCRIBE\r\n$14\r\n"
                                  "+switch-master\r\n") - 1;

        d->request = ngx_alloc(d->request_len, log);
        if (d->request == NULL) {
            ngx_free(d);
            return NULL;
        }

        p = ngx_sprintf(d->request,
                        "*3\r\n$8\r\nSENTINEL\r\n$23\r\n"
                        "get-master-addr-by-name\r\n$%uz\r\n%V\r\n"
                        "*2\r\n$9\r\nSUBSCRIBE\r\n$14\r\n+switch-master\r\n",
                        conf->master.len, &conf->master);
        d->request_len = p - d->request;

        d->sconn.data = d;
        d->sconn.reply = ngx_tiktok_reports_sentinel_reply;
        d->sconn.failed = ngx_tiktok_reports_sentinel_failed;
        d->sconn.writable = ngx_tiktok_reports_sentinel_writable;

        d->sconf = *conf;

        d->timer.handler = ngx_tiktok_reports_sentinel_timeout;
        d->timer.data = d;
        d->timer.log = log;
        d->timer.cancelable = 1;

        d->next.handler = ngx_tiktok_reports_sentinel_next_handler;
        d->next.data = d;
        d->next.log = log;

        d->recheck.handler = ngx_tiktok_reports_sentinel_recheck;
        d->recheck.data = d;
        d->recheck.log = log;
        d->recheck.cancelable = 1;

        /* workers start with different sentinels, and ask at other times */
        d->current = ngx_random() % conf->sentinels->nelts;

        ngx_add_timer(&d->recheck, NGX_TIKTOK_REPORTS_RECHECK
                                   + ngx_random()
                                     % NGX_TIKTOK_REPORTS_RECHECK_JITTER);

        /* the node confirms the master before anything is written */
        node->check_role = 1;
    }

    node->target = &d->target;
    node->discover = ngx_tiktok_reports_discovery_discover;
    node->discover_data = d;

    ngx_tiktok_reports_node_start(node);

    return d;
}


/* at worker exit, before the node: nothing of it is called back later */

void
ngx_tiktok_reports_discovery_close(ngx_tiktok_reports_discovery_t *d)
{
    if (d->resolving) {
        /* takes the context off the resolver's list: no handler call */
        ngx_resolve_name_done(d->resolving);
        d->resolving = NULL;
    }

    ngx_tiktok_reports_conn_close(&d->sconn);

    if (d->timer.timer_set) {
        ngx_del_timer(&d->timer);
    }

    if (d->recheck.timer_set) {
        ngx_del_timer(&d->recheck);
    }

    if (d->next.posted) {
        ngx_delete_posted_event(&d->next);
    }

    d->node->discover = NULL;
    d->node->target = d->conf;

    if (d->request) {
        ngx_free(d->request);
    }

    ngx_free(d);
}


/* node->discover: before each connect of the node */

static ngx_int_t
ngx_tiktok_reports_discovery_discover(void *data, const char **why)
{
    ngx_tiktok_reports_discovery_t  *d = data;

    d->waiting = 1;

    if (d->asking) {
        /* an answer is on its way already */
        return NGX_AGAIN;
    }

    /* an answer that comes at once is returned, not called back */
    d->in_discover = 1;
    d->rc = NGX_AGAIN;
    d->asking = 1;

    if (d->conf->master.len) {
        d->tried = 0;
        ngx_tiktok_reports_sentinel_ask(d);

    } else if (ngx_tiktok_reports_resolve(d) != NGX_OK) {
        d->asking = 0;
        d->rc = NGX_ERROR;
    }

    d->in_discover = 0;

    if (d->rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    d->waiting = 0;
    *why = (const char *) d->why;

    return d->rc;
}


/* a round is over: the node learns it, if it waits */

static void
ngx_tiktok_reports_discovery_finish(ngx_tiktok_reports_discovery_t *d,
    ngx_int_t rc)
{
    d->asking = 0;
    d->rc = rc;

    if (d->in_discover) {
        return;
    }

    if (!d->waiting) {
        /* a re-check: the node keeps serving, the sentinels are logged */
        if (rc != NGX_OK && !d->down_logged) {
            d->down_logged = 1;
            ngx_log_error(NGX_LOG_WARN, d->log, 0,
                          "tiktok_reports: redis %V: %s", &d->conf->name,
                          d->why);
        }

        return;
    }

    d->waiting = 0;

    ngx_tiktok_reports_node_discovered(d->node,
                                       rc == NGX_OK ? NULL
                                                    : (const char *) d->why);
}


/*
 * The target's address: an IP address as text and a port.  NGX_DECLINED
 * when it is the one the node has already, NGX_ERROR when it is no
 * address.  A new address drops the node's connection, if any, saying
 * "moved": its log line still names the address it was connected to.
 */

static ngx_int_t
ngx_tiktok_reports_discovery_set(ngx_tiktok_reports_discovery_t *d,
    u_char *ip, size_t len, ngx_int_t port, const char *moved)
{
    in_addr_t        addr;
    socklen_t        socklen;
    ngx_sockaddr_t   sa;

    if (port < 1 || port > 65535) {
        return NGX_ERROR;
    }

    ngx_memzero(&sa, sizeof(ngx_sockaddr_t));

    addr = ngx_inet_addr(ip, len);

    if (addr != INADDR_NONE) {
        sa.sockaddr_in.sin_family = AF_INET;
        sa.sockaddr_in.sin_addr.s_addr = addr;
        socklen = sizeof(struct sockaddr_in);

#if (NGX_HAVE_INET6)
    } else if (ngx_inet6_addr(ip, len, sa.sockaddr_in6.sin6_addr.s6_addr)
               == NGX_OK)
    {
        sa.sockaddr_in6.sin6_family = AF_INET6;
        socklen = sizeof(struct sockaddr_in6);
#endif

    } else {
        return NGX_ERROR;
    }

    ngx_inet_set_port(&sa.sockaddr, (in_port_t) port);

    if (d->found && socklen == d->target.socklen
        && ngx_cmp_sockaddr(&sa.sockaddr, socklen, d->target.sockaddr,
                            d->target.socklen, 1)
           == NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (moved) {
        ngx_tiktok_reports_node_drop(d->node, moved);
    }

    ngx_memcpy(&d->sockaddr, &sa, socklen);

    d->target.sockaddr = &d->sockaddr.sockaddr;
    d->target.socklen = socklen;
    d->target.port = port;
    d->target.name.data = d->addr_text;
    d->target.name.len = ngx_sock_ntop(d->target.sockaddr, socklen,
                                       d->addr_text, NGX_SOCKADDR_STRLEN, 1);

    if (d->conf->master.len) {
        /* Sentinel names the master by address: that is its host too */
        d->target.host.data = d->host_text;
        d->target.host.len = ngx_sock_ntop(d->target.sockaddr, socklen,
                                           d->host_text, NGX_SOCKADDR_STRLEN,
                                           0);
        d->host_text[d->target.host.len] = '\0';

        /* TLS checks the master by the address it is announced by */
        d->target.host_name = d->target.host;
    }

    d->found = 1;

    return NGX_OK;
}


/* host names: nginx's resolver, asked at each connect */

static ngx_int_t
ngx_tiktok_reports_resolve(ngx_tiktok_reports_discovery_t *d)
{
    ngx_resolver_ctx_t  *ctx;

    ctx = ngx_resolve_start(d->conf->resolver, NULL);

    if (ctx == NULL || ctx == NGX_NO_RESOLVER) {
        ngx_cpystrn(d->why, (u_char *) "cannot start resolving",
                    sizeof(d->why));
        return NGX_ERROR;
    }

    ctx->name = d->conf->host;
    ctx->handler = ngx_tiktok_reports_resolve_handler;
    ctx->data = d;
    ctx->timeout = d->conf->resolver_timeout;

    /* a graceful shutdown does not wait for it */
    ctx->cancelable = 1;

    d->resolving = ctx;

    if (ngx_resolve_name(ctx) != NGX_OK) {
        /* nginx freed the context */
        d->resolving = NULL;
        ngx_cpystrn(d->why, (u_char *) "cannot start resolving",
                    sizeof(d->why));
        return NGX_ERROR;
    }

    /* the handler may have run in there already: an answer it had cached */

    return NGX_OK;
}


static void
ngx_tiktok_reports_resolve_handler(ngx_resolver_ctx_t *ctx)
{
    u_char                           text[NGX_SOCKADDR_STRLEN];
    size_t                           len;
    ngx_int_t                        rc;
    ngx_uint_t                       i;
    ngx_tiktok_reports_discovery_t  *d;

    d = ctx->data;

    rc = NGX_OK;

    if (ctx->state) {
        *ngx_snprintf(d->why, sizeof(d->why) - 1,
                      "%V could not be resolved (%i: %s)", &ctx->name,
                      ctx->state, ngx_resolver_strerror(ctx->state))
            = '\0';
        rc = NGX_ERROR;

    } else if (ctx->naddrs == 0) {
        *ngx_snprintf(d->why, sizeof(d->why) - 1,
                      "%V has no address", &ctx->name) = '\0';
        rc = NGX_ERROR;

    } else {
        /* nginx's resolver rotates the addresses: take the first */
        i = 0;
        len = ngx_sock_ntop(ctx->addrs[i].sockaddr, ctx->addrs[i].socklen,
                            text, NGX_SOCKADDR_STRLEN, 0);

        switch (ngx_tiktok_reports_discovery_set(d, text, len,
                                                 d->conf->port, NULL))
        {
        case NGX_OK:
            ngx_log_error(NGX_LOG_INFO, d->log, 0,
                          "tiktok_reports: redis %V resolved to %V",
                          &d->conf->name, &d->target.name);
            break;

        case NGX_DECLINED:
            break;

        default:
            *ngx_snprintf(d->why, sizeof(d->why) - 1,
                          "%V resolved to no usable address", &ctx->name)
                = '\0';
            rc = NGX_ERROR;
        }
    }

    ngx_resolve_name_done(ctx);
    d->resolving = NULL;

    ngx_tiktok_reports_discovery_finish(d, rc);
}


/* Sentinel: a round asks the sentinels in turn, from the current one */

static void
ngx_tiktok_reports_sentinel_ask(ngx_tiktok_reports_discovery_t *d)
{
    u_char       *p;
    ngx_err_t     err;
    ngx_addr_t   *s;

    ngx_tiktok_reports_conn_close(&d->sconn);

    if (d->timer.timer_set) {
        ngx_del_timer(&d->timer);
    }

    for ( ;; ) {

        if (d->tried == d->conf->sentinels->nelts) {
            ngx_tiktok_reports_discovery_finish(d, NGX_ERROR);
            return;
        }

        d->tried++;

        s = &((ngx_addr_t *) d->conf->sentinels->elts)[d->current];

        d->sconf.sockaddr = s->sockaddr;
        d->sconf.socklen = s->socklen;
        d->sconf.name = s->name;
        d->replies = 0;

        /* with TLS, a sentinel is checked by its address */
        d->sconf.host_name.data = d->shost;
        d->sconf.host_name.len = ngx_sock_ntop(s->sockaddr, s->socklen,
                                               d->shost, NGX_SOCKADDR_STRLEN,
                                               0);
        d->shost[d->sconf.host_name.len] = '\0';

        if (ngx_tiktok_reports_conn_open(&d->sconn, &d->sconf, d->log, &err)
            == NGX_OK)
        {
            break;
        }

        p = ngx_snprintf(d->why, sizeof(d->why) - 3,
                         "no sentinel tells master \"%V\" (%V: ",
                         &d->conf->master, &s->name);
        p = ngx_tiktok_reports_conn_reason(p, d->why + sizeof(d->why) - 2,
                                           "connect() failed", err);
        *p++ = ')';
        *p = '\0';

        d->current = (d->current + 1) % d->conf->sentinels->nelts;
    }

    ngx_memzero(&d->out, sizeof(ngx_buf_t));
    d->out.pos = d->request;
    d->out.last = d->request + d->request_len;
    d->out.memory = 1;

    ngx_add_timer(&d->timer, d->conf->timeout);

    if (d->sconn.connected) {
        ngx_tiktok_reports_sentinel_writable(d);
    }
}


/*
 * This sentinel could not tell (d->why says why): its connection is closed
 * now, and the next one is asked once the connection's handler is over.
 */

static void
ngx_tiktok_reports_sentinel_next(ngx_tiktok_reports_discovery_t *d)
{
    ngx_tiktok_reports_conn_close(&d->sconn);

    d->current = (d->current + 1) % d->conf->sentinels->nelts;

    if (!d->next.posted) {
        ngx_post_event(&d->next, &ngx_posted_events);
    }
}


static void
ngx_tiktok_reports_sentinel_next_handler(ngx_event_t *ev)
{
    ngx_tiktok_reports_discovery_t  *d = ev->data;

    if (d->asking) {
        ngx_tiktok_reports_sentinel_ask(d);
    }
}


static void
ngx_tiktok_reports_sentinel_writable(void *data)
{
    ngx_tiktok_reports_discovery_t  *d = data;

    ngx_chain_t  out;

    if (d->out.pos == d->out.last) {
        return;
    }

    out.buf = &d->out;
    out.next = NULL;

    /* NGX_ERROR: failed() was called; NGX_AGAIN: the write event returns */
    (void) ngx_tiktok_reports_conn_send(&d->sconn, &out);
}


static void
ngx_tiktok_reports_sentinel_reply(void *data, redisReply *reply)
{
    ngx_tiktok_reports_discovery_t  *d = data;

    ngx_int_t    port, rc;
    ngx_str_t   *name;
    redisReply  *ip, *pt;

    name = &d->sconf.name;

    if (++d->replies > 2) {
        /* a message of the subscription */
        ngx_tiktok_reports_sentinel_switch(d, reply);
        return;
    }

    if (d->replies == 2) {
        /* SUBSCRIBE's confirmation: the connection stays for messages */
        return;
    }

    if (d->timer.timer_set) {
        ngx_del_timer(&d->timer);
    }

    if (reply->type == REDIS_REPLY_NIL) {
        *ngx_snprintf(d->why, sizeof(d->why) - 1,
                      "no sentinel tells master \"%V\" (%V: no such master)",
                      &d->conf->master, name) = '\0';
        ngx_tiktok_reports_sentinel_next(d);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        *ngx_snprintf(d->why, sizeof(d->why) - 1,
                      "no sentinel tells master \"%V\" (%V: %*s)",
                      &d->conf->master, name, (size_t) reply->len,
                      reply->str) = '\0';
        ngx_tiktok_reports_sentinel_next(d);
        return;
    }

    ip = NULL;
    pt = NULL;

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[1]->type == REDIS_REPLY_STRING)
    {
        ip = reply->element[0];
        pt = reply->element[1];
    }

    port = pt ? ngx_atoi((u_char *) pt->str, pt->len) : NGX_ERROR;

    rc = (ip && port != NGX_ERROR)
         ? ngx_tiktok_reports_discovery_set(d, (u_char *) ip->str, ip->len,
                                            port, "the master moved")
         : NGX_ERROR;

    if (rc == NGX_ERROR) {
        *ngx_snprintf(d->why, sizeof(d->why) - 1,
                      "no sentinel tells master \"%V\" (%V: not an address "
                      "of an IP and a port)", &d->conf->master, name) = '\0';
        ngx_tiktok_reports_sentinel_next(d);
        return;
    }

    if (d->down_logged) {
        d->down_logged = 0;
        ngx_log_error(NGX_LOG_NOTICE, d->log, 0,
                      "tiktok_reports: sentinel %V answers again", name);
    }

    if (rc == NGX_OK) {
        ngx_log_error(NGX_LOG_NOTICE, d->log, 0,
                      "tiktok_reports: redis %V: master \"%V\" is %V "
                      "(sentinel %V)", &d->conf->name, &d->conf->master,
                      &d->target.name, name);
    }

    ngx_tiktok_reports_discovery_finish(d, NGX_OK);
}


/* "message" "+switch-master" "<name> <old ip> <old port> <ip> <port>" */

static void
ngx_tiktok_reports_sentinel_switch(ngx_tiktok_reports_discovery_t *d,
    redisReply *msg)
{
    u_char      *p, *last, *f[5];
    size_t       n[5];
    ngx_int_t    port;
    ngx_uint_t   i;
    redisReply  *text;

    if (msg->type != REDIS_REPLY_ARRAY || msg->elements != 3
        || msg->element[2]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    text = msg->element[2];
    p = (u_char *) text->str;
    last = p + text->len;

    for (i = 0; i < 5; i++) {
        while (p < last && *p == ' ') {
            p++;
        }

        f[i] = p;

        while (p < last && *p != ' ') {
            p++;
        }

        n[i] = p - f[i];
    }

    if (n[4] == 0 || n[0] != d->conf->master.len
        || ngx_strncmp(f[0], d->conf->master.data, n[0]) != 0)
    {
        return;
    }

    port = ngx_atoi(f[4], n[4]);

    if (port == NGX_ERROR
        || ngx_tiktok_reports_discovery_set(d, f[3], n[3], port,
                                            "the master switched")
           != NGX_OK)
    {
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, d->log, 0,
                  "tiktok_reports: redis %V: master \"%V\" switched to %V "
                  "(sentinel %V)", &d->conf->name, &d->conf->master,
                  &d->target.name, &d->sconf.name);
}


static void
ngx_tiktok_reports_sentinel_failed(void *data, const char *why)
{
    ngx_tiktok_reports_discovery_t  *d = data;

    if (!d->asking || ngx_exiting || ngx_quit) {
        /* the subscription is lost; the next re-check opens one again */
        ngx_log_error(NGX_LOG_INFO, d->log, 0,
                      "tiktok_reports: sentinel %V: %s", &d->sconf.name, why);

        ngx_tiktok_reports_conn_close(&d->sconn);

        if (d->asking) {
            ngx_cpystrn(d->why, (u_char *) "worker is shutting down",
                        sizeof(d->why));
            ngx_tiktok_reports_discovery_finish(d, NGX_ERROR);
        }

        return;
    }

    *ngx_snprintf(d->why, sizeof(d->why) - 1,
                  "no sentinel tells master \"%V\" (%V: %s)",
                  &d->conf->master, &d->sconf.name, why) = '\0';

    ngx_tiktok_reports_sentinel_next(d);
}


static void
ngx_tiktok_reports_sentinel_timeout(ngx_event_t *ev)
{
    ngx_tiktok_reports_discovery_t  *d = ev->data;

    *ngx_snprintf(d->why, sizeof(d->why) - 1,
                  "no sentinel tells master \"%V\" (%V: timed out)",
                  &d->conf->master, &d->sconf.name) = '\0';

    ngx_tiktok_reports_sentinel_next(d);
}


/*
 * Every few seconds the master is asked for again, in case a switch was
 * missed (a subscription lost, a sentinel restarted); a master that moved
 * drops the node's connection.  Sentinels that cannot tell are logged
 * once until one answers: the node keeps serving meanwhile.
 */

static void
ngx_tiktok_reports_sentinel_recheck(ngx_event_t *ev)
{
    ngx_tiktok_reports_discovery_t  *d = ev->data;

    if (ngx_exiting || ngx_quit) {
        return;
    }

    ngx_add_timer(&d->recheck, NGX_TIKTOK_REPORTS_RECHECK
                               + ngx_random()
                                 % NGX_TIKTOK_REPORTS_RECHECK_JITTER);

    if (d->asking) {
        return;
    }

    d->asking = 1;
    d->tried = 0;
    d->rc = NGX_AGAIN;

    ngx_tiktok_reports_sentinel_ask(d);
}
