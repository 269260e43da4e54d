
/*
 * Copyright (C) ngx_tiktok_reports_module authors
 */


/*
 * The Redis store: the transition script, how a report becomes its
 * arguments, and which node serves a key.  Today a store has one node; on
 * Redis Cluster it will hold the nodes and the slot map, and pick the node
 * here, without the handlers noticing.
 */


#include "ngx_tiktok_reports_redis.h"

#include <openssl/evp.h>


/*
 * One call stores up to NGX_TIKTOK_REPORTS_BATCH reports, each its own
 * transition on its own hash, in order: a report later in the call sees
 * what an earlier one wrote.  Redis spends about a quarter less per report
 * than with one call each (the call, its arguments and its reply are paid
 * once), and one message's transition is still never interleaved.
 *
 * KEYS[1] the change feed, KEYS[1 + i] report i's message hash.
 * ARGV: 1 now (ms), 2 ttl (s, "0" never), 3 feed maxlen ("0" off), 4 the
 * database ("" for 0), then twelve per report: kind ("d" or "s"), status
 * group, event identity (the start of its timeline line), the rest of
 * that line, messageId, callbackData, raw report (both "" when absent),
 * event time as sent (doneAt or seenAt), and for deliveries statusName,
 * errorName, errorPermanent, doneAt in ms ("" when unreadable; all four ""
 * for seen).
 * Returns one code per report: 0 duplicate, 1 stored, 2 stored and status
 * changed, -1 not stored: the key holds another type than a hash.  That
 * one report is refused instead of failing the call, or its body would be
 * retried forever; any other error fails the call.
 *
 * Redis keeps what a script wrote before an error, and the retry would
 * find those reports as duplicates whose changes never reached the feed.
 * So what the writes depend on is checked before the first one: the TTL
 * EXPIRE can take, the feed's type, the user's EXPIRE and XADD rights
 * (Redis 7).  Redis itself refuses only a script's first write when out
 * of memory, on a replica, short of replicas or unable to persist; here
 * that is an HSET, after all checks.
 *
 * The "dg" field keeps the group and instant of the report that holds the
 * delivery details, so that same-rank reports compare without parsing.
 * A timeline line starts with the event identity and a JSON-escaped
 * string cannot contain '{"kind":', so a plain find is an exact test.
 */

