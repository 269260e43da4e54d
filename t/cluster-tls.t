#!/usr/bin/perl
# TLS to a Redis Cluster: three masters that speak TLS to clients and to
# each other (tls-cluster), each with a plain port too for the test's own
# look.  A TLS connection is told the TLS ports in CLUSTER SLOTS, so the
# module finds and verifies every master by TLS: reports stored on each
# slot's master, lookups across the masters; a CA that signed nothing
# there answers 503 and stores nothing.

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
my $d = TikTokTest::tls_certs($t->dir);

# TLS ports with their bus ports (+10000) reserved, plain ports beside
my @tls = RedisCluster::_ports(3);
my @nodes = map {
    my $q = $tls[$_];
    RedisProcs->new($t, name => 'tlscluster', read_timeout => 5, conf => <<"EOF")
tls-port $q
tls-cert-file $d/server.pem
tls-key-file $d/server.key
tls-ca-cert-file $d/ca.pem
tls-auth-clients no
tls-cluster yes
tls-replication yes
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout 2000
cluster-port @{[ $q + 10000 ]}
EOF
} 0 .. 2;

my $log = $t->dir . '/tls-cluster-create.log';
system("redis-cli --tls --cacert $d/ca.pem --cluster create "
       . join(' ', map { "127.0.0.1:$_" } @tls)
       . " --cluster-replicas 0 --cluster-yes >$log 2>&1") == 0
    or BAIL_OUT('redis-cli --cluster create over TLS failed: '
                . do { local (@ARGV, $/) = $log; <> });

my $up;
for (1 .. 100) {
    $up = !grep { $_->cmd('CLUSTER', 'INFO') !~ /cluster_state:ok/ } @nodes;
    last if $up;
    sleep 0.1;
}
ok($up, 'a cluster of three TLS masters');

# the master of a key, by the plain ports a plain connection is told
sub node_of {
    my ($key) = @_;
    my $slot = keyslot($key);
    for my $r (@{ $nodes[0]->cmd('CLUSTER', 'SLOTS') }) {
        next unless $slot >= $r->[0] && $slot <= $r->[1];
        my ($n) = grep { $_->port == $r->[2][1] } @nodes;
        return $n;
    }
    return undef;
}

my $seeds = "127.0.0.1:$tls[0] 127.0.0.1:$tls[1]";
$t->start_nginx(no_redis => 1, server => <<"EOF");
        location = /webhook {
            tiktok_reports_redis $seeds cluster;
            tiktok_reports_redis_ssl on;
            tiktok_reports_redis_ssl_trusted_certificate $d/ca.pem;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /status/ {
            tiktok_reports_redis $seeds cluster;
            tiktok_reports_redis_ssl on;
            tiktok_reports_redis_ssl_trusted_certificate $d/ca.pem;
            tiktok_reports_status;
        }
        location = /other-ca {
            tiktok_reports_redis $seeds cluster;
            tiktok_reports_redis_ssl on;
            tiktok_reports_redis_ssl_trusted_certificate $d/other.pem;
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_key_prefix "other:";
        }
EOF

sub post {
    my ($path, @ids) = @_;
    return $t->http(method => 'POST', path => $path,
                    headers => [ 'Content-Type' => 'application/json' ],
                    body => json_encode({ results => [
                        map { tiktok_dlr(id => $_) } @ids ] }));
}

my @ids = map { "tlsc-$$-$_" } 1 .. 30;
my $r;
for (1 .. 50) {
    $r = post('/webhook', $ids[0]);
    last if $r->{status} == 200;
    sleep 0.1;
}
is($r->{status}, 200, 'over TLS: the first report stored');
$r = post('/webhook', @ids);
is($r->{status}, 200, '... 30 reports: 200');
is($r->{body}, '{"accepted":29,"duplicates":1,"rejected":[]}', '... counted');
my %masters;
my $stored = grep {
    my $k = "tiktok:msg:{$_}";
    my $n = node_of($k);
    $masters{ $n->port }++ if $n;
    ($n && $n->cmd('HGET', $k, 'status') // '') eq 'DELIVERED'
} @ids;
is($stored, 30, '... each on its master');
is(scalar keys %masters, 3, '... over the three masters');

$r = $t->http(path => '/status/?' . join '&', map { "id=$_" } @ids[0 .. 9]);
is($r->{status}, 200, 'a lookup across the masters, over TLS');
is(scalar(grep { $_->{found} } @{ json_decode($r->{body})->{results} }), 10,
   '... finds all ten');

$r = post('/other-ca', "tlsc-other-$$");
is($r->{status}, 503, 'a CA that signed no master: 503');
ok(!defined node_of("other:msg:{tlsc-other-$$}")
             ->cmd('HGET', "other:msg:{tlsc-other-$$}", 'status'),
   '... nothing stored');
like($t->error_log, qr/certificate verify failed|certificate/i,
     '... and logged with the reason');

$t->stop_nginx;
$t->check_logs;

done_testing;
