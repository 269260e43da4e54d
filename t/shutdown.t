#!/usr/bin/perl
# Edge cases of a worker's life: a Redis that refuses the handshake, and a
# shutdown (worker_shutdown_timeout) while the Redis connect is still open.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use Socket;
use POSIX ();
use Time::HiRes qw(sleep time);
use TikTokTest;

my $t = TikTokTest->new;
$t->start_redis;

# a Redis that never accepts: a listener whose backlog is full, so that new
# connects stay in progress
my $lport = TikTokTest::free_port();
my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
    LocalPort => $lport, Listen => 0, Proto => 'tcp', ReuseAddr => 1) or die $!;
my @fill;
for (1 .. 8) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $lport,
                                  Proto => 'tcp', Blocking => 0);
    push @fill, $s if $s;
}

# the stuck connect is bounded by a timeout far longer than the test: only
# worker_shutdown_timeout can end the request waiting on it
$t->start_nginx(main => "worker_shutdown_timeout 500ms;", server => <<"EOF2");
        location = /bad-db {
            tiktok_reports_redis_db 20;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /stuck {
            tiktok_reports_redis 127.0.0.1:$lport;
            tiktok_reports_redis_timeout 60s;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /ok {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
EOF2

sub post {
    my ($path, $id, $timeout) = @_;
    my $r = $t->http(method => 'POST', path => $path, timeout => $timeout || 10,
        headers => [ 'Content-Type' => 'application/json' ],
        body => json_encode({ results => [ tiktok_dlr(id => $id) ] }));
    return $r ? $r->{status} : 0;
}

sub attempts { scalar(() = $t->error_log =~ /SELECT refused/g) }

# SELECT refused (Redis has 16 databases): never 200, no reconnect storm.
# The worker connects at start, then after 100, 200, 400, 800, 1600 ms and
# every 2 s from then on: about 6 attempts in the first 3.5 s, and 2 in the
# 4.5 s after.
{
    my $t0;
    for (1 .. 500) {
        if (attempts()) { $t0 = time; last }
        sleep 0.02;
    }
    ok($t0, 'the worker tried to connect');
    $t0 ||= time;

    my @st = map { my $s = post('/bad-db', "baddb-$_"); sleep 0.05; $s } 1 .. 20;
    is(scalar(grep { $_ == 503 } @st), 20, 'a SELECT refused: every request 503')
        or diag("@st");
    my @err = grep { /\[error\].*SELECT refused/ } split /\n/, $t->error_log;
    is(scalar @err, 1, 'the refusal is logged as an error once per outage');

    sleep $t0 + 3.5 - time if time < $t0 + 3.5;
    my $early = attempts();
    ok($early >= 4 && $early <= 8,
       "reconnects back off from 100 ms ($early attempts in the first 3.5 s)");
    sleep $t0 + 8 - time;
    my $late = attempts() - $early;
    ok($late >= 2 && $late <= 3,
       "... up to every 2 s ($late attempts in the next 4.5 s)");
}

# Commands pipelined behind a SELECT that Redis will refuse run on the
# connection's database 0 unless the script selects the database itself.
# Redis frozen: the kernel still completes a reconnect and buffers the
# handshake and the requests' commands; thawed, Redis runs them in order.
# Every connect attempt (2 s apart) waits 1 s for its handshake, and a
# request that comes meanwhile is queued behind it: 5 s of requests, one
# every 0.1 s, see at least one such wait.
{
    $t->redis('CONFIG', 'RESETSTAT');
    $t->freeze_redis;
    my ($n, @st) = (0);
    my $until = time + 5;
    while (time < $until) {
        push @st, post('/bad-db', 'pipelined-' . ++$n, 3);
        sleep 0.1;
    }
    $t->thaw_redis;
    sleep 0.5;
    is(scalar(grep { $_ == 503 } @st), scalar @st,
       'behind a refused SELECT: ' . scalar(@st) . ' requests, all 503');
    my ($calls) = $t->redis('INFO', 'commandstats')
                  =~ /^cmdstat_evalsha:calls=(\d+)/m;
    ok(($calls // 0) >= 1, 'behind a refused SELECT: requests were queued, '
       . 'and their calls reached Redis (' . ($calls // 0) . ')');
    is_deeply($t->redis('KEYS', 'tiktok:msg:{pipelined-*}'), [],
              'behind a refused SELECT: nothing written to database 0');
}

# a request waiting on a connect that never completes, then a shutdown: at
# worker_shutdown_timeout (500 ms) the worker closes what is left (the
# stuck connect, and an established Redis connection) and exits
{
    is(post('/ok', 'ok-1'), 200, 'an established Redis connection beside');
    my $pid = fork();
    if ($pid == 0) {
        post('/stuck', 'stuck-1', 30);
        POSIX::_exit(0);
    }
    sleep 0.5;
    is(waitpid($pid, POSIX::WNOHANG()), 0, 'a request waits on the stuck connect');
    my $t0 = time;
    $t->stop_nginx;
    my $took = time - $t0;
    ok($took < ($ENV{TT_VALGRIND} ? 8 : 2),
       sprintf('the worker exits at worker_shutdown_timeout (%.2fs)', $took));
    waitpid $pid, 0;
}

$t->check_logs;

done_testing;
