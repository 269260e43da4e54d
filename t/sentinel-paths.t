#!/usr/bin/perl
# The ways the master found through Sentinel can change under a running
# nginx, each on its own: a READONLY reply on the master's connection (the
# master demoted by hand), a ROLE that is not master at the handshake
# (Sentinel still names an address that is a replica now), a change that
# only the periodic re-check can see (the sentinel reconfigured, no
# +switch-master), and +switch-master after a graceful SENTINEL FAILOVER.
#
# Two redis-servers, A and B, and one sentinel; the sentinel's own
# failure detection is slow (60 s), so that only what the test does moves
# the master.  The re-check runs every 5-6 s: where a case must not be
# rescued by it, the case starts right after one (seen as a new connection
# at the sentinel), so that the next is seconds away.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use TikTokTest;
use RedisProcs;

my $t = TikTokTest->new;

my $ra = RedisProcs->new($t, name => 'a');
my $rb = RedisProcs->new($t, name => 'b',
    conf => "replicaof 127.0.0.1 " . $ra->port . "\n");

my $slow = <<"EOF";
sentinel down-after-milliseconds mymaster 60000
sentinel failover-timeout mymaster 10000
EOF

my $s = RedisProcs->new($t, name => 'sentinel', sentinel => 1,
    conf => "sentinel monitor mymaster 127.0.0.1 @{[ $ra->port ]} 1\n$slow");

sub wait_for {
    my ($what, $seconds, $cond) = @_;
    my $until = time + $seconds;
    while (time < $until) {
        return 1 if eval { $cond->() };
        sleep 0.1;
    }
    diag("$what: not within $seconds s");
    return 0;
}

# the sentinel watches another master under the same name: no
# +switch-master is published for it
sub monitor {
    my ($r) = @_;
    $s->cmd('SENTINEL', 'REMOVE', 'mymaster');
    $s->cmd('SENTINEL', 'MONITOR', 'mymaster', '127.0.0.1', $r->port, 1);
    $s->cmd('SENTINEL', 'SET', 'mymaster',
            'down-after-milliseconds', 60000, 'failover-timeout', 10000);
}

sub replica_ready {
    my ($master, $replica) = @_;
    return wait_for('replica in sync', 20, sub {
        return 0 unless
            $replica->cmd('INFO', 'replication') =~ /master_link_status:up/;
        my $r = $s->cmd('SENTINEL', 'REPLICAS', 'mymaster');
        return 0 unless @$r == 1;
        my %h = @{ $r->[0] };
        return $h{port} == $replica->port && $h{flags} eq 'slave'
               && $h{'master-link-status'} eq 'ok';
    });
}

# connections the sentinel accepted: nginx opens one at each re-check
sub sentinel_conns {
    return ($s->cmd('INFO', 'stats') =~ /total_connections_received:(\d+)/)[0];
}

# returns right after nginx's re-check asked the sentinel
sub after_recheck {
    my $n = sentinel_conns();
    my $until = time + 10;
    while (time < $until) {
        return 1 if sentinel_conns() > $n;
        sleep 0.02;
    }
    diag('no re-check within 10 s');
    return 0;
}

sub post {
    my (@ids) = @_;
    my $res = eval {
        $t->http(method => 'POST', path => '/webhook', timeout => 10,
                 headers => [ 'Content-Type' => 'application/json' ],
                 body => json_encode({ results => [ map { tiktok_dlr(id => $_) } @ids ] }));
    };
    return $res ? $res->{status} : 'none';
}

# posts new ids until one answers 200; returns that id and when
sub until_200 {
    my ($prefix, $seconds) = @_;
    my $until = time + $seconds;
    my $n = 0;
    while (time < $until) {
        my $id = "$prefix-" . ++$n;
        return ($id, time) if post($id) eq '200';
        sleep 0.05;
    }
    return;
}

# (the sentinel kills the clients of a server it reconfigures: asked again)
sub on {
    my ($r, $id) = @_;
    my $v = eval { $r->cmd('HGET', "tiktok:msg:{$id}", 'status') };
    $v = $r->cmd('HGET', "tiktok:msg:{$id}", 'status') if $@;
    return $v // '';
}

sub log_since {
    my ($pos) = @_;
    return substr($t->error_log, $pos);
}

ok(replica_ready($ra, $rb), 'A master, B its replica, the sentinel sees both');

my $list = $s->addr;

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
EOF2

