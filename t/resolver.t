#!/usr/bin/perl
# A Redis host name resolved at run time through nginx's resolver: a DNS
# stand-in on loopback answers for redis.test; the answer changes and Redis
# moves, and the next connection goes to the new address; with the DNS
# down, requests answer 503 and the outage is logged once.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use TikTokTest;
use RedisProcs;

my $t = TikTokTest->new;
$t->start_redis;
my $port = $t->redis_port;
my $dns = RedisProcs::DNS->new($t, name => 'redis.test',
                               address => '127.0.0.1');
my $dport = $dns->port;

$t->start_nginx(server => <<"EOF3");
        location = /webhook {
            resolver 127.0.0.1:$dport valid=1s ipv6=off;
            resolver_timeout 500ms;
            tiktok_reports_redis redis.test:$port;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /static {
            tiktok_reports_redis localhost:$port;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
EOF3

sub post {
    my ($path, $id) = @_;
    my $res = $t->http(method => 'POST', path => $path, timeout => 10,
                       headers => [ 'Content-Type' => 'application/json' ],
                       body => json_encode({ results => [ tiktok_dlr(id => $id) ] }));
    return $res ? $res->{status} : 'none';
}

# the first 200 within the deadline; the statuses seen before it
sub until_200 {
    my ($path, $id, $seconds) = @_;
    my $until = time + $seconds;
    my @seen;
    while (time < $until) {
        my $st = post($path, $id);
        return (1, @seen) if $st eq '200';
        push @seen, $st;
        sleep 0.1;
    }
    return (0, @seen);
}

sub error_lines {
    my ($from, $re) = @_;
    my $log = substr($t->error_log, $from);
    return grep { /\[error\]/ && /$re/ } split /\n/, $log;
}

{
    my ($ok) = until_200('/webhook', 'dns-1', 5);
    ok($ok, 'redis.test through the resolver: 200');
    is($t->redis('HGET', 'tiktok:msg:{dns-1}', 'status'), 'DELIVERED',
       'stored on the Redis the name points at');
    like($t->error_log, qr/redis redis\.test:$port resolved to 127\.0\.0\.1:$port/,
         'the address found is logged');
}

# localhost without a resolver in the location: resolved at startup
is(post('/static', 'static-1'), 200, 'host name without a resolver: resolved at start');

# the name moves to 127.0.0.2, where Redis now runs; the old one stops
my $b;
{
    $dns->answer('127.0.0.2');
    $b = RedisProcs->new($t, bind => '127.0.0.2', port => $port,
                         name => 'moved');
    $t->stop_redis;
    my ($ok, @seen) = until_200('/webhook', 'dns-2', 15);
    ok($ok, 'Redis moved with its name: 200 again without restarting nginx')
        or diag("@seen");
    is($b->cmd('HGET', 'tiktok:msg:{dns-2}', 'status'), 'DELIVERED',
       'stored on the new address');
    like($t->error_log, qr/resolved to 127\.0\.0\.2:$port/,
         'the new address is logged');
}

# the DNS stand-in down, the connection lost: 503, one line at error
{
    $dns->stop;
    sleep 2.5;    # "valid=1s" (whole seconds): the cached answer expires
    my $mark = length $t->error_log;
    $b->cmd('CLIENT', 'KILL', 'TYPE', 'normal');
    my @st;
    my $until = time + 4;
    while (time < $until) {
        push @st, post('/webhook', 'dns-3');
        sleep 0.2;
    }
    ok(@st > 5 && !grep({ $_ ne '503' } @st), 'DNS down: every request 503')
        or diag("@st");
    is($b->cmd('EXISTS', 'tiktok:msg:{dns-3}'), 0, 'DNS down: nothing stored');
    my @err = error_lines($mark, qr/tiktok_reports: redis redis\.test:$port (?:\(at [^)]+\) )?unavailable/);
    is(scalar @err, 1, 'DNS down: logged once at error') or diag(join "\n", @err);
    like(substr($t->error_log, $mark),
         qr/redis redis\.test:$port (?:\(at [^)]+\) )?unavailable: redis\.test could not be resolved \(110: Operation timed out\)/,
         'the resolver\'s reason is logged');

    # and back
    $dns = RedisProcs::DNS->new($t, name => 'redis.test', address => '127.0.0.2',
                                port => $dport);
    my ($ok) = until_200('/webhook', 'dns-4', 10);
    ok($ok, 'DNS back: 200 again');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
