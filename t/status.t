#!/usr/bin/perl
# The lookup location and the change feed, from a consumer's side.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

my $t = TikTokTest->new;
$t->start_redis;
# 1000-id lookups take a while under valgrind; no timing is asserted here
$t->start_nginx(http => "    tiktok_reports_redis_timeout 5s;\n",
                server => <<'EOF');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_ttl 1d;
        }
        location = /keep {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_keep_reports on;
        }
        location = /nofeed {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_stream_maxlen 0;
            tiktok_reports_key_prefix "nofeed:";
        }
        location = /trim {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
            tiktok_reports_stream_maxlen 10;
            tiktok_reports_key_prefix "trim:";
        }
        location /tiktok/status/ {
            tiktok_reports_status;
        }
EOF

sub post {
    my ($path, @results) = @_;
    my $res = $t->http(method => 'POST', path => $path,
                       headers => [ 'Content-Type' => 'application/json' ],
                       body => json_encode({ results => \@results }));
    return $res;
}

sub enc {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

# messageIds of every awkward shape
my @odd = ('plain-1', 'with/slash', 'with space', 'with"quote', 'with%percent',
           "caf\xc3\xa9-\xe2\x9c\x93", 'back\\slash', "tab\there",
           'curly{}', 'plus+sign', '?&=#');

my $res = post('/webhook', map { tiktok_dlr(id => $_, callbackData => "cb:$_") } @odd);
is($res->{status}, 200, 'odd ids stored');
$res = post('/webhook', tiktok_seen(id => 'plain-1'));
is($res->{status}, 200, 'a seen report');

for my $id (@odd) {
    my $r = $t->http(path => '/tiktok/status/' . enc($id));
    is($r->{status}, 200, "lookup '$id': 200");
    is($r->{headers}{'content-type'}, 'application/json', "lookup '$id': JSON");
    my $j = eval { json_decode($r->{body}) };
    ok($j, "lookup '$id': valid JSON") or diag $r->{body};
    my $want = $id;
    utf8::decode($want);
    is($j->{messageId}, $want, "lookup '$id': messageId");
    is($j->{callbackData}, "cb:$want", "lookup '$id': callbackData");
}

{
    my $r = $t->http(path => '/tiktok/status/plain-1');
    my $j = json_decode($r->{body});
    is($j->{status}, 'SEEN', 'single: status');
    is($j->{statusName}, 'DELIVERED_TO_HANDSET', 'single: statusName');
    is($j->{errorName}, 'NO_ERROR', 'single: errorName');
    ok(JSON::PP::is_bool($j->{errorPermanent}) && !$j->{errorPermanent},
       'single: errorPermanent is a boolean');
    is($j->{doneAt}, '2023-09-26T10:52:15.799+0000', 'single: doneAt');
    is($j->{seenAt}, '2019-11-09T16:00:05.000+0000', 'single: seenAt');
    like($j->{updatedAt}, qr/^\d{13}$/, 'single: updatedAt');
    ok(!ref $j->{updatedAt}, 'single: updatedAt is a number');
    is(ref $j->{timeline}, 'ARRAY', 'single: timeline is an array');
    is_deeply([ map { $_->{kind} } @{ $j->{timeline} } ], [qw(delivery seen)],
              'single: timeline oldest first');
    ok(!exists $j->{dg}, 'single: bookkeeping fields are not shown');
    ok(!exists $j->{delivery}, 'single: no raw report unless kept');
}

{
    my $r = $t->http(path => '/tiktok/status/no-such-id%2F1');
    is($r->{status}, 404, 'unknown: 404');
    is($r->{body}, '{"error":"unknown messageId","messageId":"no-such-id/1"}',
       'unknown: body');

    my $get = $t->http(path => '/tiktok/status/plain-1');
    $r = $t->http(method => 'HEAD', path => '/tiktok/status/plain-1');
    is($r->{status}, 200, 'HEAD: 200');
    is($r->{body}, '', 'HEAD: no body');
    is($r->{headers}{'content-length'}, length($get->{body}),
       'HEAD: the length of the GET body');

    $r = $t->http(method => 'DELETE', path => '/tiktok/status/plain-1');
    is($r->{status}, 405, 'DELETE: 405');
    is($r->{headers}{allow}, 'GET, HEAD, POST', 'DELETE: Allow');
    is($r->{body}, '{"error":"method not allowed"}', 'DELETE: body');

    $r = $t->http(path => '/tiktok/status/');
    is($r->{status}, 400, 'no id: 400');
}

# keep_reports: delivery and seen as JSON objects
{
    my $dlr = tiktok_dlr(id => 'kept-1');
    post('/keep', $dlr, tiktok_seen(id => 'kept-1'));
    my $r = $t->http(path => '/tiktok/status/kept-1');
    my $j = json_decode($r->{body});
    is(ref $j->{delivery}, 'HASH', 'kept: delivery is an object');
    is(ref $j->{seen}, 'HASH', 'kept: seen is an object');
    is($j->{delivery}{platform}{entityId}, 'promotional-traffic-entity',
       'kept: delivery has every member');
}

# batch lookups: GET with repeated id=, POST with {"ids":[...]}
{
    my $q = join '&', map { 'id=' . enc($_) } 'plain-1', 'missing-1', 'with/slash';
    my $r = $t->http(path => "/tiktok/status/?$q");
    is($r->{status}, 200, 'GET batch: 200');
    my $j = json_decode($r->{body});
    is_deeply([ map { $_->{messageId} } @{ $j->{results} } ],
              [ 'plain-1', 'missing-1', 'with/slash' ], 'GET batch: request order');
    is_deeply($j->{results}[1], { messageId => 'missing-1', found => JSON::PP::false },
              'GET batch: unknown id is found:false');
    is($j->{results}[0]{status}, 'SEEN', 'GET batch: known id has its status');

    my @ids = map { "bulk-$_" } 1 .. 1000;
    post('/webhook', map { tiktok_dlr(id => $_) } @ids[0 .. 499]);
    $r = $t->http(method => 'POST', path => '/tiktok/status/',
                  headers => [ 'Content-Type' => 'application/json' ],
                  body => json_encode({ ids => \@ids }));
    is($r->{status}, 200, 'POST batch of 1000: 200');
    $j = json_decode($r->{body});
    is(scalar @{ $j->{results} }, 1000, 'POST batch: 1000 answers');
    is(scalar(grep { $_->{found} } @{ $j->{results} }), 500, 'POST batch: 500 found');
    is($j->{results}[999]{messageId}, 'bulk-1000', 'POST batch: in order');

    $r = $t->http(method => 'POST', path => '/tiktok/status/',
                  body => json_encode({ ids => [ @ids, 'one-more' ] }));
    is($r->{status}, 400, 'POST batch of 1001: 400');
    is($r->{body}, '{"error":"more than 1000 ids"}', 'POST batch of 1001: body');

    for my $bad ('[]', '{"ids":"x"}', '{"ids":[1]}', '{"other":[]}', 'nope', '') {
        $r = $t->http(method => 'POST', path => '/tiktok/status/', body => $bad);
        is($r->{status}, 400, "POST '$bad': 400");
        ok(eval { json_decode($r->{body})->{error} }, "POST '$bad': JSON error");
    }
}

# TTL and the change feed seen by a consumer group
{
    ok($t->redis('TTL', 'tiktok:msg:{plain-1}') > 86000, 'TTL from tiktok_reports_ttl');
    $t->redis('XGROUP', 'CREATE', 'tiktok:events', 'svc', '0');
    my $id = 'feed-1';
    for my $r (tiktok_dlr(id => $id, group => 'PENDING', status_id => 7,
                          name => 'PENDING_ENROUTE'),
               tiktok_dlr(id => $id, group => 'PENDING', status_id => 7,
                          name => 'PENDING_ENROUTE'),
               tiktok_seen(id => $id),
               tiktok_dlr(id => $id),
               tiktok_seen(id => $id)) {
        post('/webhook', $r);
    }
    my $got = $t->redis('XREADGROUP', 'GROUP', 'svc', 'c1', 'COUNT', 100000,
                        'STREAMS', 'tiktok:events', '>');
    my @mine = grep { my %f = @{ $_->[1] }; $f{messageId} eq $id }
               @{ $got->[0][1] };
    is_deeply([ map { my %f = @{ $_->[1] }; "$f{previous}>$f{status}" } @mine ],
              [ '>PENDING', 'PENDING>SEEN' ],
              'consumer group: one entry per change, none for duplicates');

    post('/nofeed', tiktok_dlr(id => 'nofeed-1'));
    is($t->redis('HGET', 'nofeed:msg:{nofeed-1}', 'status'), 'DELIVERED',
       'maxlen 0: stored');
    is($t->redis('EXISTS', 'nofeed:events'), 0, 'maxlen 0: no feed');

    post('/trim', map { tiktok_dlr(id => "trim-$_") } 1 .. 300);
    my $len = $t->redis('XLEN', 'trim:events');
    ok($len < 300 && $len >= 10, "maxlen 10: the feed is trimmed ($len)");
}

# a key that something else made a string: unknown, like the webhook sees it
{
    $t->redis('SET', 'tiktok:msg:{not-a-hash}', 'x');
    my $r = $t->http(path => '/tiktok/status/not-a-hash');
    is($r->{status}, 404, 'a string at the key: 404');
    is($r->{body}, '{"error":"unknown messageId","messageId":"not-a-hash"}',
       'a string at the key: unknown messageId');
    $r = $t->http(path => '/tiktok/status/?id=not-a-hash&id=plain-1');
    my $j = json_decode($r->{body});
    is_deeply([ $r->{status}, $j->{results}[0], $j->{results}[1]{status} ],
              [ 200, { messageId => 'not-a-hash', found => JSON::PP::false },
                'SEEN' ],
              'a string at the key: found false in a batch, the other found');
}

# Redis trouble: 503 with Retry-After, as for the webhook
{
    $t->stop_redis;
    my $r = $t->http(path => '/tiktok/status/plain-1');
    is($r->{status}, 503, 'Redis stopped: lookup 503');
    is($r->{body}, '{"error":"status store unavailable"}', 'Redis stopped: body');
    is($r->{headers}{'retry-after'}, '1', 'Redis stopped: Retry-After');
    $r = $t->http(path => '/tiktok/status/?id=a&id=b');
    is($r->{status}, 503, 'Redis stopped: batch lookup 503');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
