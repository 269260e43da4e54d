
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * Redis Cluster discovery: which master serves each of the 16384 slots,
 * and one node (one connection) per master.  The map comes from "CLUSTER
 * SLOTS" (never "CLUSTER NODES", whose text format changes between
 * versions), asked of a node that answers, the seeds first; a new map is
 * taken only when it covers every slot, or a request would find no node.
 * The store asks for a new map when a reply says the map is stale (MOVED,
 * CLUSTERDOWN, a lost connection); at most one is asked at a time and at
 * most one a second, so that a failover does not make every request ask,
 * and one every ten seconds or so anyway (jittered: workers ask apart).
 */


#include "ngx_tiktok_reports_redis.h"


#define NGX_TIKTOK_REPORTS_CLUSTER_GAP     1000
#define NGX_TIKTOK_REPORTS_CLUSTER_RECHECK 10000
#define NGX_TIKTOK_REPORTS_CLUSTER_JITTER  2000


typedef struct {
    ngx_tiktok_reports_node_t         node;
    ngx_tiktok_reports_redis_conf_t   conf;
    ngx_sockaddr_t                    sockaddr;
    ngx_tiktok_reports_discovery_t   *discovery;   /* a host name */
    ngx_uint_t                        seed;
    ngx_uint_t                        mapped;      /* serves slots now */
    u_char                            text[2 * NGX_MAXHOSTNAMELEN + 16];
} ngx_tiktok_reports_cluster_node_t;


struct ngx_tiktok_reports_cluster_s {
    ngx_tiktok_reports_redis_conf_t    *conf;      /* the store's */
    ngx_str_t                           script;
    ngx_uint_t                          index;
    ngx_log_t                          *log;

    ngx_tiktok_reports_cluster_node_t  *nodes[NGX_TIKTOK_REPORTS_CLUSTER_NODES];
    ngx_uint_t                          nnodes;
    ngx_uint_t                          ask;       /* the next one asked */

    ngx_tiktok_reports_cluster_node_t  *map[NGX_TIKTOK_REPORTS_SLOTS];
    ngx_tiktok_reports_cluster_node_t  *next[NGX_TIKTOK_REPORTS_SLOTS];

    ngx_event_t                         timer;     /* the next map asked */
    ngx_msec_t                          last;      /* the last one asked */

    unsigned                            mapped:1;  /* a map was taken */
    unsigned                            asking:1;  /* CLUSTER SLOTS sent */
    unsigned                            closing:1;
    unsigned                            logged:1;  /* no map: said once */
};


static ngx_tiktok_reports_cluster_node_t *ngx_tiktok_reports_cluster_get(
    ngx_tiktok_reports_cluster_t *cl, u_char *host, size_t len,
    ngx_int_t port);
static void ngx_tiktok_reports_cluster_free(
    ngx_tiktok_reports_cluster_t *cl, ngx_uint_t i);
static void ngx_tiktok_reports_cluster_ask(ngx_tiktok_reports_cluster_t *cl);
static void ngx_tiktok_reports_cluster_timer(ngx_event_t *ev);
static void ngx_tiktok_reports_cluster_reply(ngx_tiktok_reports_node_t *node,
    redisReply *reply, void *data);
static ngx_int_t ngx_tiktok_reports_cluster_take(
    ngx_tiktok_reports_cluster_t *cl, ngx_tiktok_reports_node_t *asked,
    redisReply *reply, const char **why);
static void ngx_tiktok_reports_cluster_later(ngx_tiktok_reports_cluster_t *cl,
    ngx_msec_t after);


static uint16_t  ngx_tiktok_reports_crc16_table[256];


/* CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with */

static void
ngx_tiktok_reports_crc16_init(void)
{
    uint16_t    crc;
    ngx_uint_t  i, b;

    for (i = 0; i < 256; i++) {
        crc = (uint16_t) (i << 8);

        for (b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? (uint16_t) ((crc << 1) ^ 0x1021)
                                 : (uint16_t) (crc << 1);
        }

        ngx_tiktok_reports_crc16_table[i] = crc;
    }
}


