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

$t->start_nginx(main => "worker_shutdown_timeout 500ms;", server => <<"EOF2");
        location = /bad-db {
            tiktok_reports_redis_db 20;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /stuck {
            tiktok_reports_redis 127.0.0.1:$lport;
            tiktok_reports_redis_timeout 5s;
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

# SELECT refused (Redis has 16 databases): never 200, no reconnect storm
{
    my @st = map { my $s = post('/bad-db', "baddb-$_"); sleep 0.05; $s } 1 .. 20;
    is(scalar(grep { $_ == 503 } @st), 20, 'a SELECT refused: every request 503')
        or diag("@st");
    my @err = grep { /\[error\].*SELECT refused/ } split /\n/, $t->error_log;
    is(scalar @err, 1, 'the refusal is logged as an error once per outage');
    my @tries = grep { /SELECT refused/ } split /\n/, $t->error_log;
    ok(@tries < 15, 'reconnects back off (' . scalar(@tries) . ' attempts)');
}

# Commands pipelined behind a SELECT that Redis will refuse run on the
# connection's database 0 unless the script selects the database itself.
# Redis frozen: the kernel still completes a reconnect and buffers the
# handshake and the requests' commands; thawed, Redis runs them in order.
{
    $t->freeze_redis;
    my @st = map { my $s = post('/bad-db', "pipelined-$_", 3); sleep 0.1; $s }
             1 .. 30;
    $t->thaw_redis;
    sleep 0.5;
    is(scalar(grep { $_ == 503 } @st), 30, 'behind a refused SELECT: 503');
    is_deeply($t->redis('KEYS', 'tiktok:msg:{pipelined-*}'), [],
              'behind a refused SELECT: nothing written to database 0');
}

# a request waiting on a connect that never completes, then a shutdown
{
    my $pid = fork();
    if ($pid == 0) {
        post('/stuck', 'stuck-1', 10);
        POSIX::_exit(0);
    }
    sleep 0.5;
    my $t0 = time;
    $t->stop_nginx;
    ok(time - $t0 < 5, 'the worker exits at worker_shutdown_timeout');
    waitpid $pid, 0;
}

$t->check_logs;

done_testing;
