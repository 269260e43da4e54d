#!/usr/bin/perl
# Faults, with real processes: a 200 means the report is in Redis; anything
# else means the sender retries; every request gets an answer.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);
use TikTokTest;

my $AOF = "appendonly yes\nappendfsync always\n";

my $t = TikTokTest->new;

# Redis down when nginx starts: 503, then 200 once it is up
$t->start_nginx(workers => 2, server => <<'EOF');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_redis_timeout 1s;
        }
        location = /ping {
            return 200 "pong\n";
        }
EOF

sub post {
    my (@results) = @_;
    return $t->http(method => 'POST', path => '/webhook', timeout => 10,
                    headers => [ 'Content-Type' => 'application/json' ],
                    body => json_encode({ results => \@results }));
}

{
    my $res = post(tiktok_dlr(id => 'cold-1'));
    is($res->{status}, 503, 'Redis down at start: 503');
    $t->start_redis(extra => $AOF);
    my $ok = 0;
    for (1 .. 60) {
        $res = post(tiktok_dlr(id => 'cold-1'));
        $ok = 1, last if $res && $res->{status} == 200;
        sleep 0.1;
    }
    ok($ok, 'Redis up later: 200 without restarting nginx');
}

# concurrent clients, each posting new messageIds and writing down what it
# got for them; returns { id => status }, and the count of unanswered
sub load {
    my (%o) = @_;
    my $dir = $t->dir;
    my @pids;
    for my $c (1 .. $o{clients}) {
        my $pid = fork();
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            open my $out, '>', "$dir/load-$o{tag}-$c" or POSIX::_exit(2);
            my $until = time + $o{seconds};
            my $n = 0;
            while (time < $until) {
                $n++;
                my @ids = map { "$o{tag}-$c-$n-$_" } 1 .. 5;
                my $res = eval { post(map { tiktok_dlr(id => $_) } @ids) };
                my $st = $res ? $res->{status} : 'none';
                print $out "$st @ids\n";
            }
            close $out;
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    $o{during}->() if $o{during};
    waitpid $_, 0 for @pids;
    my (%got, $none, $requests);
    for my $c (1 .. $o{clients}) {
        open my $in, '<', "$dir/load-$o{tag}-$c" or next;
        while (<$in>) {
            chomp;
            my ($st, @ids) = split / /;
            $requests++;
            $none++ if $st eq 'none';
            $got{$_} = $st for @ids;
        }
    }
    return (\%got, $none || 0, $requests || 0);
}

sub lost {
    my ($got) = @_;
    my @acked = grep { $got->{$_} eq '200' } keys %$got;
    my @lost = grep { !$t->redis('EXISTS', "tiktok:msg:{$_}") } @acked;
    return (scalar @acked, scalar @lost);
}

# Redis killed (SIGKILL) in the middle of a load, restarted on the same data
# dir with appendfsync always: every acknowledged report is still there
{
    my ($got, $none, $requests) = load(
        tag => 'kill', clients => 8, seconds => 3,
        during => sub {
            sleep 1;
            kill 'KILL', $t->{redis_pid};
            waitpid $t->{redis_pid}, 0;
            delete $t->{redis_pid};
            delete $t->{redis_sock};
            sleep 0.3;
            $t->start_redis(extra => $AOF);
        });
    my ($acked, $lost) = lost($got);
    my @st = values %$got;
    ok($acked > 50, "kill -9 under load: $acked reports acknowledged of "
       . scalar(@st) . " in $requests requests");
    ok(scalar(grep { $_ eq '503' } @st) > 0, 'kill -9 under load: some got 503');
    is($lost, 0, 'kill -9 under load: no acknowledged report lost');
    is($none, 0, 'kill -9 under load: every request got an answer');
}

# nginx reloaded twice during a load: nothing acknowledged is lost
{
    my ($got, $none, $requests) = load(
        tag => 'reload', clients => 6, seconds => 3,
        during => sub {
            sleep 0.8;
            $t->reload_nginx;
            sleep 1;
            $t->reload_nginx;
        });
    my ($acked, $lost) = lost($got);
    ok($acked > 50, "reload under load: $acked acknowledged in $requests requests");
    is($lost, 0, 'reload under load: no acknowledged report lost');
    is($none, 0, 'reload under load: every request got an answer');
}

# Redis answering errors (out of memory): 503, and 200 again when it has room
{
    sleep 0.5;
    $t->redis('CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
    $t->redis('CONFIG', 'SET', 'maxmemory', '1mb');
    my $res = post(tiktok_dlr(id => 'oom-1'));
    is($res->{status}, 503, 'Redis out of memory: 503');
    is($t->redis('EXISTS', 'tiktok:msg:{oom-1}'), 0, 'Redis out of memory: not stored');
    $t->redis('CONFIG', 'SET', 'maxmemory', '0');
    $res = post(tiktok_dlr(id => 'oom-1'));
    is($res->{status}, 200, 'Redis has room again: 200');
    like($t->error_log, qr/tiktok_reports: redis transition failed: OOM/,
         'the Redis error is logged');
}

# clients that leave: mid-body, and while their reports wait for Redis
{
    for (1 .. 20) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $t->http_port) or die;
        print $s "POST /webhook HTTP/1.1\r\nHost: x\r\n"
            . "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            . '{"results":[';
        close $s;
    }
    $t->freeze_redis;
    for my $i (1 .. 20) {
        my $body = json_encode({ results => [ tiktok_dlr(id => "gone-$i") ] });
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $t->http_port) or die;
        print $s "POST /webhook HTTP/1.1\r\nHost: x\r\n"
            . "Content-Type: application/json\r\nContent-Length: "
            . length($body) . "\r\n\r\n$body";
        sleep 0.01;
        close $s;
    }
    sleep 1.5;
    $t->thaw_redis;
    my $ok = 0;
    for (1 .. 50) {
        my $res = post(tiktok_dlr(id => 'after-gone'));
        $ok = 1, last if $res && $res->{status} == 200;
        sleep 0.1;
    }
    ok($ok, 'after clients left mid-request: still serving');
    my $ping = $t->http(path => '/ping');
    is($ping->{body}, "pong\n", 'workers alive');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
