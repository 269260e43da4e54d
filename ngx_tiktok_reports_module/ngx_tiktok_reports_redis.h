
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


#ifndef _NGX_TIKTOK_REPORTS_REDIS_H_INCLUDED_
#define _NGX_TIKTOK_REPORTS_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include <ngx_event.h>
#include <ngx_event_connect.h>

#include <hiredis/hiredis.h>

#include "ngx_tiktok_reports_module.h"


/*
 * Three layers, each in its own file:
 *   conn     one socket on nginx's connections: connect, TLS handshake,
 *            send, read replies (hiredis's reader), close once; I/O only;
 *   node     one connection's commands: handshake, the queue of commands
 *            and the replies to them, limits, watchdog, reconnect;
 *   discovery  where a node connects: a host name resolved at run time
 *            through nginx's resolver, or the master Sentinel names;
 *   store    the commands and the script, and which node serves a key
 *            (one node today; Redis Cluster makes that a set of nodes).
 */


typedef struct ngx_tiktok_reports_conn_s  ngx_tiktok_reports_conn_t;
typedef struct ngx_tiktok_reports_discovery_s
    ngx_tiktok_reports_discovery_t;
typedef struct ngx_tiktok_reports_cluster_s  ngx_tiktok_reports_cluster_t;


/* Redis Cluster's slots, and the masters a worker follows at most */
#define NGX_TIKTOK_REPORTS_SLOTS          16384
#define NGX_TIKTOK_REPORTS_CLUSTER_NODES  128

/* a node that tells no gauge of its own (a cluster's) */
#define NGX_TIKTOK_REPORTS_NO_INDEX       ((ngx_uint_t) -1)


/* conn (ngx_tiktok_reports_redis_conn.c) */
struct ngx_tiktok_reports_conn_s {
    ngx_peer_connection_t             peer;        /* connection: NULL closed */
    redisReader                      *reader;

    /* the node's: a reply (freed after), a failure, room to write */
    void                             *data;
    void                            (*reply)(void *data, redisReply *reply);
    void                            (*failed)(void *data, const char *why);
    void                            (*writable)(void *data);

    /* TLS: the context and the name checked, a pool for nginx's SSL layer */
    ngx_tiktok_reports_ssl_conf_t    *ssl;
    ngx_str_t                         ssl_name;
    ngx_pool_t                       *pool;

    /*
     * The connection's log while TLS is on: nginx's SSL layer logs its
     * failures there, with OpenSSL's reason; the line is kept as the
     * reason the node gives, and goes on to the real log at "info".
     */
    ngx_log_t                         ssl_log;
    ngx_log_t                        *log;
    u_char                            ssl_error[NGX_MAX_ERROR_STR / 4];

    unsigned                          connected:1;     /* and TLS is up */
    unsigned                          io_failed:1;
};


ngx_int_t ngx_tiktok_reports_conn_open(ngx_tiktok_reports_conn_t *conn,
    ngx_tiktok_reports_redis_conf_t *conf, ngx_log_t *log, ngx_err_t *err);
ngx_int_t ngx_tiktok_reports_conn_send(ngx_tiktok_reports_conn_t *conn,
    ngx_chain_t *out);
void ngx_tiktok_reports_conn_close(ngx_tiktok_reports_conn_t *conn);
u_char *ngx_tiktok_reports_conn_reason(u_char *p, u_char *last,
    const char *why, ngx_err_t err);


/* TLS settings (ngx_tiktok_reports_redis_ssl.c) */
void ngx_tiktok_reports_ssl_merge(ngx_tiktok_reports_ssl_conf_t *conf,
    ngx_tiktok_reports_ssl_conf_t *prev);

/*
 * The TLS object of these settings, the one of an earlier store when its
 * settings are the same (so stores compare it by pointer), with its OpenSSL
 * context; NULL: refused, logged.
 */
ngx_tiktok_reports_ssl_conf_t *ngx_tiktok_reports_ssl_get(ngx_conf_t *cf,
    ngx_tiktok_reports_ssl_conf_t *want);


/* node (ngx_tiktok_reports_redis_node.c) */

