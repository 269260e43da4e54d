
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
 * KEYS[1] is the first report's message hash, the only key declared: on
 * Redis Cluster the declared keys of a call must share a slot, and a call
 * carries the reports of one node, whose other keys it reaches undeclared
 * (the "allow-cross-slot-keys" flag of the cluster's copy of the script).
 * ARGV: 1 now (ms), 2 ttl (s, "0" never), 3 feed maxlen ("0" off), 4 the
 * database ("" for 0), 5 flags: "c" when the feed is written after the
 * call (a cluster), "l" when events are lines of "timeline" as an older
 * version writes them (tiktok_reports_timeline lines), then fifteen per
 * report: its message hash, kind ("d"
 * or "s"), status group, the event as a line of the older timeline form
 * (its start: to find it in a hash an older version wrote), the event's
 * field, messageId, callbackData, raw report (both "" when absent), event
 * time as sent (doneAt or seenAt), for deliveries statusName, errorName,
 * errorPermanent, doneAt in ms ("" when unreadable; all four "" for
 * seen), its partition of the feed, and the event's value but for its
 * number (with "l": the rest of its line).
 *
 * Each event is a field of its own, named by what identifies it ("@d5
 * 2023-09-26T10:52:15.799+0000", "@s <seenAt>"), valued "<n>|<status
 * group's letter>|<receivedAt>[|<statusName>]", n counting the message's
 * events ("te" holds the last): a duplicate is one field read, and short
 * values keep the hash in Redis's compact encoding (listpack), about half
 * the memory of one long timeline value.  A hash an older version wrote
 * keeps its "timeline" lines; new events go to fields beside them, and
 * both are searched for a duplicate.
 * Returns one code per report: 0 duplicate, 1 stored, 2 stored and status
 * changed, -1 not stored: the key holds another type than a hash.  That
 * one report is refused instead of failing the call, or its body would be
 * retried forever; any other error fails the call.
 *
 * "seq" counts a message's changes of status, "sqs" is the status it was
 * counted at.  A hash an older version wrote has no "seq", and one it
 * changed since (a rolling upgrade) has "sqs" behind "status": the count
 * starts again from the changes its timeline shows.  Ranks only rise, so
 * a message changes at most four times.
 *
 * On a cluster the feed's partition may live on another node: its
 * argument is then "" and a change is kept as unpublished in field
 * "q<seq>" ("STATUS PREVIOUS AT"), and the report's
 * code comes back as {code, seq, entry, ...} with every unpublished change
 * of the message, also for a duplicate; the module adds them to the feed,
 * then deletes the fields.  A partition on the message's own node gets its
 * entry in the call (its XADD failing, as when the slot moved meanwhile,
 * makes it a "q<seq>" too).  (A script adding a call's changes on their
 * node cost Redis more than the commands on their own: in a cluster each
 * command a script calls is checked for its slot.)  A report whose key
 * this node does not serve (a slot moving, or moved, or the cluster down)
 * gets -2 and nothing is written for it.
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
"local later = string.find(ARGV[5], 'c', 1, true)\n"
"local lines = string.find(ARGV[5], 'l', 1, true)\n"
"if ARGV[4] ~= '' then redis.call('SELECT', ARGV[4]) end\n"
"if ttl ~= '0' and (#ttl > 16 or #ttl == 16 and ttl > '9000000000000000')\n"
"then\n"
"  return redis.error_reply('ERR tiktok_reports_ttl is too large for EXPIRE')\n"
"end\n"
"local R = 15\n"
"local acl = redis.acl_check_cmd\n"
"if acl and ttl ~= '0' and not acl('EXPIRE', KEYS[1]) then\n"
"  return redis.error_reply('NOPERM the user may not EXPIRE message keys')\n"
"end\n"
"if maxlen ~= '0' and not later then\n"
"  local seen = {}\n"
"  for a = 6 + 13, #ARGV, R do\n"
"    local fk = ARGV[a]\n"
"    if not seen[fk] then\n"
"      seen[fk] = true\n"
"      local t = redis.call('TYPE', fk)['ok']\n"
"      if t ~= 'stream' and t ~= 'none' then\n"
"        return redis.error_reply('WRONGTYPE the change feed holds a ' .. t\n"
"                                 .. ', not a stream')\n"
"      end\n"
"      if acl and not acl('XADD', fk) then\n"
"        return redis.error_reply('NOPERM the user may not XADD to the feed')\n"
"      end\n"
"    end\n"
"  end\n"
"end\n"
"local SEQ = {'1', '2', '3', '4'}\n"
"local G = {P = 'PENDING', U = 'UNDELIVERABLE', D = 'DELIVERED',\n"
"           E = 'EXPIRED', R = 'REJECTED', S = 'SEEN'}\n"
"local function changes(k, tl)\n"
"  local ev = {}\n"
"  if tl then\n"
"    for s, t in string.gmatch(tl, '\"status\":\"(%u+)\"[^\\n]-\"receivedAt\":(%d+)')\n"
"    do\n"
"      ev[#ev + 1] = {tonumber(t), 0, rank(s)}\n"
"    end\n"
"  end\n"
"  local h = redis.call('HGETALL', k)\n"
"  for i = 1, #h, 2 do\n"
"    if string.byte(h[i]) == 64 then\n"
"      local n, c, t = string.match(h[i + 1], '^(%d+)|(%u)|(%d+)')\n"
"      if n then ev[#ev + 1] = {tonumber(t), tonumber(n), rank(G[c])} end\n"
"    end\n"
"  end\n"
"  table.sort(ev, function(x, y)\n"
"    return x[1] < y[1] or x[1] == y[1] and x[2] < y[2]\n"
"  end)\n"
"  local n, best = 0, 0\n"
"  for i = 1, #ev do\n"
"    if ev[i][3] > best then best = ev[i][3]; n = n + 1 end\n"
"  end\n"
"  return n\n"
"end\n"
"local function queued(cur, code)\n"
"  if maxlen == '0' then return code end\n"
"  local q = {code}\n"
"  for s = 1, 4 do\n"
"    if cur[8 + s] then q[#q + 1] = s; q[#q + 1] = cur[8 + s] end\n"
"  end\n"
"  if #q == 1 then return code end\n"
"  return q\n"
"end\n"
"local function transition(a)\n"
"  local k, g, raw, ev = ARGV[a], ARGV[a + 2], ARGV[a + 7], ARGV[a + 4]\n"
"  local ok, cur\n"
"  if later then\n"
"    ok, cur = pcall(redis.call, 'HMGET', k, 'status', ev, 'dg', 'seenAt',\n"
"                    'seq', 'sqs', 'te', 'timeline', 'q1', 'q2', 'q3', 'q4')\n"
"  else\n"
"    ok, cur = pcall(redis.call, 'HMGET', k, 'status', ev, 'dg', 'seenAt',\n"
"                    'seq', 'sqs', 'te', 'timeline')\n"
"  end\n"
"  if not ok then\n"
"    local e = type(cur) == 'table' and cur.err or tostring(cur)\n"
"    if string.find(e, 'WRONGTYPE', 1, true) then return -1 end\n"
"    if later and (string.find(e, 'non local key', 1, true)\n"
"                  or string.find(e, 'cluster is down', 1, true)) then\n"
"      return -2\n"
"    end\n"
"    error(cur)\n"
"  end\n"
"  local old, tl = cur[1], cur[8]\n"
"  if cur[2] or tl and string.find(tl, ARGV[a + 3], 1, true) then\n"
"    if later then return queued(cur, 0) end\n"
"    return 0\n"
"  end\n"
"  local r = rank(g)\n"
"  local f, n\n"
"  if lines then\n"
"    local line = ARGV[a + 3] .. ARGV[a + 14]\n"
"    if tl then line = tl .. '\\n' .. line end\n"
"    f = {'timeline', line, 'updatedAt', now}\n"
"    n = 4\n"
"  else\n"
"    local te = cur[7] and tostring(tonumber(cur[7]) + 1) or '1'\n"
"    f = {ev, te .. '|' .. ARGV[a + 14], 'te', te, 'updatedAt', now,\n"
"         nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,\n"
"         nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}\n"
"    n = 6\n"
"  end\n"
"  local seq\n"
"  if r > rank(old) then\n"
"    if cur[5] and (not cur[6] or cur[6] == old) then seq = tonumber(cur[5]) end\n"
"    if not seq then seq = old and changes(k, tl) or 0 end\n"
"    seq = SEQ[seq + 1] or tostring(seq + 1)\n"
"    f[n + 1] = 'status'; f[n + 2] = g; f[n + 3] = 'seq'; f[n + 4] = seq\n"
"    n = n + 4\n"
"    if lines or cur[6] then\n"
"      f[n + 1] = 'sqs'; f[n + 2] = g; n = n + 2\n"
"    end\n"
"    if later and maxlen ~= '0'\n"
"       and (ARGV[a + 13] == '' or cur[9] or cur[10] or cur[11] or cur[12])\n"
"    then\n"
"      local e = g .. ' ' .. (old or '') .. ' ' .. ARGV[a + 8]\n"
"      f[n + 1] = 'q' .. seq; f[n + 2] = e; n = n + 2\n"
"      cur[8 + tonumber(seq)] = e\n"
"    end\n"
"  end\n"
"  if ARGV[a + 1] == 'd' then\n"
"    local take = true\n"
"    local dg = cur[3]\n"
"    local sep = dg and string.find(dg, ':', 1, true)\n"
"    if sep then\n"
"      local dgrp = string.sub(dg, 1, sep - 1)\n"
"      if sep == 2 then dgrp = G[dgrp] end\n"
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
"      f[n + 9] = 'dg'\n"
"      f[n + 10] = (lines and g or string.sub(ARGV[a + 14], 1, 1)) .. ':'\n"
"                  .. ARGV[a + 12]\n"
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
"  if later then\n"
"    if seq and maxlen ~= '0' and ARGV[a + 13] ~= ''\n"
"       and not cur[8 + tonumber(seq)]\n"
"    then\n"
"      if not pcall(redis.call, 'XADD', ARGV[a + 13], 'MAXLEN', '~', maxlen,\n"
"                   '*', 'messageId', ARGV[a + 5], 'status', g,\n"
"                   'previous', old or '', 'at', ARGV[a + 8], 'seq', seq)\n"
"      then\n"
"        local e = g .. ' ' .. (old or '') .. ' ' .. ARGV[a + 8]\n"
"        redis.call('HSET', k, 'q' .. seq, e)\n"
"        cur[8 + tonumber(seq)] = e\n"
"      end\n"
"    end\n"
"    return queued(cur, seq and 2 or 1)\n"
"  end\n"
"  if not seq then return 1 end\n"
"  if maxlen ~= '0' then\n"
"    redis.call('XADD', ARGV[a + 13], 'MAXLEN', '~', maxlen, '*',\n"
"               'messageId', ARGV[a + 5], 'status', g,\n"
"               'previous', old or '', 'at', ARGV[a + 8], 'seq', seq)\n"
"  end\n"
"  return 2\n"
"end\n"
"local out, i = {}, 0\n"
"for a = 6, #ARGV, R do\n"
"  i = i + 1\n"
"  out[i] = transition(a)\n"
"end\n"
"return out\n";


/* reports per call: Redis's cost per report stops falling at about 100 */
#define NGX_TIKTOK_REPORTS_BATCH  100

/* a report's arguments in a call, and the fixed ones before them */
#define NGX_TIKTOK_REPORTS_REPORT_ARGS  15
#define NGX_TIKTOK_REPORTS_HEAD_ARGS    9

/* redirects and retries of one cluster command, and their backoff */
#define NGX_TIKTOK_REPORTS_TRIES        16
#define NGX_TIKTOK_REPORTS_RETRY_MIN    10
#define NGX_TIKTOK_REPORTS_RETRY_MAX    200

/* what a command is */
#define NGX_TIKTOK_REPORTS_CMD_TRANSITION  0
#define NGX_TIKTOK_REPORTS_CMD_RAW         1  /* the owner gets the reply */
#define NGX_TIKTOK_REPORTS_CMD_FEED        2  /* an unpublished change */
#define NGX_TIKTOK_REPORTS_CMD_PUBLISHED   3  /* its fields deleted */

/* a report's outcome handed to a command of its own */
#define NGX_TIKTOK_REPORTS_RESENT  NGX_DONE


/*
 * On a cluster, a report whose change waits for the feed: its outcome
 * goes to the owner once every unpublished change is in the feed.
 */
typedef struct {
    ngx_tiktok_reports_store_t        *store;
    ngx_tiktok_reports_store_done_pt   done;
    void                              *data;
    ngx_uint_t                         index;
    ngx_int_t                          code;
    ngx_msec_t                         timeout;
    ngx_uint_t                         pending;    /* XADDs */
    ngx_uint_t                         failed;
    ngx_uint_t                         n;          /* changes */
    ngx_uint_t                         seq[4];
    ngx_str_t                          entry[4];   /* "STATUS PREV AT" */
    ngx_str_t                          key;
    ngx_str_t                          id;         /* messageId */
    ngx_str_t                          feed;       /* its partition */
    ngx_str_t                          maxlen;
} ngx_tiktok_reports_store_pub_t;


/* who learns a report's outcome: a call may carry several requests' */
typedef struct {
    ngx_tiktok_reports_store_done_pt   done;
    void                              *data;       /* the wait object */
    ngx_uint_t                         index;
} ngx_tiktok_reports_store_owner_t;


typedef struct ngx_tiktok_reports_store_cmd_s  ngx_tiktok_reports_store_cmd_t;

struct ngx_tiktok_reports_store_cmd_s {
    ngx_tiktok_reports_store_t        *store;
    ngx_tiktok_reports_node_t         *node;
    ngx_tiktok_reports_store_done_pt   done;
    void                              *data;
    ngx_uint_t                         index;      /* raw: the owner's */
    ngx_tiktok_reports_store_owner_t  *owners;     /* each report's */
    ngx_tiktok_reports_store_owner_t   owner;      /* a call of one */
    ngx_tiktok_reports_store_cmd_t    *next;       /* waiting, or merged */
    ngx_tiktok_reports_store_cmd_t    *parts;      /* calls merged here */
    ngx_uint_t                         n;          /* reports in the call */
    ngx_msec_t                         sent;       /* us, for the RTT */
    ngx_msec_t                         timeout;    /* the owner's */
    ngx_uint_t                         slot;       /* cluster: the key's */
    ngx_uint_t                         tries;
    ngx_tiktok_reports_node_t         *ask;        /* ASK: sent there once */
    ngx_event_t                        retry;      /* cluster: backoff */
    ngx_queue_t                        queue;      /* in store->parked */
    int                                argc;
    unsigned                           kind:2;
    unsigned                           retried:1;  /* sent again as EVAL */
    unsigned                           copied:1;   /* every argument inside */
    unsigned                           asked:1;    /* sent after ASKING */
    const char                       **argv;
    size_t                            *argvlen;
    ngx_tiktok_reports_node_hold_t     hold;       /* for the WAIT */
    ngx_int_t                         *codes;      /* outcomes */
    ngx_tiktok_reports_store_pub_t   **pubs;       /* cluster: per report */
    ngx_tiktok_reports_store_pub_t    *pub;        /* FEED: its report's */
    ngx_tiktok_reports_store_opts_t   *opts;       /* a transition's */
};


static ngx_int_t ngx_tiktok_reports_store_send(
    ngx_tiktok_reports_store_cmd_t *cmd);
static void ngx_tiktok_reports_store_wait(ngx_tiktok_reports_store_t *store,
    ngx_tiktok_reports_store_cmd_t *cmd);
static void ngx_tiktok_reports_store_join_handler(ngx_event_t *ev);
static void ngx_tiktok_reports_store_join(ngx_tiktok_reports_store_t *store);
static void ngx_tiktok_reports_store_reply(ngx_tiktok_reports_node_t *node,
    redisReply *rr, void *data);
static ngx_uint_t ngx_tiktok_reports_store_wanted(void *data);
static ngx_int_t ngx_tiktok_reports_store_redirect(
    ngx_tiktok_reports_store_cmd_t *cmd, redisReply *rr);
static void ngx_tiktok_reports_store_park(ngx_tiktok_reports_store_cmd_t *cmd);
static void ngx_tiktok_reports_store_resend(ngx_event_t *ev);
static ngx_int_t ngx_tiktok_reports_store_split(
    ngx_tiktok_reports_store_cmd_t *cmd, ngx_uint_t j);
static ngx_int_t ngx_tiktok_reports_store_outcomes(
    ngx_tiktok_reports_store_cmd_t *cmd, redisReply *rr);
static void ngx_tiktok_reports_store_deliver(
    ngx_tiktok_reports_store_cmd_t *cmd, ngx_int_t rc, redisReply *rr);
static void ngx_tiktok_reports_store_fail(ngx_tiktok_reports_store_cmd_t *cmd,
    redisReply *rr);
static void ngx_tiktok_reports_store_waited(void *data, ngx_int_t rc);
static void ngx_tiktok_reports_store_xadd(ngx_tiktok_reports_store_pub_t *pub);
static void ngx_tiktok_reports_store_published(
    ngx_tiktok_reports_store_pub_t *pub, ngx_int_t rc);


static ngx_str_t  ngx_tiktok_reports_script_str;
static u_char     ngx_tiktok_reports_script_sha[41];

/* the cluster's copy: undeclared keys of other slots of the node */
#define NGX_TIKTOK_REPORTS_SHEBANG  "#!lua flags=allow-cross-slot-keys\n"

static u_char     ngx_tiktok_reports_cluster_script[
                      sizeof(NGX_TIKTOK_REPORTS_SHEBANG) - 1
                      + sizeof(ngx_tiktok_reports_script)];
static ngx_str_t  ngx_tiktok_reports_cluster_script_str;
static u_char     ngx_tiktok_reports_cluster_script_sha[41];

/* a status group in an event's value: the first letter of its name */
static u_char  ngx_tiktok_reports_group_codes[] = "?PUDER";

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


static ngx_int_t
ngx_tiktok_reports_store_sha(ngx_str_t *script, u_char *sha)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  mdlen;

    if (EVP_Digest(script->data, script->len, md, &mdlen, EVP_sha1(), NULL)
        != 1)
    {
        return NGX_ERROR;
    }

    ngx_hex_dump(sha, md, mdlen);

    return NGX_OK;
}


ngx_tiktok_reports_store_t *
ngx_tiktok_reports_store_get(ngx_conf_t *cf,
    ngx_tiktok_reports_redis_conf_t *conf)
{
    u_char                           *p;
    ngx_uint_t                        i;
    ngx_str_t                       **name;
    ngx_tiktok_reports_store_t      **stores, *store, **slot;
    ngx_tiktok_reports_main_conf_t   *tmcf;

    if (ngx_tiktok_reports_script_str.len == 0) {
        ngx_tiktok_reports_script_str.data =
                                         (u_char *) ngx_tiktok_reports_script;
        ngx_tiktok_reports_script_str.len =
                                         sizeof(ngx_tiktok_reports_script) - 1;

        p = ngx_cpymem(ngx_tiktok_reports_cluster_script,
                       NGX_TIKTOK_REPORTS_SHEBANG,
                       sizeof(NGX_TIKTOK_REPORTS_SHEBANG) - 1);
        p = ngx_cpymem(p, ngx_tiktok_reports_script,
                       sizeof(ngx_tiktok_reports_script) - 1);

        ngx_tiktok_reports_cluster_script_str.data =
                                            ngx_tiktok_reports_cluster_script;
        ngx_tiktok_reports_cluster_script_str.len =
                                       p - ngx_tiktok_reports_cluster_script;

        if (ngx_tiktok_reports_store_sha(&ngx_tiktok_reports_script_str,
                                         ngx_tiktok_reports_script_sha)
            != NGX_OK
            || ngx_tiktok_reports_store_sha(
                                     &ngx_tiktok_reports_cluster_script_str,
                                     ngx_tiktok_reports_cluster_script_sha)
               != NGX_OK)
        {
            return NULL;
        }
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
            && (store->conf.seeds == NULL) == (conf->seeds == NULL)
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
        ngx_queue_init(&stores[i]->parked);

        stores[i]->join.handler = ngx_tiktok_reports_store_join_handler;
        stores[i]->join.data = stores[i];
        stores[i]->join.log = cycle->log;

        if (stores[i]->conf.seeds) {
            /* the slot map and a node per master */
            stores[i]->cluster = ngx_tiktok_reports_cluster_create(
                                       &stores[i]->conf,
                                       &ngx_tiktok_reports_cluster_script_str,
                                       i, cycle->log);
            if (stores[i]->cluster == NULL) {
                return NGX_ERROR;
            }

            continue;
        }

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
    ngx_queue_t                      *q;
    ngx_tiktok_reports_store_t      **stores;
    ngx_tiktok_reports_store_cmd_t   *cmd;
    ngx_tiktok_reports_main_conf_t   *tmcf;

    tmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_tiktok_reports_module);
    if (tmcf == NULL) {
        return;
    }

    stores = tmcf->stores.elts;

    for (i = 0; i < tmcf->stores.nelts; i++) {

        /* what fails from here on is not resent, nor split */
        stores[i]->closing = 1;

        if (stores[i]->join.posted) {
            ngx_delete_posted_event(&stores[i]->join);
        }

        while (stores[i]->pending) {
            cmd = stores[i]->pending;
            stores[i]->pending = cmd->next;
            cmd->next = NULL;
            ngx_tiktok_reports_store_fail(cmd, NULL);
        }

        /* commands waiting to be sent again fail now */
        while (stores[i]->parked.next
               && !ngx_queue_empty(&stores[i]->parked))
        {
            q = ngx_queue_head(&stores[i]->parked);
            ngx_queue_remove(q);
            cmd = ngx_queue_data(q, ngx_tiktok_reports_store_cmd_t, queue);

            if (cmd->retry.timer_set) {
                ngx_del_timer(&cmd->retry);
            }

            ngx_tiktok_reports_store_fail(cmd, NULL);
        }

        if (stores[i]->cluster) {
            ngx_tiktok_reports_cluster_close(stores[i]->cluster);
            stores[i]->cluster = NULL;
        }

        if (stores[i]->discovery) {
            ngx_tiktok_reports_discovery_close(stores[i]->discovery);
            stores[i]->discovery = NULL;
        }

        if (stores[i]->node) {
            ngx_tiktok_reports_node_close(stores[i]->node);
        }
    }
}


/* the node that owns a key: the store's one, or the cluster's for its slot */

static ngx_tiktok_reports_node_t *
ngx_tiktok_reports_store_node(ngx_tiktok_reports_store_t *store,
    ngx_uint_t slot)
{
    if (store->cluster) {
        return ngx_tiktok_reports_cluster_node(store->cluster, slot);
    }

    return store->node;
}


ngx_int_t
ngx_tiktok_reports_store_state(ngx_tiktok_reports_store_t *store,
    const char **state, ngx_uint_t *outstanding)
{
    if (store->cluster) {
        return ngx_tiktok_reports_cluster_state(store->cluster, state,
                                                outstanding);
    }

    return ngx_tiktok_reports_node_state(store->node, state, outstanding);
}


/*
 * A command goes to the node of its slot, or where an ASK sent it; on a
 * cluster, a node that cannot take it now (reconnecting) means a retry.
 */

static ngx_int_t
ngx_tiktok_reports_store_send(ngx_tiktok_reports_store_cmd_t *cmd)
{
    ngx_int_t                   rc;
    const char                 *asking[1];
    size_t                      asking_len[1];
    ngx_tiktok_reports_node_t  *node;

    rc = NGX_DECLINED;

    cmd->asked = 0;

    if (cmd->ask) {
        node = cmd->ask;
        cmd->ask = NULL;
        cmd->asked = 1;

        /* ASKING covers the one command right behind it */
        asking[0] = "ASKING";
        asking_len[0] = 6;

        /* dropped with the command when nobody waits for it any more */
        if (ngx_tiktok_reports_node_command(node, NULL, cmd,
                                            ngx_tiktok_reports_store_wanted,
                                            0, 1, asking, asking_len)
            != NGX_OK)
        {
            goto retry;
        }

    } else if (cmd->store->cluster
               && !ngx_tiktok_reports_cluster_mapped(cmd->store->cluster))
    {
        /* no slot map yet: a seed that is no cluster node must not serve */
        goto retry;

    } else {
        node = ngx_tiktok_reports_store_node(cmd->store, cmd->slot);
    }

    cmd->node = node;
    cmd->sent = ngx_tiktok_reports_usec();

    /* a write: with WAIT configured, one follows its flush */
    rc = (cmd->kind == NGX_TIKTOK_REPORTS_CMD_RAW)
         ? ngx_tiktok_reports_node_command(node,
                                        ngx_tiktok_reports_store_reply,
                                        cmd, ngx_tiktok_reports_store_wanted,
                                        cmd->timeout, cmd->argc, cmd->argv,
                                        cmd->argvlen)
         : ngx_tiktok_reports_node_write(node,
                                        ngx_tiktok_reports_store_reply,
                                        cmd, ngx_tiktok_reports_store_wanted,
                                        cmd->timeout, cmd->argc, cmd->argv,
                                        cmd->argvlen);

    if (rc == NGX_OK) {
        return NGX_OK;
    }

    if (cmd->asked) {
        /* an ASKING went alone: it must not lend itself to another command */
        ngx_tiktok_reports_node_drop(node, "out of memory");
    }

retry:

    if (cmd->store->cluster && cmd->copied && rc != NGX_ERROR
        && !cmd->store->closing && cmd->tries < NGX_TIKTOK_REPORTS_TRIES)
    {
        /* that master is down: the map may know better soon */
        ngx_tiktok_reports_cluster_refresh(cmd->store->cluster);
        ngx_tiktok_reports_store_park(cmd);
        return NGX_OK;
    }

    /* no connection to send on */
    ngx_tiktok_reports_metrics_redis_error(0);
    return NGX_ERROR;
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


/*
 * A command block of its own, every argument copied into it: it can be
 * sent again, to another node, whatever happens to what it came from.
 */

static ngx_tiktok_reports_store_cmd_t *
ngx_tiktok_reports_store_alloc(ngx_tiktok_reports_store_t *store,
    ngx_uint_t kind, int argc, const char **argv, const size_t *argvlen)
{
    int                              i;
    u_char                          *p;
    size_t                           size;
    ngx_tiktok_reports_store_cmd_t  *cmd;

    size = 0;

    for (i = 0; i < argc; i++) {
        size += argvlen[i];
    }

    cmd = ngx_alloc(sizeof(ngx_tiktok_reports_store_cmd_t)
                    + argc * (sizeof(char *) + sizeof(size_t)) + size,
                    ngx_cycle->log);
    if (cmd == NULL) {
        return NULL;
    }

    ngx_memzero(cmd, sizeof(ngx_tiktok_reports_store_cmd_t));

    cmd->store = store;
    cmd->kind = kind;
    cmd->n = 1;
    cmd->copied = 1;
    cmd->argv = (const char **) &cmd[1];
    cmd->argvlen = (size_t *) &cmd->argv[argc];

    p = (u_char *) &cmd->argvlen[argc];

    for (i = 0; i < argc; i++) {
        p = ngx_tiktok_reports_store_copy(cmd, p, (u_char *) argv[i],
                                          argvlen[i]);
    }

    return cmd;
}


/* report j of a call: its owner learns the outcome */

static void
ngx_tiktok_reports_store_tell(ngx_tiktok_reports_store_cmd_t *cmd,
    ngx_uint_t j, ngx_int_t rc, redisReply *rr)
{
    cmd->owners[j].done(cmd->owners[j].data, cmd->owners[j].index, rc, rr);
}


/* a command, and the calls merged into it */

static void
ngx_tiktok_reports_store_free(ngx_tiktok_reports_store_cmd_t *cmd)
{
    ngx_tiktok_reports_store_cmd_t  *part, *next;

    for (part = cmd->parts; part; part = next) {
        next = part->next;
        ngx_free(part);
    }

    ngx_free(cmd);
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

    /* statusName: as an argument, and in the event's value or line */
    return 256 + opts->prefix.len + res->message_id.len
           + 2 * res->status_id.len
           + ngx_tiktok_reports_store_json_len(at)
           + 2 * at->len + res->callback_data.len + res->raw.len
           + ngx_tiktok_reports_store_json_len(&res->status_name)
           + 2 * res->status_name.len + res->error_name.len;
}


/* the message hash's key, <prefix>msg:{<messageId>}, and its slot */

static u_char *
ngx_tiktok_reports_store_key(u_char *p, ngx_tiktok_reports_store_opts_t *opts,
    ngx_tiktok_reports_result_t *res)
{
    p = ngx_cpymem(p, opts->prefix.data, opts->prefix.len);
    p = ngx_cpymem(p, "msg:{", 5);
    p = ngx_cpymem(p, res->message_id.data, res->message_id.len);
    *p++ = '}';

    return p;
}


static ngx_uint_t
ngx_tiktok_reports_store_slot(ngx_tiktok_reports_store_opts_t *opts,
    ngx_tiktok_reports_result_t *res)
{
    u_char      *close, *key;
    ngx_uint_t   slot;

    /* the prefix holds no "{": the tag is the id, up to a "}" in it */
    close = ngx_strlchr(res->message_id.data,
                        res->message_id.data + res->message_id.len, '}');

    if (close != res->message_id.data && res->message_id.len) {
        return ngx_tiktok_reports_crc16_slot(res->message_id.data,
                                  close ? (size_t) (close
                                                    - res->message_id.data)
                                        : res->message_id.len);
    }

    /* an empty tag: Redis hashes the whole key */
    key = ngx_alloc(opts->prefix.len + res->message_id.len + sizeof("msg:{}"),
                    ngx_cycle->log);
    if (key == NULL) {
        return 0;
    }

    slot = ngx_tiktok_reports_keyslot(key,
                              ngx_tiktok_reports_store_key(key, opts, res)
                              - key);
    ngx_free(key);

    return slot;
}


/*
 * The time in an event's field: the instant in ms when the text is what
 * it gives back in Infobip's form (15 bytes less in every event), else
 * the text, after a "=" when it could be taken for ms.
 */

static u_char *
ngx_tiktok_reports_store_at(u_char *p, ngx_tiktok_reports_str_t *at,
    int64_t ms)
{
    u_char  *q, text[NGX_TIKTOK_REPORTS_TIME_LEN];
    size_t   i;

    if (ms != NGX_TIKTOK_REPORTS_NO_TIME && at->len == sizeof(text)) {
        q = ngx_tiktok_reports_time_text(text, ms);

        if (q && ngx_memcmp(text, at->data, sizeof(text)) == 0) {
            return ngx_sprintf(p, "%L", ms);
        }
    }

    for (i = 0; i < at->len; i++) {
        if (at->data[i] < '0' || at->data[i] > '9') {
            break;
        }
    }

    if (i == at->len || at->data[0] == '=') {
        *p++ = '=';
    }

    return ngx_cpymem(p, at->data, at->len);
}


/* report j of the call: its fifteen arguments at cmd->argc */

static u_char *
ngx_tiktok_reports_store_report(ngx_tiktok_reports_store_cmd_t *cmd,
    u_char *p, ngx_tiktok_reports_store_opts_t *opts, int64_t now,
    ngx_tiktok_reports_result_t *res)
{
    u_char                    *key, *start, *rest;
    size_t                     rest_len;
    ngx_str_t                 *group, *feed;
    ngx_uint_t                 delivery, slot;
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

    key = p;
    p = ngx_tiktok_reports_store_key(p, opts, res);
    ngx_tiktok_reports_store_ref(cmd, key, p - key);

    /* the slot picks the partition and the master: none on one stream */
    slot = (opts->partitions > 1 || cmd->store->cluster)
           ? ngx_tiktok_reports_keyslot(key, p - key) : 0;

    /* kind, status group */
    ngx_tiktok_reports_store_ref(cmd, (u_char *) (delivery ? "d" : "s"), 1);
    ngx_tiktok_reports_store_ref(cmd, group->data, group->len);

    /* the event identity, the start of its timeline line */
    start = p;
    p = ngx_tiktok_reports_event_start(p, delivery, res->status_id.data,
                                       res->status_id.len, at->data,
                                       at->len);
    ngx_tiktok_reports_store_ref(cmd, start, p - start);

    /*
     * The event's own field: "@d<status id> <doneAt>" or "@s <seenAt>",
     * as sent ("-" for no id, nothing after it for no time); its value
     * (after the event's number, which the script puts first) is the
     * status group's letter, receivedAt, and for a delivery statusName.
     */
    start = p;
    *p++ = '@';

    if (delivery) {
        *p++ = 'd';

        if (res->status_id.data) {
            p = ngx_cpymem(p, res->status_id.data, res->status_id.len);

        } else {
            *p++ = '-';
        }

    } else {
        *p++ = 's';
    }

    if (at->data) {
        *p++ = ' ';
        p = ngx_tiktok_reports_store_at(p, at,
                                        delivery ? res->done_at_ms
                                                 : res->seen_at_ms);
    }

    ngx_tiktok_reports_store_ref(cmd, start, p - start);

    rest = p;

    if (opts->lines) {
        /* the rest of the event's line, in the older form */
        p = ngx_sprintf(p, "\"status\":\"%V\"", group);

        if (delivery) {
            p = ngx_cpymem(p, ",\"statusName\":", 14);
            p = ngx_tiktok_reports_store_json(p, &res->status_name);
        }

        p = ngx_sprintf(p, ",\"receivedAt\":%L}", now);

    } else {
        *p++ = delivery ? ngx_tiktok_reports_group_codes[res->group] : 'S';
        p = ngx_sprintf(p, "|%L", now);

        if (delivery && res->status_name.data) {
            *p++ = '|';
            p = ngx_cpymem(p, res->status_name.data, res->status_name.len);
        }
    }

    rest_len = p - rest;

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

    } else {
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
    }

    /*
     * The partition of the feed: the key's slot decides, on any Redis.  On
     * a cluster, "" when the partition lives on another node than the
     * message (the module adds the entry after the call).
     */
    feed = &opts->feeds[slot % opts->partitions];

    if (cmd->store->cluster
        && ngx_tiktok_reports_store_node(cmd->store,
                               ngx_tiktok_reports_keyslot(feed->data,
                                                          feed->len))
           != ngx_tiktok_reports_store_node(cmd->store, slot))
    {
        ngx_tiktok_reports_store_ref(cmd, NULL, 0);

    } else {
        ngx_tiktok_reports_store_ref(cmd, feed->data, feed->len);
    }

    /* the event's value, but for its number */
    ngx_tiktok_reports_store_ref(cmd, rest, rest_len);

    return p;
}


ngx_int_t
ngx_tiktok_reports_store_admit(ngx_tiktok_reports_store_t *store,
    ngx_tiktok_reports_redis_limits_t *limits, ngx_uint_t commands,
    size_t bytes)
{
    ngx_int_t  rc;

    rc = store->cluster
         ? ngx_tiktok_reports_cluster_admit(store->cluster, limits, commands,
                                            bytes)
         : ngx_tiktok_reports_node_admit(store->node, limits, commands,
                                         bytes);

    if (rc == NGX_OK) {
        return NGX_OK;
    }

    ngx_tiktok_reports_metrics_redis_busy();

    return NGX_BUSY;
}


/*
 * One call: EVALSHA of the reports res[i] among [first, last) that have no
 * error and (on a cluster) go to "node"; NULL when out of memory.
 */

static ngx_tiktok_reports_store_cmd_t *
ngx_tiktok_reports_store_call(ngx_tiktok_reports_store_t *store,
    ngx_tiktok_reports_store_opts_t *opts, int64_t now,
    ngx_tiktok_reports_result_t *res, size_t first, size_t last,
    ngx_tiktok_reports_node_t **nodes, ngx_tiktok_reports_node_t *node,
    size_t count, size_t size)
{
    size_t                           i, j;
    u_char                          *p, *start;
    ngx_uint_t                       argc;
    ngx_tiktok_reports_store_cmd_t  *cmd;

    /*
     * One block holds the command, its argv, the reports' owners and
     * the bytes of the arguments built or copied here.
     */

    argc = NGX_TIKTOK_REPORTS_HEAD_ARGS
           + count * NGX_TIKTOK_REPORTS_REPORT_ARGS;

    cmd = ngx_alloc(sizeof(ngx_tiktok_reports_store_cmd_t)
                    + argc * (sizeof(char *) + sizeof(size_t))
                    + count * sizeof(ngx_tiktok_reports_store_owner_t)
                    + NGX_INT64_LEN * 3 + size,
                    ngx_cycle->log);
    if (cmd == NULL) {
        return NULL;
    }

    ngx_memzero(cmd, sizeof(ngx_tiktok_reports_store_cmd_t));

    /* every argument in the block or in memory that outlives it */
    cmd->store = store;
    cmd->copied = 1;
    cmd->kind = NGX_TIKTOK_REPORTS_CMD_TRANSITION;
    cmd->argv = (const char **) &cmd[1];
    cmd->argvlen = (size_t *) &cmd->argv[argc];
    cmd->owners = (ngx_tiktok_reports_store_owner_t *) &cmd->argvlen[argc];
    cmd->n = count;
    cmd->opts = opts;

    p = (u_char *) &cmd->owners[count];

    /* EVALSHA sha 1 KEYS[1] (the first report's key, set below) */
    ngx_tiktok_reports_store_ref(cmd, (u_char *) "EVALSHA", 7);
    ngx_tiktok_reports_store_ref(cmd, store->cluster
                                      ? ngx_tiktok_reports_cluster_script_sha
                                      : ngx_tiktok_reports_script_sha, 40);
    ngx_tiktok_reports_store_ref(cmd, (u_char *) "1", 1);
    cmd->argc++;

    /* ARGV[1] now, ARGV[2] ttl, ARGV[3] feed length */
    start = p;
    p = ngx_sprintf(p, "%L", now);
    ngx_tiktok_reports_store_ref(cmd, start, p - start);
    ngx_tiktok_reports_store_ref(cmd, opts->ttl.data, opts->ttl.len);
    ngx_tiktok_reports_store_ref(cmd, opts->maxlen.data, opts->maxlen.len);

    /*
     * ARGV[4] the database: commands pipelined behind a SELECT that
     * Redis refuses would run in database 0, so the script selects it
     */
    start = p;

    if (store->conf.db) {
        p = ngx_sprintf(p, "%i", store->conf.db);
    }

    ngx_tiktok_reports_store_ref(cmd, start, p - start);

    /*
     * ARGV[5]: "c" on a cluster (the feed is written after the call), "l"
     * when events are timeline lines as an older version writes them
     */
    start = p;

    if (store->cluster) {
        *p++ = 'c';
    }

    if (opts->lines) {
        *p++ = 'l';
    }

    ngx_tiktok_reports_store_ref(cmd, start, p - start);

    for (i = first, j = 0; i < last; i++) {
        if (res[i].error || (nodes && nodes[i] != node)) {
            continue;
        }

        cmd->owners[j++].index = i;
        p = ngx_tiktok_reports_store_report(cmd, p, opts, now, &res[i]);
    }

    cmd->argv[3] = cmd->argv[NGX_TIKTOK_REPORTS_HEAD_ARGS];
    cmd->argvlen[3] = cmd->argvlen[NGX_TIKTOK_REPORTS_HEAD_ARGS];
    cmd->slot = ngx_tiktok_reports_keyslot((u_char *) cmd->argv[3],
                                           cmd->argvlen[3]);

    return cmd;
}


ngx_int_t
ngx_tiktok_reports_store_transitions(ngx_tiktok_reports_store_t *store,
    ngx_tiktok_reports_store_opts_t *opts,
    ngx_tiktok_reports_redis_limits_t *limits, int64_t now,
    ngx_tiktok_reports_result_t *res, size_t n,
    ngx_tiktok_reports_store_done_pt done, void *data, size_t *sent)
{
    size_t                           i, j, k, first, count, size, total;
    ngx_uint_t                       calls;
    ngx_tiktok_reports_node_t      **nodes, *node;
    ngx_tiktok_reports_store_cmd_t  *cmd;

    *sent = 0;

    /* on a cluster, each report's node, by the slot of its key */

    nodes = NULL;

    if (store->cluster) {
        nodes = ngx_alloc(n * sizeof(ngx_tiktok_reports_node_t *),
                          ngx_cycle->log);
        if (nodes == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < n; i++) {
            nodes[i] = res[i].error
                       ? NULL
                       : ngx_tiktok_reports_store_node(store,
                                 ngx_tiktok_reports_store_slot(opts, &res[i]));
        }
    }

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
        goto done;
    }

    calls = (count + NGX_TIKTOK_REPORTS_BATCH - 1) / NGX_TIKTOK_REPORTS_BATCH;

    if (ngx_tiktok_reports_store_admit(store, limits, calls, size) != NGX_OK)
    {
        if (nodes) {
            ngx_free(nodes);
        }

        return NGX_BUSY;
    }

    /*
     * Calls of up to NGX_TIKTOK_REPORTS_BATCH reports in body order; on a
     * cluster, of one node each: the first report not sent yet picks it.
     */

    total = count;
    i = 0;

    while (*sent < total) {

        while (res[i].error || (nodes && nodes[i] == NULL)) {
            i++;
        }

        first = i;
        node = nodes ? nodes[i] : NULL;
        count = 0;
        size = 0;

        for (k = i; k < n && count < NGX_TIKTOK_REPORTS_BATCH; k++) {
            if (res[k].error || (nodes && nodes[k] != node)) {
                continue;
            }

            size += ngx_tiktok_reports_store_report_size(opts, &res[k]);
            count++;
        }

        cmd = ngx_tiktok_reports_store_call(store, opts, now, res, first, k,
                                            nodes, node, count, size);
        if (cmd == NULL) {
            goto failed;
        }

        cmd->done = done;
        cmd->data = data;
        cmd->timeout = limits->timeout;

        for (j = 0; j < count; j++) {
            cmd->owners[j].done = done;
            cmd->owners[j].data = data;

            if (nodes) {
                /* taken: the next call starts at the first report not taken */
                nodes[cmd->owners[j].index] = NULL;
            }
        }

        if (count < NGX_TIKTOK_REPORTS_BATCH) {
            /* joined with the small calls of other requests */
            ngx_tiktok_reports_store_wait(store, cmd);

        } else if (ngx_tiktok_reports_store_send(cmd) != NGX_OK) {
            ngx_tiktok_reports_store_free(cmd);
            goto failed;
        }

        *sent += count;

        if (nodes == NULL) {
            i = k;
        }
    }

done:

    if (nodes) {
        ngx_free(nodes);
    }

    return NGX_OK;

failed:

    if (nodes) {
        ngx_free(nodes);
    }

    return NGX_ERROR;
}


