
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * Counters in a shared memory zone, so that the numbers are totals across
 * all workers and survive a reload (nginx hands the same zone to the new
 * cycle), served in Prometheus text format by tiktok_reports_metrics.
 */


#include <nginx.h>

#include <hiredis/hiredis.h>     /* its version, for build_info */

#include "ngx_tiktok_reports_module.h"


#define NGX_TIKTOK_REPORTS_CODES     10
#define NGX_TIKTOK_REPORTS_BUCKETS   13
#define NGX_TIKTOK_REPORTS_DURATIONS 13

/* the connection gauge's fixed size; past it, counted and logged once */
#define NGX_TIKTOK_REPORTS_WORKERS   64
#define NGX_TIKTOK_REPORTS_STORES    8


typedef struct {
    ngx_atomic_t   requests[2][NGX_TIKTOK_REPORTS_CODES];
    ngx_atomic_t   results[3][3];
    ngx_atomic_t   signature_failures;
    ngx_atomic_t   redis_errors;
    ngx_atomic_t   redis_timeouts;
    ngx_atomic_t   redis_busy;
    ngx_atomic_t   rtt[NGX_TIKTOK_REPORTS_BUCKETS];
    ngx_atomic_t   rtt_count;
    ngx_atomic_t   rtt_usec;
    ngx_atomic_t   duration[2][NGX_TIKTOK_REPORTS_DURATIONS];
    ngx_atomic_t   duration_count[2];
    ngx_atomic_t   duration_msec[2];
    ngx_atomic_t   reconnects;
    ngx_atomic_t   overflow;
    ngx_atomic_t   overflow_logged;
    ngx_atomic_t   connected[NGX_TIKTOK_REPORTS_WORKERS]
                            [NGX_TIKTOK_REPORTS_STORES];
} ngx_tiktok_reports_metrics_t;


static ngx_int_t ngx_tiktok_reports_metrics_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_int_t ngx_tiktok_reports_metrics_log(ngx_http_request_t *r);
static u_char *ngx_tiktok_reports_metrics_le(u_char *p, ngx_msec_t usec);
static u_char *ngx_tiktok_reports_metrics_histogram(u_char *p,
    const char *name, const char *location, ngx_msec_t *bounds,
    ngx_atomic_t *buckets, ngx_uint_t n, ngx_msec_t scale,
    ngx_atomic_uint_t sum, ngx_atomic_uint_t count);


static ngx_tiktok_reports_metrics_t  *ngx_tiktok_reports_metrics;

static ngx_uint_t  ngx_tiktok_reports_codes[NGX_TIKTOK_REPORTS_CODES] = {
    200, 400, 401, 404, 405, 413, 415, 500, 503, 0
};

static const char  *ngx_tiktok_reports_locations[] = { "webhook", "status" };
static const char  *ngx_tiktok_reports_kinds[] = {
    "unknown", "delivery", "seen"
};
static const char  *ngx_tiktok_reports_outcomes[] = {
    "accepted", "duplicate", "rejected"
};

/* upper bounds in microseconds; the last is +Inf */
static ngx_msec_t  ngx_tiktok_reports_bounds[NGX_TIKTOK_REPORTS_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    1000000, 0
};

/* request durations in milliseconds (nginx's clock); the last is +Inf */
static ngx_msec_t  ngx_tiktok_reports_durations[NGX_TIKTOK_REPORTS_DURATIONS]
    = {
    1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 0
};


