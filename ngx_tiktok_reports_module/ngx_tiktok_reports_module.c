
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * Directives, configuration, worker start and exit, and the JSON answers
 * that every location of the module shares.
 */


#include "ngx_tiktok_reports_module.h"
#include "ngx_tiktok_reports_redis.h"


static void *ngx_tiktok_reports_create_main_conf(ngx_conf_t *cf);
static void *ngx_tiktok_reports_create_loc_conf(ngx_conf_t *cf);
static char *ngx_tiktok_reports_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_tiktok_reports_merge_store(ngx_conf_t *cf,
    ngx_tiktok_reports_loc_conf_t *conf);
static char *ngx_tiktok_reports_merge_transition(ngx_conf_t *cf,
    ngx_tiktok_reports_loc_conf_t *conf);
static char *ngx_tiktok_reports_merge_signature(ngx_conf_t *cf,
    ngx_tiktok_reports_loc_conf_t *conf);
static void ngx_tiktok_reports_sig_cleanup(void *data);
static void ngx_tiktok_reports_conf_pos(ngx_conf_t *cf,
    ngx_tiktok_reports_conf_pos_t *pos);
static void ngx_cdecl ngx_tiktok_reports_conf_error(ngx_conf_t *cf,
    ngx_tiktok_reports_conf_pos_t *pos, const char *fmt, ...);
static char *ngx_tiktok_reports_merge_host(ngx_conf_t *cf,
    ngx_tiktok_reports_loc_conf_t *conf, ngx_tiktok_reports_redis_conf_t *rc,
    ngx_url_t **u);
static char *ngx_tiktok_reports_merge_sentinel(ngx_conf_t *cf,
    ngx_tiktok_reports_loc_conf_t *conf, ngx_tiktok_reports_redis_conf_t *rc);
