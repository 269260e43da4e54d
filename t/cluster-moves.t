#!/usr/bin/perl
# Redis Cluster moving under load (t/lib/RedisCluster.pm; the steady
# state is t/cluster.t): "redis-cli --cluster reshard" of 1500 slots while
# four clients post fresh reports (no acknowledged report lost, at most 1 %
# of requests failed, the feed has every acknowledged change); a master
# killed (SIGKILL) under load with tiktok_reports_redis_wait 1 (every
# report answered 200 is on the promoted replica, and 200 again without
# restarting nginx); a master and its replica frozen until the cluster
# turns itself down (503), then thawed (200 again).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use TikTokTest;
use RedisCluster;

plan skip_all => 'timing-driven: sized for native speed' if $ENV{TT_VALGRIND};

my $t = TikTokTest->new;
my $c = RedisCluster->new($t);
diag(sprintf 'cluster of 6 up in %.1f s', $c->started_in);

my $seeds = $c->seeds;
$t->start_nginx(no_redis => 1, workers => 2, http => <<"EOF", server => <<"EOF2");
    tiktok_reports_redis $seeds cluster;
    tiktok_reports_redis_timeout 2s;
EOF
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /webhook-wait {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_redis_wait 1 500ms;
        }
        location /status/ {
            tiktok_reports_status;
        }
EOF2

# odd ids delivered, even ids seen
sub report {
    my ($id) = @_;
    return $id =~ /[13579]$/ ? tiktok_dlr(id => $id) : tiktok_seen(id => $id);
}
sub want_status { $_[0] =~ /[13579]$/ ? 'DELIVERED' : 'SEEN' }

sub post {
    my ($path, @ids) = @_;
    my $r = eval {
        $t->http(method => 'POST', path => $path, timeout => 15,
                 headers => [ 'Content-Type' => 'application/json' ],
                 body => json_encode({ results => [ map { report($_) } @ids ] }));
    };
    return $r ? $r->{status} : 'none';
}

# $n clients posting bodies of $size fresh ids to $path until stop_load;
# each request logged as "start end status ids…"
sub start_load {
    my ($name, $path, $n, $size) = @_;
    my $dir = $t->dir;
    unlink "$dir/stop-$name";
    my @pids;
    for my $k (1 .. $n) {
        my $pid = fork();
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            eval {
                open my $out, '>', "$dir/load-$name-$k" or die $!;
                select((select($out), $| = 1)[0]);
                my $until = time + 120;
                my $i = 0;
                while (time < $until && !-e "$dir/stop-$name") {
                    my @ids = map { "$name-$$-" . ++$i } 1 .. $size;
                    my $start = time;
                    my $st = post($path, @ids);
                    printf $out "%.3f %.3f %s %s\n", $start, time, $st, "@ids";
                    sleep 0.01;
                }
            };
            POSIX::_exit(0);    # no destructor: nginx and the cluster are the parent's
        }
        push @pids, $pid;
    }
    return { name => $name, n => $n, pids => \@pids };
}

# stops the clients; their requests as [start, end, status, [ids]]
sub stop_load {
    my ($load) = @_;
    my $dir = $t->dir;
    open my $fh, '>', "$dir/stop-$load->{name}";
    close $fh;
    waitpid $_, 0 for @{ $load->{pids} };
    my @req;
    for my $k (1 .. $load->{n}) {
        open my $in, '<', "$dir/load-$load->{name}-$k" or next;
        while (<$in>) {
            chomp;
            my ($start, $end, $st, @ids) = split / /;
            push @req, [ $start, $end, $st, \@ids ];
        }
    }
    return @req;
}