ngx_int_t
ngx_tiktok_reports_metrics_init(ngx_conf_t *cf)
{
    ngx_str_t                   name;
    ngx_shm_zone_t             *zone;
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    ngx_str_set(&name, "tiktok_reports_metrics");

    zone = ngx_shared_memory_add(cf, &name,
                                 ngx_max(8 * ngx_pagesize,
                                         sizeof(ngx_tiktok_reports_metrics_t)
                                         + 4 * ngx_pagesize),
                                 &ngx_tiktok_reports_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_tiktok_reports_metrics_init_zone;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_tiktok_reports_metrics_log;

    return NGX_OK;
}


static ngx_int_t
ngx_tiktok_reports_metrics_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        /*
         * A reload: keep counting in the zone of the previous cycle; the
         * connection gauges start over, the new workers set their own.
         */
        zone->data = data;
        ngx_tiktok_reports_metrics = data;
        ngx_memzero((void *) ngx_tiktok_reports_metrics->connected,
                    sizeof(ngx_tiktok_reports_metrics->connected));
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        zone->data = shpool->data;
        ngx_tiktok_reports_metrics = shpool->data;
        return NGX_OK;
    }

    ngx_tiktok_reports_metrics = ngx_slab_calloc(shpool,
                                       sizeof(ngx_tiktok_reports_metrics_t));
    if (ngx_tiktok_reports_metrics == NULL) {
        return NGX_ERROR;
    }

    shpool->data = ngx_tiktok_reports_metrics;
    zone->data = ngx_tiktok_reports_metrics;

    return NGX_OK;
}


/* every answer of a webhook or lookup location, nginx's own 413 included */