/*
 * A call of fewer than NGX_TIKTOK_REPORTS_BATCH reports (on a cluster: of
 * one master) waits until the
 * end of this event loop iteration, to go joined with those of other
 * requests: a call's own cost (setting it up, the checks before the first
 * write, the reply) is about half of what a report costs in a full call,
 * so bodies of one report cost about a third less in calls of many.  Each
 * request still learns its own reports' outcomes only.
 */

static void
ngx_tiktok_reports_store_wait(ngx_tiktok_reports_store_t *store,
    ngx_tiktok_reports_store_cmd_t *cmd)
{
    ngx_tiktok_reports_store_cmd_t  *last;

    if (store->pending_reports + cmd->n > NGX_TIKTOK_REPORTS_BATCH) {
        ngx_tiktok_reports_store_join(store);
    }

    cmd->next = NULL;

    if (store->pending) {
        last = store->pending_last;
        last->next = cmd;

    } else {
        store->pending = cmd;
    }

    store->pending_last = cmd;
    store->pending_reports += cmd->n;

    if (!store->join.posted) {
        ngx_post_event(&store->join, &ngx_posted_events);
    }
}


static void
ngx_tiktok_reports_store_join_handler(ngx_event_t *ev)
{
    ngx_tiktok_reports_store_join(ev->data);
}


