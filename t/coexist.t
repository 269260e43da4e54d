#!/usr/bin/perl
# One nginx with Debian's nchan, lua (with ndk) and echo modules next to
# ours, as nginx-extras has them, loaded before ours and after it.  nchan
# carries its own hiredis 1.x and exports its symbols: neither module may
# end up calling the other's hiredis.  nchan publishes through the same
# Redis, so its own Redis code runs too.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep);
use TikTokTest;

my $dir = '/usr/lib/nginx/modules';
# ndk before lua, as modules-enabled orders them
my @mods = qw(ndk_http_module ngx_http_lua_module ngx_http_echo_module
              ngx_nchan_module);
my @missing = grep { !-f "$dir/$_.so" } @mods;

if (@missing) {
    plan skip_all => "Debian's modules are not installed (@missing; apt-get"
        . ' install libnginx-mod-nchan libnginx-mod-http-lua'
        . ' libnginx-mod-http-ndk libnginx-mod-http-echo)'
        if $> != 0;
    # as root .ci/install has put them there: their absence is a failure
    fail("Debian's modules are installed in $dir") or diag "missing: @missing";
    done_testing;
    exit;
}

my $others = join '', map { "load_module $dir/$_.so;\n" } @mods;
my $secret = 'coexist-secret';

for my $order ('ours first', 'ours last') {
    my $t = TikTokTest->new;
    $t->start_redis;
    $t->start_nginx(
        ($order eq 'ours first' ? (main => $others) : (before => $others)),
        http => <<'EOF',
    tiktok_reports_redis_timeout 5s;
    upstream nchan_redis {
        nchan_redis_server redis://%%REDIS%%;
    }
EOF
        server => <<"EOF");
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret $secret;
        }
        location /tiktok/status/ {
            tiktok_reports_status;
        }
        location = /echo {
            echo "echo: \$request_method";
        }
        location = /lua {
            content_by_lua_block { ngx.say("lua: ", 6 * 7) }
        }
        location = /pub {
            nchan_publisher;
            nchan_channel_id coexist;
            nchan_redis_pass nchan_redis;
        }
EOF

    my @workers = wait_workers($t, 1);
    is(scalar @workers, 1, "$order: the worker runs");

    my $id = "coexist-$order";
    $id =~ s/ /-/g;
    my $body = json_encode({ results => [ tiktok_dlr(id => $id) ] });
    my $res = $t->http(method => 'POST', path => '/webhook',
        headers => [ 'Content-Type' => 'application/json',
                     'X-Signature' => hmac_hex('sha256', $secret, $body) ],
        body => $body);
    is($res && $res->{status}, 200, "$order: signed webhook 200");
    is($res && $res->{body}, '{"accepted":1,"duplicates":0,"rejected":[]}',
       "$order: webhook body");
    is($t->redis('HGET', "tiktok:msg:{$id}", 'status'), 'DELIVERED',
       "$order: status in Redis");
    is($t->redis('XLEN', 'tiktok:events'), 1, "$order: one change in the feed");

    $res = $t->http(path => "/tiktok/status/$id");
    is($res && $res->{status}, 200, "$order: lookup 200");
    my $j = $res && eval { json_decode($res->{body}) };
    is($j && $j->{messageId}, $id, "$order: lookup messageId");
    is($j && $j->{status}, 'DELIVERED', "$order: lookup status");
    is($j && $j->{statusName}, 'DELIVERED_TO_HANDSET', "$order: lookup statusName");

    # the neighbours work too, nchan's own Redis code included
    $res = $t->http(path => '/echo');
    is($res && $res->{body}, "echo: GET\n", "$order: echo answers");
    $res = $t->http(path => '/lua');
    is($res && $res->{body}, "lua: 42\n", "$order: lua answers");
    # nchan may answer 503 while it still connects to Redis
    for (1 .. 50) {
        $res = $t->http(method => 'POST', path => '/pub', body => 'hello');
        last unless $res && $res->{status} == 503;
        sleep 0.1;
    }
    is($res && $res->{status}, 202, "$order: nchan publishes through Redis")
        or diag($res ? $res->{raw} : 'no answer');
    is($t->redis('EXISTS', '{channel:/coexist}:messages'), 1,
       "$order: nchan's message is in Redis");

    # a worker that crashed and was replaced has another pid
    my @after = sort $t->worker_pids;
    ok(@workers && "@after" eq "@workers",
       "$order: the same worker after the requests")
        or diag("before: @workers, after: @after");
    $t->stop_nginx;
    $t->check_logs;
}

done_testing;

# the worker pids once $n workers run (empty if they keep dying)
sub wait_workers {
    my ($t, $n) = @_;
    my @pids;
    for (1 .. 100) {
        @pids = sort $t->worker_pids;
        last if @pids == $n;
        sleep 0.1;
    }
    return @pids;
}