/*
 * The slot as Redis computes it: of the part between the first "{" and
 * the first "}" after it when that part is not empty, else of the key.
 */

ngx_uint_t
ngx_tiktok_reports_keyslot(u_char *key, size_t len)
{
    u_char  *open, *close, *p, *last;

    p = key;
    last = key + len;

    open = ngx_strlchr(key, last, '{');

    if (open) {
        close = ngx_strlchr(open + 1, last, '}');

        if (close && close > open + 1) {
            p = open + 1;
            last = close;
        }
    }

    return ngx_tiktok_reports_crc16_slot(p, last - p);
}


/* the slot of a hash tag (or of a key without one) */

ngx_uint_t
ngx_tiktok_reports_crc16_slot(u_char *p, size_t len)
{
    u_char    *last;
    uint16_t   crc;

    if (ngx_tiktok_reports_crc16_table[1] == 0) {
        ngx_tiktok_reports_crc16_init();
    }

    last = p + len;
    crc = 0;

    while (p < last) {
        crc = (uint16_t) (crc << 8)
              ^ ngx_tiktok_reports_crc16_table[((crc >> 8) ^ *p++) & 0xff];
    }

    return crc & (NGX_TIKTOK_REPORTS_SLOTS - 1);
}


ngx_tiktok_reports_cluster_t *
ngx_tiktok_reports_cluster_create(ngx_tiktok_reports_redis_conf_t *conf,
    ngx_str_t *script, ngx_uint_t index, ngx_log_t *log)
{
    u_char                             *p;
    ngx_uint_t                          i;
    ngx_addr_t                         *seeds;
    ngx_tiktok_reports_cluster_t       *cl;
    ngx_tiktok_reports_cluster_node_t  *cn;

    cl = ngx_calloc(sizeof(ngx_tiktok_reports_cluster_t), log);
    if (cl == NULL) {
        return NULL;
    }

    cl->conf = conf;
    cl->script = *script;
    cl->index = index;
    cl->log = log;

    cl->timer.handler = ngx_tiktok_reports_cluster_timer;
    cl->timer.data = cl;
    cl->timer.log = log;
    cl->timer.cancelable = 1;

    seeds = conf->seeds->elts;

    for (i = 0; i < conf->seeds->nelts; i++) {
        /* "ip:port" as nginx prints it: the host is up to the last colon */
        p = seeds[i].name.data + seeds[i].name.len;

        while (p > seeds[i].name.data && p[-1] != ':') {
            p--;
        }

        cn = ngx_tiktok_reports_cluster_get(cl, seeds[i].name.data,
                                            p - 1 - seeds[i].name.data,
                                            ngx_atoi(p, seeds[i].name.data
                                                        + seeds[i].name.len
                                                        - p));
        if (cn == NULL) {
            ngx_tiktok_reports_cluster_close(cl);
            return NULL;
        }

        cn->seed = 1;
    }

    /* workers start with different seeds */
    cl->ask = ngx_random() % cl->nnodes;

    ngx_tiktok_reports_cluster_ask(cl);

    return cl;
}


void
ngx_tiktok_reports_cluster_close(ngx_tiktok_reports_cluster_t *cl)
{
    cl->closing = 1;

    if (cl->timer.timer_set) {
        ngx_del_timer(&cl->timer);
    }

    while (cl->nnodes) {
        ngx_tiktok_reports_cluster_free(cl, cl->nnodes - 1);
    }

    ngx_free(cl);
}


/*
 * The node at host:port, made (and connecting) when it is new.  A host
 * name needs nginx's resolver; without one it is refused (and logged).
 */