/*
 * The same fixed arguments (TTL, feed, database, flags): one call; on a
 * cluster also the same master, and the same location's settings (the
 * feed's partitions of a report are found through them).
 */

static ngx_uint_t
ngx_tiktok_reports_store_joinable(ngx_tiktok_reports_store_cmd_t *a,
    ngx_tiktok_reports_store_cmd_t *b)
{
    ngx_uint_t  i;

    if (a->store->cluster
        && (a->opts != b->opts
            || ngx_tiktok_reports_store_node(a->store, a->slot)
               != ngx_tiktok_reports_store_node(b->store, b->slot)))
    {
        return 0;
    }

    for (i = 5; i < NGX_TIKTOK_REPORTS_HEAD_ARGS; i++) {
        if (a->argvlen[i] != b->argvlen[i]
            || ngx_memcmp(a->argv[i], b->argv[i], a->argvlen[i]) != 0)
        {
            return 0;
        }
    }

    return 1;
}


static void
ngx_tiktok_reports_store_join(ngx_tiktok_reports_store_t *store)
{
    int                               argc;
    ngx_uint_t                        n, j, k;
    ngx_tiktok_reports_store_cmd_t   *first, *part, *next, *cmd, **last;

    while (store->pending) {
        first = store->pending;

        /* the calls that can go with the first, in order */

        n = 0;
        last = &first->parts;

        for (part = first; part; part = part->next) {
            if (ngx_tiktok_reports_store_joinable(first, part)) {
                n += part->n;
            }
        }

        store->pending = NULL;
        store->pending_reports = 0;

        if (n == first->n) {
            /* alone: as it is */
            cmd = first;
            next = first->next;
            cmd->next = NULL;
            goto send;
        }

        argc = NGX_TIKTOK_REPORTS_HEAD_ARGS
               + n * NGX_TIKTOK_REPORTS_REPORT_ARGS;

        cmd = ngx_alloc(sizeof(ngx_tiktok_reports_store_cmd_t)
                        + argc * (sizeof(char *) + sizeof(size_t))
                        + n * sizeof(ngx_tiktok_reports_store_owner_t),
                        ngx_cycle->log);

        if (cmd == NULL) {
            /* each as it is */
            cmd = first;
            next = first->next;
            cmd->next = NULL;
            goto send;
        }

        ngx_memzero(cmd, sizeof(ngx_tiktok_reports_store_cmd_t));

        cmd->store = store;
        cmd->copied = 1;
        cmd->kind = NGX_TIKTOK_REPORTS_CMD_TRANSITION;
        cmd->argv = (const char **) &cmd[1];
        cmd->argvlen = (size_t *) &cmd->argv[argc];
        cmd->owners = (ngx_tiktok_reports_store_owner_t *)
                                                      &cmd->argvlen[argc];
        cmd->n = n;
        cmd->argc = argc;
        cmd->done = first->done;
        cmd->data = first->data;
        cmd->slot = first->slot;
        cmd->opts = first->opts;

        for (j = 0; j < NGX_TIKTOK_REPORTS_HEAD_ARGS; j++) {
            cmd->argv[j] = first->argv[j];
            cmd->argvlen[j] = first->argvlen[j];
        }

        /* the parts' arguments stay in their blocks, freed with this */

        next = NULL;
        last = &cmd->parts;
        k = 0;

        for (part = first; part; part = store->pending) {
            store->pending = part->next;

            if (!ngx_tiktok_reports_store_joinable(first, part)) {
                /* for the next round, in order */
                part->next = NULL;

                if (next == NULL) {
                    next = part;

                } else {
                    ((ngx_tiktok_reports_store_cmd_t *)
                                           store->pending_last)->next = part;
                }

                store->pending_last = part;
                continue;
            }

            ngx_memcpy(&cmd->argv[NGX_TIKTOK_REPORTS_HEAD_ARGS
                                  + k * NGX_TIKTOK_REPORTS_REPORT_ARGS],
                       &part->argv[NGX_TIKTOK_REPORTS_HEAD_ARGS],
                       part->n * NGX_TIKTOK_REPORTS_REPORT_ARGS
                       * sizeof(char *));
            ngx_memcpy(&cmd->argvlen[NGX_TIKTOK_REPORTS_HEAD_ARGS
                                     + k * NGX_TIKTOK_REPORTS_REPORT_ARGS],
                       &part->argvlen[NGX_TIKTOK_REPORTS_HEAD_ARGS],
                       part->n * NGX_TIKTOK_REPORTS_REPORT_ARGS
                       * sizeof(size_t));
            ngx_memcpy(&cmd->owners[k], part->owners,
                       part->n * sizeof(ngx_tiktok_reports_store_owner_t));

            if (part->timeout > cmd->timeout) {
                cmd->timeout = part->timeout;
            }

            k += part->n;

            part->next = NULL;
            *last = part;
            last = &part->next;
        }

    send:

        if (ngx_tiktok_reports_store_send(cmd) != NGX_OK) {
            ngx_tiktok_reports_store_fail(cmd, NULL);
        }

        /* what could not go with it: another round */
        store->pending = next;

        for (part = next, n = 0; part; part = part->next) {
            n += part->n;
            store->pending_last = part;
        }

        store->pending_reports = n;
    }
}


