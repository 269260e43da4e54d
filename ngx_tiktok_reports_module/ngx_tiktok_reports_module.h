
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


#ifndef _NGX_TIKTOK_REPORTS_MODULE_H_INCLUDED_
#define _NGX_TIKTOK_REPORTS_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_tiktok_reports_parser.h"
#include "ngx_tiktok_reports_signature.h"


#define NGX_TIKTOK_REPORTS_SIG_UNSET  0
#define NGX_TIKTOK_REPORTS_SIG_OFF    3

/* what a location is for: its content handler */
#define NGX_TIKTOK_REPORTS_ROLE_NONE     0
#define NGX_TIKTOK_REPORTS_ROLE_WEBHOOK  1
#define NGX_TIKTOK_REPORTS_ROLE_STATUS   2
#define NGX_TIKTOK_REPORTS_ROLE_METRICS  3


typedef struct ngx_tiktok_reports_store_s  ngx_tiktok_reports_store_t;
typedef struct ngx_tiktok_reports_node_s   ngx_tiktok_reports_node_t;


/* where a store connects; filled at configuration time, no DNS later */
typedef struct {
    ngx_str_t                       name;       /* as configured, for logs */
    struct sockaddr                *sockaddr;   /* resolved when read */
    socklen_t                       socklen;
    ngx_str_t                       host;       /* IP text, NUL-terminated */
    ngx_int_t                       port;
    ngx_str_t                       path;       /* unix socket, or empty */
    ngx_str_t                       user;       /* ACL user, or empty */
    ngx_str_t                       password;   /* empty: no AUTH */
    ngx_int_t                       db;
    ngx_msec_t                      timeout;
    ngx_uint_t                      wait_replicas;  /* 0: no WAIT */
    ngx_msec_t                      wait_timeout;
} ngx_tiktok_reports_redis_conf_t;


/*
 * What one location's requests may ask of a Redis connection: how long they
 * wait, and how much may be outstanding on it before they are refused.
 */
typedef struct {
    ngx_msec_t                      timeout;
    ngx_uint_t                      commands;
    size_t                          bytes;
} ngx_tiktok_reports_redis_limits_t;


/* a location's fixed transition arguments, formatted once at startup */
typedef struct {
    ngx_str_t                       prefix;
    ngx_str_t                       events;     /* <prefix>events */
    ngx_str_t                       ttl;        /* seconds, "0": never */
    ngx_str_t                       maxlen;     /* "0": no change feed */
} ngx_tiktok_reports_store_opts_t;


typedef struct {
    ngx_array_t                     stores;   /* ngx_tiktok_reports_store_t * */
} ngx_tiktok_reports_main_conf_t;


typedef struct {
    ngx_url_t                      *redis;
    ngx_str_t                       redis_user;
    ngx_str_t                       redis_password;
    ngx_int_t                       redis_db;
    ngx_msec_t                      redis_timeout;
    ngx_uint_t                      redis_max_commands;
    size_t                          redis_max_bytes;
    ngx_int_t                       redis_wait_replicas;
    ngx_msec_t                      redis_wait_timeout;
    ngx_str_t                       key_prefix;
    time_t                          ttl;
    ngx_flag_t                      keep_reports;
    ngx_int_t                       stream_maxlen;
    ngx_int_t                       max_results;
    time_t                          tolerance;

    ngx_uint_t                      sig_mode;
    ngx_str_t                       sig_digest;
    ngx_str_t                       sig_header;
    ngx_array_t                    *secrets;    /* ngx_str_t */
    ngx_tiktok_reports_sig_conf_t  *sig;

    ngx_uint_t                      role;      /* set here, not inherited */

    ngx_tiktok_reports_store_t     *store;
    ngx_tiktok_reports_redis_limits_t  limits;
    ngx_tiktok_reports_store_opts_t transition;
} ngx_tiktok_reports_loc_conf_t;