static ngx_tiktok_reports_cluster_node_t *
ngx_tiktok_reports_cluster_get(ngx_tiktok_reports_cluster_t *cl,
    u_char *host, size_t len, ngx_int_t port)
{
    u_char                             *p;
    in_addr_t                           addr;
    socklen_t                           socklen;
    ngx_uint_t                          i;
    ngx_tiktok_reports_cluster_node_t  *cn;

    if (len > 1 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
    }

    if (len == 0 || len >= NGX_MAXHOSTNAMELEN || port < 1 || port > 65535) {
        return NULL;
    }

    for (i = 0; i < cl->nnodes; i++) {
        cn = cl->nodes[i];

        if (cn->conf.port == port && cn->conf.host.len == len
            && ngx_strncasecmp(cn->conf.host.data, host, len) == 0)
        {
            return cn;
        }
    }

    /*
     * Nodes that serve nothing are freed when a new map is taken, once
     * idle; none is freed here, where a map being read or a reply being
     * handled may still point at it.
     */
    if (cl->nnodes == NGX_TIKTOK_REPORTS_CLUSTER_NODES) {
        ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                      "tiktok_reports: redis cluster %V has more than %d "
                      "nodes", &cl->conf->name,
                      NGX_TIKTOK_REPORTS_CLUSTER_NODES);
        return NULL;
    }

    cn = ngx_calloc(sizeof(ngx_tiktok_reports_cluster_node_t), cl->log);
    if (cn == NULL) {
        return NULL;
    }

    cn->conf = *cl->conf;
    cn->conf.seeds = NULL;

    /* "host\0host:port": the host for connect and TLS, the name for logs */
    p = ngx_cpymem(cn->text, host, len);
    *p++ = '\0';
    cn->conf.host.data = cn->text;
    cn->conf.host.len = len;
    cn->conf.host_name = cn->conf.host;
    cn->conf.port = port;

    cn->conf.name.data = p;
    p = ngx_sprintf(p, (ngx_strlchr(host, host + len, ':') ? "[%*s]:%i"
                                                          : "%*s:%i"),
                    len, host, port);
    cn->conf.name.len = p - cn->conf.name.data;

    ngx_memzero(&cn->sockaddr, sizeof(ngx_sockaddr_t));

    addr = ngx_inet_addr(host, len);

    if (addr != INADDR_NONE) {
        cn->sockaddr.sockaddr_in.sin_family = AF_INET;
        cn->sockaddr.sockaddr_in.sin_addr.s_addr = addr;
        socklen = sizeof(struct sockaddr_in);

#if (NGX_HAVE_INET6)
    } else if (ngx_inet6_addr(host, len,
                              cn->sockaddr.sockaddr_in6.sin6_addr.s6_addr)
               == NGX_OK)
    {
        cn->sockaddr.sockaddr_in6.sin6_family = AF_INET6;
        socklen = sizeof(struct sockaddr_in6);
#endif

    } else {
        socklen = 0;
    }

    if (socklen) {
        ngx_inet_set_port(&cn->sockaddr.sockaddr, (in_port_t) port);
        cn->conf.sockaddr = &cn->sockaddr.sockaddr;
        cn->conf.socklen = socklen;

    } else if (cl->conf->resolver) {
        /* a host name the cluster announces: resolved at each connect */
        cn->conf.sockaddr = NULL;

    } else {
        ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                      "tiktok_reports: redis cluster %V announces the host "
                      "name \"%V\", which needs a \"resolver\"",
                      &cl->conf->name, &cn->conf.name);
        ngx_free(cn);
        return NULL;
    }

    cl->nodes[cl->nnodes++] = cn;

    /* the cluster tells the store's gauge, not each node */
    (void) ngx_tiktok_reports_node_init(&cn->node, NGX_TIKTOK_REPORTS_NO_INDEX,
                                        &cn->conf, &cl->script, cl->log);

    if (cn->conf.sockaddr == NULL) {
        cn->discovery = ngx_tiktok_reports_discovery_create(&cn->node,
                                                            cl->log);
        if (cn->discovery == NULL) {
            ngx_tiktok_reports_cluster_free(cl, cl->nnodes - 1);
            return NULL;
        }
    }

    return cn;
}


static void
ngx_tiktok_reports_cluster_free(ngx_tiktok_reports_cluster_t *cl,
    ngx_uint_t i)
{
    ngx_tiktok_reports_cluster_node_t  *cn;

    cn = cl->nodes[i];
    cl->nodes[i] = cl->nodes[--cl->nnodes];

    if (cn->discovery) {
        ngx_tiktok_reports_discovery_close(cn->discovery);
    }

    ngx_tiktok_reports_node_close(&cn->node);
    ngx_free(cn);
}