static char ngx_tiktok_reports_script[] =
"local function rank(s)\n"
"  if s == 'SEEN' then return 4 end\n"
"  if s == 'DELIVERED' then return 3 end\n"
"  if s == 'UNDELIVERABLE' or s == 'EXPIRED' or s == 'REJECTED' then\n"
"    return 2\n"
"  end\n"
"  if s == 'PENDING' then return 1 end\n"
"  return 0\n"
"end\n"
"local now, ttl, maxlen = ARGV[1], ARGV[2], ARGV[3]\n"
"if ARGV[4] ~= '' then redis.call('SELECT', ARGV[4]) end\n"
"if ttl ~= '0' and (#ttl > 16 or #ttl == 16 and ttl > '9000000000000000')\n"
"then\n"
"  return redis.error_reply('ERR tiktok_reports_ttl is too large for EXPIRE')\n"
"end\n"
"if maxlen ~= '0' then\n"
"  local t = redis.call('TYPE', KEYS[1])['ok']\n"
"  if t ~= 'stream' and t ~= 'none' then\n"
"    return redis.error_reply('WRONGTYPE the change feed holds a ' .. t\n"
"                             .. ', not a stream')\n"
"  end\n"
"end\n"
"local acl = redis.acl_check_cmd\n"
"if acl then\n"
"  if ttl ~= '0' and not acl('EXPIRE', KEYS[2]) then\n"
"    return redis.error_reply('NOPERM the user may not EXPIRE message keys')\n"
"  end\n"
"  if maxlen ~= '0' and not acl('XADD', KEYS[1]) then\n"
"    return redis.error_reply('NOPERM the user may not XADD to the feed')\n"
"  end\n"
"end\n"
"local function transition(k, a)\n"
"  local g = ARGV[a + 2]\n"
"  local raw = ARGV[a + 7]\n"
"  local ok, cur = pcall(redis.call, 'HMGET', k, 'status', 'timeline', 'dg',\n"
"                        'seenAt')\n"
"  if not ok then\n"
"    local e = type(cur) == 'table' and cur.err or tostring(cur)\n"
"    if string.find(e, 'WRONGTYPE', 1, true) then return -1 end\n"
"    error(cur)\n"
"  end\n"
"  local old, tl = cur[1], cur[2]\n"
"  if tl and string.find(tl, ARGV[a + 3], 1, true) then return 0 end\n"
"  local r = rank(g)\n"
"  local line = ARGV[a + 3] .. ARGV[a + 4]\n"
"  if tl then line = tl .. '\\n' .. line end\n"
"  local f = {'timeline', line, 'updatedAt', now}\n"
"  local n = 4\n"
"  local new = old\n"
"  if r > rank(old) then\n"
"    new = g\n"
"    f[5] = 'status'; f[6] = g; n = 6\n"
"  end\n"
"  if ARGV[a + 1] == 'd' then\n"
"    local take = true\n"
"    local dg = cur[3]\n"
"    local sep = dg and string.find(dg, ':', 1, true)\n"
"    if sep then\n"
"      local dgrp = string.sub(dg, 1, sep - 1)\n"
"      local dr = rank(dgrp)\n"
"      if r ~= dr then\n"
"        take = r > dr\n"
"      else\n"
"        local x = tonumber(ARGV[a + 12])\n"
"        local y = tonumber(string.sub(dg, sep + 1))\n"
"        take = dgrp == g and x ~= nil and (y == nil or x > y)\n"
"      end\n"
"    end\n"
"    if take then\n"
"      f[n + 1] = 'statusName'; f[n + 2] = ARGV[a + 9]\n"
"      f[n + 3] = 'errorName'; f[n + 4] = ARGV[a + 10]\n"
"      f[n + 5] = 'errorPermanent'; f[n + 6] = ARGV[a + 11]\n"
"      f[n + 7] = 'doneAt'; f[n + 8] = ARGV[a + 8]\n"
"      f[n + 9] = 'dg'; f[n + 10] = g .. ':' .. ARGV[a + 12]\n"
"      n = n + 10\n"
"      if raw ~= '' then\n"
"        f[n + 1] = 'delivery'; f[n + 2] = raw; n = n + 2\n"
"      end\n"
"    end\n"
"  elseif not cur[4] then\n"
"    f[n + 1] = 'seenAt'; f[n + 2] = ARGV[a + 8]; n = n + 2\n"
"    if raw ~= '' then\n"
"      f[n + 1] = 'seen'; f[n + 2] = raw; n = n + 2\n"
"    end\n"
"  end\n"
"  if ARGV[a + 6] ~= '' then\n"
"    f[n + 1] = 'callbackData'; f[n + 2] = ARGV[a + 6]; n = n + 2\n"
"  end\n"
"  redis.call('HSET', k, unpack(f, 1, n))\n"
"  if ttl ~= '0' then redis.call('EXPIRE', k, ttl) end\n"
"  if new == old then return 1 end\n"
"  if maxlen ~= '0' then\n"
"    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',\n"
"               'messageId', ARGV[a + 5], 'status', g,\n"
"               'previous', old or '', 'at', ARGV[a + 8])\n"
"  end\n"
"  return 2\n"
"end\n"
"local out = {}\n"
"for i = 1, #KEYS - 1 do\n"
"  out[i] = transition(KEYS[i + 1], 4 + (i - 1) * 12)\n"
"end\n"
"return out\n";


/* reports per call: Redis's cost per report stops falling at about 100 */
#define NGX_TIKTOK_REPORTS_BATCH  100

/* a report's arguments in a call, and the fixed ones before them */
#define NGX_TIKTOK_REPORTS_REPORT_ARGS  12
#define NGX_TIKTOK_REPORTS_HEAD_ARGS    8


typedef struct {
    ngx_tiktok_reports_node_t         *node;
    ngx_tiktok_reports_store_done_pt   done;
    void                              *data;
    ngx_uint_t                         index;      /* raw: the owner's */
    ngx_uint_t                        *indices;    /* each report's */
    ngx_uint_t                         n;          /* reports in the call */
    ngx_msec_t                         sent;       /* us, for the RTT */
    ngx_msec_t                         timeout;    /* the owner's */
    int                                argc;
    unsigned                           retried:1;  /* sent again as EVAL */
    unsigned                           raw:1;      /* not a transition */
    const char                       **argv;
    size_t                            *argvlen;
    ngx_tiktok_reports_node_hold_t     hold;       /* for the WAIT */
    ngx_int_t                         *codes;      /* outcomes held */
} ngx_tiktok_reports_store_cmd_t;


static void ngx_tiktok_reports_store_reply(ngx_tiktok_reports_node_t *node,
    redisReply *rr, void *data);