ngx_int_t
ngx_tiktok_reports_store_command(ngx_tiktok_reports_store_t *store,
    u_char *key, size_t key_len, ngx_tiktok_reports_store_done_pt done,
    void *data, ngx_uint_t index, ngx_msec_t timeout, int argc,
    const char **argv, const size_t *argvlen)
{
    ngx_tiktok_reports_store_cmd_t  *cmd;

    if (store->cluster) {
        /* kept whole: a redirect sends it again */
        cmd = ngx_tiktok_reports_store_alloc(store,
                                             NGX_TIKTOK_REPORTS_CMD_RAW, argc,
                                             argv, argvlen);
        if (cmd == NULL) {
            return NGX_ERROR;
        }

        cmd->slot = ngx_tiktok_reports_keyslot(key, key_len);

    } else {
        cmd = ngx_alloc(sizeof(ngx_tiktok_reports_store_cmd_t),
                        ngx_cycle->log);
        if (cmd == NULL) {
            return NGX_ERROR;
        }

        /* hiredis's formatting copies the arguments: never resent */
        ngx_memzero(cmd, sizeof(ngx_tiktok_reports_store_cmd_t));
        cmd->store = store;
        cmd->kind = NGX_TIKTOK_REPORTS_CMD_RAW;
        cmd->n = 1;
        cmd->argc = argc;
        cmd->argv = argv;
        cmd->argvlen = (size_t *) argvlen;
    }

    cmd->done = done;
    cmd->data = data;
    cmd->timeout = timeout;
    cmd->index = index;

    if (ngx_tiktok_reports_store_send(cmd) != NGX_OK) {
        ngx_tiktok_reports_store_free(cmd);
        return NGX_ERROR;
    }

    if (!cmd->copied) {
        cmd->argv = NULL;
        cmd->argvlen = NULL;
    }

    return NGX_OK;
}


