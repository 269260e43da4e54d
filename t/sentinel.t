#!/usr/bin/perl
# The master found through Sentinel: a master, a replica and three
# sentinels (quorum 2) on loopback.  200 through Sentinel; the master
# killed under a small load: 503 during the switch, 200 again without
# restarting nginx, and what was acknowledged after the kill is on the new
# master; an unknown master name answers 503 and is logged once.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use TikTokTest;
use RedisProcs;

my $t = TikTokTest->new;

# nginx -t: what can be seen without the network
{
    for my $c (
        [ '127.0.0.1:26379 sentinel=', qr/"sentinel=" of "tiktok_reports_redis" needs the master's name/ ],
        [ '127.0.0.1:99999 sentinel=mymaster', qr/invalid port in "127\.0\.0\.1:99999" of "tiktok_reports_redis"/ ],
        [ 'sentinel=mymaster', qr/no address in "tiktok_reports_redis"/ ],
        [ '127.0.0.1:1 127.0.0.1:2', qr/more than one address in "tiktok_reports_redis" needs "sentinel="/ ],
        [ '127.0.0.1:1 sentinel=a sentinel=b', qr/duplicate "sentinel="/ ],
    ) {
        my ($rc, $out) = $t->nginx_test_conf(server => <<"EOF2");
        location = /webhook {
            tiktok_reports_redis $c->[0];
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
EOF2
        isnt($rc, 0, "nginx -t refuses \"$c->[0]\"");
        like($out, $c->[1], "nginx -t says why for \"$c->[0]\"");
    }
    my ($rc, $out) = $t->nginx_test_conf(server => <<"EOF2");
        location = /webhook {
            tiktok_reports_redis 127.0.0.1:1 127.0.0.1 sentinel=mymaster;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
EOF2
    is($rc, 0, 'nginx -t takes sentinels that do not run') or diag($out);
}

my $master = RedisProcs->new($t, name => 'master');
my $replica = RedisProcs->new($t, name => 'replica',
    conf => "replicaof 127.0.0.1 " . $master->port . "\n");

my @sentinels = map {
    RedisProcs->new($t, name => 'sentinel', sentinel => 1, conf => <<"EOF2")
sentinel monitor mymaster 127.0.0.1 @{[ $master->port ]} 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 3000
sentinel parallel-syncs mymaster 1
EOF2
} 1 .. 3;

# until the sentinels know one another and the replica, and it is in sync
sub wait_for {
    my ($what, $seconds, $cond) = @_;
    my $until = time + $seconds;
    while (time < $until) {
        return 1 if eval { $cond->() };
        sleep 0.2;
    }
    diag("$what: not within $seconds s");
    return 0;
}

ok(wait_for('sentinels ready', 30, sub {
    for my $s (@sentinels) {
        return 0 unless @{ $s->cmd('SENTINEL', 'SENTINELS', 'mymaster') } == 2;
        my $r = $s->cmd('SENTINEL', 'REPLICAS', 'mymaster');
        return 0 unless @$r == 1;
        my %h = @{ $r->[0] };
        return 0 unless $h{flags} eq 'slave';
    }
    return $replica->cmd('INFO', 'replication') =~ /master_link_status:up/;
}), 'master, replica and three sentinels ready');

my $list = join ' ', map { $_->addr } @sentinels;

$t->start_nginx(server => <<"EOF2");
        location = /webhook {
            tiktok_reports_redis $list sentinel=mymaster;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_redis_timeout 1s;
        }
        location /status/ {
            tiktok_reports_redis $list sentinel=mymaster;
            tiktok_reports_status;
        }
        location = /unknown {
            tiktok_reports_redis $list sentinel=nosuch;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
EOF2

sub post {
    my ($path, @ids) = @_;
    my $res = eval {
        $t->http(method => 'POST', path => $path, timeout => 10,
                 headers => [ 'Content-Type' => 'application/json' ],
                 body => json_encode({ results => [ map { tiktok_dlr(id => $_) } @ids ] }));
    };
    return $res ? $res->{status} : 'none';
}

sub until_200 {
    my ($id, $seconds) = @_;
    my $until = time + $seconds;
    while (time < $until) {
        return 1 if post('/webhook', $id) eq '200';
        sleep 0.1;
    }
    return 0;
}

{
    ok(until_200('via-sentinel', 5), '200 through Sentinel');
    is($master->cmd('HGET', 'tiktok:msg:{via-sentinel}', 'status'), 'DELIVERED',
       'stored on the master');
    my $res = $t->http(path => '/status/via-sentinel');
    is($res->{status}, 200, 'lookup through Sentinel');
    like($t->error_log, qr/master "mymaster" is 127\.0\.0\.1:@{[ $master->port ]}/,
         'the master found is logged');
}

# an unknown master name: 503, one line at error with the reason
{
    my @st = map { my $s = post('/unknown', "unknown-$_"); sleep 0.3; $s } 1 .. 8;
    ok(!grep({ $_ ne '503' } @st), 'unknown master name: 503') or diag("@st");
    my @err = grep { /\[error\]/ && /sentinel=nosuch unavailable/ }
              split /\n/, $t->error_log;
    is(scalar @err, 1, 'unknown master name: logged once at error')
        or diag(join "\n", @err);
    like($err[0] // '', qr/no sentinel tells master "nosuch" \(127\.0\.0\.1:\d+: no such master\)/,
         'unknown master name: the reason');
}

# the master killed (SIGKILL) under a small load of posting clients
{
    my $dir = $t->dir;
    my $stop = "$dir/load-stop";
    my @pids;
    for my $c (1 .. 3) {
        my $pid = fork();
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            open my $out, '>', "$dir/load-$c" or POSIX::_exit(2);
            select((select($out), $| = 1)[0]);
            my $until = time + 60;
            my $n = 0;
            while (time < $until && !-e $stop) {
                $n++;
                my @ids = map { "fo-$c-$n-$_" } 1 .. 3;
                my $start = time;
                my $st = post('/webhook', @ids);
                print $out "$start $st @ids\n";
                sleep 0.05;
            }
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }

    sleep 1;
    my $killed = time;
    $master->stop('KILL');

    my $promoted = wait_for('failover', 40, sub {
        $replica->cmd('ROLE')->[0] eq 'master'
    });
    ok($promoted, 'the sentinels promoted the replica');

    my $back = wait_for('200 after the switch', 30, sub {
        post('/webhook', 'after-switch') eq '200'
    });
    ok($back, '200 again after the switch, without restarting nginx');
    sleep 1;

    open my $fh, '>', $stop;
    close $fh;
    waitpid $_, 0 for @pids;

    my (@after, %st, $none);
    for my $c (1 .. 3) {
        open my $in, '<', "$dir/load-$c" or next;
        while (<$in>) {
            chomp;
            my ($start, $st, @ids) = split / /;
            $none++ if $st eq 'none';
            next unless $start > $killed;
            $st{$st}++;
            push @after, @ids if $st eq '200';
        }
    }
    ok($st{503}, 'during the switch: 503') or diag(explain \%st);
    ok(@after > 0, 'after the switch: 200 (' . scalar(@after) . ' reports)');
    my @lost = grep { !$replica->cmd('EXISTS', "tiktok:msg:{$_}") } @after;
    is(scalar @lost, 0, 'every report acknowledged after the kill is on the new master')
        or diag("@lost[0 .. ($#lost < 5 ? $#lost : 5)]");
    is($replica->cmd('HGET', 'tiktok:msg:{after-switch}', 'status'), 'DELIVERED',
       'stored on the new master');
    ok(!$none, 'every request got an answer');
    like($t->error_log, qr/master "mymaster" (?:is|switched to) 127\.0\.0\.1:@{[ $replica->port ]}/,
         'the new master is logged');

    my $res = $t->http(path => '/status/via-sentinel');
    is($res->{status}, 200, 'lookup on the new master: what was replicated before');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