ngx_uint_t
ngx_tiktok_reports_cluster_mapped(ngx_tiktok_reports_cluster_t *cl)
{
    return cl->mapped;
}


/* the node that serves a slot; before the first map, a seed (MOVED then) */

ngx_tiktok_reports_node_t *
ngx_tiktok_reports_cluster_node(ngx_tiktok_reports_cluster_t *cl,
    ngx_uint_t slot)
{
    ngx_tiktok_reports_cluster_node_t  *cn;

    cn = cl->map[slot];

    if (cn == NULL) {
        cn = cl->nodes[cl->ask % cl->nnodes];
    }

    return &cn->node;
}


/*
 * A redirect: "MOVED <slot> <host>:<port>" or "ASK ..." (after the word).
 * The node to resend to; MOVED fixes the slot now and asks for a new map.
 */

ngx_tiktok_reports_node_t *
ngx_tiktok_reports_cluster_redirect(ngx_tiktok_reports_cluster_t *cl,
    u_char *p, size_t len, ngx_uint_t moved)
{
    u_char                             *last, *sp, *colon;
    ngx_int_t                           slot, port;
    ngx_tiktok_reports_cluster_node_t  *cn;

    last = p + len;

    while (p < last && *p == ' ') {
        p++;
    }

    sp = ngx_strlchr(p, last, ' ');
    if (sp == NULL) {
        return NULL;
    }

    slot = ngx_atoi(p, sp - p);
    if (slot < 0 || slot >= NGX_TIKTOK_REPORTS_SLOTS) {
        return NULL;
    }

    p = sp + 1;

    for (colon = last; colon > p && colon[-1] != ':'; colon--) {
        /* void */
    }

    if (colon == p) {
        return NULL;
    }

    port = ngx_atoi(colon, last - colon);

    cn = ngx_tiktok_reports_cluster_get(cl, p, colon - 1 - p, port);
    if (cn == NULL) {
        return NULL;
    }

    if (moved) {
        cl->map[slot] = cn;
        cn->mapped = 1;
        ngx_tiktok_reports_cluster_refresh(cl);
    }

    return &cn->node;
}


/* the map is stale: a new one is asked as soon as the limits allow */

void
ngx_tiktok_reports_cluster_refresh(ngx_tiktok_reports_cluster_t *cl)
{
    if (cl->asking || cl->closing) {
        return;
    }

    if ((ngx_msec_int_t) (ngx_current_msec - cl->last)
        < NGX_TIKTOK_REPORTS_CLUSTER_GAP)
    {
        ngx_tiktok_reports_cluster_later(cl, NGX_TIKTOK_REPORTS_CLUSTER_GAP
                                        - (ngx_current_msec - cl->last));
        return;
    }

    ngx_tiktok_reports_cluster_ask(cl);
}


/* the timer fires at "after" unless it fires sooner already */

static void
ngx_tiktok_reports_cluster_later(ngx_tiktok_reports_cluster_t *cl,
    ngx_msec_t after)
{
    if (cl->closing || ngx_exiting || ngx_quit) {
        return;
    }

    if (cl->timer.timer_set
        && (ngx_msec_int_t) (cl->timer.timer.key - ngx_current_msec)
           <= (ngx_msec_int_t) after)
    {
        return;
    }

    ngx_add_timer(&cl->timer, after);
}


static void
ngx_tiktok_reports_cluster_timer(ngx_event_t *ev)
{
    ngx_tiktok_reports_cluster_t  *cl = ev->data;

    if (!cl->asking) {
        ngx_tiktok_reports_cluster_ask(cl);
    }
}


/*
 * CLUSTER SLOTS to the next node in turn, one that is connected when there
 * is one (a node that is down would only time out).
 */

