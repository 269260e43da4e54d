#!/usr/bin/perl
# The lookup location reached through "rewrite ... last": the id comes from
# the rewritten URI (or its arguments), not from the client's request line;
# the direct forms are unchanged.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TikTokTest;

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(server => <<'EOF');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /api/ {
            rewrite ^/api/msg/([^/]+)/details$ /st/$1 last;
            rewrite ^/api/one/(.+)$ /st/?id=$1 last;
            rewrite ^/api/many$ /st/ last;
            return 418;
        }
        location /st/ {
            tiktok_reports_status;
        }
        location /tiktok/status/ {
            tiktok_reports_status;
        }
EOF

my @ids = ('abc', 'a b%c', "caf\xc3\xa9", 'x%41', 'with/slash', 'a&b+c');

my $res = $t->http(method => 'POST', path => '/webhook',
                   headers => [ 'Content-Type' => 'application/json' ],
                   body => json_encode({ results => [
                       map { tiktok_dlr(id => $_) } @ids ] }));
is($res->{body}, '{"accepted":6,"duplicates":0,"rejected":[]}', 'stored');
$res = $t->http(method => 'POST', path => '/webhook',
                headers => [ 'Content-Type' => 'application/json' ],
                body => json_encode({ results => [ tiktok_seen(id => 'abc') ] }));
is($res->{status}, 200, 'abc seen');

sub lookup {
    my ($path) = @_;
    my $r = $t->http(path => $path);
    my $j = eval { json_decode($r->{body}) } || {};
    return ($r, $j);
}

sub utf {
    my ($s) = @_;
    utf8::decode($s);
    return $s;
}

# the issue's rewrite: the id is the rewritten URI's last part
{
    my ($r, $j) = lookup('/api/msg/abc/details');
    is($r->{status}, 200, 'rewrite: 200');
    is($j->{messageId}, 'abc', 'rewrite: messageId');
    is($j->{status}, 'SEEN', 'rewrite: status');
    is($j->{statusName}, 'DELIVERED_TO_HANDSET', 'rewrite: statusName');

    ($r) = lookup('/api/msg/nope/details');
    is($r->{status}, 404, 'rewrite, unknown: 404');
    is($r->{body}, '{"error":"unknown messageId","messageId":"nope"}',
       'rewrite, unknown: names the id');
}

# percent-encoded ids: nginx decoded them before the rewrite, once
for my $c ([ '/api/msg/a%20b%25c/details', 'a b%c' ],
           [ '/api/msg/caf%C3%A9/details', "caf\xc3\xa9" ],
           [ '/api/msg/x%2541/details', 'x%41' ],
           [ '/api/msg/a%26b%2Bc/details', 'a&b+c' ]) {
    my ($path, $id) = @$c;
    my ($r, $j) = lookup($path);
    is($r->{status}, 200, "rewrite $path: 200");
    is($j->{messageId}, utf($id), "rewrite $path: messageId");
    is($j->{status}, 'DELIVERED', "rewrite $path: status");
}

# id= arguments made by the rewrite, or the client's kept by it; an id with
# a "/" is reached this way
{
    my ($r, $j) = lookup('/api/one/with%2Fslash');
    is($r->{status}, 200, 'rewrite to ?id=: 200');
    is_deeply([ map { [ $_->{messageId}, $_->{status}, $_->{found} ] }
                @{ $j->{results} || [] } ],
              [ [ 'with/slash', 'DELIVERED', JSON::PP::true ] ],
              'rewrite to ?id=: the id with a slash') or diag $r->{body};

    ($r, $j) = lookup('/api/one/a%26b%2Bc');
    is_deeply([ map { $_->{messageId} } @{ $j->{results} || [] } ],
              [ 'a&b+c' ], 'rewrite to ?id=: "&" and "+" kept')
        or diag $r->{body};

    ($r, $j) = lookup('/api/many?id=abc&id=with%2Fslash&id=nope');
    is($r->{status}, 200, 'client id= kept by the rewrite: 200');
    is_deeply([ map { [ $_->{messageId}, $_->{found} ] }
                @{ $j->{results} || [] } ],
              [ [ 'abc', JSON::PP::true ], [ 'with/slash', JSON::PP::true ],
                [ 'nope', JSON::PP::false ] ],
              'client id= kept by the rewrite: in order')
        or diag $r->{body};
}

# the direct forms, as before
{
    my ($r, $j) = lookup('/tiktok/status/abc');
    is_deeply([ $r->{status}, $j->{messageId}, $j->{status} ],
              [ 200, 'abc', 'SEEN' ], 'direct: abc');

    for my $c ([ '/tiktok/status/with%2Fslash', 'with/slash' ],
               [ '/tiktok/status/x%2541', 'x%41' ],
               [ '/tiktok/status/a%20b%25c', 'a b%c' ],
               [ '/tiktok/status/caf%C3%A9', "caf\xc3\xa9" ]) {
        my ($path, $id) = @$c;
        ($r, $j) = lookup($path);
        is_deeply([ $r->{status}, $j->{messageId} ], [ 200, utf($id) ],
                  "direct: $path");
    }

    ($r) = lookup('/tiktok/status/no%2Fsuch');
    is($r->{body}, '{"error":"unknown messageId","messageId":"no/such"}',
       'direct: 404 names the decoded id');

    ($r, $j) = lookup('/tiktok/status/?id=with%2Fslash&id=abc');
    is_deeply([ map { $_->{messageId} } @{ $j->{results} || [] } ],
              [ 'with/slash', 'abc' ], 'direct: ?id=');
}

$t->stop_nginx;
$t->check_logs;

done_testing;
