
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * Test-only fault injection, for t/fault.t.  A fault build (FAULT=1
 * .ci/build, and the COVERAGE=1 build) puts this header in front of every
 * source of the module with "-include"; no source of the module changes.
 * It wraps the calls that can fail for want of memory, in epoll, or in
 * OpenSSL, hiredis's reader or yajl, each by a macro, so that the n-th call of a function
 * from a given function of the module can be made to fail.
 *
 * What fails is read from the file "fault" in nginx's prefix (-p), read
 * again whenever it is replaced: lines "<callee> <caller> <n>" (caller "*"
 * for any), the count starting when the file was read.  Each fault that
 * fires is logged at notice: "tiktok_reports fault: <callee> in <caller>".
 *
 * The wrappers live here, outside the module's sources, so that a coverage
 * build counts the module's own lines and branches only.
 */


#ifndef _NGX_TIKTOK_REPORTS_FAULT_H_INCLUDED_
#define _NGX_TIKTOK_REPORTS_FAULT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <hiredis/hiredis.h>
#include <yajl/yajl_parse.h>


#define NGX_TIKTOK_REPORTS_FAULT_RULES  16


typedef struct {
    char            callee[64];
    char            caller[96];
    unsigned long   n;
    unsigned long   seen;
} ngx_tiktok_reports_fault_rule_t;


typedef struct {
    dev_t                            dev;
    ino_t                            ino;
    off_t                            size;
    struct timespec                  mtime;
    ngx_uint_t                       nrules;
    ngx_tiktok_reports_fault_rule_t  rules[NGX_TIKTOK_REPORTS_FAULT_RULES];
} ngx_tiktok_reports_fault_state_t;


/* weak: one state and one function for all the sources of the module */

__attribute__((weak)) ngx_tiktok_reports_fault_state_t
    ngx_tiktok_reports_fault_state;


__attribute__((weak)) int
ngx_tiktok_reports_fault(const char *callee, const char *caller)
{
    FILE                              *f;
    char                               path[1024], line[256];
    ngx_uint_t                         i;
    struct stat                        st;
    ngx_tiktok_reports_fault_rule_t   *r;
    ngx_tiktok_reports_fault_state_t  *s;

    s = &ngx_tiktok_reports_fault_state;

    if (ngx_cycle == NULL || ngx_cycle->prefix.len == 0
        || ngx_cycle->prefix.len > sizeof(path) - sizeof("fault"))
    {
        return 0;
    }

    ngx_memcpy(path, ngx_cycle->prefix.data, ngx_cycle->prefix.len);
    ngx_memcpy(path + ngx_cycle->prefix.len, "fault", sizeof("fault"));

    if (stat(path, &st) != 0) {
        s->nrules = 0;
        s->ino = 0;
        return 0;
    }

    if (st.st_ino != s->ino || st.st_dev != s->dev || st.st_size != s->size
        || st.st_mtim.tv_sec != s->mtime.tv_sec
        || st.st_mtim.tv_nsec != s->mtime.tv_nsec)
    {
        s->dev = st.st_dev;
        s->ino = st.st_ino;
        s->size = st.st_size;
        s->mtime = st.st_mtim;
        s->nrules = 0;

        f = fopen(path, "r");

        while (f && s->nrules < NGX_TIKTOK_REPORTS_FAULT_RULES
               && fgets(line, sizeof(line), f))
        {
            r = &s->rules[s->nrules];

            if (sscanf(line, "%63s %95s %lu", r->callee, r->caller, &r->n)
                == 3)
            {
                r->seen = 0;
                s->nrules++;
            }
        }

        if (f) {
            fclose(f);
        }
    }

    for (i = 0; i < s->nrules; i++) {
        r = &s->rules[i];

        if (strcmp(r->callee, callee) != 0
            || (strcmp(r->caller, "*") != 0 && strcmp(r->caller, caller) != 0))
        {
            continue;
        }

        if (++r->seen == r->n) {
            if (ngx_cycle->log) {
                ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                              "tiktok_reports fault: %s in %s", callee,
                              caller);
            }

            return 1;
        }
    }

    return 0;
}


#define NGX_TIKTOK_REPORTS_FAULT(name)                                        \
    ngx_tiktok_reports_fault(name, caller)


static ngx_inline void *
ngx_tiktok_reports_fault_palloc(ngx_pool_t *pool, size_t size,
    const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("ngx_palloc") ? NULL
                                                  : ngx_palloc(pool, size);
}


static ngx_inline void *
ngx_tiktok_reports_fault_pnalloc(ngx_pool_t *pool, size_t size,
    const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("ngx_pnalloc") ? NULL
                                                   : ngx_pnalloc(pool, size);
}