my ($id, $when) = until_200('start', 5);
ok($id, '200 through Sentinel');
is(on($ra, $id // ''), 'DELIVERED', 'stored on A');

# (1) READONLY: the sentinel is told of B, and A demoted to B's replica
# at once; nginx, still on A, learns it from the first write's reply
{
    ok(after_recheck(), '1: a re-check seen');
    my $pos = length $t->error_log;
    my $start = time;
    $rb->cmd('REPLICAOF', 'NO', 'ONE');
    monitor($rb);
    $ra->cmd('REPLICAOF', '127.0.0.1', $rb->port);

    my ($id, $when) = until_200('readonly', 10);
    ok($id && $when - $start < 2,
       '1: 200 again within 2 s of the demotion (re-check 5 s away)')
        or diag($id ? sprintf('after %.1f s', $when - $start) : 'never');
    is(on($rb, $id // ''), 'DELIVERED', '1: stored on B, the new master');
    my $log = log_since($pos);
    like($log, qr/\(at 127\.0\.0\.1:@{[ $ra->port ]}\) unavailable: READONLY: no longer the master/,
         '1: the READONLY reply dropped the connection');
    unlike($log, qr/the master moved|the master switched/,
           '1: neither the re-check nor +switch-master did it');
    ok(replica_ready($rb, $ra), '1: A is B\'s replica now');
}

# (2) ROLE: A promoted by hand and B demoted under the sentinel's eyes,
# B writable as a replica; nginx's connection to B is killed, and the
# sentinel still names B: the handshake's ROLE keeps writes off it
{
    my $pos = length $t->error_log;
    $ra->cmd('REPLICAOF', 'NO', 'ONE');
    $rb->cmd('CONFIG', 'SET', 'replica-read-only', 'no');
    $rb->cmd('REPLICAOF', '127.0.0.1', $ra->port);
    ok(wait_for('B in sync', 10, sub {
        $rb->cmd('INFO', 'replication') =~ /master_link_status:up/
    }), '2: B is A\'s replica, still named by the sentinel');
    $rb->cmd('CLIENT', 'KILL', 'TYPE', 'normal');

    my @st;
    my $until = time + 3;
    my $n = 0;
    while (time < $until) {
        push @st, post('role-' . ++$n);
        sleep 0.1;
    }
    ok(@st > 5 && !grep({ $_ ne '503' } @st),
       '2: 503 while the sentinel names a replica') or diag("@st");
    ok(!grep({ on($rb, "role-$_") || on($ra, "role-$_") } 1 .. $n),
       '2: nothing written to the replica');
    my $res = $t->http(path => "/status/$id");
    is($res->{status}, 503, '2: no lookup from the replica either');
    like(log_since($pos),
         qr/127\.0\.0\.1:@{[ $rb->port ]} is not the master \(ROLE: slave\)/,
         '2: the handshake says why');

    # the sentinel names the real master: the next reconnect finds it
    monitor($ra);
    my ($id2) = until_200('role-after', 10);
    ok($id2, '2: 200 once the sentinel names A');
    is(on($ra, $id2 // ''), 'DELIVERED', '2: stored on A');
    $rb->cmd('CONFIG', 'SET', 'replica-read-only', 'yes');
    ok(replica_ready($ra, $rb), '2: B is A\'s replica, the sentinel sees it');
}

# (3) only the re-check: B promoted and the sentinel told, A left a master
# that takes writes (no READONLY), and no +switch-master
{
    my $pos = length $t->error_log;
    my $start = time;
    $rb->cmd('REPLICAOF', 'NO', 'ONE');
    monitor($rb);

    my ($moved, $n) = (0, 0);
    my $until = time + 12;
    while (time < $until) {
        my $id = 'recheck-' . ++$n;
        if (post($id) eq '200' && on($rb, $id)) {
            $moved = time;
            last;
        }
        sleep 0.1;
    }
    ok($moved, '3: writes go to B, found by the re-check')
        or diag('still on A after 12 s');
    diag(sprintf('3: moved after %.1f s', $moved - $start)) if $moved;
    my $log = log_since($pos);
    like($log, qr/master "mymaster" is 127\.0\.0\.1:@{[ $rb->port ]}/,
         '3: the re-check found B');
    like($log, qr/\(at 127\.0\.0\.1:@{[ $ra->port ]}\) unavailable: the master moved/,
         '3: and dropped the connection to A');
    unlike($log, qr/READONLY|switched/, '3: nothing else did');

    $ra->cmd('REPLICAOF', '127.0.0.1', $rb->port);
    ok(replica_ready($rb, $ra), '3: A is B\'s replica again');
}

# (4) SENTINEL FAILOVER: A promoted, +switch-master published; B stays a
# master that takes writes for a while, so what nginx acknowledges must go
# to A from the switch on
{
    ok(after_recheck(), '4: a re-check seen');
    my $pos = length $t->error_log;
    ok(wait_for('failover accepted', 10, sub {
        $s->cmd('SENTINEL', 'FAILOVER', 'mymaster') eq 'OK'
    }), '4: SENTINEL FAILOVER accepted');

    my $switched;
    wait_for('switch', 10, sub {
        my %m = @{ $s->cmd('SENTINEL', 'MASTER', 'mymaster') };
        return 0 unless $m{port} == $ra->port;
        $switched = time;
    });
    ok($switched, '4: the sentinel switched to A');

    my (@acked, $n);
    my $until = time + 3;
    while (time < $until) {
        my $id = 'switch-' . ++$n;
        my $t0 = time;
        push @acked, $id if post($id) eq '200' && $t0 > ($switched // 0) + 1;
        sleep 0.05;
    }
    ok(@acked > 5, '4: 200 on from a second after the switch ('
                   . scalar(@acked) . ' reports)');
    my @astray = grep { on($ra, $_) ne 'DELIVERED' } @acked;
    is(scalar @astray, 0, '4: all of them on A, the new master')
        or diag("@astray");
    my $log = log_since($pos);
    like($log, qr/master "mymaster" switched to 127\.0\.0\.1:@{[ $ra->port ]}/,
         '4: +switch-master moved nginx');
    unlike($log, qr/the master moved|READONLY/,
           '4: neither the re-check nor READONLY');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