static ngx_int_t
ngx_tiktok_reports_metrics_log(ngx_http_request_t *r)
{
    ngx_uint_t                      loc, i, code;
    ngx_time_t                     *tp;
    ngx_msec_int_t                  ms;
    ngx_tiktok_reports_loc_conf_t  *tlcf;

    if (ngx_tiktok_reports_metrics == NULL) {
        return NGX_OK;
    }

    tlcf = ngx_http_get_module_loc_conf(r, ngx_tiktok_reports_module);

    if (tlcf->role != NGX_TIKTOK_REPORTS_ROLE_WEBHOOK
        && tlcf->role != NGX_TIKTOK_REPORTS_ROLE_STATUS)
    {
        return NGX_OK;
    }

    loc = tlcf->role - NGX_TIKTOK_REPORTS_ROLE_WEBHOOK;

    code = r->headers_out.status;

    for (i = 0; i < NGX_TIKTOK_REPORTS_CODES - 1; i++) {
        if (ngx_tiktok_reports_codes[i] == code) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(
                          &ngx_tiktok_reports_metrics->requests[loc][i], 1);

    /* as $request_time: from the first byte read to the last one sent */
    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    for (i = 0; i < NGX_TIKTOK_REPORTS_DURATIONS - 1; i++) {
        if ((ngx_msec_t) ms <= ngx_tiktok_reports_durations[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(
                          &ngx_tiktok_reports_metrics->duration[loc][i], 1);
    (void) ngx_atomic_fetch_add(
                          &ngx_tiktok_reports_metrics->duration_count[loc], 1);
    (void) ngx_atomic_fetch_add(
                          &ngx_tiktok_reports_metrics->duration_msec[loc], ms);

    return NGX_OK;
}


void
ngx_tiktok_reports_metrics_result(ngx_uint_t kind, ngx_uint_t outcome)
{
    if (ngx_tiktok_reports_metrics && kind < 3 && outcome < 3) {
        (void) ngx_atomic_fetch_add(
                       &ngx_tiktok_reports_metrics->results[kind][outcome], 1);
    }
}


void
ngx_tiktok_reports_metrics_signature_failure(void)
{
    if (ngx_tiktok_reports_metrics) {
        (void) ngx_atomic_fetch_add(
                       &ngx_tiktok_reports_metrics->signature_failures, 1);
    }
}


void
ngx_tiktok_reports_metrics_redis_error(ngx_uint_t timeout)
{
    if (ngx_tiktok_reports_metrics) {
        (void) ngx_atomic_fetch_add(timeout
                                ? &ngx_tiktok_reports_metrics->redis_timeouts
                                : &ngx_tiktok_reports_metrics->redis_errors,
                                1);
    }
}


void
ngx_tiktok_reports_metrics_redis_busy(void)
{
    if (ngx_tiktok_reports_metrics) {
        (void) ngx_atomic_fetch_add(&ngx_tiktok_reports_metrics->redis_busy,
                                    1);
    }
}


void
ngx_tiktok_reports_metrics_reconnect(void)
{
    if (ngx_tiktok_reports_metrics) {
        (void) ngx_atomic_fetch_add(&ngx_tiktok_reports_metrics->reconnects,
                                    1);
    }
}


void
ngx_tiktok_reports_metrics_rtt(ngx_msec_t usec)
{
    ngx_uint_t  i;

    if (ngx_tiktok_reports_metrics == NULL) {
        return;
    }

    for (i = 0; i < NGX_TIKTOK_REPORTS_BUCKETS - 1; i++) {
        if (usec <= ngx_tiktok_reports_bounds[i]) {
            break;
        }
    }

    /* buckets are kept apart here and added up when served */
    (void) ngx_atomic_fetch_add(&ngx_tiktok_reports_metrics->rtt[i], 1);
    (void) ngx_atomic_fetch_add(&ngx_tiktok_reports_metrics->rtt_count, 1);
    (void) ngx_atomic_fetch_add(&ngx_tiktok_reports_metrics->rtt_usec, usec);
}


/*
 * A slot holds the worker's pid and the state (1 up, 2 down): workers of an
 * old configuration, still draining after a reload, share numbers with the
 * new ones, so they leave the slots alone, and a worker that exits clears
 * only a slot that is still its own.
 */

void
ngx_tiktok_reports_metrics_connected(ngx_uint_t store, ngx_uint_t state)
{
    ngx_atomic_t                  *slot;
    ngx_tiktok_reports_metrics_t  *m;

    m = ngx_tiktok_reports_metrics;

    if (m == NULL || store == (ngx_uint_t) -1) {
        /* a cluster's node: the cluster tells the store's gauge */
        return;
    }

    if (ngx_worker >= NGX_TIKTOK_REPORTS_WORKERS
        || store >= NGX_TIKTOK_REPORTS_STORES)
    {
        if (state == NGX_TIKTOK_REPORTS_GONE) {
            return;
        }

        /* the gauge cannot show it: say so in a counter, and once here */
        (void) ngx_atomic_fetch_add(&m->overflow, 1);

        if (ngx_atomic_cmp_set(&m->overflow_logged, 0, 1)) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "tiktok_reports: tiktok_reports_redis_connected "
                          "shows %d workers and %d Redis servers at most; "
                          "worker %ui, Redis #%ui are left out (counted in "
                          "tiktok_reports_metrics_overflow_total)",
                          NGX_TIKTOK_REPORTS_WORKERS,
                          NGX_TIKTOK_REPORTS_STORES, ngx_worker, store + 1);
        }

        return;
    }

    slot = &m->connected[ngx_worker][store];

    if (state == NGX_TIKTOK_REPORTS_GONE) {
        if ((ngx_pid_t) (*slot >> 2) == ngx_pid) {
            *slot = 0;
        }

        return;
    }

    if (ngx_exiting || ngx_quit) {
        return;
    }

    *slot = ((ngx_atomic_uint_t) ngx_pid << 2) | (state ? 1 : 2);
}


ngx_int_t
ngx_tiktok_reports_metrics_handler(ngx_http_request_t *r)
{
    u_char                           *p, *body;
    size_t                            len;
    ngx_int_t                         rc;
    ngx_uint_t                        i, j, n;
    ngx_str_t                       **names;
    ngx_tiktok_reports_metrics_t     *m;
    ngx_tiktok_reports_main_conf_t   *tmcf;

    static ngx_str_t  type =
                       ngx_string("text/plain; version=0.0.4; charset=utf-8");

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    m = ngx_tiktok_reports_metrics;

    if (m == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    tmcf = ngx_http_get_module_main_conf(r, ngx_tiktok_reports_module);
    names = tmcf->names.elts;

    len = 16384 + NGX_TIKTOK_REPORTS_WORKERS * NGX_TIKTOK_REPORTS_STORES * 128;

    for (i = 0; i < tmcf->names.nelts; i++) {
        len += NGX_TIKTOK_REPORTS_WORKERS * names[i]->len;
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body,
        "# HELP tiktok_reports_requests_total Answers of the webhook and "
        "lookup locations, by status code.\n"
        "# TYPE tiktok_reports_requests_total counter\n",
        sizeof("# HELP tiktok_reports_requests_total Answers of the webhook "
               "and lookup locations, by status code.\n"
               "# TYPE tiktok_reports_requests_total counter\n") - 1);

    for (i = 0; i < 2; i++) {
        for (j = 0; j < NGX_TIKTOK_REPORTS_CODES; j++) {
            if (ngx_tiktok_reports_codes[j]) {
                p = ngx_sprintf(p, "tiktok_reports_requests_total"
                                "{location=\"%s\",code=\"%ui\"} %uA\n",
                                ngx_tiktok_reports_locations[i],
                                ngx_tiktok_reports_codes[j],
                                m->requests[i][j]);

            } else {
                p = ngx_sprintf(p, "tiktok_reports_requests_total"
                                "{location=\"%s\",code=\"other\"} %uA\n",
                                ngx_tiktok_reports_locations[i],
                                m->requests[i][j]);
            }
        }
    }

    p = ngx_sprintf(p,
        "# HELP tiktok_reports_request_duration_seconds Time from a request's "
        "first byte to its answer's last, as $request_time.\n"
        "# TYPE tiktok_reports_request_duration_seconds histogram\n");

    for (i = 0; i < 2; i++) {
        p = ngx_tiktok_reports_metrics_histogram(p,
                                 "tiktok_reports_request_duration_seconds",
                                 ngx_tiktok_reports_locations[i],
                                 ngx_tiktok_reports_durations,
                                 m->duration[i],
                                 NGX_TIKTOK_REPORTS_DURATIONS, 1000,
                                 m->duration_msec[i] * 1000,
                                 m->duration_count[i]);
    }

    p = ngx_sprintf(p,
        "# HELP tiktok_reports_results_total Results of webhook bodies, by "
        "kind and outcome.\n"
        "# TYPE tiktok_reports_results_total counter\n");

    for (i = 0; i < 3; i++) {
        for (j = 0; j < 3; j++) {
            p = ngx_sprintf(p, "tiktok_reports_results_total"
                            "{kind=\"%s\",outcome=\"%s\"} %uA\n",
                            ngx_tiktok_reports_kinds[i],
                            ngx_tiktok_reports_outcomes[j],
                            m->results[i][j]);
        }
    }

    p = ngx_sprintf(p,
        "# HELP tiktok_reports_signature_failures_total Webhook requests "
        "refused for their signature.\n"
        "# TYPE tiktok_reports_signature_failures_total counter\n"
        "tiktok_reports_signature_failures_total %uA\n"
        "# HELP tiktok_reports_redis_errors_total Redis commands that failed "
        "(error reply or connection lost).\n"
        "# TYPE tiktok_reports_redis_errors_total counter\n"
        "tiktok_reports_redis_errors_total %uA\n"
        "# HELP tiktok_reports_redis_timeouts_total Requests answered 503 "
        "because Redis did not answer in time.\n"
        "# TYPE tiktok_reports_redis_timeouts_total counter\n"
        "tiktok_reports_redis_timeouts_total %uA\n"
        "# HELP tiktok_reports_redis_busy_total Requests answered 503 at "
        "once because their Redis connection had as much outstanding as "
        "tiktok_reports_redis_max_outstanding allows.\n"
        "# TYPE tiktok_reports_redis_busy_total counter\n"
        "tiktok_reports_redis_busy_total %uA\n"
        "# HELP tiktok_reports_redis_rtt_seconds Time from sending a command "
        "to its reply.\n"
        "# TYPE tiktok_reports_redis_rtt_seconds histogram\n",
        m->signature_failures, m->redis_errors, m->redis_timeouts,
        m->redis_busy);

    p = ngx_tiktok_reports_metrics_histogram(p,
                                 "tiktok_reports_redis_rtt_seconds", NULL,
                                 ngx_tiktok_reports_bounds, m->rtt,
                                 NGX_TIKTOK_REPORTS_BUCKETS, 1,
                                 m->rtt_usec, m->rtt_count);

    p = ngx_sprintf(p,
        "# HELP tiktok_reports_redis_reconnects_total Connections to Redis "
        "opened again after one was lost, refused or timed out (attempts).\n"
        "# TYPE tiktok_reports_redis_reconnects_total counter\n"
        "tiktok_reports_redis_reconnects_total %uA\n"
        "# HELP tiktok_reports_metrics_overflow_total Connection states "
        "tiktok_reports_redis_connected could not show: it holds %d workers "
        "and %d Redis servers.\n"
        "# TYPE tiktok_reports_metrics_overflow_total counter\n"
        "tiktok_reports_metrics_overflow_total %uA\n"
        "# HELP tiktok_reports_build_info The module's version, and the "
        "nginx and hiredis it was built with.\n"
        "# TYPE tiktok_reports_build_info gauge\n"
        "tiktok_reports_build_info{version=\"%s\",nginx_version=\"%s\","
        "hiredis_version=\"%d.%d.%d\"} 1\n",
        m->reconnects, NGX_TIKTOK_REPORTS_WORKERS, NGX_TIKTOK_REPORTS_STORES,
        m->overflow, NGX_TIKTOK_REPORTS_VERSION, NGINX_VERSION,
        HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);

    p = ngx_sprintf(p,
        "# HELP tiktok_reports_redis_connected Whether each worker's "
        "connection to each Redis is up.\n"
        "# TYPE tiktok_reports_redis_connected gauge\n");

    n = ngx_min(tmcf->names.nelts, NGX_TIKTOK_REPORTS_STORES);

    for (i = 0; i < NGX_TIKTOK_REPORTS_WORKERS; i++) {
        for (j = 0; j < n; j++) {
            if (m->connected[i][j] == 0) {
                continue;
            }

            p = ngx_sprintf(p, "tiktok_reports_redis_connected"
                            "{worker=\"%ui\",redis=\"%V\"} %d\n",
                            i, names[j],
                            (m->connected[i][j] & 3) == 1 ? 1 : 0);
        }
    }

    return ngx_tiktok_reports_send(r, NGX_HTTP_OK, &type, body, p - body);
}


/*
 * A histogram's series, with a location label or none.  bounds[i] * scale
 * is a bucket's bound in microseconds, 0 the last one (+Inf); buckets are
 * kept apart and added up here.  sum is in microseconds.
 */

static u_char *
ngx_tiktok_reports_metrics_histogram(u_char *p, const char *name,
    const char *location, ngx_msec_t *bounds, ngx_atomic_t *buckets,
    ngx_uint_t n, ngx_msec_t scale, ngx_atomic_uint_t sum,
    ngx_atomic_uint_t count)
{
    ngx_uint_t         i;
    ngx_atomic_uint_t  cum;

    cum = 0;

    for (i = 0; i < n; i++) {
        cum += buckets[i];

        p = ngx_sprintf(p, "%s_bucket{", name);

        if (location) {
            p = ngx_sprintf(p, "location=\"%s\",", location);
        }

        if (bounds[i]) {
            p = ngx_cpymem(p, "le=\"", 4);
            p = ngx_tiktok_reports_metrics_le(p, bounds[i] * scale);
            p = ngx_sprintf(p, "\"} %uA\n", cum);

        } else {
            p = ngx_sprintf(p, "le=\"+Inf\"} %uA\n", cum);
        }
    }

    if (location) {
        return ngx_sprintf(p, "%s_sum{location=\"%s\"} %uA.%06uA\n"
                           "%s_count{location=\"%s\"} %uA\n",
                           name, location, sum / 1000000, sum % 1000000,
                           name, location, count);
    }

    return ngx_sprintf(p, "%s_sum %uA.%06uA\n%s_count %uA\n",
                       name, sum / 1000000, sum % 1000000, name, count);
}


/* seconds as Prometheus writes a bound: 0.0001, 0.25, 1 (no trailing 0) */

static u_char *
ngx_tiktok_reports_metrics_le(u_char *p, ngx_msec_t usec)
{
    p = ngx_sprintf(p, "%M", usec / 1000000);

    if (usec % 1000000 == 0) {
        return p;
    }

    p = ngx_sprintf(p, ".%06M", usec % 1000000);

    while (p[-1] == '0') {
        p--;
    }

    return p;
}


/* a monotonic clock in microseconds, for Redis round trips */

ngx_msec_t
ngx_tiktok_reports_usec(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (ngx_msec_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