static char *ngx_tiktok_reports_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tiktok_reports_redis_password(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_tiktok_reports_redis_max_outstanding(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_tiktok_reports_redis_wait(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_tiktok_reports_role(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tiktok_reports_signature(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tiktok_reports_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_tiktok_reports_secret_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_tiktok_reports_secret_t *ngx_tiktok_reports_secret_push(
    ngx_conf_t *cf, ngx_tiktok_reports_loc_conf_t *tlcf);
static char *ngx_tiktok_reports_positive(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_tiktok_reports_prefix(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_tiktok_reports_timeout(ngx_conf_t *cf, void *post,
    void *data);
static ngx_int_t ngx_tiktok_reports_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_tiktok_reports_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_tiktok_reports_redis_time_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_tiktok_reports_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_tiktok_reports_init_process(ngx_cycle_t *cycle);
static void ngx_tiktok_reports_exit_process(ngx_cycle_t *cycle);


/* the content handler of each role, and the role a directive sets */
static ngx_http_handler_pt  ngx_tiktok_reports_handlers[] = {
    NULL,
    ngx_tiktok_reports_webhook_handler,
    ngx_tiktok_reports_status_handler,
    ngx_tiktok_reports_metrics_handler,
    ngx_tiktok_reports_health_handler
};

static ngx_uint_t  ngx_tiktok_reports_roles[] = {
    NGX_TIKTOK_REPORTS_ROLE_NONE,
    NGX_TIKTOK_REPORTS_ROLE_WEBHOOK,
    NGX_TIKTOK_REPORTS_ROLE_STATUS,
    NGX_TIKTOK_REPORTS_ROLE_METRICS,
    NGX_TIKTOK_REPORTS_ROLE_HEALTH
};

static const char  *ngx_tiktok_reports_role_names[] = {
    "", "webhook", "status", "metrics", "health"
};


/* client-caused refusals; nginx logs those at "info" by default */
static ngx_conf_enum_t  ngx_tiktok_reports_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_tiktok_reports_db_bounds = {
    ngx_conf_check_num_bounds, 0, 1000000
};

static ngx_conf_num_bounds_t  ngx_tiktok_reports_maxlen_bounds = {
    ngx_conf_check_num_bounds, 0, NGX_MAX_INT32_VALUE
};

/* how events are stored: fields of their own, or lines as 0.2 wrote them */
static ngx_conf_enum_t  ngx_tiktok_reports_timeline_forms[] = {
    { ngx_string("fields"), 0 },
    { ngx_string("lines"), 1 },
    { ngx_null_string, 0 }
};

static ngx_conf_num_bounds_t  ngx_tiktok_reports_partitions_bounds = {
    ngx_conf_check_num_bounds, 1, 1024
};

static ngx_conf_post_t  ngx_tiktok_reports_prefix_post = {
    ngx_tiktok_reports_prefix
};

static ngx_conf_post_t  ngx_tiktok_reports_positive_post = {
    ngx_tiktok_reports_positive
};

static ngx_conf_post_t  ngx_tiktok_reports_timeout_post = {
    ngx_tiktok_reports_timeout
};


static ngx_command_t  ngx_tiktok_reports_commands[] = {

    { ngx_string("tiktok_reports_redis"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_tiktok_reports_redis,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tiktok_reports_redis_password"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_tiktok_reports_redis_password,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tiktok_reports_redis_db"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, redis_db),
      &ngx_tiktok_reports_db_bounds },

    { ngx_string("tiktok_reports_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, redis_timeout),
      &ngx_tiktok_reports_timeout_post },

    { ngx_string("tiktok_reports_redis_max_outstanding"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_tiktok_reports_redis_max_outstanding,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tiktok_reports_redis_ssl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, redis_ssl.enable),
      NULL },

    { ngx_string("tiktok_reports_redis_ssl_verify"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, redis_ssl.verify),
      NULL },

    { ngx_string("tiktok_reports_redis_ssl_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, redis_ssl.trusted_certificate),
      NULL },

    { ngx_string("tiktok_reports_redis_ssl_name"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, redis_ssl.name),
      NULL },

    { ngx_string("tiktok_reports_redis_ssl_server_name"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, redis_ssl.server_name),
      NULL },

    { ngx_string("tiktok_reports_redis_ssl_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, redis_ssl.certificate),
      NULL },

    { ngx_string("tiktok_reports_redis_ssl_certificate_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, redis_ssl.certificate_key),
      NULL },

    { ngx_string("tiktok_reports_redis_wait"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_tiktok_reports_redis_wait,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tiktok_reports_key_prefix"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, key_prefix),
      &ngx_tiktok_reports_prefix_post },

    { ngx_string("tiktok_reports_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, ttl),
      NULL },

    { ngx_string("tiktok_reports_keep_reports"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, keep_reports),
      NULL },

    { ngx_string("tiktok_reports_stream_maxlen"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, stream_maxlen),
      &ngx_tiktok_reports_maxlen_bounds },

    { ngx_string("tiktok_reports_stream_partitions"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, stream_partitions),
      &ngx_tiktok_reports_partitions_bounds },

    { ngx_string("tiktok_reports_timeline"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, timeline),
      &ngx_tiktok_reports_timeline_forms },

    { ngx_string("tiktok_reports_max_results"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, max_results),
      &ngx_tiktok_reports_positive_post },

    { ngx_string("tiktok_reports_webhook"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_tiktok_reports_role,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      &ngx_tiktok_reports_roles[NGX_TIKTOK_REPORTS_ROLE_WEBHOOK] },

    { ngx_string("tiktok_reports_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_tiktok_reports_role,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      &ngx_tiktok_reports_roles[NGX_TIKTOK_REPORTS_ROLE_STATUS] },

    { ngx_string("tiktok_reports_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_tiktok_reports_role,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      &ngx_tiktok_reports_roles[NGX_TIKTOK_REPORTS_ROLE_METRICS] },

    { ngx_string("tiktok_reports_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_tiktok_reports_role,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      &ngx_tiktok_reports_roles[NGX_TIKTOK_REPORTS_ROLE_HEALTH] },

    { ngx_string("tiktok_reports_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, log_level),
      &ngx_tiktok_reports_log_levels },

    { ngx_string("tiktok_reports_signature"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_tiktok_reports_signature,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tiktok_reports_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_tiktok_reports_secret,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tiktok_reports_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_tiktok_reports_secret_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tiktok_reports_signature_tolerance"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, tolerance),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_tiktok_reports_module_ctx = {
    ngx_tiktok_reports_preconfiguration,   /* preconfiguration */
    ngx_tiktok_reports_postconfiguration,  /* postconfiguration */

    ngx_tiktok_reports_create_main_conf,   /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_tiktok_reports_create_loc_conf,    /* create location configuration */
    ngx_tiktok_reports_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_tiktok_reports_module = {
    NGX_MODULE_V1,
    &ngx_tiktok_reports_module_ctx,        /* module context */
    ngx_tiktok_reports_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_tiktok_reports_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_tiktok_reports_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_tiktok_reports_default_redis =
    ngx_string("127.0.0.1:6379");


/* for log_format: empty ("-") where the request did not get that far */
static ngx_http_variable_t  ngx_tiktok_reports_variables[] = {

    { ngx_string("tiktok_reports_accepted"), NULL,
      ngx_tiktok_reports_variable,
      offsetof(ngx_tiktok_reports_ctx_t, accepted),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tiktok_reports_duplicates"), NULL,
      ngx_tiktok_reports_variable,
      offsetof(ngx_tiktok_reports_ctx_t, duplicates),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tiktok_reports_rejected"), NULL,
      ngx_tiktok_reports_variable,
      offsetof(ngx_tiktok_reports_ctx_t, rejected),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tiktok_reports_redis_time"), NULL,
      ngx_tiktok_reports_redis_time_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static void *
ngx_tiktok_reports_create_main_conf(ngx_conf_t *cf)
{
    ngx_tiktok_reports_main_conf_t  *tmcf;

    tmcf = ngx_pcalloc(cf->pool, sizeof(ngx_tiktok_reports_main_conf_t));
    if (tmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&tmcf->stores, cf->pool, 2,
                       sizeof(ngx_tiktok_reports_store_t *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&tmcf->names, cf->pool, 2, sizeof(ngx_str_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return tmcf;
}


static void *
ngx_tiktok_reports_create_loc_conf(ngx_conf_t *cf)
{
    ngx_tiktok_reports_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_tiktok_reports_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->redis_user = { 0, NULL };
     *     conf->redis_password = { 0, NULL };
     *     conf->key_prefix = { 0, NULL };
     *     conf->sig_mode = NGX_TIKTOK_REPORTS_SIG_UNSET;
     *     conf->sig_digest = { 0, NULL };
     *     conf->sig_header = { 0, NULL };
     *     conf->sig = NULL;
     *     conf->sig_pos = { NULL, 0 };
     *     conf->role = NGX_TIKTOK_REPORTS_ROLE_NONE;
     *     conf->role_pos = { NULL, 0 };
     *     conf->location = { 0, NULL };
     *     conf->store = NULL;
     */

    conf->redis = NGX_CONF_UNSET_PTR;
    conf->redis_db = NGX_CONF_UNSET;
    conf->redis_timeout = NGX_CONF_UNSET_MSEC;
    conf->redis_max_commands = NGX_CONF_UNSET_UINT;
    conf->redis_max_bytes = NGX_CONF_UNSET_SIZE;
    conf->redis_ssl.enable = NGX_CONF_UNSET;
    conf->redis_ssl.verify = NGX_CONF_UNSET;
    conf->redis_ssl.server_name = NGX_CONF_UNSET;
    conf->redis_wait_replicas = NGX_CONF_UNSET;
    conf->redis_wait_timeout = NGX_CONF_UNSET_MSEC;
    conf->ttl = NGX_CONF_UNSET;
    conf->keep_reports = NGX_CONF_UNSET;
    conf->stream_maxlen = NGX_CONF_UNSET;
    conf->stream_partitions = NGX_CONF_UNSET;
    conf->timeline = NGX_CONF_UNSET_UINT;
    conf->redis_cluster = NGX_CONF_UNSET;
    conf->max_results = NGX_CONF_UNSET;
    conf->tolerance = NGX_CONF_UNSET;
    conf->log_level = NGX_CONF_UNSET_UINT;
    conf->secrets = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_tiktok_reports_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_tiktok_reports_loc_conf_t *prev = parent;
    ngx_tiktok_reports_loc_conf_t *conf = child;

    if (conf->redis == NGX_CONF_UNSET_PTR) {
        conf->redis_sentinels = prev->redis_sentinels;
        conf->redis_master = prev->redis_master;
        conf->redis_cluster = prev->redis_cluster;
    }

    if (conf->redis_cluster == NGX_CONF_UNSET) {
        conf->redis_cluster = 0;
    }

    ngx_conf_merge_ptr_value(conf->redis, prev->redis, NULL);

    if (conf->redis_password.data == NULL) {
        conf->redis_user = prev->redis_user;
        conf->redis_password = prev->redis_password;
    }

    ngx_conf_merge_value(conf->redis_db, prev->redis_db, 0);
    ngx_conf_merge_msec_value(conf->redis_timeout, prev->redis_timeout, 1000);
    ngx_conf_merge_uint_value(conf->redis_max_commands,
                              prev->redis_max_commands, 10000);
    ngx_conf_merge_size_value(conf->redis_max_bytes, prev->redis_max_bytes,
                              16 * 1024 * 1024);
    ngx_conf_merge_value(conf->redis_wait_replicas,
                         prev->redis_wait_replicas, 0);
    ngx_conf_merge_msec_value(conf->redis_wait_timeout,
                              prev->redis_wait_timeout, 0);

    ngx_tiktok_reports_ssl_merge(&conf->redis_ssl, &prev->redis_ssl);

    conf->limits.timeout = conf->redis_timeout;
    conf->limits.commands = conf->redis_max_commands;
    conf->limits.bytes = conf->redis_max_bytes;
    ngx_conf_merge_str_value(conf->key_prefix, prev->key_prefix, "tiktok:");
    ngx_conf_merge_sec_value(conf->ttl, prev->ttl, 30 * 86400);
    ngx_conf_merge_value(conf->keep_reports, prev->keep_reports, 0);
    ngx_conf_merge_value(conf->stream_maxlen, prev->stream_maxlen, 1000000);

    ngx_conf_merge_uint_value(conf->timeline, prev->timeline, 0);

    /* on a cluster the feed spreads over the masters */
    ngx_conf_merge_value(conf->stream_partitions, prev->stream_partitions,
                         conf->redis_cluster ? 16 : 1);
    ngx_conf_merge_value(conf->max_results, prev->max_results, 10000);
    ngx_conf_merge_sec_value(conf->tolerance, prev->tolerance, 300);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_INFO);
    ngx_conf_merge_ptr_value(conf->secrets, prev->secrets, NULL);

    if (conf->sig_mode == NGX_TIKTOK_REPORTS_SIG_UNSET) {
        conf->sig_mode = prev->sig_mode;
        conf->sig_digest = prev->sig_digest;
        conf->sig_header = prev->sig_header;
        conf->sig_pos = prev->sig_pos;
    }

    /* Redis Cluster has database 0 only, and refuses SELECT */
    if (conf->redis_cluster && conf->redis_db != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tiktok_reports_redis_db\" %i is not possible "
                           "with \"cluster\" in \"tiktok_reports_redis\": "
                           "Redis Cluster has database 0 only",
                           conf->redis_db);
        return NGX_CONF_ERROR;
    }

    /* a reply after the request's own timeout would come too late */
    if (conf->redis_wait_replicas
        && conf->redis_wait_timeout >= conf->redis_timeout)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tiktok_reports_redis_wait\" timeout of %M ms "
                           "must be below \"tiktok_reports_redis_timeout\" "
                           "(%M ms)", conf->redis_wait_timeout,
                           conf->redis_timeout);
        return NGX_CONF_ERROR;
    }

    if (conf->role != NGX_TIKTOK_REPORTS_ROLE_WEBHOOK
        && conf->role != NGX_TIKTOK_REPORTS_ROLE_STATUS)
    {
        return NGX_CONF_OK;
    }

    if (ngx_tiktok_reports_merge_store(cf, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (conf->role == NGX_TIKTOK_REPORTS_ROLE_STATUS) {
        return NGX_CONF_OK;
    }

    if (ngx_tiktok_reports_merge_transition(cf, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_tiktok_reports_merge_signature(cf, conf);
}


static char *
ngx_tiktok_reports_merge_store(ngx_conf_t *cf,
    ngx_tiktok_reports_loc_conf_t *conf)
{
    u_char                           *p;
    ngx_url_t                        *u;
    ngx_tiktok_reports_redis_conf_t   rc;

    if (conf->redis == NULL) {
        u = ngx_pcalloc(cf->pool, sizeof(ngx_url_t));
        if (u == NULL) {
            return NGX_CONF_ERROR;
        }

        u->url = ngx_tiktok_reports_default_redis;
        u->default_port = 6379;

        if (ngx_parse_url(cf->pool, u) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        conf->redis = u;
    }

    u = conf->redis;

    ngx_memzero(&rc, sizeof(ngx_tiktok_reports_redis_conf_t));

    rc.name = u->url;
    rc.user = conf->redis_user;
    rc.password = conf->redis_password;
    rc.db = conf->redis_db;
    rc.timeout = conf->redis_timeout;

    /*
     * Lookups write nothing, and commands pipelined behind a WAIT wait
     * with it (up to its timeout when replicas lag): they keep to a
     * connection without WAIT.
     */
    if (conf->role == NGX_TIKTOK_REPORTS_ROLE_WEBHOOK) {
        rc.wait_replicas = conf->redis_wait_replicas;
        rc.wait_timeout = conf->redis_wait_timeout;
    }

    if (conf->redis_master.len || conf->redis_cluster) {
        if (ngx_tiktok_reports_merge_sentinel(cf, conf, &rc) != NGX_CONF_OK) {
            return NGX_CONF_ERROR;
        }

        goto done;
    }

    if (u->naddrs == 0) {
        /* a host name: nginx's resolver at run time, when there is one */
        if (ngx_tiktok_reports_merge_host(cf, conf, &rc, &u) != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (rc.resolver) {
            goto done;
        }
    }

    rc.sockaddr = u->addrs[0].sockaddr;
    rc.socklen = u->addrs[0].socklen;

    if (u->family == AF_UNIX) {
        /* u->host is the socket's path, not NUL-terminated */
        p = ngx_pnalloc(cf->pool, u->host.len + 1);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        *ngx_cpymem(p, u->host.data, u->host.len) = '\0';
        rc.path.data = p;
        rc.path.len = u->host.len;

    } else {
        /* resolved now, so that no request ever waits on DNS */
        p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        rc.host.len = ngx_sock_ntop(u->addrs[0].sockaddr, u->addrs[0].socklen,
                                    p, NGX_SOCKADDR_STRLEN, 0);
        p[rc.host.len] = '\0';
        rc.host.data = p;
        rc.port = u->port;

        /* the name TLS checks by default: the host as configured */
        rc.host_name = u->host;

        if (rc.host_name.len > 2 && rc.host_name.data[0] == '[') {
            rc.host_name.data++;
            rc.host_name.len -= 2;
        }

        p = ngx_pnalloc(cf->pool, rc.host_name.len + 1);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        *ngx_cpymem(p, rc.host_name.data, rc.host_name.len) = '\0';
        rc.host_name.data = p;
    }

    if (conf->redis_ssl.enable && u->family == AF_UNIX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tiktok_reports_redis_ssl\" is not "
                           "possible over the unix socket \"%V\": Redis "
                           "speaks TLS on TCP only", &u->url);
        return NGX_CONF_ERROR;
    }

done:

    /*
     * TLS for every way of finding Redis; a name resolved at run time is
     * the name checked, a master found through Sentinel is checked by the
     * address it is announced by (the discovery layer sets it)
     */
    if (conf->redis_ssl.enable) {
        if (rc.host_name.len == 0 && rc.resolver) {
            rc.host_name = rc.host;
        }

        rc.ssl = ngx_tiktok_reports_ssl_get(cf, &conf->redis_ssl);
        if (rc.ssl == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    conf->store = ngx_tiktok_reports_store_get(cf, &rc);
    if (conf->store == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * A host name: with a "resolver" in the location, it is resolved at each
 * connect through it; without, now, as nginx does with the addresses of
 * its other directives.  *u becomes the resolved copy then.
 */

static char *
ngx_tiktok_reports_merge_host(ngx_conf_t *cf,
    ngx_tiktok_reports_loc_conf_t *conf, ngx_tiktok_reports_redis_conf_t *rc,
    ngx_url_t **u)
{
    u_char                    *p;
    ngx_url_t                 *r;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->resolver && clcf->resolver->connections.nelts) {
        p = ngx_pnalloc(cf->pool, (*u)->host.len + 1);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        *ngx_cpymem(p, (*u)->host.data, (*u)->host.len) = '\0';

        rc->host.data = p;
        rc->host.len = (*u)->host.len;
        rc->port = (*u)->port;
        rc->resolver = clcf->resolver;
        rc->resolver_timeout = clcf->resolver_timeout;

        return NGX_CONF_OK;
    }

    /* the directive's own url stays unresolved for other locations */

    r = ngx_palloc(cf->pool, sizeof(ngx_url_t));
    if (r == NULL) {
        return NGX_CONF_ERROR;
    }

    *r = **u;
    r->addrs = NULL;
    r->naddrs = 0;

    if (ngx_inet_resolve_host(cf->pool, r) != NGX_OK || r->naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s in \"%V\" of \"tiktok_reports_redis\"",
                           r->err ? r->err : "no address", &r->url);
        return NGX_CONF_ERROR;
    }

    *u = r;

    return NGX_CONF_OK;
}


/*
 * Sentinel: the sentinels' addresses now (as nginx resolves its other
 * addresses), the master's from them at run time.  Cluster: the seeds'
 * addresses now, the masters' from the slot map at run time (host names
 * the cluster announces through the location's resolver).  The store's
 * name lists them all, so that only locations naming the same ones share
 * it.
 */

static char *
ngx_tiktok_reports_merge_sentinel(ngx_conf_t *cf,
    ngx_tiktok_reports_loc_conf_t *conf, ngx_tiktok_reports_redis_conf_t *rc)
{
    u_char                    *p;
    size_t                     len;
    ngx_uint_t                 i;
    ngx_url_t                 *u;
    ngx_addr_t                *a;
    ngx_array_t               *addrs;
    ngx_http_core_loc_conf_t  *clcf;

    u = conf->redis_sentinels->elts;

    addrs = ngx_array_create(cf->pool, conf->redis_sentinels->nelts,
                             sizeof(ngx_addr_t));
    if (addrs == NULL) {
        return NGX_CONF_ERROR;
    }

    len = conf->redis_cluster ? sizeof("cluster") - 1
                              : sizeof("sentinel=") - 1
                                + conf->redis_master.len;

    for (i = 0; i < conf->redis_sentinels->nelts; i++) {
        a = ngx_array_push(addrs);
        if (a == NULL) {
            return NGX_CONF_ERROR;
        }

        a->sockaddr = u[i].addrs[0].sockaddr;
        a->socklen = u[i].addrs[0].socklen;
        a->name = u[i].url;

        if (conf->redis_cluster) {
            /* the seed as an address and port, as the cluster says them */
            p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN);
            if (p == NULL) {
                return NGX_CONF_ERROR;
            }

            a->name.data = p;
            a->name.len = ngx_sock_ntop(a->sockaddr, a->socklen, p,
                                        NGX_SOCKADDR_STRLEN, 1);
        }

        len += u[i].url.len + 1;
    }

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    rc->name.data = p;

    for (i = 0; i < conf->redis_sentinels->nelts; i++) {
        p = ngx_sprintf(p, "%V ", &u[i].url);
    }

    if (conf->redis_cluster) {
        p = ngx_cpymem(p, "cluster", 7);
        rc->seeds = addrs;

        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

        if (clcf->resolver && clcf->resolver->connections.nelts) {
            rc->resolver = clcf->resolver;
            rc->resolver_timeout = clcf->resolver_timeout;
        }

    } else {
        p = ngx_sprintf(p, "sentinel=%V", &conf->redis_master);
        rc->sentinels = addrs;
        rc->master = conf->redis_master;
    }

    rc->name.len = p - rc->name.data;

    return NGX_CONF_OK;
}


static char *
ngx_tiktok_reports_merge_transition(ngx_conf_t *cf,
    ngx_tiktok_reports_loc_conf_t *conf)
{
    u_char                           *p;
    ngx_uint_t                        i;
    ngx_tiktok_reports_store_opts_t  *opts;

    opts = &conf->transition;
    opts->prefix = conf->key_prefix;

    p = ngx_pnalloc(cf->pool, conf->key_prefix.len + sizeof("events") - 1
                              + 2 * NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    opts->events.data = p;
    p = ngx_cpymem(p, conf->key_prefix.data, conf->key_prefix.len);
    p = ngx_cpymem(p, "events", 6);
    opts->events.len = p - opts->events.data;

    opts->ttl.data = p;
    p = ngx_sprintf(p, "%T", conf->ttl);
    opts->ttl.len = p - opts->ttl.data;

    opts->maxlen.data = p;
    p = ngx_sprintf(p, "%i", conf->stream_maxlen);
    opts->maxlen.len = p - opts->maxlen.data;

    opts->lines = conf->timeline;

    /* the feed's partitions: <prefix>events, or <prefix>events:{p} */
    opts->partitions = conf->stream_partitions;

    opts->feeds = ngx_palloc(cf->pool, opts->partitions * sizeof(ngx_str_t));
    if (opts->feeds == NULL) {
        return NGX_CONF_ERROR;
    }

    if (opts->partitions == 1) {
        opts->feeds[0] = opts->events;
        return NGX_CONF_OK;
    }

    for (i = 0; i < opts->partitions; i++) {
        p = ngx_pnalloc(cf->pool, opts->events.len + sizeof(":{}") - 1
                                  + NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        opts->feeds[i].data = p;
        opts->feeds[i].len = ngx_sprintf(p, "%V:{%ui}", &opts->events, i) - p;
    }

    return NGX_CONF_OK;
}


/*
 * Reported at the line of the directive at fault, naming the location: a
 * secret is only wrong for the signature mode of the location using it.
 */

static char *
ngx_tiktok_reports_merge_signature(ngx_conf_t *cf,
    ngx_tiktok_reports_loc_conf_t *conf)
{
    char                          err[256];
    ngx_uint_t                    i;
    ngx_pool_cleanup_t           *cln;
    ngx_tiktok_reports_secret_t  *secret;

    if (conf->sig_mode == NGX_TIKTOK_REPORTS_SIG_OFF) {
        return NGX_CONF_OK;
    }

    if (conf->sig_mode == NGX_TIKTOK_REPORTS_SIG_UNSET
        || conf->secrets == NULL || conf->secrets->nelts == 0)
    {
        ngx_tiktok_reports_conf_error(cf, &conf->role_pos,
                           "\"tiktok_reports_webhook\" needs "
                           "\"tiktok_reports_signature\" with at least one "
                           "\"tiktok_reports_secret\", or "
                           "\"tiktok_reports_signature off\" "
                           "for location \"%V\"", &conf->location);
        return NGX_CONF_ERROR;
    }

    conf->sig = ngx_tiktok_reports_sig_conf_create((int) conf->sig_mode,
                                             (char *) conf->sig_digest.data,
                                             err);
    if (conf->sig == NULL) {
        ngx_tiktok_reports_conf_error(cf, &conf->sig_pos,
                                      "\"tiktok_reports_signature\": %s "
                                      "for location \"%V\"",
                                      err, &conf->location);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_tiktok_reports_sig_conf_free(conf->sig);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_tiktok_reports_sig_cleanup;
    cln->data = conf->sig;

    secret = conf->secrets->elts;

    for (i = 0; i < conf->secrets->nelts; i++) {
        if (ngx_tiktok_reports_sig_conf_add_secret(conf->sig,
                                                   secret[i].value.data,
                                                   secret[i].value.len, err)
            != 0)
        {
            ngx_tiktok_reports_conf_error(cf, &secret[i].pos,
                                          "\"tiktok_reports_secret\": %s "
                                          "for location \"%V\"",
                                          err, &conf->location);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void
ngx_tiktok_reports_sig_cleanup(void *data)
{
    ngx_tiktok_reports_sig_conf_free(data);
}


static void
ngx_tiktok_reports_conf_pos(ngx_conf_t *cf, ngx_tiktok_reports_conf_pos_t *pos)
{
    pos->file = cf->conf_file->file.name.data;
    pos->line = cf->conf_file->line;
}


/* as ngx_conf_log_error(), but at a remembered directive's line */

static void ngx_cdecl
ngx_tiktok_reports_conf_error(ngx_conf_t *cf,
    ngx_tiktok_reports_conf_pos_t *pos, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;
    u_char    errstr[NGX_MAX_CONF_ERRSTR];

    va_start(args, fmt);
    p = ngx_vslprintf(errstr, errstr + NGX_MAX_CONF_ERRSTR, fmt, args);
    va_end(args);

    if (pos->file == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%*s", p - errstr, errstr);
        return;
    }

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "%*s in %s:%ui",
                  p - errstr, errstr, pos->file, pos->line);
}


/* tiktok_reports_redis address ... [sentinel=name | cluster] */

static char *
ngx_tiktok_reports_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tiktok_reports_loc_conf_t *tlcf = conf;

    ngx_str_t    *value, master;
    ngx_url_t    *u;
    ngx_uint_t    i, n, cluster;
    ngx_array_t  *urls;

    if (tlcf->redis != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ngx_str_null(&master);
    n = 0;
    cluster = 0;

    for (i = 1; i < cf->args->nelts; i++) {
        if (value[i].len == 7
            && ngx_strncmp(value[i].data, "cluster", 7) == 0)
        {
            if (cluster) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "duplicate \"cluster\" in "
                                   "\"tiktok_reports_redis\"");
                return NGX_CONF_ERROR;
            }

            cluster = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "sentinel=", 9) != 0) {
            n++;
            continue;
        }

        if (master.data) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate \"sentinel=\" in "
                               "\"tiktok_reports_redis\"");
            return NGX_CONF_ERROR;
        }

        master.data = value[i].data + 9;
        master.len = value[i].len - 9;

        if (master.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"sentinel=\" of \"tiktok_reports_redis\" "
                               "needs the master's name");
            return NGX_CONF_ERROR;
        }
    }

    if (n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no address in \"tiktok_reports_redis\"");
        return NGX_CONF_ERROR;
    }

    if (cluster && master.data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"cluster\" and \"sentinel=\" of "
                           "\"tiktok_reports_redis\" exclude each other");
        return NGX_CONF_ERROR;
    }

    if (n > 1 && master.data == NULL && !cluster) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "more than one address in "
                           "\"tiktok_reports_redis\" needs \"sentinel=\" "
                           "or \"cluster\"");
        return NGX_CONF_ERROR;
    }

    urls = ngx_array_create(cf->pool, n, sizeof(ngx_url_t));
    if (urls == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "sentinel=", 9) == 0
            || (value[i].len == 7
                && ngx_strncmp(value[i].data, "cluster", 7) == 0))
        {
            continue;
        }

        u = ngx_array_push(urls);
        if (u == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(u, sizeof(ngx_url_t));

        u->url = value[i];
        u->default_port = master.data ? 26379 : 6379;

        /* Redis's own host name waits for the merge: a resolver may come */
        u->no_resolve = (master.data == NULL && !cluster);

        if (ngx_parse_url(cf->pool, u) != NGX_OK) {
            if (u->err) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%s in \"%V\" of \"tiktok_reports_redis\"",
                                   u->err, &u->url);
            }

            return NGX_CONF_ERROR;
        }

        if (u->naddrs == 0 && !u->no_resolve) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "no address for \"%V\" of "
                               "\"tiktok_reports_redis\"", &u->url);
            return NGX_CONF_ERROR;
        }

        if (u->uri.len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unexpected path in \"%V\" of "
                               "\"tiktok_reports_redis\"", &u->url);
            return NGX_CONF_ERROR;
        }

        if (cluster && u->family == AF_UNIX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "a cluster is reached over TCP: \"%V\" of "
                               "\"tiktok_reports_redis\"", &u->url);
            return NGX_CONF_ERROR;
        }
    }

    tlcf->redis = urls->elts;

    if (master.data || cluster) {
        /* the sentinels, or the cluster's seeds */
        tlcf->redis_sentinels = urls;
        tlcf->redis_master = master;
    }

    tlcf->redis_cluster = cluster;

    return NGX_CONF_OK;
}


/* tiktok_reports_redis_wait replicas timeout | off */

static char *
ngx_tiktok_reports_redis_wait(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_tiktok_reports_loc_conf_t *tlcf = conf;

    ngx_int_t    n;
    ngx_msec_t   t;
    ngx_str_t   *value;

    if (tlcf->redis_wait_replicas != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2) {
        if (ngx_strcmp(value[1].data, "off") != 0) {
            return "takes a number of replicas and a timeout, or \"off\"";
        }

        tlcf->redis_wait_replicas = 0;
        tlcf->redis_wait_timeout = 0;
        return NGX_CONF_OK;
    }

    n = ngx_atoi(value[1].data, value[1].len);
    if (n == NGX_ERROR || n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of replicas \"%V\" in "
                           "\"tiktok_reports_redis_wait\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    t = ngx_parse_time(&value[2], 0);
    if (t == (ngx_msec_t) NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid timeout \"%V\" in "
                           "\"tiktok_reports_redis_wait\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    /* WAIT with 0 would block the connection until the replicas come */
    if (t == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the timeout of \"tiktok_reports_redis_wait\" "
                           "must be above 0");
        return NGX_CONF_ERROR;
    }

    tlcf->redis_wait_replicas = n;
    tlcf->redis_wait_timeout = t;

    return NGX_CONF_OK;
}


/* tiktok_reports_redis_max_outstanding commands [size] */

static char *
ngx_tiktok_reports_redis_max_outstanding(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_tiktok_reports_loc_conf_t *tlcf = conf;

    ssize_t     size;
    ngx_int_t   n;
    ngx_str_t  *value;

    if (tlcf->redis_max_commands != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n == NGX_ERROR || n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of commands \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    tlcf->redis_max_commands = n;

    if (cf->args->nelts == 3) {
        size = ngx_parse_size(&value[2]);
        if (size == NGX_ERROR || size == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid size \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        tlcf->redis_max_bytes = size;
    }

    return NGX_CONF_OK;
}


static char *
ngx_tiktok_reports_redis_password(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_tiktok_reports_loc_conf_t *tlcf = conf;

    ngx_str_t  *value;

    if (tlcf->redis_password.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 3) {
        tlcf->redis_user = value[1];
        tlcf->redis_password = value[2];

    } else {
        tlcf->redis_password = value[1];
    }

    if (tlcf->redis_password.len == 0
        || (cf->args->nelts == 3 && tlcf->redis_user.len == 0))
    {
        return "must not be empty";
    }

    return NGX_CONF_OK;
}


/* tiktok_reports_webhook, _status, _metrics, _health: one role each */

static char *
ngx_tiktok_reports_role(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tiktok_reports_loc_conf_t *tlcf = conf;

    ngx_uint_t                *role;
    ngx_http_core_loc_conf_t  *clcf;

    role = cmd->post;

    if (tlcf->role == *role) {
        return "is duplicate";
    }

    /* one content handler per location: the second would replace it */
    if (tlcf->role != NGX_TIKTOK_REPORTS_ROLE_NONE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": the location already has the role "
                           "\"%s\"", &cmd->name,
                           ngx_tiktok_reports_role_names[tlcf->role]);
        return NGX_CONF_ERROR;
    }

    tlcf->role = *role;
    ngx_tiktok_reports_conf_pos(cf, &tlcf->role_pos);

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_tiktok_reports_handlers[*role];
    tlcf->location = clcf->name;

    return NGX_CONF_OK;
}


static char *
ngx_tiktok_reports_signature(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tiktok_reports_loc_conf_t *tlcf = conf;

    char                            err[256];
    ngx_str_t                      *value;
    ngx_tiktok_reports_sig_conf_t  *sc;

    if (tlcf->sig_mode != NGX_TIKTOK_REPORTS_SIG_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;
    ngx_tiktok_reports_conf_pos(cf, &tlcf->sig_pos);

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (cf->args->nelts != 2) {
            return "takes no parameters with \"off\"";
        }

        tlcf->sig_mode = NGX_TIKTOK_REPORTS_SIG_OFF;
        return NGX_CONF_OK;
    }

    if (ngx_strcmp(value[1].data, "standard-webhooks") == 0) {
        if (cf->args->nelts != 2) {
            return "takes no parameters with \"standard-webhooks\"";
        }

        tlcf->sig_mode = NGX_TIKTOK_REPORTS_SIG_STANDARD;
        ngx_str_set(&tlcf->sig_digest, "sha256");
        return NGX_CONF_OK;
    }

    if (value[1].len <= 5 || ngx_strncmp(value[1].data, "hmac-", 5) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"tiktok_reports_signature\" \"%V\": use "
                           "hmac-md5, hmac-sha1, hmac-sha224, hmac-sha256, "
                           "hmac-sha384, hmac-sha512, standard-webhooks or "
                           "off", &value[1]);
        return NGX_CONF_ERROR;
    }

    tlcf->sig_mode = NGX_TIKTOK_REPORTS_SIG_HMAC;
    tlcf->sig_digest.data = value[1].data + 5;
    tlcf->sig_digest.len = value[1].len - 5;
    ngx_str_set(&tlcf->sig_header, "X-Signature");

    /* an unknown digest is refused here, at its line, used or not */
    sc = ngx_tiktok_reports_sig_conf_create(NGX_TIKTOK_REPORTS_SIG_HMAC,
                                            (char *) tlcf->sig_digest.data,
                                            err);
    if (sc == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tiktok_reports_signature\": %s", err);
        return NGX_CONF_ERROR;
    }

    ngx_tiktok_reports_sig_conf_free(sc);

    if (cf->args->nelts == 3) {
        if (value[2].len <= 7
            || ngx_strncmp(value[2].data, "header=", 7) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" of "
                               "\"tiktok_reports_signature\": expected "
                               "header=NAME", &value[2]);
            return NGX_CONF_ERROR;
        }

        tlcf->sig_header.data = value[2].data + 7;
        tlcf->sig_header.len = value[2].len - 7;
    }

    return NGX_CONF_OK;
}


/*
 * Secrets from a file, one per line, so that nginx.conf can be shared
 * without them; read when the configuration is (re)loaded.
 */

static char *
ngx_tiktok_reports_secret_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tiktok_reports_loc_conf_t *tlcf = conf;

    u_char                       *p, *last, *eol, *end;
    off_t                         size;
    ssize_t                       n;
    ngx_fd_t                      fd;
    ngx_str_t                    *value, name;
    ngx_uint_t                    found;
    ngx_file_info_t               fi;
    ngx_tiktok_reports_secret_t  *secret;

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"tiktok_reports_secret_file\" cannot open "
                           "\"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || (size = ngx_file_size(&fi)) > 65536)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tiktok_reports_secret_file\" \"%V\" is not a "
                           "readable file of at most 64k", &name);
        (void) ngx_close_file(fd);
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(cf->pool, (size_t) size + 1);
    if (p == NULL) {
        (void) ngx_close_file(fd);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_fd(fd, p, (size_t) size);
    (void) ngx_close_file(fd);

    if (n != (ssize_t) size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"tiktok_reports_secret_file\" cannot read "
                           "\"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    found = 0;
    last = p + n;

    while (p < last) {
        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        end = eol;

        while (end > p && (end[-1] == '\r' || end[-1] == ' '
                           || end[-1] == '\t'))
        {
            end--;
        }

        if (end > p && *p != '#') {
            secret = ngx_tiktok_reports_secret_push(cf, tlcf);
            if (secret == NULL) {
                return NGX_CONF_ERROR;
            }

            secret->value.data = p;
            secret->value.len = end - p;
            found++;
        }

        p = eol + 1;
    }

    if (found == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tiktok_reports_secret_file\" \"%V\" has no "
                           "secret", &name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* tiktok_reports_secret: repeatable; a level's own replace those above */

static char *
ngx_tiktok_reports_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tiktok_reports_loc_conf_t *tlcf = conf;

    ngx_str_t                    *value;
    ngx_tiktok_reports_secret_t  *secret;

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "must not be empty";
    }

    secret = ngx_tiktok_reports_secret_push(cf, tlcf);
    if (secret == NULL) {
        return NGX_CONF_ERROR;
    }

    secret->value = value[1];

    return NGX_CONF_OK;
}


/*
 * One more secret of this level, remembered with its line.  Levels never
 * add up, so the count is complete here and too many is refused at once.
 */

static ngx_tiktok_reports_secret_t *
ngx_tiktok_reports_secret_push(ngx_conf_t *cf,
    ngx_tiktok_reports_loc_conf_t *tlcf)
{
    ngx_str_t                    *name;
    ngx_tiktok_reports_secret_t  *secret;

    if (tlcf->secrets == NGX_CONF_UNSET_PTR) {
        tlcf->secrets = ngx_array_create(cf->pool, 4,
                                         sizeof(ngx_tiktok_reports_secret_t));
        if (tlcf->secrets == NULL) {
            return NULL;
        }
    }

    if (tlcf->secrets->nelts == NGX_TIKTOK_REPORTS_SIG_MAX_KEYS) {
        name = cf->args->elts;
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": too many secrets (at most %d)",
                           &name[0], NGX_TIKTOK_REPORTS_SIG_MAX_KEYS);
        return NULL;
    }

    secret = ngx_array_push(tlcf->secrets);
    if (secret == NULL) {
        return NULL;
    }

    ngx_tiktok_reports_conf_pos(cf, &secret->pos);

    return secret;
}


/* a number of at least 1, refused with the directive's name otherwise */

static char *
ngx_tiktok_reports_positive(ngx_conf_t *cf, void *post, void *data)
{
    ngx_int_t  *np = data;

    if (*np < 1) {
        return "must be at least 1";
    }

    return NGX_CONF_OK;
}


/* "{" or "}" would make the prefix, not the messageId, the hash tag */

static char *
ngx_tiktok_reports_prefix(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *s = data;

    if (ngx_strlchr(s->data, s->data + s->len, '{')
        || ngx_strlchr(s->data, s->data + s->len, '}'))
    {
        return "must not contain \"{\" or \"}\": the messageId is the "
               "key's hash tag";
    }

    return NGX_CONF_OK;
}


/* refused at the directive's line: a request could never wait for Redis */

static char *
ngx_tiktok_reports_timeout(ngx_conf_t *cf, void *post, void *data)
{
    ngx_msec_t  *mp = data;

    if (*mp == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tiktok_reports_redis_timeout\" must be "
                           "greater than 0");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_tiktok_reports_preconfiguration(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_tiktok_reports_variables; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


ngx_tiktok_reports_ctx_t *
ngx_tiktok_reports_get_ctx(ngx_http_request_t *r)
{
    ngx_tiktok_reports_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_tiktok_reports_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_tiktok_reports_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, ctx, ngx_tiktok_reports_module);
    }

    return ctx;
}


/* the counts of a 200 answer of the webhook */

static ngx_int_t
ngx_tiktok_reports_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                    *p;
    ngx_tiktok_reports_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_tiktok_reports_module);

    if (ctx == NULL || !ctx->counted) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%ui", *(ngx_uint_t *) ((char *) ctx + data)) - p;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = p;

    return NGX_OK;
}


/* from the first command sent to the answer, as $upstream_response_time */

static ngx_int_t
ngx_tiktok_reports_redis_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                    *p;
    ngx_msec_t                 ms;
    ngx_tiktok_reports_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_tiktok_reports_module);

    if (ctx == NULL || !ctx->redis) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 4);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ms = ctx->redis_time / 1000;

    v->len = ngx_sprintf(p, "%T.%03M", (time_t) (ms / 1000), ms % 1000) - p;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = p;

    return NGX_OK;
}


static ngx_int_t
ngx_tiktok_reports_postconfiguration(ngx_conf_t *cf)
{
    return ngx_tiktok_reports_metrics_init(cf);
}


static ngx_int_t
ngx_tiktok_reports_init_process(ngx_cycle_t *cycle)
{
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    return ngx_tiktok_reports_store_init_worker(cycle);
}


static void
ngx_tiktok_reports_exit_process(ngx_cycle_t *cycle)
{
    ngx_tiktok_reports_store_exit_worker(cycle);
}