static ngx_uint_t ngx_tiktok_reports_store_wanted(void *data);
static ngx_int_t ngx_tiktok_reports_store_hold(
    ngx_tiktok_reports_store_cmd_t *cmd, redisReply *rr);
static void ngx_tiktok_reports_store_waited(void *data, ngx_int_t rc);


static ngx_str_t  ngx_tiktok_reports_script_str;
static u_char     ngx_tiktok_reports_script_sha[41];

static ngx_str_t  ngx_tiktok_reports_group_names[] = {
    ngx_null_string,
    ngx_string("PENDING"),
    ngx_string("UNDELIVERABLE"),
    ngx_string("DELIVERED"),
    ngx_string("EXPIRED"),
    ngx_string("REJECTED")
};


static ngx_uint_t
ngx_tiktok_reports_store_same(ngx_str_t *a, ngx_str_t *b)
{
    return a->len == b->len
           && (a->len == 0 || ngx_memcmp(a->data, b->data, a->len) == 0);
}


ngx_tiktok_reports_store_t *
ngx_tiktok_reports_store_get(ngx_conf_t *cf,
    ngx_tiktok_reports_redis_conf_t *conf)
{
    u_char                            md[EVP_MAX_MD_SIZE];
    unsigned int                      mdlen;
    ngx_uint_t                        i;
    ngx_str_t                       **name;
    ngx_tiktok_reports_store_t      **stores, *store, **slot;
    ngx_tiktok_reports_main_conf_t   *tmcf;

    if (ngx_tiktok_reports_script_str.len == 0) {
        ngx_tiktok_reports_script_str.data =
                                         (u_char *) ngx_tiktok_reports_script;
        ngx_tiktok_reports_script_str.len =
                                         sizeof(ngx_tiktok_reports_script) - 1;

        if (EVP_Digest(ngx_tiktok_reports_script,
                       ngx_tiktok_reports_script_str.len, md, &mdlen,
                       EVP_sha1(), NULL)
            != 1)
        {
            return NULL;
        }

        ngx_hex_dump(ngx_tiktok_reports_script_sha, md, mdlen);
    }

    tmcf = ngx_http_conf_get_module_main_conf(cf, ngx_tiktok_reports_module);

    /* locations that name the same Redis share one connection per worker */

    stores = tmcf->stores.elts;

    for (i = 0; i < tmcf->stores.nelts; i++) {
        store = stores[i];

        /* TLS settings that match share one object (ssl_get) */
        if (store->conf.db == conf->db
            && store->conf.ssl == conf->ssl
            && store->conf.resolver == conf->resolver
            && store->conf.wait_replicas == conf->wait_replicas
            && store->conf.wait_timeout == conf->wait_timeout
            && ngx_tiktok_reports_store_same(&store->conf.name, &conf->name)
            && ngx_tiktok_reports_store_same(&store->conf.user, &conf->user)
            && ngx_tiktok_reports_store_same(&store->conf.password,
                                             &conf->password))
        {
            /*
             * each request waits as long as its own location says; the
             * connection's handshake is bounded by the longest of them
             */
            if (conf->timeout > store->conf.timeout) {
                store->conf.timeout = conf->timeout;
            }

            return store;
        }
    }

    store = ngx_pcalloc(cf->pool, sizeof(ngx_tiktok_reports_store_t));
    if (store == NULL) {
        return NULL;
    }

    store->conf = *conf;

    slot = ngx_array_push(&tmcf->stores);
    if (slot == NULL) {
        return NULL;
    }

    *slot = store;

    /* the metrics label connections with it, in the same order */
    name = ngx_array_push(&tmcf->names);
    if (name == NULL) {
        return NULL;
    }

    *name = &store->conf.name;

    return store;
}