static ngx_inline void *
ngx_tiktok_reports_fault_pcalloc(ngx_pool_t *pool, size_t size,
    const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("ngx_pcalloc") ? NULL
                                                   : ngx_pcalloc(pool, size);
}


static ngx_inline void *
ngx_tiktok_reports_fault_alloc(size_t size, ngx_log_t *log,
    const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("ngx_alloc") ? NULL
                                                 : ngx_alloc(size, log);
}


static ngx_inline void *
ngx_tiktok_reports_fault_calloc(size_t size, ngx_log_t *log,
    const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("ngx_calloc") ? NULL
                                                  : ngx_calloc(size, log);
}


static ngx_inline ngx_array_t *
ngx_tiktok_reports_fault_array_create(ngx_pool_t *pool, ngx_uint_t n,
    size_t size, const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("ngx_array_create")
           ? NULL : ngx_array_create(pool, n, size);
}


static ngx_inline void *
ngx_tiktok_reports_fault_array_push(ngx_array_t *a, const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("ngx_array_push") ? NULL
                                                      : ngx_array_push(a);
}


static ngx_inline void *
ngx_tiktok_reports_fault_list_push(ngx_list_t *l, const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("ngx_list_push") ? NULL
                                                     : ngx_list_push(l);
}


static ngx_inline ngx_pool_cleanup_t *
ngx_tiktok_reports_fault_pool_cleanup_add(ngx_pool_t *pool, size_t size,
    const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("ngx_pool_cleanup_add")
           ? NULL : ngx_pool_cleanup_add(pool, size);
}


static ngx_inline ssize_t
ngx_tiktok_reports_fault_read_file(ngx_file_t *file, u_char *buf, size_t size,
    off_t offset, const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("ngx_read_file")
           ? NGX_ERROR : ngx_read_file(file, buf, size, offset);
}


static ngx_inline ngx_int_t
ngx_tiktok_reports_fault_handle_read_event(ngx_event_t *ev, ngx_uint_t flags,
    const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("ngx_handle_read_event")
           ? NGX_ERROR : ngx_handle_read_event(ev, flags);
}


static ngx_inline ngx_int_t
ngx_tiktok_reports_fault_handle_write_event(ngx_event_t *ev, size_t lowat,
    const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("ngx_handle_write_event")
           ? NGX_ERROR : ngx_handle_write_event(ev, lowat);
}


static ngx_inline ngx_pool_t *
ngx_tiktok_reports_fault_create_pool(size_t size, ngx_log_t *log,
    const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("ngx_create_pool")
           ? NULL : ngx_create_pool(size, log);
}


static ngx_inline redisReader *
ngx_tiktok_reports_fault_reader_create(const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("redisReaderCreate")
           ? NULL : redisReaderCreate();
}


static ngx_inline int
ngx_tiktok_reports_fault_reader_feed(redisReader *r, const char *buf,
    size_t len, const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("redisReaderFeed")
           ? REDIS_ERR : redisReaderFeed(r, buf, len);
}


static ngx_inline yajl_handle
ngx_tiktok_reports_fault_yajl_alloc(const yajl_callbacks *cb,
    yajl_alloc_funcs *af, void *ctx, const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("yajl_alloc") ? NULL
                                                  : yajl_alloc(cb, af, ctx);
}


static ngx_inline EVP_MAC_CTX *
ngx_tiktok_reports_fault_mac_ctx_dup(const EVP_MAC_CTX *src,
    const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("EVP_MAC_CTX_dup") ? NULL
                                                       : EVP_MAC_CTX_dup(src);
}


static ngx_inline EVP_MAC_CTX *
ngx_tiktok_reports_fault_mac_ctx_new(EVP_MAC *mac, const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("EVP_MAC_CTX_new") ? NULL
                                                       : EVP_MAC_CTX_new(mac);
}


static ngx_inline EVP_MAC *
ngx_tiktok_reports_fault_mac_fetch(OSSL_LIB_CTX *libctx, const char *alg,
    const char *props, const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("EVP_MAC_fetch")
           ? NULL : EVP_MAC_fetch(libctx, alg, props);
}


static ngx_inline int
ngx_tiktok_reports_fault_mac_init(EVP_MAC_CTX *ctx, const unsigned char *key,
    size_t keylen, const OSSL_PARAM params[], const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("EVP_MAC_init")
           ? 0 : EVP_MAC_init(ctx, key, keylen, params);
}


static ngx_inline int
ngx_tiktok_reports_fault_mac_update(EVP_MAC_CTX *ctx,
    const unsigned char *data, size_t len, const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("EVP_MAC_update")
           ? 0 : EVP_MAC_update(ctx, data, len);
}


