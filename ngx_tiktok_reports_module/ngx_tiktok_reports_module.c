
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * Directives, configuration, worker start and exit, and the JSON answers
 * that every location of the module shares.
 */


#include "ngx_tiktok_reports_module.h"
#include "ngx_tiktok_reports_redis.h"


#define NGX_TIKTOK_REPORTS_FILE_CHUNK  65536


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
static char *ngx_tiktok_reports_secret_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_tiktok_reports_positive(ngx_conf_t *cf, void *post,
    void *data);
static ngx_int_t ngx_tiktok_reports_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_tiktok_reports_init_process(ngx_cycle_t *cycle);
static void ngx_tiktok_reports_exit_process(ngx_cycle_t *cycle);


/* the content handler of each role, and the role a directive sets */
static ngx_http_handler_pt  ngx_tiktok_reports_handlers[] = {
    NULL,
    ngx_tiktok_reports_webhook_handler,
    ngx_tiktok_reports_status_handler,
    ngx_tiktok_reports_metrics_handler
};

static ngx_uint_t  ngx_tiktok_reports_roles[] = {
    NGX_TIKTOK_REPORTS_ROLE_NONE,
    NGX_TIKTOK_REPORTS_ROLE_WEBHOOK,
    NGX_TIKTOK_REPORTS_ROLE_STATUS,
    NGX_TIKTOK_REPORTS_ROLE_METRICS
};


static ngx_conf_num_bounds_t  ngx_tiktok_reports_db_bounds = {
    ngx_conf_check_num_bounds, 0, 1000000
};

static ngx_conf_num_bounds_t  ngx_tiktok_reports_maxlen_bounds = {
    ngx_conf_check_num_bounds, 0, NGX_MAX_INT32_VALUE
};

static ngx_conf_post_t  ngx_tiktok_reports_positive_post = {
    ngx_tiktok_reports_positive
};


