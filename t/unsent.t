#!/usr/bin/perl
# Commands of requests already answered are not sent: when Redis is too
# slow to take what is queued, a body whose timeout passed while its calls
# still waited in the module's own write queue is answered 503 and its calls
# are dropped, not written to Redis later.  A proxy holds the bytes back
# (paused), so that the kernel's buffers fill and the rest waits in the
# queue; a patient request at the head keeps the watchdog from dropping the
# connection.  Timing-driven, so not run under valgrind.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep time);
use TikTokTest;
use ThrottleProxy;

plan skip_all => 'timing-driven: sized for native speed' if $ENV{TT_VALGRIND};

my $t = TikTokTest->new;
$t->start_redis;
my $proxy = ThrottleProxy->new(redis_port => $t->redis_port, rate => 1e9);
my $pport = $proxy->port;
$t->start_nginx(server => <<"EOF2");
        tiktok_reports_redis 127.0.0.1:$pport;
        client_max_body_size 16m;
        client_body_buffer_size 16m;
        tiktok_reports_redis_max_outstanding 100000 256m;
        location = /patient {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_redis_timeout 60s;
        }
        location = /quick {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_redis_timeout 1s;
        }
EOF2

sub post {
    my ($path, $body, $timeout) = @_;
    return $t->http(method => 'POST', path => $path,
        headers => [ 'Content-Type' => 'application/json' ],
        body => $body, timeout => $timeout || 30);
}

sub evalsha_calls {
    my $s = $t->redis('INFO', 'commandstats');
    return $s =~ /cmdstat_evalsha:calls=(\d+)/ ? $1 : 0;
}

is(post('/patient', json_encode({ results => [ tiktok_dlr(id => 'u-0') ] }))
   ->{status}, 200, 'through the proxy');
my $before = evalsha_calls();

$proxy->pause;

# the patient body goes first and waits at the head of the queue
my $patient = fork();
die "fork: $!" unless defined $patient;
if ($patient == 0) {
    my $r = eval { post('/patient',
        json_encode({ results => [ tiktok_dlr(id => 'u-patient') ] }), 90) };
    POSIX::_exit($r && $r->{status} == 200 ? 0 : 1);
}
sleep 0.3;

# 40 bodies of 2000 reports, about 28 MB of calls: more than the kernel's
# buffers hold; each answered 503 after its 1 s
my $pad = 'x' x 100;
my @kids;
my $bodies = 40;
for my $k (1 .. 8) {
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my $bad = 0;
        for my $b (1 .. $bodies / 8) {
            my $body = json_encode({ results => [ map {
                tiktok_dlr(id => "u-$k-$b-$_", callbackData => $pad) }
                1 .. 2000 ] });
            my $r = eval { post('/quick', $body, 30) };
            $bad++ unless $r && $r->{status} == 503;
        }
        POSIX::_exit($bad);
    }
    push @kids, $pid;
}
my $bad = 0;
for (@kids) { waitpid $_, 0; $bad += $? >> 8 }
is($bad, 0, "all $bodies bodies answered 503 at their 1 s timeout");

# Redis takes everything again: what was dropped never arrives
$proxy->resume;
waitpid $patient, 0;
is($? >> 8, 0, 'the patient body at the head is stored: 200');

# let whatever is still on its way arrive
my ($calls, $last) = (0, -1);
for (1 .. 50) {
    $calls = evalsha_calls() - $before;
    last if $calls == $last;
    $last = $calls;
    sleep 0.2;
}
my $all = 1 + $bodies * 20;
ok($calls < $all, "Redis ran $calls of the $all calls: the rest, queued "
                  . 'for answered requests, were never sent');
ok($calls >= 1, '... the patient one among them');
is($t->redis('HGET', 'tiktok:msg:{u-patient}', 'status'), 'DELIVERED',
   'the patient report is stored');

# and the connection is fine afterwards
is(post('/quick', json_encode({ results => [ tiktok_dlr(id => 'u-after') ] }))
   ->{status}, 200, 'the next body is stored at once');

$proxy->stop;
$t->stop_nginx;
$t->check_logs;

done_testing;
