#!/usr/bin/perl
# A call that fails on one Redis writes nothing: everything its writes
# depend on is checked before the first one, so that the retry stores every
# report and the feed gets every change exactly once.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

my $t = TikTokTest->new;
$t->start_redis(extra => "user noxadd on >pw ~* &* +\@all -xadd\n"
                       . "user noexpire on >pw ~* &* +\@all -expire\n");
$t->start_nginx(server => <<'EOF');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location = /later {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_key_prefix "later:";
        }
        location = /nofeed {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_key_prefix "nofeed:";
            tiktok_reports_stream_maxlen 0;
        }
        location = /noxadd {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_redis_password noxadd pw;
            tiktok_reports_key_prefix "nx:";
        }
        location = /noexpire {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_redis_password noexpire pw;
            tiktok_reports_key_prefix "ne:";
        }
        location = /bigttl {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_key_prefix "bt:";
            tiktok_reports_ttl 1000000000y;
        }
EOF

sub post {
    my ($path, @results) = @_;
    return $t->http(method => 'POST', path => $path,
                    headers => [ 'Content-Type' => 'application/json' ],
                    body => json_encode({ results => \@results }));
}

sub exists_n {
    my ($prefix, @ids) = @_;
    return $t->redis('EXISTS', map { "${prefix}msg:{$_}" } @ids);
}

# the feed's entries after an XRANGE start: "messageId previous>status"
sub feed {
    my ($key, $from) = @_;
    my $e = $t->redis('XRANGE', $key, $from || '-', '+');
    return [ map { my %f = @{ $_->[1] }; "$f{messageId} $f{previous}>$f{status}" }
             @$e ];
}

my $unavailable = '{"error":"status store unavailable"}';
my $two = '{"accepted":2,"duplicates":0,"rejected":[]}';

# the issue's case: the feed key holds a string
{
    $t->redis('SET', 'tiktok:events', 'not a stream');
    my @r = (tiktok_seen(id => 'str-1'), tiktok_seen(id => 'str-2'));
    my $res = post('/webhook', @r);
    is($res->{status}, 503, 'feed key a string: 503');
    is($res->{body}, $unavailable, 'feed key a string: body');
    is(exists_n('tiktok:', 'str-1', 'str-2'), 0,
       'feed key a string: no message hash written');
    is($t->redis('GET', 'tiktok:events'), 'not a stream',
       'feed key a string: left as it was');

    $t->redis('DEL', 'tiktok:events');
    $res = post('/webhook', @r);
    is($res->{body}, $two, 'feed key fixed: the retry stores both');
    is($t->redis('XLEN', 'tiktok:events'), 2, 'feed key fixed: two entries');
    is_deeply(feed('tiktok:events'), [ 'str-1 >SEEN', 'str-2 >SEEN' ],
              'feed key fixed: both changes, in order');
}

# a body whose later report needs the feed: the earlier one, which
# changes no status, is not written either
{
    my $res = post('/later', tiktok_dlr(id => 'old-1'));
    is($res->{body}, '{"accepted":1,"duplicates":0,"rejected":[]}',
       'later: a delivered message');
    $t->redis('RENAME', 'later:events', 'later:saved');
    $t->redis('SET', 'later:events', 'x');

    my @r = (tiktok_dlr(id => 'old-1', group => 'PENDING', status_id => 7,
                        name => 'PENDING_ENROUTE'),
             tiktok_dlr(id => 'new-1'));
    $res = post('/later', @r);
    is($res->{status}, 503, 'later report fails: 503');
    my @tl = events_of($t->hgetall('later:msg:{old-1}'));
    is(scalar @tl, 1, 'later report fails: the earlier report not written');
    is(exists_n('later:', 'new-1'), 0,
       'later report fails: the later report not written');

    $t->redis('DEL', 'later:events');
    $t->redis('RENAME', 'later:saved', 'later:events');
    $res = post('/later', @r);
    is($res->{body}, $two, 'later: the retry stores both');
    @tl = events_of($t->hgetall('later:msg:{old-1}'));
    is(scalar @tl, 2, 'later: the late PENDING in the timeline');
    is_deeply(feed('later:events'), [ 'old-1 >DELIVERED', 'new-1 >DELIVERED' ],
              'later: the feed has each change once');
}