typedef struct ngx_tiktok_reports_wait_s  ngx_tiktok_reports_wait_t;

typedef ngx_int_t (*ngx_tiktok_reports_answer_pt)(ngx_http_request_t *r,
    ngx_tiktok_reports_wait_t *w);

/* a request waiting for Redis replies (ngx_tiktok_reports_wait.c) */
struct ngx_tiktok_reports_wait_s {
    ngx_http_request_t             *request;    /* NULL once it is gone */
    ngx_tiktok_reports_answer_pt    answer;
    void                           *data;       /* in the request pool */
    ngx_uint_t                      outstanding;
    ngx_event_t                     timer;
    unsigned                        failed:1;
    unsigned                        answered:1;
};


extern ngx_module_t  ngx_tiktok_reports_module;


ngx_tiktok_reports_wait_t *ngx_tiktok_reports_wait_create(
    ngx_http_request_t *r, ngx_tiktok_reports_answer_pt answer, void *data);
ngx_int_t ngx_tiktok_reports_wait_start(ngx_tiktok_reports_wait_t *w,
    ngx_msec_t timeout);
void ngx_tiktok_reports_wait_done(ngx_tiktok_reports_wait_t *w,
    ngx_uint_t failed);


/* the webhook (ngx_tiktok_reports_webhook.c) */
ngx_int_t ngx_tiktok_reports_webhook_handler(ngx_http_request_t *r);

/* the lookup location (ngx_tiktok_reports_status.c) */
ngx_int_t ngx_tiktok_reports_status_handler(ngx_http_request_t *r);

typedef ngx_int_t (*ngx_tiktok_reports_chunk_pt)(void *data, u_char *p,
    size_t len);

/* the request body chunk by chunk, from memory or the temp file */
ngx_int_t ngx_tiktok_reports_body_each(ngx_http_request_t *r,
    ngx_tiktok_reports_chunk_pt handler, void *data);

/* counters (ngx_tiktok_reports_metrics.c) */
ngx_int_t ngx_tiktok_reports_metrics_init(ngx_conf_t *cf);
ngx_int_t ngx_tiktok_reports_metrics_handler(ngx_http_request_t *r);
#define NGX_TIKTOK_REPORTS_ACCEPTED   0
#define NGX_TIKTOK_REPORTS_DUPLICATE  1
#define NGX_TIKTOK_REPORTS_REJECTED   2
void ngx_tiktok_reports_metrics_result(ngx_uint_t kind, ngx_uint_t outcome);
void ngx_tiktok_reports_metrics_signature_failure(void);
void ngx_tiktok_reports_metrics_redis_error(ngx_uint_t timeout);
void ngx_tiktok_reports_metrics_redis_busy(void);
void ngx_tiktok_reports_metrics_rtt(ngx_msec_t usec);
#define NGX_TIKTOK_REPORTS_GONE  2
void ngx_tiktok_reports_metrics_connected(ngx_uint_t store, ngx_uint_t state);
ngx_msec_t ngx_tiktok_reports_usec(void);

/* answers shared by the locations */
ngx_int_t ngx_tiktok_reports_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *body, size_t len);
ngx_int_t ngx_tiktok_reports_send_json(ngx_http_request_t *r,
    ngx_uint_t status, u_char *body, size_t len);
ngx_int_t ngx_tiktok_reports_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *error);
ngx_int_t ngx_tiktok_reports_send_not_allowed(ngx_http_request_t *r,
    char *allow);
u_char *ngx_tiktok_reports_json_string(u_char *p, u_char *s, size_t len);
size_t ngx_tiktok_reports_json_string_len(u_char *s, size_t len);

/* request-derived text for a log line, into dst (size >= 3); its length */
size_t ngx_tiktok_reports_log_escape(u_char *dst, size_t size, u_char *src,
    size_t len);


#endif /* _NGX_TIKTOK_REPORTS_MODULE_H_INCLUDED_ */
