
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * The health location, for load balancers and Kubernetes probes: 200 when
 * this worker can store, that is when its connection to every Redis the
 * configuration uses is up and past its handshake; 503 otherwise.  The body
 * says which connection is in what state.  Nothing is sent to Redis: the
 * answer is what the worker knows, at once.
 */


#include "ngx_tiktok_reports_module.h"
#include "ngx_tiktok_reports_redis.h"


/* {"name":,"connected":false,"state":"handshake failed","outstanding":}, */
#define NGX_TIKTOK_REPORTS_HEALTH_ITEM                                      \
    (sizeof("{\"name\":,\"connected\":false,\"state\":\"\","               \
            "\"outstanding\":},") - 1 + sizeof("handshake failed") - 1     \
     + NGX_INT_T_LEN)


ngx_int_t
ngx_tiktok_reports_health_handler(ngx_http_request_t *r)
{
    u_char                           *body, *p;
    size_t                            len;
    ngx_int_t                         rc;
    ngx_uint_t                        i, ok, outstanding;
    const char                       *state;
    ngx_tiktok_reports_store_t      **stores;
    ngx_tiktok_reports_main_conf_t   *tmcf;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_tiktok_reports_send_not_allowed(r, "GET, HEAD");
    }

    tmcf = ngx_http_get_module_main_conf(r, ngx_tiktok_reports_module);
    stores = tmcf->stores.elts;

    len = sizeof("{\"status\":\"unavailable\",\"redis\":[]}") - 1;
    ok = 1;

    for (i = 0; i < tmcf->stores.nelts; i++) {
        len += NGX_TIKTOK_REPORTS_HEALTH_ITEM
               + ngx_tiktok_reports_json_string_len(stores[i]->conf.name.data,
                                                    stores[i]->conf.name.len);

        if ((stores[i]->node == NULL && stores[i]->cluster == NULL)
            || ngx_tiktok_reports_store_state(stores[i], &state,
                                              &outstanding)
               != NGX_OK)
        {
            ok = 0;
        }
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "{\"status\":\"%s\",\"redis\":[",
                    ok ? "ok" : "unavailable");

    for (i = 0; i < tmcf->stores.nelts; i++) {
        if (stores[i]->node || stores[i]->cluster) {
            rc = ngx_tiktok_reports_store_state(stores[i], &state,
                                                &outstanding);

        } else {
            /* no worker has started it: a helper process */
            rc = NGX_DECLINED;
            state = "disconnected";
            outstanding = 0;
        }

        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, "{\"name\":", 8);
        p = ngx_tiktok_reports_json_string(p, stores[i]->conf.name.data,
                                           stores[i]->conf.name.len);
        p = ngx_sprintf(p, ",\"connected\":%s,\"state\":\"%s\","
                        "\"outstanding\":%ui}",
                        rc == NGX_OK ? "true" : "false", state, outstanding);
    }

    *p++ = ']';
    *p++ = '}';

    return ngx_tiktok_reports_send_json(r, ok ? NGX_HTTP_OK
                                              : NGX_HTTP_SERVICE_UNAVAILABLE,
                                        body, p - body);
}