/*
 * A command's owner is the request's wait object: once its answer is out
 * (the timeout, or the client left), nobody needs the command sent.
 * Deleting published changes has no owner: it always goes.
 */

static ngx_uint_t
ngx_tiktok_reports_store_wanted(void *data)
{
    ngx_tiktok_reports_store_cmd_t  *cmd = data;

    ngx_uint_t                  j;
    ngx_tiktok_reports_wait_t  *w;

    if (cmd->kind == NGX_TIKTOK_REPORTS_CMD_PUBLISHED) {
        return 1;
    }

    if (cmd->kind == NGX_TIKTOK_REPORTS_CMD_TRANSITION) {
        /* a call of several requests goes while one of them waits */
        for (j = 0; j < cmd->n; j++) {
            w = cmd->owners[j].data;

            if (w->request != NULL && !w->answered) {
                return 1;
            }
        }

        return 0;
    }

    w = cmd->data;

    return w->request != NULL && !w->answered;
}


static void
ngx_tiktok_reports_store_reply(ngx_tiktok_reports_node_t *node,
    redisReply *rr, void *data)
{
    ngx_tiktok_reports_store_cmd_t  *cmd = data;

    size_t      j;
    ngx_int_t   rc;
    ngx_uint_t  noscript;

    if (rr == NULL) {
        /* the connection went away, its handshake was refused, or dropped */
        if (cmd->store->closing) {
            ngx_tiktok_reports_store_fail(cmd, NULL);
            return;
        }

        if (cmd->store->cluster && cmd->copied
            && ngx_tiktok_reports_store_wanted(cmd)
            && cmd->tries < NGX_TIKTOK_REPORTS_TRIES)
        {
            ngx_tiktok_reports_cluster_refresh(cmd->store->cluster);
            ngx_tiktok_reports_store_park(cmd);
            return;
        }

        if (cmd->store->cluster && cmd->n > 1
            && ngx_tiktok_reports_store_wanted(cmd))
        {
            /* a call of several reports: each is sent again on its own */
            ngx_tiktok_reports_cluster_refresh(cmd->store->cluster);

            for (j = 0; j < cmd->n; j++) {
                if (ngx_tiktok_reports_store_split(cmd, j) != NGX_OK) {
                    ngx_tiktok_reports_store_tell(cmd, j, NGX_ERROR, NULL);
                }
            }

            ngx_tiktok_reports_store_free(cmd);
            return;
        }

        ngx_tiktok_reports_metrics_redis_error(0);
        ngx_tiktok_reports_store_fail(cmd, NULL);
        return;
    }

    ngx_tiktok_reports_metrics_rtt(ngx_tiktok_reports_usec() - cmd->sent);

    if (rr->type == REDIS_REPLY_ERROR && cmd->store->cluster
        && !cmd->store->closing
        && ngx_tiktok_reports_store_redirect(cmd, rr) == NGX_OK)
    {
        return;
    }

    noscript = (rr->type == REDIS_REPLY_ERROR
                && cmd->kind == NGX_TIKTOK_REPORTS_CMD_TRANSITION
                && !cmd->retried
                && rr->len >= 8 && ngx_strncmp(rr->str, "NOSCRIPT", 8) == 0);

    if (noscript) {
        /* the script cache was flushed: EVAL sends it and caches it again */

        ngx_log_error(NGX_LOG_NOTICE, node->log, 0,
                      "tiktok_reports: redis %V lost the script, reloading",
                      &node->conf->name);

        cmd->retried = 1;
        cmd->argv[0] = "EVAL";
        cmd->argvlen[0] = 4;

        if (cmd->store->cluster) {
            cmd->argv[1] = (char *) ngx_tiktok_reports_cluster_script;
            cmd->argvlen[1] = ngx_tiktok_reports_cluster_script_str.len;

        } else {
            cmd->argv[1] = ngx_tiktok_reports_script;
            cmd->argvlen[1] = ngx_tiktok_reports_script_str.len;
        }

        if (cmd->asked) {
            /* an ASK sent it there: ASKING again before it */
            cmd->ask = node;
        }

        if (ngx_tiktok_reports_store_send(cmd) == NGX_OK) {
            return;
        }

        ngx_tiktok_reports_store_fail(cmd, rr);
        return;
    }

    if (cmd->kind == NGX_TIKTOK_REPORTS_CMD_RAW
        && rr->type == REDIS_REPLY_ERROR
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

    if (cmd->kind == NGX_TIKTOK_REPORTS_CMD_TRANSITION) {
        /* one outcome per report, or the call failed as a whole */

        if (rc == NGX_OK
            && ngx_tiktok_reports_store_outcomes(cmd, rr) != NGX_OK)
        {
            rc = NGX_ERROR;
        }

        if (rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_ERR, node->log, 0,
                          "tiktok_reports: redis transition failed: %*s",
                          rr->type == REDIS_REPLY_ERROR ? (size_t) rr->len : 0,
                          rr->type == REDIS_REPLY_ERROR ? rr->str : "");
        }
    }

    if (rc == NGX_OK && cmd->kind != NGX_TIKTOK_REPORTS_CMD_RAW
        && node->conf->wait_replicas)
    {
        /* the outcomes count once the WAIT behind the call says so */
        cmd->hold.handler = ngx_tiktok_reports_store_waited;
        cmd->hold.data = cmd;

        if (ngx_tiktok_reports_node_hold(node, &cmd->hold) == NGX_OK) {
            return;
        }

        ngx_log_error(NGX_LOG_ALERT, node->log, 0,
                      "tiktok_reports: redis %V: no WAIT follows a write",
                      &node->conf->name);
        rc = NGX_ERROR;
    }

    ngx_tiktok_reports_store_deliver(cmd, rc, rr);
}


