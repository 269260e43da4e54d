#!/usr/bin/perl
# The Redis socket is closed exactly once: strace on the worker while Redis
# goes away and comes back (and the watchdog drops a frozen Redis).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep);
use POSIX ();
use TikTokTest;

plan skip_all => 'needs strace' unless `which strace` =~ /strace/;
plan skip_all => 'not under valgrind' if $ENV{TT_VALGRIND};

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(server => <<'EOF2');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_redis_timeout 300ms;
        }
EOF2

my ($worker) = $t->worker_pids;
my $trace = $t->dir . '/strace.out';
my $pid = fork();
if ($pid == 0) {
    exec 'strace', '-f', '-qq', '-e', 'trace=socket,connect,close',
         '-o', $trace, '-p', $worker;
    POSIX::_exit(127);
}
sleep 1;

sub post {
    my ($id) = @_;
    my $r = $t->http(method => 'POST', path => '/webhook',
        headers => [ 'Content-Type' => 'application/json' ],
        body => json_encode({ results => [ tiktok_dlr(id => $id) ] }));
    return $r ? $r->{status} : 0;
}

is(post('fd-1'), 200, 'stored');
$t->stop_redis;
is(post('fd-2'), 503, 'Redis gone: 503');
sleep 0.5;
$t->start_redis;
my $st = 0;
for (1 .. 40) { $st = post('fd-3'); last if $st == 200; sleep 0.1 }
is($st, 200, 'Redis back: 200');
$t->freeze_redis;
is(post('fd-4'), 503, 'Redis frozen: 503');
sleep 0.5;
$t->thaw_redis;
for (1 .. 40) { $st = post('fd-5'); last if $st == 200; sleep 0.1 }
is($st, 200, 'Redis thawed: 200');
sleep 0.3;

kill 'INT', $pid;
waitpid $pid, 0;

open my $fh, '<', $trace or die "$trace: $!";
my (%open, $opened, $closed, @bad);
my $port = $t->redis_port;
my %sock;
while (<$fh>) {
    if (/socket\(.*\)\s+= (\d+)/) { $sock{$1} = 1; next }
    if (/connect\((\d+), .*htons\($port\)/) { $open{$1} = 1; $opened++; next }
    if (/close\((\d+)\)\s+= (-?\d+)/) {
        my ($fd, $rc) = ($1, $2);
        push @bad, $_ if $rc != 0;
        if ($open{$fd}) { delete $open{$fd}; $closed++ }
    }
}
ok($opened >= 3, "Redis connections opened: $opened");
is(scalar(keys %open), 1, 'one Redis connection open at the end');
is(scalar @bad, 0, 'no close() failed (a second close of the same fd fails)')
    or diag(join '', @bad);

$t->stop_nginx;
$t->check_logs;

done_testing;