static void
ngx_tiktok_reports_cluster_ask(ngx_tiktok_reports_cluster_t *cl)
{
    ngx_uint_t                          i, n;
    const char                         *argv[2];
    size_t                              argvlen[2];
    ngx_tiktok_reports_cluster_node_t  *cn;

    static ngx_str_t  cmd = ngx_string("CLUSTER SLOTS");

    if (cl->closing || ngx_exiting || ngx_quit || cl->nnodes == 0) {
        return;
    }

    cl->last = ngx_current_msec;

    argv[0] = (const char *) cmd.data;
    argvlen[0] = 7;
    argv[1] = (const char *) cmd.data + 8;
    argvlen[1] = 5;

    n = cl->nnodes;
    cn = NULL;

    for (i = 0; i < n; i++) {
        cn = cl->nodes[(cl->ask + i) % n];

        if (cn->node.ready && cn->node.conn.peer.connection) {
            cl->ask = (cl->ask + i) % n;
            break;
        }

        cn = NULL;
    }

    for (i = 0; i < n; i++) {
        if (cn == NULL) {
            cn = cl->nodes[cl->ask % n];
        }

        cl->ask++;

        if (ngx_tiktok_reports_node_command(&cn->node,
                                            ngx_tiktok_reports_cluster_reply,
                                            cl, NULL, 0, 2, argv, argvlen)
            == NGX_OK)
        {
            cl->asking = 1;
            return;
        }

        cn = NULL;
    }

    /* none can be asked now: again later */
    ngx_tiktok_reports_cluster_later(cl, NGX_TIKTOK_REPORTS_CLUSTER_GAP);
}


static void
ngx_tiktok_reports_cluster_reply(ngx_tiktok_reports_node_t *node,
    redisReply *reply, void *data)
{
    ngx_tiktok_reports_cluster_t  *cl = data;

    const char  *why;

    cl->asking = 0;

    if (cl->closing) {
        return;
    }

    why = NULL;

    if (reply == NULL) {
        why = "no reply";

    } else if (reply->type == REDIS_REPLY_ERROR) {
        why = reply->str;

    } else if (ngx_tiktok_reports_cluster_take(cl, node, reply, &why)
               == NGX_OK)
    {
        if (cl->logged) {
            cl->logged = 0;
            ngx_log_error(NGX_LOG_NOTICE, cl->log, 0,
                          "tiktok_reports: redis cluster %V: the slot map "
                          "is complete again", &cl->conf->name);
        }

        ngx_tiktok_reports_cluster_later(cl,
                                   NGX_TIKTOK_REPORTS_CLUSTER_RECHECK
                                   + ngx_random()
                                     % NGX_TIKTOK_REPORTS_CLUSTER_JITTER);
        return;
    }

    if (!cl->mapped) {
        ngx_tiktok_reports_metrics_connected(cl->index, 0);
    }

    /* once per outage; the old map (if any) serves meanwhile */
    if (!cl->logged) {
        cl->logged = 1;
        ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                      "tiktok_reports: redis cluster %V: no slot map from "
                      "%V: %s", &cl->conf->name, &node->conf->name, why);
    }

    ngx_tiktok_reports_cluster_later(cl, NGX_TIKTOK_REPORTS_CLUSTER_GAP);
}


/*
 * CLUSTER SLOTS: [[first, last, [host, port, id, ...], replicas...], ...].
 * A host that is NULL, empty or "?" means "the host you asked", with the
 * port given.
 */

