
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


#ifndef _NGX_TIKTOK_REPORTS_REDIS_H_INCLUDED_
#define _NGX_TIKTOK_REPORTS_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_tiktok_reports_module.h"


/*
 * Three layers, each in its own file:
 *   adapter  hiredis's fd on nginx's event loop, nothing else;
 *   node     one connection: handshake, command watchdog, reconnect;
 *   store    the commands and the script, and which node serves a key
 *            (one node today; Redis Cluster makes that a set of nodes).
 */


/* adapter (ngx_tiktok_reports_redis_adapter.c) */
ngx_int_t ngx_tiktok_reports_redis_attach(redisAsyncContext *ac,
    ngx_log_t *log);


/* node (ngx_tiktok_reports_redis_node.c) */

/* a command sent and not yet answered; replies come in this order */
typedef struct {
    ngx_msec_t                        sent;
    ngx_msec_t                        timeout;     /* 0: no request waits */
    size_t                            bytes;
} ngx_tiktok_reports_node_cmd_t;


struct ngx_tiktok_reports_node_s {
    ngx_tiktok_reports_redis_conf_t  *conf;
    ngx_uint_t                        index;       /* the store's, metrics */
    redisAsyncContext                *ac;
    ngx_log_t                        *log;

    ngx_str_t                         script;      /* loaded at handshake */

    /* what is outstanding: a ring of commands, oldest at "head" */
    ngx_tiktok_reports_node_cmd_t    *ring;
    ngx_uint_t                        ring_size;
    ngx_uint_t                        head;
    ngx_uint_t                        pending;     /* commands in flight */
    size_t                            pending_bytes;

    ngx_msec_t                        backoff;

    ngx_event_t                       watchdog;
    ngx_event_t                       reconnect;

    unsigned                          handshake_failed:1;
    unsigned                          down_logged:1;
    unsigned                          busy_logged:1;
};


ngx_int_t ngx_tiktok_reports_node_init(ngx_tiktok_reports_node_t *node,
    ngx_uint_t index, ngx_tiktok_reports_redis_conf_t *conf,
    ngx_str_t *script, ngx_log_t *log);
void ngx_tiktok_reports_node_close(ngx_tiktok_reports_node_t *node);
ngx_int_t ngx_tiktok_reports_node_admit(ngx_tiktok_reports_node_t *node,
    ngx_tiktok_reports_redis_limits_t *limits, ngx_uint_t commands,
    size_t bytes);
ngx_int_t ngx_tiktok_reports_node_command(ngx_tiktok_reports_node_t *node,
    redisCallbackFn *fn, void *data, ngx_msec_t timeout, int argc,
    const char **argv, const size_t *argvlen);
redisReply *ngx_tiktok_reports_node_replied(redisAsyncContext *ac,
    void *reply);


/* store (ngx_tiktok_reports_redis_store.c) */
struct ngx_tiktok_reports_store_s {
    ngx_tiktok_reports_redis_conf_t   conf;
    ngx_tiktok_reports_node_t        *node;        /* per worker */
};


/*
 * What a command's owner learns, with the index it gave: NGX_OK,
 * NGX_DECLINED (a duplicate report), NGX_ABORT (the key holds another
 * type than a hash: the report is not stored, the lookup finds nothing) or
 * NGX_ERROR; the reply is hiredis's
 * (for a transition, its report's element, or the call's reply when the
 * call failed), valid during the call only, and NULL when the connection
 * was lost.
 */
typedef void (*ngx_tiktok_reports_store_done_pt)(void *data,
    ngx_uint_t index, ngx_int_t rc, redisReply *reply);


ngx_tiktok_reports_store_t *ngx_tiktok_reports_store_get(ngx_conf_t *cf,
    ngx_tiktok_reports_redis_conf_t *conf);
ngx_int_t ngx_tiktok_reports_store_init_worker(ngx_cycle_t *cycle);
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