/*
 * Cluster replies that say "not here" or "not now": MOVED and ASK send the
 * command on at once, the others after a short backoff, as long as its
 * owner waits and within NGX_TIKTOK_REPORTS_TRIES.  A call of several
 * reports is split: each report goes on its own, to its own slot's node.
 * NGX_OK: taken care of; NGX_DECLINED: an error for the owner.
 */

static ngx_int_t
ngx_tiktok_reports_store_redirect(ngx_tiktok_reports_store_cmd_t *cmd,
    redisReply *rr)
{
    size_t                       j;
    ngx_uint_t                   moved, ask, later;
    ngx_tiktok_reports_node_t   *to;
    ngx_tiktok_reports_cluster_t *cl;

    cl = cmd->store->cluster;

    moved = (rr->len > 6 && ngx_strncmp(rr->str, "MOVED ", 6) == 0);
    ask = (rr->len > 4 && ngx_strncmp(rr->str, "ASK ", 4) == 0);

    later = (rr->len >= 8 && ngx_strncmp(rr->str, "TRYAGAIN", 8) == 0)
            || (rr->len >= 11 && ngx_strncmp(rr->str, "CLUSTERDOWN", 11) == 0)
            || (rr->len >= 7 && ngx_strncmp(rr->str, "LOADING", 7) == 0)
            || (rr->len >= 8 && ngx_strncmp(rr->str, "READONLY", 8) == 0)
            || (rr->len >= 10 && ngx_strncmp(rr->str, "MASTERDOWN", 10) == 0);

    if (!moved && !ask && !later) {
        return NGX_DECLINED;
    }

    if (!later || rr->len < 8 || ngx_strncmp(rr->str, "TRYAGAIN", 8) != 0) {
        /* the map is stale, or a failover is under way */
        if (!ask) {
            ngx_tiktok_reports_cluster_refresh(cl);
        }
    }

    if (!ngx_tiktok_reports_store_wanted(cmd)
        || cmd->tries >= NGX_TIKTOK_REPORTS_TRIES)
    {
        return NGX_DECLINED;
    }

    if (cmd->n > 1) {
        if (moved) {
            /* fixes the map for the first report's slot */
            (void) ngx_tiktok_reports_cluster_redirect(cl,
                                                   (u_char *) rr->str + 6,
                                                   rr->len - 6, 1);
        }

        for (j = 0; j < cmd->n; j++) {
            if (ngx_tiktok_reports_store_split(cmd, j) != NGX_OK) {
                ngx_tiktok_reports_store_tell(cmd, j, NGX_ERROR, NULL);
            }
        }

        ngx_tiktok_reports_store_free(cmd);
        return NGX_OK;
    }

    cmd->tries++;

    if (later) {
        ngx_tiktok_reports_store_park(cmd);
        return NGX_OK;
    }

    to = ngx_tiktok_reports_cluster_redirect(cl,
                                    (u_char *) rr->str + (moved ? 6 : 4),
                                    rr->len - (moved ? 6 : 4), moved);
    if (to == NULL) {
        ngx_log_error(NGX_LOG_ERR, cmd->node->log, 0,
                      "tiktok_reports: redis cluster %V: cannot follow "
                      "\"%*s\"", &cmd->store->conf.name, (size_t) rr->len,
                      rr->str);
        return NGX_DECLINED;
    }

    if (ask) {
        cmd->ask = to;
    }

    if (ngx_tiktok_reports_store_send(cmd) != NGX_OK) {
        ngx_tiktok_reports_store_fail(cmd, NULL);
    }

    return NGX_OK;
}