static ngx_int_t
ngx_tiktok_reports_cluster_take(ngx_tiktok_reports_cluster_t *cl,
    ngx_tiktok_reports_node_t *asked, redisReply *reply, const char **why)
{
    u_char                             *host;
    size_t                              len;
    ngx_int_t                           first, last, s;
    ngx_uint_t                          i, missing;
    redisReply                         *r, *m;
    ngx_tiktok_reports_cluster_node_t  *cn;

    if (reply->type != REDIS_REPLY_ARRAY) {
        *why = "not a slot map";
        return NGX_ERROR;
    }

    ngx_memzero(cl->next, sizeof(cl->next));

    for (i = 0; i < reply->elements; i++) {
        r = reply->element[i];

        if (r->type != REDIS_REPLY_ARRAY || r->elements < 3
            || r->element[0]->type != REDIS_REPLY_INTEGER
            || r->element[1]->type != REDIS_REPLY_INTEGER
            || r->element[2]->type != REDIS_REPLY_ARRAY
            || r->element[2]->elements < 2
            || r->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
        {
            *why = "not a slot map";
            return NGX_ERROR;
        }

        first = (ngx_int_t) r->element[0]->integer;
        last = (ngx_int_t) r->element[1]->integer;

        if (first < 0 || last < first || last >= NGX_TIKTOK_REPORTS_SLOTS) {
            *why = "a slot out of range";
            return NGX_ERROR;
        }

        m = r->element[2];

        if (m->element[0]->type == REDIS_REPLY_STRING
            && m->element[0]->len
            && !(m->element[0]->len == 1 && m->element[0]->str[0] == '?'))
        {
            host = (u_char *) m->element[0]->str;
            len = m->element[0]->len;

        } else {
            host = asked->conf->host.data;
            len = asked->conf->host.len;
        }

        cn = ngx_tiktok_reports_cluster_get(cl, host, len,
                                            (ngx_int_t) m->element[1]->integer);
        if (cn == NULL) {
            *why = "a master that cannot be reached";
            return NGX_ERROR;
        }

        for (s = first; s <= last; s++) {
            cl->next[s] = cn;
        }
    }

    missing = 0;

    for (s = 0; s < NGX_TIKTOK_REPORTS_SLOTS; s++) {
        if (cl->next[s] == NULL) {
            missing++;
        }
    }

    if (missing) {
        *why = "slots not served by any master";
        return NGX_ERROR;
    }

    ngx_memcpy(cl->map, cl->next, sizeof(cl->map));
    cl->mapped = 1;

    for (i = 0; i < cl->nnodes; i++) {
        cl->nodes[i]->mapped = 0;
    }

    for (s = 0; s < NGX_TIKTOK_REPORTS_SLOTS; s++) {
        cl->map[s]->mapped = 1;
    }

    /* a node that no longer serves slots goes once nothing waits on it */
    i = 0;

    while (i < cl->nnodes) {
        cn = cl->nodes[i];

        if (!cn->seed && !cn->mapped && cn->node.count == 0
            && &cn->node != asked)
        {
            ngx_tiktok_reports_cluster_free(cl, i);
            continue;
        }

        i++;
    }

    ngx_tiktok_reports_metrics_connected(cl->index, 1);

    return NGX_OK;
}


/* a request goes out only when no master it may reach is at its limits */

ngx_int_t
ngx_tiktok_reports_cluster_admit(ngx_tiktok_reports_cluster_t *cl,
    ngx_tiktok_reports_redis_limits_t *limits, ngx_uint_t commands,
    size_t bytes)
{
    ngx_uint_t  i;

    for (i = 0; i < cl->nnodes; i++) {
        if (ngx_tiktok_reports_node_admit(&cl->nodes[i]->node, limits,
                                          commands, bytes)
            != NGX_OK)
        {
            return NGX_BUSY;
        }
    }

    return NGX_OK;
}


/*
 * For a health check: NGX_OK with a full map and every master it names
 * connected; *outstanding sums their queues.
 */

ngx_int_t
ngx_tiktok_reports_cluster_state(ngx_tiktok_reports_cluster_t *cl,
    const char **state, ngx_uint_t *outstanding)
{
    ngx_int_t    rc;
    ngx_uint_t   i, n;
    const char  *s;

    *outstanding = 0;
    rc = NGX_OK;
    *state = "up";

    if (!cl->mapped) {
        rc = NGX_DECLINED;
        *state = "no slot map";
    }

    for (i = 0; i < cl->nnodes; i++) {
        if (!cl->nodes[i]->mapped) {
            continue;
        }

        if (ngx_tiktok_reports_node_state(&cl->nodes[i]->node, &s, &n)
            != NGX_OK
            && rc == NGX_OK)
        {
            rc = NGX_DECLINED;
            *state = s;
        }

        *outstanding += n;
    }

    return rc;
}
