#!/usr/bin/perl
# The health location: 200 while the worker can store, 503 while any Redis
# it uses is down, reconnecting, not through its handshake or refusing it,
# and 200 again once Redis is back; GET and HEAD only.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use TikTokTest;

# how long a command may wait; a slow worker (valgrind) needs longer for
# its handshake
my $timeout = $ENV{TT_VALGRIND} ? 2 : 0.5;

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(http => "    tiktok_reports_redis_timeout ${\ int($timeout * 1000)}ms;\n",
                server => <<'EOF');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /healthz {
            tiktok_reports_health;
        }
EOF

my $name = '127.0.0.1:' . $t->redis_port;

# the answer once its status is "want" (or the test likes it), or the last
# one after a while: the reconnect backoff grows to 2 s
sub health_until {
    my ($t, $want) = @_;
    my $r;
    my $until = time + ($ENV{TT_VALGRIND} ? 30 : 10);
    while (time < $until) {
        $r = $t->http(path => '/healthz');
        last if $r && (ref $want ? $want->($r) : $r->{status} == $want);
        sleep 0.05;
    }
    return $r;
}

{
    my $r = health_until($t, 200);
    is($r->{status}, 200, 'Redis up: 200');
    is($r->{headers}{'content-type'}, 'application/json', 'JSON');
    is_deeply(eval { json_decode($r->{body}) },
              { status => 'ok',
                redis => [ { name => $name, connected => JSON::PP::true,
                             state => 'connected', outstanding => 0 } ] },
              'the connection, up, nothing outstanding') or diag $r->{body};

    $r = $t->http(method => 'HEAD', path => '/healthz');
    is($r->{status}, 200, 'HEAD: 200');
    is($r->{body}, '', 'HEAD: no body');

    for my $m (qw(POST PUT DELETE)) {
        $r = $t->http(method => $m, path => '/healthz', body => '{}');
        is($r->{status}, 405, "$m: 405");
        is($r->{headers}{allow}, 'GET, HEAD', "$m: Allow: GET, HEAD");
    }

    # the probe leaves Redis alone
    my $before = $t->redis('INFO', 'stats') =~ /total_commands_processed:(\d+)/ && $1;
    $t->http(path => '/healthz') for 1 .. 5;
    my $after = $t->redis('INFO', 'stats') =~ /total_commands_processed:(\d+)/ && $1;
    is($after - $before, 1, 'probes send nothing to Redis (only our INFO counted)');
}

# Redis stopped: 503, and the body says why
{
    $t->stop_redis;
    my $r = health_until($t, 503);
    is($r->{status}, 503, 'Redis stopped: 503');
    my $j = eval { json_decode($r->{body}) } || {};
    is($j->{status}, 'unavailable', 'status unavailable');
    ok(!$j->{redis}[0]{connected}, 'not connected');
    like($j->{redis}[0]{state} // '', qr/^(reconnecting|connecting)$/,
         "state: $j->{redis}[0]{state}");

    # it stays 503 while Redis is away, across reconnect attempts
    my %codes;
    for (1 .. 20) {
        $codes{ $t->http(path => '/healthz')->{status} }++;
        sleep 0.1;
    }
    is_deeply(\%codes, { 503 => 20 }, 'every probe 503 while Redis is down');

    my $w = $t->http(method => 'POST', path => '/webhook',
                     headers => [ 'Content-Type' => 'application/json' ],
                     body => json_encode({ results => [ tiktok_dlr(id => 'h-1') ] }));
    is($w->{status}, 503, 'and the webhook agrees');
}

# Redis back: 200 again after the reconnect backoff, without a request
{
    $t->start_redis;
    my $r = health_until($t, 200);
    is($r->{status}, 200, 'Redis back: 200 again');
    like($r->{body}, qr/"connected":true,"state":"connected"/, 'connected');

    my $w = $t->http(method => 'POST', path => '/webhook',
                     headers => [ 'Content-Type' => 'application/json' ],
                     body => json_encode({ results => [ tiktok_dlr(id => 'h-2') ] }));
    is($w->{status}, 200, 'and the webhook stores');
}

# Redis frozen: an idle connection looks fine until a command waits past
# the timeout; then it is dropped, and a new one, open but with its
# handshake unanswered, is not ready either
{
    $t->freeze_redis;
    my $w = $t->http(method => 'POST', path => '/webhook',
                     headers => [ 'Content-Type' => 'application/json' ],
                     body => json_encode({ results => [ tiktok_dlr(id => 'h-3') ] }));
    is($w->{status}, 503, 'Redis frozen: the webhook times out');

    my (%codes, %states);
    for (1 .. 20) {
        my $r = $t->http(path => '/healthz');
        $codes{ $r->{status} }++;
        my $j = eval { json_decode($r->{body}) } || {};
        $states{ $j->{redis}[0]{state} // '?' }++;
        sleep 0.1;
    }
    is_deeply(\%codes, { 503 => 20 }, 'every probe 503 while Redis is frozen')
        or diag explain \%states;
    ok($states{connecting}, 'connected again, the handshake unanswered: "connecting"')
        or diag explain \%states;

    $t->thaw_redis;
    my $r = health_until($t, 200);
    is($r->{status}, 200, 'Redis thawed: 200 again');
}

$t->stop_nginx;
$t->check_logs;

# two Redis, one of them refusing the handshake: 503, naming that one
{
    my $o = TikTokTest->new;
    $o->start_redis(password => 'right');
    $o->start_nginx(http => "    tiktok_reports_redis_password right;\n",
                    server => <<'EOF');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /tiktok/status/ {
            tiktok_reports_status;
            tiktok_reports_redis_password wrong;
        }
        location = /healthz {
            tiktok_reports_health;
        }
EOF
    my $r = health_until($o, sub { $_[0]{body} =~ /handshake failed/ });
    is($r->{status}, 503, 'a refused AUTH: 503');
    my $j = eval { json_decode($r->{body}) } || {};
    is(scalar @{ $j->{redis} || [] }, 2, 'both connections listed');
    my ($good) = grep { $_->{connected} } @{ $j->{redis} || [] };
    my ($bad) = grep { !$_->{connected} } @{ $j->{redis} || [] };
    ok($good, 'the right password connects');
    is($bad && $bad->{state}, 'handshake failed', 'the wrong one: handshake failed')
        or diag $r->{body};
    $o->stop_nginx;
    $o->check_logs;
}

done_testing;