/* sent again after a backoff that doubles with each try */

static void
ngx_tiktok_reports_store_park(ngx_tiktok_reports_store_cmd_t *cmd)
{
    ngx_msec_t  after;

    after = NGX_TIKTOK_REPORTS_RETRY_MIN << (cmd->tries < 5 ? cmd->tries : 5);

    if (after > NGX_TIKTOK_REPORTS_RETRY_MAX) {
        after = NGX_TIKTOK_REPORTS_RETRY_MAX;
    }

    cmd->tries++;
    cmd->ask = NULL;

    cmd->retry.handler = ngx_tiktok_reports_store_resend;
    cmd->retry.data = cmd;
    cmd->retry.log = ngx_cycle->log;
    cmd->retry.cancelable = 1;

    ngx_queue_insert_tail(&cmd->store->parked, &cmd->queue);
    ngx_add_timer(&cmd->retry, after);
}


static void
ngx_tiktok_reports_store_resend(ngx_event_t *ev)
{
    ngx_tiktok_reports_store_cmd_t  *cmd = ev->data;

    ngx_queue_remove(&cmd->queue);

    if (!ngx_tiktok_reports_store_wanted(cmd)
        || ngx_tiktok_reports_store_send(cmd) != NGX_OK)
    {
        ngx_tiktok_reports_metrics_redis_error(0);
        ngx_tiktok_reports_store_fail(cmd, NULL);
    }
}


/*
 * Report j of a call, as a call of its own: every argument copied, the
 * report's key the declared one, sent to the node of its slot.
 */