static ngx_inline int
ngx_tiktok_reports_fault_mac_final(EVP_MAC_CTX *ctx, unsigned char *out,
    size_t *outl, size_t outsize, const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("EVP_MAC_final")
           ? 0 : EVP_MAC_final(ctx, out, outl, outsize);
}


static ngx_inline int
ngx_tiktok_reports_fault_digest(const void *data, size_t count,
    unsigned char *md, unsigned int *size, const EVP_MD *type, ENGINE *impl,
    const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("EVP_Digest")
           ? 0 : EVP_Digest(data, count, md, size, type, impl);
}


static ngx_inline void *
ngx_tiktok_reports_fault_malloc(size_t size, const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("malloc") ? NULL : malloc(size);
}


static ngx_inline void *
ngx_tiktok_reports_fault_calloc_libc(size_t n, size_t size,
    const char *caller)
{
    return NGX_TIKTOK_REPORTS_FAULT("calloc") ? NULL : calloc(n, size);
}


#undef NGX_TIKTOK_REPORTS_FAULT


#define ngx_palloc(pool, size)                                                \
    ngx_tiktok_reports_fault_palloc(pool, size, __func__)
#define ngx_pnalloc(pool, size)                                               \
    ngx_tiktok_reports_fault_pnalloc(pool, size, __func__)
#define ngx_pcalloc(pool, size)                                               \
    ngx_tiktok_reports_fault_pcalloc(pool, size, __func__)
#define ngx_alloc(size, log)                                                  \
    ngx_tiktok_reports_fault_alloc(size, log, __func__)
#define ngx_calloc(size, log)                                                 \
    ngx_tiktok_reports_fault_calloc(size, log, __func__)
#define ngx_array_create(pool, n, size)                                       \
    ngx_tiktok_reports_fault_array_create(pool, n, size, __func__)
#define ngx_array_push(a)                                                     \
    ngx_tiktok_reports_fault_array_push(a, __func__)
#define ngx_list_push(l)                                                      \
    ngx_tiktok_reports_fault_list_push(l, __func__)
#define ngx_pool_cleanup_add(pool, size)                                      \
    ngx_tiktok_reports_fault_pool_cleanup_add(pool, size, __func__)
#define ngx_read_file(file, buf, size, offset)                                \
    ngx_tiktok_reports_fault_read_file(file, buf, size, offset, __func__)
#define ngx_handle_read_event(ev, flags)                                      \
    ngx_tiktok_reports_fault_handle_read_event(ev, flags, __func__)
#define ngx_handle_write_event(ev, lowat)                                     \
    ngx_tiktok_reports_fault_handle_write_event(ev, lowat, __func__)
#define ngx_create_pool(size, log)                                            \
    ngx_tiktok_reports_fault_create_pool(size, log, __func__)
#define redisReaderCreate()                                                   \
    ngx_tiktok_reports_fault_reader_create(__func__)
#define redisReaderFeed(r, buf, len)                                          \
    ngx_tiktok_reports_fault_reader_feed(r, buf, len, __func__)
#define yajl_alloc(cb, af, ctx)                                               \
    ngx_tiktok_reports_fault_yajl_alloc(cb, af, ctx, __func__)
#define EVP_MAC_CTX_dup(src)                                                  \
    ngx_tiktok_reports_fault_mac_ctx_dup(src, __func__)
#define EVP_MAC_CTX_new(mac)                                                  \
    ngx_tiktok_reports_fault_mac_ctx_new(mac, __func__)
#define EVP_MAC_fetch(libctx, alg, props)                                     \
    ngx_tiktok_reports_fault_mac_fetch(libctx, alg, props, __func__)
#define EVP_MAC_init(ctx, key, keylen, params)                                \
    ngx_tiktok_reports_fault_mac_init(ctx, key, keylen, params, __func__)
#define EVP_MAC_update(ctx, data, len)                                        \
    ngx_tiktok_reports_fault_mac_update(ctx, data, len, __func__)
#define EVP_MAC_final(ctx, out, outl, outsize)                                \
    ngx_tiktok_reports_fault_mac_final(ctx, out, outl, outsize, __func__)
#define EVP_Digest(data, count, md, size, type, impl)                         \
    ngx_tiktok_reports_fault_digest(data, count, md, size, type, impl,       \
                                    __func__)
#define malloc(size)                                                          \
    ngx_tiktok_reports_fault_malloc(size, __func__)
#define calloc(n, size)                                                       \
    ngx_tiktok_reports_fault_calloc_libc(n, size, __func__)


#endif /* _NGX_TIKTOK_REPORTS_FAULT_H_INCLUDED_ */
