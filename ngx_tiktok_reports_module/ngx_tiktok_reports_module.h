
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


#define NGX_TIKTOK_REPORTS_VERSION  "0.3.0"


#define NGX_TIKTOK_REPORTS_SIG_UNSET  0
#define NGX_TIKTOK_REPORTS_SIG_OFF    3

/* what a location is for: its content handler */
#define NGX_TIKTOK_REPORTS_ROLE_NONE     0
#define NGX_TIKTOK_REPORTS_ROLE_WEBHOOK  1
#define NGX_TIKTOK_REPORTS_ROLE_STATUS   2
#define NGX_TIKTOK_REPORTS_ROLE_METRICS  3
#define NGX_TIKTOK_REPORTS_ROLE_HEALTH   4


typedef struct ngx_tiktok_reports_store_s  ngx_tiktok_reports_store_t;
typedef struct ngx_tiktok_reports_node_s   ngx_tiktok_reports_node_t;


/*
 * TLS to Redis as configured; the stores whose settings match share one
 * such object, and with it one OpenSSL context (ngx_tiktok_reports_ssl_get)
 */
typedef struct {
    ngx_flag_t                      enable;
    ngx_flag_t                      verify;
    ngx_flag_t                      server_name;  /* SNI */
    ngx_str_t                       trusted_certificate;
    ngx_str_t                       name;       /* empty: the node's host */
    ngx_str_t                       certificate;
    ngx_str_t                       certificate_key;
#if (NGX_SSL)
    ngx_ssl_t                      *ctx;
#endif
} ngx_tiktok_reports_ssl_conf_t;


/*
 * Where a store connects; filled at configuration time.  No DNS later but
 * through nginx's resolver: with one, a host name is resolved at each
 * connect (sockaddr NULL, host the name); with Sentinel, the sentinels
 * name the master (sockaddr NULL, sentinels set).
 */
typedef struct {
    ngx_str_t                       name;       /* as configured, for logs */
    struct sockaddr                *sockaddr;   /* resolved when read */
    socklen_t                       socklen;
    ngx_str_t                       host;       /* IP text (or the name to
                                                   resolve), NUL-terminated */
    ngx_int_t                       port;
    ngx_str_t                       path;       /* unix socket, or empty */
    ngx_str_t                       user;       /* ACL user, or empty */
    ngx_str_t                       password;   /* empty: no AUTH */
    ngx_int_t                       db;
    ngx_msec_t                      timeout;

    /*
     * TLS: NULL for plain TCP.  host_name is the name the certificate is
     * checked against unless tiktok_reports_redis_ssl_name says otherwise:
     * the host as configured, or the address a node is announced by
     * (Sentinel, Cluster); NUL-terminated, without brackets.
     */
    ngx_tiktok_reports_ssl_conf_t  *ssl;
    ngx_str_t                       host_name;
    ngx_str_t                       master;     /* sentinel=NAME, or empty */
    ngx_array_t                    *sentinels;  /* ngx_addr_t, or NULL */
    ngx_resolver_t                 *resolver;   /* NULL: resolved at start */
    ngx_msec_t                      resolver_timeout;
    ngx_uint_t                      wait_replicas;  /* 0: no WAIT */
    ngx_msec_t                      wait_timeout;
    ngx_array_t                    *seeds;      /* cluster: ngx_addr_t of
                                                   the seeds, or NULL */
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
    ngx_uint_t                      partitions;
    ngx_str_t                      *feeds;      /* each partition's key */
    ngx_uint_t                      lines;      /* events as timeline lines */
} ngx_tiktok_reports_store_opts_t;


typedef struct {
    ngx_array_t                     stores;   /* ngx_tiktok_reports_store_t * */
    ngx_array_t                     names;    /* ngx_str_t *: each store's
                                                 Redis, as configured */
} ngx_tiktok_reports_main_conf_t;


/*
 * Where a directive was written: errors found only when the configuration
 * is merged are reported there, as nginx's own modules do.
 */
typedef struct {
    u_char                         *file;
    ngx_uint_t                      line;
} ngx_tiktok_reports_conf_pos_t;


typedef struct {
    ngx_str_t                       value;
    ngx_tiktok_reports_conf_pos_t   pos;
} ngx_tiktok_reports_secret_t;


