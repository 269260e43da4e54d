#!/usr/bin/perl
# Calls of requests that come together are joined: bodies of one report,
# read in one event loop iteration (the worker stopped while 50 clients
# send, then let go), go to Redis in one call per location's settings, and
# each request still gets its own answer.  Locations whose settings differ
# (TTL) are not joined.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use TikTokTest;

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(server => <<'EOF');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /short {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_ttl 1h;
        }
EOF

sub calls {
    my $s = $t->redis('INFO', 'commandstats');
    return $s =~ /cmdstat_evalsha:calls=(\d+)/ ? $1 : 0;
}

# each body once Redis is up: its script loaded, the connection made
is($t->http(method => 'POST', path => '/webhook',
            headers => [ 'Content-Type' => 'application/json' ],
            body => json_encode({ results => [ tiktok_dlr(id => "join-0-$$") ] }))
       ->{status}, 200, 'warm');

my @req;
for my $i (1 .. 50) {
    my $path = $i <= 40 ? '/webhook' : '/short';
    my $body = json_encode({ results => [
        $i % 2 ? tiktok_dlr(id => "join-$i-$$") : tiktok_seen(id => "join-$i-$$") ] });
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->http_port, Proto => 'tcp')
        or die "connect: $!";
    push @req, [ $s, "POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     . "Content-Type: application/json\r\n"
                     . 'Content-Length: ' . length($body) . "\r\n\r\n$body" ];
}

# the connections accepted, then every request in before the worker reads
sleep($ENV{TT_VALGRIND} ? 2 : 0.3);
my ($worker) = $t->worker_pids;
my $before = calls();
kill 'STOP', $worker;
print { $_->[0] } $_->[1] for @req;
sleep 0.2;
kill 'CONT', $worker;

my ($ok, $accepted) = (0, 0);
my $until = time + 30;
for my $r (@req) {
    my ($s) = @$r;
    my $raw = '';
    my $sel = IO::Select->new($s);
    while (time < $until && $sel->can_read($until - time)) {
        my $n = sysread($s, $raw, 65536, length $raw) or last;
    }
    $ok++ if $raw =~ m{^HTTP/1\.1 200 };
    $accepted++ if $raw =~ /\{"accepted":1,"duplicates":0,"rejected":\[\]\}$/;
}
is($ok, 50, 'every request answered 200');
is($accepted, 50, '... each with its own report accepted');

my $n = calls() - $before;
cmp_ok($n, '<=', 4, "50 bodies of one report in $n calls (not 50)");
cmp_ok($n, '>=', 2, '... the two TTLs never in one call');

is(scalar(grep { $t->redis('EXISTS', "tiktok:msg:{join-$_-$$}") } 1 .. 50), 50,
   'all 50 stored');
my @ttl = map { $t->redis('TTL', "tiktok:msg:{join-$_-$$}") } 40, 41;
cmp_ok($ttl[0], '>', 86400, 'a /webhook message keeps its 30 days');
cmp_ok($ttl[1], '<=', 3600, 'a /short message its hour');
is($t->redis('XLEN', 'tiktok:events'), 51, 'one change each in the feed');

$t->stop_nginx;
$t->check_logs;

done_testing;
