#!/usr/bin/perl
# Prometheus metrics: totals across several workers, kept across a reload.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep);
use TikTokTest;

my $t = TikTokTest->new;
$t->start_redis;
my %conf = (workers => 3, listen => 'reuseport', server => <<'EOF');
        location = /webhook {
            add_header X-Pid $pid always;
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret k;
            client_max_body_size 2k;
        }
        location /tiktok/status/ {
            tiktok_reports_status;
        }
        location = /metrics {
            tiktok_reports_metrics;
        }
        location /hooks/ {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            location /hooks/health {
                return 204;
            }
        }
EOF
$t->start_nginx(%conf);

my %served;

sub post {
    my ($body, $sign) = @_;
    my $r = $t->http(method => 'POST', path => '/webhook',
        headers => [ 'Content-Type' => 'application/json',
                     'X-Signature' => $sign // hmac_hex('sha256', 'k', $body) ],
        body => $body);
    $served{ $r->{headers}{'x-pid'} }++ if $r && $r->{headers}{'x-pid'};
    return $r;
}

sub metrics {
    my $r = $t->http(path => '/metrics');
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/;
        my ($k, $v) = /^(\S+) (\S+)$/ or next;
        $m{$k} = $v;
    }
    return (\%m, $r);
}

# A request is counted in its worker's log phase, just after the answer went
# out: the next request, on another worker, can come first.  So the counts
# are read once they add up to what was sent (or after 5 s, to fail).
sub metrics_after {
    my ($requests) = @_;
    my ($m, $r);
    for (1 .. 100) {
        ($m, $r) = metrics();
        my $sum = 0;
        $sum += $m->{$_} for grep { /^tiktok_reports_requests_total\{/ } keys %$m;
        last if $sum >= $requests;
        sleep 0.05;
    }
    return ($m, $r);
}

# every worker connected before anything is counted: under valgrind a
# worker's first handshake can take longer than the 1 s timeout
for (1 .. 300) {
    my ($m) = metrics();
    last if 3 == grep { /^tiktok_reports_redis_connected\{/ && $m->{$_} == 1 } keys %$m;
    sleep 0.1;
}

# 60 requests on new connections: the kernel spreads them over the workers
my %pids;
for my $i (1 .. 30) {
    my $body = json_encode({ results => [ tiktok_dlr(id => "m-$i"),
                                          tiktok_seen(id => "m-$i"),
                                          { to => 'no id' } ] });
    post($body);
    post($body);    # the same again: duplicates
}
post('{"results":[]}', 'bad-signature') for 1 .. 5;
post('not json') for 1 .. 4;
post(json_encode({ results => [ map { tiktok_dlr(id => "big-$_") } 1 .. 10 ] }));
$t->http(path => '/tiktok/status/m-1');
$t->http(path => '/hooks/health') for 1 .. 3;
$t->http(path => '/tiktok/status/nope');

ok(keys(%served) >= 2, 'the requests were served by ' . scalar(keys %served)
   . ' different workers');

# 70 webhook answers (60 200s, 5 401s, 4 400s, one 413) and 2 lookups
my ($m, $r) = metrics_after(72);
is($r->{status}, 200, 'metrics: 200');
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4}, 'metrics: Prometheus text');
is($m->{'tiktok_reports_requests_total{location="webhook",code="200"}'}, 60,
   'webhook 200s, totalled over the workers');
is($m->{'tiktok_reports_requests_total{location="webhook",code="401"}'}, 5, '401s');
is($m->{'tiktok_reports_requests_total{location="webhook",code="other"}'}, 0,
   'a location nested in a webhook location is not a webhook');
is($m->{'tiktok_reports_requests_total{location="webhook",code="400"}'}, 4, '400s');
is($m->{'tiktok_reports_requests_total{location="webhook",code="413"}'}, 1,
   "nginx's own 413 is counted");