static ngx_int_t
ngx_tiktok_reports_store_split(ngx_tiktok_reports_store_cmd_t *cmd,
    ngx_uint_t j)
{
    int                              i, a;
    const char                      *argv[NGX_TIKTOK_REPORTS_HEAD_ARGS
                                          + NGX_TIKTOK_REPORTS_REPORT_ARGS];
    size_t                           argvlen[NGX_TIKTOK_REPORTS_HEAD_ARGS
                                             + NGX_TIKTOK_REPORTS_REPORT_ARGS];
    ngx_tiktok_reports_store_cmd_t  *one;

    if (cmd->store->closing) {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_TIKTOK_REPORTS_HEAD_ARGS; i++) {
        argv[i] = cmd->argv[i];
        argvlen[i] = cmd->argvlen[i];
    }

    a = NGX_TIKTOK_REPORTS_HEAD_ARGS + j * NGX_TIKTOK_REPORTS_REPORT_ARGS;

    for (i = 0; i < NGX_TIKTOK_REPORTS_REPORT_ARGS; i++) {
        argv[NGX_TIKTOK_REPORTS_HEAD_ARGS + i] = cmd->argv[a + i];
        argvlen[NGX_TIKTOK_REPORTS_HEAD_ARGS + i] = cmd->argvlen[a + i];
    }

    argv[3] = cmd->argv[a];
    argvlen[3] = cmd->argvlen[a];

    one = ngx_tiktok_reports_store_alloc(cmd->store,
                                    NGX_TIKTOK_REPORTS_CMD_TRANSITION,
                                    NGX_TIKTOK_REPORTS_HEAD_ARGS
                                    + NGX_TIKTOK_REPORTS_REPORT_ARGS,
                                    argv, argvlen);
    if (one == NULL) {
        return NGX_ERROR;
    }

    one->opts = cmd->opts;
    one->owner = cmd->owners[j];
    one->owners = &one->owner;
    one->done = one->owner.done;
    one->data = one->owner.data;
    one->timeout = cmd->timeout;
    one->index = one->owner.index;
    one->tries = cmd->tries + 1;
    one->retried = cmd->retried;
    one->slot = ngx_tiktok_reports_keyslot((u_char *) one->argv[3],
                                           one->argvlen[3]);

    if (ngx_tiktok_reports_store_send(one) != NGX_OK) {
        ngx_free(one);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A call's reply: an integer per report, or on a cluster {code, seq,
 * entry, ...} with the changes not yet in the feed.  A report this node
 * does not serve (-2) goes on its own to the node that does.
 */

static ngx_int_t
ngx_tiktok_reports_store_outcomes(ngx_tiktok_reports_store_cmd_t *cmd,
    redisReply *rr)
{
    u_char                          *p;
    size_t                           size;
    ngx_str_t                       *feed;
    ngx_uint_t                       j, k, a;
    redisReply                      *e, *code;
    ngx_tiktok_reports_store_pub_t  *pub;

    if (rr->type != REDIS_REPLY_ARRAY || rr->elements != cmd->n) {
        return NGX_ERROR;
    }

    for (j = 0; j < cmd->n; j++) {
        e = rr->element[j];
        code = (e->type == REDIS_REPLY_ARRAY && e->elements % 2 == 1
                && e->elements <= 9)
               ? e->element[0] : e;

        if (code->type != REDIS_REPLY_INTEGER
            || (e != code && cmd->store->cluster == NULL))
        {
            return NGX_ERROR;
        }

        for (k = 1; e != code && k < e->elements; k += 2) {
            if (e->element[k]->type != REDIS_REPLY_INTEGER
                || e->element[k]->integer < 1 || e->element[k]->integer > 4
                || e->element[k + 1]->type != REDIS_REPLY_STRING)
            {
                return NGX_ERROR;
            }
        }
    }

    size = sizeof(ngx_int_t) + sizeof(ngx_tiktok_reports_store_pub_t *);

    cmd->codes = ngx_alloc(cmd->n * size, ngx_cycle->log);
    if (cmd->codes == NULL) {
        return NGX_ERROR;
    }

    cmd->pubs = (ngx_tiktok_reports_store_pub_t **) &cmd->codes[cmd->n];

    for (j = 0; j < cmd->n; j++) {
        e = rr->element[j];
        code = (e->type == REDIS_REPLY_ARRAY) ? e->element[0] : e;
        cmd->pubs[j] = NULL;

        cmd->codes[j] = code->integer == -2 ? NGX_TIKTOK_REPORTS_RESENT
                        : code->integer < 0 ? NGX_ABORT
                        : code->integer == 0 ? NGX_DECLINED : NGX_OK;

        if (code->integer == -2) {
            /*
             * a call of one report declares its key: Redis itself sent it
             * here, so "not here" would only loop
             */
            if (cmd->n == 1 || cmd->tries >= NGX_TIKTOK_REPORTS_TRIES
                || ngx_tiktok_reports_store_split(cmd, j) != NGX_OK)
            {
                cmd->codes[j] = NGX_ERROR;
            }

            continue;
        }

        if (e == code) {
            continue;
        }

        /* changes to publish: kept with the report until they are out */

        a = NGX_TIKTOK_REPORTS_HEAD_ARGS + j * NGX_TIKTOK_REPORTS_REPORT_ARGS;

        size = sizeof(ngx_tiktok_reports_store_pub_t) + cmd->argvlen[a]
               + cmd->argvlen[a + 5]
               + cmd->opts->feeds[0].len + NGX_INT_T_LEN + cmd->argvlen[6];

        for (k = 1; k < e->elements; k += 2) {
            size += e->element[k + 1]->len;
        }

        pub = ngx_alloc(size, ngx_cycle->log);
        if (pub == NULL) {
            cmd->codes[j] = NGX_ERROR;
            continue;
        }

        ngx_memzero(pub, sizeof(ngx_tiktok_reports_store_pub_t));

        pub->store = cmd->store;
        pub->done = cmd->owners[j].done;
        pub->data = cmd->owners[j].data;
        pub->index = cmd->owners[j].index;
        pub->code = cmd->codes[j];
        pub->timeout = cmd->timeout;

        p = (u_char *) &pub[1];

        pub->key.data = p;
        pub->key.len = cmd->argvlen[a];
        p = ngx_cpymem(p, cmd->argv[a], pub->key.len);

        pub->id.data = p;
        pub->id.len = cmd->argvlen[a + 5];
        p = ngx_cpymem(p, cmd->argv[a + 5], pub->id.len);

        /* the partition: given, or by the key's slot when left out */
        feed = &cmd->opts->feeds[ngx_tiktok_reports_keyslot(
                                              (u_char *) cmd->argv[a],
                                              cmd->argvlen[a])
                                 % cmd->opts->partitions];

        pub->feed.data = p;
        pub->feed.len = feed->len;
        p = ngx_cpymem(p, feed->data, pub->feed.len);

        /* ARGV[3], the feed's length */
        pub->maxlen.data = p;
        pub->maxlen.len = cmd->argvlen[6];
        p = ngx_cpymem(p, cmd->argv[6], pub->maxlen.len);

        for (k = 1; k < e->elements; k += 2) {
            pub->seq[pub->n] = (ngx_uint_t) e->element[k]->integer;
            pub->entry[pub->n].data = p;
            pub->entry[pub->n].len = e->element[k + 1]->len;
            p = ngx_cpymem(p, e->element[k + 1]->str, e->element[k + 1]->len);
            pub->n++;
        }

        cmd->pubs[j] = pub;
    }

    return NGX_OK;
}


/*
 * The owner learns every report's outcome; the last call may free "data",
 * so nothing of it is touched after.  A failed call fails all its reports;
 * it wrote none of them, but for what the script cannot check beforehand.
 * A report with changes for the feed learns it once they are in.
 */

static void
ngx_tiktok_reports_store_deliver(ngx_tiktok_reports_store_cmd_t *cmd,
    ngx_int_t rc, redisReply *rr)
{
    ngx_uint_t                       j;
    ngx_tiktok_reports_store_pub_t  *pub;

    if (cmd->kind == NGX_TIKTOK_REPORTS_CMD_FEED) {
        ngx_tiktok_reports_store_published(cmd->pub, rc);
        ngx_tiktok_reports_store_free(cmd);
        return;
    }

    if (cmd->kind != NGX_TIKTOK_REPORTS_CMD_TRANSITION) {
        if (cmd->done) {
            cmd->done(cmd->data, cmd->index, rc, rr);
        }

        ngx_tiktok_reports_store_free(cmd);
        return;
    }

    if (rc != NGX_OK || cmd->codes == NULL) {
        if (cmd->codes) {
            for (j = 0; j < cmd->n; j++) {
                if (cmd->pubs[j]) {
                    ngx_free(cmd->pubs[j]);
                }

                if (cmd->codes[j] != NGX_TIKTOK_REPORTS_RESENT) {
                    ngx_tiktok_reports_store_tell(cmd, j, NGX_ERROR, rr);
                }
            }

            ngx_free(cmd->codes);

        } else {
            for (j = 0; j < cmd->n; j++) {
                ngx_tiktok_reports_store_tell(cmd, j, NGX_ERROR, rr);
            }
        }

        ngx_tiktok_reports_store_free(cmd);
        return;
    }

    for (j = 0; j < cmd->n; j++) {
        pub = cmd->pubs[j];

        if (cmd->codes[j] == NGX_TIKTOK_REPORTS_RESENT) {
            continue;
        }

        if (pub) {
            ngx_tiktok_reports_store_xadd(pub);
            continue;
        }

        ngx_tiktok_reports_store_tell(cmd, j, cmd->codes[j], NULL);
    }

    ngx_free(cmd->codes);
    ngx_tiktok_reports_store_free(cmd);
}


static void
ngx_tiktok_reports_store_fail(ngx_tiktok_reports_store_cmd_t *cmd,
    redisReply *rr)
{
    ngx_tiktok_reports_store_deliver(cmd, NGX_ERROR, rr);
}


/*
 * WAIT replied (or the connection was lost): the held outcomes count only
 * if enough replicas have the writes; the reply is gone by now (NULL).
 */

static void
ngx_tiktok_reports_store_waited(void *data, ngx_int_t rc)
{
    ngx_tiktok_reports_store_deliver(data, rc, NULL);
}


/*
 * The changes of one message not yet in the feed: an XADD each to its
 * partition (wherever that lives), then, once all are in, their fields
 * deleted from the hash.  A change published twice (a retry found it
 * before its fields went) carries the same (messageId, seq) both times.
 */

static void
ngx_tiktok_reports_store_xadd(ngx_tiktok_reports_store_pub_t *pub)
{
    u_char                          *p, *sp1, *sp2, *last, seq[NGX_INT_T_LEN];
    ngx_uint_t                       k;
    const char                      *argv[17];
    size_t                           argvlen[17];
    ngx_tiktok_reports_store_cmd_t  *cmd;

    /* one more than the XADDs out, until all went */
    pub->pending++;

    for (k = 0; k < pub->n; k++) {
        p = pub->entry[k].data;
        last = p + pub->entry[k].len;

        sp1 = ngx_strlchr(p, last, ' ');
        sp2 = sp1 ? ngx_strlchr(sp1 + 1, last, ' ') : NULL;

        if (sp2 == NULL) {
            pub->failed = 1;
            continue;
        }

        argv[0] = "XADD";
        argvlen[0] = 4;
        argv[1] = (const char *) pub->feed.data;
        argvlen[1] = pub->feed.len;
        argv[2] = "MAXLEN";
        argvlen[2] = 6;
        argv[3] = "~";
        argvlen[3] = 1;
        argv[4] = (const char *) pub->maxlen.data;
        argvlen[4] = pub->maxlen.len;
        argv[5] = "*";
        argvlen[5] = 1;
        argv[6] = "messageId";
        argvlen[6] = 9;
        argv[7] = (const char *) pub->id.data;
        argvlen[7] = pub->id.len;
        argv[8] = "status";
        argvlen[8] = 6;
        argv[9] = (const char *) p;
        argvlen[9] = sp1 - p;
        argv[10] = "previous";
        argvlen[10] = 8;
        argv[11] = (const char *) sp1 + 1;
        argvlen[11] = sp2 - sp1 - 1;
        argv[12] = "at";
        argvlen[12] = 2;
        argv[13] = (const char *) sp2 + 1;
        argvlen[13] = last - sp2 - 1;
        argv[14] = "seq";
        argvlen[14] = 3;
        argv[15] = (const char *) seq;
        argvlen[15] = ngx_sprintf(seq, "%ui", pub->seq[k]) - seq;

        cmd = ngx_tiktok_reports_store_alloc(pub->store,
                                             NGX_TIKTOK_REPORTS_CMD_FEED, 16,
                                             argv, argvlen);
        if (cmd == NULL) {
            pub->failed = 1;
            continue;
        }

        cmd->data = pub->data;
        cmd->pub = pub;
        cmd->timeout = pub->timeout;
        cmd->slot = ngx_tiktok_reports_keyslot(pub->feed.data, pub->feed.len);

        pub->pending++;

        if (ngx_tiktok_reports_store_send(cmd) != NGX_OK) {
            ngx_tiktok_reports_store_free(cmd);
            pub->pending--;
            pub->failed = 1;
        }
    }

    ngx_tiktok_reports_store_published(pub, NGX_OK);
}


/*
 * An XADD of the report's changes replied (NGX_OK: in the feed, and on
 * enough replicas with WAIT).  The last one tells the owner; the fields
 * of changes now published go, with no owner waiting: if that is lost, a
 * later report publishes them again.
 */

static void
ngx_tiktok_reports_store_published(ngx_tiktok_reports_store_pub_t *pub,
    ngx_int_t rc)
{
    u_char                          *p, names[4][2];
    ngx_uint_t                       k;
    const char                      *argv[6];
    size_t                           argvlen[6];
    ngx_tiktok_reports_store_cmd_t  *cmd;

    if (rc != NGX_OK) {
        pub->failed = 1;
    }

    if (--pub->pending) {
        return;
    }

    if (pub->failed) {
        pub->done(pub->data, pub->index, NGX_ERROR, NULL);
        ngx_free(pub);
        return;
    }

    argv[0] = "HDEL";
    argvlen[0] = 4;
    argv[1] = (const char *) pub->key.data;
    argvlen[1] = pub->key.len;

    for (k = 0; k < pub->n; k++) {
        p = names[k];
        p[0] = 'q';
        p[1] = (u_char) ('0' + pub->seq[k]);
        argv[2 + k] = (const char *) p;
        argvlen[2 + k] = 2;
    }

    cmd = ngx_tiktok_reports_store_alloc(pub->store,
                                         NGX_TIKTOK_REPORTS_CMD_PUBLISHED,
                                         2 + pub->n, argv, argvlen);
    if (cmd) {
        cmd->timeout = pub->timeout;
        cmd->slot = ngx_tiktok_reports_keyslot(pub->key.data, pub->key.len);

        if (ngx_tiktok_reports_store_send(cmd) != NGX_OK) {
            ngx_tiktok_reports_store_free(cmd);
        }
    }

    pub->done(pub->data, pub->index, pub->code, NULL);
    ngx_free(pub);
}