# every id answered 200: its hash on the master now serving its slot (no
# redirect followed), with its status
sub lost {
    my (@req) = @_;
    my @lost;
    my $map = $c->slot_map;
    for my $id (map { @{ $_->[3] } } grep { $_->[2] eq '200' } @req) {
        my $key = "tiktok:msg:{$id}";
        my $st = eval { $map->[RedisCluster::keyslot($key)]->cmd('HGET', $key, 'status') };
        push @lost, "$id: " . ($st // $@ || 'nil') if ($st // '') ne want_status($id);
    }
    return @lost;
}

# every id answered 200: its change (seq 1) in its feed partition
sub missing_from_feed {
    my (@req) = @_;
    my %in;
    for my $p (0 .. 15) {
        my $key = "tiktok:events:{$p}";
        for my $e (@{ $c->cmd_for_key($key, 'XRANGE', $key, '-', '+') || [] }) {
            my %f = @{ $e->[1] };
            $in{"$f{messageId} $p $f{seq} $f{status}"} = 1 if defined $f{seq};
        }
    }
    my @miss;
    for my $id (map { @{ $_->[3] } } grep { $_->[2] eq '200' } @req) {
        my $p = RedisCluster::keyslot("tiktok:msg:{$id}") % 16;
        push @miss, $id unless $in{"$id $p 1 " . want_status($id)};
    }
    return @miss;
}

sub summary {
    my (@req) = @_;
    my %st;
    $st{ $_->[2] }++ for @req;
    return join ', ', map { "$_: $st{$_}" } sort keys %st;
}

sub first_few { join ' ', @_[0 .. ($#_ > 4 ? 4 : $#_)] }

is(post('/webhook', 'warm-1', 'warm-2', 'warm-3'), 200, 'a first body: 200');

# --- redis-cli --cluster reshard of 1500 slots under load ---------------------------

{
    my ($from, $to) = $c->masters;
    my $had = () = $c->slots_served($from);
    my $load = start_load('rs', '/webhook', 4, 5);
    sleep 1;
    my $t0 = time;
    my $job = $c->reshard(1500, $from, $to);
    my $rc = $job->wait(90);
    my $t1 = time;
    sleep 1;
    my @req = stop_load($load);
    is($rc, 0, sprintf('redis-cli --cluster reshard of 1500 slots (%.1f s)', $t1 - $t0))
        or diag($job->log);
    my $has = () = $c->slots_served($from);
    is($had - $has, 1500, '... 1500 slots moved');
    ok($c->wait_ready(20), '... the cluster settled') or diag($c->why);

    my @during = grep { $_->[1] > $t0 && $_->[0] < $t1 } @req;
    diag('reshard: ' . summary(@req) . '; during it: ' . summary(@during));
    ok(@during >= 20, scalar(@during) . ' requests while slots moved');
    my $failed = grep { $_->[2] ne '200' } @req;
    ok($failed <= 0.01 * @req, "at most 1 % of requests failed ($failed of "
                               . scalar(@req) . ')');
    my @lost = lost(@req);
    is(scalar @lost, 0, 'no acknowledged report lost: each on its master, '
                        . 'with its status') or diag(first_few(@lost));
    my @miss = missing_from_feed(@req);
    is(scalar @miss, 0, 'every acknowledged change in its feed partition')
        or diag(first_few(@miss));
    my @ids = map { @{ $_->[3] } } grep { $_->[2] eq '200' } @req[0 .. 30];
    my $r = $t->http(method => 'POST', path => '/status/',
                     headers => [ 'Content-Type' => 'application/json' ],
                     body => json_encode({ ids => \@ids }));
    my $j = eval { json_decode($r->{body}) } || {};
    is_deeply([ map { $_->{status} } @{ $j->{results} || [] } ],
              [ map { want_status($_) } @ids ], 'a batch lookup after the reshard');
}

# --- a master killed under load, with tiktok_reports_redis_wait 1 ---------------------

{
    my $victim = ($c->masters)[2];
    my $replica = $c->replica_of($victim);
    ok($replica, "master $victim->{port} and its replica $replica->{port}");
    my @probe = $c->names_in([ $c->slots_served($victim) ], 60, "probe-$$-",
                             'tiktok:msg:{%s}');
    my $load = start_load('fo', '/webhook-wait', 4, 3);
    sleep 1;
    my $killed = time;
    $c->kill_master($victim);
    ok($c->wait_failover(30), 'the replica promoted') or diag($c->why);
    my $promoted = time;
    is($c->node_for_key("tiktok:msg:{$probe[0]}")->port, $replica->port,
       '... it serves the killed master\'s slots');
    # the killed node back, as the new master's replica: WAIT 1 can be met
    # again for those slots
    $c->restart($victim);
    ok($c->wait_ready(30), 'the killed node back as a replica') or diag($c->why);

    my ($back, $tries) = (0, 0);
    while (time < $promoted + 15 && @probe) {
        $tries++;
        if (post('/webhook-wait', shift @probe) eq '200') {
            $back = time;
            last;
        }
        sleep 0.2;
    }
    ok($back, sprintf('200 again on the promoted master without restarting '
                      . 'nginx (%.1f s after the promotion, %d tries)',
                      ($back || time) - $promoted, $tries));
    sleep 2;
    my @req = stop_load($load);
    diag(sprintf 'failover: killed at 0, promoted at %.1f s, 200 again at %.1f s; %s',
                 $promoted - $killed, ($back || time) - $killed, summary(@req));
    # a second after that (time for each worker to have refreshed its map)
    my @after = grep { $_->[0] > ($back || time) + 1 } @req;
    ok(@after && !grep({ $_->[2] ne '200' } @after),
       'a second after that, every request 200 (' . summary(@after) . ')');
    ok(!grep({ $_->[2] eq 'none' } @req), 'every request got an answer');
    my @lost = lost(@req);
    is(scalar @lost, 0, 'no acknowledged report lost: every 200 is on the '
                        . 'master serving it now') or diag(first_few(@lost));
    my @miss = missing_from_feed(@req);
    is(scalar @miss, 0, 'every acknowledged change in its feed partition')
        or diag(first_few(@miss));
}

# --- the cluster down: a master and its replica frozen ----------------------------

{
    my $frozen = ($c->masters)[0];
    my ($id) = $c->names_in([ map { $c->slots_served($_) }
                              grep { $_ != $frozen } $c->masters ],
                            1, "frozen-$$-", 'tiktok:msg:{%s}');
    ok($c->cluster_down('freeze', $frozen),
       'a master and its replica frozen: the others say cluster_state:fail')
        or diag($c->why);
    my $t0 = time;
    my $st = post('/webhook', $id);
    my $took = time - $t0;
    is($st, 503, 'a report for a master still running: 503 (CLUSTERDOWN)');
    ok($took < 3.5, sprintf('... within the timeout (%.1f s)', $took));
    ok($c->cluster_up, 'thawed: the cluster up again') or diag($c->why);
    my ($ok, $tries) = (0, 0);
    my $until = time + 15;
    while (time < $until) {
        $tries++;
        if (post('/webhook', "thawed-$$-$tries", $id) eq '200') { $ok = 1; last }
        sleep 0.2;
    }
    ok($ok, "200 again without restarting nginx ($tries tries)");
    is($c->cmd_for_key("tiktok:msg:{$id}", 'HGET', "tiktok:msg:{$id}", 'status'),
       want_status($id), '... stored');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