static ngx_command_t  ngx_tiktok_reports_commands[] = {

    { ngx_string("tiktok_reports_redis"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
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
      NULL },

    { ngx_string("tiktok_reports_redis_max_outstanding"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_tiktok_reports_redis_max_outstanding,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
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
      NULL },

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

    { ngx_string("tiktok_reports_signature"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_tiktok_reports_signature,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("tiktok_reports_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_array_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_tiktok_reports_loc_conf_t, secrets),
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
    NULL,                                  /* preconfiguration */
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
     *     conf->role = NGX_TIKTOK_REPORTS_ROLE_NONE;
     *     conf->store = NULL;
     */

    conf->redis = NGX_CONF_UNSET_PTR;
    conf->redis_db = NGX_CONF_UNSET;
    conf->redis_timeout = NGX_CONF_UNSET_MSEC;
    conf->redis_max_commands = NGX_CONF_UNSET_UINT;
    conf->redis_max_bytes = NGX_CONF_UNSET_SIZE;
    conf->redis_wait_replicas = NGX_CONF_UNSET;
    conf->redis_wait_timeout = NGX_CONF_UNSET_MSEC;
    conf->ttl = NGX_CONF_UNSET;
    conf->keep_reports = NGX_CONF_UNSET;
    conf->stream_maxlen = NGX_CONF_UNSET;
    conf->max_results = NGX_CONF_UNSET;
    conf->tolerance = NGX_CONF_UNSET;
    conf->secrets = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_tiktok_reports_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_tiktok_reports_loc_conf_t *prev = parent;
    ngx_tiktok_reports_loc_conf_t *conf = child;

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

    conf->limits.timeout = conf->redis_timeout;
    conf->limits.commands = conf->redis_max_commands;
    conf->limits.bytes = conf->redis_max_bytes;
    ngx_conf_merge_str_value(conf->key_prefix, prev->key_prefix, "tiktok:");
    ngx_conf_merge_sec_value(conf->ttl, prev->ttl, 30 * 86400);
    ngx_conf_merge_value(conf->keep_reports, prev->keep_reports, 0);
    ngx_conf_merge_value(conf->stream_maxlen, prev->stream_maxlen, 1000000);
    ngx_conf_merge_value(conf->max_results, prev->max_results, 10000);
    ngx_conf_merge_sec_value(conf->tolerance, prev->tolerance, 300);
    ngx_conf_merge_ptr_value(conf->secrets, prev->secrets, NULL);

    if (conf->sig_mode == NGX_TIKTOK_REPORTS_SIG_UNSET) {
        conf->sig_mode = prev->sig_mode;
        conf->sig_digest = prev->sig_digest;
        conf->sig_header = prev->sig_header;
    }

    if (conf->redis_timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tiktok_reports_redis_timeout\" must be "
                           "greater than 0");
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
    rc.sockaddr = u->addrs[0].sockaddr;
    rc.socklen = u->addrs[0].socklen;
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
    }

    conf->store = ngx_tiktok_reports_store_get(cf, &rc);
    if (conf->store == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_tiktok_reports_merge_transition(ngx_conf_t *cf,
    ngx_tiktok_reports_loc_conf_t *conf)
{
    u_char                           *p;
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

    return NGX_CONF_OK;
}


static char *
ngx_tiktok_reports_merge_signature(ngx_conf_t *cf,
    ngx_tiktok_reports_loc_conf_t *conf)
{
    char                 err[256];
    ngx_str_t           *secret;
    ngx_uint_t           i;
    ngx_pool_cleanup_t  *cln;

    if (conf->sig_mode == NGX_TIKTOK_REPORTS_SIG_OFF) {
        return NGX_CONF_OK;
    }

    if (conf->sig_mode == NGX_TIKTOK_REPORTS_SIG_UNSET
        || conf->secrets == NULL || conf->secrets->nelts == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tiktok_reports_webhook\" needs "
                           "\"tiktok_reports_signature\" with at least one "
                           "\"tiktok_reports_secret\", or "
                           "\"tiktok_reports_signature off\"");
        return NGX_CONF_ERROR;
    }

    if (conf->secrets->nelts > NGX_TIKTOK_REPORTS_SIG_MAX_KEYS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many \"tiktok_reports_secret\" (at most %d)",
                           NGX_TIKTOK_REPORTS_SIG_MAX_KEYS);
        return NGX_CONF_ERROR;
    }

    conf->sig = ngx_tiktok_reports_sig_conf_create((int) conf->sig_mode,
                                             (char *) conf->sig_digest.data,
                                             err);
    if (conf->sig == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tiktok_reports_signature\": %s", err);
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
        if (ngx_tiktok_reports_sig_conf_add_secret(conf->sig, secret[i].data,
                                                   secret[i].len, err)
            != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"tiktok_reports_secret\": %s", err);
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


static char *
ngx_tiktok_reports_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tiktok_reports_loc_conf_t *tlcf = conf;

    ngx_str_t  *value;
    ngx_url_t  *u;

    if (tlcf->redis != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    u = ngx_pcalloc(cf->pool, sizeof(ngx_url_t));
    if (u == NULL) {
        return NGX_CONF_ERROR;
    }

    u->url = value[1];
    u->default_port = 6379;

    if (ngx_parse_url(cf->pool, u) != NGX_OK) {
        if (u->err) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s in \"%V\" of \"tiktok_reports_redis\"",
                               u->err, &u->url);
        }

        return NGX_CONF_ERROR;
    }

    if (u->naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no address for \"%V\" of \"tiktok_reports_redis\"",
                           &u->url);
        return NGX_CONF_ERROR;
    }

    if (u->uri.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unexpected path in \"%V\" of "
                           "\"tiktok_reports_redis\"", &u->url);
        return NGX_CONF_ERROR;
    }

    tlcf->redis = u;

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


/* tiktok_reports_webhook, _status and _metrics: one role per location */

static char *
ngx_tiktok_reports_role(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tiktok_reports_loc_conf_t *tlcf = conf;

    ngx_uint_t                *role;
    ngx_http_core_loc_conf_t  *clcf;

    if (tlcf->role != NGX_TIKTOK_REPORTS_ROLE_NONE) {
        return "is duplicate";
    }

    role = cmd->post;
    tlcf->role = *role;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_tiktok_reports_handlers[*role];

    return NGX_CONF_OK;
}


static char *
ngx_tiktok_reports_signature(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_tiktok_reports_loc_conf_t *tlcf = conf;

    ngx_str_t  *value;

    if (tlcf->sig_mode != NGX_TIKTOK_REPORTS_SIG_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

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

    u_char           *p, *last, *eol, *end;
    off_t             size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t        *value, *secret, name;
    ngx_uint_t        found;
    ngx_file_info_t   fi;

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

    if (tlcf->secrets == NGX_CONF_UNSET_PTR) {
        tlcf->secrets = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
        if (tlcf->secrets == NULL) {
            return NGX_CONF_ERROR;
        }
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
            secret = ngx_array_push(tlcf->secrets);
            if (secret == NULL) {
                return NGX_CONF_ERROR;
            }

            secret->data = p;
            secret->len = end - p;
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


static ngx_int_t
ngx_tiktok_reports_postconfiguration(ngx_conf_t *cf)
{
    return ngx_tiktok_reports_metrics_init(cf);
}


/* a monotonic clock in microseconds, for Redis round trips */

ngx_msec_t
ngx_tiktok_reports_usec(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (ngx_msec_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
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


/* answers */

ngx_int_t
ngx_tiktok_reports_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len)
{
    static ngx_str_t  type = ngx_string("application/json");

    return ngx_tiktok_reports_send(r, status, &type, body, len);
}


ngx_int_t
ngx_tiktok_reports_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *body, size_t len)
{
    ngx_int_t    rc;
    ngx_buf_t   *b;
    ngx_chain_t  out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;

    if (len == 0 || r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_tiktok_reports_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *error)
{
    size_t            len;
    u_char           *body, *p;
    ngx_table_elt_t  *h;

    len = ngx_strlen(error);

    body = ngx_pnalloc(r->pool, sizeof("{\"error\":}") - 1
                       + ngx_tiktok_reports_json_string_len((u_char *) error,
                                                            len));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"error\":", 9);
    p = ngx_tiktok_reports_json_string(p, (u_char *) error, len);
    *p++ = '}';

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        ngx_str_set(&h->value, "1");
    }

    return ngx_tiktok_reports_send_json(r, status, body, p - body);
}


/*
 * The body as nginx kept it: buffers in memory, or a temp file when it was
 * larger than client_body_buffer_size; a file is read in chunks.
 */

ngx_int_t
ngx_tiktok_reports_body_each(ngx_http_request_t *r,
    ngx_tiktok_reports_chunk_pt handler, void *data)
{
    u_char       *buf;
    off_t         pos;
    size_t        size;
    ssize_t       n;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (r->request_body == NULL) {
        return NGX_OK;
    }

    buf = NULL;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            if (b->last > b->pos) {
                rc = handler(data, b->pos, b->last - b->pos);
                if (rc != NGX_OK) {
                    return rc;
                }
            }

            continue;
        }

        if (!b->in_file || b->file == NULL) {
            continue;
        }

        if (buf == NULL) {
            buf = ngx_palloc(r->pool, NGX_TIKTOK_REPORTS_FILE_CHUNK);
            if (buf == NULL) {
                return NGX_ERROR;
            }
        }

        for (pos = b->file_pos; pos < b->file_last; pos += n) {
            size = (size_t) ngx_min(b->file_last - pos,
                                    NGX_TIKTOK_REPORTS_FILE_CHUNK);

            n = ngx_read_file(b->file, buf, size, pos);

            if (n == NGX_ERROR || n == 0) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "tiktok_reports: cannot read the body file");
                return NGX_ERROR;
            }

            rc = handler(data, buf, n);
            if (rc != NGX_OK) {
                return rc;
            }
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_tiktok_reports_send_not_allowed(ngx_http_request_t *r, char *allow)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    h->value.data = (u_char *) allow;
    h->value.len = ngx_strlen(allow);

    return ngx_tiktok_reports_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                         "method not allowed");
}


/*
 * JSON strings that are always valid: quotes, backslashes and control
 * characters escaped, valid UTF-8 kept as it is, and any byte that is not
 * part of a valid UTF-8 sequence (Redis values are bytes) replaced with
 * U+FFFD, so that no answer is ever unparsable.
 */

size_t
ngx_tiktok_reports_json_string_len(u_char *s, size_t len)
{
    u_char  *last;
    size_t   size, n;

    size = 2;
    last = s + len;

    while (s < last) {
        if (*s == '"' || *s == '\\' || *s == '\n' || *s == '\r'
            || *s == '\t')
        {
            size += 2;
            s++;
            continue;
        }

        if (*s < 0x20) {
            size += 6;
            s++;
            continue;
        }

        if (*s < 0x80) {
            size++;
            s++;
            continue;
        }

        n = ngx_tiktok_reports_utf8_seq(s, last);

        if (n == 0) {
            size += 6;
            s++;
            continue;
        }

        size += n;
        s += n;
    }

    return size;
}


u_char *
ngx_tiktok_reports_json_string(u_char *p, u_char *s, size_t len)
{
    u_char         *last;
    size_t          n;
    static u_char   hex[] = "0123456789abcdef";

    last = s + len;

    *p++ = '"';

    while (s < last) {

        switch (*s) {

        case '"':
        case '\\':
            *p++ = '\\';
            *p++ = *s++;
            continue;

        case '\n':
            *p++ = '\\'; *p++ = 'n'; s++;
            continue;

        case '\r':
            *p++ = '\\'; *p++ = 'r'; s++;
            continue;

        case '\t':
            *p++ = '\\'; *p++ = 't'; s++;
            continue;
        }

        if (*s < 0x20) {
            p = ngx_cpymem(p, "\\u00", 4);
            *p++ = hex[*s >> 4];
            *p++ = hex[*s & 0xf];
            s++;
            continue;
        }

        if (*s < 0x80) {
            *p++ = *s++;
            continue;
        }

        n = ngx_tiktok_reports_utf8_seq(s, last);

        if (n == 0) {
            p = ngx_cpymem(p, "\\ufffd", 6);
            s++;
            continue;
        }

        while (n--) {
            *p++ = *s++;
        }
    }

    *p++ = '"';

    return p;
}


/*
 * Text that came with a request, made safe for a log line: printable ASCII
 * is kept; '"', the backslash and every other byte (control characters,
 * DEL, 0x80-0xff) become \xXX as in nginx's access log, so that no value
 * can end the line or forge another.  A value that does not fit in size
 * bytes is cut and ends with "...".
 */

size_t
ngx_tiktok_reports_log_escape(u_char *dst, size_t size, u_char *src,
    size_t len)
{
    u_char         *p, *last;
    size_t          i, n;
    static u_char   hex[] = "0123456789ABCDEF";

    p = dst;
    last = dst + size;

    for (i = 0; i < len; i++) {
        n = (src[i] < 0x20 || src[i] >= 0x7f || src[i] == '"'
             || src[i] == '\\') ? 4 : 1;

        /* room for this byte, and for "..." unless it is the last one */
        if ((size_t) (last - p) < n + (i + 1 < len ? 3 : 0)) {
            return ngx_cpymem(p, "...", 3) - dst;
        }

        if (n == 1) {
            *p++ = src[i];
            continue;
        }

        *p++ = '\\';
        *p++ = 'x';
        *p++ = hex[src[i] >> 4];
        *p++ = hex[src[i] & 0xf];
    }

    return p - dst;
}
