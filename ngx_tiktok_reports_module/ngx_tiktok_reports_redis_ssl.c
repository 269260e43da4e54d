
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * TLS to Redis, at configuration time: the settings a location inherits,
 * and one OpenSSL context per distinct set of them, made the way nginx
 * makes proxy_ssl's (ngx_ssl_create, the client certificate, the trusted
 * CAs), freed with the configuration.  What can be seen without the
 * network, a CA file that is missing or verify without one, is refused
 * here, at "nginx -t".  The handshake itself is the connection layer's.
 */


#include "ngx_tiktok_reports_redis.h"


/* no limit of our own on the chain's length: OpenSSL's default */
#define NGX_TIKTOK_REPORTS_SSL_DEPTH  100


#if (NGX_SSL)
static ngx_int_t ngx_tiktok_reports_ssl_file(ngx_conf_t *cf, char *directive,
    ngx_str_t *file, ngx_str_t *full);
#endif
static ngx_uint_t ngx_tiktok_reports_ssl_same(
    ngx_tiktok_reports_ssl_conf_t *a, ngx_tiktok_reports_ssl_conf_t *b);


void
ngx_tiktok_reports_ssl_merge(ngx_tiktok_reports_ssl_conf_t *conf,
    ngx_tiktok_reports_ssl_conf_t *prev)
{
    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_value(conf->verify, prev->verify, 1);
    ngx_conf_merge_value(conf->server_name, prev->server_name, 0);
    ngx_conf_merge_str_value(conf->trusted_certificate,
                             prev->trusted_certificate, "");
    ngx_conf_merge_str_value(conf->name, prev->name, "");
    ngx_conf_merge_str_value(conf->certificate, prev->certificate, "");
    ngx_conf_merge_str_value(conf->certificate_key, prev->certificate_key,
                             "");
}


ngx_tiktok_reports_ssl_conf_t *
ngx_tiktok_reports_ssl_get(ngx_conf_t *cf, ngx_tiktok_reports_ssl_conf_t *want)
{
#if (NGX_SSL)
    ngx_str_t                         cert, key, trusted;
    ngx_uint_t                        i;
    ngx_pool_cleanup_t               *cln;
    ngx_tiktok_reports_store_t      **stores;
    ngx_tiktok_reports_ssl_conf_t    *ssl;
    ngx_tiktok_reports_main_conf_t   *tmcf;

    tmcf = ngx_http_conf_get_module_main_conf(cf, ngx_tiktok_reports_module);

    stores = tmcf->stores.elts;

    for (i = 0; i < tmcf->stores.nelts; i++) {
        if (stores[i]->conf.ssl
            && ngx_tiktok_reports_ssl_same(stores[i]->conf.ssl, want))
        {
            return stores[i]->conf.ssl;
        }
    }

    if (want->verify && want->trusted_certificate.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tiktok_reports_redis_ssl_verify\" needs "
                           "\"tiktok_reports_redis_ssl_trusted_certificate\" "
                           "(the system's CAs are in "
                           "/etc/ssl/certs/ca-certificates.crt), or "
                           "\"tiktok_reports_redis_ssl_verify off\"");
        return NULL;
    }

    if (want->certificate.len != 0 && want->certificate_key.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tiktok_reports_redis_ssl_certificate\" needs "
                           "\"tiktok_reports_redis_ssl_certificate_key\"");
        return NULL;
    }

    if (want->certificate.len == 0 && want->certificate_key.len != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"tiktok_reports_redis_ssl_certificate_key\" "
                           "needs \"tiktok_reports_redis_ssl_certificate\"");
        return NULL;
    }

    ssl = ngx_pcalloc(cf->pool, sizeof(ngx_tiktok_reports_ssl_conf_t));
    if (ssl == NULL) {
        return NULL;
    }

    *ssl = *want;

    ssl->ctx = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (ssl->ctx == NULL) {
        return NULL;
    }

    ssl->ctx->log = cf->log;

    /* what Redis 7 speaks by default */
    if (ngx_ssl_create(ssl->ctx, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(ssl->ctx);
        return NULL;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = ssl->ctx;

    if (ssl->certificate.len) {
        if (ngx_tiktok_reports_ssl_file(cf,
                                    "tiktok_reports_redis_ssl_certificate",
                                    &ssl->certificate, &cert)
            != NGX_OK
            || ngx_tiktok_reports_ssl_file(cf,
                                    "tiktok_reports_redis_ssl_certificate_key",
                                    &ssl->certificate_key, &key)
               != NGX_OK)
        {
            return NULL;
        }

        if (ngx_ssl_certificate(cf, ssl->ctx, &cert, &key, NULL) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "cannot use \"tiktok_reports_redis_ssl_"
                               "certificate\" \"%V\" with its key \"%V\"",
                               &ssl->certificate, &ssl->certificate_key);
            return NULL;
        }
    }

    if (ssl->trusted_certificate.len) {
        if (ngx_tiktok_reports_ssl_file(cf,
                            "tiktok_reports_redis_ssl_trusted_certificate",
                            &ssl->trusted_certificate, &trusted)
            != NGX_OK)
        {
            return NULL;
        }

        /*
         * nginx's verify callback lets the handshake finish; the
         * connection then asks for the verdict and checks the name
         */
        if (ngx_ssl_trusted_certificate(cf, ssl->ctx, &trusted,
                                        NGX_TIKTOK_REPORTS_SSL_DEPTH)
            != NGX_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "cannot use \"tiktok_reports_redis_ssl_"
                               "trusted_certificate\" \"%V\"",
                               &ssl->trusted_certificate);
            return NULL;
        }
    }

    return ssl;