/* a reply, or NULL: the command failed without one (connection lost) */
typedef void (*ngx_tiktok_reports_node_reply_pt)(
    ngx_tiktok_reports_node_t *node, redisReply *reply, void *data);

/*
 * Asked before each connect, when a discovery layer gives the address:
 * NGX_OK, node->target is ready; NGX_AGAIN, node_discovered() follows;
 * NGX_ERROR, there is none, and *why says why.
 */
typedef ngx_int_t (*ngx_tiktok_reports_node_discover_pt)(void *data,
    const char **why);

/* whether anybody still waits for a command that was not sent yet */
typedef ngx_uint_t (*ngx_tiktok_reports_node_wanted_pt)(void *data);


/* a queued command; replies come in this order */
typedef struct {
    ngx_tiktok_reports_node_reply_pt  handler;
    ngx_tiktok_reports_node_wanted_pt wanted;      /* NULL: always */
    void                             *data;
    u_char                           *buf;         /* the command, formatted */
    size_t                            len;
    ngx_msec_t                        sent;        /* queued at */
    ngx_msec_t                        timeout;     /* 0: no request waits */
    unsigned                          dropped:1;   /* not sent: no reply */
} ngx_tiktok_reports_node_cmd_t;


/*
 * With tiktok_reports_redis_wait, a WAIT follows every flush that carried
 * writes; a write's owner, once its reply came, holds its outcome here
 * until that WAIT's reply says how many replicas have it.
 */
typedef void (*ngx_tiktok_reports_node_waited_pt)(void *data, ngx_int_t rc);

typedef struct ngx_tiktok_reports_node_hold_s  ngx_tiktok_reports_node_hold_t;

struct ngx_tiktok_reports_node_hold_s {
    ngx_tiktok_reports_node_waited_pt  handler;
    void                              *data;
    ngx_tiktok_reports_node_hold_t    *next;
};

/* a WAIT queued or sent, and the outcomes held for its reply */
typedef struct ngx_tiktok_reports_node_barrier_s
    ngx_tiktok_reports_node_barrier_t;

struct ngx_tiktok_reports_node_barrier_s {
    ngx_tiktok_reports_node_hold_t     *first;
    ngx_tiktok_reports_node_hold_t    **last;
    ngx_tiktok_reports_node_barrier_t  *next;
};


struct ngx_tiktok_reports_node_s {
    ngx_tiktok_reports_redis_conf_t  *conf;
    ngx_tiktok_reports_redis_conf_t  *target;      /* where it connects */
    ngx_uint_t                        index;       /* the store's, metrics */
    ngx_tiktok_reports_conn_t         conn;
    ngx_log_t                        *log;

    ngx_str_t                         script;      /* loaded at handshake */

    /*
     * The queue: a ring of commands, oldest at "head"; the first "nsent"
     * went out (or were dropped), "partial" bytes of the next one too.
     */
    ngx_tiktok_reports_node_cmd_t    *ring;
    ngx_uint_t                        ring_size;
    ngx_uint_t                        head;
    ngx_uint_t                        count;
    ngx_uint_t                        nsent;
    size_t                            partial;
    ngx_uint_t                        pending;     /* commands, not dropped */
    size_t                            pending_bytes;

    ngx_msec_t                        backoff;

    ngx_event_t                       watchdog;
    ngx_event_t                       reconnect;
    ngx_event_t                       flush;       /* posted */

    ngx_tiktok_reports_node_discover_pt  discover;  /* NULL: conf's */
    void                             *discover_data;

    /* WAITs in the ring, oldest first; writes queued since the last */
    ngx_tiktok_reports_node_barrier_t *barriers;
    ngx_tiktok_reports_node_barrier_t *barriers_last;
    ngx_uint_t                        unwaited;

    unsigned                          ready:1;     /* handshake done */
    unsigned                          handshake_failed:1;
    unsigned                          down_logged:1;
    unsigned                          busy_logged:1;
    unsigned                          wait_logged:1;
    unsigned                          discovering:1;  /* waits for target */
    unsigned                          check_role:1;   /* ROLE: master */
    unsigned                          role_pending:1; /* nothing behind it */
    unsigned                          role_sent:1;    /* its reply awaited */
};


