
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
 * KEYS[1] the message hash, KEYS[2] the change feed.
 * ARGV: 1 kind ("d" or "s"), 2 status group, 3 event identity (the start
 * of its timeline line), 4 the rest of that line, 5 now (ms), 6 ttl (s,
 * "0" never), 7 feed maxlen ("0" off), 8 messageId, 9 callbackData, 10 raw
 * report (both "" when absent), 11 event time as sent (doneAt or seenAt),
 * and for deliveries 12 statusName, 13 errorName, 14 errorPermanent,
 * 15 doneAt in ms ("" when unreadable).
 * Returns 0 duplicate, 1 stored, 2 stored and status changed.
 *
 * The "dg" field keeps the group and instant of the report that holds the
 * delivery details, so that same-rank reports compare without parsing.
 * A message's first report, the common case, takes the short branch: all
 * its fields in one table built at once, no ranks to compare.
 * A timeline line starts with the event identity and a JSON-escaped
 * string cannot contain '{"kind":', so a plain find is an exact test.
 */

static char ngx_tiktok_reports_script[] =
"local k = KEYS[1]\n"
"local cur = redis.call('HMGET', k, 'status', 'timeline', 'dg', 'seenAt')\n"
"local old = cur[1]\n"
"local tl = cur[2]\n"
"local g = ARGV[2]\n"
"local d = ARGV[1] == 'd'\n"
"local new = g\n"
"local f\n"
"local n\n"
"if not old and not tl then\n"
"  if d then\n"
"    f = {'timeline', ARGV[3] .. ARGV[4], 'updatedAt', ARGV[5], 'status', g,\n"
"         'statusName', ARGV[12], 'errorName', ARGV[13],\n"
"         'errorPermanent', ARGV[14], 'doneAt', ARGV[11],\n"
"         'dg', g .. ':' .. ARGV[15], 'delivery', ARGV[10]}\n"
"  else\n"
"    f = {'timeline', ARGV[3] .. ARGV[4], 'updatedAt', ARGV[5], 'status', g,\n"
"         'seenAt', ARGV[11], 'seen', ARGV[10]}\n"
"  end\n"
"  n = #f\n"
"  if ARGV[10] == '' then n = n - 2 end\n"
"else\n"
"  if tl and string.find(tl, ARGV[3], 1, true) then return 0 end\n"
"  local function rank(s)\n"
"    if s == 'SEEN' then return 4 end\n"
"    if s == 'DELIVERED' then return 3 end\n"
"    if s == 'UNDELIVERABLE' or s == 'EXPIRED' or s == 'REJECTED' then\n"
"      return 2\n"
"    end\n"
"    if s == 'PENDING' then return 1 end\n"
"    return 0\n"
"  end\n"
"  local r = rank(g)\n"
"  local line = ARGV[3] .. ARGV[4]\n"
"  if tl then line = tl .. '\\n' .. line end\n"
"  f = {'timeline', line, 'updatedAt', ARGV[5]}\n"
"  n = 4\n"
"  if r > rank(old) then\n"
"    f[5] = 'status'; f[6] = g; n = 6\n"
"  else\n"
"    new = old\n"
"  end\n"
"  if d then\n"
"    local take = true\n"
"    local dg = cur[3]\n"
"    if dg then\n"
"      local sep = string.find(dg, ':', 1, true)\n"
"      local dgrp = string.sub(dg, 1, sep - 1)\n"
"      local dr = rank(dgrp)\n"
"      if r ~= dr then\n"
"        take = r > dr\n"
"      else\n"
"        local a = tonumber(ARGV[15])\n"
"        local b = tonumber(string.sub(dg, sep + 1))\n"
"        take = dgrp == g and a ~= nil and (b == nil or a > b)\n"
"      end\n"
"    end\n"
"    if take then\n"
"      f[n + 1] = 'statusName'; f[n + 2] = ARGV[12]\n"
"      f[n + 3] = 'errorName'; f[n + 4] = ARGV[13]\n"
"      f[n + 5] = 'errorPermanent'; f[n + 6] = ARGV[14]\n"
"      f[n + 7] = 'doneAt'; f[n + 8] = ARGV[11]\n"
"      f[n + 9] = 'dg'; f[n + 10] = g .. ':' .. ARGV[15]\n"
"      n = n + 10\n"
"      if ARGV[10] ~= '' then\n"
"        f[n + 1] = 'delivery'; f[n + 2] = ARGV[10]; n = n + 2\n"
"      end\n"
"    end\n"
"  elseif not cur[4] then\n"
"    f[n + 1] = 'seenAt'; f[n + 2] = ARGV[11]; n = n + 2\n"
"    if ARGV[10] ~= '' then\n"
"      f[n + 1] = 'seen'; f[n + 2] = ARGV[10]; n = n + 2\n"
"    end\n"
"  end\n"
"end\n"
"if ARGV[9] ~= '' then\n"
"  f[n + 1] = 'callbackData'; f[n + 2] = ARGV[9]; n = n + 2\n"
"end\n"
"redis.call('HSET', k, unpack(f, 1, n))\n"
"if ARGV[6] ~= '0' then redis.call('EXPIRE', k, ARGV[6]) end\n"
"if new == old then return 1 end\n"
"if ARGV[7] ~= '0' then\n"
"  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*',\n"
"             'messageId', ARGV[8], 'status', g, 'previous', old or '',\n"
"             'at', ARGV[11])\n"
"end\n"
"return 2\n";