typedef struct {
    ngx_url_t                      *redis;
    ngx_array_t                    *redis_sentinels;  /* ngx_url_t */
    ngx_str_t                       redis_master;     /* sentinel=NAME */
    ngx_flag_t                      redis_cluster;
    ngx_str_t                       redis_user;
    ngx_str_t                       redis_password;
    ngx_int_t                       redis_db;
    ngx_msec_t                      redis_timeout;
    ngx_uint_t                      redis_max_commands;
    size_t                          redis_max_bytes;
    ngx_tiktok_reports_ssl_conf_t   redis_ssl;
    ngx_int_t                       redis_wait_replicas;
    ngx_msec_t                      redis_wait_timeout;
    ngx_str_t                       key_prefix;
    time_t                          ttl;
    ngx_flag_t                      keep_reports;
    ngx_int_t                       stream_maxlen;
    ngx_int_t                       stream_partitions;
    ngx_uint_t                      timeline;
    ngx_int_t                       max_results;
    time_t                          tolerance;
    ngx_uint_t                      log_level;  /* client-caused refusals */

    ngx_uint_t                      sig_mode;
    ngx_str_t                       sig_digest;
    ngx_str_t                       sig_header;
    ngx_tiktok_reports_conf_pos_t   sig_pos;
    ngx_array_t                    *secrets;  /* ngx_tiktok_reports_secret_t */
    ngx_tiktok_reports_sig_conf_t  *sig;

    ngx_uint_t                      role;      /* set here, not inherited */
    ngx_tiktok_reports_conf_pos_t   role_pos;
    ngx_str_t                       location;  /* the role's, for errors */

    ngx_tiktok_reports_store_t     *store;
    ngx_tiktok_reports_redis_limits_t  limits;
    ngx_tiktok_reports_store_opts_t transition;
} ngx_tiktok_reports_loc_conf_t;


/*
 * What a request's access log line can tell ($tiktok_reports_*): the
 * counts of a 200 answer, and how long the request waited for Redis.
 */
typedef struct {
    ngx_uint_t                      accepted;
    ngx_uint_t                      duplicates;
    ngx_uint_t                      rejected;
    ngx_msec_t                      redis_start;   /* us, monotonic */
    ngx_msec_t                      redis_time;    /* us */
    unsigned                        counted:1;
    unsigned                        redis:1;
} ngx_tiktok_reports_ctx_t;


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

/* the request's log values, created on first use; NULL: out of memory */
ngx_tiktok_reports_ctx_t *ngx_tiktok_reports_get_ctx(ngx_http_request_t *r);

/* the health location (ngx_tiktok_reports_health.c) */
ngx_int_t ngx_tiktok_reports_health_handler(ngx_http_request_t *r);

/* the lookup location (ngx_tiktok_reports_status.c) */
ngx_int_t ngx_tiktok_reports_status_handler(ngx_http_request_t *r);

typedef ngx_int_t (*ngx_tiktok_reports_chunk_pt)(void *data, u_char *p,
    size_t len);

/*
 * the request body chunk by chunk, from memory or the temp file
 * (ngx_tiktok_reports_request.c)
 */
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
void ngx_tiktok_reports_metrics_reconnect(void);
ngx_msec_t ngx_tiktok_reports_usec(void);

/* answers shared by the locations (ngx_tiktok_reports_json.c) */
ngx_int_t ngx_tiktok_reports_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *body, size_t len);
ngx_int_t ngx_tiktok_reports_send_json(ngx_http_request_t *r,
    ngx_uint_t status, u_char *body, size_t len);
ngx_int_t ngx_tiktok_reports_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *error);
ngx_int_t ngx_tiktok_reports_send_not_allowed(ngx_http_request_t *r,
    char *allow);
u_char *ngx_tiktok_reports_json_string(u_char *p, u_char *s, size_t len);
/* "2023-09-26T10:52:15.799+0000" */
#define NGX_TIKTOK_REPORTS_TIME_LEN  28
u_char *ngx_tiktok_reports_time_text(u_char *p, int64_t ms);
u_char *ngx_tiktok_reports_event_start(u_char *p, ngx_uint_t delivery,
    u_char *id, size_t id_len, u_char *at, size_t at_len);
size_t ngx_tiktok_reports_json_string_len(u_char *s, size_t len);

/*
 * request-derived text for a log line, into dst (size >= 3); its length
 * (ngx_tiktok_reports_request.c)
 */
size_t ngx_tiktok_reports_log_escape(u_char *dst, size_t size, u_char *src,
    size_t len);


#endif /* _NGX_TIKTOK_REPORTS_MODULE_H_INCLUDED_ */