# with the feed off, its key is not looked at
{
    $t->redis('SET', 'nofeed:events', 'x');
    my $res = post('/nofeed', tiktok_dlr(id => 'nf-1'));
    is($res->{status}, 200, 'feed off: its key is not consulted');
    is($t->redis('HGET', 'nofeed:msg:{nf-1}', 'status'), 'DELIVERED',
       'feed off: stored');
}

# Redis refusing writes: out of memory, too few replicas, a replica
for my $c ([ 'maxmemory', 'OOM',
             [ 'CONFIG', 'SET', 'maxmemory-policy', 'noeviction' ],
             [ 'CONFIG', 'SET', 'maxmemory', '1' ],
             [ 'CONFIG', 'SET', 'maxmemory', '0' ] ],
           [ 'min-replicas-to-write', 'NOREPLICAS', undef,
             [ 'CONFIG', 'SET', 'min-replicas-to-write', '1' ],
             [ 'CONFIG', 'SET', 'min-replicas-to-write', '0' ] ],
           [ 'replica', 'READONLY', undef,
             [ 'REPLICAOF', '127.0.0.1', TikTokTest::free_port() ],
             [ 'REPLICAOF', 'NO', 'ONE' ] ]) {
    my ($name, $code, $prep, $on, $off) = @$c;
    my @ids = ("$name-1", "$name-2");
    my @r = map { tiktok_dlr(id => $_) } @ids;
    my $last = $t->redis('XREVRANGE', 'tiktok:events', '+', '-', 'COUNT', 1);
    $t->redis(@$prep) if $prep;
    $t->redis(@$on);
    my $res = post('/webhook', @r);
    is($res->{status}, 503, "$name: 503");
    is(exists_n('tiktok:', @ids), 0, "$name: nothing written");
    like($t->error_log, qr/redis transition failed: $code /,
         "$name: Redis's $code logged");
    $t->redis(@$off);
    $res = post('/webhook', @r);
    is($res->{body}, $two, "$name lifted: the retry stores both");
    is_deeply(feed('tiktok:events', '(' . $last->[0][0]),
              [ map { "$_ >DELIVERED" } @ids ],
              "$name lifted: the feed has both changes");
}

# an ACL user without a command the writes need
for my $c ([ 'noxadd', 'nx:', 'xadd' ], [ 'noexpire', 'ne:', 'expire' ]) {
    my ($user, $prefix, $cmd) = @$c;
    my @ids = ("$user-1", "$user-2");
    my @r = map { tiktok_dlr(id => $_) } @ids;
    my $res = post("/$user", @r);
    is($res->{status}, 503, "no $cmd permission: 503");
    is(exists_n($prefix, @ids), 0, "no $cmd permission: nothing written");

    $t->redis('ACL', 'SETUSER', $user, "+$cmd");
    $res = post("/$user", @r);
    is($res->{body}, $two, "$cmd permitted: the retry stores both");
    is_deeply(feed("${prefix}events"), [ map { "$_ >DELIVERED" } @ids ],
              "$cmd permitted: the feed has both changes");
    ok($t->redis('TTL', "${prefix}msg:{$ids[0]}") > 0, "$cmd permitted: TTL");
}

# a TTL EXPIRE cannot take (nginx reads it; Redis refuses it)
{
    my $res = post('/bigttl', tiktok_dlr(id => 'bt-1'));
    is($res->{status}, 503, 'ttl too large: 503');
    is(exists_n('bt:', 'bt-1'), 0, 'ttl too large: nothing written');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
