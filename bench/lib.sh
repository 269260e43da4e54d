# Shared by bench/run and bench/rss: a Redis and an nginx with the module
# (and a "return 204" location) on loopback ports, torn down on exit.

root=$(cd "$(dirname "$0")/.." && pwd)
so=$("$root/.ci/build" | tail -1)
need=
command -v wrk >/dev/null || need="$need wrk"
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need="$need libnginx-mod-http-lua"
dpkg-query -W lua-cjson >/dev/null 2>&1 || need="$need lua-cjson"
command -v valgrind >/dev/null || need="$need valgrind"
if [ -n "$need" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi

dur=${DURATION:-10s}
conns=${CONNECTIONS:-32}
threads=${THREADS:-1}
workers=${WORKERS:-2}
dir=$(mktemp -d /tmp/tiktok-bench-XXXXXX)
chmod 755 "$dir"; mkdir -m 777 "$dir/body"
rport=$(( 20000 + RANDOM % 10000 ))
hport=$(( rport + 1 ))

cleanup() {
    [ -f "$dir/nginx.pid" ] && kill -QUIT "$(cat "$dir/nginx.pid")" 2>/dev/null || true
    redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
    sleep 0.3
    rm -rf "$dir"
}
trap cleanup EXIT

# REDIS_UNIX=1: the module and the peer reach Redis over a unix socket (what
# a Redis on the same host would use); redis-cli here keeps the TCP port
redis_addr=127.0.0.1:$rport
peer_redis=$rport
if [ "${REDIS_UNIX:-0}" = 1 ]; then
    redis_addr=unix:$dir/redis.sock
    peer_redis=$redis_addr
fi

redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
    --unixsocket "$dir/redis.sock" --unixsocketperm 777 \
    --daemonize yes --dir "$dir" --logfile "$dir/redis.log"
sleep 0.3

# the module's transition script, for the Lua peer to call by its SHA
perl -0777 -ne 'if (/static char ngx_tiktok_reports_script\[\] =\n(.*?);\n/s) {
        my ($b, $o) = ($1, "");
        while ($b =~ /^"((?:[^"\\]|\\.)*)"$/mg) {
            (my $l = $1) =~ s/\\(.)/$1 eq "n" ? "\n" : $1/ge;
            $o .= $l;
        }
        print $o;
    }' "$root/ngx_tiktok_reports_module/ngx_tiktok_reports_redis_store.c" > "$dir/script.lua"
sha=$(redis-cli -p "$rport" -x script load < "$dir/script.lua")

cat > "$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
load_module $so;
$( [ "$(id -u)" = 0 ] && echo "user nobody nogroup;" )
worker_processes $workers;
error_log $dir/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    tiktok_reports_redis $redis_addr;
    # a 2000-report body at 32 connections queues ~64 000 transitions: 1 s
    # (the default) is too short for that on one Redis core
    tiktok_reports_redis_timeout 5s;
    lua_package_path "$root/bench/?.lua;;";
    server {
        listen 127.0.0.1:$hport backlog=4096;
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret bench-secret;
            client_body_buffer_size 1m;
            client_max_body_size 8m;
        }
        location = /keep {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_keep_reports on;
            tiktok_reports_key_prefix "keep:";
        }
        location = /ceiling {
            return 204;
        }
        location = /peer {
            set \$peer_redis $peer_redis;
            set \$peer_script_sha $sha;
            client_body_buffer_size 1m;
            client_max_body_size 8m;
            content_by_lua_block { require("peer").handle() }
        }
    }
}
CONF
nginx -p "$dir" -c "$dir/nginx.conf"
sleep 0.5

