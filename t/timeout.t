#!/usr/bin/perl
# Each location keeps its own tiktok_reports_redis_timeout on a shared
# connection: a webhook set to 5 s beside a lookup at the default rides out a
# 2 s stall of Redis, while the lookup answers 503 at its own 1 s.  And the
# time spent verifying and parsing a big body does not eat the timeout.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep time);
use TikTokTest;

my $secret = 'timeout-secret';
my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(server => <<"EOF");
        client_max_body_size 256m;
        client_body_buffer_size 1m;
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret $secret;
            tiktok_reports_redis_timeout 5s;
        }
        location = /quick {
            tiktok_reports_webhook;
            tiktok_reports_signature hmac-sha256;
            tiktok_reports_secret $secret;
            tiktok_reports_redis_timeout 100ms;
        }
        location /st/ {
            tiktok_reports_status;
        }
EOF

sub post {
    my ($path, $body) = @_;
    return $t->http(method => 'POST', path => $path,
        headers => [ 'Content-Type' => 'application/json',
                     'X-Signature' => hmac_hex('sha256', $secret, $body) ],
        body => $body, timeout => 60);
}

is(post('/webhook', json_encode({ results => [ tiktok_dlr(id => 'to-0') ] }))
   ->{status}, 200, 'connected');

# Redis stalls for 2 s with a body and a lookup waiting on one connection
{
    $t->freeze_redis;
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my $res = eval { post('/webhook',
            json_encode({ results => [ tiktok_dlr(id => 'to-stall') ] })) };
        POSIX::_exit(($res && $res->{status} == 200) ? 0 : 1);
    }
    sleep 0.2;
    my $t0 = time;
    my $res = $t->http(path => '/st/to-0', timeout => 10);
    my $took = time - $t0;
    is($res && $res->{status}, 503, 'Redis stalled: the lookup answers 503');
    ok($took < 1.8 * ($ENV{TT_VALGRIND} ? 2 : 1),
       sprintf('... at its own 1 s timeout (%.2fs)', $took));
    sleep 2 - (time - $t0) - 0.2 if time - $t0 < 1.8;
    $t->thaw_redis;
    waitpid $pid, 0;
    is($? >> 8, 0, 'the webhook with a 5 s timeout waited out the 2 s stall '
                   . 'and answered 200');
    is($t->redis('HGET', 'tiktok:msg:{to-stall}', 'status'), 'DELIVERED',
       '... its report stored');
    is($t->http(path => '/st/to-stall')->{status}, 200,
       'the connection was kept: lookups work at once');
}

# a big body whose checks take longer than the timeout: the timeout starts
# once they are done, so the body is answered 200, not 503 after all its
# reports were stored (the replies of its 20 calls come over several loop
# iterations, and the first after the clock moved on expired the timer)
SKIP: {
    skip 'valgrind: the body would take minutes to check', 3
        if $ENV{TT_VALGRIND};
    my $pad = 'p' x 30_000;
    my @results = map { { %{ tiktok_dlr(id => "to-big-$_") }, pad => $pad } }
                  1 .. 2000;
    my $body = json_encode({ results => \@results });
    my $t0 = time;
    my $res = post('/quick', $body);
    diag(sprintf '%.0f MB body answered in %.3fs',
         length($body) / 1e6, time - $t0);
    is($res && $res->{status}, 200,
       'a 60 MB body of 2000 reports, checked for longer than its 100 ms timeout: 200');
    like($res && $res->{body}, qr/^\{"accepted":2000,/, '... all 2000 accepted');
    is($t->redis('EXISTS', 'tiktok:msg:{to-big-2000}'), 1, '... and stored');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