ngx_int_t ngx_tiktok_reports_node_init(ngx_tiktok_reports_node_t *node,
    ngx_uint_t index, ngx_tiktok_reports_redis_conf_t *conf,
    ngx_str_t *script, ngx_log_t *log);
void ngx_tiktok_reports_node_close(ngx_tiktok_reports_node_t *node);
void ngx_tiktok_reports_node_start(ngx_tiktok_reports_node_t *node);
void ngx_tiktok_reports_node_discovered(ngx_tiktok_reports_node_t *node,
    const char *why);
void ngx_tiktok_reports_node_drop(ngx_tiktok_reports_node_t *node,
    const char *why);
ngx_int_t ngx_tiktok_reports_node_admit(ngx_tiktok_reports_node_t *node,
    ngx_tiktok_reports_redis_limits_t *limits, ngx_uint_t commands,
    size_t bytes);
ngx_int_t ngx_tiktok_reports_node_command(ngx_tiktok_reports_node_t *node,
    ngx_tiktok_reports_node_reply_pt handler, void *data,
    ngx_tiktok_reports_node_wanted_pt wanted, ngx_msec_t timeout, int argc,
    const char **argv, const size_t *argvlen);

/*
 * For a health check: NGX_OK when the connection is up and its handshake
 * done, so that a command sent now can be served; otherwise NGX_DECLINED.
 * *state says which in a word or two, *outstanding how many commands wait.
 */
ngx_int_t ngx_tiktok_reports_node_state(ngx_tiktok_reports_node_t *node,
    const char **state, ngx_uint_t *outstanding);


/* discovery (ngx_tiktok_reports_redis_discovery.c) */

/* NULL when the configured address serves as it is */
ngx_tiktok_reports_discovery_t *ngx_tiktok_reports_discovery_create(
    ngx_tiktok_reports_node_t *node, ngx_log_t *log);
void ngx_tiktok_reports_discovery_close(ngx_tiktok_reports_discovery_t *d);

/* a command that writes: a WAIT follows its flush when configured */
ngx_int_t ngx_tiktok_reports_node_write(ngx_tiktok_reports_node_t *node,
    ngx_tiktok_reports_node_reply_pt handler, void *data,
    ngx_tiktok_reports_node_wanted_pt wanted, ngx_msec_t timeout, int argc,
    const char **argv, const size_t *argvlen);

/*
 * Called from a write's reply handler: hold->handler(hold->data, rc) runs
 * once the WAIT that followed the write replied, with NGX_OK when enough
 * replicas confirmed, NGX_ERROR otherwise.  NGX_ERROR: no WAIT follows.
 */
ngx_int_t ngx_tiktok_reports_node_hold(ngx_tiktok_reports_node_t *node,
    ngx_tiktok_reports_node_hold_t *hold);


/* cluster discovery (ngx_tiktok_reports_redis_cluster.c) */

/* the slot of a key, as Redis Cluster computes it */
ngx_uint_t ngx_tiktok_reports_keyslot(u_char *key, size_t len);
ngx_uint_t ngx_tiktok_reports_crc16_slot(u_char *p, size_t len);

ngx_tiktok_reports_cluster_t *ngx_tiktok_reports_cluster_create(
    ngx_tiktok_reports_redis_conf_t *conf, ngx_str_t *script,
    ngx_uint_t index, ngx_log_t *log);
void ngx_tiktok_reports_cluster_close(ngx_tiktok_reports_cluster_t *cl);
ngx_tiktok_reports_node_t *ngx_tiktok_reports_cluster_node(
    ngx_tiktok_reports_cluster_t *cl, ngx_uint_t slot);

/* whether a full slot map came: nothing is sent before */
ngx_uint_t ngx_tiktok_reports_cluster_mapped(
    ngx_tiktok_reports_cluster_t *cl);

/*
 * "<slot> <host>:<port>" of a MOVED (moved: 1) or ASK reply: the node to
 * send to, or NULL; MOVED also fixes the slot and asks for a new map
 */
ngx_tiktok_reports_node_t *ngx_tiktok_reports_cluster_redirect(
    ngx_tiktok_reports_cluster_t *cl, u_char *p, size_t len,
    ngx_uint_t moved);

