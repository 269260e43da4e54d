#!/usr/bin/perl
# How the nodes of a Redis Cluster are announced in CLUSTER SLOTS: nil
# (cluster-preferred-endpoint-type unknown-endpoint: the host asked, with
# the port given), and a host name (cluster-announce-hostname with
# cluster-preferred-endpoint-type hostname), resolved at run time through
# nginx's resolver; without a resolver, a host name is refused, logged,
# and the body answers 503.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use TikTokTest;
use RedisCluster;
use RedisProcs;

my $t = TikTokTest->new;
my $c = RedisCluster->new($t);
my $dns = RedisProcs::DNS->new($t, name => 'redis.cluster.test',
                               address => '127.0.0.1');

sub post {
    my ($path, @ids) = @_;
    return $t->http(method => 'POST', path => $path,
                    headers => [ 'Content-Type' => 'application/json' ],
                    body => json_encode({ results => [
                        map { tiktok_dlr(id => $_) } @ids ] }));
}

# until the worker has a map from the endpoints as now announced
sub until_200 {
    my ($path, $id) = @_;
    my $r;
    for (1 .. 100) {
        $r = post($path, $id);
        return $r if $r->{status} == 200;
        sleep 0.1;
    }
    return $r;
}

sub stored {
    my ($prefix, @ids) = @_;
    return scalar grep {
        my $k = "${prefix}msg:{$_}";
        ($c->cmd_for_key($k, 'HGET', $k, 'status') // '') eq 'DELIVERED'
    } @ids;
}

my $seeds = $c->seeds;
my $server = <<"EOF";
        location = /webhook {
            tiktok_reports_redis $seeds cluster;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /resolved {
            resolver 127.0.0.1:@{[ $dns->port ]} valid=1s;
            tiktok_reports_redis $seeds cluster;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_key_prefix "res:";
        }
EOF

# "?" for every endpoint
$_->cmd('CONFIG', 'SET', 'cluster-preferred-endpoint-type', 'unknown-endpoint')
    for $c->nodes;
my $slots = ($c->masters)[0]->cmd('CLUSTER', 'SLOTS');
ok(!defined $slots->[0][2][0] || $slots->[0][2][0] eq '?',
   'CLUSTER SLOTS gives no endpoint (nil)');
$t->start_nginx(server => $server);
my @ids = map { "ep-q-$$-$_" } 1 .. 30;
my $r = until_200('/webhook', $ids[0]);
is($r->{status}, 200, '"?" endpoints: the host asked serves');
$r = post('/webhook', @ids);
is($r->{status}, 200, '... 30 reports: 200');
is(json_decode($r->{body})->{duplicates}, 1, '... one of them already there');
is(stored('tiktok:', @ids), 30, '... each on its master');
$t->stop_nginx;

# host names
$_->cmd('CONFIG', 'SET', 'cluster-announce-hostname', 'redis.cluster.test')
    for $c->nodes;
$_->cmd('CONFIG', 'SET', 'cluster-preferred-endpoint-type', 'hostname')
    for $c->nodes;
my $named;
for (1 .. 50) {
    $slots = ($c->masters)[0]->cmd('CLUSTER', 'SLOTS');
    $named = !grep { $_->[2][0] ne 'redis.cluster.test' } @$slots;
    last if $named;
    sleep 0.1;
}
ok($named, 'CLUSTER SLOTS names every master redis.cluster.test');

$t->start_nginx(server => $server);
@ids = map { "ep-h-$$-$_" } 1 .. 30;
$r = until_200('/resolved', $ids[0]);
is($r->{status}, 200, 'host names with a resolver: 200');
$r = post('/resolved', @ids);
is($r->{status}, 200, '... 30 reports: 200');
is(stored('res:', @ids), 30, '... each on its master');

# no resolver: the name cannot be reached, nothing is written
$r = post('/webhook', "ep-n-$$");
is($r->{status}, 503, 'host names without a resolver: 503');
my $log;
for (1 .. 50) {
    $log = $t->error_log;
    last if $log =~ /announces the host name/;
    sleep 0.1;
}
like($log, qr/announces the host name "redis\.cluster\.test:\d+", which needs a "resolver"/,
     '... logged with the reason');
is(stored('tiktok:', "ep-n-$$"), 0, '... and not stored');

$t->stop_nginx;
$t->check_logs;

done_testing;