is($m->{'tiktok_reports_requests_total{location="status",code="200"}'}, 1, 'lookup 200');
is($m->{'tiktok_reports_requests_total{location="status",code="404"}'}, 1, 'lookup 404');
is($m->{'tiktok_reports_results_total{kind="delivery",outcome="accepted"}'}, 30,
   'delivery accepted');
is($m->{'tiktok_reports_results_total{kind="seen",outcome="accepted"}'}, 30, 'seen accepted');
is($m->{'tiktok_reports_results_total{kind="delivery",outcome="duplicate"}'}, 30,
   'delivery duplicates');
is($m->{'tiktok_reports_results_total{kind="seen",outcome="duplicate"}'}, 30,
   'seen duplicates');
is($m->{'tiktok_reports_results_total{kind="unknown",outcome="rejected"}'}, 60, 'rejected');
is($m->{'tiktok_reports_signature_failures_total'}, 5, 'signature failures');
is($m->{'tiktok_reports_redis_errors_total'}, 0, 'no Redis errors');
# a body's reports go to Redis in one call (up to 100 of them)
is($m->{'tiktok_reports_redis_rtt_seconds_count'}, 62,
   'one round trip per stored body and per lookup');
is($m->{'tiktok_reports_redis_rtt_seconds_bucket{le="+Inf"}'}, 62, 'histogram +Inf');
ok($m->{'tiktok_reports_redis_rtt_seconds_sum'} > 0, 'histogram sum');
# every bucket, cumulative, and each round trip counted in the bucket of its
# time: on loopback all 62 took well under a second (and their sum says so)
{
    my @le = qw(0.0001 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1
                0.25 1 +Inf);
    my @n = map { $m->{"tiktok_reports_redis_rtt_seconds_bucket{le=\"$_\"}"} } @le;
    is(scalar(grep { defined } @n), 13, 'histogram: a bucket for each bound');
    my @down = grep { ($n[$_] // 0) < ($n[$_ - 1] // 0) } 1 .. $#n;
    ok(!@down, 'histogram: buckets are cumulative') or diag("@n");
    ok($m->{'tiktok_reports_redis_rtt_seconds_sum'} < 62,
       'histogram: the round trips took less than a second each');
    is($n[11], 62, 'histogram: every round trip counted at or below 1 s');
    my ($first) = grep { ($n[$_] // 0) > 0 } 0 .. $#n;
    ok(defined $first && $first < 11,
       'histogram: loopback round trips in the sub-second buckets (first at le='
       . $le[$first // 12] . ')');
}
my @up = grep { /^tiktok_reports_redis_connected\{/ } keys %$m;
is(scalar @up, 3, 'a connection gauge per worker');
is(scalar(grep { $m->{$_} == 1 } @up), 3, 'every worker connected');

my @pids = $t->worker_pids;
is(scalar @pids, 3, 'three workers');

# a reload keeps the totals
$t->reload_nginx;
# the new workers, and only they, before the next request (slow under ASan)
for (1 .. 100) {
    my %old = map { $_ => 1 } @pids;
    my @now = $t->worker_pids;
    last if @now == 3 && !grep { $old{$_} } @now;
    sleep 0.1;
}
my $after = post(json_encode({ results => [ tiktok_dlr(id => 'after-reload') ] }));
is($after && $after->{status}, 200, 'a body after the reload is stored');
($m) = metrics_after(73);
is($m->{'tiktok_reports_requests_total{location="webhook",code="200"}'}, 61,
   'totals survive a reload');

# Redis gone: errors counted, gauges down
$t->stop_redis;
post(json_encode({ results => [ tiktok_dlr(id => 'down') ] }));
sleep 0.3;
($m) = metrics_after(74);
is($m->{'tiktok_reports_requests_total{location="webhook",code="503"}'}, 1, '503 counted');
ok($m->{'tiktok_reports_redis_errors_total'} >= 1, 'Redis errors counted');
ok(scalar(grep { /^tiktok_reports_redis_connected\{/ && $m->{$_} == 0 } keys %$m) >= 1,
   'a worker reports its connection down');

$t->stop_nginx;
$t->check_logs;

done_testing;