#define NGX_TIKTOK_REPORTS_ARGS  20


typedef struct {
    ngx_tiktok_reports_node_t         *node;
    ngx_tiktok_reports_store_done_pt   done;
    void                              *data;
    ngx_uint_t                         index;
    ngx_msec_t                         sent;       /* us, for the RTT */
    int                                argc;
    unsigned                           retried:1;  /* sent again as EVAL */
    unsigned                           raw:1;      /* not a transition */
    const char                        *argv[NGX_TIKTOK_REPORTS_ARGS];
    size_t                             argvlen[NGX_TIKTOK_REPORTS_ARGS];
} ngx_tiktok_reports_store_cmd_t;


static void ngx_tiktok_reports_store_reply(redisAsyncContext *ac,
    void *reply, void *data);


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

        if (store->conf.db == conf->db
            && ngx_tiktok_reports_store_same(&store->conf.name, &conf->name)
            && ngx_tiktok_reports_store_same(&store->conf.user, &conf->user)
            && ngx_tiktok_reports_store_same(&store->conf.password,
                                             &conf->password))
        {
            if (conf->timeout < store->conf.timeout) {
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
    cmd->sent = ngx_tiktok_reports_usec();

    if (ngx_tiktok_reports_node_command(cmd->node,
                                        ngx_tiktok_reports_store_reply,
                                        cmd, argc, argv, argvlen)
        != NGX_OK)
    {
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


ngx_int_t
ngx_tiktok_reports_store_transition(ngx_tiktok_reports_store_t *store,
    ngx_tiktok_reports_store_opts_t *opts, int64_t now,
    ngx_tiktok_reports_result_t *res, ngx_tiktok_reports_store_done_pt done,
    void *data, ngx_uint_t index)
{
    size_t                           size;
    u_char                          *p, *key, *start;
    ngx_str_t                       *group;
    ngx_uint_t                       delivery;
    ngx_tiktok_reports_str_t        *at;
    ngx_tiktok_reports_store_cmd_t  *cmd;

    static ngx_str_t  seen = ngx_string("SEEN");

    delivery = (res->kind == NGX_TIKTOK_REPORTS_KIND_DELIVERY);

    if (delivery) {
        group = &ngx_tiktok_reports_group_names[res->group];
        at = &res->done_at;

    } else {
        group = &seen;
        at = &res->seen_at;
    }

    /*
     * One block holds the command, its argv and the bytes of the arguments
     * built or copied here; the fixed parts (names, numbers, punctuation)
     * fit in 256 bytes.
     */

    size = sizeof(ngx_tiktok_reports_store_cmd_t) + 256
           + opts->prefix.len + res->message_id.len + res->status_id.len
           + ngx_tiktok_reports_store_json_len(at)
           + ngx_tiktok_reports_store_json_len(&res->status_name)
           + at->len + res->callback_data.len + res->raw.len
           + res->status_name.len + res->error_name.len;

    cmd = ngx_alloc(size, ngx_cycle->log);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->done = done;
    cmd->data = data;
    cmd->index = index;
    cmd->retried = 0;
    cmd->raw = 0;
    cmd->argc = 0;

    p = (u_char *) cmd + sizeof(ngx_tiktok_reports_store_cmd_t);

    ngx_tiktok_reports_store_ref(cmd, (u_char *) "EVALSHA", 7);
    ngx_tiktok_reports_store_ref(cmd, ngx_tiktok_reports_script_sha, 40);
    ngx_tiktok_reports_store_ref(cmd, (u_char *) "2", 1);

    /* KEYS[1] <prefix>msg:{<messageId>}, KEYS[2] <prefix>events */
    key = p;
    p = ngx_cpymem(p, opts->prefix.data, opts->prefix.len);
    p = ngx_cpymem(p, "msg:{", 5);
    p = ngx_cpymem(p, res->message_id.data, res->message_id.len);
    *p++ = '}';
    ngx_tiktok_reports_store_ref(cmd, key, p - key);
    ngx_tiktok_reports_store_ref(cmd, opts->events.data, opts->events.len);

    /* ARGV[1] kind, ARGV[2] status group */
    ngx_tiktok_reports_store_ref(cmd, (u_char *) (delivery ? "d" : "s"), 1);
    ngx_tiktok_reports_store_ref(cmd, group->data, group->len);

    /* ARGV[3]: the event identity, the start of its timeline line */
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

    /* ARGV[4]: the rest of the line */
    start = p;
    p = ngx_sprintf(p, "\"status\":\"%V\"", group);

    if (delivery) {
        p = ngx_cpymem(p, ",\"statusName\":", 14);
        p = ngx_tiktok_reports_store_json(p, &res->status_name);
    }

    p = ngx_sprintf(p, ",\"receivedAt\":%L}", now);
    ngx_tiktok_reports_store_ref(cmd, start, p - start);

    /* ARGV[5] now, ARGV[6] ttl, ARGV[7] feed length */
    start = p;
    p = ngx_sprintf(p, "%L", now);
    ngx_tiktok_reports_store_ref(cmd, start, p - start);
    ngx_tiktok_reports_store_ref(cmd, opts->ttl.data, opts->ttl.len);
    ngx_tiktok_reports_store_ref(cmd, opts->maxlen.data, opts->maxlen.len);

    /* ARGV[8] messageId (inside KEYS[1]), 9 callbackData, 10 raw, 11 at */
    ngx_tiktok_reports_store_ref(cmd, key + opts->prefix.len + 5,
                                 res->message_id.len);
    p = ngx_tiktok_reports_store_copy(cmd, p, res->callback_data.data,
                                      res->callback_data.len);
    p = ngx_tiktok_reports_store_copy(cmd, p, res->raw.data, res->raw.len);
    p = ngx_tiktok_reports_store_copy(cmd, p, at->data, at->len);

    if (delivery) {
        /* 12 statusName, 13 errorName, 14 errorPermanent, 15 doneAt in ms */
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
    }

    cmd->node = ngx_tiktok_reports_store_node(store, key,
                                              opts->prefix.len + 6
                                              + res->message_id.len);

    if (ngx_tiktok_reports_store_send(cmd, cmd->argc, cmd->argv,
                                      cmd->argvlen)
        != NGX_OK)
    {
        ngx_free(cmd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_tiktok_reports_store_command(ngx_tiktok_reports_store_t *store,
    u_char *key, size_t key_len, ngx_tiktok_reports_store_done_pt done,
    void *data, ngx_uint_t index, int argc, const char **argv,
    const size_t *argvlen)
{
    ngx_tiktok_reports_store_cmd_t  *cmd;

    cmd = ngx_alloc(sizeof(ngx_tiktok_reports_store_cmd_t), ngx_cycle->log);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->node = ngx_tiktok_reports_store_node(store, key, key_len);
    cmd->done = done;
    cmd->data = data;
    cmd->index = index;
    cmd->retried = 0;
    cmd->raw = 1;
    cmd->argc = 0;

    /* hiredis copies the arguments at once; a raw command is never resent */
    if (ngx_tiktok_reports_store_send(cmd, argc, argv, argvlen) != NGX_OK) {
        ngx_free(cmd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_tiktok_reports_store_reply(redisAsyncContext *ac, void *reply, void *data)
{
    redisReply                      *rr;
    ngx_int_t                        rc;
    ngx_uint_t                       noscript;
    ngx_tiktok_reports_node_t       *node;
    ngx_tiktok_reports_store_cmd_t  *cmd = data;

    node = ac->data;
    rr = ngx_tiktok_reports_node_replied(ac, reply);

    if (rr == NULL) {
        /* the connection went away, or its handshake was refused */
        ngx_tiktok_reports_metrics_redis_error(0);
        cmd->done(cmd->data, cmd->index, NGX_ERROR, NULL);
        ngx_free(cmd);
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

        cmd->done(cmd->data, cmd->index, NGX_ERROR, rr);
        ngx_free(cmd);
        return;
    }

    if (rr->type == REDIS_REPLY_ERROR) {
        ngx_tiktok_reports_metrics_redis_error(0);
    }

    if (cmd->raw) {
        rc = (rr->type == REDIS_REPLY_ERROR) ? NGX_ERROR : NGX_OK;

    } else if (rr->type == REDIS_REPLY_INTEGER) {
        rc = (rr->integer == 0) ? NGX_DECLINED : NGX_OK;

    } else {
        rc = NGX_ERROR;

        ngx_log_error(NGX_LOG_ERR, node->log, 0,
                      "tiktok_reports: redis transition failed: %*s",
                      rr->type == REDIS_REPLY_ERROR ? (size_t) rr->len : 0,
                      rr->type == REDIS_REPLY_ERROR ? rr->str : "");
    }

    cmd->done(cmd->data, cmd->index, rc, rr);
    ngx_free(cmd);
}