/* the map may be stale: a new one is asked (at most one a second) */
void ngx_tiktok_reports_cluster_refresh(ngx_tiktok_reports_cluster_t *cl);
ngx_int_t ngx_tiktok_reports_cluster_admit(ngx_tiktok_reports_cluster_t *cl,
    ngx_tiktok_reports_redis_limits_t *limits, ngx_uint_t commands,
    size_t bytes);
ngx_int_t ngx_tiktok_reports_cluster_state(ngx_tiktok_reports_cluster_t *cl,
    const char **state, ngx_uint_t *outstanding);


/* store (ngx_tiktok_reports_redis_store.c) */
struct ngx_tiktok_reports_store_s {
    ngx_tiktok_reports_redis_conf_t   conf;
    ngx_tiktok_reports_node_t        *node;        /* per worker */
    ngx_tiktok_reports_discovery_t   *discovery;   /* per worker, or NULL */
    ngx_tiktok_reports_cluster_t     *cluster;     /* per worker, or NULL */
    ngx_queue_t                       parked;      /* commands to resend */
    ngx_uint_t                        closing;     /* nothing is resent */

    /* small calls of this event loop iteration, joined before they go */
    void                             *pending;
    void                             *pending_last;
    ngx_uint_t                        pending_reports;
    ngx_event_t                       join;        /* posted */
};


/*
 * What a command's owner learns, with the index it gave: NGX_OK,
 * NGX_DECLINED (a duplicate report), NGX_ABORT (the key holds another
 * type than a hash: the report is not stored, the lookup finds nothing) or
 * NGX_ERROR; the reply is hiredis's
 * (for a transition, its report's element, or the call's reply when the
 * call failed), valid during the call only, and NULL when the connection
 * was lost or the outcome waited for a WAIT.  "data" is the request's wait
 * object (ngx_tiktok_reports_wait_t): commands of a request already
 * answered are dropped before they are sent.
 */
typedef void (*ngx_tiktok_reports_store_done_pt)(void *data,
    ngx_uint_t index, ngx_int_t rc, redisReply *reply);


ngx_tiktok_reports_store_t *ngx_tiktok_reports_store_get(ngx_conf_t *cf,
    ngx_tiktok_reports_redis_conf_t *conf);
ngx_int_t ngx_tiktok_reports_store_init_worker(ngx_cycle_t *cycle);
ngx_int_t ngx_tiktok_reports_store_state(ngx_tiktok_reports_store_t *store,
    const char **state, ngx_uint_t *outstanding);
void ngx_tiktok_reports_store_exit_worker(ngx_cycle_t *cycle);

/*
 * NGX_OK when a request of this many commands and argument bytes may be
 * sent now, NGX_BUSY when what is outstanding on the connection is at the
 * location's limits (counted in the metrics).
 */
ngx_int_t ngx_tiktok_reports_store_admit(ngx_tiktok_reports_store_t *store,
    ngx_tiktok_reports_redis_limits_t *limits, ngx_uint_t commands,
    size_t bytes);

/*
 * The results among res[0..n) that have no error, in calls of up to 100
 * reports; done() is called once for each result sent, with its index in
 * res.  *sent counts them, also when a later call could not be sent
 * (NGX_ERROR).  NGX_BUSY: nothing was sent, the connection is full.
 * now: the receiver's clock, ms since the epoch.
 */
ngx_int_t ngx_tiktok_reports_store_transitions(
    ngx_tiktok_reports_store_t *store, ngx_tiktok_reports_store_opts_t *opts,
    ngx_tiktok_reports_redis_limits_t *limits, int64_t now,
    ngx_tiktok_reports_result_t *res, size_t n,
    ngx_tiktok_reports_store_done_pt done, void *data, size_t *sent);

/*
 * raw command on the node for the key (lookups; admitted by the caller);
 * reply owned by hiredis
 */
ngx_int_t ngx_tiktok_reports_store_command(ngx_tiktok_reports_store_t *store,
    u_char *key, size_t key_len, ngx_tiktok_reports_store_done_pt done,
    void *data, ngx_uint_t index, ngx_msec_t timeout, int argc,
    const char **argv, const size_t *argvlen);


#endif /* _NGX_TIKTOK_REPORTS_REDIS_H_INCLUDED_ */