#else

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"tiktok_reports_redis_ssl\" needs nginx built with "
                       "OpenSSL");
    return NULL;

#endif
}


#if (NGX_SSL)

/*
 * A file the directive names, as a full path in memory of its own (nginx's
 * loaders rewrite the name they get); refused here when it cannot be
 * read, with the directive's name.  Keys of an engine ("engine:") and
 * certificates given inline ("data:") are nginx's to check.
 */

static ngx_int_t
ngx_tiktok_reports_ssl_file(ngx_conf_t *cf, char *directive, ngx_str_t *file,
    ngx_str_t *full)
{
    ngx_fd_t  fd;

    full->len = file->len;
    full->data = ngx_pnalloc(cf->pool, file->len + 1);
    if (full->data == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(full->data, file->data, file->len) = '\0';

    if ((file->len > 5 && ngx_strncmp(file->data, "data:", 5) == 0)
        || (file->len > 7 && ngx_strncmp(file->data, "engine:", 7) == 0))
    {
        return NGX_OK;
    }

    if (ngx_conf_full_name(cf->cycle, full, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(full->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%s\": cannot open \"%s\"", directive,
                           full->data);
        return NGX_ERROR;
    }

    (void) ngx_close_file(fd);

    return NGX_OK;
}

#endif


static ngx_uint_t
ngx_tiktok_reports_ssl_same(ngx_tiktok_reports_ssl_conf_t *a,
    ngx_tiktok_reports_ssl_conf_t *b)
{
    ngx_uint_t   i;
    ngx_str_t   *sa[4], *sb[4];

    if (a->verify != b->verify || a->server_name != b->server_name) {
        return 0;
    }

    sa[0] = &a->trusted_certificate;
    sa[1] = &a->name;
    sa[2] = &a->certificate;
    sa[3] = &a->certificate_key;
    sb[0] = &b->trusted_certificate;
    sb[1] = &b->name;
    sb[2] = &b->certificate;
    sb[3] = &b->certificate_key;

    for (i = 0; i < 4; i++) {
        if (sa[i]->len != sb[i]->len
            || (sa[i]->len
                && ngx_memcmp(sa[i]->data, sb[i]->data, sa[i]->len) != 0))
        {
            return 0;
        }
    }

    return 1;
}