ngx_int_t
ngx_tiktok_reports_store_init_worker(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i;
    ngx_tiktok_reports_store_t      **stores;
    ngx_tiktok_reports_main_conf_t   *tmcf;

    tmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_tiktok_reports_module);
    if (tmcf == NULL) {
        return NGX_OK;
    }

    stores = tmcf->stores.elts;

    for (i = 0; i < tmcf->stores.nelts; i++) {
        stores[i]->node = ngx_palloc(cycle->pool,
                                     sizeof(ngx_tiktok_reports_node_t));
        if (stores[i]->node == NULL) {
            return NGX_ERROR;
        }

        if (ngx_tiktok_reports_node_init(stores[i]->node, i, &stores[i]->conf,
                                         &ngx_tiktok_reports_script_str,
                                         cycle->log)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        /* a host name resolved at run time, or Sentinel: the node waits */
        if (stores[i]->conf.sockaddr == NULL) {
            stores[i]->discovery = ngx_tiktok_reports_discovery_create(
                                                   stores[i]->node, cycle->log);
            if (stores[i]->discovery == NULL) {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


void
ngx_tiktok_reports_store_exit_worker(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i;
    ngx_tiktok_reports_store_t      **stores;
    ngx_tiktok_reports_main_conf_t   *tmcf;

    tmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_tiktok_reports_module);
    if (tmcf == NULL) {
        return;
    }

    stores = tmcf->stores.elts;

    for (i = 0; i < tmcf->stores.nelts; i++) {
        if (stores[i]->discovery) {
            ngx_tiktok_reports_discovery_close(stores[i]->discovery);
            stores[i]->discovery = NULL;
        }

        if (stores[i]->node) {
            ngx_tiktok_reports_node_close(stores[i]->node);
        }
    }
}


/* the node that owns a key; a cluster-aware store hashes the {tag} here */

static ngx_tiktok_reports_node_t *
ngx_tiktok_reports_store_node(ngx_tiktok_reports_store_t *store, u_char *key,
    size_t len)
{
    return store->node;
}


static ngx_int_t
ngx_tiktok_reports_store_send(ngx_tiktok_reports_store_cmd_t *cmd, int argc,
    const char **argv, const size_t *argvlen)
{
    ngx_int_t  rc;

    cmd->sent = ngx_tiktok_reports_usec();
    cmd->codes = NULL;

    /* a transition writes: with WAIT configured, one follows its flush */
    rc = cmd->raw
         ? ngx_tiktok_reports_node_command(cmd->node,
                                        ngx_tiktok_reports_store_reply,
                                        cmd, ngx_tiktok_reports_store_wanted,
                                        cmd->timeout, argc, argv, argvlen)
         : ngx_tiktok_reports_node_write(cmd->node,
                                        ngx_tiktok_reports_store_reply,
                                        cmd, ngx_tiktok_reports_store_wanted,
                                        cmd->timeout, argc, argv, argvlen);

    if (rc != NGX_OK) {
        /* no connection to send on */
        ngx_tiktok_reports_metrics_redis_error(0);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Arguments either point at memory that outlives the command (constants,
 * the location's configuration, the command block itself), or are copied
 * into the block: a command can be resent (NOSCRIPT) after its request,
 * and the request pool with it, is gone.
 */

static void
ngx_tiktok_reports_store_ref(ngx_tiktok_reports_store_cmd_t *cmd,
    u_char *s, size_t len)
{
    cmd->argv[cmd->argc] = len ? (const char *) s : "";
    cmd->argvlen[cmd->argc++] = len;
}


static u_char *
ngx_tiktok_reports_store_copy(ngx_tiktok_reports_store_cmd_t *cmd, u_char *p,
    u_char *s, size_t len)
{
    ngx_tiktok_reports_store_ref(cmd, p, len);

    return len ? ngx_cpymem(p, s, len) : p;
}


/* a JSON string, or null when absent */

static u_char *
ngx_tiktok_reports_store_json(u_char *p, ngx_tiktok_reports_str_t *s)
{
    if (s->data == NULL) {
        return ngx_cpymem(p, "null", 4);
    }

    return ngx_tiktok_reports_json_string(p, s->data, s->len);
}


static size_t
ngx_tiktok_reports_store_json_len(ngx_tiktok_reports_str_t *s)
{
    return s->data ? ngx_tiktok_reports_json_string_len(s->data, s->len)
                   : sizeof("null") - 1;
}


static size_t
ngx_tiktok_reports_store_report_size(ngx_tiktok_reports_store_opts_t *opts,
    ngx_tiktok_reports_result_t *res)
{
    ngx_tiktok_reports_str_t  *at;

    at = (res->kind == NGX_TIKTOK_REPORTS_KIND_DELIVERY) ? &res->done_at
                                                         : &res->seen_at;

    /* the fixed parts (names, numbers, punctuation) fit in 256 bytes */

    return 256 + opts->prefix.len + res->message_id.len + res->status_id.len
           + ngx_tiktok_reports_store_json_len(at)
           + ngx_tiktok_reports_store_json_len(&res->status_name)
           + at->len + res->callback_data.len + res->raw.len
           + res->status_name.len + res->error_name.len;
}


/* report j of the call: its key, then its twelve arguments at cmd->argc */

static u_char *
ngx_tiktok_reports_store_report(ngx_tiktok_reports_store_cmd_t *cmd,
    ngx_uint_t j, u_char *p, ngx_tiktok_reports_store_opts_t *opts,
    int64_t now, ngx_tiktok_reports_result_t *res)
{
    u_char                    *key, *start;
    ngx_str_t                 *group;
    ngx_uint_t                 delivery;
    ngx_tiktok_reports_str_t  *at;

    static ngx_str_t  seen = ngx_string("SEEN");

    delivery = (res->kind == NGX_TIKTOK_REPORTS_KIND_DELIVERY);

    if (delivery) {
        group = &ngx_tiktok_reports_group_names[res->group];
        at = &res->done_at;

    } else {
        group = &seen;
        at = &res->seen_at;
    }

    /* KEYS[2 + j] <prefix>msg:{<messageId>} */
    key = p;
    p = ngx_cpymem(p, opts->prefix.data, opts->prefix.len);
    p = ngx_cpymem(p, "msg:{", 5);
    p = ngx_cpymem(p, res->message_id.data, res->message_id.len);
    *p++ = '}';
    cmd->argv[4 + j] = (const char *) key;
    cmd->argvlen[4 + j] = p - key;

    /* kind, status group */
    ngx_tiktok_reports_store_ref(cmd, (u_char *) (delivery ? "d" : "s"), 1);
    ngx_tiktok_reports_store_ref(cmd, group->data, group->len);

    /* the event identity, the start of its timeline line */
    start = p;

    if (delivery) {
        p = ngx_cpymem(p, "{\"kind\":\"delivery\",\"id\":",
                       sizeof("{\"kind\":\"delivery\",\"id\":") - 1);

        if (res->status_id.data) {
            p = ngx_cpymem(p, res->status_id.data, res->status_id.len);

        } else {
            p = ngx_cpymem(p, "null", 4);
        }

        p = ngx_cpymem(p, ",\"at\":", 6);

    } else {
        p = ngx_cpymem(p, "{\"kind\":\"seen\",\"at\":",
                       sizeof("{\"kind\":\"seen\",\"at\":") - 1);
    }

    p = ngx_tiktok_reports_store_json(p, at);
    *p++ = ',';
    ngx_tiktok_reports_store_ref(cmd, start, p - start);

    /* the rest of the line */
    start = p;
    p = ngx_sprintf(p, "\"status\":\"%V\"", group);

    if (delivery) {
        p = ngx_cpymem(p, ",\"statusName\":", 14);
        p = ngx_tiktok_reports_store_json(p, &res->status_name);
    }

    p = ngx_sprintf(p, ",\"receivedAt\":%L}", now);
    ngx_tiktok_reports_store_ref(cmd, start, p - start);

    /* messageId (inside the key), callbackData, raw report, event time */
    ngx_tiktok_reports_store_ref(cmd, key + opts->prefix.len + 5,
                                 res->message_id.len);
    p = ngx_tiktok_reports_store_copy(cmd, p, res->callback_data.data,
                                      res->callback_data.len);
    p = ngx_tiktok_reports_store_copy(cmd, p, res->raw.data, res->raw.len);
    p = ngx_tiktok_reports_store_copy(cmd, p, at->data, at->len);

    if (!delivery) {
        ngx_tiktok_reports_store_ref(cmd, NULL, 0);
        ngx_tiktok_reports_store_ref(cmd, NULL, 0);
        ngx_tiktok_reports_store_ref(cmd, NULL, 0);
        ngx_tiktok_reports_store_ref(cmd, NULL, 0);
        return p;
    }

    /* statusName, errorName, errorPermanent, doneAt in ms */
    p = ngx_tiktok_reports_store_copy(cmd, p, res->status_name.data,
                                      res->status_name.len);

    if (res->error_name.data) {
        p = ngx_tiktok_reports_store_copy(cmd, p, res->error_name.data,
                                          res->error_name.len);

    } else {
        ngx_tiktok_reports_store_ref(cmd, (u_char *) "NO_ERROR", 8);
    }

    if (res->error_permanent == 1) {
        ngx_tiktok_reports_store_ref(cmd, (u_char *) "true", 4);

    } else {
        ngx_tiktok_reports_store_ref(cmd, (u_char *) "false", 5);
    }

    start = p;

    if (res->done_at_ms != NGX_TIKTOK_REPORTS_NO_TIME) {
        p = ngx_sprintf(p, "%L", res->done_at_ms);
    }

    ngx_tiktok_reports_store_ref(cmd, start, p - start);

    return p;
}


ngx_int_t
ngx_tiktok_reports_store_admit(ngx_tiktok_reports_store_t *store,
    ngx_tiktok_reports_redis_limits_t *limits, ngx_uint_t commands,
    size_t bytes)
{
    if (ngx_tiktok_reports_node_admit(
                             ngx_tiktok_reports_store_node(store, NULL, 0),
                             limits, commands, bytes)
        == NGX_OK)
    {
        return NGX_OK;
    }

    ngx_tiktok_reports_metrics_redis_busy();

    return NGX_BUSY;
}


ngx_int_t
ngx_tiktok_reports_store_transitions(ngx_tiktok_reports_store_t *store,
    ngx_tiktok_reports_store_opts_t *opts,
    ngx_tiktok_reports_redis_limits_t *limits, int64_t now,
    ngx_tiktok_reports_result_t *res, size_t n,
    ngx_tiktok_reports_store_done_pt done, void *data, size_t *sent)
{
    size_t                           i, j, first, last, count, size;
    u_char                          *p, *start;
    ngx_uint_t                       argc;
    ngx_tiktok_reports_store_cmd_t  *cmd;

    *sent = 0;

    /* all or nothing: a body is refused before its first call goes out */

    count = 0;
    size = 0;

    for (i = 0; i < n; i++) {
        if (res[i].error == NULL) {
            size += ngx_tiktok_reports_store_report_size(opts, &res[i]);
            count++;
        }
    }

    if (count == 0) {
        return NGX_OK;
    }

    if (ngx_tiktok_reports_store_admit(store, limits,
                                       (count + NGX_TIKTOK_REPORTS_BATCH - 1)
                                       / NGX_TIKTOK_REPORTS_BATCH,
                                       size)
        != NGX_OK)
    {
        return NGX_BUSY;
    }

    i = 0;

    for ( ;; ) {

        /* the next call: up to NGX_TIKTOK_REPORTS_BATCH storable results */

        while (i < n && res[i].error) {
            i++;
        }

        if (i == n) {
            return NGX_OK;
        }

        first = i;
        count = 0;
        size = 0;

        for ( /* void */ ; i < n && count < NGX_TIKTOK_REPORTS_BATCH; i++) {
            if (res[i].error == NULL) {
                size += ngx_tiktok_reports_store_report_size(opts, &res[i]);
                count++;
            }
        }

        last = i;

        /*
         * One block holds the command, its argv, the reports' indices and
         * the bytes of the arguments built or copied here.
         */

        argc = NGX_TIKTOK_REPORTS_HEAD_ARGS
               + count * (1 + NGX_TIKTOK_REPORTS_REPORT_ARGS);

        cmd = ngx_alloc(sizeof(ngx_tiktok_reports_store_cmd_t)
                        + argc * (sizeof(char *) + sizeof(size_t))
                        + count * sizeof(ngx_uint_t) + NGX_INT64_LEN * 3
                        + size,
                        ngx_cycle->log);
        if (cmd == NULL) {
            return NGX_ERROR;
        }

        cmd->argv = (const char **) &cmd[1];
        cmd->argvlen = (size_t *) &cmd->argv[argc];
        cmd->indices = (ngx_uint_t *) &cmd->argvlen[argc];
        cmd->n = count;
        cmd->done = done;
        cmd->data = data;
        cmd->timeout = limits->timeout;
        cmd->index = 0;
        cmd->retried = 0;
        cmd->raw = 0;
        cmd->argc = 0;

        p = (u_char *) &cmd->indices[count];

        /* EVALSHA sha numkeys, KEYS[1] <prefix>events */
        ngx_tiktok_reports_store_ref(cmd, (u_char *) "EVALSHA", 7);
        ngx_tiktok_reports_store_ref(cmd, ngx_tiktok_reports_script_sha, 40);
        start = p;
        p = ngx_sprintf(p, "%uz", count + 1);
        ngx_tiktok_reports_store_ref(cmd, start, p - start);
        ngx_tiktok_reports_store_ref(cmd, opts->events.data,
                                     opts->events.len);

        /* the reports' keys go at 4 + j: ARGV starts after them */
        cmd->argc += count;

        /* ARGV[1] now, ARGV[2] ttl, ARGV[3] feed length */
        start = p;
        p = ngx_sprintf(p, "%L", now);
        ngx_tiktok_reports_store_ref(cmd, start, p - start);
        ngx_tiktok_reports_store_ref(cmd, opts->ttl.data, opts->ttl.len);
        ngx_tiktok_reports_store_ref(cmd, opts->maxlen.data,
                                     opts->maxlen.len);

        /*
         * ARGV[4] the database: commands pipelined behind a SELECT that
         * Redis refuses would run in database 0, so the script selects it
         */
        start = p;

        if (store->conf.db) {
            p = ngx_sprintf(p, "%i", store->conf.db);
        }

        ngx_tiktok_reports_store_ref(cmd, start, p - start);

        for (i = first, j = 0; i < last; i++) {
            if (res[i].error) {
                continue;
            }

            cmd->indices[j] = i;
            p = ngx_tiktok_reports_store_report(cmd, j, p, opts, now,
                                                &res[i]);
            j++;
        }

        /*
         * A single Redis takes any keys in one call; a cluster-aware store
         * will group a call's reports by slot and pick the node here.
         */

        cmd->node = ngx_tiktok_reports_store_node(store,
                                                  (u_char *) cmd->argv[4],
                                                  cmd->argvlen[4]);

        if (ngx_tiktok_reports_store_send(cmd, cmd->argc, cmd->argv,
                                          cmd->argvlen)
            != NGX_OK)
        {
            ngx_free(cmd);
            return NGX_ERROR;
        }

        *sent += count;
    }
}


ngx_int_t
ngx_tiktok_reports_store_command(ngx_tiktok_reports_store_t *store,
    u_char *key, size_t key_len, ngx_tiktok_reports_store_done_pt done,
    void *data, ngx_uint_t index, ngx_msec_t timeout, int argc,
    const char **argv, const size_t *argvlen)
{
    ngx_tiktok_reports_store_cmd_t  *cmd;

    cmd = ngx_alloc(sizeof(ngx_tiktok_reports_store_cmd_t), ngx_cycle->log);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->node = ngx_tiktok_reports_store_node(store, key, key_len);
    cmd->done = done;
    cmd->data = data;
    cmd->timeout = timeout;
    cmd->index = index;
    cmd->indices = NULL;
    cmd->n = 1;
    cmd->retried = 0;
    cmd->raw = 1;
    cmd->argc = 0;
    cmd->argv = NULL;
    cmd->argvlen = NULL;

    /* hiredis copies the arguments at once; a raw command is never resent */
    if (ngx_tiktok_reports_store_send(cmd, argc, argv, argvlen) != NGX_OK) {
        ngx_free(cmd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The owner learns every report's outcome; the last call may free "data",
 * so nothing of it is touched after.  A failed call fails all its reports;
 * it wrote none of them, but for what the script cannot check beforehand.
 */

static void
ngx_tiktok_reports_store_finish(ngx_tiktok_reports_store_cmd_t *cmd,
    ngx_int_t rc, redisReply *rr)
{
    ngx_uint_t   j;
    redisReply  *e;

    if (cmd->raw) {
        cmd->done(cmd->data, cmd->index, rc, rr);
        ngx_free(cmd);
        return;
    }

    for (j = 0; j < cmd->n; j++) {
        e = (rc == NGX_OK) ? rr->element[j] : NULL;

        cmd->done(cmd->data, cmd->indices[j],
                  e == NULL ? NGX_ERROR
                  : e->integer < 0 ? NGX_ABORT
                  : e->integer == 0 ? NGX_DECLINED : NGX_OK,
                  e ? e : rr);
    }

    ngx_free(cmd);
}


/*
 * A command's owner is the request's wait object: once its answer is out
 * (the timeout, or the client left), nobody needs the command sent.
 */

static ngx_uint_t
ngx_tiktok_reports_store_wanted(void *data)
{
    ngx_tiktok_reports_store_cmd_t  *cmd = data;

    ngx_tiktok_reports_wait_t  *w;

    w = cmd->data;

    return w->request != NULL && !w->answered;
}


static void
ngx_tiktok_reports_store_reply(ngx_tiktok_reports_node_t *node,
    redisReply *rr, void *data)
{
    size_t                           j;
    ngx_int_t                        rc;
    ngx_uint_t                       noscript;
    ngx_tiktok_reports_store_cmd_t  *cmd = data;

    if (rr == NULL) {
        /* the connection went away, or its handshake was refused */
        ngx_tiktok_reports_metrics_redis_error(0);
        ngx_tiktok_reports_store_finish(cmd, NGX_ERROR, NULL);
        return;
    }

    ngx_tiktok_reports_metrics_rtt(ngx_tiktok_reports_usec() - cmd->sent);

    noscript = (rr->type == REDIS_REPLY_ERROR && !cmd->raw && !cmd->retried
                && rr->len >= 8 && ngx_strncmp(rr->str, "NOSCRIPT", 8) == 0);

    if (noscript) {
        /* the script cache was flushed: EVAL sends it and caches it again */

        ngx_log_error(NGX_LOG_NOTICE, node->log, 0,
                      "tiktok_reports: redis %V lost the script, reloading",
                      &node->conf->name);

        cmd->retried = 1;
        cmd->argv[0] = "EVAL";
        cmd->argvlen[0] = 4;
        cmd->argv[1] = ngx_tiktok_reports_script;
        cmd->argvlen[1] = ngx_tiktok_reports_script_str.len;

        if (ngx_tiktok_reports_store_send(cmd, cmd->argc, cmd->argv,
                                          cmd->argvlen)
            == NGX_OK)
        {
            return;
        }

        ngx_tiktok_reports_store_finish(cmd, NGX_ERROR, rr);
        return;
    }

    if (cmd->raw && rr->type == REDIS_REPLY_ERROR
        && rr->len >= 9 && ngx_strncmp(rr->str, "WRONGTYPE", 9) == 0)
    {
        /* as in the script: the key holds another type, not a store error */
        rc = NGX_ABORT;

    } else if (rr->type == REDIS_REPLY_ERROR) {
        ngx_tiktok_reports_metrics_redis_error(0);
        rc = NGX_ERROR;

    } else {
        rc = NGX_OK;
    }

    if (!cmd->raw) {
        /* one integer per report, or the call failed as a whole */

        rc = (rr->type == REDIS_REPLY_ARRAY && rr->elements == cmd->n)
             ? NGX_OK : NGX_ERROR;

        for (j = 0; rc == NGX_OK && j < rr->elements; j++) {
            if (rr->element[j]->type != REDIS_REPLY_INTEGER) {
                rc = NGX_ERROR;
            }
        }

        if (rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_ERR, node->log, 0,
                          "tiktok_reports: redis transition failed: %*s",
                          rr->type == REDIS_REPLY_ERROR ? (size_t) rr->len : 0,
                          rr->type == REDIS_REPLY_ERROR ? rr->str : "");
        }
    }

    if (rc == NGX_OK && !cmd->raw && node->conf->wait_replicas) {
        /* the outcomes count once the WAIT behind the call says so */
        if (ngx_tiktok_reports_store_hold(cmd, rr) == NGX_OK) {
            return;
        }

        rc = NGX_ERROR;
    }

    ngx_tiktok_reports_store_finish(cmd, rc, rr);
}


/* the call's outcomes wait in the command for its WAIT's reply */

static ngx_int_t
ngx_tiktok_reports_store_hold(ngx_tiktok_reports_store_cmd_t *cmd,
    redisReply *rr)
{
    ngx_uint_t   j;
    redisReply  *e;

    cmd->codes = ngx_alloc(cmd->n * sizeof(ngx_int_t), ngx_cycle->log);
    if (cmd->codes == NULL) {
        return NGX_ERROR;
    }

    for (j = 0; j < cmd->n; j++) {
        e = rr->element[j];
        cmd->codes[j] = e->integer < 0 ? NGX_ABORT
                        : e->integer == 0 ? NGX_DECLINED : NGX_OK;
    }

    cmd->hold.handler = ngx_tiktok_reports_store_waited;
    cmd->hold.data = cmd;

    if (ngx_tiktok_reports_node_hold(cmd->node, &cmd->hold) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, cmd->node->log, 0,
                      "tiktok_reports: redis %V: no WAIT follows a write",
                      &cmd->node->conf->name);
        ngx_free(cmd->codes);
        cmd->codes = NULL;
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * WAIT replied (or the connection was lost): the held outcomes count only
 * if enough replicas have the writes; the reply is gone by now (NULL).
 */

static void
ngx_tiktok_reports_store_waited(void *data, ngx_int_t rc)
{
    ngx_tiktok_reports_store_cmd_t  *cmd = data;

    ngx_uint_t  j;

    for (j = 0; j < cmd->n; j++) {
        cmd->done(cmd->data, cmd->indices[j],
                  rc == NGX_OK ? cmd->codes[j] : NGX_ERROR, NULL);
    }

    ngx_free(cmd->codes);
    ngx_free(cmd);
}
