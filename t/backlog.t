#!/usr/bin/perl
# A slow Redis (a throttling proxy in front of a real one: commands answered
# correctly, a few hundred a second) under a burst of 1000-id lookups: what
# is outstanding on the connection stays bounded, a full connection answers
# 503 at once, the watchdog drops a connection whose oldest command waited
# too long even though replies keep coming, and once the burst is over the
# webhook is served again within seconds, not after the backlog drained.
# Timing-driven, so not run under valgrind.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep time);
use TikTokTest;
use ThrottleProxy;

plan skip_all => 'timing-driven: the proxy rate is sized for native speed'
    if $ENV{TT_VALGRIND};

my $secret = 'backlog-secret';
my $t = TikTokTest->new;
$t->start_redis;
my $proxy = ThrottleProxy->new(redis_port => $t->redis_port, rate => 30000);
my $pport = $proxy->port;

$t->start_nginx(server => <<"EOF");
        tiktok_reports_redis 127.0.0.1:$pport;
        tiktok_reports_redis_timeout 2s;
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret $secret;
        }
        location /st/ {
            client_body_buffer_size 64k;
            # half of what 10 clients keep outstanding: some are refused
            tiktok_reports_redis_max_outstanding 5000;
            tiktok_reports_status;
        }
        location = /small {
            tiktok_reports_redis_max_outstanding 1 1k;
            tiktok_reports_redis_timeout 10s;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /metrics {
            tiktok_reports_metrics;
        }
EOF

sub post {
    my ($path, @results) = @_;
    my $body = json_encode({ results => \@results });
    return $t->http(method => 'POST', path => $path,
        headers => [ 'Content-Type' => 'application/json',
                     'X-Signature' => hmac_hex('sha256', $secret, $body) ],
        body => $body, timeout => 10);
}

sub rss {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return 0;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)/ }
    return 0;
}

sub metric {
    my ($name) = @_;
    my $m = $t->http(path => '/metrics');
    return $m && $m->{body} =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

# the proxy passes commands through, slowly
my $res = post('/webhook', tiktok_dlr(id => 'bl-0'));
is($res && $res->{status}, 200, 'through the slow proxy: stored');

my ($worker) = $t->worker_pids;
my $rss0 = rss($worker);

# 10 clients post 1000-id lookups for 5 s, each request answered before the
# next is sent, as the load in the report of the problem did
my $ids = json_encode({ ids => [ map { "bl-id-$_" } 1 .. 1000 ] });
my $burst = 5;
my $dir = $t->dir;
my @kids;
for my $k (1 .. 10) {
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open my $out, '>', "$dir/client.$k" or POSIX::_exit(1);
        my $until = time + $burst;
        while (time < $until) {
            my $t0 = time;
            my $r = eval { $t->http(method => 'POST', path => '/st/',
                headers => [ 'Content-Type' => 'application/json' ],
                body => $ids, timeout => 10) };
            printf $out "%s %.3f %s\n", $r ? $r->{status} : 'none',
                time - $t0, $r && $r->{body} =~ /unavailable/ ? 'u' : '-';
        }
        close $out;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}

# while the burst runs, a body still fits beside the lookups (1 command
# against 10000) and waits its turn: answered within its own timeout
sleep 1.5;
my $t0 = time;
$res = post('/webhook', tiktok_dlr(id => 'bl-full'));
my $took = time - $t0;
is($res && $res->{status}, 503, 'a slow Redis: the webhook answers 503');
is($res && $res->{body}, '{"error":"status store unavailable"}',
   '... with the JSON error');
ok($took < 3, sprintf('... within its 2 s timeout (%.3fs)', $took));
my $rss_burst = rss($worker);

waitpid $_, 0 for @kids;
my $rss1 = rss($worker);

my ($answers, $fast503, $slow) = (0, 0, 0);
for my $k (1 .. 10) {
    open my $fh, '<', "$dir/client.$k" or next;
    while (<$fh>) {
        my ($st, $secs) = split;
        $answers++;
        $fast503++ if $st eq '503' && $secs < 0.5;
        $slow++ if $secs > 4;
    }
}
ok($answers > 10, "the burst's lookups were answered ($answers)");
ok($fast503 > 0, "lookups on a full connection got 503 at once ($fast503)");
is($slow, 0, 'no lookup waited much longer than its 2 s timeout');

my $busy = metric('tiktok_reports_redis_busy_total');
ok(defined $busy && $busy > 0, "refusals counted in the metrics ($busy)");

my $log = $t->error_log;
my $full_lines = () = $log =~ /outstanding, requests get 503/g;
ok($full_lines >= 1, 'a full connection is logged');
ok($full_lines <= 20, "... once per episode, not per request ($full_lines)");
like($log, qr/redis 127\.0\.0\.1:$pport unavailable: timed out/,
     'the watchdog dropped the connection though replies kept coming');

diag(sprintf 'worker RSS: %d kB before, %d during, %d after the burst',
     $rss0, $rss_burst, $rss1);
SKIP: {
    # AddressSanitizer keeps freed memory in quarantine (256 MB by default)
    skip 'RSS under AddressSanitizer counts its quarantine', 1
        if $ENV{TT_SANITIZE};
    ok($rss1 - $rss0 < 12 * 1024,
       sprintf('worker memory stays bounded (+%d kB)', $rss1 - $rss0));
}

# after the burst the backlog is gone within seconds
my $back;
$t0 = time;
while (time - $t0 < 6) {
    $res = post('/webhook', tiktok_dlr(id => 'bl-after'));
    if ($res && $res->{status} == 200) { $back = time - $t0; last }
    sleep 0.2;
}
ok(defined $back, sprintf('after the burst the webhook is served again '
                          . '(%.2fs)', $back // -1));
is($t->redis('HGET', 'tiktok:msg:{bl-after}', 'status'), 'DELIVERED',
   '... and its report is stored');

# a location's own limit: one request is always let onto an idle connection,
# even when it is larger than the limit (3 calls, about 100 kB, against 1
# command and 1 kB)
my @many = map { tiktok_dlr(id => "bl-many-$_") } 1 .. 250;
$res = post('/small', @many);
is($res && $res->{status}, 200, 'an idle connection takes a request larger '
                                . 'than the limit');
is($t->redis('EXISTS', 'tiktok:msg:{bl-many-250}'), 1, '... stored');

$proxy->stop;
$t->stop_nginx;
$t->check_logs;

done_testing;
